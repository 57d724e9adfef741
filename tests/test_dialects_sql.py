"""Dialect SQL: identifiers, T-SQL generation (parsed by sqlglot tsql + golden files), DDL on all dialects,
error classification and message scrubbing, targets."""
import json
import os
import sqlite3

import pytest
import sqlglot
from sqlglot import exp

from transforms.sql.ddl import ddl_statements
from transforms.sql.dialects import DATA, FATAL, TRANSIENT, DialectError, get_dialect, scrub_message
from transforms.sql.meta import MetaError, fk_tiers, load_table_spec
from transforms.sql.targets import TargetError, parse_target
from test_sink_helpers import PG_URL, SEED_TABLES, SKIP, SPEC, TABLES, DB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOLDEN = os.path.join(os.path.dirname(__file__), 'golden')
UPDATE = os.environ.get('UPDATE_GOLDEN') == '1'


def golden(name, text):
    path = os.path.join(GOLDEN, name)
    if UPDATE:
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text)
    with open(path, encoding='utf-8') as f:
        assert text == f.read(), f'{name} differs from the golden file (UPDATE_GOLDEN=1 to regenerate)'


@pytest.mark.parametrize('bad', ['a b', 'x;drop', '"x"', '1abc', '', 'a' * 64, 'ü', 'a]b', None])
def test_unsafe_identifiers_are_rejected(bad):
    for d in ('sqlite', 'postgresql', 'mssql'):
        with pytest.raises(DialectError):
            get_dialect(d).quote(bad)


def test_quoting_and_schema():
    assert get_dialect('mssql').qualify('app_base', 'migration') == '[migration].[app_base]'
    assert get_dialect('postgresql').qualify('app_base', 'migration') == '"migration"."app_base"'
    assert get_dialect('sqlite').qualify('app_base', 'migration') == '"app_base"'


def test_tsql_merge_upsert_parses_and_matches_golden():
    metas = load_table_spec(SPEC, 'migration')
    d = get_dialect('mssql')
    cb = d.upsert_script(metas['app_contact_base'], ['con_id', 'app_id', 'first_name', 'flag'])
    addr = d.upsert_script(metas['app_contact_address'], ['con_id', 'address_type_enum', 'city'])
    golden('mssql_upsert_app_contact_base.sql', cb)
    golden('mssql_upsert_app_contact_address.sql', addr)
    stmts = [s for s in sqlglot.parse(cb, read='tsql') if s is not None]
    merge = [s for s in stmts if isinstance(s, exp.Merge)]
    assert len(merge) == 1
    tables = {t.name for t in merge[0].find_all(exp.Table)}
    assert {'app_contact_base', '#stage_app_contact_base'} <= tables or \
        {'app_contact_base', 'stage_app_contact_base'} <= tables
    cols = {c.name for c in merge[0].find_all(exp.Column)}
    assert {'con_id', 'app_id', 'first_name', 'flag'} <= cols
    assert 'WITH (HOLDLOCK)' in cb and 'SET IDENTITY_INSERT [migration].[app_contact_base] ON;' in cb
    assert cb.index('IDENTITY_INSERT [migration].[app_contact_base] ON') < cb.index('MERGE') < \
        cb.index('IDENTITY_INSERT [migration].[app_contact_base] OFF')
    assert 'IDENTITY_INSERT' not in addr                           # no identity column -> no IDENTITY_INSERT
    assert 'WHEN MATCHED AND tgt.[app_id] = src.[app_id]' in cb     # never re-assigns another app's row
    sqlglot.parse(addr, read='tsql')


@pytest.mark.parametrize('dialect', ['mssql', 'postgresql', 'sqlite'])
def test_ddl_golden(dialect):
    text = '\n\n'.join(ddl_statements(SPEC, dialect, 'migration', skip_tables=SKIP)) + '\n'
    golden(f'ddl_{dialect}.sql', text)
    if dialect == 'mssql':
        for st in ddl_statements(SPEC, dialect, 'migration', skip_tables=SKIP):
            parsed = sqlglot.parse(st, read='tsql')
            assert parsed
        ast_tables = {t.name for st in ddl_statements(SPEC, 'mssql', 'migration', skip_tables=SKIP)
                      for p in sqlglot.parse(st, read='tsql') if p is not None for t in p.find_all(exp.Table)}
        assert {'app_base', 'app_contact_base', 'app_contact_address', 'processing_log', 'dead_letter'} <= ast_tables
        assert 'app_enums' not in text                # skipped reference table, FK to it left out
    if dialect == 'sqlite':
        conn = sqlite3.connect(':memory:')
        for st in ddl_statements(SPEC, dialect, 'migration', skip_tables=SKIP):
            conn.execute(st)
            conn.execute(st)                          # idempotent


