"""The same pipeline on other runners, for real (no mocks): DirectRunner multi_processing, Beam's portable runner
through a local job service (LOOPBACK and EXTERNAL worker pool, via deploy/portable_local.sh), plus what a
cluster runner needs from us: DoFns that carry the contract and the table metadata with the job, and a setup.py
that builds an sdist with the sample contracts in it (what `--setup_file` stages for the workers).

Every run migrates the same generated documents into its own SQLite database; the reference is an in-memory
DirectRunner run, and whole table contents are compared, not just counts."""
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile

import pytest

from pipeline.cli import main as cli
from contracts.samples.generate import write_sqlite_source
from helpers import SUMMARY, SAMPLE_TABLES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_DOCS = 150
SEED = 23
TABLES = SAMPLE_TABLES
RUN_TIME_COLUMNS = {'rowstamp'}          # app_historical_lookup.rowstamp: the time the row was mapped
RUN_ARGS = ['--contract', 'credit_app', '--tables', 'credit_app_tables', '--create-tables', '--batch-size', '16',
            '--partitions', '4', '--log-level', 'WARNING']


def parse_summary(out):
    m = SUMMARY.search(out)
    assert m, f'no SUMMARY line in output: {out[-3000:]}'
    read, written, dead, rows = map(int, m.groups()[:4])
    return dict(read=read, written=written, dead=dead, rows=rows)


def _sort_key(row):
    return tuple((v is None, str(type(v)), v if v is not None else 0) for v in row)


def contents(db):
    """Everything a run leaves in the target, minus what legitimately differs between runs (surrogate ids,
    timestamps, session ids): table -> sorted rows."""
    conn = sqlite3.connect(db)
    try:
        out = {}
        for t in TABLES:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info({t})')]
            keep = [c for c in cols if c not in RUN_TIME_COLUMNS]
            for c in set(cols) & RUN_TIME_COLUMNS:     # stamped at run time: present, but not compared
                assert conn.execute(f'SELECT COUNT(*) FROM {t} WHERE {c} IS NULL').fetchone()[0] == 0
            out[t] = sorted(conn.execute(f'SELECT {", ".join(keep)} FROM {t}').fetchall(), key=_sort_key)
        out['processing_log'] = sorted(conn.execute(
            'SELECT app_id, status, stage, failure_reason FROM processing_log').fetchall(), key=_sort_key)
        out['dead_letter'] = sorted(conn.execute(
            'SELECT source, app_id, stage, reason, payload FROM dead_letter').fetchall(), key=_sort_key)
        return out
    finally:
        conn.close()


def fresh_db(path):
    write_sqlite_source(str(path), N_DOCS, seed=SEED)
    return str(path)


def run_in_process(capsys, db, *beam_args):
    rc = cli(['run', '--source', f'sqlite:///{db}', '--target', f'sqlite:///{db}'] + RUN_ARGS + list(beam_args))
    out = capsys.readouterr().out
    return rc, parse_summary(out)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """The in_memory DirectRunner (FnApiRunner) run: summary and table contents."""
    d = tmp_path_factory.mktemp('ref')
    db = fresh_db(d / 'ref.db')
    rc = cli(['run', '--source', f'sqlite:///{db}', '--target', f'sqlite:///{db}'] + RUN_ARGS)
    assert rc == 0
    got = contents(db)
    # a sanity floor on the reference itself, so that "equal" below means something
    conn = sqlite3.connect(db)
    n_ok = conn.execute("SELECT COUNT(*) FROM processing_log WHERE status = 'success'").fetchone()[0]
    conn.close()
    assert n_ok > 0.9 * N_DOCS and len(got['dead_letter']) >= 1
    assert len(got['processing_log']) == N_DOCS
    assert sum(len(got[t]) for t in TABLES) > 5 * n_ok
    return got


def check_same_as_reference(summary, db, reference):
    assert summary['read'] == N_DOCS
    assert summary['read'] == summary['written'] + summary['dead']            # the SUMMARY invariant
    assert summary['written'] == sum(1 for r in reference['processing_log'] if r[1] == 'success')
    assert summary['dead'] == len(reference['dead_letter'])
    assert summary['rows'] == sum(len(reference[t]) for t in TABLES)
    got = contents(db)
    for t in reference:
        assert got[t] == reference[t], f'{t} differs from the in_memory DirectRunner run'


# ------------------------------------------------------------------------------------------- multi_processing

