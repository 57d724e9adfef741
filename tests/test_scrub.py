"""Row values and passwords never leave the database's messages (SPEC §10.9): the scrubber over a table of
message shapes (PostgreSQL/psqlODBC, SQL Server, SQLite), real messages produced by a real PostgreSQL and a real
SQLite, and a poison document run through `python -m pipeline run` whose value must not reach stdout, stderr,
the metrics and summary JSON, processing_log or the dead letter's reason."""
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid

import pytest

from transforms.sql.dialects import HIDDEN, get_dialect, scrub_message
from transforms.sql.targets import mask_password, parse_target
from contracts.samples.generate import generate_documents

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG = os.environ.get('XMLSQL_TEST_PG')

# (message, secrets, values that must be gone, text that must stay)
CASES = [
    # PostgreSQL through psqlODBC, as pyodbc reports them
    ('[22003] ERROR: value "3000000000" is out of range for type integer;\nError while executing the query (1) '
     '(SQLExecDirectW)', (), ['3000000000'], ['[22003]', 'out of range for type integer']),
    ('[22P02] ERROR: invalid input syntax for type integer: "4a2x";\nError while executing the query (1) '
     '(SQLExecDirectW)', (), ['4a2x'], ['invalid input syntax for type integer']),
    ('[22P02] ERROR: invalid input syntax for type integer: "Jane "the" Doe\nline two";\nError while executing '
     'the query (1) (SQLExecDirectW)', (), ['Jane', 'the" Doe', 'line two'], ['type integer']),
    ('[22008] ERROR: date/time field value out of range: "2020-13-45";\nError while executing the query (1) '
     '(SQLExecDirectW)', (), ['2020-13-45'], ['date/time field value out of range']),
    ('[22P02] ERROR: invalid input value for enum mood: "furious";\n', (), ['furious'], ['enum mood']),
    ('[22001] ERROR: value too long for type character varying(5);\nError while executing the query (1) '
     '(SQLExecDirectW)', (), [], ['value too long for type character varying(5)']),
    ('[22003] ERROR: numeric field overflow\nDETAIL: A field with precision 5, scale 2 must round to an absolute '
     'value less than 10^3.;\nError while executing the query (1) (SQLExecDirectW)', (), ['10^3'],
     ['numeric field overflow']),
    ('[22021] ERROR: invalid byte sequence for encoding "UTF8": 0xc3 0x28;\nError while executing the query (1) '
     '(SQLExecDirectW)', (), ['0xc3', '0x28'], ['encoding "UTF8"']),
    ('[23505] ERROR: duplicate key value violates unique constraint "t_pkey"\nDETAIL: Key (ssn)=(123456789) '
     'already exists.;\nError while executing the query (1) (SQLExecDirectW)', (), ['123456789'],
     ['unique constraint "t_pkey"']),
    ('[23503] ERROR: insert or update on table "t" violates foreign key constraint "t_fk_fkey"\nDETAIL: Key '
     '(fk)=(424242) is not present in table "p".;\n', (), ['424242'], ['foreign key constraint "t_fk_fkey"']),
    ('[23514] ERROR: new row for relation "t" violates check constraint "t_ck_check"\nDETAIL: Failing row '
     'contains (2, Jane, 777).;\n', (), ['Jane', '777'], ['check constraint "t_ck_check"', 'relation "t"']),
    ('[23502] ERROR: null value in column "nn" of relation "t" violates not-null constraint\nDETAIL: Failing row '
     'contains (2, null, Jane\nDoe, null).;\n', (), ['Jane', 'Doe'], ['column "nn" of relation "t"']),
    ('[22P02] ERROR: invalid input syntax for type json\nDETAIL: Token "Jane" is invalid.\nCONTEXT: JSON data, '
     'line 1: Jane...;\n', (), ['Jane'], ['type json']),
    ('ERROR: invalid value "31" for "MM"', (), ['31'], ['invalid value']),
    ('ERROR: syntax error\nCONTEXT: unnamed portal parameter $3 = \'Jane Doe\'', (), ['Jane'], ['syntax error']),
    # SQL Server (ODBC Driver 18), as pyodbc reports them
    ("[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Violation of PRIMARY KEY constraint "
     "'PK_app_base'. Cannot insert duplicate key in object 'dbo.app_base'. The duplicate key value is (12345). "
     "(2627) (SQLExecDirectW); [01000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]The statement has "
     "been terminated. (3621)", (), ['12345'], ["constraint 'PK_app_base'", "object 'dbo.app_base'",
                                               'statement has been terminated']),
    ("[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Cannot insert duplicate key row in object "
     "'dbo.t' with unique index 'ix_t'. The duplicate key value is (Jane (x), 7). (2601) (SQLExecDirectW)", (),
     ['Jane', '7)'], ["unique index 'ix_t'"]),
    ("[22001] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]String or binary data would be truncated in "
     "table 'db.migration.app_base', column 'ip_address'. Truncated value: 'Jane's Secret'. (2628) "
     "(SQLExecDirectW)", (), ['Jane', 'Secret'], ["column 'ip_address'", "table 'db.migration.app_base'"]),
    ("[22001] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]String or binary data would be truncated. "
     "(8152) (SQLExecDirectW)", (), [], ['would be truncated']),
    ("[22018] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Conversion failed when converting the "
     "nvarchar value 'abc123' to data type int. (245) (SQLExecDirectW)", (), ['abc123'], ['to data type int']),
    ("[22003] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]The conversion of the varchar value "
     "'3000000000' overflowed an int column. (248) (SQLExecDirectW)", (), ['3000000000'], ['overflowed an int']),
    ("[22003] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Arithmetic overflow error for data type "
     "tinyint, value = 300. (220) (SQLExecDirectW)", (), ['300'], ['data type tinyint']),
    ("[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Error converting data type nvarchar to "
     "numeric. (8114) (SQLExecDirectW)", (), [], ['Error converting data type nvarchar to numeric']),
    ("[22007] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Conversion failed when converting date "
     "and/or time from character string. (241) (SQLExecDirectW)", (), [], ['from character string']),
    ('[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]The INSERT statement conflicted with the '
     'FOREIGN KEY constraint "FK_c_base". The conflict occurred in database "db", table "dbo.app_base", column '
     "'app_id'. (547) (SQLExecDirectW)", (), [], ['constraint "FK_c_base"', 'table "dbo.app_base"',
                                                 "column 'app_id'"]),
    # SQLite (their messages carry no values: nothing is lost)
    ('CHECK constraint failed: length("first_name") <= 10', (), [], ['length("first_name") <= 10']),
    ('UNIQUE constraint failed: app_contact_base.con_id', (), [], ['app_contact_base.con_id']),
    ('FOREIGN KEY constraint failed', (), [], ['FOREIGN KEY constraint failed']),
    ('datatype mismatch', (), [], ['datatype mismatch']),
    ('Python int too large to convert to SQLite INTEGER', (), [], ['Python int too large']),
    # passwords
    ('connection failed for postgresql://bob:hunter2@db.example.com:5432/app', (), ['hunter2'],
     ['postgresql://bob:***@db.example.com:5432/app']),
    ('login failed Pwd=hunter2;Server=x', ('hunter2',), ['hunter2'], ['Server=x']),
    ('bad Driver={X};Uid=u;Pwd={se;cr}}et};Server=x', (), ['se;cr', 'et}'], ['Server=x', 'Uid=u']),
    ('password=s3cret host=db port=5432', (), ['s3cret'], ['host=db port=5432']),
    ('cannot connect to odbc:Driver={X};Uid=u;Pwd=***: login failed', (), [], ['Pwd=***: login failed']),
    ('expected 3 columns, got x; the text around x stays', ('x',), [' x '], ['expected 3 columns', 'stays']),
    ('[08001] connection to server at "127.0.0.1", port 5499 failed: Connection refused\n\tIs the server running '
     'on that host and accepting TCP/IP connections?\n (101) (SQLDriverConnect)', (), [],
     ['Connection refused', '"127.0.0.1"', 'port 5499']),
    ('[08001] FATAL: password authentication failed for user "xmlsql"', (), [], ['user "xmlsql"']),
    ("[01000] [unixODBC][Driver Manager]Can't open lib 'NoSuchDriverXYZ' : file not found (0) "
     "(SQLDriverConnect)", (), [], ["Can't open lib 'NoSuchDriverXYZ'"]),
]


