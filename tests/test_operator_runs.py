"""Runs an operator can steer (issue 15), through the CLI, on SQLite and on the shared PostgreSQL server:

* progress lines with rate and ETA every --progress-seconds inside a chunk, counting the documents resume skips;
  the SUMMARY line's skipped= and warnings=; the summary JSON's dead_lettered_by_stage adds up to dead_lettered
  and agrees with the ledger;
* --only-failed re-runs exactly the documents whose processing_log status is failed, and afterwards the target
  holds what a fresh migration of the corrected source holds; --app-ids FILE runs exactly the listed documents;
* for a table source, neither filter nor resume reads the XML of a document it does not process. The source is a
  view whose XML column raises an error for any row outside an allowed list (so reading one such row's XML stops
  the run: a control run shows that it does), and resume is watched statement by statement (SQLite's trace).
"""
import json
import os
import re
import sqlite3

import pytest

from contracts.samples.generate import generate_documents
from helpers import SUMMARY, migration_contents, summary_counts
from operator_helpers import KINDS, error_lines, pg_connect, pipeline, targets  # noqa: F401

pytestmark = pytest.mark.slow

HUGE = '12345678901234567890'       # a con_id no integer column holds: the document fails at the sink


contents = migration_contents


def poison(xml):
    out, n = re.subn(r'con_id="\d+"', f'con_id="{HUGE}"', xml, count=1)
    assert n == 1
    return out


def corpus(n, seed, broken):
    """n documents, some broken (validation), one poisoned at the sink; (docs, the poisoned app_id)."""
    docs = dict(generate_documents(n, seed=seed, broken_fraction=broken))
    ok = [a for a, x in sorted(docs.items()) if re.search(r'con_id="\d+"', x) and '<Request ID=' in x]
    docs[ok[2]] = poison(docs[ok[2]])
    return docs, ok[2]


def good_version(app_id, seed):
    [(a, xml)] = generate_documents(1, seed=seed, start_app_id=app_id, broken_fraction=0)
    assert a == app_id
    return xml


# ============================================================================================= guarded sources

class GuardedSource:
    """A table source `app_xml` that is a view over raw_xml. Armed, its XML column raises an error for every row
    whose app_id is not in `allowed` (SQLite: json() of a non-JSON text; PostgreSQL: a cast of a non-number) —
    only when that row's XML is read: app_ids, counts and ranges stay readable."""

    def __init__(self, kind, tmp_path, schema=None):
        self.kind, self.schema = kind, schema
        if kind == 'sqlite':
            self.path = str(tmp_path / 'source.db')
            self.url = f'sqlite:///{self.path}'
            bad = "json(app_id || 'x')"
        else:
            from operator_helpers import PG
            self.url = PG
            bad = "((app_id::text || 'x')::int)::text"
        q = self.q
        self.execute(f'CREATE TABLE {q("raw_xml")} (app_id INTEGER PRIMARY KEY, xml TEXT)',
                     f'CREATE TABLE {q("allowed")} (app_id INTEGER PRIMARY KEY)',
                     f'CREATE TABLE {q("guard")} (armed INTEGER NOT NULL)',
                     f'INSERT INTO {q("guard")} VALUES (0)',
                     f'CREATE VIEW {q("app_xml")} AS SELECT app_id, CASE WHEN (SELECT armed FROM {q("guard")}) = 0 '
                     f'OR app_id IN (SELECT app_id FROM {q("allowed")}) THEN xml ELSE {bad} END AS xml '
                     f'FROM {q("raw_xml")}')

    def q(self, table):
        return table if self.kind == 'sqlite' else f'{self.schema}.{table}'

    def connect(self):
        return sqlite3.connect(self.path) if self.kind == 'sqlite' else pg_connect()

    def execute(self, *statements, params=()):
        conn = self.connect()
        try:
            for st in statements:
                if params:
                    conn.cursor().executemany(st, params)
                else:
                    conn.execute(st)
            conn.commit()
        finally:
            conn.close()

    def put(self, docs):
        self.execute(f'DELETE FROM {self.q("raw_xml")}')
        self.execute(f'INSERT INTO {self.q("raw_xml")} (app_id, xml) VALUES (?, ?)', params=sorted(docs.items()))

    def arm(self, allowed):
        self.execute(f'DELETE FROM {self.q("allowed")}', f'UPDATE {self.q("guard")} SET armed = 1')
        if allowed:
            self.execute(f'INSERT INTO {self.q("allowed")} (app_id) VALUES (?)', params=[(a,) for a in allowed])

    def disarm(self):
        self.execute(f'UPDATE {self.q("guard")} SET armed = 0')


