"""SQLite (stdlib sqlite3): the embedded default target and source."""
import datetime
import decimal
from typing import Dict, List

from transforms.sql.dialects.base import (DATA, FATAL, SAFE_IDENTIFIER, TRANSIENT, Dialect, DialectError, _FATAL_TEXT,
                                          _TRANSIENT_TEXT, _insert_on_conflict, _int_arg, parse_type)
from transforms.sql.meta import ColumnMeta, ForeignKey, TableMeta

_AS_IS = frozenset([int, str, float, bytes, type(None)])     # bound by sqlite3 as they are (bool is not int here)


class SQLiteDialect(Dialect):
    name = 'sqlite'
    inline_integer_pk = True

    def integer_ids(self, column):
        return f"typeof({column}) = 'integer'"

    def misfit_ids(self, column):
        return f"typeof({column}) <> 'integer'"
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
        if type(v) in _AS_IS:
            return v
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

    def document_column_sql(self, expr):
        # TEXT comes back as its bytes (UTF-8 in a UTF-8 database): sqlite3 would decode every document to str and
        # validation encode it back. A BLOB stays as it is; a UTF-16 database gives UTF-16 bytes, which validation
        # recognises and decodes strictly like any other.
        return f'CAST({expr} AS BLOB)'

    def document_kind_sql(self, expr):
        return f'typeof({expr})'

    def content_hash_sql(self, expr):
        return f'xmlsql_sha256({expr})'       # registered on every connection (transforms.sql.targets)

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

    def introspect_table(self, conn, schema, table, views=False):
        cur = conn.cursor()
        types = "('table', 'view')" if views else "('table')"
        cur.execute(f"SELECT name FROM sqlite_master WHERE type IN {types} AND name = ? COLLATE NOCASE", (table,))
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
