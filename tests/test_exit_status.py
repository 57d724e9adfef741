"""Failures are loud: a run in which every document fails, or more than --max-dead-letter-rate of them, still
completes (every good document written, every bad one dead-lettered) but exits 4 with one clear line; a run that
only skipped already-done documents exits 0."""
import json
import os
import subprocess
import sys

import pytest

from pipeline.cli import main as cli
from contracts.samples.generate import write_sqlite_source
from helpers import summary_counts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def error_lines(err):
    return [ln for ln in err.splitlines() if ln.startswith('error:')]


def test_a_run_where_every_document_fails_exits_4_with_one_line(tmp_path):
    src = str(tmp_path / 'src.db')
    write_sqlite_source(src, 25, seed=3, broken_fraction=1.0)
    cmd = [sys.executable, '-m', 'pipeline', 'run', '--contract', 'credit_app', '--source', f'sqlite:///{src}',
           '--target', f'sqlite:///{tmp_path}/t.db', '--tables', 'credit_app_tables', '--create-tables',
           '--summary-json', str(tmp_path / 's.json'), '--max-dead-letter-rate', '1']
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 4, r.stderr[-2000:]
    assert summary_counts(r.stdout) == (25, 0, 25, 0)
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and errors[0].startswith('error: none of the 25 documents read was written'), r.stderr
    assert 'Traceback' not in r.stderr
    s = json.load(open(tmp_path / 's.json'))
    assert s['exit_code'] == 4 and s['interrupted'] is False and s['dead_letter_rate'] == 1.0


@pytest.fixture(scope='module')
def dirty(tmp_path_factory):
    """A source where about a third of the documents are broken, and its dead-letter count."""
    d = tmp_path_factory.mktemp('dirty')
    src = str(d / 'src.db')
    write_sqlite_source(src, 60, seed=5, broken_fraction=0.35)
    return d, src


def run(capsys, d, src, *extra):
    rc = cli(['run', '--contract', 'credit_app', '--source', f'sqlite:///{src}', '--target',
              f'sqlite:///{d}/t.db', '--tables', 'credit_app_tables', '--create-tables', '--no-resume',
              '--progress-seconds', '0', *extra])
    cap = capsys.readouterr()
    return rc, summary_counts(cap.out), error_lines(cap.err)


def test_max_dead_letter_rate_is_respected_both_ways(capsys, dirty):
    d, src = dirty
    rc, (read, written, dead, _), errors = run(capsys, d, src, '--max-dead-letter-rate', '1')
    assert rc == 0 and not errors and read == 60 and 0 < dead < read and written > 0
    # Just above the run's rate: 0. Just below: the same run (everything written that can be) exits 4.
    above, below = (dead + 0.5) / read, (dead - 0.5) / read
    rc, counts, errors = run(capsys, d, src, '--max-dead-letter-rate', f'{above:.6f}')
    assert rc == 0 and not errors and counts[:3] == (read, written, dead)
    rc, counts, errors = run(capsys, d, src, '--max-dead-letter-rate', f'{below:.6f}')
    assert rc == 4 and counts[:3] == (read, written, dead)
    assert len(errors) == 1 and f'{dead} of {read} documents read' in errors[0] \
        and '--max-dead-letter-rate' in errors[0] and f'the other {written} are written' in errors[0], errors
    # The default (0.1) is far below a third of the documents failing.
    rc, counts, errors = run(capsys, d, src)
    assert rc == 4 and len(errors) == 1


def test_a_run_that_only_skips_done_documents_exits_0(tmp_path, capsys):
    src = str(tmp_path / 'src.db')
    write_sqlite_source(src, 12, seed=2, broken_fraction=0.0)
    args = ['run', '--contract', 'credit_app', '--source', f'sqlite:///{src}', '--target', f'sqlite:///{tmp_path}/t.db',
            '--tables', 'credit_app_tables', '--create-tables', '--progress-seconds', '0']
    assert cli(args) == 0
    summary_counts(capsys.readouterr().out)
    assert cli(args) == 0                        # everything done already: read 0, skipped 12
    cap = capsys.readouterr()
    assert summary_counts(cap.out)[:3] == (0, 0, 0) and not error_lines(cap.err)


@pytest.mark.parametrize('value', ['1.5', '-0.1'])
def test_a_rate_outside_0_1_is_a_configuration_error(tmp_path, capsys, value):
    rc = cli(['run', '--contract', 'credit_app', '--source', str(tmp_path), '--target', f'sqlite:///{tmp_path}/t.db',
              '--max-dead-letter-rate', value])
    errors = error_lines(capsys.readouterr().err)
    assert rc == 2 and len(errors) == 1 and '--max-dead-letter-rate' in errors[0]
