"""A poison document at every sink step, among good documents that must be written (SQLite and PostgreSQL).

A failure caused by one document's data fails that document only - in the key-ownership check, the upsert and
its bisection, the replacement of a re-migrated document's rows, the compensation of a failed document, the
ledger and the dead-letter writes. Where the value checks before SQL (transforms/sql/values.py) would catch the
poison, `check_values=False` makes the database itself reject it, so that the isolation by bisection is what is
tested; the checks themselves are tested with it on."""
import datetime

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter

from transforms.sql.meta import fk_tiers
from test_sink_helpers import TABLES, db  # noqa: F401 (fixture)
from transforms.records import DeadLetter, MappedDoc, Outcome, RowGroup
from transforms.sink import RetryPolicy, WriteDeadLetters, WriteLedger, WriteToSql, Writer, doc_key
from helpers import beam_test_pipeline

FAST = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2)
HUGE = 12345678901234567890         # more than 64 bits: sqlite3 and pyodbc cannot even bind it
PG_INT_OVERFLOW = 3_000_000_000     # fits 64 bits; PostgreSQL's integer refuses it


def writer(db, check_values):
    return Writer(db.target.connect, db.dialect, retry=FAST, scrub=db.target.scrub, check_values=check_values)


def base_group(app_id, **extra):
    row = {'app_id': app_id, 'product_line_enum': 600, 'ip_address': '10.0.0.1',
           'receive_date': datetime.datetime(2020, 1, 2, 3, 4, 5)}
    row.update(extra)
    return RowGroup(app_id, f'doc-{app_id}.xml', [row])


def contact_group(app_id, con_id):
    return RowGroup(app_id, f'doc-{app_id}.xml', [{'con_id': con_id, 'app_id': app_id, 'first_name': 'ANN'}])


def poison_key(db):
    """A con_id the live app_contact_base.con_id cannot hold (SQLite: INTEGER, 64-bit; PostgreSQL: integer)."""
    return HUGE if db.kind == 'sqlite' else PG_INT_OVERFLOW


def counter(result, name):
    return sum(c.committed for c in result.metrics().query(MetricsFilter().with_name(name))['counters'])


def execute(db, *statements):
    conn = db.target.connect()
    try:
        cur = conn.cursor()
        for st in statements:
            cur.execute(st)
        conn.commit()
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------ ownership check

@pytest.mark.parametrize('check_values', [False, True], ids=['rejected-by-db', 'checked-before-sql'])
def test_poison_key_in_the_ownership_check_fails_only_its_document(db, check_values):
    """Before: the key-ownership SELECT failed for the whole batch and stopped the run (every re-run too)."""
    metas = db.create()
    w = writer(db, check_values)
    assert not w.write(metas['app_base'], [base_group(i) for i in range(1, 31)]).failed
    groups = [contact_group(i, 1000 + i) for i in range(1, 31)]
    groups[16] = contact_group(17, poison_key(db))
    r = w.write(metas['app_contact_base'], groups)
    w.close()
    assert set(r.failed) == {17}
    assert sorted(r.written) == [i for i in range(1, 31) if i != 17] and r.rows_written == 29
    assert db.count('app_contact_base') == 29
    reason = r.failed[17]
    assert reason.startswith('app_contact_base')
    if check_values:
        typ = 'integer (64-bit)' if db.kind == 'sqlite' else 'int'
        assert reason == f'app_contact_base.con_id: value out of range for {typ}'
        assert w.bisections == 0 and str(poison_key(db)) not in reason
    else:
        assert w.bisections >= 1                 # found by halving the batch, not by luck


# ---------------------------------------------------------------------------------------------------- upsert

@pytest.mark.parametrize('check_values', [False, True], ids=['rejected-by-db', 'checked-before-sql'])
@pytest.mark.parametrize('poison', ['smallint_out_of_range', 'int_too_big_to_bind', 'decimal_overflow'])
def test_poison_value_in_the_upsert_fails_only_its_document(db, check_values, poison):
    metas = db.create()
    w = writer(db, check_values)
    groups = [base_group(i) for i in range(1, 41)]
    bad = {'smallint_out_of_range': {'product_line_enum': 70000}, 'int_too_big_to_bind': {'amount': HUGE},
           'decimal_overflow': {'amount': 10 ** 11}}[poison]
    groups[22] = base_group(23, **bad)
    r = w.write(metas['app_base'], groups)
    w.close()
    assert set(r.failed) == {23}, r.failed
    assert r.rows_written == 39 and db.count('app_base') == 39
    column = next(iter(bad))
    if check_values:
        assert r.failed[23].startswith(f'app_base.{column}: value out of range for ')
        assert str(next(iter(bad.values()))) not in r.failed[23]


# ------------------------------------------------------------------------- replace, compensation (Beam)

