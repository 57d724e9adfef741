"""Shared fixtures/helpers of the sink tests (real databases: stdlib sqlite3, PostgreSQL via pyodbc+psqlODBC).

PostgreSQL tests need XMLSQL_TEST_PG (.ci/run sets it); each test gets its own fresh schema."""
import os
import uuid

import pytest

from transforms.sql.upgrade import create_tables
from transforms.sql.introspect import introspect
from transforms.sql.targets import parse_target

PG_URL = os.environ.get('XMLSQL_TEST_PG')
SEED_TABLES = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'seed-corpus', 'cc', 'tables.json')
NEED_PG = pytest.mark.skipif(not PG_URL, reason='XMLSQL_TEST_PG is not set: PostgreSQL sink tests skipped '
                                                '(run .ci/run, or export XMLSQL_TEST_PG="$(bash scripts/start_postgres.sh)")')

# A small spec shaped like the CC tables (written for the tests, not copied from the seed corpus).
SPEC = {'tables': {
    'app_base': {'columns': [
        {'name': 'app_id', 'type': 'int', 'nullable': False, 'identity': True},
        {'name': 'product_line_enum', 'type': 'smallint', 'nullable': False},
        {'name': 'receive_date', 'type': 'datetime', 'nullable': False, 'default': 'GETUTCDATE()'},
        {'name': 'ip_address', 'type': 'varchar(39)', 'nullable': True},
        {'name': 'amount', 'type': 'decimal(12,2)', 'nullable': True}],
        'primary_key': ['app_id'], 'foreign_keys': [
            {'columns': ['product_line_enum'], 'references': 'app_enums', 'ref_columns': ['enum_id']}],
        'unique': []},
    'app_contact_base': {'columns': [
        {'name': 'con_id', 'type': 'int', 'nullable': False, 'identity': True},
        {'name': 'app_id', 'type': 'int', 'nullable': False},
        {'name': 'first_name', 'type': 'varchar(10)', 'nullable': False},
        {'name': 'flag', 'type': 'bit', 'nullable': False, 'default': '(0)'},
        {'name': 'birth_date', 'type': 'date', 'nullable': True},
        {'name': 'ssn_last_4', 'type': 'as', 'nullable': True}],
        'primary_key': ['con_id'], 'foreign_keys': [
            {'columns': ['app_id'], 'references': 'app_base', 'ref_columns': ['app_id'], 'on_delete': 'CASCADE'}],
        'unique': []},
    'app_contact_address': {'columns': [
        {'name': 'con_id', 'type': 'int', 'nullable': False},
        {'name': 'address_type_enum', 'type': 'smallint', 'nullable': False},
        {'name': 'city', 'type': 'varchar(20)', 'nullable': True}],
        'primary_key': ['con_id', 'address_type_enum'], 'foreign_keys': [
            {'columns': ['con_id'], 'references': 'app_contact_base', 'ref_columns': ['con_id'],
             'on_delete': 'CASCADE'}],
        'unique': []},
    'app_enums': {'columns': [{'name': 'enum_id', 'type': 'smallint', 'nullable': False}],
                  'primary_key': ['enum_id'], 'foreign_keys': [], 'unique': []},
}}
TABLES = ['app_base', 'app_contact_base', 'app_contact_address']
SKIP = ('app_enums',)


class DB:
    """A fresh, empty database for one test: sqlite file or a fresh PostgreSQL schema (on the shared cluster, or
    on the server whose ODBC target `pg_url` names, e.g. a private one of tests/pg_private.py)."""

    def __init__(self, kind, tmp_path, pg_url=None):
        self.kind = kind
        if kind == 'sqlite':
            self.url = f'sqlite:///{tmp_path}/t.db'
            self.schema = None
        else:
            self.url = pg_url or PG_URL
            self.schema = 's_' + uuid.uuid4().hex[:12]
        self.target = parse_target(self.url)
        self.dialect = self.target.dialect_name

    def create(self, spec=SPEC, skip=SKIP):
        create_tables(self.target, spec, self.schema, skip_tables=skip)
        conn = self.target.connect()
        try:
            self.metas = introspect(conn, self.dialect, self.schema, TABLES)
        finally:
            conn.close()
        return self.metas

    def q(self, table):
        return self.target.dialect.qualify(table, self.schema)

    def scalar(self, sql, params=()):
        conn = self.target.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            return cur.fetchone()[0]
        finally:
            conn.close()

    def rows(self, sql, params=()):
        conn = self.target.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            return [tuple(r) for r in cur.fetchall()]
        finally:
            conn.close()

    def count(self, table):
        return self.scalar(f'SELECT COUNT(*) FROM {self.q(table)}')

    def drop(self):
        if self.kind == 'pg':
            conn = self.target.connect()
            try:
                conn.cursor().execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
                conn.commit()
            finally:
                conn.close()


DB_PARAMS = ['sqlite', pytest.param('pg', marks=[NEED_PG, pytest.mark.postgres])]


@pytest.fixture(params=DB_PARAMS)
def db(request, tmp_path):
    d = DB(request.param, tmp_path)
    yield d
    d.drop()


@pytest.fixture
def pg_db(tmp_path):
    if not PG_URL:
        pytest.skip('XMLSQL_TEST_PG is not set: PostgreSQL sink tests skipped')
    d = DB('pg', tmp_path)
    yield d
    d.drop()