def guarded(kind, tmp_path, target):
    """A guarded source beside `target` (PostgreSQL: in the target's schema, where a table source's unqualified
    source_table is looked up)."""
    if kind == 'pg':
        conn = pg_connect()
        conn.execute(f'CREATE SCHEMA {target.schema}')
        conn.close()
    return GuardedSource(kind, tmp_path, target.schema)


def run(target, source, *extra, create=False, env=None):
    args = ['run', '--contract', target.contract, '--source', source.url, '--target', target.url,
            '--progress-seconds', '0', '--max-dead-letter-rate', '1', *extra]
    if create:
        args += ['--tables', 'credit_app_tables', '--create-tables']
    return pipeline(*args, env=env)


def ledger(target):
    return dict(target.rows(f'SELECT app_id, status FROM {target.t("processing_log")}'))


# ============================================================================================= 6. --only-failed

@pytest.mark.parametrize('kind', KINDS)
def test_only_failed_reruns_exactly_the_failed_documents_and_reads_no_other_xml(tmp_path, targets, kind):
    docs, poisoned = corpus(30, seed=21, broken=0.2)
    main = targets(kind, 'of_main')
    source = guarded(kind, tmp_path, main)
    source.put(docs)

    # control: armed with nothing allowed, a run that reads any XML stops (the guard works)
    scratch = targets('sqlite', 'of_scratch')
    source.arm([])
    p = pipeline('run', '--contract', main.contract, '--source', source.url, '--target', scratch.url,
                 '--tables', 'credit_app_tables', '--create-tables', '--progress-seconds', '0')
    assert p.returncode not in (0, 3, 4) and 'SUMMARY read=30' not in p.stdout, (p.returncode, p.stderr[-1500:])
    [line] = error_lines(p.stderr)
    assert 'ReadPartition' in line and ('malformed JSON' in line or '22P02' in line), line   # the guard's error
    source.disarm()

    p = run(main, source, create=True)
    assert p.returncode == 0, p.stderr[-2000:]
    read, written, dead, _ = summary_counts(p.stdout)
    assert read == 30 and dead >= 3
    failed = sorted(a for a, s in ledger(main).items() if s == 'failed')
    assert len(failed) == dead and poisoned in failed
    before = contents(main)

    # fix one document at the source (not the poisoned one: it fails again)
    fixed = next(a for a in failed if a != poisoned)
    docs[fixed] = good_version(fixed, seed=21)
    source.put(docs)

    # what a fresh migration of the corrected source holds
    reference = targets(kind, 'of_ref')
    if kind == 'pg':
        c = json.load(open(reference.contract))
        c['source_table'] = f'{main.schema}.app_xml'          # the same source, read from the main schema
        json.dump(c, open(reference.contract, 'w'))
    assert run(reference, source, create=True).returncode == 0

    source.arm(failed)                                       # from here, only the failed documents' XML reads
    p = run(main, source, '--only-failed')
    assert p.returncode == 0, p.stderr[-2000:]
    assert summary_counts(p.stdout)[:3] == (len(failed), 1, len(failed) - 1), p.stdout
    assert f'--only-failed: {len(failed)} documents are failed in processing_log' in p.stderr
    after = contents(main)
    assert after == contents(reference)
    for table, rows in before.items():                       # nothing that was written before was touched
        if table != 'processing_log':
            assert set(rows) <= set(after[table]), table
    assert ledger(main)[fixed] == 'success' and ledger(main)[poisoned] == 'failed'
    dl = dict(main.rows(f'SELECT app_id, attempts FROM {main.t("dead_letter")}'))
    assert fixed not in dl and dl[poisoned] == 2
    assert set(dl) == set(failed) - {fixed}

    # once more: the fixed document is done now, the others fail again (exit 4: nothing written)
    source.arm(set(failed) - {fixed})
    p = run(main, source, '--only-failed')
    assert p.returncode == 4 and summary_counts(p.stdout)[:3] == (len(failed) - 1, 0, len(failed) - 1)
    assert contents(main) == after


