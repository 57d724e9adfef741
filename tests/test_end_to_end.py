"""End to end on the project's own data: generated documents in SQLite → `python -m pipeline run` → SQLite.

Expectations come from the documents themselves (parsed here with plain lxml) and from the `map` command over
the same documents, never from hard-coded counts."""
import collections
import json
import os
import re
import sqlite3

import pytest
from lxml import etree

from pipeline.cli import main as cli
from contracts.samples.generate import generate_documents, write_sqlite_source, write_xml_folder
from helpers import SUMMARY, SAMPLE_TABLES, sample_table_counts

N_DOCS = 120
SEED = 11
TABLES = SAMPLE_TABLES


def run_cli(capsys, *args):
    rc = cli(list(args))
    out = capsys.readouterr().out
    m = SUMMARY.search(out)
    assert m, f'no SUMMARY line in output: {out[-2000:]}'
    read, written, dead, rows = map(int, m.groups()[:4])
    return rc, dict(read=read, written=written, dead=dead, rows=rows)


counts = sample_table_counts


def good_documents():
    """app_id → root of every generated document that is a well-formed CC Provenir document (plain lxml)."""
    out = {}
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    for app_id, xml in generate_documents(N_DOCS, seed=SEED):
        try:
            root = etree.fromstring(xml.encode('utf-8'), parser)
        except etree.XMLSyntaxError:
            continue
        req = root.find('Request')
        if root.tag == 'Provenir' and req is not None and req.get('ID') == str(app_id) \
                and req.find('CustData/application') is not None:
            out[app_id] = root
    return out


@pytest.fixture(scope='module')
def migrated(tmp_path_factory):
    """Generated documents in SQLite, migrated once by `run` (source and target in one file, as run_local.sh)."""
    import contextlib
    import io
    d = tmp_path_factory.mktemp('e2e')
    db = str(d / 'app.db')
    write_sqlite_source(db, N_DOCS, seed=SEED)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli(['run', '--contract', 'credit_app', '--source', f'sqlite:///{db}', '--target', f'sqlite:///{db}',
                  '--tables', 'credit_app_tables', '--create-tables', '--dead-letter', str(d / 'dl.jsonl'),
                  '--summary-json', str(d / 'summary.json'), '--metrics-json', str(d / 'metrics.json'),
                  '--batch-size', '16'])
    return d, db, rc, out.getvalue()


def test_run_writes_every_document_or_dead_letters_it(migrated):
    d, db, rc, out = migrated
    m = SUMMARY.search(out)
    assert m, out[-2000:]
    s = dict(zip(('read', 'written', 'dead', 'rows'), map(int, m.groups()[:4])))
    assert rc == 0
    good = good_documents()
    assert s['read'] == N_DOCS
    assert s['read'] == s['written'] + s['dead']
    assert s['written'] == len(good)                      # every well-formed document, nothing else
    summary = json.load(open(d / 'summary.json'))
    assert (summary['read'], summary['written'], summary['dead_lettered']) == (s['read'], s['written'], s['dead'])
    assert summary['invariant_holds'] is True

    conn = sqlite3.connect(db)
    # The ledger: one row per document, success exactly for the good ones.
    log = dict(conn.execute('SELECT app_id, status FROM processing_log').fetchall())
    assert {a for a, st in log.items() if st == 'success'} == set(good)
    # Dead letters: the others, each with stage, reason and the original payload.
    dead = conn.execute('SELECT source, app_id, stage, reason, payload FROM dead_letter').fetchall()
    assert len(dead) == s['dead']
    originals = dict(generate_documents(N_DOCS, seed=SEED))
    for source, app_id, stage, reason, payload in dead:
        assert stage in ('validation', 'parse', 'mapping', 'sink') and reason
        sid = int(source.split(':')[1])
        assert sid not in good
        assert payload == originals[sid]
    lines = [json.loads(x) for x in open(d / 'dl.jsonl')]
    assert sorted(x['source'] for x in lines) == sorted(r[0] for r in dead)
    # The operator's metrics: every failed document with stage and reason (no payload), rows per table.
    metrics = json.load(open(d / 'metrics.json'))
    assert sorted((f['source'], f['stage'], f['reason']) for f in metrics['failed']) == \
        sorted((r[0], r[2], r[3]) for r in dead)
    assert all('payload' not in f for f in metrics['failed'])
    assert sum(sum(v.values()) for v in metrics['dead_lettered_by_stage_and_reason'].values()) == s['dead']
    assert metrics['rows_by_table'] == {t: n for t, n in counts(db).items() if n}
    assert metrics['elapsed_s'] > 0 and sum(metrics['warnings_by_field'].values()) == metrics['quality_warnings']

    # Specific values, read from the XML with lxml here.
    base = dict(conn.execute('SELECT app_id, ip_address FROM app_base').fetchall())
    assert set(base) == set(good)
    contacts = {r[0]: r[1:] for r in conn.execute('SELECT con_id, app_id, first_name, last_name FROM app_contact_base')}
    checked = 0
    for app_id, root in good.items():
        app = root.find('Request/CustData/application')
        assert base[app_id] == ((app.get('IP_address') or '').strip()[:39] or None)
        for c in app.findall('contact'):
            cid, role, first = c.get('con_id', ''), c.get('ac_role_tp_c'), (c.get('first_name') or '').strip()
            if role == 'PR' and cid.isdigit() and first and len(first) <= 50 and int(cid) in contacts:
                assert contacts[int(cid)][0] == app_id
                assert contacts[int(cid)][1] == first
                checked += 1
    assert checked >= len(good) // 2
    conn.close()


