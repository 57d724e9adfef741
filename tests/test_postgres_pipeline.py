"""The whole pipeline into a real PostgreSQL server through pyodbc + psqlODBC (CI starts it; XMLSQL_TEST_PG).

The existing system's CC corpus (../shared/seed-corpus) with its own contract and tables.json: row counts per
table equal its expected rows; a re-run writes nothing new; a run whose connections are killed midway completes
by retry or by a re-run, with no duplicate and no lost document. Also the project's own generated data.

The killed-midway test terminates every client backend of its database, so it runs on a PostgreSQL server of this
module's own (tests/pg_private.py, started once for the module), never on the shared cluster that XMLSQL_TEST_PG
names: other people's sessions there would be killed too. The other tests use the shared cluster."""
import collections
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from pipeline.cli import main as cli
from contracts.samples.generate import write_sqlite_source
from helpers import summary_counts
from pg_private import private_pg  # noqa: F401  (the fixture: a PostgreSQL server of this module's own)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(os.path.dirname(ROOT), 'shared', 'seed-corpus', 'cc')
PG = os.environ.get('XMLSQL_TEST_PG')

pytestmark = pytest.mark.postgres
# The tests on the shared cluster; the one on the private server skips by itself when no server can be started.
needs_shared_pg = pytest.mark.skipif(not PG, reason='XMLSQL_TEST_PG is not set: no PostgreSQL server for these '
                                                    'tests (.ci/run starts one)')
needs_corpus = pytest.mark.skipif(not os.path.isdir(CORPUS),
                                  reason=f'the existing system\'s corpus is not at {CORPUS}')


def pg_conn(target=None):
    """An autocommit connection to the shared cluster, or to the ODBC `target` given (the private server)."""
    import pyodbc
    return pyodbc.connect((target or PG)[len('odbc:'):], autocommit=True)


def summary_of(out):
    return dict(zip(('read', 'written', 'dead', 'rows'), summary_counts(out)))


def run(capsys, *args):
    rc = cli(['run', *args])
    out = capsys.readouterr().out
    return rc, summary_of(out)


def _own_schema(target=None):
    name = 'it_' + uuid.uuid4().hex[:10]
    conn = pg_conn(target)
    conn.execute(f'CREATE SCHEMA {name}')
    conn.close()
    yield name
    conn = pg_conn(target)      # a fresh one: the test may have terminated every backend
    conn.execute(f'DROP SCHEMA {name} CASCADE')
    conn.close()


@pytest.fixture
def schema():
    """A schema of the test's own on the shared cluster."""
    yield from _own_schema()


@pytest.fixture
def private_schema(private_pg):
    """A schema of the test's own on this module's private server."""
    yield from _own_schema(private_pg.target)


def table_counts(schema, tables, target=None):
    conn = pg_conn(target)
    try:
        return {t: conn.execute(f'SELECT COUNT(*) FROM {schema}.{t}').fetchone()[0] for t in tables}
    finally:
        conn.close()


def cc_contract(tmp_path, schema):
    """The CC contract as it is, but writing into this test's own schema (a temp file, not a copy in the repo)."""
    c = json.load(open(os.path.join(CORPUS, 'contract.json')))
    c['target_schema'] = schema
    path = tmp_path / 'contract.json'
    path.write_text(json.dumps(c))
    return str(path), c


def expected_counts(contract):
    """Rows per table the existing system produced for the corpus, one per primary key."""
    spec = json.load(open(os.path.join(CORPUS, 'tables.json')))['tables']
    keys = collections.defaultdict(set)
    for line in open(os.path.join(CORPUS, 'expected-rows.jsonl')):
        r = json.loads(line)
        t = r['table']
        if t == 'processing_log':
            continue
        keys[t].add(tuple(r['row'].get(c) for c in spec[t]['primary_key']))
    return {t: len(v) for t, v in keys.items()}


