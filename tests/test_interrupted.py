"""A run killed midway (SIGKILL, no clean-up at all) and re-run: every document ends once in processing_log, as
success or failed, and no row is duplicated."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

from contracts.samples.generate import write_sqlite_source
from helpers import SAMPLE_TABLES, sample_table_counts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 600
TABLES = SAMPLE_TABLES


counts = sample_table_counts


def ledger(db):
    c = sqlite3.connect(db)
    try:
        return c.execute('SELECT COUNT(*), COUNT(DISTINCT app_id), SUM(status = \'success\') '
                         'FROM processing_log').fetchone()
    except sqlite3.OperationalError:
        return (0, 0, 0)
    finally:
        c.close()


def test_killed_run_is_completed_by_a_rerun_without_duplicates(tmp_path):
    src = str(tmp_path / 'src.db')
    write_sqlite_source(src, N, seed=21)
    target = str(tmp_path / 't.db')
    cmd = [sys.executable, '-m', 'pipeline', 'run', '--contract', 'credit_app', '--source', f'sqlite:///{src}',
           '--target', f'sqlite:///{target}', '--tables', 'credit_app_tables', '--create-tables',
           '--chunk-docs', '100', '--batch-size', '20']
    # Kill the job as soon as part of it is done (some chunks committed, the rest not).
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if os.path.exists(target) and ledger(target)[0] >= 150:
            break
        time.sleep(0.1)
    assert p.poll() is None, 'the run finished before it could be killed: make it longer'
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    partial = ledger(target)
    assert 0 < partial[0] < N, partial

    # Re-run: resumes, completes.
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    total, distinct, success = ledger(target)
    assert total == distinct == N                           # every document once
    # A third run over everything (no resume) changes nothing: the state after the kill + re-run is complete.
    after_rerun = counts(target)
    again = subprocess.run(cmd + ['--no-resume'], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert counts(target) == after_rerun
    assert ledger(target) == (N, N, success)
    # And no duplicates by key in any table.
    c = sqlite3.connect(target)
    for table, key in [('app_base', 'app_id'), ('app_contact_base', 'con_id'),
                       ('app_contact_address', 'con_id, address_type_enum'),
                       ('app_historical_lookup', 'app_id, name'), ('scores', 'app_id, score_identifier')]:
        assert c.execute(f'SELECT COUNT(*) FROM (SELECT {key} FROM {table} GROUP BY {key} HAVING COUNT(*) > 1)'
                         ).fetchone()[0] == 0, table
    c.close()
