"""write_batch / Writer against real databases (sqlite3 and PostgreSQL via psqlODBC): upsert idempotence,
bisection of data errors, ownership of keys, transient retry.

The transient-retry test terminates every other client backend of its database, so it runs on a PostgreSQL server
of this module's own (tests/pg_private.py, started once for the module), never on the shared cluster that
XMLSQL_TEST_PG names: other people's sessions there would be killed too. The other tests use the shared cluster."""
import datetime
import threading
import time

import pytest

from pg_private import private_pg  # noqa: F401  (the fixture: a PostgreSQL server of this module's own)
from test_sink_helpers import DB, SKIP, SPEC, TABLES, db  # noqa: F401 (fixtures)
from transforms.records import RowGroup
from transforms.sink import RetryPolicy, Writer, write_batch

FAST = RetryPolicy(attempts=8, base_delay=0.05, max_delay=0.5)


def base_group(app_id, ip='10.0.0.1', **extra):
    row = {'app_id': app_id, 'product_line_enum': 600, 'receive_date': datetime.datetime(2015, 11, 5, 9, 2, 34),
           'ip_address': ip, 'amount': 12.5}
    row.update(extra)
    return RowGroup(app_id, f'doc-{app_id}.xml', [row])


def contact_group(app_id, con_id, name='ANN'):
    return RowGroup(app_id, f'doc-{app_id}.xml', [
        {'con_id': con_id, 'app_id': app_id, 'first_name': name, 'flag': True,
         'birth_date': datetime.date(1970, 11, 20)}])


def writer(db, check_values=True):
    """check_values=False: no checks against the column types before SQL, so that the database itself rejects
    the value and the sink's isolation of data errors (bisection) is what is tested."""
    return Writer(db.target.connect, db.dialect, retry=FAST, scrub=db.target.scrub, check_values=check_values)


def test_upsert_is_idempotent(db):
    metas = db.create()
    w = writer(db)
    groups = [base_group(i) for i in range(1, 51)]
    r1 = w.write(metas['app_base'], groups)
    assert r1.rows_written == 50 and r1.failed == {}
    c = [contact_group(i, 1000 + i) for i in range(1, 51)]
    assert w.write(metas['app_contact_base'], c).failed == {}
    # second run: same counts, updated values
    groups2 = [base_group(i, ip='10.0.0.2') for i in range(1, 51)]
    r2 = w.write(metas['app_base'], groups2)
    assert r2.rows_written == 50 and r2.failed == {}
    assert w.write(metas['app_contact_base'], c).failed == {}
    w.close()
    assert db.count('app_base') == 50
    assert db.count('app_contact_base') == 50
    assert db.scalar(f"SELECT COUNT(*) FROM {db.q('app_base')} WHERE ip_address = ?", ('10.0.0.2',)) == 50
    # defaults applied for columns the rows do not carry; explicit identity values kept
    assert db.scalar(f"SELECT MAX(con_id) FROM {db.q('app_contact_base')}") == 1050
    assert db.scalar(f"SELECT MIN(flag) FROM {db.q('app_contact_base')}") == 1


def test_rows_with_different_column_sets_in_one_batch(db):
    metas = db.create()
    g1 = RowGroup(1, 'a', [{'app_id': 1, 'product_line_enum': 600}])          # receive_date from the default
    g2 = base_group(2)
    r = write_batch(db.target.connect(), db.dialect, metas['app_base'], [g1, g2])
    assert r.rows_written == 2 and not r.failed
    assert db.scalar(f"SELECT COUNT(*) FROM {db.q('app_base')} WHERE receive_date IS NOT NULL") == 2


@pytest.mark.parametrize('check_values', [True, False], ids=['checked-before-sql', 'rejected-by-db'])
def test_value_too_long_fails_only_that_document(db, check_values):
    metas = db.create()
    w = writer(db, check_values)
    secret = 'X' * 50 + 'SECRETVALUE'
    groups = [base_group(i) for i in range(1, 21)]
    groups[13] = base_group(14, ip=secret)
    r = w.write(metas['app_base'], groups)
    w.close()
    assert set(r.failed) == {14}
    assert r.rows_written == 19
    assert sorted(r.written) == [i for i in range(1, 21) if i != 14]
    reason = r.failed[14]
    assert 'SECRETVALUE' not in reason and 'XXXX' not in reason
    if check_values:
        assert reason == 'app_base.ip_address: value longer than varchar(39) allows'
        assert w.bisections == 0                      # never reached the database
    elif db.kind == 'pg':
        assert reason.startswith('app_base: ')
        assert 'value too long for type character varying(39)' in reason
    else:
        assert reason.startswith('app_base: ')
        assert 'CHECK constraint failed' in reason and 'ip_address' in reason
    assert db.count('app_base') == 19
    assert r.failures == [(14, 'doc-14.xml', reason)]