@needs_corpus
@needs_shared_pg
def test_cc_corpus_into_postgres_counts_rerun_and_resume(tmp_path, capsys, schema):
    contract_path, contract = cc_contract(tmp_path, schema)
    expected = expected_counts(contract)
    tables = sorted(expected)
    common = ['--contract', contract_path, '--source', os.path.join(CORPUS, 'xml'), '--target', PG]
    rc, s = run(capsys, *common, '--tables', os.path.join(CORPUS, 'tables.json'), '--create-tables',
                '--batch-size', '50')
    assert rc == 0
    assert (s['read'], s['written'], s['dead']) == (165, 163, 2)
    assert table_counts(schema, tables) == expected
    conn = pg_conn()
    dead = conn.execute(f'SELECT source, stage, reason, length(payload) FROM {schema}.dead_letter '
                        'ORDER BY source').fetchall()
    assert [d[0] for d in dead] == ['bloat.xml', 'sample-source-xml-wrong-schema--600000.xml']
    assert 'wrong root element <Journals>' in dead[0][2]
    assert 'wrong product line' in dead[1][2]
    assert all(d[3] > 1000 for d in dead)      # the original document is kept
    log = conn.execute(f'SELECT status, COUNT(*), COUNT(DISTINCT app_id) FROM {schema}.processing_log '
                       'GROUP BY status ORDER BY status').fetchall()
    assert [tuple(r) for r in log] == [('failed', 1, 1), ('success', 163, 163)]   # bloat.xml has no app_id
    conn.close()

    # Again, resuming: the 163 successes are skipped, the 2 failures are tried again and fail again: read 2,
    # wrote none, so exit 4 (README: exit status).
    rc, s = run(capsys, *common)
    assert rc == 4 and (s['read'], s['written'], s['dead']) == (2, 0, 2)
    assert table_counts(schema, tables) == expected
    # Again, everything: upserts, nothing new.
    rc, s = run(capsys, *common, '--no-resume', '--batch-size', '7')
    assert rc == 0 and (s['read'], s['written'], s['dead']) == (165, 163, 2)
    assert table_counts(schema, tables) == expected


@needs_corpus
def test_run_with_connections_killed_midway_completes_without_duplicates(tmp_path, private_pg, private_schema):
    """On the private server: the killer ends every client backend of the database but its own, which there are
    only this run's connections."""
    schema, target = private_schema, private_pg.target
    contract_path, contract = cc_contract(tmp_path, schema)
    expected = expected_counts(contract)
    cmd = [sys.executable, '-m', 'pipeline', 'run', '--contract', contract_path, '--source',
           os.path.join(CORPUS, 'xml'), '--target', target, '--tables', os.path.join(CORPUS, 'tables.json'),
           '--create-tables', '--batch-size', '5']
    stop, kills = threading.Event(), []

    def killer():
        conn = pg_conn(target)
        time.sleep(1.0)
        while not stop.is_set():
            rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                                "datname = current_database() AND pid <> pg_backend_pid() AND "
                                "backend_type = 'client backend'").fetchall()
            kills.append(sum(1 for r in rows if r[0]))
            time.sleep(0.4)
        conn.close()

    outcomes = []
    for attempt in range(3):
        t = threading.Thread(target=killer, daemon=True)
        if attempt == 0:
            t.start()
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        stop.set()
        if attempt == 0:
            t.join()
        # the target is shown with its password masked (Pwd=***), never the password itself
        assert private_pg.password not in p.stderr + p.stdout and 'Pwd=***' in p.stderr
        outcomes.append(p.returncode)
        if p.returncode == 0:
            read = summary_of(p.stdout)['read']               # (summary_of checks read = written + dead-lettered)
            # the first run reads everything; a re-run after a stopped one resumes with what is left
            assert read == 165 if attempt == 0 else 0 < read <= 165
            break
        stop.clear()
    print(f'connections terminated: {sum(kills)}; run exit codes: {outcomes}')
    assert sum(kills) > 0, 'the killer never found a connection to terminate'
    assert outcomes[-1] == 0, f'the job did not complete after {len(outcomes)} runs: {p.stderr[-2000:]}'
    assert table_counts(schema, sorted(expected), target) == expected
    conn = pg_conn(target)
    n, distinct = conn.execute(f'SELECT COUNT(*), COUNT(DISTINCT app_id) FROM {schema}.processing_log').fetchone()
    assert n == distinct == 164
    conn.close()