def test_rows_in_the_database_equal_the_rows_the_map_command_writes(migrated, capsys, tmp_path):
    d, db, rc, _ = migrated
    assert rc == 0
    folder = tmp_path / 'xml'
    write_xml_folder(str(folder), N_DOCS, seed=SEED)
    rc, s = run_cli(capsys, 'map', '--contract', 'credit_app', '--input', str(folder),
                    '--output', str(tmp_path / 'rows.jsonl'), '--status', str(tmp_path / 'status.jsonl'))
    assert rc == 0 and s['read'] == N_DOCS and s['read'] == s['written'] + s['dead']
    rows = [json.loads(x) for x in open(tmp_path / 'rows.jsonl')]
    per_table = collections.Counter(r['table'] for r in rows)
    got = counts(db)
    for t in TABLES:
        assert got[t] == per_table.get(t, 0), t
    assert sum(got.values()) > 5 * s['written']          # contacts, addresses, KV rows: not just app_base
    status = [json.loads(x) for x in open(tmp_path / 'status.jsonl')]
    assert len(status) == N_DOCS
    assert sum(1 for x in status if x['status'] == 'ok') == s['written']
    assert all(x['error'] for x in status if x['status'] == 'failed')
    # The data-quality channel: warnings kept with each document's outcome (field names, never values).
    warned = [x for x in status if x['warnings']]
    assert warned and all(isinstance(w, str) for x in warned for w in x['warnings'])


def test_rerun_resumes_and_never_duplicates(migrated, capsys):
    d, db, rc, _ = migrated
    assert rc == 0
    before = counts(db)
    # Resume (default): the successes are skipped; only the failed documents are read again. They fail again:
    # a run that read documents and wrote none exits 4 (README: exit status), never 0.
    rc, s = run_cli(capsys, 'run', '--contract', 'credit_app', '--source', f'sqlite:///{db}',
                    '--target', f'sqlite:///{db}')
    assert rc == 4
    n_failed = N_DOCS - len(good_documents())
    assert s['read'] == n_failed and s['written'] == 0 and s['dead'] == n_failed
    assert counts(db) == before
    # No resume: everything again, upserted: same counts, same ledger size.
    rc, s = run_cli(capsys, 'run', '--contract', 'credit_app', '--source', f'sqlite:///{db}',
                    '--target', f'sqlite:///{db}', '--no-resume', '--batch-size', '7')
    assert rc == 0 and s['read'] == N_DOCS and s['read'] == s['written'] + s['dead']
    assert counts(db) == before
    conn = sqlite3.connect(db)
    assert conn.execute('SELECT COUNT(*), COUNT(DISTINCT app_id) FROM processing_log').fetchone() == (N_DOCS, N_DOCS)
    conn.close()


