"""--processes N: the job split into N shard processes on one machine, one summary; the same rows as one process."""
import json
import sqlite3

import pytest

from pipeline.cli import main as cli
from contracts.samples.generate import write_sqlite_source, write_xml_folder
from helpers import SAMPLE_TABLES, changed_count, summary_counts

TABLES = SAMPLE_TABLES


def summary(capsys):
    return summary_counts(capsys.readouterr().out)


def contents(db):
    c = sqlite3.connect(db)
    try:
        out = {}
        for t in TABLES + ['dead_letter']:
            cols = [r[1] for r in c.execute(f'PRAGMA table_info({t})')
                    if r[1] not in ('rowstamp', 'id', 'created_at', 'last_seen_at', 'session_id')]   # time, run
            out[t] = sorted(map(repr, c.execute(f'SELECT {", ".join(cols)} FROM {t}')))
        out['ledger'] = sorted(c.execute('SELECT app_id, status, stage FROM processing_log'))
        return out
    finally:
        c.close()


@pytest.mark.parametrize('kind, start', [('table', 'fork'), ('folder', 'fork'), ('table', 'spawn')])
def test_shard_processes_write_what_one_process_writes(tmp_path, capsys, monkeypatch, kind, start):
    """Forked from the launcher (Linux, the default) or started as new interpreters: the same rows, counts and
    files as one process."""
    import pipeline.orchestrate as orchestrate
    monkeypatch.setattr(orchestrate, '_FORK_SHARDS', start == 'fork')
    if kind == 'table':
        write_sqlite_source(str(tmp_path / 'src.db'), 160, seed=31)
        source = f'sqlite:///{tmp_path}/src.db'
    else:
        write_xml_folder(str(tmp_path / 'xml'), 160, seed=31)
        source = str(tmp_path / 'xml')
    common = ['--contract', 'credit_app', '--source', source, '--tables', 'credit_app_tables', '--create-tables']
    assert cli(['run', *common, '--target', f'sqlite:///{tmp_path}/one.db']) == 0
    one = summary(capsys)
    assert cli(['run', *common, '--target', f'sqlite:///{tmp_path}/three.db', '--processes', '3',
                '--dead-letter', str(tmp_path / 'dl.jsonl'), '--metrics-json', str(tmp_path / 'm.json')]) == 0
    three = summary(capsys)
    assert three == one and three[0] == 160
    assert contents(f'{tmp_path}/three.db') == contents(f'{tmp_path}/one.db')
    dl = [json.loads(x) for x in open(tmp_path / 'dl.jsonl')]
    assert len(dl) == three[2] and all(d['reason'] and d['stage'] for d in dl)
    m = json.load(open(tmp_path / 'm.json'))
    assert (m['read'], m['written'], m['dead_lettered']) == three[:3] and len(m['failed']) == three[2]
    # A second run with processes resumes: only the failed documents are read again. They fail again, so this
    # run read documents and wrote none: exit 4 with one line (from the launcher, not one per shard).
    assert cli(['run', *common[:4], '--target', f'sqlite:///{tmp_path}/three.db', '--processes', '2']) == 4
    cap = capsys.readouterr()
    again = summary_counts(cap.out)
    assert again[0] == three[2] and again[1] == 0
    errors = [ln for ln in cap.err.splitlines() if 'error:' in ln]
    assert len(errors) == 1 and errors[0].startswith('error: none of the'), cap.err[-2000:]


def test_processes_refuses_what_it_cannot_split(tmp_path, capsys):
    write_sqlite_source(str(tmp_path / 'src.db'), 10, seed=1)
    rc = cli(['run', '--contract', 'credit_app', '--source', f'sqlite:///{tmp_path}/src.db', '--target',
              f'sqlite:///{tmp_path}/t.db', '--processes', '2', '--shard-count', '2', '--shard-index', '0'])
    assert rc == 2 and 'does not combine' in capsys.readouterr().err
    rc = cli(['run', '--contract', 'credit_app', '--source', f'sqlite:///{tmp_path}/src.db', '--target',
              f'sqlite:///{tmp_path}/t.db', '--processes', '2', '--limit', '5'])
    assert rc == 2 and '--limit' in capsys.readouterr().err


def _table_source(tmp_path, n=200):
    write_sqlite_source(str(tmp_path / 'src.db'), n, seed=9)
    return ['run', '--contract', 'credit_app', '--source', f'sqlite:///{tmp_path}/src.db', '--tables',
            'credit_app_tables', '--create-tables', '--target', f'sqlite:///{tmp_path}/t.db', '--processes', '2']


