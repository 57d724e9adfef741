"""Faults during a run: a full disk under the SQLite target, the PostgreSQL server restarting or down while the
run opens its connections. A short outage is ridden out by the retries; a lasting fault stops the run with one
clear error and a re-run completes the job; nothing is lost or written twice."""
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from contracts.samples.generate import write_sqlite_source
from helpers import summary_counts
from pg_private import private_pg  # noqa: F401  (the fixture: a PostgreSQL server of this module's own)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

    sj = str(tmp_path / 'stopped.json')
    full = subprocess.run(cmd + ['--summary-json', sj], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          preexec_fn=small_disk)
    assert full.returncode == 1, (full.returncode, full.stdout[-1000:], full.stderr[-2000:])
    # a stopped run still ends with the SUMMARY of what was committed, and its JSON says why it stopped
    _, written, _, _ = summary(full.stdout)
    import json
    js = json.load(open(sj))
    assert js['exit_code'] == 1 and js['status'] == 'stopped' and 're-run' in js['error']
    assert js['counts']['written'] == written < n
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


# ------------------------------------------------------------------ PostgreSQL restarts: a server of our own
# These tests stop and restart a PostgreSQL server: their own (tests/pg_private.py), never the shared cluster
# that XMLSQL_TEST_PG names.

def _pg_job(private_pg, tmp_path, n, seed):
    """A schema of its own on the private server, a contract writing there, a SQLite source of n documents."""
    import json
    import uuid
    schema = 'fault_' + uuid.uuid4().hex[:8]
    conn = private_pg.connect()
    conn.execute(f'CREATE SCHEMA {schema}')
    conn.close()
    c = json.load(open(os.path.join(ROOT, 'contracts', 'samples', 'credit_app.json')))
    c['target_schema'] = schema
    (tmp_path / 'c.json').write_text(json.dumps(c))
    src = str(tmp_path / 'src.db')
    write_sqlite_source(src, n, seed=seed)
    cmd = [sys.executable, '-m', 'pipeline', 'run', '--contract', str(tmp_path / 'c.json'), '--source',
           f'sqlite:///{src}', '--target', private_pg.target, '--tables', 'credit_app_tables', '--create-tables',
           '--batch-size', '5']
    return schema, cmd


def _assert_every_document_once(private_pg, schema, n):
    conn = private_pg.connect()
    total, distinct, ok = conn.execute(f"SELECT COUNT(*), COUNT(DISTINCT app_id), SUM(CASE WHEN status = 'success' "
                                       f"THEN 1 ELSE 0 END) FROM {schema}.processing_log").fetchone()
    assert total == distinct == n
    assert conn.execute(f'SELECT COUNT(*) FROM {schema}.app_base').fetchone()[0] == ok
    for table, key in [('app_contact_base', 'con_id'), ('scores', 'app_id, score_identifier')]:
        assert conn.execute(f'SELECT COUNT(*) FROM (SELECT {key} FROM {schema}.{table} GROUP BY {key} '
                            'HAVING COUNT(*) > 1) d').fetchone()[0] == 0
    conn.execute(f'DROP SCHEMA {schema} CASCADE')
    conn.close()


class _Lines:
    """A running command's stderr, read line by line in a thread; `wait_for(pattern)` blocks until a line
    matches (a condition, not a sleep)."""

    def __init__(self, proc):
        self.proc, self.lines, self.cond = proc, [], threading.Condition()
        self.out = []
        threading.Thread(target=self._read, args=(proc.stderr, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(proc.stdout, self.out), daemon=True).start()

    def _read(self, stream, into):
        for line in stream:
            with self.cond:
                into.append(line)
                self.cond.notify_all()

    def wait_for(self, pattern, timeout=300):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(rx.search(ln) for ln in self.lines):
                left = deadline - time.monotonic()
                assert left > 0 and self.proc.poll() is None, ''.join(self.lines)[-3000:]
                self.cond.wait(min(left, 0.5))
        return next(ln for ln in self.lines if rx.search(ln))

    def text(self):
        with self.cond:
            return ''.join(self.lines), ''.join(self.out)


@pytest.mark.postgres
@pytest.mark.parametrize('resume, who', [(False, 'sink'), (True, 'resume ledger')],
                         ids=['sink-bundle', 'resume-ledger'])
def test_postgres_down_while_the_run_opens_its_connections(private_pg, tmp_path, resume, who):
    """The server goes down right after the launch checks and stays down until the run has tried to open a
    connection (a sink bundle with --no-resume, the source's resume-ledger read with resume): that attempt is
    retried with backoff, the server comes back, the run completes (exit 0) with every document once."""
    n = 120
    schema, cmd = _pg_job(private_pg, tmp_path, n, seed=19)
    cmd += [] if resume else ['--no-resume']
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = _Lines(p)
    try:
        lines.wait_for(r'INFO pipeline: target: ')       # launched: tables checked, nothing written yet
        private_pg.stop()
        hit = lines.wait_for(r'transient error \(attempt 1 of \d+\), retrying')
        private_pg.start()
        rc = p.wait(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
        if not private_pg.running():
            private_pg.start()
    err, out = lines.text()
    assert rc == 0, err[-3000:]
    assert f'transforms.sql.retry: {who}' in hit, hit       # the connection that met the outage
    assert private_pg.password not in out + err
    summary(out)
    _assert_every_document_once(private_pg, schema, n)


@pytest.mark.postgres
def test_postgres_restarting_mid_run(private_pg, tmp_path):
    """The server restarts (pg_ctl restart -m fast: every session ended, connections refused for a moment)
    while the job writes: the statements in flight and the reconnects are retried, the run completes (exit 0),
    every document once, nothing duplicated."""
    n = 400
    schema, cmd = _pg_job(private_pg, tmp_path, n, seed=17)
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = _Lines(p)
    try:
        conn = private_pg.connect()
        deadline = time.monotonic() + 300
        while True:      # until the sink has committed documents (their ledger rows are there)
            try:
                if conn.execute(f'SELECT COUNT(*) FROM {schema}.processing_log').fetchone()[0] > 0:
                    break
            except Exception:
                pass                     # the table does not exist yet
            assert p.poll() is None and time.monotonic() < deadline, lines.text()[0][-3000:]
            time.sleep(0.05)
        conn.close()
        private_pg.restart()
        rc = p.wait(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
    err, out = lines.text()
    assert rc == 0, err[-3000:]
    assert re.search(r'transient error \(attempt 1 of \d+\)', err), err[-3000:]
    assert private_pg.password not in out + err
    summary(out)
    _assert_every_document_once(private_pg, schema, n)
