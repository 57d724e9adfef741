"""Three SQL dialects behind one small interface: sqlite, postgresql, mssql.

Every identifier that reaches SQL text comes from the contract / table spec / introspection and is validated
against SAFE_IDENTIFIER before it is quoted; every value is a bound parameter (never formatted into SQL).

Interface (`Dialect`):
  quote(ident) / qualify(table, schema)         validated, quoted identifiers
  column_type(ColumnMeta) / default_sql(text)    DDL type and default from the SQL Server spelling of the spec
  upsert(cur, meta, columns, rows, increments, owner_check)
                                                 write rows (tuples in `columns` order) as an upsert on the pk;
                                                 `increments` columns add to the stored value on update
  select_owners(cur, meta, keys)                 {key tuple: app_id} of keys already in the table
  classify(exc) -> 'transient' | 'data' | 'fatal'
  sanitize(message)                              database message without row values (and passwords)
  introspect_table(conn, schema, table)          TableMeta of the live table or None
  content_hash_sql(expr)                         SQL for the sha256 hex of a document column (resume, processing_log)
  has_unique_index(conn, schema, table, column)  is there a unique index/constraint on exactly that column
"""
import datetime
import decimal
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pipeline.db.meta import ColumnMeta, ForeignKey, TableMeta

SAFE_IDENTIFIER = re.compile(r'^[A-Za-z_][A-Za-z0-9_]{0,62}$')
TYPE_RE = re.compile(r'^\s*([A-Za-z][A-Za-z0-9 ]*?)\s*(?:\(\s*([^)]*)\))?\s*$')

TRANSIENT, DATA, FATAL = 'transient', 'data', 'fatal'


class DialectError(Exception):
    """Unsafe identifier, unknown type or dialect: a programming/contract error, never a data error."""


def parse_type(typ: str) -> Tuple[str, List[str]]:
    m = TYPE_RE.match(typ or '')
    if not m:
        raise DialectError(f'unsupported column type {typ!r}')
    base = ' '.join(m.group(1).lower().split())
    args = [a.strip().lower() for a in m.group(2).split(',')] if m.group(2) else []
    return base, args


def _int_arg(typ, args, i, default=None):
    try:
        return int(args[i])
    except (IndexError, ValueError):
        if default is not None:
            return default
        raise DialectError(f'column type {typ!r}: expected a number') from None


# ------------------------------------------------------------------------------------------ error messages

# Scrubbing: database and driver messages lose every row value and every password before they reach a log, the
# ledger, the dead letter's reason or a metrics file (SPEC §10.9). Shapes audited (tests/test_scrub.py):
#   PostgreSQL (psqlODBC): value "…" is out of range for type T; invalid input syntax for type T: "…";
#     date/time field value out of range: "…"; invalid input value for enum E: "…"; invalid byte sequence for
#     encoding "UTF8": 0x..; DETAIL: Key (…)=(…) … / Failing row contains (…) / Token "…" is invalid;
#     CONTEXT: … (JSON data, parameters $n = '…'); value too long for type character varying(N) (no value);
#     numeric field overflow (its value is only in the DETAIL).
#   SQL Server: The duplicate key value is (…) (2627, 2601); Truncated value: '…' (2628); converting the
#     varchar value '…' to data type … (245); The conversion of the varchar value '…' overflowed … (248);
#     Arithmetic overflow error for data type T, value = N (220); 8152, 8114, 241, 547, 515 carry no value.
#   SQLite: CHECK / UNIQUE / NOT NULL / FOREIGN KEY constraint failed: <constraint, table.column or check
#     expression>, datatype mismatch, Python int too large to convert to SQLite INTEGER: no values.
# Rules: the DETAIL and CONTEXT parts of a PostgreSQL message are dropped whole; the known value slots are
# replaced greedily (a value may itself contain quotes or newlines); then every remaining quoted token is hidden
# unless the word before it says it is a name (column "x", constraint 'y', relation "z", ...).

HIDDEN = '<hidden>'
_NAME_WORDS = (r'relation|table|column|columns|constraint|index|schema|type|encoding|database|role|user|sequence|'
               r'view|function|procedure|operator|domain|trigger|extension|cursor|statement|savepoint|portal|'
               r'collation|tablespace|object|login|lib|driver|file|server|host|name|at|dsn|parameter|attribute|'
               r'running')
