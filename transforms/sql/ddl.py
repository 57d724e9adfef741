"""DDL for the target tables (from a table spec) and the project's own tables, for sqlite, postgresql, mssql.

All statements are idempotent (IF NOT EXISTS / OBJECT_ID checks) and ordered so that referenced tables come
first. FKs to tables that are not created here (skip_tables, e.g. the reference tables app_enums and
app_campaign_cc) are left out.
"""
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from transforms.sql.dialects import get_dialect
from transforms.sql.meta import TableMeta, load_table_spec, table_from_spec

# The project's own tables. processing_log is a superset of the existing system's processing_log (same
# columns + `stage` + `content_hash`): one row per app_id, kept so by a unique index on app_id and upserts.
# dead_letter: one current row per document, keyed by doc_key (sha1 hex of `source`: a source reference may be
# 1,000 characters, SQL Server index keys at most 900 bytes); created_at is when it first failed, last_seen_at
# when it last did, attempts how many runs it failed in. A target created by an earlier version (no
# content_hash / doc_key, duplicate rows) is upgraded by transforms/sql/upgrade.py (create-tables / --create-tables).
PROJECT_TABLES: Dict[str, Dict[str, Any]] = {
    'processing_log': {
        'columns': [
            {'name': 'log_id', 'type': 'int', 'nullable': False, 'identity': True},
            {'name': 'app_id', 'type': 'int', 'nullable': False},
            {'name': 'status', 'type': 'varchar(20)', 'nullable': False},
            {'name': 'stage', 'type': 'varchar(20)', 'nullable': True},
            {'name': 'failure_reason', 'type': 'varchar(500)', 'nullable': True},
            {'name': 'processing_time', 'type': 'datetime2(7)', 'nullable': False, 'default': 'GETUTCDATE()'},
            {'name': 'session_id', 'type': 'varchar(50)', 'nullable': True},
            {'name': 'app_id_start', 'type': 'int', 'nullable': True},
            {'name': 'app_id_end', 'type': 'int', 'nullable': True},
            {'name': 'content_hash', 'type': 'varchar(64)', 'nullable': True},
        ],
        'primary_key': ['log_id'], 'foreign_keys': [], 'unique': [],
        'indexes': [['content_hash']], 'unique_indexes': [['app_id']],
    },
    'dead_letter': {
        'columns': [
            {'name': 'id', 'type': 'bigint', 'nullable': False, 'identity': True},
            {'name': 'source', 'type': 'varchar(1000)', 'nullable': False},
            {'name': 'app_id', 'type': 'int', 'nullable': True},
            {'name': 'stage', 'type': 'varchar(20)', 'nullable': False},
            {'name': 'reason', 'type': 'varchar(2000)', 'nullable': False},
            {'name': 'payload', 'type': 'nvarchar(max)', 'nullable': True},
            {'name': 'created_at', 'type': 'datetime2(7)', 'nullable': False, 'default': 'GETUTCDATE()'},
            {'name': 'doc_key', 'type': 'varchar(40)', 'nullable': True},
            {'name': 'session_id', 'type': 'varchar(50)', 'nullable': True},
            {'name': 'attempts', 'type': 'int', 'nullable': False, 'default': '(1)'},
            {'name': 'last_seen_at', 'type': 'datetime2(7)', 'nullable': True},
        ],
        'primary_key': ['id'], 'foreign_keys': [], 'unique': [],
        'indexes': [['app_id']], 'unique_indexes': [['doc_key']],
    },
}


def project_metas(schema: Optional[str] = None) -> Dict[str, TableMeta]:
    return {n: table_from_spec(n, d, schema) for n, d in PROJECT_TABLES.items()}


def _spec_tables(spec) -> Dict[str, TableMeta]:
    if isinstance(spec, Mapping) and spec and all(isinstance(v, TableMeta) for v in spec.values()):
        return dict(spec)
    return load_table_spec(spec)


def _ordered(tables: Dict[str, TableMeta]) -> List[str]:
    """Referenced tables first (stable otherwise)."""
    names = list(tables)
    low = {n.lower(): n for n in names}
    out, seen = [], set()

    def visit(n, stack=()):
        if n in seen or n in stack:
            return
        for fk in tables[n].foreign_keys:
            r = low.get(fk.references.lower())
            if r and r != n:
                visit(r, stack + (n,))
        seen.add(n)
        out.append(n)
    for n in names:
        visit(n)
    return out


def _col_def(d, col, single_identity_pk: bool) -> Optional[str]:
    typ = d.column_type(col)
    if typ is None:
        return None
    parts = [d.quote(col.name)]
    if d.inline_integer_pk and single_identity_pk:
        return f'{d.quote(col.name)} INTEGER PRIMARY KEY'
    parts.append(typ)
    if col.identity and d.identity_clause:
        parts.append(d.identity_clause)
    parts.append('NULL' if col.nullable and not col.identity else 'NOT NULL')
    dflt = d.default_sql(col.default)
    if dflt is not None:
        parts.append(f'DEFAULT {dflt}')
    return ' '.join(parts)


