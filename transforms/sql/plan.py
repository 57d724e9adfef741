"""Before any data moves: reach the target, (optionally) create its tables, introspect them, check the contract's
columns against them, and derive the FK tiers. Every problem here is a one-line error (TargetError/ConfigError)."""
from typing import Dict, List, NamedTuple, Optional

from transforms.sql.introspect import introspect
from transforms.sql.meta import MetaError, TableMeta, fk_tiers
from transforms.sql.targets import TargetError, parse_target

PROJECT_TABLES = ('processing_log', 'dead_letter')


class SinkPlan(NamedTuple):
    metas: Dict[str, TableMeta]      # written tables, introspected from the live target
    tiers: List[List[str]]           # FK tiers of the written tables
    schema: Optional[str]
    dialect: str                     # dialect name
    display: str                     # target with the password masked


def target_schema(target, contract_schema):
    return contract_schema if target.dialect.supports_schema else None


def _skipped(tables_spec, skip_tables=(), only_tables=None):
    """(spec, the tables of the spec not to create): `skip_tables`, the spec's reference tables, and everything
    not in `only_tables`."""
    from transforms.sql.meta import load_table_spec, reference_tables
    spec = tables_spec if tables_spec is not None else {'tables': {}}
    try:
        names = list(load_table_spec(spec))
        refs = reference_tables(spec)
    except (MetaError, OSError, ValueError) as e:
        raise TargetError(f'bad table spec {tables_spec}: {e}') from None
    # Reference tables (enums, campaigns) are not the tool's to create or fill, and FKs to them are left out:
    # created empty, they would make every document fail its FOREIGN KEY.
    skip = set(skip_tables) | set(refs)
    if only_tables is not None:
        keep = set(only_tables) | set(PROJECT_TABLES)
        skip |= {t for t in names if t not in keep}
    return spec, skip


def tables_to_create(tables_spec, skip_tables=(), only_tables=None) -> List[str]:
    """The tables create_target_tables creates (with the same arguments), in its order."""
    from transforms.sql.ddl import ddl_table_names
    spec, skip = _skipped(tables_spec, skip_tables, only_tables)
    return ddl_table_names(spec, skip)


def create_target_tables(target_url, tables_spec, schema=None, dialect=None, execute=True, skip_tables=(),
                         only_tables=None):
    """Create the tables of a spec plus processing_log and dead_letter (idempotent). Returns the statements.
    `skip_tables` (or everything not in `only_tables`) is not created, and FKs to those tables are left out."""
    from transforms.sql.ddl import ddl_statements
    from transforms.sql.upgrade import create_tables
    from transforms.sql.dialects import get_dialect
    target = parse_target(target_url, dialect=dialect) if target_url else None
    spec, skip = _skipped(tables_spec, skip_tables, only_tables)
    if not execute:
        d = target.dialect if target is not None else get_dialect(dialect or 'sqlite')
        return ddl_statements(spec, d.name, schema=schema if d.supports_schema else None, skip_tables=skip)
    return create_tables(target, spec, schema=target_schema(target, schema), skip_tables=skip)


CREATE_COMMAND = '`python -m pipeline create-tables --contract CONTRACT --tables SPEC --target TARGET`'


def prepare_sink(target_url, contract, tables_spec=None, create=False, dialect=None,
                 create_command=CREATE_COMMAND) -> SinkPlan:
    """`create_command`: the create-tables command line (in backticks) that the errors about missing tables
    suggest; the caller knows the command line (pipeline.config.create_tables_command)."""
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
            raise TargetError(f'{e} — create them with {create_command}, or run again with --create-tables '
                              '--tables SPEC') from None
        try:
            project = introspect(conn, target.dialect_name, schema, PROJECT_TABLES)
        except MetaError:
            raise TargetError('the target has no processing_log / dead_letter tables: create them with '
                              f'{create_command}, or run again with --create-tables --tables SPEC') from None
        from transforms.sql.upgrade import problems
        missing = problems(conn, target.dialect_name, schema, project)
        if missing:
            raise TargetError('processing_log / dead_letter were created by an earlier version of this tool '
                              f'(missing: {", ".join(missing)}): upgrade them by running the same command with '
                              f'--create-tables, or {create_command}; '
                              'it adds the columns, merges duplicate rows and adds the unique keys') from None
        from transforms.sql.checks import target_problems
        problems = target_problems(conn, target.dialect, contract, metas, written)
    finally:
        conn.close()
    if problems:
        raise TargetError('the target does not fit the contract (`python -m pipeline check` lists the same): '
                          + '; '.join(problems))
    try:
        tiers = fk_tiers(metas, written)
    except MetaError as e:
        raise TargetError(str(e)) from None
    return SinkPlan(metas=metas, tiers=tiers, schema=schema, dialect=target.dialect_name, display=target.display)
