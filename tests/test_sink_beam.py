"""WriteToSql / WriteLedger / WriteDeadLetters on the DirectRunner (FnApiRunner; tests/helpers.py beam_test_pipeline) against real databases."""
import datetime

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from transforms.sql.meta import fk_tiers
from transforms.sql.targets import parse_target
from test_sink_helpers import DB, SKIP, SPEC, TABLES, db, pg_db  # noqa: F401 (fixtures)
from transforms.records import DeadLetter, MappedDoc, Outcome
from transforms.sink import WriteDeadLetters, WriteLedger, WriteToSql, read_success_ids
from helpers import beam_test_pipeline


def mapped(app_id, con_id, ip='10.1.1.1', name='ANN'):
    return MappedDoc(f'doc-{app_id}.xml', app_id, {
        'app_base': [{'app_id': app_id, 'product_line_enum': 600, 'ip_address': ip,
                      'receive_date': datetime.datetime(2020, 1, 2, 3, 4, 5)}],
        'app_contact_base': [{'con_id': con_id, 'app_id': app_id, 'first_name': name, 'flag': 0}],
        'app_contact_address': [{'con_id': con_id, 'address_type_enum': 1, 'city': 'X'},
                                {'con_id': con_id, 'address_type_enum': 2, 'city': 'Y'}],
    }, [])


def counter(result, name):
    res = result.metrics().query(MetricsFilter().with_name(name))['counters']
    return sum(c.committed for c in res)


def run_write(db, docs, batch_size=7):
    tiers = fk_tiers(db.metas, TABLES)
    p = beam_test_pipeline()
    outcomes = (p | beam.Create(docs) | WriteToSql(db.url, db.metas, tiers, batch_size))
    got = []
    outcomes | beam.Map(lambda o: o) | 'Collect' >> beam.combiners.ToList() | beam.Map(got.append)
    result = p.run()
    result.wait_until_finish()
    return result, outcomes, tiers