@pytest.mark.parametrize('msg, secrets, gone, kept', CASES, ids=[f'case{i}' for i in range(len(CASES))])
def test_scrubber_table(msg, secrets, gone, kept):
    out = scrub_message(msg, secrets)
    assert '\n' not in out and out == out.strip()
    for v in gone:
        assert v not in out, (v, out)
    for k in kept:
        assert k in out, (k, out)
    assert scrub_message(out, secrets) == out           # scrubbing what is scrubbed changes nothing


def test_a_short_password_is_masked_only_where_it_stands_alone():
    t = parse_target('odbc:Driver={PostgreSQL Unicode};Server=db;Uid=u;Pwd=x')
    assert t.scrub('expected a value, got x (index x1, box)') == 'expected a value, got *** (index x1, box)'
    assert t.scrub(RuntimeError('Pwd=x; user x')) == 'Pwd=***; user ***'
    assert 'x' not in mask_password('odbc:Driver={PostgreSQL Unicode};Server=db;Uid=u;Pwd=x').split('Pwd=')[1]
    assert mask_password('postgresql://bob:pw@host/db') == 'postgresql://bob:***@host/db'


# ------------------------------------------------------------------------------------------ real messages

SECRETS = ['3000000000', 'SECRETABC', 'SECRETLONGVALUE', '123456.78', '2020-13-45', 'SECRETBOOL', 'SECRETROW',
           '424242', 'SECRETU1', '70000', '99999999999999999999', 'SECRETDATE']


