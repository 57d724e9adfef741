"""The full job on real engines, through deploy/portable_local.sh: Apache Flink (Beam's Flink job server with its
embedded Flink, and a Flink session cluster of a JobManager and a TaskManager in separate JVMs), Apache Spark
(local[2]) and Beam's Prism runner; the SDK harness is an EXTERNAL worker pool with two worker processes.

Each run is compared with a DirectRunner run of the same input into the same kind of target: the full contents
of every target table (only the values a database stamps at run time are left out), the ledger (status per
app_id), the dead letters (source, app_id, stage, reason, payload), the SUMMARY line, and the --status and
--dead-letter JSONL files that the *workers* write. Inputs: generated documents and the existing system's CC
corpus (../shared/seed-corpus/cc); targets: SQLite and PostgreSQL (XMLSQL_TEST_PG).

The engines are fetched once into ${XMLSQL_CACHE:-~/.cache/xmlsql-engines} by scripts/fetch_engines.sh (.ci/run
does it before the suite). A test skips only where the tools are absent: Java or Maven (Flink, Spark), Go (Prism).
"""
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid

import pytest

from pipeline.cli import main as cli
from contracts.samples.generate import write_sqlite_source
from test_runners import _sort_key, parse_summary, process_groups_alive, service_pgids

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'deploy', 'portable_local.sh')
CC = os.path.normpath(os.path.join(REPO, '..', 'shared', 'seed-corpus', 'cc'))
PG = os.environ.get('XMLSQL_TEST_PG')
N_DOCS = 60
SEED = 31
COMMON = ['--batch-size', '16', '--log-level', 'WARNING', '--create-tables']
# A column the database fills with GETUTCDATE() when the document has no value holds the run's time, which
# differs between two runs; such a value (anything stamped since yesterday) is compared as this marker.
STAMPED = '<stamped at run time>'
SINCE = (dt.datetime.utcnow() - dt.timedelta(days=1)).strftime('%Y-%m-%d %H:%M:%S')

pytestmark = pytest.mark.slow


def _missing(engine):
    tools = ('go',) if engine == 'prism' else ('java', 'mvn')
    return [t for t in tools if shutil.which(t) is None]


def _engine(name):
    missing = _missing(name)
    why = f'{name}: {" and ".join(missing)} not installed (the engine cannot be fetched or run here)'
    return pytest.param(name, marks=pytest.mark.skipif(bool(missing), reason=why), id=name)


ENGINES = [_engine(e) for e in ('flink', 'flink-cluster', 'spark', 'prism')]


# --------------------------------------------------------------------------------------------- inputs, targets

class Corpus:
    def __init__(self, name, contract, tables, source):
        self.name, self.contract, self.tables, self.source = name, contract, tables, source

    def spec(self):
        return json.load(open(self.tables))['tables']

    def contract_for(self, tmp_path, schema):
        """The contract file to run with; for PostgreSQL a temp copy writing into the test's own schema."""
        if schema is None:
            return self.contract
        from pipeline.config import resolve_sample
        c = json.load(open(resolve_sample(self.contract)))
        c['target_schema'] = schema
        path = tmp_path / f'contract-{schema}.json'
        path.write_text(json.dumps(c))
        return str(path)


@pytest.fixture(scope='module')
def corpora(tmp_path_factory):
    src = tmp_path_factory.mktemp('src') / 'generated.db'
    write_sqlite_source(str(src), N_DOCS, seed=SEED)
    gen = Corpus('generated', 'credit_app', os.path.join(REPO, 'contracts', 'samples', 'credit_app_tables.json'),
                 f'sqlite:///{src}')
    cc = Corpus('cc', os.path.join(CC, 'contract.json'), os.path.join(CC, 'tables.json'), os.path.join(CC, 'xml'))
    return {'generated': gen, 'cc': cc}


def _pg():
    import pyodbc
    return pyodbc.connect(PG[len('odbc:'):], autocommit=True)