def test_multi_processing_two_workers_writes_the_same_rows_as_in_memory(tmp_path, capsys, reference):
    db = fresh_db(tmp_path / 'mp.db')
    rc, s = run_in_process(capsys, db, '--direct_running_mode=multi_processing', '--direct_num_workers=2')
    assert rc == 0
    check_same_as_reference(s, db, reference)


def test_multi_threading_is_refused_before_any_data_moves(tmp_path, capsys):
    db = fresh_db(tmp_path / 'mt.db')
    rc = cli(['run', '--source', f'sqlite:///{db}', '--target', f'sqlite:///{db}'] + RUN_ARGS
             + ['--direct_running_mode=multi_threading'])
    assert rc == 2
    assert 'multi_threading is refused' in capsys.readouterr().err
    conn = sqlite3.connect(db)
    assert conn.execute('SELECT COUNT(*) FROM app_base').fetchone()[0] == 0
    conn.close()


# ------------------------------------------------------------------------------ the job carries its own config

def test_contract_and_table_metadata_travel_with_the_job(tmp_path):
    """Build the graph from a contract file and a table-spec file, delete both, then run it on worker
    processes (multi_processing): the workers never read them, they get them inside the pickled DoFns."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipeline.cli import parse_run_options
    from pipeline.config import load_contract_or_fail
    from pipeline.graph import Paths, build
    from pipeline.summary import Summary, read_counts
    from transforms.io import make_source
    from transforms.sql.plan import prepare_sink

    samples = os.path.join(REPO, 'contracts', 'samples')
    contract_file = shutil.copy(os.path.join(samples, 'credit_app.json'), tmp_path / 'my_contract.json')
    tables_file = shutil.copy(os.path.join(samples, 'credit_app_tables.json'), tmp_path / 'my_tables.json')
    db = fresh_db(tmp_path / 'ship.db')
    url = f'sqlite:///{db}'
    cfg = parse_run_options('run', 't', ['--contract', str(contract_file), '--source', url, '--target', url,
                                         '--partitions', '3', '--batch-size', '25'])
    contract = load_contract_or_fail(str(contract_file))
    sink = prepare_sink(url, contract, tables_spec=str(tables_file), create=True)
    source = make_source(url, contract, opts=cfg.read, resume_target=url, resume_schema=sink.schema)
    opts = PipelineOptions(['--direct_running_mode=multi_processing', '--direct_num_workers=2'])
    p = beam.Pipeline(runner=FnApiRunner(), options=opts)
    counts = str(tmp_path / 'counts.json')
    build(p, cfg, contract, source, sink, Paths(counts=counts), session_id='ship')
    os.remove(contract_file)
    os.remove(tables_file)
    result = p.run()
    result.wait_until_finish()
    s = Summary(read_counts(counts))
    assert s.read == N_DOCS and s.balanced and s.written > 0.9 * N_DOCS
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM processing_log WHERE status = 'success'").fetchone()[0] == s.written
    assert conn.execute('SELECT COUNT(DISTINCT app_id) FROM app_base').fetchone()[0] == s.written
    conn.close()


def test_every_dofn_of_the_graph_round_trips_through_beams_pickler(tmp_path):
    """What a remote worker receives: each ParDo's DoFn, pickled by Beam's pickler. The map DoFn carries the
    contract as a dict, the sink DoFns carry the introspected table metadata, and no DoFn holds a live
    connection before setup/start_bundle."""
    import apache_beam as beam
    from apache_beam.internal import pickler
    from apache_beam.pipeline import PipelineVisitor

    from pipeline.cli import parse_run_options
    from pipeline.config import load_contract_or_fail
    from pipeline.graph import build
    from transforms.io import make_source
    from transforms.map import MapFn
    from transforms.sink import WriteBatchesFn
    from transforms.sql.plan import prepare_sink

    db = fresh_db(tmp_path / 'pk.db')
    url = f'sqlite:///{db}'
    cfg = parse_run_options('run', 't', ['--contract', 'credit_app', '--source', url, '--target', url])
    contract = load_contract_or_fail('credit_app')
    sink = prepare_sink(url, contract, tables_spec=os.path.join(REPO, 'contracts', 'samples',
                                                                'credit_app_tables.json'), create=True)
    source = make_source(url, contract, opts=cfg.read, resume_target=url, resume_schema=sink.schema)
    p = beam.Pipeline()
    build(p, cfg, contract, source, sink)

    fns = []

    class Collect(PipelineVisitor):
        def visit_transform(self, node):
            if isinstance(node.transform, beam.ParDo):
                fns.append((node.full_label, node.transform.fn))

    p.visit(Collect())
    assert len(fns) > 15
    kinds = set()
    for label, fn in fns:
        back = pickler.loads(pickler.dumps(fn))
        assert type(back) is type(fn), label
        kinds.add(type(fn).__name__)
        for attr in ('conn', 'writer', 'ledger'):
            assert getattr(fn, attr, None) is None, f'{label} holds a {attr} before the DoFn lifecycle opened it'
        if isinstance(fn, MapFn):
            assert isinstance(back.contract_source, dict) and back.contract_source == contract.raw
            assert back.compiled is None          # compiled in setup(), on the worker
        if isinstance(fn, WriteBatchesFn):
            assert back.metas and all(back.metas[t].columns for t in back.metas)
    assert {'MapFn', 'WriteBatchesFn', 'ReadPartitionFn'} <= kinds


# ------------------------------------------------------------------------------------------ setup.py / sdist

def test_setup_py_builds_an_sdist_that_installs_with_the_sample_contracts(tmp_path):
    """What --setup_file does: `python setup.py sdist` in the job's launcher, `pip install` of it on workers."""
    src = tmp_path / 'src'
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns('.venv', '.git', '*.egg-info', '__pycache__',
                                                             '.pytest_cache', 'out', '*.db'))
    subprocess.run([sys.executable, 'setup.py', '-q', 'sdist', '--dist-dir', str(tmp_path / 'dist')], cwd=src,
                   check=True, capture_output=True, timeout=180)
    (tarball,) = list((tmp_path / 'dist').glob('*.tar.gz'))
    names = tarfile.open(tarball).getnames()
    top = names[0].split('/')[0]
    for need in ('contracts/samples/credit_app.json', 'contracts/samples/credit_app_tables.json',
                 'pipeline/graph.py', 'transforms/sql/plan.py', 'transforms/sink/write.py', 'contracts/compiler.py',
                 'setup.py'):
        assert f'{top}/{need}' in names, need
    # install it (no deps, no network) into a bare directory and resolve a sample contract from there
    target = tmp_path / 'site'
    # as a Beam worker does with the staged sdist: pip builds it in an isolated environment (setuptools and
    # wheel come from the package index, as they do on workers; the project's own dependencies are not needed)
    pip = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '--no-deps',
                          '--target', str(target), str(tarball)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, f'pip install of the sdist failed:\n{pip.stderr[-3000:]}'
    code = ('import sys; sys.path.insert(0, sys.argv[1]); from contracts.samples import resolve as r; '
            'print(r("credit_app")); print(r("credit_app_tables"))')
    out = subprocess.run([sys.executable, '-S', '-c', code, str(target)], cwd=tmp_path, check=True,
                         capture_output=True, text=True, timeout=60).stdout.split()
    assert out == [str(target / 'contracts' / 'samples' / 'credit_app.json'),
                   str(target / 'contracts' / 'samples' / 'credit_app_tables.json')]