def _values_gone(msg):
    return [v for v in SECRETS if v in msg]


@pytest.mark.postgres
@pytest.mark.skipif(not PG, reason='XMLSQL_TEST_PG is not set: no PostgreSQL server (.ci/run starts one)')
def test_real_postgres_messages_lose_their_values():
    import pyodbc
    schema = 'scrub_' + uuid.uuid4().hex[:8]
    conn = pyodbc.connect(PG[len('odbc:'):], autocommit=True)
    target = parse_target(PG)
    try:
        conn.execute(f'CREATE SCHEMA {schema}')
        conn.execute(f'CREATE TABLE {schema}.p (id integer PRIMARY KEY)')
        conn.execute(f'CREATE TABLE {schema}.t (id integer PRIMARY KEY, n integer, s varchar(5), d numeric(5,2), '
                     'dt date, b boolean, nn text NOT NULL, ck integer CHECK (ck < 10), '
                     f'fk integer REFERENCES {schema}.p(id), u text UNIQUE, sm smallint, bi bigint)')
        conn.execute(f"INSERT INTO {schema}.p VALUES (1)")
        conn.execute(f"INSERT INTO {schema}.t (id, nn, u, fk) VALUES (1, 'SECRETROW', 'SECRETU1', 1)")
        t = f'{schema}.t'
        cases = [  # (sql, params, SQLSTATE, text kept)
            (f"INSERT INTO {t} (id, n, nn) VALUES (2, ?, 'x')", [3000000000], '22003', 'out of range'),
            (f"SELECT id FROM {t} WHERE n IN (?)", [3000000000], '22003', 'out of range'),
            (f"INSERT INTO {t} (id, n, nn) VALUES (2, ?, 'x')", ['SECRETABC'], '22P02', 'type integer'),
            (f"INSERT INTO {t} (id, s, nn) VALUES (2, ?, 'x')", ['SECRETLONGVALUE'], '22001', 'varying(5)'),
            (f"INSERT INTO {t} (id, d, nn) VALUES (2, ?, 'x')", [123456.78], '22003', 'numeric field overflow'),
            (f"INSERT INTO {t} (id, dt, nn) VALUES (2, ?, 'x')", ['2020-13-45'], '22008', 'out of range'),
            (f"INSERT INTO {t} (id, dt, nn) VALUES (2, ?, 'x')", ['SECRETDATE'], '22007', 'type date'),
            (f"INSERT INTO {t} (id, b, nn) VALUES (2, ?, 'x')", ['SECRETBOOL'], '22P02', 'type boolean'),
            (f"INSERT INTO {t} (id, nn) VALUES (2, ?)", [None], '23502', 'column "nn"'),
            (f"INSERT INTO {t} (id, ck, nn) VALUES (2, ?, 'SECRETROW')", [777], '23514', 'check constraint'),
            (f"INSERT INTO {t} (id, fk, nn) VALUES (2, ?, 'x')", [424242], '23503', 'foreign key constraint'),
            (f"INSERT INTO {t} (id, u, nn) VALUES (2, ?, 'x')", ['SECRETU1'], '23505', 'unique constraint'),
            (f"INSERT INTO {t} (id, sm, nn) VALUES (2, ?, 'x')", [70000], '22003', 'type smallint'),
            (f"INSERT INTO {t} (id, bi, nn) VALUES (2, ?, 'x')", ['99999999999999999999'], '22003', 'type bigint'),
            (f"INSERT INTO {t} (id, nn) VALUES (2, convert_from(?::bytea, 'UTF8'))", [b'\xc3\x28'], '22021',
             'encoding "UTF8"'),
            (f"DELETE FROM {schema}.p WHERE id = ?", [1], '23503', 'foreign key constraint'),
        ]
        for sql, params, state, kept in cases:
            with pytest.raises(pyodbc.Error) as ei:
                conn.execute(sql, params)
            raw = str(ei.value.args[1])
            assert ei.value.args[0] == state, raw
            for msg in (target.scrub(ei.value), get_dialect('postgresql').sanitize(ei.value)):
                assert not _values_gone(msg) and '0xc3' not in msg and 'Key (' not in msg, (raw, msg)
                assert msg.startswith(f'[{state}]') and kept in msg, (raw, msg)
    finally:
        conn.execute(f'DROP SCHEMA IF EXISTS {schema} CASCADE')
        conn.close()