def mapped(app_id, con_id, addresses=2):
    return MappedDoc(f'doc-{app_id}.xml', app_id, {
        'app_base': [{'app_id': app_id, 'product_line_enum': 600, 'ip_address': '10.1.1.1',
                      'receive_date': datetime.datetime(2020, 1, 2, 3, 4, 5)}],
        'app_contact_base': [{'con_id': con_id, 'app_id': app_id, 'first_name': 'ANN', 'flag': 0}],
        'app_contact_address': [{'con_id': con_id, 'address_type_enum': t, 'city': 'X'}
                                for t in range(1, addresses + 1)],
    }, [])


_COLLECTED = []      # outcomes of the last run_write (the FnApiRunner runs in this process)


def _collect(outcomes):
    _COLLECTED.extend(outcomes)


def run_write(db, docs, batch_size=4):
    tiers = fk_tiers(db.metas, TABLES)
    del _COLLECTED[:]
    p = beam_test_pipeline()
    (p | beam.Create(docs) | WriteToSql(db.url, db.metas, tiers, batch_size)
     | beam.combiners.ToList() | beam.Map(_collect))
    result = p.run()
    result.wait_until_finish()
    out = {o.app_id: o for o in _COLLECTED}
    assert len(out) == len(docs)
    return out, result


def notes_table(db):
    """A table the contract does not write, whose FK (NO ACTION) to app_base keeps an app_base row from being
    deleted: the data error of a DELETE, caused by one document."""
    q = db.q
    execute(db, f'CREATE TABLE {q("app_notes")} (note_id int PRIMARY KEY, app_id int NOT NULL '
                f'REFERENCES {q("app_base")} (app_id))')


def ledger_rows(db, app_ids):
    execute(db, *[f"INSERT INTO {db.q('processing_log')} (app_id, status) VALUES ({a}, 'success')"
                  for a in app_ids])


def test_poison_in_the_compensation_fails_nothing_else(db):
    """Two documents fail in tier 1 after their app_base row was committed; one of those rows cannot be deleted
    (a foreign key from another table). Before: the DELETE's error stopped the run. Now: that document's reason
    says its rows stay, the other failed document is cleaned, every good document is written."""
    db.create()
    notes_table(db)
    run_write(db, [mapped(100, 9100), mapped(101, 9101), mapped(7, 7007)])    # 9100 and 9101 are taken
    execute(db, f"INSERT INTO {db.q('app_notes')} (note_id, app_id) VALUES (1, 7)")   # app 7's row is pinned
    docs = [mapped(i, 5000 + i) for i in range(2, 21)]
    docs[5] = mapped(7, 9100)                                 # fails in tier 1: con_id of app 100
    docs[10] = mapped(12, 9101)                               # fails in tier 1: con_id of app 101
    out, result = run_write(db, docs, batch_size=4)
    assert {a for a, o in out.items() if o.status == 'failed'} == {7, 12}
    assert 'already belongs to app_id 100' in out[7].reason and 'its rows could not be removed' in out[7].reason
    assert 'already belongs to app_id 101' in out[12].reason and 'could not be removed' not in out[12].reason
    assert counter(result, 'partial_rows_not_removable') == 1
    good = [i for i in range(2, 21) if i not in (7, 12)]
    assert sorted(r[0] for r in db.rows(f"SELECT app_id FROM {db.q('app_base')}")) == sorted([7, 100, 101] + good)
    assert db.count('app_contact_address') == 2 * (len(good) + 3)     # app 7 keeps what it had (7007)


def test_poison_in_the_replacement_of_rows_written_before_fails_only_its_document(db):
    """Documents written before are re-migrated with one address fewer each: their old rows are replaced. One of
    them has an app_base row another table points at: it fails alone, the others are replaced."""
    db.create()
    notes_table(db)
    first = [mapped(i, 5000 + i) for i in range(1, 13)]
    out, _ = run_write(db, first)
    assert all(o.status == 'success' for o in out.values())
    ledger_rows(db, range(1, 13))
    execute(db, f"INSERT INTO {db.q('app_notes')} (note_id, app_id) VALUES (1, 5)")
    second = [mapped(i, 5000 + i, addresses=1) for i in range(1, 13)]
    out, result = run_write(db, second, batch_size=6)
    assert {a for a, o in out.items() if o.status == 'failed'} == {5}
    assert out[5].reason.startswith('its rows written before could not be replaced: ')
    assert counter(result, 'docs_replaced') == 11
    # the others: exactly their new rows (one address each); app 5 keeps what it had, since nothing could go
    addr = dict(db.rows(f"SELECT con_id, COUNT(*) FROM {db.q('app_contact_address')} GROUP BY con_id"))
    assert addr == {5000 + i: (2 if i == 5 else 1) for i in range(1, 13)}


# ------------------------------------------------------------------------------------- ledger, dead letters

def reject_rows(db, table, condition, name):
    """Make the target refuse rows matching `condition` for their data, as a CHECK constraint does."""
    if db.kind == 'pg':
        execute(db, f'ALTER TABLE {db.q(table)} ADD CONSTRAINT {name} CHECK (NOT ({condition})) NOT VALID')
    else:
        execute(db, *[f"CREATE TRIGGER {name}_{op} BEFORE {op} ON {table} WHEN {condition.replace('(', '(NEW.', 1)} "
                      f"BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: {name}'); END"
                      for op in ('INSERT', 'UPDATE')])


