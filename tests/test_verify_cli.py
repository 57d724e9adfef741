"""`python -m pipeline verify` end to end, as an operator runs it, against real SQLite and PostgreSQL targets:

* after a clean run it exits 0 and reports agreement; dead-lettered documents (broken at source) are not missing;
* tampered with in SQL, each kind of difference is detected, counted and named (table, app_id, primary key,
  column) in the printed table and in --json, and it exits 4: a missing row, an extra row (also one reached
  through a foreign key, and one for the app_id of a dead-lettered document), differing int / string / date /
  datetime / decimal cells, documents with rows but no `success` in processing_log;
* a value that differs only in representation (a date column's text without the time, an ISO datetime with a T
  and milliseconds; Decimal('1.50') and 1.5, in the unit test of the normal forms) is not a difference;
* --sample N compares N documents only;
* the existing system's CC corpus: after `run`, verify exits 0 (skipped when ../shared/seed-corpus is absent).

The expected counts come from the tampering itself (what the test changed), never from hard-coded row counts."""
import datetime as dt
import decimal
import json
import os
import re

import pytest

from contracts.samples.generate import generate_documents, write_xml_folder
from helpers import targets_fixture
from pipeline.verify import compare_rows, literal_default, normalizer
from test_integrity import NEED_PG, ROOT, Target, pipeline, sqlite_source
from transforms.sql.meta import ColumnMeta, TableMeta

CC = os.path.join(os.path.dirname(ROOT), 'shared', 'seed-corpus', 'cc')
KINDS = ['sqlite', pytest.param('pg', marks=[NEED_PG, pytest.mark.postgres])]
needs_cc = pytest.mark.skipif(not os.path.isdir(CC), reason=f'the existing system\'s CC corpus is not at {CC} '
                                                            '(<repo>/../shared/seed-corpus/cc): skipped')


targets = targets_fixture(Target)


def execute(target, sql, params=()):
    conn = target.connect()
    try:
        if target.kind == 'sqlite':
            conn.execute('PRAGMA foreign_keys = ON')
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def migrate(target, source, contract=None, tables='credit_app_tables', extra=()):
    p = pipeline('run', '--contract', contract or target.contract, '--source', source, '--target', target.url,
                 '--tables', tables, '--create-tables', '--max-dead-letter-rate', '1', *extra)
    assert p.returncode == 0, (p.returncode, p.stdout[-1000:], p.stderr[-3000:])
    return p