@pytest.mark.parametrize('start', ['fork', 'spawn'])
def test_each_shards_log_lines_reach_the_launchers_stderr_prefixed(tmp_path, capsys, monkeypatch, start):
    import pipeline.orchestrate as orchestrate
    monkeypatch.setattr(orchestrate, '_FORK_SHARDS', start == 'fork')
    assert cli(_table_source(tmp_path, 20) + ['--log-level', 'INFO']) == 0
    cap = capsys.readouterr()
    for i in (0, 1):
        assert any(ln.startswith(f'[shard {i}] ') and 'source: table' in ln for ln in cap.err.splitlines()), \
            cap.err[-2000:]
    assert summary_counts(cap.out)[0] == 20 and cap.out.count('SUMMARY') == 1   # one summary, the launcher's


@pytest.mark.parametrize('when', ['after', 'before'])
def test_a_signal_while_the_shards_start_reaches_every_shard_started(tmp_path, capsys, monkeypatch, when):
    """SIGTERM just after the first shard was forked (no second shard is started), or while it is being forked
    (it is not in the launcher's list yet when the handler runs): every shard started stops; none migrates its
    whole share unnoticed, and the run reports the interruption (143)."""
    import os
    import signal
    import pipeline.orchestrate as orchestrate
    real = orchestrate._fork_shard
    started = []

    def fork_then_signal(*a):
        if when == 'before':
            os.kill(os.getpid(), signal.SIGTERM)
        real(*a)
        started.append(a[-1][-1].pid)
        if when == 'after':
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(orchestrate, '_fork_shard', fork_then_signal)
    assert cli(_table_source(tmp_path, 400)) == 143
    cap = capsys.readouterr()
    read = summary_counts(cap.out)[0]
    assert len(started) == 1 and read < 400 // 2 - 20, (started, read, cap.err[-1500:])


def test_a_forked_shard_reaped_by_another_caller_reports_instead_of_raising():
    """The launcher's signal handler polls while its main thread waits on the same child: the second to reap it
    finds the status recorded (waitpid raises ECHILD then), never an exception."""
    import os
    from pipeline.orchestrate import _ForkedShard
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    shard = _ForkedShard(pid, None, None)
    import time
    while shard.poll() is None:         # the handler's poll reaps it
        time.sleep(0.01)
    assert shard.wait() == 3 and shard.poll() == 3
    pid = os.fork()
    if pid == 0:
        os._exit(4)
    other = _ForkedShard(pid, None, None)
    os.waitpid(pid, 0)                   # reaped elsewhere: the status is lost, the shard counts as failed
    assert other.wait() == 1


def test_a_shard_that_cannot_be_started_stops_the_ones_running(tmp_path, capsys, monkeypatch):
    """The second fork refused: the first shard is stopped and waited for (not left writing), the signal mask and
    the launcher's pipes are as before, one error line."""
    import os
    import signal
    import pipeline.orchestrate as orchestrate
    real_fork, calls = os.fork, []

    def failing_fork():
        calls.append(1)
        if len(calls) == 2:
            raise BlockingIOError(11, 'Resource temporarily unavailable')
        return real_fork()
    fds_before = len(os.listdir('/proc/self/fd'))
    monkeypatch.setattr(orchestrate.os, 'fork', failing_fork)
    assert cli(_table_source(tmp_path, 200)) == 1
    monkeypatch.setattr(orchestrate.os, 'fork', real_fork)
    cap = capsys.readouterr()
    assert [ln for ln in cap.err.splitlines() if ln.startswith('error:')], cap.err[-1500:]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()
    assert len(os.listdir('/proc/self/fd')) <= fds_before
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)       # the started shard was waited for: no child is left


def test_every_row_of_a_sqlite_source_is_read_by_exactly_one_shard_app_ids_that_are_no_integer_too(tmp_path, capsys):
    """A row whose app_id is text is read (and dead-lettered or migrated) by one shard, as by one process; before,
    no shard read it and the run did not say so."""
    write_sqlite_source(str(tmp_path / 'gen.db'), 30, seed=4)
    rows = sqlite3.connect(str(tmp_path / 'gen.db')).execute('SELECT app_id, xml FROM app_xml').fetchall()
    c = sqlite3.connect(str(tmp_path / 'src.db'))
    c.execute('CREATE TABLE app_xml (app_id INTEGER, xml TEXT)')      # not the key: any value fits
    c.executemany('INSERT INTO app_xml VALUES (?, ?)', rows + [('abc', '<Provenir/>')])
    c.commit()
    c.close()
    base = ['run', '--contract', 'credit_app', '--source', f'sqlite:///{tmp_path}/src.db', '--tables',
            'credit_app_tables', '--create-tables']
    cli([*base, '--target', f'sqlite:///{tmp_path}/one.db'])
    one = summary(capsys)
    cli([*base, '--target', f'sqlite:///{tmp_path}/two.db', '--processes', '2'])
    two = summary(capsys)
    assert one[0] == two[0] == 31 and one == two