def test_poison_ledger_row_is_rejected_alone(db):
    db.create()
    reject_rows(db, 'processing_log', '(app_id = 13)', 'ck_poison_ledger')
    execute(db, *[f"INSERT INTO {db.q('dead_letter')} (doc_key, source, stage, reason) "
                  f"VALUES ('{doc_key(f's{i}')}', 's{i}', 'sink', 'failed before')" for i in (4, 13)])
    outcomes = [(Outcome(f's{i}', i, 'success', None, None, 3), f'{i:064x}') for i in range(1, 31)]
    p = beam_test_pipeline()
    p | beam.Create(outcomes) | WriteLedger(db.url, db.schema, session_id='s', batch_size=50)
    result = p.run()
    result.wait_until_finish()
    assert counter(result, 'ledger_rows_rejected') == 1
    rows = db.rows(f"SELECT app_id, status, content_hash FROM {db.q('processing_log')} ORDER BY app_id")
    assert rows == [(i, 'success', f'{i:064x}') for i in range(1, 31) if i != 13]
    # s4 succeeded: its dead letter is gone; s13's success could not be recorded, so its dead letter stays
    assert db.rows(f"SELECT source FROM {db.q('dead_letter')}") == [('s13',)]


def test_a_failed_remigration_loses_its_old_rows_but_never_a_document_this_run_rewrites(db):
    """Failed outcomes of documents migrated before: app 1 (success, an earlier session) loses its rows; app 2
    (being replaced by this run: 'replacing') and app 3 (written by this session) keep theirs - before, a
    'replacing' row still named the earlier session and a failing duplicate deleted what this run had just
    rewritten; app 4's rows cannot be deleted (a foreign key from a table the contract does not write): its
    failed ledger row is written all the same - before, the refused DELETE made the ledger row itself be
    rejected, so processing_log kept saying success."""
    db.create()
    notes_table(db)
    run_write(db, [mapped(a, 8000 + a) for a in (1, 2, 3, 4, 5)])
    execute(db, f"INSERT INTO {db.q('app_notes')} (note_id, app_id) VALUES (1, 4)")       # app 4 is pinned
    for a, status, session in ((1, 'success', 'old'), (2, 'replacing', 'old'), (3, 'success', 'now'),
                               (4, 'success', 'old'), (5, 'success', 'old')):
        execute(db, f"INSERT INTO {db.q('processing_log')} (app_id, status, session_id) "
                    f"VALUES ({a}, '{status}', '{session}')")
    outcomes = [Outcome(f's{a}', a, 'failed', 'mapping', 'bad key', 0) for a in (1, 2, 3, 4)]
    p = beam_test_pipeline()
    p | beam.Create(outcomes) | WriteLedger(db.url, db.schema, session_id='now', batch_size=50,
                                             owned=(db.metas, fk_tiers(db.metas, TABLES)))
    result = p.run()
    result.wait_until_finish()
    assert db.rows(f"SELECT app_id, status FROM {db.q('processing_log')} ORDER BY app_id") == \
        [(1, 'failed'), (2, 'failed'), (3, 'failed'), (4, 'failed'), (5, 'success')]
    kept = {t: sorted({r[0] for r in db.rows(f"SELECT app_id FROM {db.q(t)}")}) for t in ('app_base',
                                                                                          'app_contact_base')}
    assert kept == {'app_base': [2, 3, 4, 5], 'app_contact_base': [2, 3, 4, 5]}
    assert counter(result, 'ledger_rows_rejected') == 0


def test_poison_dead_letters_keep_the_others_and_lose_only_what_cannot_be_stored(db):
    db.create()
    reject_rows(db, 'dead_letter', "(source = 'reject.xml')", 'ck_poison_source')
    reject_rows(db, 'dead_letter', "(payload LIKE '%POISON%')", 'ck_poison_payload')
    letters = [DeadLetter(f'bad-{i}.xml', None, 'parse', 'not well-formed', f'<a>{i}') for i in range(12)]
    letters += [DeadLetter('reject.xml', None, 'parse', 'not well-formed', '<a>'),
                DeadLetter('poison.xml', 7, 'validation', 'wrong root', '<POISON/>')]
    p = beam_test_pipeline()
    p | beam.Create(letters) | WriteDeadLetters(db.url, db.schema, batch_size=20, session_id='s1')
    result = p.run()
    result.wait_until_finish()
    assert counter(result, 'dead_letters_rejected') == 1 and counter(result, 'dead_letters_without_payload') == 1
    rows = {r[0]: r[1:] for r in db.rows(f"SELECT source, payload, reason, attempts FROM {db.q('dead_letter')}")}
    assert set(rows) == {f'bad-{i}.xml' for i in range(12)} | {'poison.xml'}
    assert rows['bad-3.xml'] == ('<a>3', 'not well-formed', 1)
    payload, reason, _ = rows['poison.xml']
    assert payload is None and reason.startswith('wrong root (payload not stored: ')