def test_configuration_errors_are_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / 'bad.json'
    bad.write_text('{"mappings": [')
    rc = cli(['run', '--contract', str(bad), '--source', str(tmp_path), '--target', f'sqlite:///{tmp_path}/t.db'])
    err = capsys.readouterr().err
    assert rc == 2 and 'bad contract' in err
    rc = cli(['run', '--contract', 'credit_app', '--source', str(tmp_path / 'none'),
              '--target', f'sqlite:///{tmp_path}/t.db', '--create-tables', '--tables', 'credit_app_tables'])
    err = capsys.readouterr().err
    assert rc == 2 and 'no .xml files' in err
    (tmp_path / 'src').mkdir()
    (tmp_path / 'src' / 'a.xml').write_text('<Provenir/>')
    rc = cli(['run', '--contract', 'credit_app', '--source', str(tmp_path / 'src'),
              '--target', f'sqlite:///{tmp_path}/u.db'])
    err = capsys.readouterr().err
    assert rc == 2 and 'create-tables' in err
    # The source is checked before the target is touched: no tables were created for a job with nothing to read.
    rc = cli(['run', '--contract', 'credit_app', '--source', str(tmp_path / 'none'),
              '--target', f'sqlite:///{tmp_path}/v.db', '--create-tables', '--tables', 'credit_app_tables'])
    assert rc == 2 and not os.path.exists(tmp_path / 'v.db')


def test_document_failing_in_a_later_tier_leaves_no_rows_behind(tmp_path, capsys):
    """app_base is written in tier 0; a contact whose con_id belongs to another application fails the document
    in tier 1. Its app_base (and every other) row must be gone and the document dead-lettered with the reason."""
    docs = [(a, x) for a, x in generate_documents(40, seed=4, broken_fraction=0.0)]
    ids = re.compile(r'con_id="(\d+)"')
    first = next((a, x) for a, x in docs if ids.search(x))
    second = next((a, x) for a, x in docs if a != first[0] and ids.search(x))
    owned = ids.search(first[1]).group(1)
    stolen = ids.sub(f'con_id="{owned}"', second[1])
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    (tmp_path / 'a' / 'first.xml').write_text(first[1])
    (tmp_path / 'b' / 'second.xml').write_text(stolen)
    db = f'sqlite:///{tmp_path}/t.db'
    rc, s = run_cli(capsys, 'run', '--contract', 'credit_app', '--source', str(tmp_path / 'a'), '--target', db,
                    '--tables', 'credit_app_tables', '--create-tables')
    assert rc == 0 and s['written'] == 1
    rc, s = run_cli(capsys, 'run', '--contract', 'credit_app', '--source', str(tmp_path / 'b'), '--target', db,
                    '--summary-json', str(tmp_path / 's.json'))
    assert rc == 4 and (s['read'], s['written'], s['dead']) == (1, 0, 1)    # read one, wrote none: exit 4
    # Its tier-0 rows had been committed, and were removed.
    assert json.load(open(tmp_path / 's.json'))['counters']['sink']['partial_rows_removed'] >= 1
    conn = sqlite3.connect(f'{tmp_path}/t.db')
    for t in TABLES:
        cols = [r[1] for r in conn.execute(f'PRAGMA table_info({t})')]
        if 'app_id' in cols:
            assert conn.execute(f'SELECT COUNT(*) FROM {t} WHERE app_id = ?', (second[0],)).fetchone()[0] == 0, t
    assert conn.execute('SELECT app_id FROM app_contact_base WHERE con_id = ?', (int(owned),)).fetchone()[0] \
        == first[0]
    stage, reason, payload = conn.execute('SELECT stage, reason, payload FROM dead_letter WHERE app_id = ?',
                                          (second[0],)).fetchone()
    assert stage == 'sink' and f'already belongs to app_id {first[0]}' in reason and payload == stolen
    assert conn.execute('SELECT status FROM processing_log WHERE app_id = ?', (second[0],)).fetchone()[0] == 'failed'