def test_one_app_id_in_files_of_different_shards_is_kept_once_as_by_one_process(tmp_path, capsys):
    """Folders were split every N-th file, so two files of one app_id landed in different shards, where neither
    shard's DedupeAppIds saw the other: the target held both documents' contacts under one app_id and the run
    said written=2. Files are now assigned by the app_id at their start: --processes must end as one process
    does, run after run: the file whose name sorts first is kept, the other dead-lettered (stage dedupe); counts,
    exit status, rows and files included."""
    import re
    from contracts.samples.generate import generate_documents
    docs = list(generate_documents(12, seed=6, broken_fraction=0.0))
    folder = tmp_path / 'xml'
    folder.mkdir()
    for i, (a, x) in enumerate(docs):
        (folder / f'{i:03d}.xml').write_text(x)
    # twins of the first 4 documents, sorting right after each (by position they were in the other of 2 shards)
    twins = {}
    for i, (a, x) in enumerate(docs[:4]):
        con = re.search(r'<contact [^>]*con_id="(\d+)"', x).group(1)
        twin = x.replace(f'con_id="{con}"', f'con_id="{int(con) + 7_000_000}"')
        assert twin != x
        (folder / f'{i:03d}b.xml').write_text(twin)
        twins[a] = f'{i:03d}b.xml'
    common = ['--contract', 'credit_app', '--source', str(folder), '--tables', 'credit_app_tables',
              '--create-tables', '--max-dead-letter-rate', '1']
    for run in (1, 2, 3):
        rc_one = cli(['run', *common, '--target', f'sqlite:///{tmp_path}/one.db', '--metrics-json',
                      str(tmp_path / 'm-one.json')])
        one = summary(capsys)
        m_one = json.load(open(tmp_path / 'm-one.json'))
        rc = cli(['run', *common, '--target', f'sqlite:///{tmp_path}/two.db', '--processes', '2',
                  '--dead-letter', str(tmp_path / f'dl{run}.jsonl'), '--status', str(tmp_path / f's{run}.jsonl'),
                  '--metrics-json', str(tmp_path / f'm{run}.json')])
        out = capsys.readouterr().out
        two = summary_counts(out)
        # the first run writes 12 and dead-letters the 4 twins; later ones read only the twins (resume skips
        # the rest), which fail again: read and none written is exit 4, with one process as with two
        assert (rc, rc_one) == ((0, 0) if run == 1 else (4, 4)), run
        assert one[:3] == ((16, 12, 4) if run == 1 else (4, 0, 4)), run
        assert two == one, run
        assert changed_count(out) == 0, run
        per_app = {}
        for db in ('one', 'two'):
            c = sqlite3.connect(f'{tmp_path}/{db}.db')
            per_app[db] = dict(c.execute('SELECT app_id, COUNT(*) FROM app_contact_base GROUP BY app_id'))
            c.close()
        assert per_app['two'] == per_app['one'], run        # not both documents' contacts under one app_id
        assert contents(f'{tmp_path}/two.db') == contents(f'{tmp_path}/one.db'), run
        dl = [json.loads(x) for x in open(tmp_path / f'dl{run}.jsonl')]
        assert sorted(d['source'] for d in dl) == sorted(twins.values()) and {d['stage'] for d in dl} == {'dedupe'}
        status = [json.loads(x) for x in open(tmp_path / f's{run}.jsonl')]
        assert sorted(s['file'] for s in status if s['status'] != 'ok') == sorted(twins.values()), run
        assert len(status) == two[0]
        m = json.load(open(tmp_path / f'm{run}.json'))
        assert two[0] == two[1] + two[2] and (m['written'], m['dead_lettered']) == two[1:3]
        for k in ('rows_by_table', 'dead_lettered_by_stage', 'warnings_by_field'):
            assert m.get(k) == m_one.get(k), (run, k)
