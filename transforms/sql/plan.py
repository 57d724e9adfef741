"""Before any data moves: reach the target, (optionally) create its tables, introspect them, check the contract's
columns against them, and derive the FK tiers. Every problem here is a one-line error (TargetError/ConfigError)."""
from typing import Dict, List, NamedTuple, Optional

from transforms.sql.meta import MetaError, TableMeta, check_columns, fk_tiers, introspect
from transforms.sql.targets import TargetError, parse_target

PROJECT_TABLES = ('processing_log', 'dead_letter')


class SinkPlan(NamedTuple):
    metas: Dict[str, TableMeta]      # written tables, introspected from the live target
    tiers: List[List[str]]           # FK tiers of the written tables
    schema: Optional[str]
    dialect: str                     # dialect name
    display: str                     # target with the password masked


def contract_columns(contract) -> Dict[str, List[str]]:
    cols: Dict[str, List[str]] = {}
    for m in contract.raw.get('mappings', []):
        if m.get('target_column'):
            cols.setdefault(m['target_table'], [])
            if m['target_column'] not in cols[m['target_table']]:
                cols[m['target_table']].append(m['target_column'])
    return cols


def target_schema(target, contract_schema):
    return None if target.dialect_name == 'sqlite' else contract_schema


def create_target_tables(target_url, tables_spec, schema=None, dialect=None, execute=True, skip_tables=(),
                         only_tables=None):
    """Create the tables of a spec plus processing_log and dead_letter (idempotent). Returns the statements.
    `skip_tables` (or everything not in `only_tables`) is not created, and FKs to those tables are left out."""
    from transforms.sql.ddl import create_tables, ddl_statements
    from transforms.sql.meta import load_table_spec
    target = parse_target(target_url, dialect=dialect)
    spec = tables_spec if tables_spec is not None else {'tables': {}}
    try:
        names = list(load_table_spec(spec))
    except (MetaError, OSError, ValueError) as e:
        raise TargetError(f'bad table spec {tables_spec}: {e}') from None
    skip = set(skip_tables)
    if only_tables is not None:
        keep = set(only_tables) | set(PROJECT_TABLES)
        skip |= {t for t in names if t not in keep}
    if not execute:
        return ddl_statements(spec, target.dialect_name, schema=target_schema(target, schema), skip_tables=skip)
    return create_tables(target, spec, schema=target_schema(target, schema), skip_tables=skip)


def prepare_sink(target_url, contract, tables_spec=None, create=False, dialect=None) -> SinkPlan:
    target = parse_target(target_url, dialect=dialect)
    schema = target_schema(target, contract.target_schema)
    written = [t for t in contract.table_order if t not in PROJECT_TABLES]
    if create:
        # Only the tables this contract writes: reference tables (enums, campaigns) are not the tool's to fill,
        # and FKs to them are left out.
        create_target_tables(target_url, tables_spec, schema=schema, dialect=dialect, only_tables=written)
    conn = target.connect()
    try:
        try:
            metas = introspect(conn, target.dialect_name, schema, written)
        except MetaError as e:
            raise TargetError(f'{e} — create them with `python -m pipeline create-tables --tables SPEC '
                              f'--target ...` or pass --create-tables --tables SPEC') from None
        try:
            project = introspect(conn, target.dialect_name, schema, PROJECT_TABLES)
        except MetaError:
            raise TargetError('the target has no processing_log / dead_letter tables: create them with '
                              '`python -m pipeline create-tables` or pass --create-tables') from None
        from transforms.sql.upgrade import problems
        missing = problems(conn, target.dialect_name, schema, project)
        if missing:
            raise TargetError('processing_log / dead_letter were created by an earlier version of this tool '
                              f'(missing: {", ".join(missing)}): upgrade them by running the same command with '
                              '--create-tables, or `python -m pipeline create-tables --tables SPEC --target ...`; '
                              'it adds the columns, merges duplicate rows and adds the unique keys') from None
    finally:
        conn.close()
    try:
        check_columns(contract_columns(contract), metas)
        tiers = fk_tiers(metas, written)
    except MetaError as e:
        raise TargetError(str(e)) from None
    return SinkPlan(metas=metas, tiers=tiers, schema=schema, dialect=target.dialect_name, display=target.display)
