"""Faults during a run: a full disk under the SQLite target, the PostgreSQL server restarting. The run either
completes through retries or stops with one clear error; a re-run completes the job; nothing is lost or written
twice."""
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from pipeline.generate import write_sqlite_source
from helpers import summary_counts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG = os.environ.get('XMLSQL_TEST_PG')


summary = summary_counts


def test_full_disk_stops_the_run_clearly_and_a_rerun_completes(tmp_path):
    """The target's file system fills up mid-run (simulated with RLIMIT_FSIZE: every write past the limit fails
    with EFBIG, which SQLite reports as 'database or disk is full'). Documents must not be dead-lettered for
    it: the run stops, and a re-run after space is freed completes."""
    n = 300
    src = str(tmp_path / 'src.db')
    write_sqlite_source(src, n, seed=13)
    target = str(tmp_path / 't.db')
    cmd = [sys.executable, '-m', 'pipeline', 'run', '--contract', 'credit_app', '--source', f'sqlite:///{src}',
           '--target', f'sqlite:///{target}', '--tables', 'credit_app_tables', '--create-tables',
           '--batch-size', '10']
    # Create the tables first (small), then allow only a little more growth.
    subprocess.run([sys.executable, '-m', 'pipeline', 'create-tables', '--tables', 'credit_app_tables',
                    '--target', f'sqlite:///{target}'], cwd=ROOT, check=True, capture_output=True)
    limit = os.path.getsize(target) + 150 * 1024

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=small_disk)
    assert full.returncode == 1, (full.returncode, full.stdout[-1000:], full.stderr[-2000:])
    err_lines = [ln for ln in full.stderr.splitlines() if ln.startswith('error:')]
    # SQLite says 'database or disk is full', or 'disk I/O error' when the WAL commit is the write that fails.
    assert len(err_lines) == 1 and re.search(r'disk is full|disk I/O error', err_lines[0]) \
        and 're-run' in err_lines[0], full.stderr[-2000:]
    c = sqlite3.connect(target)
    assert c.execute("SELECT COUNT(*) FROM dead_letter WHERE reason LIKE '%full%'").fetchone()[0] == 0
    c.close()

    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary(done.stdout)
    c = sqlite3.connect(target)
    assert c.execute('SELECT COUNT(*), COUNT(DISTINCT app_id) FROM processing_log').fetchone() == (n, n)
    assert c.execute("SELECT COUNT(*) FROM processing_log WHERE failure_reason LIKE '%full%'").fetchone()[0] == 0
    assert c.execute('SELECT COUNT(*) FROM app_base').fetchone()[0] == \
        c.execute("SELECT COUNT(*) FROM processing_log WHERE status = 'success'").fetchone()[0]
    c.close()


def _pg_cluster():
    if not shutil.which('pg_lsclusters') or os.geteuid() != 0:
        return None
    out = subprocess.run(['pg_lsclusters', '-h'], capture_output=True, text=True).stdout.split()
    return (out[0], out[1]) if len(out) >= 2 else None


@pytest.mark.postgres
@pytest.mark.skipif(not PG, reason='XMLSQL_TEST_PG is not set: no PostgreSQL server (.ci/run starts one)')
@pytest.mark.skipif(_pg_cluster() is None, reason='needs root and pg_ctlcluster to restart the server')
def test_postgres_restarting_mid_run(tmp_path):
    """The server restarts while the job writes (every connection dropped, refused for a moment): the run ends
    through retries, or stops clearly and a re-run completes; no duplicates, every document once."""
    import json
    import uuid

    import pyodbc
    ver, name = _pg_cluster()
    schema = 'fault_' + uuid.uuid4().hex[:8]
    conn = pyodbc.connect(PG[len('odbc:'):], autocommit=True)
    conn.execute(f'CREATE SCHEMA {schema}')
    conn.close()
    c = json.load(open(os.path.join(ROOT, 'contracts', 'samples', 'credit_app.json')))
    c['target_schema'] = schema
    (tmp_path / 'c.json').write_text(json.dumps(c))
    n = 400
    src = str(tmp_path / 'src.db')
    write_sqlite_source(src, n, seed=17)
    cmd = [sys.executable, '-m', 'pipeline', 'run', '--contract', str(tmp_path / 'c.json'), '--source',
           f'sqlite:///{src}', '--target', PG, '--tables', 'credit_app_tables', '--create-tables',
           '--batch-size', '5']

    def restart():
        time.sleep(2.0)
        subprocess.run(['pg_ctlcluster', ver, name, 'restart'], capture_output=True, timeout=120)

    t = threading.Thread(target=restart)
    t.start()
    runs = [subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)]
    t.join()
    if runs[0].returncode != 0:
        assert runs[0].returncode == 1 and 'error: the run stopped' in runs[0].stderr, runs[0].stderr[-2000:]
        runs.append(subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600))
    assert runs[-1].returncode == 0, runs[-1].stderr[-2000:]
    for r in runs:
        assert 'xmlsql-test-pw' not in r.stdout + r.stderr
    summary(runs[-1].stdout)
    for _ in range(30):     # the server may still be coming up for this test's own connection
        try:
            conn = pyodbc.connect(PG[len('odbc:'):], autocommit=True)
            break
        except pyodbc.Error:
            time.sleep(1)
    total, distinct, ok = conn.execute(f"SELECT COUNT(*), COUNT(DISTINCT app_id), SUM(CASE WHEN status = 'success' "
                                       f"THEN 1 ELSE 0 END) FROM {schema}.processing_log").fetchone()
    assert total == distinct == n
    assert conn.execute(f'SELECT COUNT(*) FROM {schema}.app_base').fetchone()[0] == ok
    for table, key in [('app_contact_base', 'con_id'), ('scores', 'app_id, score_identifier')]:
        assert conn.execute(f'SELECT COUNT(*) FROM (SELECT {key} FROM {schema}.{table} GROUP BY {key} '
                            'HAVING COUNT(*) > 1) d').fetchone()[0] == 0
    conn.execute(f'DROP SCHEMA {schema} CASCADE')
    conn.close()
