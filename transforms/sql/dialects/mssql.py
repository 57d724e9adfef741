"""SQL Server through pyodbc (ODBC Driver 17/18). Never run against a server here: its T-SQL is checked by
sqlglot and golden statements (tests/test_dialects_sql.py)."""
import re
from typing import Dict, Sequence

from transforms.sql.dialects.base import DATA, TRANSIENT, Dialect, DialectError, _update_set, parse_type
from transforms.sql.messages import error_state
from transforms.sql.meta import ColumnMeta, ForeignKey, TableMeta

class MSSQLDialect(Dialect):
    name = 'mssql'
    identity_clause = 'IDENTITY(1,1)'

    def create_table_if_absent(self, name, body):
        obj = name.replace("'", "''")
        return f"IF OBJECT_ID(N'{obj}', N'U') IS NULL\nCREATE TABLE {name} (\n  {body}\n);"

    def create_index_if_absent(self, index, table, columns, unique=False):
        obj = table.replace("'", "''")
        kind = 'UNIQUE INDEX' if unique else 'INDEX'
        return (f"IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'{index}' "
                f"AND object_id = OBJECT_ID(N'{obj}'))\nCREATE {kind} {self.quote(index)} ON {table} ({columns});")

    def create_schema_if_absent(self, schema):
        lit = self.check_identifier(schema)
        return f"IF SCHEMA_ID(N'{lit}') IS NULL\nEXEC(N'CREATE SCHEMA {self.quote(schema)}');"

    def executable(self, statement):
        return statement          # IF ... CREATE batches keep their ';'

    def select_rows(self, cols, table, where, order, limit=None, offset=False):
        if offset:
            sql = f'SELECT {cols} FROM {table} WHERE {where} ORDER BY {order} OFFSET ? ROWS'
            return sql + (f' FETCH NEXT {int(limit)} ROWS ONLY' if limit is not None else '')
        top = f'TOP ({int(limit)}) ' if limit is not None else ''
        return f'SELECT {top}{cols} FROM {table} WHERE {where} ORDER BY {order}'
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

    def introspect_table(self, conn, schema, table, views=False):
        schema = schema or 'dbo'
        cur = conn.cursor()
        obj = f'{self.quote(schema)}.{self.quote(table)}'
        cur.execute(
            'SELECT c.name, t.name, c.max_length, c.precision, c.scale, c.is_nullable, c.is_identity, '
            'c.is_computed, dc.definition FROM sys.columns c '
            'JOIN sys.types t ON t.user_type_id = c.user_type_id '
            'LEFT JOIN sys.default_constraints dc ON dc.object_id = c.default_object_id '
            + ("WHERE c.object_id = COALESCE(OBJECT_ID(?, 'U'), OBJECT_ID(?, 'V')) " if views
               else "WHERE c.object_id = OBJECT_ID(?, 'U') ") + 'ORDER BY c.column_id', (obj, obj) if views else (obj,))
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
