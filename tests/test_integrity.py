"""Integrity of a migration across runs, through `python -m pipeline run` as a user runs it (SQLite and PostgreSQL):

* a poison document (a con_id the target's column cannot hold) is dead-lettered with stage sink and a reason
  naming the column; every other document is written; a re-run converges;
* a changed document replaces its rows: after editing documents and re-running (resume or --no-resume) the
  target's tables equal exactly what a fresh run of the new documents writes; SUMMARY says changed=N;
* processing_log has one row per app_id and dead_letter one current row per document, even for two runs of one
  job at the same time, with attempts counting the runs a document failed in;
* targets created by the previous version are refused with the command that upgrades them, and upgraded by it.

Expected contents always come from a fresh run of the same documents, never from hard-coded counts."""
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid

import apache_beam as beam
import pytest

from helpers import changed_count, migration_contents, summary_counts, targets_fixture
from contracts.samples.generate import generate_documents, write_sqlite_source, write_xml_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG = os.environ.get('XMLSQL_TEST_PG')
SPEC = os.path.join(ROOT, 'contracts', 'samples', 'credit_app_tables.json')
NEED_PG = pytest.mark.skipif(not PG, reason='XMLSQL_TEST_PG is not set: no PostgreSQL server (.ci/run starts one)')
KINDS = ['sqlite', pytest.param('pg', marks=[NEED_PG, pytest.mark.postgres])]
HUGE = '12345678901234567890'       # 20 digits: more than any 64-bit integer column (and than the drivers) holds
PG_INT_OVERFLOW = '3000000000'      # more than a PostgreSQL / SQL Server int holds


class Target:
    """A fresh target: a SQLite file, or a PostgreSQL schema of its own (the contract then writes into it)."""

    def __init__(self, kind, tmp_path, name):
        self.kind = kind
        if kind == 'sqlite':
            self.url, self.schema, self.contract = f'sqlite:///{tmp_path}/{name}.db', None, 'credit_app'
        else:
            self.url, self.schema = PG, f'ig_{name}_{uuid.uuid4().hex[:8]}'
            c = json.load(open(os.path.join(ROOT, 'contracts', 'samples', 'credit_app.json')))
            c['target_schema'] = self.schema
            self.contract = str(tmp_path / f'contract-{name}.json')
            with open(self.contract, 'w') as f:
                json.dump(c, f)
            self._pg().execute(f'CREATE SCHEMA {self.schema}').close()

    def _pg(self):
        import pyodbc
        return pyodbc.connect(PG[len('odbc:'):], autocommit=True)

    def connect(self):
        return sqlite3.connect(self.url[len('sqlite:///'):]) if self.kind == 'sqlite' else self._pg()

    def t(self, table):
        return table if self.kind == 'sqlite' else f'{self.schema}.{table}'

    def rows(self, sql, params=()):
        conn = self.connect()
        try:
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def tables(self):
        return migration_contents(self)

    def drop(self):
        if self.kind == 'pg':
            self._pg().execute(f'DROP SCHEMA IF EXISTS {self.schema} CASCADE').close()


targets = targets_fixture(Target)