@pytest.mark.parametrize('check_values', [True, False], ids=['checked-before-sql', 'rejected-by-db'])
def test_several_bad_documents_are_isolated(db, check_values):
    metas = db.create()
    groups = [base_group(i) for i in range(1, 101)]
    bad = {7, 50, 51, 99}
    for i in bad:
        groups[i - 1] = base_group(i, ip='Y' * 40)
    r = write_batch(db.target.connect(), db.dialect, metas['app_base'], groups, check_values=check_values)
    assert set(r.failed) == bad
    assert r.rows_written == 96
    assert db.count('app_base') == 96


def test_con_id_owned_by_another_document(db):
    metas = db.create()
    w = writer(db)
    w.write(metas['app_base'], [base_group(i) for i in (443306, 500, 501, 502)])
    assert not w.write(metas['app_contact_base'], [contact_group(443306, 738936)]).failed
    batch = [contact_group(500, 1), contact_group(501, 738936, name='EVE'), contact_group(502, 3)]
    r = w.write(metas['app_contact_base'], batch)
    w.close()
    assert r.failed == {501: 'app_contact_base: con_id 738936 already belongs to app_id 443306'}
    assert r.rows_written == 2
    assert db.rows(f"SELECT app_id, first_name FROM {db.q('app_contact_base')} WHERE con_id = 738936") \
        == [(443306, 'ANN')]
    assert db.count('app_contact_base') == 3


def test_same_key_twice_in_one_batch_later_document_fails(db):
    metas = db.create()
    w = writer(db)
    w.write(metas['app_base'], [base_group(i) for i in (1, 2, 3)])
    r = w.write(metas['app_contact_base'], [contact_group(1, 10), contact_group(2, 10), contact_group(3, 11)])
    w.close()
    assert set(r.failed) == {2}
    assert 'con_id 10 is also written by app_id 1' in r.failed[2]
    assert db.count('app_contact_base') == 2


def test_fk_violation_is_a_document_error(db):
    metas = db.create()
    w = writer(db)
    w.write(metas['app_base'], [base_group(1)])
    r = w.write(metas['app_contact_base'], [contact_group(1, 10), contact_group(999, 11)])
    w.close()
    assert set(r.failed) == {999}
    assert 'foreign key' in r.failed[999].lower()
    assert db.count('app_contact_base') == 1


def test_missing_primary_key_value_fails_document(db):
    metas = db.create()
    r = write_batch(db.target.connect(), db.dialect, metas['app_contact_base'],
                    [RowGroup(1, 'a', [{'app_id': 1, 'first_name': 'A'}])])
    assert r.failed == {1: 'app_contact_base: primary key column con_id has no value'}


@pytest.fixture
def private_pg_db(private_pg, tmp_path):
    """A fresh schema on this module's private PostgreSQL server."""
    d = DB('pg', tmp_path, pg_url=private_pg.target)
    yield d
    d.drop()


@pytest.mark.postgres
def test_pg_transient_errors_are_retried(private_pg_db):
    """Terminate every other backend repeatedly while a long write runs: the write finishes by retry. On the
    private server, where the other backends are only this test's own."""
    pg_db = private_pg_db
    metas = pg_db.create()
    killer = pg_db.target.connect()
    killer.autocommit = True
    stop = threading.Event()
    kills = []

    def kill_loop():
        time.sleep(0.3)
        while not stop.is_set() and len(kills) < 3:
            cur = killer.cursor()
            cur.execute('SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
                        'WHERE datname = current_database() AND pid <> pg_backend_pid() '
                        "AND application_name NOT LIKE 'pg_%' AND backend_type = 'client backend'")
            kills.append(len(cur.fetchall()))
            time.sleep(0.4)

    w = writer(pg_db)
    t = threading.Thread(target=kill_loop)
    t.start()
    total = 0
    try:
        deadline = time.time() + 20
        n = 0
        while (len(kills) < 3 or w.reconnects == 0) and time.time() < deadline:
            groups = [base_group(n * 400 + i) for i in range(1, 401)]
            r = w.write(metas['app_base'], groups)
            assert not r.failed
            total += r.rows_written
            n += 1
    finally:
        stop.set()
        t.join()
        killer.close()
    w.close()
    assert kills and w.reconnects >= 1, (kills, w.reconnects)
    assert pg_db.count('app_base') == total


def test_sqlite_locked_database_is_retried(tmp_path):
    d = DB('sqlite', tmp_path)
    metas = d.create()
    blocker = d.target.connect()
    blocker.execute('BEGIN EXCLUSIVE')
    threading.Timer(0.5, blocker.rollback).start()
    from transforms.sql.targets import parse_target
    t = parse_target(d.url)
    w = Writer(lambda: t.connect(timeout=0), 'sqlite', retry=RetryPolicy(attempts=10, base_delay=0.1, max_delay=0.3))
    r = w.write(metas['app_base'], [base_group(1)])
    w.close()
    blocker.close()
    assert r.rows_written == 1 and w.transient_errors >= 1