def test_real_sqlite_messages_lose_nothing_and_show_no_value(tmp_path):
    conn = sqlite3.connect(str(tmp_path / 'x.db'))
    conn.execute('PRAGMA foreign_keys = ON')
    conn.execute('CREATE TABLE p (id INTEGER PRIMARY KEY)')
    conn.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, s varchar(5) CHECK (length("s") <= 5), '
                 'nn text NOT NULL, u text UNIQUE, fk integer REFERENCES p(id), ck integer CHECK (ck < 10))')
    conn.execute("INSERT INTO t (id, nn, u) VALUES (1, 'x', 'SECRETU1')")
    cases = [("INSERT INTO t (id, s, nn) VALUES (2, ?, 'x')", ['SECRETLONGVALUE'], 'CHECK constraint failed'),
             ("INSERT INTO t (id, nn) VALUES (2, ?)", [None], 'NOT NULL constraint failed: t.nn'),
             ("INSERT INTO t (id, u, nn) VALUES (2, ?, 'x')", ['SECRETU1'], 'UNIQUE constraint failed: t.u'),
             ("INSERT INTO t (id, fk, nn) VALUES (2, ?, 'x')", [424242], 'FOREIGN KEY constraint failed'),
             ("INSERT INTO t (id, ck, nn) VALUES (2, ?, 'SECRETROW')", [777], 'CHECK constraint failed'),
             ("INSERT INTO t (id, nn) VALUES (?, 'x')", ['SECRETABC'], 'datatype mismatch'),
             ("INSERT INTO t (id, ck, nn) VALUES (3, ?, 'x')", [10 ** 20], 'Python int too large')]
    d = get_dialect('sqlite')
    for sql, params, kept in cases:
        with pytest.raises(Exception) as ei:
            conn.execute(sql, params)
        msg = d.sanitize(ei.value)
        assert not _values_gone(msg) and '777' not in msg and kept in msg, (str(ei.value), msg)
    conn.close()


# ------------------------------------------------------------------------------ a poison value, end to end