def test_write_to_sql_tiers_bundles_and_failures(db):
    db.create()
    # a pre-existing contact owned by app 1 (written first, as in an earlier run)
    first = [mapped(1, 5001)]
    docs = [mapped(i, 5000 + i) for i in range(2, 41)]
    docs[9] = mapped(11, 5001)                       # con_id owned by app 1 -> fails in tier 1
    docs[19] = mapped(21, 5021, ip='Z' * 60)          # too long -> fails in tier 0; not written in tiers 1, 2
    run_write(db, first)

    tiers = fk_tiers(db.metas, TABLES)
    assert tiers == [['app_base'], ['app_contact_base'], ['app_contact_address']]
    p = beam_test_pipeline()
    outcomes = p | beam.Create(docs) | WriteToSql(db.url, db.metas, tiers, batch_size=7)
    summary = outcomes | beam.Map(lambda o: (o.app_id, o.status, o.stage, o.rows,
                                             (o.reason or '').split(':')[0]))
    expected = [(i, 'success', None, 4, '') for i in range(2, 41) if i not in (11, 21)]
    expected += [(11, 'failed', 'sink', 0, 'app_contact_base'), (21, 'failed', 'sink', 0, 'app_base.ip_address')]
    assert_that(summary, equal_to(expected))
    reasons = outcomes | beam.Filter(lambda o: o.status == 'failed') | beam.Map(lambda o: (o.app_id, o.reason))
    assert_that(reasons, equal_to([(11, 'app_contact_base: con_id 5001 already belongs to app_id 1'),
                                   (21, reasons_21(db))]), label='reasons')
    result = p.run()
    result.wait_until_finish()

    opened = counter(result, 'sink_connections_opened')
    bundles = counter(result, 'sink_bundles_with_writes')
    assert opened == bundles and opened >= 3          # one connection per bundle that wrote, >= 1 per tier
    assert counter(result, 'sink_batches') >= 3 * (39 // 7)
    # tier 0: 39 docs - 1 bad; tier 1: 38 - 1; tier 2: 2 rows x 37
    assert counter(result, 'sink_rows_written') == 38 + 37 + 74
    # app 11 failed in tier 1 after its app_base row was committed in tier 0: that row was removed again
    assert counter(result, 'partial_rows_removed') == 1
    assert db.count('app_base') == 1 + 37
    assert db.rows(f"SELECT COUNT(*) FROM {db.q('app_base')} WHERE app_id = 11") == [(0,)]
    assert db.count('app_contact_base') == 1 + 37
    assert db.count('app_contact_address') == 2 + 74
    assert db.rows(f"SELECT app_id FROM {db.q('app_contact_base')} WHERE con_id = 5001") == [(1,)]

    # re-run: idempotent (same counts)
    result2, _, _ = run_write(db, docs)
    assert db.count('app_base') == 38 and db.count('app_contact_base') == 38
    assert db.count('app_contact_address') == 76


def reasons_21(db):
    # checked against the live column before any SQL: the same reason on every database, without the value
    return 'app_base.ip_address: value longer than varchar(39) allows'


def test_ledger_and_dead_letters(db):
    db.create()
    outcomes = [Outcome(f's{i}', i, 'success', None, None, 3) for i in range(1, 11)]
    outcomes += [Outcome('s5b', 5, 'failed', 'sink', 'x' * 900, 0), Outcome('bad.xml', None, 'failed',
                                                                           'validation', 'nope', 0)]
    letters = [DeadLetter('bad.xml', None, 'validation', 'Invalid XML', '<a>\u00e9</a>'),
               DeadLetter('s5b', 5, 'sink', 'too long', b'<x/>')]
    for run in range(2):       # twice: still one processing_log row per app_id, one dead_letter row per document
        p = beam_test_pipeline()
        (p | 'O' >> beam.Create(outcomes[:10] if run == 0 else outcomes)
         | WriteLedger(db.url, db.schema, session_id=f'sess-{run}'))
        p | 'D' >> beam.Create(letters) | WriteDeadLetters(db.url, db.schema, session_id=f'sess-{run}')
        p.run().wait_until_finish()
    assert db.count('processing_log') == 10
    assert sorted(db.rows(f"SELECT source, attempts, session_id FROM {db.q('dead_letter')}")) == \
        [('bad.xml', 2, 'sess-1'), ('s5b', 2, 'sess-1')]
    row = db.rows(f"SELECT status, stage, failure_reason, session_id FROM {db.q('processing_log')} "
                  'WHERE app_id = 5')
    assert len(row) == 1 and row[0][0] in ('success', 'failed')
    t = parse_target(db.url)
    conn = t.connect()
    try:
        ok = read_success_ids(conn, db.dialect, db.schema)
    finally:
        conn.close()
    assert 5 not in ok or row[0][0] == 'success'
    assert set(range(1, 11)) - {5} <= ok
    if row[0][0] == 'failed':
        assert len(row[0][2]) == 500 and row[0][1] == 'sink' and row[0][3] == 'sess-1'
    payloads = sorted(r[0] for r in db.rows(f"SELECT payload FROM {db.q('dead_letter')}"))
    assert payloads[0] == '<a>\u00e9</a>' and payloads[-1] == '<x/>'


def test_changed_counts_only_against_a_ledger_row_of_an_earlier_run(db):
    """A document is 'changed' when an earlier run recorded another content hash for its app_id. A row this very
    run's own session wrote (a bundle a runner retried) is no earlier version: its rows are
    still replaced, but the document is not counted as changed."""
    db.create()
    run_write(db, [mapped(i, 7000 + i) for i in (1, 2, 3)])         # the rows the ledger rows below stand for
    conn = db.target.connect()
    try:
        for i, sess in ((1, 'earlier'), (2, 'this-run'), (3, None)):
            conn.cursor().execute(f"INSERT INTO {db.q('processing_log')} (app_id, status, content_hash, session_id) "
                                  f"VALUES (?, 'success', 'old-hash', ?)", [i, sess])
        conn.commit()
    finally:
        conn.close()
    docs = [mapped(i, 7000 + i)._replace(content_hash='new-hash') for i in (1, 2, 3, 4)]
    p = beam_test_pipeline()
    got = (p | beam.Create(docs)
           | WriteToSql(db.url, db.metas, fk_tiers(db.metas, TABLES), 10, session_id='this-run')
           | beam.Map(lambda o: (o.app_id, o.status, o.changed)))
    assert_that(got, equal_to([(1, 'success', True), (2, 'success', False), (3, 'success', True),
                               (4, 'success', False)]))
    p.run().wait_until_finish()
    assert sorted(db.rows(f"SELECT app_id, COUNT(*) FROM {db.q('app_contact_base')} GROUP BY app_id")) == \
        [(1, 1), (2, 1), (3, 1), (4, 1)]