@pytest.mark.skipif(not os.path.exists(SEED_TABLES), reason='seed corpus tables.json not available')
def test_seed_tables_ddl_all_dialects(tmp_path):
    ref = ('app_enums', 'app_campaign_cc')
    for dialect in ('mssql', 'postgresql', 'sqlite'):
        stmts = ddl_statements(SEED_TABLES, dialect, 'migration', skip_tables=ref)
        assert not any('app_enums' in s or 'app_campaign_cc' in s for s in stmts)
        if dialect == 'mssql':
            for s in stmts:
                sqlglot.parse(s, read='tsql')
            assert 'ssn_last_4' not in '\n'.join(stmts)          # computed column skipped
    conn = sqlite3.connect(str(tmp_path / 'x.db'))
    for s in ddl_statements(SEED_TABLES, 'sqlite', None, skip_tables=ref):
        conn.execute(s)
    metas = load_table_spec(SEED_TABLES)
    order = ['app_base', 'app_contact_base', 'app_operational_cc', 'app_pricing_cc', 'app_transactional_cc',
             'app_solicited_cc', 'app_contact_address', 'app_contact_employment', 'app_report_results_lookup',
             'app_historical_lookup', 'scores', 'indicators']
    tiers = fk_tiers(metas, order)
    assert tiers[0] == ['app_base', 'scores', 'indicators']
    assert tiers[1][0] == 'app_contact_base' and tiers[2] == ['app_contact_address', 'app_contact_employment']


def test_column_problems_name_table_and_column():
    """The contract's columns against the live tables, before any data moves: one line per problem."""
    import copy
    from contracts import load_contract
    from transforms.sql.checks import column_problems
    spec = json.load(open(os.path.join(ROOT, 'contracts', 'samples', 'credit_app_tables.json')))
    spec['tables']['app_contact_base']['columns'].append({'name': 'ssn_last_4', 'type': 'as', 'nullable': True})
    metas = load_table_spec(spec)
    base = json.load(open(os.path.join(ROOT, 'contracts', 'samples', 'credit_app.json')))
    assert column_problems(load_contract(base), metas) == []
    c = copy.deepcopy(base)
    ms = c['mappings']
    first = next(m for m in ms if m['target_table'] == 'app_contact_base' and m['target_column'] == 'first_name')
    first['data_length'] = 5000
    email = next(m for m in ms if m['target_column'] == 'email')
    email['target_column'] = 'nope'
    ssn = next(m for m in ms if m['target_column'] == 'ssn')
    ssn['target_column'] = 'ssn_last_4'
    phone = next(m for m in ms if m['target_column'] == 'home_phone')
    phone['data_type'] = 'datetime'
    probs = column_problems(load_contract(c), metas)
    assert 'app_contact_base.nope: column not found in the target table' in probs
    assert 'app_contact_base.ssn_last_4: is a computed column in the target table' in probs
    assert any(p.startswith('app_contact_base.first_name: data_length 5000 but the column is varchar(') for p in probs)
    assert any(p.startswith('app_contact_base.home_phone: the contract writes datetime values into a') for p in probs)


def test_introspection_sqlite_matches_spec(tmp_path):
    d = DB('sqlite', tmp_path)
    metas = d.create()
    cb = metas['app_contact_base']
    assert cb.primary_key == ['con_id'] and cb.identity_columns == ['con_id'] and cb.owner_column == 'app_id'
    assert [fk.references for fk in cb.foreign_keys] == ['app_base']
    assert not cb.column('first_name').nullable and cb.column('ssn_last_4') is None
    assert fk_tiers(metas, TABLES) == [['app_base'], ['app_contact_base'], ['app_contact_address']]
    from transforms.sql.introspect import introspect
    with pytest.raises(MetaError, match='not found.*nope'):
        introspect(d.target.connect(), 'sqlite', None, ['app_base', 'nope'])


class E(Exception):
    pass