def pipeline(*args, timeout=600):
    """`python -m pipeline ...` in a process of its own, as a user runs it."""
    return subprocess.run([sys.executable, '-m', 'pipeline', *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def run(target, source, *extra, create=True, expect=0):
    # these corpora are bad on purpose: the dead-letter-rate guard is tested in test_exit_status
    args = ['run', '--contract', target.contract, '--source', source, '--target', target.url,
            '--max-dead-letter-rate', '1', *extra]
    if create:
        args += ['--tables', 'credit_app_tables', '--create-tables']
    p = pipeline(*args)
    assert p.returncode == expect, (p.returncode, p.stdout[-1000:], p.stderr[-3000:])
    read, written, dead, rows = summary_counts(p.stdout)        # balanced, or it fails here
    return dict(read=read, written=written, dead=dead, rows=rows, changed=changed_count(p.stdout)), p


def sqlite_source(path, docs):
    conn = sqlite3.connect(path)
    conn.execute('DROP TABLE IF EXISTS app_xml')
    conn.execute('CREATE TABLE app_xml (app_id INTEGER PRIMARY KEY, xml TEXT)')
    conn.executemany('INSERT INTO app_xml VALUES (?, ?)', sorted(docs.items()))
    conn.commit()
    conn.close()
    return f'sqlite:///{path}'


# ------------------------------------------------------------------------------------------------ point 1

def poison(xml, value):
    """The document with its first contact's con_id replaced by `value` (everything else as it was)."""
    out, n = re.subn(r'con_id="\d+"', f'con_id="{value}"', xml, count=1)
    assert n == 1
    return out


@pytest.mark.parametrize('kind', KINDS)
def test_poison_con_id_is_dead_lettered_and_every_other_document_is_written(tmp_path, targets, kind):
    """Before: the key-ownership SELECT failed, the run stopped (exit 1, no SUMMARY) and every re-run stopped at
    the same place. Now: the poison documents fail alone, at the sink, with the column named."""
    docs = dict(generate_documents(40, seed=3))
    with_contacts = [a for a, x in sorted(docs.items()) if re.search(r'con_id="\d+"', x) and '<Request ID=' in x]
    values = [HUGE] if kind == 'sqlite' else [PG_INT_OVERFLOW, HUGE]
    bad = dict(zip(with_contacts[5:], values))
    poisoned = {a: poison(x, bad[a]) if a in bad else x for a, x in docs.items()}
    source = sqlite_source(str(tmp_path / 'src.db'), poisoned)
    clean_source = sqlite_source(str(tmp_path / 'clean.db'), {a: x for a, x in docs.items() if a not in bad})

    target = targets(kind, 'poison')
    s, p = run(target, source, '--batch-size', '8')
    assert s['read'] == 40 and s['dead'] >= len(bad)
    dead = {r[0]: r[1:] for r in target.rows(f'SELECT app_id, stage, reason, attempts FROM {target.t("dead_letter")}')}
    for app_id, value in bad.items():
        stage, reason, attempts = dead[app_id]
        assert stage == 'sink' and attempts == 1
        assert reason.startswith('app_contact_base.con_id: value out of range for '), reason
        assert value not in reason and value not in p.stderr
    log = dict(target.rows(f'SELECT app_id, status FROM {target.t("processing_log")}'))
    assert all(log[a] == 'failed' for a in bad) and len(log) == 40

    # Every other document: exactly the rows a run without the poison documents writes.
    reference = targets(kind, 'clean')
    s_ref, _ = run(reference, clean_source, '--batch-size', '8')
    assert s_ref['written'] == s['written']
    got, want = target.tables(), reference.tables()
    assert {t: v for t, v in got.items() if t != 'processing_log'} == \
        {t: v for t, v in want.items() if t != 'processing_log'}
    assert not any(str(a) in repr(got['app_base']) for a in bad)      # nothing half-written

    # A re-run converges: it retries the failed documents, fails them again, and changes nothing else.
    # Every document it read failed, so it exits 4 (it wrote nothing), with the counts balanced.
    s2, _ = run(target, source, '--batch-size', '8', expect=4)
    assert (s2['read'], s2['written'], s2['dead']) == (s['dead'], 0, s['dead'])
    assert target.tables() == got
    assert {r[0]: r[1] for r in target.rows(f'SELECT app_id, attempts FROM {target.t("dead_letter")}')
            if r[0] in bad} == {a: 2 for a in bad}


# ------------------------------------------------------------------------------------------------ point 2

def edit(docs):
    """Four documents changed the way users change them: a contact removed, a score blanked, a PREV address
    removed, an e-mail blanked (a column of a row that stays). Returns (new docs, {edit: app_id})."""
    out, done = dict(docs), {}
    for app_id, x in sorted(docs.items()):
        if 'contact' not in done and x.count('<contact con_id=') >= 2:
            second = [m.start() for m in re.finditer(r'<contact con_id=', x)][1]
            end = x.index('</contact>', second) + len('</contact>')
            out[app_id], done['contact'] = x[:second] + x[end:], app_id
        elif 'score' not in done and re.search(r'experian_fico_score="\d+"', x):
            out[app_id] = re.sub(r'experian_fico_score="\d+"', 'experian_fico_score=""', x, count=1)
            done['score'] = app_id
        elif 'prev' not in done and '<contact_address address_tp_c="PREV"' in x:
            out[app_id] = re.sub(r'<contact_address address_tp_c="PREV"[^>]*/>', '', x, count=1)
            done['prev'] = app_id
        elif 'email' not in done and re.search(r' email="[^"]+"', x):
            out[app_id] = re.sub(r' email="[^"]+"', ' email=""', x, count=1)
            done['email'] = app_id
    assert len(done) == 4, done
    return out, done


def write_source(kind, tmp_path, name, docs):
    if kind == 'files':
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        for f in folder.iterdir():
            f.unlink()
        for app_id, x in docs.items():
            (folder / f'app-{app_id}.xml').write_bytes(x.encode('utf-8'))
        return str(folder)
    return sqlite_source(str(tmp_path / f'{name}.db'), docs)


@pytest.mark.parametrize('kind,source_kind,resume', [
    ('sqlite', 'table', True), ('sqlite', 'table', False), ('sqlite', 'files', True),
    pytest.param('pg', 'table', True, marks=[NEED_PG, pytest.mark.postgres]),
    pytest.param('pg', 'files', False, marks=[NEED_PG, pytest.mark.postgres])])
def test_changed_documents_replace_their_rows(tmp_path, targets, kind, source_kind, resume):
    """Before: --no-resume updated changed values but left the rows the new version no longer maps to (and kept
    values that became empty); resume skipped changed documents silently."""
    docs = dict(generate_documents(30, seed=7, broken_fraction=0.0))
    new, edits = edit(docs)
    target = targets(kind, 'edited')
    s1, _ = run(target, write_source(source_kind, tmp_path, 'v1', docs))
    assert (s1['read'], s1['written'], s1['changed']) == (30, 30, 0)

    source = write_source(source_kind, tmp_path, 'v1', new)             # the same source, edited in place
    fresh = targets(kind, 'fresh')
    s_fresh, _ = run(fresh, write_source(source_kind, tmp_path, 'v2', new))
    want = fresh.tables()
    assert target.tables() != want                                      # the edits do change the target

    args = [] if resume else ['--no-resume']
    s2, p = run(target, source, *args, '--summary-json', str(tmp_path / 's2.json'), create=False)
    assert s2['changed'] == 4 and json.load(open(tmp_path / 's2.json'))['changed'] == 4
    if resume:      # only the changed documents were read (for a table source: only their XML was fetched)
        assert (s2['read'], s2['written']) == (4, 4)
        assert json.load(open(tmp_path / 's2.json'))['skipped'] == 26
    else:
        assert (s2['read'], s2['written']) == (30, 30)
    assert target.tables() == want, edits
    # Once more: nothing changed since, nothing is read again (resume) or replaced differently (no resume).
    s3, _ = run(target, source, *args, create=False)
    assert s3['changed'] == 0 and s3['read'] == (0 if resume else 30)
    assert target.tables() == want


@pytest.mark.parametrize('kind,source_kind', [
    ('sqlite', 'table'), ('sqlite', 'files'),
    pytest.param('pg', 'table', marks=[NEED_PG, pytest.mark.postgres])])
def test_a_changed_document_that_now_fails_keeps_no_rows(tmp_path, targets, kind, source_kind):
    """A document migrated before whose new version fails is dead-lettered and loses its old rows, wherever it
    fails: before, one that failed at mapping (con_id "12.5") kept the old version's rows while one that failed
    at the sink (a 20-digit con_id) lost them. The target must equal a fresh migration of the edited source
    (where a failing document has no rows), and the other documents keep theirs."""
    docs = dict(generate_documents(12, seed=13, broken_fraction=0.0))
    ids = sorted(docs)
    new = dict(docs)
    new[ids[1]] = poison(docs[ids[1]], '12.5')                     # fails at mapping (a key that is no integer)
    new[ids[4]] = poison(docs[ids[4]], HUGE)                        # fails at the sink (out of range)
    failing = [ids[1], ids[4]]
    if source_kind == 'table':
        # fails at validation (truncated). A table row carries its app_id; a file this broken has no app_id to
        # know it by (its old rows stay: README, "Re-runs and changed documents")
        new[ids[7]] = docs[ids[7]].replace('</Provenir>', '')
        failing.append(ids[7])
    target = targets(kind, 'refail')
    s1, _ = run(target, write_source(source_kind, tmp_path, 'v1', docs))
    assert (s1['read'], s1['written']) == (12, 12)
    before = target.tables()

    # resume reads only the changed documents; all fail, none is written: exit 4
    s2, _ = run(target, write_source(source_kind, tmp_path, 'v1', new), create=False, expect=4)
    assert (s2['read'], s2['written'], s2['dead']) == (len(failing), 0, len(failing)), s2
    fresh = targets(kind, 'refail_fresh')
    run(fresh, write_source(source_kind, tmp_path, 'v2', new))
    assert target.tables() == fresh.tables()
    assert target.tables() != before
    for a in failing:
        assert target.rows(f'SELECT COUNT(*) FROM {target.t("app_base")} WHERE app_id = ?', (a,)) == [(0,)], a
        assert target.rows(f'SELECT status FROM {target.t("processing_log")} WHERE app_id = ?', (a,)) \
            in ([('failed',)], []), a


# ------------------------------------------------------------------------------------------------ point 3

@pytest.mark.parametrize('kind', KINDS)
def test_failing_documents_keep_one_dead_letter_row_with_attempts(tmp_path, targets, kind):
    """Before: dead_letter grew by one row per failed document per run. Now one current row per document."""
    folder = tmp_path / 'xml'
    write_xml_folder(str(folder), 60, seed=21, broken_fraction=0.15)
    target = targets(kind, 'attempts')
    for i in range(3):
        # re-runs read only the failed documents, which fail again: nothing written, exit 4
        s, _ = run(target, str(folder), '--session-id', f'run-{i}', create=(i == 0), expect=0 if i == 0 else 4)
    dead = target.rows(f'SELECT source, attempts, session_id, created_at, last_seen_at, doc_key '
                       f'FROM {target.t("dead_letter")}')
    assert len(dead) == s['dead'] >= 3 and len({d[0] for d in dead}) == len(dead)
    assert all(d[1] == 3 and d[2] == 'run-2' and str(d[3]) <= str(d[4]) for d in dead), dead
    assert any(r[0] is None for r in target.rows(f'SELECT app_id FROM {target.t("dead_letter")}'))  # no app_id too
    n, distinct = target.rows(f'SELECT COUNT(*), COUNT(DISTINCT app_id) FROM {target.t("processing_log")}')[0]
    assert n == distinct

    # A failed document fixed at its source succeeds, and its dead letter is gone.
    fixed = sorted(d[0] for d in dead)[0]
    app_id, xml = next(generate_documents(1, seed=99, start_app_id=900001, broken_fraction=0.0))
    (folder / fixed).write_bytes(xml.encode('utf-8'))
    s, _ = run(target, str(folder), create=False)
    assert s['written'] == 1 and s['dead'] == len(dead) - 1
    assert fixed not in {r[0] for r in target.rows(f'SELECT source FROM {target.t("dead_letter")}')}
    assert target.rows(f'SELECT status FROM {target.t("processing_log")} WHERE app_id = ?', (app_id,)) == \
        [('success',)]


@NEED_PG
@pytest.mark.postgres
def test_two_runs_of_one_job_at_once_leave_one_ledger_row_per_document(tmp_path, targets):
    """Before: two concurrent runs (small chunks and batches) left 1,039 processing_log rows for 984 app_ids."""
    src = str(tmp_path / 'src.db')
    write_sqlite_source(src, 150, seed=31, broken_fraction=0.05)
    target = targets('pg', 'twice')
    p = pipeline('create-tables', '--tables', 'credit_app_tables', '--target', PG, '--schema', target.schema)
    assert p.returncode == 0, p.stderr[-2000:]
    cmd = [sys.executable, '-m', 'pipeline', 'run', '--contract', target.contract, '--source', f'sqlite:///{src}',
           '--target', PG, '--chunk-docs', '25', '--batch-size', '4', '--partitions', '3', '--fetch-size', '7']
    procs = [subprocess.Popen(cmd + ['--session-id', f'twin-{i}'], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        summary_counts(out)
    n, distinct = target.rows(f'SELECT COUNT(*), COUNT(DISTINCT app_id) FROM {target.t("processing_log")}')[0]
    assert n == distinct == 150
    n, distinct = target.rows(f'SELECT COUNT(*), COUNT(DISTINCT doc_key) FROM {target.t("dead_letter")}')[0]
    assert n == distinct
    reference = targets('pg', 'once')
    run(reference, f'sqlite:///{src}')
    got, want = target.tables(), reference.tables()
    assert got == want
    assert n == sum(1 for r in want['processing_log'] if r[1] == 'failed')


# The project tables as the previous version created them (its PROJECT_TABLES), to test the upgrade.
V1_TABLES = {'tables': {
    'processing_log': {'columns': [
        {'name': 'log_id', 'type': 'int', 'nullable': False, 'identity': True},
        {'name': 'app_id', 'type': 'int', 'nullable': False},
        {'name': 'status', 'type': 'varchar(20)', 'nullable': False},
        {'name': 'stage', 'type': 'varchar(20)', 'nullable': True},
        {'name': 'failure_reason', 'type': 'varchar(500)', 'nullable': True},
        {'name': 'processing_time', 'type': 'datetime2(7)', 'nullable': False, 'default': 'GETUTCDATE()'},
        {'name': 'session_id', 'type': 'varchar(50)', 'nullable': True},
        {'name': 'app_id_start', 'type': 'int', 'nullable': True},
        {'name': 'app_id_end', 'type': 'int', 'nullable': True}], 'primary_key': ['log_id']},
    'dead_letter': {'columns': [
        {'name': 'id', 'type': 'bigint', 'nullable': False, 'identity': True},
        {'name': 'source', 'type': 'varchar(1000)', 'nullable': False},
        {'name': 'app_id', 'type': 'int', 'nullable': True},
        {'name': 'stage', 'type': 'varchar(20)', 'nullable': False},
        {'name': 'reason', 'type': 'varchar(2000)', 'nullable': False},
        {'name': 'payload', 'type': 'nvarchar(max)', 'nullable': True},
        {'name': 'created_at', 'type': 'datetime2(7)', 'nullable': False, 'default': 'GETUTCDATE()'}],
        'primary_key': ['id']}}}


def create_v1_target(target):
    """The contract's tables as now, processing_log and dead_letter as the previous version created them."""
    from transforms.sql.ddl import create_table_sql
    from transforms.sql.upgrade import create_tables
    from transforms.sql.meta import load_table_spec
    from transforms.sql.targets import parse_target
    t = parse_target(target.url)
    create_tables(t, SPEC, target.schema, skip_tables=['processing_log'], project_tables=False)
    conn = t.connect()
    try:
        cur = conn.cursor()
        for meta in load_table_spec(V1_TABLES).values():
            cur.execute(create_table_sql(meta, t.dialect_name, target.schema).rstrip(';'))
        cur.execute(f'CREATE INDEX ix_processing_log_app_id ON {target.t("processing_log")} (app_id)')
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize('kind', KINDS)
def test_targets_of_the_previous_version_are_refused_then_upgraded(tmp_path, targets, kind):
    from pipeline.cli import main as cli
    docs = dict(generate_documents(30, seed=41, broken_fraction=0.0))
    ids = sorted(docs)
    broken = ids[3]
    docs[broken] = docs[broken][:len(docs[broken]) // 2]               # truncated: fails at validation
    source = sqlite_source(str(tmp_path / 'src.db'), docs)
    target = targets(kind, 'v1')
    create_v1_target(target)
    a, legacy = ids[0], ids[1]
    pl, dl = target.t('processing_log'), target.t('dead_letter')
    conn = target.connect()
    for app_id, status in [(a, 'failed'), (a, 'failed'), (broken, 'failed'), (broken, 'failed'),
                           (legacy, 'success')]:
        conn.execute(f'INSERT INTO {pl} (app_id, status, stage) VALUES (?, ?, ?)', (app_id, status, 'sink'))
    for source_ref in [f'app_xml:{a}'] * 3 + [f'app_xml:{broken}'] * 2:
        conn.execute(f"INSERT INTO {dl} (source, app_id, stage, reason) VALUES (?, NULL, 'sink', 'old')",
                     (source_ref,))
    conn.commit()
    conn.close()

    args = ['run', '--contract', target.contract, '--source', source, '--target', target.url]
    rc = cli(args)
    assert rc == 2           # refused before any data moves, with the command that upgrades
    p = pipeline(*args)
    err = [ln for ln in p.stderr.splitlines() if ln.startswith('error:')]
    assert p.returncode == 2 and len(err) == 1, p.stderr[-2000:]
    assert 'created by an earlier version' in err[0] and '--create-tables' in err[0] and 'content_hash' in err[0]
    assert target.rows(f'SELECT COUNT(*) FROM {pl}') == [(5,)]         # untouched

    s, p = run(target, source, '--summary-json', str(tmp_path / 's.json'))     # --create-tables upgrades
    assert 'upgraded processing_log' in p.stderr and 'upgraded dead_letter' in p.stderr
    # legacy: a success without content hash is trusted as done (no way to tell whether it changed)
    assert json.load(open(tmp_path / 's.json'))['skipped'] == 1 and s['read'] == 29
    log = target.rows(f'SELECT app_id, status, content_hash FROM {pl}')
    assert len(log) == len({r[0] for r in log}) == 30
    assert all(r[2] for r in log if r[0] != legacy)
    dead = target.rows(f'SELECT source, attempts, doc_key FROM {dl}')
    assert [(d[0], d[1]) for d in dead] == [(f'app_xml:{broken}', 3)]       # 2 merged + this run; a succeeded
    assert dead[0][2] and len(dead[0][2]) == 40
    # Upgrading again changes nothing.
    p = pipeline('create-tables', '--tables', 'credit_app_tables', '--target', target.url,
                 *(['--schema', target.schema] if target.schema else []))
    assert p.returncode == 0 and 'upgraded' not in p.stderr, p.stderr[-2000:]


def test_resume_reads_the_xml_only_of_documents_not_done(tmp_path, monkeypatch):
    """A table source with resume pages app_ids, asks the ledger, has the source compute the hashes of the done
    ones, and reads the XML only of the documents that are new, failed or changed."""
    from transforms.sql.upgrade import create_tables
    from transforms.sql.targets import parse_target, sha256_hex
    from transforms.io.sources import ReadOptions
    from transforms.io.tables import Partition, ReadPartitionFn, TableSpec, _Query
    docs = dict(generate_documents(20, seed=5, broken_fraction=0.0))
    ids = sorted(docs)
    url = sqlite_source(str(tmp_path / 'src.db'), docs)
    target = f'sqlite:///{tmp_path}/t.db'
    create_tables(parse_target(target), {'tables': {}})
    conn = sqlite3.connect(f'{tmp_path}/t.db')
    rows = [(a, 'success', sha256_hex(docs[a])) for a in ids[:10]]           # done, unchanged
    rows += [(a, 'success', sha256_hex('an earlier version')) for a in ids[10:12]]     # changed since
    rows += [(ids[12], 'success', None), (ids[13], 'failed', sha256_hex(docs[ids[13]]))]   # legacy; failed
    conn.executemany('INSERT INTO processing_log (app_id, status, content_hash) VALUES (?, ?, ?)', rows)
    conn.commit()
    conn.close()
    fetched = []
    fetch = _Query.fetch
    monkeypatch.setattr(_Query, 'fetch', lambda self, app_ids: (fetched.extend(app_ids), fetch(self, app_ids))[1])
    fn = ReadPartitionFn(TableSpec(url, 'app_xml', 'xml', None), ReadOptions(fetch_size=6), resume_target=target)
    fn.start_bundle()
    got = list(fn.process(Partition(ids[0] - 1, ids[-1])))
    fn.finish_bundle()
    out = [d for d in got if not isinstance(d, beam.pvalue.TaggedOutput)]
    assert sum(t.value for t in got if isinstance(t, beam.pvalue.TaggedOutput)) == 11     # skipped: 10 + legacy
    assert sorted(fetched) == [d.app_id for d in out] == ids[10:12] + ids[13:]
    assert all(d.content_hash == sha256_hex(docs[d.app_id]) and d.xml == docs[d.app_id].encode('utf-8') for d in out)
