"""`python -m pipeline check --contract C [--target T]`: the contract's own validation and, with a target, the
checks a run does before any data moves (transforms/sql/checks.py, the tool's own tables), each problem on one
line. Exit 0 when there is none, 2 otherwise."""
import sys

from pipeline.config import resolve_sample


def problems(contract_arg, target_url=None, dialect=None):
    """(every problem found as lines, never a value; the create-tables command for missing tables or None)."""
    from contracts import ContractError, load_contract
    path = resolve_sample(contract_arg)
    try:
        contract = load_contract(path)
    except ContractError as e:
        return [ln for ln in e.errors], None
    if not target_url:
        return [], None
    from pipeline.config import create_tables_command
    from transforms.sql.checks import target_problems
    from transforms.sql.plan import PROJECT_TABLES, target_schema
    from transforms.sql.targets import parse_target
    from transforms.sql.upgrade import problems as upgrade_problems
    target = parse_target(target_url, dialect=dialect)
    schema = target_schema(target, contract.target_schema)
    written = [t for t in contract.table_order if t not in PROJECT_TABLES]
    where = f' (schema {schema})' if schema else ''
    out, missing = [], []
    conn = target.connect()
    try:
        d = target.dialect
        metas = {}
        for t in written:
            m = d.introspect_table(conn, schema, d.check_identifier(t))
            if m is None:
                missing.append(t)
                out.append(f'{t}: table not found in the target{where}')
            else:
                metas[t] = m
        project = {}
        for t in PROJECT_TABLES:
            m = d.introspect_table(conn, schema, t)
            if m is None:
                missing.append(t)
                out.append(f'{t}: the tool\'s own table is not in the target{where}')
            else:
                project[t] = m
        if len(project) == len(PROJECT_TABLES):
            out += [f'{p}: missing (created by an earlier version; create-tables upgrades it)'
                    for p in upgrade_problems(conn, d.name, schema, project)]
        out += target_problems(conn, d, contract, metas, written, skip_tables=missing)
    finally:
        conn.close()
    hint = create_tables_command(path, target_url, dialect=dialect) if missing else None
    return out, hint


def run(contract_arg, target_url=None, dialect=None) -> int:
    found, hint = problems(contract_arg, target_url, dialect)
    for line in found:
        print(line)
    if found:
        print(f'error: {len(found)} problem(s) found' + (f'; create the missing tables with {hint}' if hint else ''),
              file=sys.stderr)
        return 2
    print('check: no problem found' + (' (contract and target)' if target_url else ' (contract)'))
    return 0