_RECORDS = re.compile(r';\s*(?=\[[0-9A-Z]{5}\])')           # pyodbc joins diagnostic records with '; '
_STATE = re.compile(r'^\s*(\[[0-9A-Z]{5}\])\s*')
_ODBC_TAIL = re.compile(r'(?:\s*\(\d+\))?\s*\(SQL\w+\)\s*$')
_PG_TAIL = re.compile(r'\s*;?\s*\n?\s*Error while executing the query\s*$')
_PG_EXTRA = re.compile(r'\s*\b(?:DETAIL|CONTEXT):.*', re.S)     # Key (..)=(..), Failing row contains (..), ...
_VALUE_SLOTS = [
    (re.compile(r'\bvalue ".*" is out of range', re.S), f'value {HIDDEN} is out of range'),          # PG 22003
    (re.compile(r'(:\s*)".*"', re.S), r'\1' + HIDDEN),       # PG: …for type T: "…", …out of range: "…", enum E: "…"
    (re.compile(r'Key \(.*?\)=\(.*\)', re.S), 'Key (...)=(...)'),
    (re.compile(r'Failing row contains \(.*\)', re.S), 'Failing row contains (...)'),
    (re.compile(r'(The duplicate key value is )\(.*\)', re.S), r'\1(...)'),                   # SQL Server 2627/2601
    (re.compile(r"(Truncated value: )'.*'", re.S), r'\1' + HIDDEN),                             # SQL Server 2628
    (re.compile(r"(convert(?:ing|ion of) the \w+ value )'.*'", re.S), r'\1' + HIDDEN),          # SQL Server 245/248
    (re.compile(r'(\bvalue\s*=\s*).*?(\.?\s*)$', re.S), r'\1' + HIDDEN + r'\2'),               # SQL Server 220
    (re.compile(r'\b0x[0-9A-Fa-f]{2}(?:\s+0x[0-9A-Fa-f]{2})*'), '0x..'),                       # byte sequences
    (re.compile(r'unnamed portal parameter \$\d+ = .*', re.S), 'unnamed portal parameter'),
]
# A quoted token, kept when a name word (or an opening parenthesis: SQLite's check expressions) is right before
# it, hidden otherwise. An apostrophe inside a word ("can't") does not open a quote.
_QUOTED = re.compile(r'(?i)(\b(?:' + _NAME_WORDS + r')\b\s*:?\s*|\()?(?<![\w\'"])("[^"\n]*"|\'[^\'\n]*\')')
_PWD_VALUE = re.compile(r'(?i)\b(pwd|password)(\s*=\s*)(\{(?:[^}]|\}\})*\}|\*\*\*|[^;\s]*)')
_URL_PASSWORD = re.compile(r'(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]*@')


def mask_secrets(s: str, secrets: Sequence[str] = ()) -> str:
    """Passwords masked: each known secret where it stands as a whole token (never inside another word, so a
    password 'x' leaves 'expected' alone), `Pwd=…`/`password=…` values, and the password of a URL
    (`postgresql://user:pw@host`)."""
    for secret in sorted({x for x in secrets if x}, key=len, reverse=True):
        s = re.sub(r'(?<![A-Za-z0-9_])' + re.escape(secret) + r'(?![A-Za-z0-9_])', '***', s)
    s = _PWD_VALUE.sub(lambda m: m.group(1) + m.group(2) + '***', s)
    return _URL_PASSWORD.sub(r'\1***@', s)


def _hide_quoted(m):
    return m.group(0) if m.group(1) else HIDDEN


def _scrub_record(rec: str) -> str:
    m = _STATE.match(rec)
    state, text = (m.group(1), rec[m.end():]) if m else ('', rec)
    text = _ODBC_TAIL.sub('', text)
    text = _PG_TAIL.sub('', text)
    text = _PG_EXTRA.sub('', text)
    for rx, rep in _VALUE_SLOTS:
        text = rx.sub(rep, text)
    text = _QUOTED.sub(_hide_quoted, text)
    text = re.sub(r'[\s;]+$', '', text)
    return f'{state} {text}' if state else text


def scrub_message(msg: str, secrets: Sequence[str] = ()) -> str:
    """A database/driver message without row values and passwords, on one line (at most 1,000 characters)."""
    s = mask_secrets(str(msg), secrets)
    s = '; '.join(r for r in (_scrub_record(rec) for rec in _RECORDS.split(s)) if r.strip())
    s = ' '.join(s.split())
    return s[:1000]


def error_state(exc: BaseException) -> Tuple[Optional[str], str]:
    """(SQLSTATE or None, message) of a DB-API exception (pyodbc puts (state, message) in args)."""
    args = getattr(exc, 'args', ())
    if len(args) >= 2 and isinstance(args[0], str) and re.match(r'^[0-9A-Z]{5}$', args[0]):
        return args[0], str(args[1])
    return None, str(exc)


_TRANSIENT_STATES = {'40001', '40P01', 'HYT00', 'HYT01', '57P01', '57P02', '57P03', '53300'}
_TRANSIENT_TEXT = re.compile(r'database (table )?is locked|database is busy|connection (has been |was )?lost|'
                             r'server closed the connection|could not receive data|could not send data|'
                             r'deadlock|\(1205\)|\(10054\)|\(10053\)|communication link failure|'
                             r'terminating connection|internal SAVEPOINT failed|no connection to the server|'
                             r'SSL SYSCALL error|connection not open', re.I)