def test_long_runs_report_progress_on_stderr(tmp_path):
    """Progress lines (done / total, rate, ETA) after each chunk, in the log on stderr; stdout keeps the SUMMARY."""
    import subprocess
    import sys
    db = str(tmp_path / 'src.db')
    write_sqlite_source(db, 90, seed=2)
    p = subprocess.run([sys.executable, '-m', 'pipeline', 'run', '--contract', 'credit_app', '--source',
                        f'sqlite:///{db}', '--target', f'sqlite:///{tmp_path}/t.db', '--tables', 'credit_app_tables',
                        '--create-tables', '--chunk-docs', '40'], capture_output=True, text=True, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert p.returncode == 0, p.stderr[-2000:]
    lines = re.findall(r'progress: chunk (\d)/3, (\d+) of 90 documents \(\d+%\), \d+ docs/min, ETA \d+ s', p.stderr)
    assert [(c, int(n)) for c, n in lines] == [('1', 40), ('2', 80), ('3', 90)], p.stderr[-2000:]
    assert SUMMARY.search(p.stdout) and 'progress' not in p.stdout
    assert 'dead letter:' not in p.stderr          # per-document lines are DEBUG; the summary counts them


@pytest.mark.parametrize('resume', [True, False])
def test_duplicate_app_id_in_a_later_chunk_is_dead_lettered_not_written_over(tmp_path, capsys, resume):
    """Files learn their app_id only from the XML; a second document with the same app_id in a later chunk of the
    same run must not overwrite the first (nor be skipped as 'already done')."""
    docs = [(a, x) for a, x in generate_documents(30, seed=6, broken_fraction=0.0)]
    folder = tmp_path / 'xml'
    folder.mkdir()
    for i, (a, x) in enumerate(docs):
        (folder / f'{i:03d}.xml').write_text(x)
    first_id, first_xml = docs[0]
    twin = re.sub(r'IP_address="[^"]*"', 'IP_address="203.0.113.99"', first_xml)
    assert twin != first_xml
    (folder / 'zzz-twin.xml').write_text(twin)           # sorts last: a later chunk than 000.xml
    db = f'{tmp_path}/t.db'
    args = ['run', '--contract', 'credit_app', '--source', str(folder), '--target', f'sqlite:///{db}',
            '--tables', 'credit_app_tables', '--create-tables', '--chunk-docs', '10',
            '--dead-letter', str(tmp_path / 'dl.jsonl')] + ([] if resume else ['--no-resume'])
    rc, s = run_cli(capsys, *args)
    assert rc == 0 and s['read'] == 31 and (s['written'], s['dead']) == (30, 1)
    dl = [json.loads(x) for x in open(tmp_path / 'dl.jsonl')]
    assert [(d['source'], d['stage']) for d in dl] == [('zzz-twin.xml', 'dedupe')]
    assert f'duplicate app_id in this run (app_id {first_id}' in dl[0]['reason'] and dl[0]['payload'] == twin
    conn = sqlite3.connect(db)
    ip = conn.execute('SELECT ip_address FROM app_base WHERE app_id = ?', (first_id,)).fetchone()[0]
    assert ip != '203.0.113.99'
    assert conn.execute('SELECT status FROM processing_log WHERE app_id = ?', (first_id,)).fetchone()[0] == 'success'
    conn.close()


@pytest.mark.parametrize('chunks', [[], ['--chunk-docs', '1']], ids=['one-chunk', 'a-chunk-each'])
def test_two_files_with_one_app_id_converge_on_re_runs(tmp_path, capsys, chunks):
    """Two files carrying one app_id: a fresh run keeps the one whose name sorts first and dead-letters the other.
    Re-runs must leave the target as that fresh run left it. Resume skips the kept file (unchanged) before it is
    parsed, so on its own the twin was the only document of its app_id in the run and replaced the kept one; the
    run after that skipped the twin and the first file replaced it back: every re-run flipped the target. In
    chunks of one document, the skipped file's app_id was not among those 'written by an earlier chunk'."""
    app_id, xml = next((a, x) for a, x in generate_documents(5, seed=6, broken_fraction=0.0))
    twin = re.sub(r'IP_address="[^"]*"', 'IP_address="203.0.113.99"', xml)
    assert twin != xml
    folder = tmp_path / 'xml'
    folder.mkdir()
    (folder / 'a.xml').write_text(xml)
    (folder / 'b-twin.xml').write_text(twin)
    db = f'{tmp_path}/t.db'
    ips = []
    for i in range(3):
        rc, s = run_cli(capsys, 'run', '--contract', 'credit_app', '--source', str(folder), '--target',
                        f'sqlite:///{db}', '--tables', 'credit_app_tables', '--create-tables',
                        '--max-dead-letter-rate', '1', '--dead-letter', str(tmp_path / f'dl{i}.jsonl'), *chunks)
        # later runs read only the twin, which fails again: read and none written is exit 4 (README)
        assert rc == (0 if i == 0 else 4), i
        conn = sqlite3.connect(db)
        ips.append(conn.execute('SELECT ip_address FROM app_base WHERE app_id = ?', (app_id,)).fetchone()[0])
        assert conn.execute('SELECT status FROM processing_log WHERE app_id = ?', (app_id,)).fetchone()[0] \
            == 'success'
        conn.close()
        dl = [json.loads(x) for x in open(tmp_path / f'dl{i}.jsonl')]
        assert [(d['source'], d['stage']) for d in dl] == [('b-twin.xml', 'dedupe')], (i, s)
        assert s['written'] == (1 if i == 0 else 0), (i, s)
    assert ips[0] != '203.0.113.99' and ips == [ips[0]] * 3