# ------------------------------------------------------------------------------ portable runner, no cluster

def process_groups_alive(pgids):
    """Processes (any state but zombie) whose process group is one of `pgids`: a service started with setsid
    leads its own group, and the SDK workers it spawned stay in it."""
    alive = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open(f'/proc/{pid}/stat') as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(')') + 2:].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp in pgids and state != 'Z':
            alive.append(int(pid))
    return alive


def service_pgids(stderr):
    pgids = {int(x) for x in re.findall(r'started \S+ pid (\d+)', stderr)}
    assert pgids, stderr[-2000:]
    return pgids


def run_portable(mode, db, *extra, timeout=300):
    script = os.path.join(REPO, 'deploy', 'portable_local.sh')
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run([script, mode, '--source', f'sqlite:///{db}', '--target', f'sqlite:///{db}'] + RUN_ARGS
                          + list(extra), capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f'portable_local.sh {mode} exited {proc.returncode}:\n{proc.stderr[-4000:]}'
    assert 'job service on localhost:' in proc.stderr
    return parse_summary(proc.stdout), proc


@pytest.mark.slow
def test_portable_runner_loopback_writes_the_same_rows_as_direct(tmp_path, reference):
    db = fresh_db(tmp_path / 'loopback.db')
    s, proc = run_portable('loopback', db)
    check_same_as_reference(s, db, reference)
    pgids = service_pgids(proc.stderr)
    assert len(pgids) == 1                                     # the job service only
    assert process_groups_alive(pgids) == [], 'portable_local.sh left a service running'


@pytest.mark.slow
def test_portable_runner_external_worker_pool_writes_the_same_rows_as_direct(tmp_path, reference):
    """EXTERNAL: the SDK harness runs in separate worker processes started by the worker pool. Chunked into
    two jobs (--chunk-docs) so that two pipelines run against one job service and the summary adds up."""
    db = fresh_db(tmp_path / 'external.db')
    s, proc = run_portable('external', db, '--chunk-docs', '100', '--summary-json', str(tmp_path / 's.json'))
    check_same_as_reference(s, db, reference)
    import json
    summary = json.load(open(tmp_path / 's.json'))
    assert summary['chunks'] == 2 and summary['invariant_holds'] is True
    # the counts come from the outcome records; the runner's own counters are kept as diagnostics
    assert summary['counts']['read'] == N_DOCS and summary['counts']['rows'] == s['rows']
    assert summary['counters']['sink']['sink_rows_written'] == s['rows']
    assert summary['counters']['sink']['ledger_rows_written'] == N_DOCS
    pgids = service_pgids(proc.stderr)
    assert len(pgids) == 2                                     # job service + worker pool
    assert process_groups_alive(pgids) == [], 'portable_local.sh left a service or worker running'


@pytest.mark.slow
def test_portable_local_script_stops_its_services_when_the_job_fails(tmp_path):
    """A configuration error (exit 2) after the services started: they are still stopped."""
    script = os.path.join(REPO, 'deploy', 'portable_local.sh')
    proc = subprocess.run([script, 'external', '--contract', 'credit_app', '--source', str(tmp_path / 'none'),
                           '--target', f'sqlite:///{tmp_path}/x.db'], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'error: ' in proc.stderr
    pgids = service_pgids(proc.stderr)
    assert len(pgids) == 2
    assert process_groups_alive(pgids) == []


# ------------------------------------------------------------- portable runner into a real server (PostgreSQL)

PG = os.environ.get('XMLSQL_TEST_PG')


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(not PG, reason='XMLSQL_TEST_PG is not set: no PostgreSQL server (.ci/run starts one)')
def test_portable_external_into_postgres_with_the_password_from_the_workers_environment(tmp_path, reference):
    """EXTERNAL worker processes write to PostgreSQL through pyodbc: the target string carries `${VAR}` instead
    of the password, so the job graph never holds it and each worker expands it from its own environment."""
    import json
    import uuid

    import pyodbc
    schema = 'rt_' + uuid.uuid4().hex[:10]
    admin = pyodbc.connect(PG[len('odbc:'):], autocommit=True)
    admin.execute(f'CREATE SCHEMA {schema}')
    try:
        contract = json.load(open(os.path.join(REPO, 'contracts', 'samples', 'credit_app.json')))
        contract['target_schema'] = schema
        contract_path = tmp_path / 'contract.json'
        contract_path.write_text(json.dumps(contract))
        m = re.search(r'Pwd=([^;]*)', PG)
        assert m, 'XMLSQL_TEST_PG has no Pwd='
        target = PG[:m.start(1)] + '${XMLSQL_RUNNERS_PW}' + PG[m.end(1):]
        db = fresh_db(tmp_path / 'src.db')
        args = ['--contract', str(contract_path), '--source', f'sqlite:///{db}', '--target', target,
                '--tables', 'credit_app_tables', '--create-tables', '--batch-size', '16', '--partitions', '4',
                '--log-level', 'WARNING']
        proc = subprocess.run([os.path.join(REPO, 'deploy', 'portable_local.sh'), 'external'] + args,
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, PYTHON=sys.executable, XMLSQL_RUNNERS_PW=m.group(1)))
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert m.group(1) not in proc.stdout + proc.stderr            # the password is never printed
        s = parse_summary(proc.stdout)
        assert s['read'] == N_DOCS and s['read'] == s['written'] + s['dead']
        for t in TABLES:
            n = admin.execute(f'SELECT COUNT(*) FROM {schema}.{t}').fetchone()[0]
            assert n == len(reference[t]), t
        log = sorted(tuple(r) for r in admin.execute(
            f'SELECT app_id, status, stage FROM {schema}.processing_log').fetchall())
        assert log == sorted(r[:3] for r in reference['processing_log'])
        dead = sorted(tuple(r) for r in admin.execute(
            f'SELECT source, app_id, stage, payload FROM {schema}.dead_letter').fetchall())
        assert dead == sorted((r[0], r[1], r[2], r[4]) for r in reference['dead_letter'])
        assert process_groups_alive(service_pgids(proc.stderr)) == []
    finally:
        admin.execute(f'DROP SCHEMA {schema} CASCADE')
        admin.close()