def _folder(path, docs):
    path.mkdir(exist_ok=True)
    for f in path.glob('*.xml'):
        f.unlink()
    for a, xml in docs.items():
        (path / f'{a}.xml').write_text(xml, encoding='utf-8')
    return str(path)


@pytest.mark.parametrize('kind', KINDS)
def test_only_failed_of_a_folder_reads_exactly_the_files_dead_letter_holds(tmp_path, targets, kind):
    docs, poisoned = corpus(24, seed=33, broken=0.2)
    main = targets(kind, 'off_main')
    folder = tmp_path / 'docs'
    # a second file of the poisoned document's app_id: it loses to it (dedupe keeps the first name), and read
    # alone it would be written in its place; --only-failed must not read it
    twin = good_version(poisoned, seed=77)

    def put(path, contents):
        _folder(path, contents)
        (path / f'{poisoned}b.xml').write_text(twin, encoding='utf-8')
        return str(path)
    p = pipeline('run', '--contract', main.contract, '--source', put(folder, docs), '--target', main.url,
                 '--tables', 'credit_app_tables', '--create-tables', '--progress-seconds', '0',
                 '--max-dead-letter-rate', '1')
    assert p.returncode == 0, p.stderr[-2000:]
    read, written, dead, _ = summary_counts(p.stdout)
    assert read == 25 and dead >= 4 and written == read - dead
    failed_files = sorted(main.rows(f'SELECT source FROM {main.t("dead_letter")}'))
    assert len(failed_files) == dead and (f'{poisoned}.xml',) in failed_files
    assert main.rows(f"SELECT stage FROM {main.t('dead_letter')} WHERE source = '{poisoned}b.xml'") == [('dedupe',)]

    # fix one failed document (not the poisoned one); every document that succeeded becomes unreadable garbage:
    # a run that read any of them would dead-letter it and delete its rows
    fixed = next(int(f[0][:-4]) for f in failed_files if f[0] not in (f'{poisoned}.xml', f'{poisoned}b.xml'))
    corrected = {**docs, fixed: good_version(fixed, seed=33)}
    reference = targets(kind, 'off_ref')
    p = pipeline('run', '--contract', reference.contract, '--source', put(tmp_path / 'ref', corrected),
                 '--target', reference.url, '--tables', 'credit_app_tables', '--create-tables',
                 '--progress-seconds', '0', '--max-dead-letter-rate', '1')
    assert p.returncode == 0, p.stderr[-2000:]
    done = {f'{a}.xml' for a in docs} - {f[0] for f in failed_files}
    put(folder, {a: (xml if f'{a}.xml' not in done else '<garbage') for a, xml in corrected.items()})

    p = pipeline('run', '--contract', main.contract, '--source', str(folder), '--target', main.url,
                 '--progress-seconds', '0', '--max-dead-letter-rate', '1', '--only-failed', '--processes', '2')
    assert p.returncode == 0, p.stderr[-2000:]
    failed = dead - 1                                        # the dedupe loser did not fail
    assert summary_counts(p.stdout)[:3] == (failed, 1, failed - 1), p.stdout
    per_shard = re.findall(r'(\d+) of the (\d+) files of the source are listed to be read', p.stderr)
    # the launcher's count of the whole source, then each shard's of its share
    assert per_shard[0] == (str(failed), '25') and len(per_shard) == 3, per_shard
    assert [sum(int(x) for x in col) for col in zip(*per_shard[1:])] == [failed, 25], per_shard
    assert contents(main) == contents(reference)
    left = sorted(main.rows(f'SELECT source FROM {main.t("dead_letter")}'))
    assert left == [f for f in failed_files if f[0] != f'{fixed}.xml']

    # nothing failed any more but the documents that stay broken; with none failed, a run reads nothing
    for f in left:
        (folder / f[0]).unlink()
    p = pipeline('run', '--contract', main.contract, '--source', str(folder), '--target', main.url,
                 '--progress-seconds', '0', '--only-failed')
    assert p.returncode == 0, p.stderr[-2000:]
    assert summary_counts(p.stdout)[:3] == (0, 0, 0), p.stdout
    assert f'0 of the {25 - len(left)} files of the source are listed to be read' in p.stderr, p.stderr[-2000:]