def _poison_source(tmp_path, con_id):
    """A SQLite source of 12 good documents; one of them has a contact whose con_id is `con_id`."""
    docs = list(generate_documents(12, seed=8, broken_fraction=0.0))
    i = next(i for i, (_, x) in enumerate(docs) if re.search(r'con_id="\d+"', x))
    docs[i] = (docs[i][0], re.sub(r'con_id="\d+"', f'con_id="{con_id}"', docs[i][1], count=1))
    src = str(tmp_path / 'src.db')
    c = sqlite3.connect(src)
    c.execute('CREATE TABLE app_xml (app_id INTEGER PRIMARY KEY, xml TEXT)')
    c.executemany('INSERT INTO app_xml VALUES (?, ?)', docs)
    c.commit()
    c.close()
    return src


def _assert_value_nowhere(value, run, tmp_path, reasons):
    files = [tmp_path / 'm.json', tmp_path / 's.json']
    seen = run.stdout + run.stderr + ''.join(f.read_text() for f in files if f.exists()) + ''.join(reasons)
    assert value not in seen, [ln for ln in seen.splitlines() if value in ln][:5]
    assert 'Traceback' not in run.stderr


@pytest.mark.postgres
@pytest.mark.skipif(not PG, reason='XMLSQL_TEST_PG is not set: no PostgreSQL server (.ci/run starts one)')
def test_out_of_range_con_id_does_not_leak_through_a_postgres_run(tmp_path):
    """con_id="3000000000" into PostgreSQL's integer column: whatever the run does with the document, the
    value appears in no output (only in the dead letter's payload, the original document)."""
    import pyodbc
    schema = 'scrubrun_' + uuid.uuid4().hex[:8]
    conn = pyodbc.connect(PG[len('odbc:'):], autocommit=True)
    conn.execute(f'CREATE SCHEMA {schema}')
    try:
        c = json.load(open(os.path.join(ROOT, 'contracts', 'samples', 'credit_app.json')))
        c['target_schema'] = schema
        (tmp_path / 'c.json').write_text(json.dumps(c))
        src = _poison_source(tmp_path, '3000000000')
        run = subprocess.run([sys.executable, '-m', 'pipeline', 'run', '--contract', str(tmp_path / 'c.json'),
                              '--source', f'sqlite:///{src}', '--target', PG, '--tables', 'credit_app_tables',
                              '--create-tables', '--metrics-json', str(tmp_path / 'm.json'),
                              '--summary-json', str(tmp_path / 's.json')],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
        reasons = [r[0] or '' for r in conn.execute(f'SELECT failure_reason FROM {schema}.processing_log')]
        reasons += [r[0] or '' for r in conn.execute(f'SELECT reason FROM {schema}.dead_letter')]
        _assert_value_nowhere('3000000000', run, tmp_path, reasons)
        assert 'out of range' in run.stderr + ''.join(reasons), run.stderr[-2000:]
    finally:
        conn.execute(f'DROP SCHEMA {schema} CASCADE')
        conn.close()


def test_twenty_digit_con_id_does_not_leak_through_a_sqlite_run(tmp_path):
    value = '98765432109876543210'
    src = _poison_source(tmp_path, value)
    db = str(tmp_path / 't.db')
    run = subprocess.run([sys.executable, '-m', 'pipeline', 'run', '--contract', 'credit_app', '--source',
                          f'sqlite:///{src}', '--target', f'sqlite:///{db}', '--tables', 'credit_app_tables',
                          '--create-tables', '--metrics-json', str(tmp_path / 'm.json'),
                          '--summary-json', str(tmp_path / 's.json')],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    c = sqlite3.connect(db)
    reasons = [r[0] or '' for r in c.execute('SELECT failure_reason FROM processing_log')]
    reasons += [r[0] or '' for r in c.execute('SELECT reason FROM dead_letter')]
    c.close()
    _assert_value_nowhere(value, run, tmp_path, reasons)
    # the sink's check of values against the column types names the column (SQLite's own message, 'Python int
    # too large to convert to SQLite INTEGER', is the fallback when that check is off)
    assert 'app_contact_base.con_id: value out of range' in ''.join(reasons), run.stderr[-2000:]