_FATAL_TEXT = re.compile(r'no such table|no such column|has no column named|readonly database|'
                         r'unable to open database|Invalid object name|Invalid column name|'
                         r'permission denied|does not exist|'
                         r'database or disk is full|disk is full|no space left on device|could not extend file|'
                         r'disk I/O error|log file .* is full|\(1105\)|\(9002\)', re.I)


class Dialect:
    name = 'abstract'
    open_q, close_q = '"', '"'
    supports_schema = True
    max_params = 30000

    # ---- identifiers
    def check_identifier(self, ident: str) -> str:
        if not isinstance(ident, str) or not SAFE_IDENTIFIER.match(ident):
            raise DialectError(f'unsafe SQL identifier {ident!r} (allowed: {SAFE_IDENTIFIER.pattern})')
        return ident

    def quote(self, ident: str) -> str:
        return f'{self.open_q}{self.check_identifier(ident)}{self.close_q}'

    def qualify(self, table: str, schema: Optional[str] = None) -> str:
        if schema and self.supports_schema:
            return f'{self.quote(schema)}.{self.quote(table)}'
        return self.quote(table)

    def cols(self, columns: Sequence[str], prefix: str = '') -> str:
        return ', '.join(prefix + self.quote(c) for c in columns)

    # ---- types
    def column_type(self, col: ColumnMeta) -> Optional[str]:
        raise NotImplementedError

    def default_sql(self, default: Optional[str]) -> Optional[str]:
        if default is None:
            return None
        d = str(default).strip()
        while d.startswith('(') and d.endswith(')'):
            d = d[1:-1].strip()
        if re.match(r'^-?\d+(\.\d+)?$', d):
            return d
        if re.match(r"^N?'([^']|'')*'$", d):
            return d.lstrip('N')
        if d.upper() in ('GETUTCDATE()', 'SYSUTCDATETIME()'):
            return self.utcnow_sql
        if d.upper() in ('GETDATE()', 'SYSDATETIME()', 'CURRENT_TIMESTAMP'):
            return self.now_sql
        raise DialectError(f'unsupported column default {default!r}')

    utcnow_sql = now_sql = 'CURRENT_TIMESTAMP'

    # ---- values
    def adapt(self, v: Any) -> Any:
        if isinstance(v, bool):
            return int(v)
        return v

    # ---- writing
    def upsert_sql(self, meta: TableMeta, columns: Sequence[str], nrows: int = 1, increments: Sequence[str] = (),
                   owner_check: bool = True) -> str:
        raise NotImplementedError

    def upsert(self, cur, meta: TableMeta, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               increments: Sequence[str] = (), owner_check: bool = True) -> int:
        raise NotImplementedError

    # ---- documents
    def content_hash_sql(self, expr: str) -> str:
        """SQL computing the lowercase sha256 hex of a document column `expr` (already quoted) in the database,
        so that resume can compare versions without reading the XML."""
        raise NotImplementedError

    def select_owners_sql(self, meta: TableMeta, nkeys: int) -> str:
        owner = meta.owner_column
        pk = meta.primary_key
        sel = f'SELECT {self.cols(pk)}, {self.quote(owner)} FROM {self.qualify(meta.name, meta.schema)} WHERE '
        if len(pk) == 1:
            return sel + f'{self.quote(pk[0])} IN ({", ".join("?" * nkeys)})'
        one = '(' + ' AND '.join(f'{self.quote(k)} = ?' for k in pk) + ')'
        return sel + ' OR '.join([one] * nkeys)

    def select_owners(self, cur, meta: TableMeta, keys: Sequence[Tuple]) -> Dict[Tuple, Any]:
        """Which of `keys` (pk tuples) already exist, and which app_id owns each."""
        out = {}
        keys = list(keys)
        if not keys or not meta.owner_column:
            return out
        step = max(1, min(500, 2000 // len(meta.primary_key)))
        for i in range(0, len(keys), step):
            chunk = keys[i:i + step]
            cur.execute(self.select_owners_sql(meta, len(chunk)), [self.adapt(v) for k in chunk for v in k])
            for r in cur.fetchall():
                out[tuple(r[:-1])] = r[-1]
        return out

    # ---- errors
    def classify(self, exc: BaseException) -> str:
        if isinstance(exc, (OverflowError, UnicodeError)):
            return DATA          # a value the driver cannot bind ('int too big to convert'): one document's data
        state, msg = error_state(exc)
        if state:
            if state.startswith('08') or state in _TRANSIENT_STATES:
                return TRANSIENT
            if state.startswith(('22', '23')):
                return DATA
            if state.startswith(('42', '28', 'IM', '3D', '3F', '53')):    # 53: insufficient resources (disk full)
                return FATAL
        if _TRANSIENT_TEXT.search(msg):
            return TRANSIENT
        if _FATAL_TEXT.search(msg):
            return FATAL
        return DATA

    def sanitize(self, exc_or_msg, secrets: Sequence[str] = ()) -> str:
        if isinstance(exc_or_msg, BaseException):
            state, msg = error_state(exc_or_msg)
            msg = msg if not state or msg.startswith('[') else f'[{state}] {msg}'
        else:
            msg = str(exc_or_msg)
        return scrub_message(msg, secrets)

    # ---- introspection
    def introspect_table(self, conn, schema: Optional[str], table: str) -> Optional[TableMeta]:
        raise NotImplementedError


def _update_set(d: Dialect, meta: TableMeta, columns: Sequence[str], src: str, tgt: str = '',
                increments: Sequence[str] = (), current: str = '') -> List[str]:
    """SET items of an upsert's update: every non-key column takes the new value; an `increments` column adds the
    new value to the stored one (`current` is how the stored row is named: 'tgt.' or the table name)."""
    keys = {k.lower() for k in meta.primary_key}
    inc = {c.lower() for c in increments}
    out = []
    for c in columns:
        if c.lower() in keys:
            continue
        if c.lower() in inc:
            out.append(f'{tgt}{d.quote(c)} = {current}{d.quote(c)} + {src}{d.quote(c)}')
        else:
            out.append(f'{tgt}{d.quote(c)} = {src}{d.quote(c)}')
    return out


# ================================================================================================= sqlite

def _insert_on_conflict(d: Dialect, meta: TableMeta, columns: Sequence[str], nrows: int = 1,
                        increments: Sequence[str] = (), owner_check: bool = True) -> str:
    """INSERT … VALUES (…)[, (…)…] ON CONFLICT (pk) DO UPDATE — the upsert PostgreSQL and SQLite share. The
    WHERE on the owner column keeps a key that belongs to another app_id untouched (the sink then reports it).
    `meta.primary_key` may be any unique key of the table (the ledger upserts processing_log on app_id)."""
    pk = meta.primary_key
    one = '(' + ', '.join('?' * len(columns)) + ')'
    sql = (f'INSERT INTO {d.qualify(meta.name, meta.schema)} ({d.cols(columns)}) '
           f'VALUES {", ".join([one] * nrows)}')
    sets = _update_set(d, meta, columns, 'excluded.', increments=increments, current=f'{d.quote(meta.name)}.')
    if not pk:
        return sql
    if not sets:
        return sql + f' ON CONFLICT ({d.cols(pk)}) DO NOTHING'
    sql += f' ON CONFLICT ({d.cols(pk)}) DO UPDATE SET {", ".join(sets)}'
    if owner_check and meta.owner_column and meta.owner_column in columns:
        o = d.quote(meta.owner_column)
        sql += f' WHERE {d.quote(meta.name)}.{o} = excluded.{o}'
    return sql


class SQLiteDialect(Dialect):
    name = 'sqlite'
    supports_schema = False      # sqlite has no schemas: the contract's target_schema is ignored
    utcnow_sql = now_sql = 'CURRENT_TIMESTAMP'

    def column_type(self, col):
        if col.computed:
            return None
        base, args = parse_type(col.type)
        if base in ('varchar', 'nvarchar', 'char', 'nchar') and args and args[0] == 'max' or base in ('text', 'ntext'):
            return 'text'
        if base in ('varchar', 'nvarchar', 'char', 'nchar', 'int', 'integer', 'smallint', 'tinyint', 'bigint',
                    'bit', 'decimal', 'numeric', 'datetime', 'datetime2', 'date', 'time', 'float', 'real'):
            # keep the SQL Server spelling: sqlite's affinity rules give TEXT/INTEGER/NUMERIC and the declared
            # type survives introspection unchanged
            return col.type.strip().lower().replace(' ', '')
        raise DialectError(f'unsupported column type {col.type!r} for {self.name}')

    def column_checks(self, col) -> List[str]:
        """sqlite does not enforce lengths/ranges: CHECK constraints make it reject what SQL Server rejects."""
        if col.computed:
            return []
        base, args = parse_type(col.type)
        q = self.quote(col.name)
        if base in ('varchar', 'nvarchar', 'char', 'nchar') and args and args[0] != 'max':
            return [f'length({q}) <= {_int_arg(col.type, args, 0)}']
        if base == 'bit':
            return [f'{q} IN (0, 1)']
        if base == 'tinyint':
            return [f'{q} BETWEEN 0 AND 255']
        if base == 'smallint':
            return [f'{q} BETWEEN -32768 AND 32767']
        if base in ('decimal', 'numeric'):
            p, sc = _int_arg(col.type, args, 0, 18), _int_arg(col.type, args, 1, 0)
            return [f'abs({q}) < 1e{p - sc}']
        return []

    def adapt(self, v):
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, datetime.datetime):
            return v.isoformat(sep=' ')
        if isinstance(v, datetime.date):
            return v.isoformat()
        if isinstance(v, decimal.Decimal):
            return str(v)
        return v

    def upsert_sql(self, meta, columns, nrows=1, increments=(), owner_check=True):
        return _insert_on_conflict(self, meta, columns, nrows, increments, owner_check)

    def upsert(self, cur, meta, columns, rows, increments=(), owner_check=True):
        cur.executemany(self.upsert_sql(meta, columns, 1, increments, owner_check),
                        [[self.adapt(v) for v in r] for r in rows])
        return len(rows)

    def content_hash_sql(self, expr):
        return f'xmlsql_sha256({expr})'       # registered on every connection (pipeline.db.targets)

    def classify(self, exc):
        import sqlite3
        msg = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and _TRANSIENT_TEXT.search(msg):
            return TRANSIENT
        if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError)):
            return DATA
        if isinstance(exc, (sqlite3.OperationalError, sqlite3.ProgrammingError)) and _FATAL_TEXT.search(msg):
            return FATAL
        return super().classify(exc)

    def introspect_table(self, conn, schema, table):
        cur = conn.cursor()
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE", (table,))
        row = cur.fetchone()
        if not row:
            return None
        name = row[0]
        cur.execute(f'PRAGMA table_xinfo({self.quote(name)})')
        info = cur.fetchall()     # cid, name, type, notnull, dflt, pk, hidden
        pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
        cols = []
        for r in info:
            ident = len(pk) == 1 and r[1] == pk[0] and (r[2] or '').upper() == 'INTEGER'
            cols.append(ColumnMeta(r[1], r[2] or '', nullable=not r[3] and not ident, identity=ident,
                                   default=r[4], computed=bool(r[6]) and r[6] in (2, 3)))
        cur.execute(f'PRAGMA foreign_key_list({self.quote(name)})')
        fkrows: Dict[int, list] = {}
        for r in cur.fetchall():      # id, seq, table, from, to, on_update, on_delete, match
            fkrows.setdefault(r[0], []).append(r)
        fks = []
        for _, rs in sorted(fkrows.items()):
            rs.sort(key=lambda r: r[1])
            fks.append(ForeignKey(tuple(r[3] for r in rs), rs[0][2], tuple(r[4] for r in rs), rs[0][6]))
        uniq = []
        cur.execute(f'PRAGMA index_list({self.quote(name)})')
        for r in cur.fetchall():      # seq, name, unique, origin, partial
            if r[2] and r[3] == 'u':
                cur.execute(f'PRAGMA index_info({self.quote(r[1])})' if SAFE_IDENTIFIER.match(r[1])
                            else 'SELECT 1 WHERE 0')
                uniq.append([x[2] for x in sorted(cur.fetchall())])
        return TableMeta(name, None, cols, pk, fks, uniq)


    def has_unique_index(self, conn, schema, table, column):
        cur = conn.cursor()
        cur.execute(f'PRAGMA index_list({self.quote(table)})')
        for r in cur.fetchall():      # seq, name, unique, origin, partial
            if r[2] and not r[4]:
                name = '"' + str(r[1]).replace('"', '""') + '"'
                cur.execute(f'PRAGMA index_info({name})')
                cols = [x[2] for x in cur.fetchall()]
                if len(cols) == 1 and str(cols[0]).lower() == column.lower():
                    return True
        return False