@pytest.mark.parametrize('args,kind', [
    (('08S01', '[08S01] connection lost'), TRANSIENT), (('57P01', 'terminating connection'), TRANSIENT),
    (('40001', '[40001] ... deadlock victim ... (1205)'), TRANSIENT), (('40P01', 'deadlock detected'), TRANSIENT),
    (('HYT00', 'Login timeout expired'), TRANSIENT), (('22001', 'value too long'), DATA),
    (('23505', 'duplicate key'), DATA), (('23000', 'String or binary data would be truncated (2628)'), DATA),
    (('42P01', 'relation "x" does not exist'), FATAL), (('42S02', "Invalid object name 'x'"), FATAL),
])
def test_error_classification(args, kind):
    assert get_dialect('postgresql').classify(E(*args)) == kind
    assert get_dialect('mssql').classify(E(*args)) == kind


def test_sqlite_classification():
    d = get_dialect('sqlite')
    assert d.classify(sqlite3.OperationalError('database is locked')) == TRANSIENT
    assert d.classify(sqlite3.IntegrityError('CHECK constraint failed: x')) == DATA
    assert d.classify(sqlite3.OperationalError('no such table: x')) == FATAL


def test_messages_are_scrubbed_of_values_and_passwords():
    pg = ('[23505] ERROR: duplicate key value violates unique constraint "t_pkey"\nDETAIL: Key (ssn)=(123456789) '
          'already exists.;\nError while executing the query (1) (SQLExecDirectW)')
    s = scrub_message(pg)
    assert '123456789' not in s and 't_pkey' in s
    ms = ("[22001] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]String or binary data would be truncated "
          "in table 'db.migration.app_base', column 'ip_address'. Truncated value: 'Jane Secret'. (2628)")
    s = scrub_message(ms)
    assert 'Jane Secret' not in s and 'ip_address' in s
    s = scrub_message("Conversion failed when converting the varchar value 'abc123' to data type int. (245)")
    assert 'abc123' not in s
    s = scrub_message('ERROR: invalid input syntax for type integer: "42x"')
    assert '42x' not in s
    s = scrub_message('login failed Pwd=hunter2;Server=x', secrets=['hunter2'])
    assert 'hunter2' not in s


def test_parse_target(monkeypatch):
    monkeypatch.setenv('XPW', 's3cr;et')
    t = parse_target('odbc:Driver={ODBC Driver 18 for SQL Server};Server=db;Uid=u;Pwd={${XPW}}')
    assert t.dialect_name == 'mssql' and 's3cr' not in t.display and 'Pwd=***' in t.display
    assert parse_target('odbc:Driver={PostgreSQL Unicode};Server=x;Pwd=p').dialect_name == 'postgresql'
    assert parse_target('odbc:Driver={SQLite3};Database=/tmp/x.db').dialect_name == 'sqlite'
    assert parse_target('odbc:DSN=foo', dialect='mssql').dialect_name == 'mssql'
    assert parse_target('sqlite:///out/app.db').sqlite_path == 'out/app.db'
    assert parse_target('sqlite:////tmp/app.db').sqlite_path == '/tmp/app.db'
    with pytest.raises(TargetError, match='UNSET_VAR_X'):
        parse_target('odbc:Driver={PostgreSQL Unicode};Pwd=${UNSET_VAR_X}')
    with pytest.raises(TargetError, match='cannot tell the SQL dialect'):
        parse_target('odbc:DSN=foo')


def test_connect_errors_hide_password():
    t = parse_target('odbc:Driver={NoSuchDriverXYZ};Server=127.0.0.1;Uid=u;Pwd=TopSecret1', dialect='mssql')
    with pytest.raises(TargetError) as ei:
        t.connect()
    assert 'ODBC driver not found' in str(ei.value) and 'TopSecret1' not in str(ei.value)


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason='XMLSQL_TEST_PG is not set: PostgreSQL tests skipped')
def test_pg_connect_errors_hide_password():
    bad = PG_URL.replace('Pwd=', 'Pwd=WrongSecret9')
    with pytest.raises(TargetError) as ei:
        parse_target(bad).connect()
    assert 'login failed' in str(ei.value) and 'WrongSecret9' not in str(ei.value)
    closed = PG_URL.replace('Port=5432', 'Port=5499')
    with pytest.raises(TargetError) as ei:
        parse_target(closed).connect(timeout=3)
    assert 'server unreachable' in str(ei.value)
    pw = [p.split('=', 1)[1] for p in closed.split(';') if p.lower().startswith('pwd=')][0]
    assert pw not in str(ei.value)


