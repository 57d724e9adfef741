"""PostgreSQL through pyodbc + psqlODBC."""
from typing import Dict

from transforms.sql.dialects.base import Dialect, DialectError, _insert_on_conflict, _int_arg, parse_type
from transforms.sql.meta import ColumnMeta, ForeignKey, TableMeta

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
