"""Shared by tests/test_operator_cli.py and tests/test_operator_runs.py: the CLI in a process of its own, targets
(a SQLite file, or a private schema of the shared PostgreSQL server), and a table spec with a reference table."""
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid

import pytest

from helpers import targets_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, 'contracts', 'samples')
PG = os.environ.get('XMLSQL_TEST_PG')
NEED_PG = pytest.mark.skipif(not PG, reason='XMLSQL_TEST_PG is not set: no PostgreSQL server (.ci/run starts one)')
KINDS = ['sqlite', pytest.param('pg', marks=[NEED_PG, pytest.mark.postgres])]
PW_VAR = 'XMLSQL_OPERATOR_TEST_PW'
_PWD = re.compile(r'(?i)(\bpwd\s*=\s*)([^;]*)')


def pipeline(*args, env=None, cwd=None, timeout=600):
    """`python -m pipeline ...` in a process of its own, as an operator runs it."""
    return subprocess.run([sys.executable, '-m', 'pipeline', *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def error_lines(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith('error:')]


def pg_password():
    m = _PWD.search(PG or '')
    return m.group(2) if m else None


def pg_with_env_password():
    """(the shared server's target with its password as ${VAR}, the environment that sets VAR)."""
    return _PWD.sub(lambda m: m.group(1) + '${' + PW_VAR + '}', PG), {PW_VAR: pg_password()}


def pg_connect():
    import pyodbc
    return pyodbc.connect(PG[len('odbc:'):], autocommit=True)


def spec_with_reference_table(path):
    """The sample table spec plus a reference table app_enums that every *_enum column points to (as in the
    existing system's tables.json), listed in reference_tables. Written to `path`; returns it."""
    spec = json.load(open(os.path.join(SAMPLES, 'credit_app_tables.json')))
    spec['tables']['app_enums'] = {
        'columns': [{'name': 'enum_id', 'type': 'smallint', 'nullable': False},
                    {'name': 'code', 'type': 'varchar(20)', 'nullable': True}],
        'primary_key': ['enum_id'], 'foreign_keys': [], 'unique': []}
    for name, table in spec['tables'].items():
        for col in table['columns']:
            if col['name'].endswith('_enum'):
                table['foreign_keys'].append({'columns': [col['name']], 'references': 'app_enums',
                                              'ref_columns': ['enum_id'], 'on_delete': 'NO ACTION'})
    spec['reference_tables'] = ['app_enums']
    with open(path, 'w') as f:
        json.dump(spec, f, indent=1)
    return str(path)


def contract_tables():
    c = json.load(open(os.path.join(SAMPLES, 'credit_app.json')))
    return [t for t in c['table_insertion_order'] if t != 'processing_log']


class Target:
    """A fresh target with a contract of its own in a folder of its own (`folder`/contract.json): a SQLite file,
    or a PostgreSQL schema that nothing has created yet (the contract's target_schema names it)."""

    def __init__(self, kind, tmp_path, name):
        self.kind, self.name = kind, name
        self.folder = tmp_path / name
        self.folder.mkdir()
        c = json.load(open(os.path.join(SAMPLES, 'credit_app.json')))
        if kind == 'sqlite':
            self.url, self.schema = f'sqlite:///{self.folder}/target.db', None
        else:
            self.url, self.schema = PG, f'op_{name}_{uuid.uuid4().hex[:8]}'
            c['target_schema'] = self.schema
        self.contract = str(self.folder / 'contract.json')
        with open(self.contract, 'w') as f:
            json.dump(c, f)

    def connect(self):
        return sqlite3.connect(self.url[len('sqlite:///'):]) if self.kind == 'sqlite' else pg_connect()

    def t(self, table):
        return table if self.kind == 'sqlite' else f'{self.schema}.{table}'

    def rows(self, sql, params=()):
        conn = self.connect()
        try:
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def execute(self, *statements):
        conn = self.connect()
        try:
            for st in statements:
                conn.execute(st)
            conn.commit()
        finally:
            conn.close()

    def tables(self):
        if self.kind == 'sqlite':
            if not os.path.exists(self.url[len('sqlite:///'):]):
                return set()
            return {r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite_%'")}
        return {r[0] for r in self.rows('SELECT table_name FROM information_schema.tables WHERE table_schema = ?',
                                        (self.schema,))}

    def foreign_keys(self):
        """{(table, column, referenced table)}"""
        if self.kind == 'sqlite':
            return {(t, r[3], r[2]) for t in self.tables() for r in self.rows(f'PRAGMA foreign_key_list("{t}")')}
        return set(self.rows(
            'SELECT tc.table_name, kcu.column_name, ccu.table_name FROM information_schema.table_constraints tc '
            'JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name '
            ' AND kcu.table_schema = tc.table_schema '
            'JOIN information_schema.constraint_column_usage ccu ON ccu.constraint_name = tc.constraint_name '
            ' AND ccu.table_schema = tc.table_schema '
            "WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = ?", (self.schema,)))

    def columns(self):
        """{(table, column, declared type, nullable)}: what the DDL made of the spec."""
        if self.kind == 'sqlite':
            return {(t, r[1], r[2].lower(), not r[3]) for t in self.tables()
                    for r in self.rows(f'PRAGMA table_info("{t}")')}
        return {(r[0], r[1], f'{r[2]}({r[3]})' if r[3] else r[2], r[4] == 'YES') for r in self.rows(
            'SELECT table_name, column_name, data_type, character_maximum_length, is_nullable '
            'FROM information_schema.columns WHERE table_schema = ?', (self.schema,))}

    def drop(self):
        if self.kind == 'pg':
            conn = pg_connect()
            try:
                conn.execute(f'DROP SCHEMA IF EXISTS {self.schema} CASCADE')
            finally:
                conn.close()


targets = targets_fixture(Target)