# ------------------------------------------------------------------ ledger, dead letters, resume, upgrade (T-SQL)

def _tsql(text):
    """Every statement of `text` parsed by sqlglot's T-SQL dialect (raises on a syntax error)."""
    return [s for s in sqlglot.parse(text, read='tsql') if s is not None]


def test_tsql_ledger_and_dead_letter_upserts_parse_and_match_golden():
    """processing_log is upserted on its unique app_id, dead_letter on its unique doc_key with attempts added."""
    from transforms.sql.ddl import project_metas
    from transforms.sink import DEAD_LETTER_COLUMNS, LEDGER_COLUMNS, keyed_view
    d = get_dialect('mssql')
    metas = project_metas('migration')
    ledger = d.upsert_script(keyed_view(metas['processing_log'], LEDGER_COLUMNS, 'app_id'), list(LEDGER_COLUMNS),
                             owner_check=False)
    dead = d.upsert_script(keyed_view(metas['dead_letter'], DEAD_LETTER_COLUMNS, 'doc_key'),
                           list(DEAD_LETTER_COLUMNS), increments=('attempts',), owner_check=False)
    golden('mssql_upsert_processing_log.sql', ledger)
    golden('mssql_upsert_dead_letter.sql', dead)
    for text, key in ((ledger, 'app_id'), (dead, 'doc_key')):
        merge = [s for s in _tsql(text) if isinstance(s, exp.Merge)]
        assert len(merge) == 1
        assert f'ON tgt.[{key}] = src.[{key}]' in text
        assert 'IDENTITY_INSERT' not in text and 'log_id' not in text and '[id]' not in text
    assert 'tgt.[attempts] = tgt.[attempts] + src.[attempts]' in dead
    assert 'WHEN MATCHED THEN UPDATE SET' in ledger            # no owner condition on the project's own tables
    assert 'created_at' not in dead                            # first seen: set on insert only, by its default


def test_tsql_resume_page_reads_hashes_first_then_the_xml():
    from transforms.io.sources import ReadOptions
    from transforms.io.tables import TableSpec, _Query
    q = _Query(TableSpec('odbc:x', 'app_xml', 'xml', 'migration'), get_dialect('mssql'),
               ReadOptions(shard_count=2, shard_index=1))
    keys, keys_params = q.page(100, 900, 50, xml=False)
    hashes, hashes_params = q.hashes([101, 102])
    fetch, fetch_params = q.fetch([101, 105, 106])
    text = keys + ';\n' + hashes + ';\n' + fetch + ';\n'
    golden('mssql_source_page_resume.sql', text)
    for st in _tsql(text):
        assert isinstance(st, exp.Select)
    assert keys.startswith('SELECT TOP (50) [app_id] FROM') and 'HASHBYTES' not in keys and '[xml]' not in keys
    assert hashes.startswith("SELECT [app_id], LOWER(CONVERT(varchar(64), HASHBYTES('SHA2_256', CAST([xml] AS "
                             "nvarchar(max))), 2)) FROM")
    assert keys.count('?') == len(keys_params) and hashes.count('?') == len(hashes_params) == 4
    assert fetch.count('?') == len(fetch_params) == 5
    assert fetch.endswith('ORDER BY [app_id]') and 'HASHBYTES' in fetch and '[xml] FROM' in fetch