def verify(target, source, tmp_path, *extra, contract=None, expect=0, name='verify'):
    out = tmp_path / f'{name}.json'
    p = pipeline('verify', '--contract', contract or target.contract, '--source', source, '--target', target.url,
                 '--json', str(out), *extra)
    assert p.returncode == expect, (p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    report = json.load(open(out))
    assert report['agree'] == (expect == 0)
    assert ('VERIFY agree' in p.stdout) == (expect == 0)
    if expect:
        assert p.stderr.strip().splitlines()[-1].startswith('error: the target differs from the source: ')
    return report, p


def problems(report):
    """{(kind, table, app_id, key as a tuple of (column, value), columns)} of every listed problem."""
    return {(e['kind'], table, e['app_id'], tuple(sorted(e['key'].items())), tuple(e['columns']))
            for table, t in report['tables'].items() for e in t['examples']}


def printed(stdout, kind, table, app_id, key, columns=()):
    """Whether one problem is printed on a line of its own (pipeline/verify.py: _print), its key in any order."""
    what = f'{table}.{",".join(columns)}' if columns else table
    prefix = f'  {kind:8} {what}  app_id {app_id}  key '
    want = {f'{k}={v}' for k, v in key.items()}
    return any(set(line[len(prefix):].split(', ')) == want for line in stdout.splitlines() if line.startswith(prefix))


# ------------------------------------------------------------------------------------------------ normal forms

def test_values_that_differ_only_in_representation_are_equal():
    eq = [('decimal(12,2)', decimal.Decimal('1.50'), 1.5), ('decimal(12,2)', '1.5', decimal.Decimal('1.500')),
          ('numeric', decimal.Decimal('100'), 100.0), ('decimal(5,2)', 24.99, '24.990'),
          ('datetime', dt.datetime(2018, 11, 28, 2, 46, 32), '2018-11-28 02:46:32'),
          ('datetime', dt.datetime(2018, 11, 28, 2, 46, 32), '2018-11-28T02:46:32.000'),
          ('timestamp(3) without time zone', dt.datetime(2015, 11, 5, 9, 2, 34, 767000), '2015-11-05 09:02:34.767'),
          ('date', dt.datetime(1956, 12, 20), '1956-12-20'), ('date', dt.date(1956, 12, 20), '1956-12-20 00:00:00'),
          ('smallint', 831, '831'), ('int', 798, 798.0), ('bit', 1, True), ('boolean', 0, 'false'),
          ('char(4)', 'AB', 'AB  '), ('varchar(10)', '', None), ('float', 0.1 + 0.2, 0.3)]
    for typ, a, b in eq:
        n = normalizer(typ)
        assert n(a) == n(b), (typ, a, b)
    ne = [('decimal(12,2)', decimal.Decimal('1.50'), 1.51), ('datetime', dt.datetime(2018, 1, 1, 0, 0, 1),
                                                             '2018-01-01 00:00:02'),
          ('date', dt.datetime(1956, 12, 20), '1956-12-21'), ('int', 1, 2), ('varchar(10)', 'Ana', 'ana'),
          ('varchar(10)', 'AB', 'AB  '), ('bit', 1, False)]
    for typ, a, b in ne:
        n = normalizer(typ)
        assert n(a) != n(b), (typ, a, b)


def test_a_column_the_mapping_leaves_out_is_compared_with_a_constant_default_only():
    assert [literal_default(d) for d in ('0', '((0))', "'N'::character varying", "N'x'", 'false', '(1.5)')] == \
        ['0', '0', 'N', 'x', 'false', '1.5']
    meta = TableMeta('t', None, [ColumnMeta('id', 'int'), ColumnMeta('flag', 'bit', default='((0))'),
                                 ColumnMeta('at', 'datetime', default='getutcdate()'), ColumnMeta('note', 'varchar(9)')],
                     ['id'])
    assert compare_rows({'id': 1}, {'id': 1, 'flag': 0, 'at': '2020-01-01', 'note': None}, meta) == []
    assert compare_rows({'id': 1}, {'id': 1, 'flag': 1, 'at': '2020-01-01', 'note': 'x'}, meta) == ['flag', 'note']


# ------------------------------------------------------------------------------------------------ tampering

def _one(target, sql, params=()):
    rows = target.rows(sql, params)
    assert rows, sql
    return rows[0]


def tamper(target, written, dead_with_id):
    """Change the target in SQL, each change on a document of its own; returns what verify must report:
    ({(kind, table, app_id, key, columns)}, per-table expected counts, app_ids with rows but no success)."""
    t, free = target.t, list(written)
    pg = target.kind == 'pg'
    expect, counts = set(), {}

    def count(table, kind, col=None):
        c = counts.setdefault(table, {'missing': 0, 'extra': 0, 'rows_differ': 0, 'differs': {}})
        if col:
            c['rows_differ'] += 1
            c['differs'][col] = c['differs'].get(col, 0) + 1
        else:
            c[kind] += 1

    def take(sql):
        """The first row of `sql` (app_id first) whose document is not used yet."""
        for r in target.rows(sql):
            if r[0] in free:
                free.remove(r[0])
                return r
        raise AssertionError(f'no unused document for {sql}')

    # a missing row: a child table reached through its FK (app_contact_address -> app_contact_base)
    app, con, typ = take(f'SELECT b.app_id, a.con_id, a.address_type_enum FROM {t("app_contact_address")} a '
                         f'JOIN {t("app_contact_base")} b ON b.con_id = a.con_id ORDER BY a.con_id, a.address_type_enum')
    execute(target, f'DELETE FROM {t("app_contact_address")} WHERE con_id = ? AND address_type_enum = ?', (con, typ))
    expect.add(('missing', 'app_contact_address', app, (('address_type_enum', typ), ('con_id', con)), ()))
    count('app_contact_address', 'missing')
    # extra rows: one the source does not map to, for an app_id of the source; one through the FK
    app, = take(f'SELECT app_id FROM {t("scores")} ORDER BY app_id')
    execute(target, f'INSERT INTO {t("scores")} (app_id, score, score_identifier) VALUES (?, 1, ?)',
            (app, 'verify_extra'))
    expect.add(('extra', 'scores', app, (('app_id', app), ('score_identifier', 'verify_extra')), ()))
    count('scores', 'extra')
    app, con = take(f'SELECT app_id, con_id FROM {t("app_contact_base")} ORDER BY con_id')
    execute(target, f'INSERT INTO {t("app_contact_address")} (con_id, address_type_enum, city) VALUES (?, 399, ?)',
            (con, 'Nowhere'))
    expect.add(('extra', 'app_contact_address', app, (('address_type_enum', 399), ('con_id', con)), ()))
    count('app_contact_address', 'extra')
    # differing cells: int, string, date, datetime, decimal
    app, ident = take(f'SELECT app_id, score_identifier FROM {t("scores")} WHERE score IS NOT NULL ORDER BY app_id')
    execute(target, f'UPDATE {t("scores")} SET score = score + 1 WHERE app_id = ? AND score_identifier = ?',
            (app, ident))
    expect.add(('differs', 'scores', app, (('app_id', app), ('score_identifier', ident)), ('score',)))
    count('scores', 'differs', 'score')
    app, con = take(f'SELECT app_id, con_id FROM {t("app_contact_base")} WHERE first_name <> \'Verifyx\' '
                    'ORDER BY con_id')
    execute(target, f'UPDATE {t("app_contact_base")} SET first_name = ? WHERE con_id = ?', ('Verifyx', con))
    expect.add(('differs', 'app_contact_base', app, (('con_id', con),), ('first_name',)))
    count('app_contact_base', 'differs', 'first_name')
    app, con = take(f'SELECT app_id, con_id FROM {t("app_contact_base")} ORDER BY con_id')
    day = "birth_date + interval '1 day'" if pg else "date(birth_date, '+1 day')"
    execute(target, f'UPDATE {t("app_contact_base")} SET birth_date = {day} WHERE con_id = ?', (con,))
    expect.add(('differs', 'app_contact_base', app, (('con_id', con),), ('birth_date',)))
    count('app_contact_base', 'differs', 'birth_date')
    app, = take(f'SELECT app_id FROM {t("app_base")} WHERE decision_date IS NOT NULL ORDER BY app_id')
    sec = "decision_date + interval '1 second'" if pg else "datetime(decision_date, '+1 second')"
    execute(target, f'UPDATE {t("app_base")} SET decision_date = {sec} WHERE app_id = ?', (app,))
    expect.add(('differs', 'app_base', app, (('app_id', app),), ('decision_date',)))
    count('app_base', 'differs', 'decision_date')
    app, = take(f'SELECT app_id FROM {t("app_pricing_cc")} WHERE monthly_income IS NOT NULL ORDER BY app_id')
    execute(target, f'UPDATE {t("app_pricing_cc")} SET monthly_income = monthly_income + 0.01 WHERE app_id = ?',
            (app,))
    expect.add(('differs', 'app_pricing_cc', app, (('app_id', app),), ('monthly_income',)))
    count('app_pricing_cc', 'differs', 'monthly_income')
    # documents with rows but no success in the ledger: a crash before the ledger row, a status not success
    unfinished = []
    app, = take(f'SELECT app_id FROM {t("app_base")} ORDER BY app_id')
    execute(target, f'DELETE FROM {t("processing_log")} WHERE app_id = ?', (app,))
    unfinished.append(app)
    app, = take(f'SELECT app_id FROM {t("app_base")} ORDER BY app_id')
    execute(target, f"UPDATE {t('processing_log')} SET status = 'failed', stage = 'sink' WHERE app_id = ?", (app,))
    unfinished.append(app)
    # a row for a document the pipeline dead-letters: extra, and it has rows without success
    dead = dead_with_id[0]
    execute(target, f'INSERT INTO {t("app_base")} (app_id, product_line_enum) VALUES (?, 600)', (dead,))
    expect.add(('extra', 'app_base', dead, (('app_id', dead),), ()))
    count('app_base', 'extra')
    unfinished.append(dead)
    # representation only (SQLite keeps what is bound): must not be reported
    if not pg:
        app, con = take(f'SELECT app_id, con_id FROM {t("app_contact_base")} ORDER BY con_id')
        execute(target, f'UPDATE {t("app_contact_base")} SET birth_date = date(birth_date) WHERE con_id = ?', (con,))
        app, = take(f'SELECT app_id FROM {t("app_base")} WHERE decision_date IS NOT NULL ORDER BY app_id')
        execute(target, f"UPDATE {t('app_base')} SET decision_date = strftime('%Y-%m-%dT%H:%M:%f', decision_date) "
                        'WHERE app_id = ?', (app,))
        assert 'T' in _one(target, f'SELECT decision_date FROM {t("app_base")} WHERE app_id = ?', (app,))[0]
    return expect, counts, sorted(unfinished)


@pytest.mark.slow
@pytest.mark.parametrize('kind', KINDS)
def test_verify_agrees_after_a_run_and_names_every_kind_of_tampering(tmp_path, targets, kind):
    docs = dict(generate_documents(40, seed=11, broken_fraction=0.15))
    source = sqlite_source(str(tmp_path / 'src.db'), docs)
    target = targets(kind, 'verify')
    migrate(target, source)
    ledger = dict(target.rows(f'SELECT app_id, status FROM {target.t("processing_log")}'))
    written = sorted(a for a, s in ledger.items() if s == 'success')
    dead_with_id = sorted(r[0] for r in target.rows(f'SELECT app_id FROM {target.t("dead_letter")} '
                                                    'WHERE app_id IS NOT NULL'))
    assert dead_with_id and len(written) + len(dead_with_id) == 40

    clean, p = verify(target, source, tmp_path, name='clean')
    assert clean['documents'] == 40 and clean['problems'] == 0
    # the dead-lettered documents were read and not mapped, as in the run; they are not missing rows
    assert clean['documents_not_mapped'] == len(dead_with_id)
    assert clean['tables']['app_base']['match'] == len(written)
    for table, t in clean['tables'].items():
        n = target.rows(f'SELECT COUNT(*) FROM {target.t(table)}')[0][0]
        assert (t['match'], t['missing'], t['extra'], t['rows_differ'], t['differs']) == (n, 0, 0, 0, {}), table

    expect, counts, unfinished = tamper(target, written, dead_with_id)
    report, p = verify(target, source, tmp_path, expect=4, name='tampered')
    assert problems(report) == expect
    for table, t in report['tables'].items():
        want = counts.get(table, {'missing': 0, 'extra': 0, 'rows_differ': 0, 'differs': {}})
        assert {k: t[k] for k in want} == want, table
        n = target.rows(f'SELECT COUNT(*) FROM {target.t(table)}')[0][0]
        assert t['match'] + t['rows_differ'] + t['extra'] == n, table        # every row held is accounted for
    assert report['documents_with_rows_but_no_success'] == unfinished
    assert report['documents_with_rows_but_no_success_count'] == len(unfinished)
    cells = sum(len(e[4]) for e in expect)
    assert report['problems'] == len(expect) - sum(1 for e in expect if e[4]) + cells + len(unfinished)
    # the printed table: counts per table and column, each problem on a line, the unfinished documents
    for kind_, table, app_id, key, cols in expect:
        assert printed(p.stdout, kind_, table, app_id, dict(key), cols), (kind_, table, app_id, p.stdout)
    for table, c in counts.items():
        row = re.search(rf'^{table} +(\d+) +(\d+) +(\d+) +(\d+) +(\d+)$', p.stdout, re.M)
        assert row and tuple(map(int, row.groups()[1:])) == (c['missing'], c['extra'], c['rows_differ'],
                                                             sum(c['differs'].values())), (table, p.stdout)
        for col, n in c['differs'].items():
            assert f'  {table}.{col}: {n} cells differ' in p.stdout
    assert f"{len(unfinished)} documents have rows in the target but no success in processing_log" in p.stdout
    assert 'app_id ' + ', '.join(map(str, unfinished)) in p.stdout
    assert f"VERIFY differ problems={report['problems']}" in p.stdout
    # values never leave the comparison: the tampered string is not printed
    assert 'Verifyx' not in p.stdout + p.stderr and 'Nowhere' not in p.stdout + p.stderr


@pytest.mark.slow
@pytest.mark.parametrize('source_kind', ['table', 'files'])
def test_sample_compares_that_many_documents_only(tmp_path, targets, source_kind):
    if source_kind == 'table':
        source = sqlite_source(str(tmp_path / 'src.db'), dict(generate_documents(30, seed=4, broken_fraction=0)))
    else:
        source = str(tmp_path / 'xml')
        write_xml_folder(source, 30, seed=4, broken_fraction=0)
    target = targets('sqlite', 'sample')
    migrate(target, source)
    execute(target, f'UPDATE {target.t("app_base")} SET decision_enum = 999')       # every document differs now
    full, _ = verify(target, source, tmp_path, expect=4, name='full')
    assert full['documents'] == 30 and full['tables']['app_base']['rows_differ'] == 30
    sample, p = verify(target, source, tmp_path, '--sample', '5', expect=4, name='sample')
    assert sample['documents'] == 5 and sample['sample'] == 5
    t = sample['tables']['app_base']
    assert (t['rows_differ'], t['differs'], t['match'], t['missing']) == (5, {'decision_enum': 5}, 0, 0)
    assert sum(x['match'] + x['rows_differ'] for x in sample['tables'].values()) < \
        sum(x['match'] + x['rows_differ'] for x in full['tables'].values())
    assert p.stdout.startswith('verify: 5 documents compared')


def test_verify_needs_its_options_and_a_target_with_the_tables(tmp_path):
    p = pipeline('verify', '--contract', 'credit_app', '--source', str(tmp_path))
    assert p.returncode == 2 and p.stderr.strip().startswith('error:') and len(p.stderr.strip().splitlines()) == 1
    db = tmp_path / 'empty.db'
    import sqlite3
    sqlite3.connect(db).close()
    p = pipeline('verify', '--contract', 'credit_app', '--source', str(tmp_path), '--target', f'sqlite:///{db}')
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith('error:'), p.stderr[-2000:]
    p = pipeline('verify', '--help')
    assert p.returncode == 0 and '--sample' in p.stdout and '--json' in p.stdout


# ------------------------------------------------------------------------------------------------ CC corpus

@needs_cc
@pytest.mark.slow
@pytest.mark.parametrize('kind', KINDS)
def test_cc_corpus_after_run_verify_agrees(tmp_path, targets, kind):
    target = targets(kind, 'cc')
    contract = os.path.join(CC, 'contract.json')
    if kind == 'pg':
        c = json.load(open(contract))
        c['target_schema'] = target.schema
        contract = str(tmp_path / 'cc-contract.json')
        with open(contract, 'w') as f:
            json.dump(c, f)
    source = os.path.join(CC, 'xml')
    migrate(target, source, contract=contract, tables=os.path.join(CC, 'tables.json'))
    report, p = verify(target, source, tmp_path, contract=contract, name='cc')
    assert report['documents'] == 165 and report['documents_not_mapped'] == 2      # the corpus's two rejects
    assert sum(t['match'] for t in report['tables'].values()) == \
        sum(target.rows(f'SELECT COUNT(*) FROM {target.t(table)}')[0][0] for table in report['tables'])
    # not vacuous on this contract: one changed cell of a table reached through its FK is found
    con, typ = _one(target, f'SELECT con_id, address_type_enum FROM {target.t("app_contact_address")} '
                            'WHERE city IS NOT NULL ORDER BY con_id')
    execute(target, f"UPDATE {target.t('app_contact_address')} SET city = 'Elsewhere' WHERE con_id = ? AND "
                    'address_type_enum = ?', (con, typ))
    report, p = verify(target, source, tmp_path, contract=contract, expect=4, name='cc-tampered')
    t = report['tables']['app_contact_address']
    assert (t['rows_differ'], t['differs'], report['problems']) == (1, {'city': 1}, 1)
    assert t['examples'][0]['key'] == {'con_id': con, 'address_type_enum': typ}


@pytest.mark.slow
def test_a_document_dead_lettered_at_the_sink_is_reported_missing(tmp_path, targets):
    """Unlike a document broken at the source, one the sink refused (a con_id no integer column holds) does define
    rows: the target lacks them, so verify says so, for that document only."""
    docs = dict(generate_documents(10, seed=3, broken_fraction=0))
    poisoned = sorted(docs)[2]
    docs[poisoned], n = re.subn(r'con_id="\d+"', 'con_id="12345678901234567890"', docs[poisoned], count=1)
    assert n == 1
    source = sqlite_source(str(tmp_path / 'src.db'), docs)
    target = targets('sqlite', 'poison')
    migrate(target, source)
    assert target.rows(f'SELECT app_id, stage FROM {target.t("dead_letter")}') == [(poisoned, 'sink')]
    report, _ = verify(target, source, tmp_path, expect=4)
    listed = [e for t in report['tables'].values() for e in t['examples']]
    assert listed and {(e['kind'], e['app_id']) for e in listed} == {('missing', poisoned)}
    assert report['documents_not_mapped'] == 0 and report['documents_with_rows_but_no_success'] == []
    assert report['problems'] == len(listed)