@pytest.mark.parametrize('kind', KINDS)
def test_app_ids_runs_exactly_the_listed_documents_and_reads_no_other_xml(tmp_path, targets, kind):
    docs = dict(generate_documents(25, seed=8, broken_fraction=0))
    t = targets(kind, 'ids')
    source = guarded(kind, tmp_path, t)
    source.put(docs)
    listed = sorted(docs)[3:20:4]
    ids = tmp_path / 'ids.txt'
    ids.write_text('# re-run these\n' + '\n'.join(map(str, listed)) + '\n999\n')
    source.arm(listed)
    p = run(t, source, '--app-ids', str(ids), create=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert summary_counts(p.stdout)[:3] == (len(listed), len(listed), 0)
    assert f'1 of the {len(listed) + 1} app_ids asked for are not in the source' in p.stderr
    assert sorted(ledger(t)) == listed
    assert sorted(r[0] for r in t.rows(f'SELECT app_id FROM {t.t("app_base")}')) == listed
    # again: resume skips the listed documents already done (their hashes read, no other row's XML)
    p = run(t, source, '--app-ids', str(ids))
    assert p.returncode == 0, p.stderr[-2000:]
    m = SUMMARY.search(p.stdout)
    assert (int(m.group(1)), int(m.group(6))) == (0, len(listed)), p.stdout


# ============================================================================================= resume

def test_resume_reads_the_xml_only_of_the_documents_it_migrates(tmp_path, targets, monkeypatch, capsys):
    """Every statement the run sends to the source, seen through SQLite's trace: the pages are read as app_ids,
    the content hashes of the done ones are computed by the source, and the XML is selected only for the changed
    and the failed documents."""
    docs, poisoned = corpus(60, seed=4, broken=0.1)
    src = tmp_path / 'src.db'
    conn = sqlite3.connect(src)
    conn.execute('CREATE TABLE app_xml (app_id INTEGER PRIMARY KEY, xml TEXT)')
    conn.executemany('INSERT INTO app_xml VALUES (?, ?)', sorted(docs.items()))
    conn.commit()
    t = targets('sqlite', 'resume')
    p = pipeline('run', '--contract', t.contract, '--source', f'sqlite:///{src}', '--target', t.url, '--tables',
                 'credit_app_tables', '--create-tables', '--progress-seconds', '0', '--max-dead-letter-rate', '1')
    assert p.returncode == 0, p.stderr[-2000:]
    failed = {a for a, s in ledger(t).items() if s == 'failed'}
    done = sorted(set(docs) - failed)
    changed = {done[1], done[7]}
    for a in changed:
        conn.execute('UPDATE app_xml SET xml = ? WHERE app_id = ?', (good_version(a, seed=99), a))
    conn.commit()
    conn.close()

    statements = []
    connect = sqlite3.connect

    def traced(path, *a, **kw):
        c = connect(path, *a, **kw)
        if os.path.abspath(str(path)) == os.path.abspath(src):
            c.set_trace_callback(statements.append)
        return c
    monkeypatch.setattr(sqlite3, 'connect', traced)
    from pipeline.cli import main
    rc = main(['run', '--contract', t.contract, '--source', f'sqlite:///{src}', '--target', t.url,
               '--progress-seconds', '0', '--max-dead-letter-rate', '1'])
    out = capsys.readouterr().out
    assert rc == 0
    m = SUMMARY.search(out)
    read, skipped = int(m.group(1)), int(m.group(6))
    assert (read, skipped) == (len(changed | failed), len(docs) - len(changed | failed)), out

    # A statement reads XML when its select list holds the document column other than inside the hash function
    # (SQLite selects it as its bytes: CAST("xml" AS BLOB)). The sink's payload re-read of the poisoned document
    # (by its app_id) is the only XML read besides the fetches of listed app_ids.
    def reads_xml(st):
        m = re.match(r'SELECT (.*?) FROM "app_xml"', st, re.S)
        return bool(m) and '"xml"' in re.sub(r'xmlsql_sha256\((?:[^()]|\([^()]*\))*\)', '', m.group(1))
    payload_reads = [s for s in statements if reads_xml(s) and re.search(r' WHERE "app_id" = \d+$', s)]
    xml_reads = [s for s in statements if reads_xml(s) and s not in payload_reads]
    assert xml_reads, statements[:20]
    fetched = set()
    for s in xml_reads:
        m = re.search(r'"app_id" IN \(([\d, ]+)\)', s)
        assert m, f'the XML was read by a statement that is not a fetch of listed app_ids: {s[:300]}'
        fetched |= {int(x) for x in m.group(1).split(',')}
    assert fetched == changed | failed
    assert {int(s.rsplit(' ', 1)[1]) for s in payload_reads} <= {poisoned}


# ============================================================================================= 5. progress, summary

def test_progress_inside_one_chunk_counts_skipped_and_the_summary_agrees_with_the_ledger(tmp_path, targets):
    docs, poisoned = corpus(300, seed=13, broken=0.05)
    src = tmp_path / 'src.db'
    conn = sqlite3.connect(src)
    conn.execute('CREATE TABLE app_xml (app_id INTEGER PRIMARY KEY, xml TEXT)')
    conn.executemany('INSERT INTO app_xml VALUES (?, ?)', sorted(docs.items()))
    conn.commit()
    conn.close()
    t = targets('sqlite', 'progress')
    half = sorted(docs)[149]
    common = ['--contract', t.contract, '--source', f'sqlite:///{src}', '--target', t.url,
              '--max-dead-letter-rate', '1']
    p = pipeline('run', *common, '--tables', 'credit_app_tables', '--create-tables', '--progress-seconds', '0',
                 '--app-id-end', str(half))
    assert p.returncode == 0, p.stderr[-2000:]
    assert not re.search(r'progress:', p.stderr)                   # 0 turns them off

    js = tmp_path / 'summary.json'
    p = pipeline('run', *common, '--progress-seconds', '0.2', '--summary-json', str(js))
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.load(open(js))
    assert summary['chunks'] == 1                                   # so every progress line is inside the chunk
    m = SUMMARY.search(p.stdout)
    assert m, p.stdout
    read, skipped, warnings = int(m.group(1)), int(m.group(6)), int(m.group(8))
    assert skipped > 100 and read == 300 - skipped
    assert (summary['skipped'], summary['quality_warnings']) == (skipped, warnings)

    lines = re.findall(r'progress: (\d+) of (\d+) documents \(\d+%\): (\d+) read, (\d+) skipped as done, '
                       r'(\d+) finished; (\d+) docs/min, (ETA \d+ s|ETA unknown|all read, writing)', p.stderr)
    assert len(lines) >= 2, p.stderr[-3000:]
    assert len(lines) == len(re.findall(r'progress:', p.stderr))   # every progress line has all of it
    assert all(int(total) == 300 for _, total, *_ in lines)
    assert any(int(sk) == skipped for _, _, _, sk, *_ in lines)     # the skipped ones counted while it runs
    assert all(int(fin) <= int(rd) for _, _, rd, _, fin, *_ in lines), lines   # finished: of those read
    assert any(eta.startswith('ETA ') and eta != 'ETA unknown' and int(rate) > 0
               for *_, rate, eta in lines), lines
    assert not re.search(r'progress: chunk', p.stderr)

    # dead_lettered_by_stage adds up, and is what the ledger says of this session
    by_stage = summary['dead_lettered_by_stage']
    assert sum(by_stage.values()) == summary['dead_lettered'] == read - summary['written']
    assert set(by_stage) >= {'validation', 'sink'}, by_stage
    ledger_by_stage = dict(t.rows('SELECT stage, COUNT(*) FROM processing_log WHERE status = ? AND session_id = ? '
                                  'GROUP BY stage', ('failed', summary['session_id'])))
    assert ledger_by_stage == by_stage