class Target:
    """A fresh SQLite file or a fresh PostgreSQL schema; `contents()` reads back everything a run left in it."""

    def __init__(self, kind, tmp_path, label):
        self.kind = kind
        if kind == 'sqlite':
            self.schema, self.path = None, tmp_path / f'{label}.db'
            self.url = f'sqlite:///{self.path}'
        else:
            self.schema, self.url = 'en_' + uuid.uuid4().hex[:10], PG
            conn = _pg()
            conn.execute(f'CREATE SCHEMA {self.schema}')
            conn.close()

    def drop(self):
        if self.kind == 'pg':
            conn = _pg()
            conn.execute(f'DROP SCHEMA {self.schema} CASCADE')
            conn.close()

    def _connect(self):
        return sqlite3.connect(self.path) if self.kind == 'sqlite' else _pg()

    def _columns(self, conn, table):
        """The table's columns as the run created them ([] when it did not create the table)."""
        if self.kind == 'sqlite':
            return [r[1] for r in conn.execute(f'PRAGMA table_info({table})').fetchall()]
        return [r[0] for r in conn.execute(
            'SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? '
            'ORDER BY ordinal_position', (self.schema, table)).fetchall()]

    def contents(self, spec):
        """table -> sorted rows of every column of every target table the run created (processing_log: app_id,
        status, stage, failure_reason; dead_letter: source, app_id, stage, reason, payload)."""
        prefix = f'{self.schema}.' if self.schema else ''
        conn = self._connect()
        try:
            out = {}
            for table, tspec in spec.items():
                cols = self._columns(conn, table)
                if table == 'processing_log' or not cols:
                    continue
                run_time = {c['name'] for c in tspec['columns'] if 'GETUTCDATE' in str(c.get('default', ''))}
                stamped = {i for i, c in enumerate(cols) if c in run_time}
                rows = conn.execute(f'SELECT {", ".join(cols)} FROM {prefix}{table}').fetchall()
                out[table] = sorted((tuple(STAMPED if i in stamped and v is not None and str(v) >= SINCE else v
                                           for i, v in enumerate(r)) for r in rows), key=_sort_key)
            out['processing_log'] = sorted((tuple(r) for r in conn.execute(
                f'SELECT app_id, status, stage, failure_reason FROM {prefix}processing_log').fetchall()),
                key=_sort_key)
            out['dead_letter'] = sorted((tuple(r) for r in conn.execute(
                f'SELECT source, app_id, stage, reason, payload FROM {prefix}dead_letter').fetchall()),
                key=_sort_key)
            return out
        finally:
            conn.close()


def _outputs(tmp_path, label):
    d = tmp_path / label
    d.mkdir()
    return {'--status': d / 'status.jsonl', '--dead-letter': d / 'dead.jsonl', '--summary-json': d / 'summary.json'}


def _args(corpus, target, contract, outputs):
    args = ['--contract', contract, '--source', corpus.source, '--target', target.url, '--tables', corpus.tables]
    for opt, path in outputs.items():
        args += [opt, str(path)]
    if '://' in corpus.source or corpus.source.startswith('odbc:'):
        args += ['--partitions', '4']           # table sources only (a folder is an error for --partitions)
    return args + COMMON


def _run_script(engine, args):
    """deploy/portable_local.sh ENGINE ARGS; the service logs it keeps after a non-zero exit are removed once
    the output has been read (they go to the system's temporary folder, and a failure's stderr is in the
    assertion message)."""
    proc = subprocess.run([SCRIPT, engine] + args, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHON=sys.executable))
    for kept in re.findall(r'service logs kept in (\S+)', proc.stderr):
        if os.path.basename(kept).startswith('portable_local.'):
            shutil.rmtree(kept, ignore_errors=True)
    return proc


def _jsonl(path):
    """The records of a JSONL output, sorted; the order in which workers wrote them is not compared."""
    return sorted(open(path).read().splitlines())


def _check_inputs(corpus, kind):
    if corpus == 'cc' and not os.path.isdir(os.path.join(CC, 'xml')):
        pytest.skip(f'the existing system\'s CC corpus is not at {CC}')
    if kind == 'pg' and not PG:
        pytest.skip('XMLSQL_TEST_PG is not set: no PostgreSQL server (.ci/run starts one)')


@pytest.fixture(scope='module')
def references(corpora, tmp_path_factory):
    """The DirectRunner (FnApiRunner, in this process) run of a corpus into a kind of target, made once."""
    made, targets = {}, []

    def get(corpus_name, kind):
        key = (corpus_name, kind)
        if key not in made:
            corpus = corpora[corpus_name]
            tmp = tmp_path_factory.mktemp(f'ref-{corpus_name}-{kind}')
            target = Target(kind, tmp, 'ref')
            targets.append(target)
            outputs = _outputs(tmp, 'out')
            rc = cli(['run'] + _args(corpus, target, corpus.contract_for(tmp, target.schema), outputs))
            assert rc == 0
            got = target.contents(corpus.spec())
            # a floor on the reference itself, so that "equal" below means something
            ok = sum(1 for r in got['processing_log'] if r[1] == 'success')
            assert ok >= 0.9 * len(got['processing_log']) and len(got['dead_letter']) >= 1
            assert sum(len(v) for t, v in got.items() if t not in ('processing_log', 'dead_letter')) > 5 * ok
            summary = json.load(open(outputs['--summary-json']))
            made[key] = (got, summary, {o: _jsonl(outputs[o]) for o in ('--status', '--dead-letter')})
        return made[key]

    yield get
    for t in targets:
        t.drop()


# --------------------------------------------------------------------------------------------------- the tests

