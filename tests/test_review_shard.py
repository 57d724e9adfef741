"""Review of 83aa6c7 (folders sharded by the app_id at each file's start): reproductions of defects found.

Each test states what the change promises and fails where it does not hold. They are meant to fail on 83aa6c7."""
import re
import sqlite3

import pytest

from contracts.samples.generate import generate_documents
from helpers import summary_counts
from pipeline.cli import main as cli
from transforms.io import files as files_mod
from transforms.io.sources import shard_of
from test_shard_files import SPEC


def _twin_folder(tmp_path):
    """000.xml (kept: its name sorts first) and its twin 000b.xml (another con_id), plus four other documents."""
    folder = tmp_path / 'xml'
    folder.mkdir()
    docs = list(generate_documents(5, seed=12, broken_fraction=0.0))
    for i, (a, x) in enumerate(docs):
        (folder / f'{i:03d}.xml').write_text(x)
    a0, x0 = docs[0]
    con = re.search(r'<contact [^>]*con_id="(\d+)"', x0).group(1)
    twin = x0.replace(f'con_id="{con}"', f'con_id="{int(con) + 5_000_000}"')
    (folder / '000b.xml').write_text(twin)
    return folder, int(a0), twin


def _rows(db, app_id):
    c = sqlite3.connect(db)
    try:
        return (c.execute('SELECT COUNT(*) FROM app_base WHERE app_id = ?', (app_id,)).fetchone()[0],
                c.execute('SELECT COUNT(*) FROM app_contact_base WHERE app_id = ?', (app_id,)).fetchone()[0],
                c.execute('SELECT status FROM processing_log WHERE app_id = ?', (app_id,)).fetchall())
    finally:
        c.close()


def _misplacing_count(paths, victim, app_id):
    return next(n for n in (2, 3, 4, 5) if paths.index(victim) % n != shard_of(app_id, n))


@pytest.mark.parametrize('how', ['scan_disagrees', 'file_completed_after_the_scan'])
def test_a_misplaced_twin_never_removes_the_rows_its_kept_twin_wrote(tmp_path, capsys, monkeypatch, how):
    """README: 'Should the scan ever disagree with the parse ..., the document is dead-lettered with a reason ...,
    never written beside its twin in another shard.' One process keeps 000.xml and dead-letters 000b.xml
    (stage dedupe, app_id None: processing_log stays the kept document's). The misplaced twin's dead letter
    carries the app_id instead, so the ledger takes it as a failed re-migration of that app_id and deletes the
    rows the kept twin wrote in its shard (each --shard-index run is its own session)."""
    folder, a, twin = _twin_folder(tmp_path)
    victim = str(folder / '000b.xml')
    paths = sorted(str(p) for p in folder.glob('*.xml'))
    count = _misplacing_count(paths, victim, a)
    if how == 'scan_disagrees':
        # the device test_shard_files uses for 'should the scan ever disagree with the parse'
        real = files_mod.file_app_id
        monkeypatch.setattr(files_mod, 'file_app_id', lambda p, spec, *a: None if p == victim else real(p, spec, *a))
    else:
        # real code paths only: the twin is still being written when the files are assigned (its start holds no
        # app_id yet), and complete when its shard reads it
        real_shard_files = files_mod.shard_files

        def racing(paths_, spec, n, *a):
            open(victim, 'w').write('<?xml version="1.0"?>\n<Provenir>')
            try:
                        return real_shard_files(paths_, spec, n, *a)
            finally:
                open(victim, 'w').write(twin)
        monkeypatch.setattr(files_mod, 'shard_files', racing)
        import transforms.io as io_mod
        monkeypatch.setattr(io_mod, 'shard_files', racing)
    home, away = shard_of(a, count), paths.index(victim) % count
    common = ['run', '--contract', 'credit_app', '--source', str(folder), '--tables', 'credit_app_tables',
              '--create-tables', '--max-dead-letter-rate', '1', '--target', f'sqlite:///{tmp_path}/t.db',
              '--shard-count', str(count)]
    # the kept twin's shard first, then the shard the twin was misplaced into, then the others
    for i in [home, away] + [k for k in range(count) if k not in (home, away)]:
        cli([*common, '--shard-index', str(i)])
        summary_counts(capsys.readouterr().out)
        if i == home:
            assert _rows(f'{tmp_path}/t.db', a)[:2] != (0, 0)          # 000.xml written
    app_base, contacts, log = _rows(f'{tmp_path}/t.db', a)
    assert (app_base, log) == (1, [('success',)]), (app_base, contacts, log)


@pytest.mark.parametrize('before', [
    '<P/>' * 5000,                                     # siblings of <Request> beyond the scan's pruning interval
    '<P a="1">t</P>' * 9000 + '<Q/>',
    '<Big>' + '<x a="1">text</x>' * 20000 + '</Big>',  # one sibling holding many elements
    '<Request2/>' * 4500 + '<Note><Request ID="7"/></Note>',   # a nested <Request> is off the path
])
def test_the_scan_finds_the_app_id_past_many_elements_before_it(tmp_path, before):
    """The scan drops the finished part of its tree as it goes: the app_id it finds must stay the parse's."""
    from test_shard_files import BASE, BASE_ID, _body, pipeline_app_id, scanned
    body = _body(BASE)
    data = body.replace('<Request ', before + '<Request ', 1).encode('utf-8')
    assert pipeline_app_id(data) == BASE_ID
    assert scanned(tmp_path, data) == BASE_ID
    for mode in ('partial', 'full'):
        second = body.replace('</Provenir>', before + '<Request ID="99"/></Provenir>').encode('utf-8')
        assert pipeline_app_id(second, SPEC._replace(mode=mode)) == scanned(tmp_path, second) == BASE_ID