def create_table_sql(meta: TableMeta, dialect, schema: Optional[str] = None, include_fks: bool = True,
                     known_tables: Optional[Iterable[str]] = None) -> str:
    d = get_dialect(dialect)
    schema = schema if schema is not None else meta.schema
    known = {t.lower() for t in known_tables} if known_tables is not None else None
    single_ident_pk = (len(meta.primary_key) == 1 and meta.column(meta.primary_key[0]) is not None
                       and meta.column(meta.primary_key[0]).identity)
    lines = []
    for c in meta.columns:
        is_pk_ident = single_ident_pk and c.name == meta.primary_key[0]
        cd = _col_def(d, c, is_pk_ident)
        if cd:
            lines.append(cd)
    for c in meta.columns:
        for chk in getattr(d, 'column_checks')(c):
            lines.append(f'CONSTRAINT {d.quote(_cname("ck", meta.name, c.name))} CHECK ({chk})')
    if meta.primary_key and not (d.inline_integer_pk and single_ident_pk):
        lines.append(f'CONSTRAINT {d.quote(_cname("pk", meta.name))} PRIMARY KEY ({d.cols(meta.primary_key)})')
    for u in meta.unique:
        lines.append(f'CONSTRAINT {d.quote(_cname("uq", meta.name, *u))} UNIQUE ({d.cols(u)})')
    if include_fks:
        for fk in meta.foreign_keys:
            if known is not None and fk.references.lower() not in known:
                continue
            ref = d.qualify(fk.references, schema)
            act = (fk.on_delete or 'NO ACTION').upper()
            ondel = f' ON DELETE {act}' if act in ('CASCADE', 'SET NULL', 'SET DEFAULT') else ''
            lines.append(f'CONSTRAINT {d.quote(_cname("fk", meta.name, *fk.columns))} FOREIGN KEY '
                         f'({d.cols(fk.columns)}) REFERENCES {ref} ({d.cols(fk.ref_columns)}){ondel}')
    return d.create_table_if_absent(d.qualify(meta.name, schema), ',\n  '.join(lines))


def _cname(prefix, table, *cols) -> str:
    n = '_'.join((prefix, table) + tuple(cols))
    if len(n) > 60:
        import hashlib
        n = n[:51] + '_' + hashlib.sha1(n.encode()).hexdigest()[:8]
    return n


def _index_sql(d, table: str, cols: Sequence[str], schema, unique: bool = False) -> str:
    return d.create_index_if_absent(_cname('ux' if unique else 'ix', table, *cols), d.qualify(table, schema),
                                    d.cols(cols), unique)


def project_index_statements(d, table: str, schema) -> List[str]:
    """CREATE [UNIQUE] INDEX statements (idempotent) of one project table."""
    spec = PROJECT_TABLES.get(table, {})
    return ([_index_sql(d, table, ix, schema, unique=True) for ix in spec.get('unique_indexes') or []]
            + [_index_sql(d, table, ix, schema) for ix in spec.get('indexes') or []])


def _schema_sql(d, schema) -> Optional[str]:
    return d.create_schema_if_absent(schema) if schema else None


def _created_tables(spec, skip_tables=(), project_tables=True) -> Dict[str, TableMeta]:
    tables = _spec_tables(spec)
    skip = {t.lower() for t in skip_tables}
    if project_tables:
        for n, m in project_metas().items():
            tables.pop(n, None)
            tables[n] = m
    return {n: m for n, m in tables.items() if n.lower() not in skip}


def ddl_table_names(spec, skip_tables: Iterable[str] = (), project_tables: bool = True) -> List[str]:
    """The tables ddl_statements creates, in its order (referenced tables first)."""
    return _ordered(_created_tables(spec, skip_tables, project_tables))


def ddl_statements(spec, dialect, schema: Optional[str] = None, include_fks: bool = True,
                   skip_tables: Iterable[str] = (), project_tables: bool = True) -> List[str]:
    """CREATE statements (idempotent) for every table of `spec` (path, dict in tables.json format, or
    {name: TableMeta}) except `skip_tables`, plus the project tables processing_log and dead_letter (the
    project's processing_log replaces a spec's). FKs that reference a table not created here are left out."""
    d = get_dialect(dialect)
    tables = _created_tables(spec, skip_tables, project_tables)
    out = []
    s = _schema_sql(d, schema)
    if s:
        out.append(s)
    for n in _ordered(tables):
        out.append(create_table_sql(tables[n], d, schema, include_fks, known_tables=tables.keys()))
        if project_tables and n in PROJECT_TABLES:
            out.extend(project_index_statements(d, n, schema))
    return out
