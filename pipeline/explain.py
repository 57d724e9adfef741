"""`python -m pipeline explain --contract C FILE` (or `--source S --app-id N`): one document through the
contract, every mapping with its trace (contracts/explain.py), as text or JSON."""
import json
import os

from pipeline.config import ConfigError, load_contract_or_fail


def _document(args, contract):
    if args.file:
        try:
            with open(args.file, 'rb') as f:
                return args.file, None, f.read()
        except OSError as e:
            raise ConfigError(f'cannot read {args.file}: {e.strerror or e}') from None
    from transforms.io.sources import SourceError
    from transforms.io.tables import TableSpec, fetch_from_table
    table = args.source_table or contract.source_table
    schema = None
    if '.' in table:
        schema, table = table.split('.', 1)
    elif not args.source.startswith('sqlite:'):
        schema = contract.target_schema
    spec = TableSpec(url=args.source, table=table, column=args.source_column or contract.source_column,
                     schema=schema, dialect=args.dialect)
    from transforms.sql.targets import TargetError, parse_target
    try:
        target = parse_target(args.source, dialect=args.dialect)
    except TargetError as e:
        raise ConfigError(str(e)) from None
    if target.sqlite_path is not None and not os.path.exists(target.sqlite_path):
        raise ConfigError(f'source: no SQLite database at {target.sqlite_path}')
    try:
        xml = fetch_from_table(spec, args.app_id)
    except SourceError as e:
        raise ConfigError(str(e)) from None
    except Exception as e:              # no such table or column, a refused login: one line, no password
        why = target.scrub(e)
        where = '' if target.display in why else f' in {target.display}'
        raise ConfigError(f'cannot read app_id {args.app_id} from {table}.{spec.column}{where}: {why}') from None
    if xml is None:
        raise ConfigError(f'app_id {args.app_id} is not in {table}')
    return f'{table}:{args.app_id}', args.app_id, xml


def run(args) -> int:
    from contracts import compile_contract
    from contracts.explain import explain, render
    from transforms.errors import StageError
    from transforms.parse import ParseSpec, parse_document
    from transforms.records import Doc
    from transforms.validate import validate_document
    contract = load_contract_or_fail(args.contract)
    compiled = compile_contract(contract)
    source, app_id, xml = _document(args, contract)
    try:
        doc = validate_document(Doc(source, app_id, xml), root_element=contract.root_element)
        parsed = parse_document(doc, ParseSpec.from_contract(contract, compiled, mode=args.parse_mode))
    except StageError as e:
        report = {'app_id': app_id, 'status': 'failed', 'reason': f'{e.stage}: {e.reason}', 'columns': [],
                  'notes': [], 'rows': {}, 'warnings': []}
    else:
        report = explain(compiled, parsed.root, app_id=parsed.app_id)
    if args.as_json:
        print(json.dumps(report, default=str, indent=1))
    else:
        print(render(report, shapes=args.shapes), end='')
    return 0 if report['status'] == 'ok' else 4