@pytest.mark.parametrize('engine', ENGINES)
@pytest.mark.parametrize('corpus_name,kind', [
    pytest.param('generated', 'sqlite', id='generated-sqlite'),
    pytest.param('cc', 'sqlite', id='cc-sqlite'),
    pytest.param('generated', 'pg', id='generated-pg', marks=pytest.mark.postgres),
    pytest.param('cc', 'pg', id='cc-pg', marks=pytest.mark.postgres),
])
def test_engine_writes_the_same_as_direct_runner(engine, corpus_name, kind, corpora, references, tmp_path):
    _check_inputs(corpus_name, kind)
    corpus = corpora[corpus_name]
    ref, ref_summary, ref_files = references(corpus_name, kind)
    target = Target(kind, tmp_path, engine)
    try:
        outputs = _outputs(tmp_path, 'out')
        args = _args(corpus, target, corpus.contract_for(tmp_path, target.schema), outputs)
        proc = _run_script(engine, args)
        assert proc.returncode == 0, f'portable_local.sh {engine} exited {proc.returncode}:\n{proc.stderr[-5000:]}'
        assert f'({engine}), environment --environment_type=EXTERNAL' in proc.stderr
        s = parse_summary(proc.stdout)
        got = target.contents(corpus.spec())
        extra_dead = sorted(set(got['dead_letter']) - set(ref['dead_letter']))
        assert not extra_dead, f'{engine} dead-lettered what DirectRunner wrote: ' + '; '.join(
            f'{d[0]} at {d[2]}: {d[3]}' for d in extra_dead[:5])
        assert s['read'] == s['written'] + s['dead']                          # the SUMMARY invariant
        assert (s['read'], s['written'], s['dead'], s['rows']) == tuple(
            ref_summary[k] for k in ('read', 'written', 'dead_lettered', 'rows'))
        summary = json.load(open(outputs['--summary-json']))
        assert summary['invariant_holds'] is True
        assert sorted(got) == sorted(ref)
        for t in ref:
            assert got[t] == ref[t], f'{t} on {engine} differs from the DirectRunner run'
        # written by the SDK workers (here on the launcher's disk, which a local cluster shares)
        for o in ('--status', '--dead-letter'):
            assert _jsonl(outputs[o]) == ref_files[o], f'{o} file on {engine} differs from the DirectRunner run'
        assert process_groups_alive(service_pgids(proc.stderr)) == [], f'{engine}: a service was left running'
    finally:
        target.drop()


def test_a_missing_tool_is_one_clear_line_and_exit_4(tmp_path):
    """No Java/Maven (or Go) on PATH: the script says which and exits 4 before starting anything."""
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    for tool in ('bash', 'dirname', 'mktemp', 'rm', 'cat', 'seq', 'sleep'):
        real = shutil.which(tool)
        if real:
            os.symlink(real, bindir / tool)
    env = dict(os.environ, PYTHON=sys.executable, PATH=str(bindir))
    for engine, tool in (('flink', 'java'), ('flink-cluster', 'java'), ('spark', 'java'), ('prism', 'go')):
        proc = subprocess.run([SCRIPT, engine, '--contract', 'credit_app'], capture_output=True, text=True,
                              timeout=60, env=env)
        assert proc.returncode == 4, (engine, proc.stderr)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith('portable_local.sh:')]
        assert lines[0].startswith(f'portable_local.sh: {engine} needs {tool} '), proc.stderr
        assert 'started' not in proc.stderr


# --------------------------------------------------------------------- a document the database rejects

SINK_REJECTED = (100005, 100006)


def _target_with_a_rejecting_trigger(path):
    """The sample contract's tables, created up front, with a trigger that rejects two documents' pricing rows:
    those documents fail at the sink (bisected, dead-lettered with stage 'sink')."""
    from pipeline.config import load_contract_or_fail
    from transforms.sql.plan import prepare_sink
    url = f'sqlite:///{path}'
    prepare_sink(url, load_contract_or_fail('credit_app'),
                 tables_spec=os.path.join(REPO, 'contracts', 'samples', 'credit_app_tables.json'), create=True)
    conn = sqlite3.connect(path)
    conn.execute('CREATE TRIGGER reject BEFORE INSERT ON app_pricing_cc WHEN NEW.app_id IN (%s) '
                 "BEGIN SELECT RAISE(ABORT, 'rejected by trigger'); END" % ', '.join(map(str, SINK_REJECTED)))
    conn.commit()
    conn.close()
    return url


@pytest.mark.parametrize('engine', [p for p in ENGINES if p.values[0] != 'flink-cluster'])
def test_documents_rejected_by_the_database_are_counted_on_the_engine(engine, corpora, tmp_path):
    corpus = corpora['generated']
    gen_spec = corpus.spec()
    ref_url = _target_with_a_rejecting_trigger(tmp_path / 'ref.db')
    args = ['--contract', 'credit_app', '--source', corpus.source, '--log-level', 'WARNING', '--batch-size', '16']
    assert cli(['run', '--target', ref_url] + args) == 0
    ref = Target('sqlite', tmp_path, 'ref').contents(gen_spec)
    assert sorted(d[1] for d in ref['dead_letter'] if d[2] == 'sink') == list(SINK_REJECTED)
    url = _target_with_a_rejecting_trigger(tmp_path / f'{engine}.db')
    proc = _run_script(engine, ['--target', url] + args)
    got = Target('sqlite', tmp_path, engine).contents(gen_spec)
    for t in ref:                                   # what the run wrote is right either way
        assert got[t] == ref[t], f'{t} on {engine} differs from the DirectRunner run'
    s = parse_summary(proc.stdout)
    expected = (len(ref['processing_log']) - len(ref['dead_letter']), len(ref['dead_letter']))
    assert (s['written'], s['dead']) == expected, proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert process_groups_alive(service_pgids(proc.stderr)) == []