def test_tsql_upgrade_and_replace_statements_parse_and_match_golden():
    """What `create-tables` runs on a target an earlier version created, and the DELETEs that replace the rows of
    re-migrated documents (children first)."""
    from transforms.sql.ddl import project_index_statements
    from transforms.sql.meta import ColumnMeta
    from transforms.sql.upgrade import add_column_sql, dead_letter_backfill_sql, dedupe_processing_log_sql
    from transforms.sink import delete_plan
    d = get_dialect('mssql')
    stmts = [add_column_sql(d, 'processing_log', ColumnMeta('content_hash', 'varchar(64)'), 'migration') + ';',
             add_column_sql(d, 'dead_letter', ColumnMeta('attempts', 'int', False, default='(1)'), 'migration') + ';',
             dedupe_processing_log_sql(d, 'migration') + ';']
    stmts += [s + ';' for s in dead_letter_backfill_sql(d, 'migration', 3)]
    stmts += project_index_statements(d, 'processing_log', 'migration')
    stmts += project_index_statements(d, 'dead_letter', 'migration')
    metas = load_table_spec(SPEC, 'migration')
    tiers = fk_tiers(metas, TABLES)
    stmts += [sql + ';' for _, sql in delete_plan(metas, tiers, 'mssql', n_ids=3)]
    text = '\n'.join(stmts) + '\n'
    golden('mssql_upgrade_and_replace.sql', text)
    parsed = [p for st in stmts for p in _tsql(st)]
    assert len(parsed) >= len(stmts)
    assert 'ALTER TABLE [migration].[dead_letter] ADD [attempts] int NOT NULL DEFAULT 1;' in text
    assert 'CREATE UNIQUE INDEX [ux_processing_log_app_id] ON [migration].[processing_log] ([app_id])' in text
    order = [t for t, _ in delete_plan(metas, tiers, 'mssql')]
    assert order == ['app_contact_address', 'app_contact_base', 'app_base']       # children first
    assert 'WHERE [app_id] IN (?, ?, ?)' in text


def test_content_hash_sql_matches_python_on_sqlite_and_in_text():
    from transforms.sql.targets import sha256_hex
    t = parse_target('sqlite:///:memory:')
    conn = t.connect()
    doc = '<Provenir>é\u20ac</Provenir>'
    q = get_dialect('sqlite').content_hash_sql('?')
    assert conn.execute(f'SELECT {q}', (doc,)).fetchone()[0] == sha256_hex(doc) == sha256_hex(doc.encode('utf-8'))
    assert conn.execute(f'SELECT {q}', (None,)).fetchone()[0] is None
    conn.close()
    assert get_dialect('postgresql').content_hash_sql('"xml"') == \
        "encode(sha256(convert_to(CAST(\"xml\" AS text), 'UTF8')), 'hex')"


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason='XMLSQL_TEST_PG is not set: PostgreSQL tests skipped')
def test_content_hash_sql_matches_python_on_postgres():
    from transforms.sql.targets import sha256_hex
    conn = parse_target(PG_URL).connect()
    try:
        cur = conn.cursor()
        doc = '<Provenir>é\u20ac ' + 'x' * 5000 + '</Provenir>'
        cur.execute(f"SELECT {get_dialect('postgresql').content_hash_sql('CAST(? AS text)')}", (doc,))
        assert cur.fetchone()[0] == sha256_hex(doc)
    finally:
        conn.close()


@pytest.mark.parametrize('col,value,problem', [
    (('con_id', 'int'), 3_000_000_000, 'value out of range for int'),
    (('con_id', 'int'), -2 ** 31, None),
    (('con_id', 'INTEGER'), 3_000_000_000, None),                          # SQLite's own 64-bit INTEGER
    (('con_id', 'INTEGER'), 12345678901234567890, 'value out of range for integer (64-bit)'),
    (('n', 'smallint'), 40000, 'value out of range for smallint'),
    (('n', 'tinyint'), -1, 'value out of range for tinyint'),
    (('n', 'bigint'), 2 ** 63, 'value out of range for bigint'),
    (('f', 'bit'), 2, 'value out of range for bit (0 or 1)'),
    (('f', 'bit'), True, None),
    (('a', 'decimal(5,2)'), 1000.0, 'value out of range for decimal(5,2)'),
    (('a', 'numeric(5,2)'), 999.99, None),
    (('s', 'varchar(3)'), 'abcd', 'value longer than varchar(3) allows'),
    (('s', 'varchar(max)'), 'a' * 10000, None),
    (('s', 'varchar(3)'), 12345678901234567890, 'value out of range for a 64-bit integer'),
    (('d', 'datetime2(7)'), 'x', None),
    (('i', 'int'), 'not a number', None),          # left to the database (a conversion error, isolated there)
])
def test_value_checks_name_the_problem_never_the_value(col, value, problem):
    from transforms.sql.meta import ColumnMeta
    from transforms.sql.values import column_check
    chk = column_check(ColumnMeta(*col), 'sqlite')
    got = chk(value) if chk else None
    assert got == problem
    if got:
        assert str(value) not in got
