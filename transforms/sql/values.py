"""Values checked against the LIVE column types before any SQL runs.

A value the target column cannot hold (an integer out of the column's range, a string longer than its varchar, a
number too large for its decimal) fails its document with a reason that names table.column and the problem,
never the value. The database would reject most of these anyway, but only after a round trip, with a message that
may quote the value, and sometimes in a statement that carries many documents (the key-ownership SELECT, a multi-row
upsert). Checking first keeps poison documents out of shared statements; the sink still isolates whatever the
database rejects that these checks do not know about (CHECK constraints, FKs, collations) by bisection.

`checkers(meta, dialect)` -> {column name: check(value) -> problem or None}; columns without a check are absent.
"""
import decimal
import re
from typing import Any, Callable, Dict, Optional

from transforms.sql.meta import ColumnMeta, TableMeta

INT64 = (-2 ** 63, 2 ** 63 - 1)
# SQL Server's integer types (the spelling of the table specs); SQLite's own INTEGER (rowid) is 64-bit.
INT_RANGES = {'tinyint': (0, 255), 'smallint': (-2 ** 15, 2 ** 15 - 1), 'int': (-2 ** 31, 2 ** 31 - 1),
              'bigint': INT64}
_TYPE = re.compile(r'^\s*([A-Za-z][A-Za-z0-9 ]*?)\s*(?:\(\s*([^)]*)\))?\s*$')

Check = Callable[[Any], Optional[str]]


def _number(v):
    """The value as a number when it is one (bool excluded), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float, decimal.Decimal)):
        return v
    return None


def _driver_int(v) -> Optional[str]:
    """Any Python int outside 64 bits cannot be bound by sqlite3 or pyodbc, whatever the column type."""
    if isinstance(v, int) and not isinstance(v, bool) and not INT64[0] <= v <= INT64[1]:
        return 'value out of range for a 64-bit integer'
    return None


def column_check(col: ColumnMeta, dialect: str = '') -> Optional[Check]:
    """The check for one live column, or None when nothing is known about its limits."""
    if col.computed:
        return None
    m = _TYPE.match(col.type or '')
    if not m:
        return _driver_int
    base = ' '.join(m.group(1).lower().split())
    args = [a.strip().lower() for a in m.group(2).split(',')] if m.group(2) else []
    typ = base + (f'({",".join(args)})' if args else '')
    if base == 'integer':
        # PostgreSQL's integer is introspected as 'int'; an 'integer' left here is SQLite's 64-bit INTEGER
        base, typ = ('int', 'integer') if dialect != 'sqlite' else ('bigint', 'integer (64-bit)')

    if base in INT_RANGES:
        lo, hi = INT_RANGES[base]

        def check_int(v, lo=lo, hi=hi, typ=typ):
            n = _number(v)
            if n is None:
                return _driver_int(v)
            try:
                if not lo <= n <= hi:
                    return f'value out of range for {typ}'
            except (TypeError, ValueError, decimal.InvalidOperation):   # NaN
                return f'value is not a number {typ} can hold'
            return None
        return check_int

    if base == 'bit':
        def check_bit(v):
            if isinstance(v, bool):
                return None
            n = _number(v)
            if n is not None and n not in (0, 1):
                return 'value out of range for bit (0 or 1)'
            return _driver_int(v)
        return check_bit

    if base in ('decimal', 'numeric') and args:
        try:
            p = int(args[0])
            s = int(args[1]) if len(args) > 1 else 0
        except ValueError:
            return _driver_int
        limit = decimal.Decimal(10) ** (p - s)

        def check_dec(v, limit=limit, typ=typ):
            n = _number(v)
            if n is None:
                return _driver_int(v)
            try:
                if not abs(decimal.Decimal(n) if isinstance(n, float) else n) < limit:
                    return f'value out of range for {typ}'
            except (TypeError, ValueError, decimal.InvalidOperation, OverflowError):   # NaN / infinity
                return f'value is not a number {typ} can hold'
            return None
        return check_dec

    if base in ('varchar', 'nvarchar', 'char', 'nchar', 'character varying', 'character') and args \
            and args[0] not in ('max', '-1'):
        try:
            n = int(args[0])
        except ValueError:
            return _driver_int

        def check_len(v, n=n, typ=typ):
            if isinstance(v, str) and len(v) > n:
                return f'value longer than {typ} allows'
            return _driver_int(v)
        return check_len

    return _driver_int


def checkers(meta: TableMeta, dialect: str = '') -> Dict[str, Check]:
    """{column name (the table's own spelling): check} for every column of `meta` with a known limit."""
    out = {}
    for c in meta.columns:
        chk = column_check(c, dialect)
        if chk is not None:
            out[c.name] = chk
    return out