@needs_shared_pg
def test_generated_documents_into_postgres(tmp_path, capsys, schema):
    db = str(tmp_path / 'src.db')
    write_sqlite_source(db, 150, seed=5)
    c = json.load(open(os.path.join(ROOT, 'contracts', 'samples', 'credit_app.json')))
    c['target_schema'] = schema
    (tmp_path / 'c.json').write_text(json.dumps(c))
    common = ['--contract', str(tmp_path / 'c.json'), '--source', f'sqlite:///{db}', '--target', PG]
    rc, s = run(capsys, *common, '--tables', 'credit_app_tables', '--create-tables', '--partitions', '3')
    assert rc == 0 and s['read'] == 150 and s['written'] > 140
    # Same rows as the same documents into SQLite.
    sqlite_target = str(tmp_path / 't.db')
    rc, s2 = run(capsys, '--contract', 'credit_app', '--source', f'sqlite:///{db}', '--target',
                 f'sqlite:///{sqlite_target}', '--tables', 'credit_app_tables', '--create-tables')
    assert rc == 0 and (s2['written'], s2['dead'], s2['rows']) == (s['written'], s['dead'], s['rows'])
    import sqlite3
    lite = sqlite3.connect(sqlite_target)
    conn = pg_conn()
    for table, cols in [('app_contact_base', 'con_id, app_id, first_name, birth_date'),
                        ('app_contact_address', 'con_id, address_type_enum, zip, city'),
                        ('scores', 'app_id, score_identifier, score')]:
        a = sorted(tuple(str(v)[:10] for v in r) for r in lite.execute(f'SELECT {cols} FROM {table}'))
        b = sorted(tuple(str(v)[:10] for v in r) for r in conn.execute(f'SELECT {cols} FROM {schema}.{table}'))
        assert a == b and a, table
    conn.close()


@needs_shared_pg
def test_postgres_table_as_the_source_with_partitions_and_shards(tmp_path, capsys, schema):
    """Read app_id, xml from a PostgreSQL table (keyset pages per partition), write to SQLite."""
    from contracts.samples.generate import generate_documents
    conn = pg_conn()
    conn.execute(f'CREATE TABLE {schema}.app_xml (app_id integer PRIMARY KEY, xml text)')
    docs = list(generate_documents(90, seed=8))
    cur = conn.cursor()
    cur.executemany(f'INSERT INTO {schema}.app_xml VALUES (?, ?)', docs)
    conn.close()
    target = f'sqlite:///{tmp_path}/t.db'
    common = ['--contract', 'credit_app', '--source', PG, '--source-table', f'{schema}.app_xml', '--target', target]
    rc, s = run(capsys, *common, '--tables', 'credit_app_tables', '--create-tables', '--partitions', '4',
                '--fetch-size', '7', '--shard-count', '2', '--shard-index', '0')
    from transforms.io.sources import shard_of
    first = [a for a, _ in docs if shard_of(a, 2) == 0]     # the server's arithmetic agrees with shard_of
    assert rc == 0 and s['read'] == len(first) and 0 < len(first) < 90
    # Everything else, resuming: the other shard plus the first shard's documents that failed.
    rc, s2 = run(capsys, *common, '--partitions', '3', '--fetch-size', '11')
    assert rc == 0 and s2['read'] == 90 - s['written']
    import sqlite3
    lite = sqlite3.connect(f'{tmp_path}/t.db')
    logged = dict(lite.execute('SELECT app_id, status FROM processing_log').fetchall())
    assert set(logged) == {a for a, _ in docs}        # the source's app_id names even an unparseable document
    assert lite.execute('SELECT COUNT(*) FROM app_base').fetchone()[0] == \
        sum(1 for st in logged.values() if st == 'success')