# ================================================================================================= postgresql

class PostgresDialect(Dialect):
    name = 'postgresql'
    utcnow_sql = "(now() AT TIME ZONE 'utc')"
    now_sql = 'LOCALTIMESTAMP'
    rows_per_statement = 500     # multi-row VALUES: ~4x executemany over psqlODBC (measured)

    def column_type(self, col):
        if col.computed:
            return None
        base, args = parse_type(col.type)
        if base in ('varchar', 'nvarchar'):
            return 'text' if args and args[0] == 'max' else f'varchar({_int_arg(col.type, args, 0, 1)})'
        if base in ('char', 'nchar'):
            return f'char({_int_arg(col.type, args, 0, 1)})'
        if base in ('text', 'ntext'):
            return 'text'
        if base in ('int', 'integer'):
            return 'integer'
        if base in ('smallint', 'bigint'):
            return base
        if base in ('tinyint', 'bit'):
            return 'smallint'      # + CHECK (column_checks); bit stays 0/1 as in SQL Server
        if base in ('decimal', 'numeric'):
            return f'numeric({_int_arg(col.type, args, 0, 18)},{_int_arg(col.type, args, 1, 0)})'
        if base == 'datetime':
            return 'timestamp(3)'
        if base == 'datetime2':
            return f'timestamp({min(6, _int_arg(col.type, args, 0, 7))})'
        if base in ('date', 'time'):
            return base
        if base in ('float', 'real'):
            return 'double precision' if base == 'float' else 'real'
        raise DialectError(f'unsupported column type {col.type!r} for {self.name}')

    def column_checks(self, col):
        if col.computed:
            return []
        base, _ = parse_type(col.type)
        q = self.quote(col.name)
        if base == 'bit':
            return [f'{q} IN (0, 1)']
        if base == 'tinyint':
            return [f'{q} BETWEEN 0 AND 255']
        return []

    def adapt(self, v):
        if isinstance(v, bool):
            return int(v)
        return v

    def upsert_sql(self, meta, columns, nrows=1, increments=(), owner_check=True):
        return _insert_on_conflict(self, meta, columns, nrows, increments, owner_check)

    def upsert(self, cur, meta, columns, rows, increments=(), owner_check=True):
        per = max(1, min(self.rows_per_statement, self.max_params // max(1, len(columns))))
        sql_full = None
        for i in range(0, len(rows), per):
            chunk = rows[i:i + per]
            if len(chunk) == per:
                sql_full = sql_full or self.upsert_sql(meta, columns, per, increments, owner_check)
                sql = sql_full
            else:
                sql = self.upsert_sql(meta, columns, len(chunk), increments, owner_check)
            cur.execute(sql, [self.adapt(v) for r in chunk for v in r])
        return len(rows)

    def content_hash_sql(self, expr):
        return f"encode(sha256(convert_to(CAST({expr} AS text), 'UTF8')), 'hex')"

    _PG_TYPES = {'character varying': 'varchar', 'character': 'char', 'integer': 'int', 'smallint': 'smallint',
                 'bigint': 'bigint', 'numeric': 'numeric', 'text': 'varchar(max)', 'date': 'date',
                 'timestamp without time zone': 'datetime2', 'timestamp with time zone': 'datetimeoffset',
                 'boolean': 'bit', 'double precision': 'float', 'real': 'real'}

    def introspect_table(self, conn, schema, table):
        schema = schema or 'public'
        cur = conn.cursor()
        cur.execute(
            'SELECT column_name, data_type, character_maximum_length, numeric_precision, numeric_scale, '
            'is_nullable, column_default, is_identity, is_generated FROM information_schema.columns '
            'WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position', (schema, table))
        rows = cur.fetchall()
        if not rows:
            return None
        cols = []
        for name, dt, clen, prec, scale, nullable, dflt, is_ident, is_gen in rows:
            t = self._PG_TYPES.get(dt, dt)
            if t in ('varchar', 'char'):
                t = f'{t}({clen})' if clen else ('varchar(max)' if t == 'varchar' else t)
            elif t == 'numeric' and prec is not None:
                t = f'numeric({prec},{scale or 0})'
            ident = is_ident == 'YES' or (dflt or '').startswith('nextval(')
            cols.append(ColumnMeta(name, t, nullable == 'YES', ident, None if ident else dflt, is_gen == 'ALWAYS'))
        cur.execute(
            'SELECT c.conname, c.contype, k.ord, a.attname, rt.relname, ra.attname, c.confdeltype '
            'FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid '
            'JOIN pg_namespace n ON n.oid = t.relnamespace '
            'CROSS JOIN LATERAL unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(attnum, refattnum, ord) '
            'JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum '
            'LEFT JOIN pg_class rt ON rt.oid = c.confrelid '
            'LEFT JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = k.refattnum '
            "WHERE n.nspname = ? AND t.relname = ? AND c.contype IN ('p', 'f', 'u') ORDER BY c.conname, k.ord",
            (schema, table))
        cons: Dict[str, list] = {}
        for r in cur.fetchall():
            cons.setdefault(r[0], []).append(r)
        pk, fks, uniq = [], [], []
        actions = {'a': 'NO ACTION', 'r': 'RESTRICT', 'c': 'CASCADE', 'n': 'SET NULL', 'd': 'SET DEFAULT'}
        for _, rs in sorted(cons.items()):
            kind = rs[0][1]
            if kind == 'p':
                pk = [r[3] for r in rs]
            elif kind == 'u':
                uniq.append([r[3] for r in rs])
            else:
                fks.append(ForeignKey(tuple(r[3] for r in rs), rs[0][4], tuple(r[5] for r in rs),
                                      actions.get(rs[0][6], 'NO ACTION')))
        return TableMeta(table, schema, cols, pk, fks, uniq)


    def has_unique_index(self, conn, schema, table, column):
        cur = conn.cursor()
        cur.execute('SELECT COUNT(*) FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid '
                    'JOIN pg_namespace n ON n.oid = t.relnamespace '
                    'JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0] '
                    'WHERE i.indisunique AND i.indnatts = 1 AND i.indpred IS NULL '
                    'AND n.nspname = ? AND t.relname = ? AND a.attname = ?', (schema or 'public', table, column))
        return bool(cur.fetchone()[0])


# ================================================================================================= mssql

class MSSQLDialect(Dialect):
    name = 'mssql'
    open_q, close_q = '[', ']'
    utcnow_sql = 'GETUTCDATE()'
    now_sql = 'GETDATE()'
    max_params = 2000

    def column_type(self, col):
        if col.computed:
            return None
        base, args = parse_type(col.type)
        known = ('varchar', 'nvarchar', 'char', 'nchar', 'int', 'smallint', 'tinyint', 'bigint', 'bit', 'decimal',
                 'numeric', 'datetime', 'datetime2', 'date', 'time', 'float', 'real', 'text', 'ntext')
        if base not in known:
            raise DialectError(f'unsupported column type {col.type!r} for {self.name}')
        if base in ('integer',):
            base = 'int'
        return base + (f'({",".join(args)})' if args else '')

    def column_checks(self, col):
        return []

    def stage_name(self, meta: TableMeta) -> str:
        return '#stage_' + self.check_identifier(meta.name)

    def upsert_statements(self, meta: TableMeta, columns: Sequence[str], increments: Sequence[str] = (),
                          owner_check: bool = True) -> Dict[str, str]:
        """The T-SQL of one upsert: stage the rows in a #temp shaped like the target (SELECT TOP 0 … INTO; the
        UNION ALL drops the IDENTITY property), bulk-load it (executemany, fast_executemany), then one MERGE
        WITH (HOLDLOCK). IDENTITY_INSERT is switched ON/OFF around the MERGE when an identity column gets an
        explicit value. Never updates key columns; never re-assigns a row owned by another app_id."""
        tgt = self.qualify(meta.name, meta.schema)
        stage = self.stage_name(meta)
        cl = self.cols(columns)
        pk = meta.primary_key
        if not pk:
            raise DialectError(f'{meta.name}: upsert needs a primary key')
        on = ' AND '.join(f'tgt.{self.quote(k)} = src.{self.quote(k)}' for k in pk)
        sets = _update_set(self, meta, columns, 'src.', 'tgt.', increments=increments, current='tgt.')
        matched = ''
        if sets:
            cond = ''
            if owner_check and meta.owner_column and meta.owner_column in columns:
                o = self.quote(meta.owner_column)
                cond = f' AND tgt.{o} = src.{o}'
            matched = f'WHEN MATCHED{cond} THEN UPDATE SET {", ".join(sets)}\n'
        merge = (f'MERGE {tgt} WITH (HOLDLOCK) AS tgt\nUSING {stage} AS src\nON {on}\n{matched}'
                 f'WHEN NOT MATCHED BY TARGET THEN INSERT ({cl}) VALUES ({self.cols(columns, "src.")});')
        ident = [c for c in meta.identity_columns if c in columns]
        out = {
            'drop_stage': f'DROP TABLE IF EXISTS {stage};',
            'create_stage': (f'SELECT TOP 0 {cl} INTO {stage} FROM {tgt}\n'
                             f'UNION ALL SELECT TOP 0 {cl} FROM {tgt};'),
            'load_stage': f'INSERT INTO {stage} ({cl}) VALUES ({", ".join("?" * len(columns))});',
            'merge': merge,
        }
        if ident:
            out['identity_on'] = f'SET IDENTITY_INSERT {tgt} ON;'
            out['identity_off'] = f'SET IDENTITY_INSERT {tgt} OFF;'
        return out

    def upsert_script(self, meta, columns, increments=(), owner_check=True) -> str:
        """All statements of one upsert, in execution order (for review and the golden files)."""
        s = self.upsert_statements(meta, columns, increments, owner_check)
        order = ['drop_stage', 'create_stage', 'load_stage', 'identity_on', 'merge', 'identity_off', 'drop_stage']
        return '\n'.join(s[k] for k in order if k in s) + '\n'

    def upsert_sql(self, meta, columns, nrows=1, increments=(), owner_check=True):
        return self.upsert_statements(meta, columns, increments, owner_check)['merge']

    def content_hash_sql(self, expr):
        # CAST to nvarchar(max): HASHBYTES takes no xml, and one spelling for xml / varchar / nvarchar columns
        # (the hash is of the UTF-16LE text; it is only ever compared with hashes of the same source).
        return f"LOWER(CONVERT(varchar(64), HASHBYTES('SHA2_256', CAST({expr} AS nvarchar(max))), 2))"

    def upsert(self, cur, meta, columns, rows, increments=(), owner_check=True):
        s = self.upsert_statements(meta, columns, increments, owner_check)
        cur.execute(s['drop_stage'])
        cur.execute(s['create_stage'])
        try:
            cur.fast_executemany = True
        except AttributeError:
            pass
        cur.executemany(s['load_stage'], [[self.adapt(v) for v in r] for r in rows])
        if 'identity_on' in s:
            cur.execute(s['identity_on'])
            try:
                cur.execute(s['merge'])
            finally:
                cur.execute(s['identity_off'])
        else:
            cur.execute(s['merge'])
        cur.execute(s['drop_stage'])
        return len(rows)

    def classify(self, exc):
        state, msg = error_state(exc)
        if re.search(r'\(1205\)|\(1222\)|\(40501\)|\(40613\)|\(49918\)|\(4060\)|\(10928\)|\(10929\)', msg):
            return TRANSIENT
        if re.search(r'\((2627|2601|547|515|8152|2628|245|8114|220|241|242|8115)\)', msg):
            return DATA
        return super().classify(exc)

    def introspect_table(self, conn, schema, table):
        schema = schema or 'dbo'
        cur = conn.cursor()
        obj = f'{self.quote(schema)}.{self.quote(table)}'
        cur.execute(
            'SELECT c.name, t.name, c.max_length, c.precision, c.scale, c.is_nullable, c.is_identity, '
            'c.is_computed, dc.definition FROM sys.columns c '
            'JOIN sys.types t ON t.user_type_id = c.user_type_id '
            'LEFT JOIN sys.default_constraints dc ON dc.object_id = c.default_object_id '
            "WHERE c.object_id = OBJECT_ID(?, 'U') ORDER BY c.column_id", (obj,))
        rows = cur.fetchall()
        if not rows:
            return None
        cols = []
        for name, tname, maxlen, prec, scale, nullable, ident, computed, dflt in rows:
            t = tname
            if tname in ('varchar', 'char', 'nvarchar', 'nchar'):
                n = maxlen if tname in ('varchar', 'char') else (maxlen // 2 if maxlen > 0 else maxlen)
                t = f'{tname}({"max" if maxlen == -1 else n})'
            elif tname in ('decimal', 'numeric'):
                t = f'{tname}({prec},{scale})'
            elif tname == 'datetime2':
                t = f'datetime2({scale})'
            cols.append(ColumnMeta(name, t, bool(nullable), bool(ident), dflt, bool(computed)))
        cur.execute(
            'SELECT c.name FROM sys.indexes i JOIN sys.index_columns ic ON ic.object_id = i.object_id '
            'AND ic.index_id = i.index_id JOIN sys.columns c ON c.object_id = ic.object_id '
            "AND c.column_id = ic.column_id WHERE i.object_id = OBJECT_ID(?, 'U') AND i.is_primary_key = 1 "
            'ORDER BY ic.key_ordinal', (obj,))
        pk = [r[0] for r in cur.fetchall()]
        cur.execute(
            'SELECT fk.name, pc.name, rt.name, rc.name, fk.delete_referential_action_desc '
            'FROM sys.foreign_keys fk JOIN sys.foreign_key_columns fkc ON fkc.constraint_object_id = fk.object_id '
            'JOIN sys.columns pc ON pc.object_id = fkc.parent_object_id AND pc.column_id = fkc.parent_column_id '
            'JOIN sys.tables rt ON rt.object_id = fkc.referenced_object_id '
            'JOIN sys.columns rc ON rc.object_id = fkc.referenced_object_id '
            'AND rc.column_id = fkc.referenced_column_id '
            "WHERE fk.parent_object_id = OBJECT_ID(?, 'U') ORDER BY fk.name, fkc.constraint_column_id", (obj,))
        fkmap: Dict[str, list] = {}
        for r in cur.fetchall():
            fkmap.setdefault(r[0], []).append(r)
        fks = [ForeignKey(tuple(r[1] for r in rs), rs[0][2], tuple(r[3] for r in rs),
                          (rs[0][4] or 'NO_ACTION').replace('_', ' ')) for _, rs in sorted(fkmap.items())]
        return TableMeta(table, schema, cols, pk, fks, [])


    def has_unique_index_sql(self) -> str:
        return ('SELECT i.index_id FROM sys.indexes i JOIN sys.index_columns ic ON ic.object_id = i.object_id '
                'AND ic.index_id = i.index_id JOIN sys.columns c ON c.object_id = ic.object_id '
                'AND c.column_id = ic.column_id '
                "WHERE i.object_id = OBJECT_ID(?, 'U') AND i.is_unique = 1 AND i.has_filter = 0 "
                'AND ic.is_included_column = 0 GROUP BY i.index_id HAVING COUNT(*) = 1 AND MAX(c.name) = ?')

    def has_unique_index(self, conn, schema, table, column):
        cur = conn.cursor()
        cur.execute(self.has_unique_index_sql(), (f'{self.quote(schema or "dbo")}.{self.quote(table)}', column))
        return cur.fetchone() is not None


_DIALECTS = {'sqlite': SQLiteDialect(), 'postgresql': PostgresDialect(), 'mssql': MSSQLDialect()}
_ALIASES = {'postgres': 'postgresql', 'pg': 'postgresql', 'sqlserver': 'mssql', 'tsql': 'mssql',
            'sqlite3': 'sqlite'}


def get_dialect(name) -> Dialect:
    if isinstance(name, Dialect):
        return name
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    try:
        return _DIALECTS[key]
    except KeyError:
        raise DialectError(f'unknown SQL dialect {name!r} (known: {", ".join(_DIALECTS)})') from None
