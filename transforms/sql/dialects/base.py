"""The dialect interface every SQL dialect implements, and the helpers they share.

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
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from transforms.sql.messages import (DATA, FATAL, TRANSIENT, _FATAL_TEXT, _TRANSIENT_STATES, _TRANSIENT_TEXT,
                                     error_state, scrub_message)
from transforms.sql.meta import ColumnMeta, TableMeta

SAFE_IDENTIFIER = re.compile(r'^[A-Za-z_][A-Za-z0-9_]{0,62}$')
TYPE_RE = re.compile(r'^\s*([A-Za-z][A-Za-z0-9 ]*?)\s*(?:\(\s*([^)]*)\))?\s*$')



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
