"""Command line: `python -m pipeline COMMAND ...` (also installed as `xml-migrate`).

  run            migrate documents from a source into a SQL target
  map            write the mapped rows as JSONL, no database
  verify         re-map the source and compare with what the target holds, table by table, column by column
  check          check a contract (and a target against it) before any data moves
  explain        show every mapping of one document: path, raw value, each step, final value, why not written
  create-tables  create the target tables of a contract's table spec (and the tool's own tables)
  generate       write sample documents

Exit status (README: "Exit status"): 0 done; 1 stopped by an infrastructure fault (re-run to resume); 2
configuration error, before any data moves; 3 the invariant read = written + dead_lettered broke; 4 done, but too
many documents went to the dead letter (--max-dead-letter-rate) or none was written (verify: the target differs);
130 / 143 stopped cleanly by SIGINT / SIGTERM. Every non-zero status comes with one `error:` line on stderr.
"""
import argparse
import logging
import sys

from pipeline import __version__ as VERSION
from pipeline.config import ConfigError, RunConfig, load_contract_or_fail, resolve_sample
from pipeline.guard import EXIT_CONFIG, ScrubLogs, remember_secrets, run_guarded, setup_logging

log = logging.getLogger('pipeline')

EPILOG = ('Any Apache Beam pipeline option may follow (they are passed to Beam), e.g. --runner=PortableRunner '
          '--job_endpoint=localhost:8099 --environment_type=LOOPBACK; deploy/portable_local.sh runs Flink, Spark and '
          'Prism locally. The default runner is DirectRunner, run as Beam\'s FnApiRunner in this process. Exit '
          'status: 0 done; 1 stopped by an infrastructure fault (re-run to resume); 2 configuration error; 3 read != '
          'written + dead_lettered; 4 more than --max-dead-letter-rate dead-lettered, or nothing written; 130 / 143 '
          'stopped cleanly by SIGINT / SIGTERM (re-run to resume).')


# ============================================================================================= parsing

def command_parser(command, description, usage_args=''):
    from pipeline.options import Parser, add_groups
    ap = Parser(prog=f'python -m pipeline {command}', description=description, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_groups(ap, command)
    return ap


def parse_run_options(command, description, argv) -> RunConfig:
    """The options of run / map / verify: argparse for ours, Beam's for the rest; anything unknown is an error
    (exit 2). Validated once into a RunConfig."""
    from pipeline.options import split_beam_args
    ap = command_parser(command, description)
    ns, extra = ap.parse_known_args(argv)
    beam_args = split_beam_args(extra, ap.prog)
    return RunConfig.from_options(command, ns, beam_args)


def _parser(**kw):
    from pipeline.options import Parser
    return Parser(**kw)


# ============================================================================================= commands

def cmd_run(argv):
    from pipeline import orchestrate
    from pipeline.shard import run_shard
    cfg = parse_run_options('run', 'Migrate XML documents from a source into SQL tables, as the contract maps '
                                   'them.', argv)
    setup_logging(cfg.log_level, cfg)
    return orchestrate.run(cfg, shard_main=run_shard)


def cmd_map(argv):
    from pipeline import orchestrate
    from pipeline.shard import run_shard
    cfg = parse_run_options('map', 'Map XML files with a contract and write every row as JSONL (no database).',
                            argv)
    setup_logging(cfg.log_level, cfg)
    return orchestrate.run(cfg, shard_main=run_shard)


def cmd_verify(argv):
    from pipeline import verify
    cfg = parse_run_options('verify', 'Source-first reconciliation: re-map the documents of the source (or a '
                                      'sample) and compare with what the target holds for those app_ids, table by '
                                      'table and column by column; exit 0 only when they agree.', argv)
    setup_logging(cfg.log_level, cfg)
    return verify.run(cfg)


def cmd_check(argv):
    from pipeline import check
    ap = _parser(prog='python -m pipeline check',
                 description='Check a contract, and a target against it, before any data moves: '
                             'the contract\'s own validation; every column exists; types and '
                             'string lengths fit; the tables foreign keys point to are not empty. '
                             'One line per problem; exit 0 when there is none.')
    ap.add_argument('--contract', required=True, help='Mapping contract: a path or a sample name (credit_app).')
    ap.add_argument('--target', default=None, help='sqlite:///PATH or odbc:<connection string> (optional: without '
                                                   'it only the contract is checked).')
    ap.add_argument('--dialect', default=None, choices=['sqlite', 'postgresql', 'mssql'],
                    help='Dialect when the ODBC driver name does not tell.')
    args = ap.parse_args(argv)
    setup_logging('WARNING')
    remember_secrets(args.target)
    return check.run(args.contract, args.target, args.dialect)


def cmd_explain(argv):
    from pipeline import explain
    ap = _parser(prog='python -m pipeline explain',
                 description='Every mapping of one document: target table.column, XML path and '
                             'attribute, the raw value, each step of the mapping chain with its '
                             'result, the final value, and why a row or column was not written. '
                             'It prints the document\'s values (personal data): --shapes prints '
                             'their shapes instead (05-10-1978 -> 99-99-9999). Exit status: 0 '
                             'the document maps; 4 it would be dead-lettered (the stage and '
                             'reason are printed); 2 no such file, app_id or source table.')
    ap.add_argument('file', nargs='?', help='The XML document (a file).')
    ap.add_argument('--contract', required=True, help='Mapping contract: a path or a sample name (credit_app).')
    ap.add_argument('--source', default=None, help='A table source (sqlite:///PATH or odbc:...) to read the '
                                                   'document from, with --app-id.')
    ap.add_argument('--app-id', dest='app_id', type=int, default=None, help='The document\'s app_id in --source.')
    ap.add_argument('--source-table', dest='source_table', default=None,
                    help='Source table instead of the contract\'s source_table ([schema.]table).')
    ap.add_argument('--source-column', dest='source_column', default=None,
                    help='XML column instead of the contract\'s source_column.')
    ap.add_argument('--dialect', default=None, choices=['sqlite', 'postgresql', 'mssql'],
                    help='Dialect of an odbc: source when the driver name does not tell.')
    ap.add_argument('--parse-mode', dest='parse_mode', choices=['partial', 'full'], default='partial',
                    help='As for run (the same rows either way).')
    ap.add_argument('--shapes', action='store_true', help='Print the shapes of values, not the values.')
    ap.add_argument('--json', dest='as_json', action='store_true', help='Print the trace as JSON.')
    args = ap.parse_args(argv)
    setup_logging('WARNING')
    if (args.file is None) == (args.source is None):
        raise ConfigError('explain needs a FILE, or --source with --app-id')
    if args.source is not None and args.app_id is None:
        raise ConfigError('--source needs --app-id')
    return explain.run(args)


def cmd_create_tables(argv):
    from transforms.sql.plan import create_target_tables, tables_to_create, target_schema
    from transforms.sql.targets import parse_target
    ap = _parser(prog='python -m pipeline create-tables',
                 description='Create the target tables a contract writes, from a table spec, plus the tool\'s own '
                             'processing_log and dead_letter, in the contract\'s target_schema. Reference tables '
                             '(e.g. app_enums) and foreign keys to them are left out, as `run --create-tables` '
                             'does. Tables that exist are left alone, except processing_log / dead_letter created '
                             'by an earlier version, which are upgraded. Prints one line per table: created, '
                             'already there, or not created and why.')
    ap.add_argument('--tables', required=True, help='Table spec (JSON, like tables.json) or a sample name '
                                                    '(credit_app_tables).')
    ap.add_argument('--contract', default=None,
                    help='The contract whose tables to create (its table_insertion_order) and whose target_schema '
                         'to use. Without it: every table of the spec, in --schema.')
    ap.add_argument('--target', default=None, help='sqlite:///PATH or odbc:<connection string> (not needed with '
                                                   '--print).')
    ap.add_argument('--schema', default=None, help='Schema to create them in instead of the contract\'s '
                                                   'target_schema (ignored by SQLite).')
    ap.add_argument('--dialect', default=None, choices=['sqlite', 'postgresql', 'mssql'],
                    help='Dialect when the ODBC driver name does not tell; with --print and no --target, the '
                         'dialect to print (default sqlite).')
    ap.add_argument('--skip-tables', dest='skip_tables', default='',
                    help='Comma-separated tables of the spec not to create; foreign keys to them are left out.')
    ap.add_argument('--print', dest='print_only', action='store_true',
                    help='Print the DDL (one statement per paragraph, ending with ;) instead of running it.')
    args = ap.parse_args(argv)
    setup_logging('INFO')
    if not args.target and not args.print_only:
        raise ConfigError('--target is required (or --print to see the statements)')
    remember_secrets(args.target)
    contract = load_contract_or_fail(args.contract) if args.contract else None
    skip = [t.strip() for t in args.skip_tables.split(',') if t.strip()]
    only = [t for t in contract.table_order] if contract is not None else None
    schema = args.schema if args.schema is not None else (contract.target_schema if contract is not None else None)
    dialect = args.dialect or (None if args.target else 'sqlite')
    if args.target:
        schema = target_schema(parse_target(args.target, dialect=args.dialect), schema)
    spec_path = resolve_sample(args.tables, 'table spec')
    if args.print_only:
        stmts = create_target_tables(args.target, spec_path, schema=schema, dialect=dialect, execute=False,
                                     skip_tables=skip, only_tables=only)
        try:
            for st in stmts:
                sys.stdout.write(st.rstrip().rstrip(';') + ';\n\n')
            sys.stdout.flush()
        except BrokenPipeError:          # `... --print | head`: the reader went away, that is fine
            import os
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    target = parse_target(args.target, dialect=args.dialect)
    names = tables_to_create(spec_path, skip_tables=skip, only_tables=only)
    before = _existing_tables(target, schema, names)
    create_target_tables(args.target, spec_path, schema=schema, dialect=dialect, skip_tables=skip,
                         only_tables=only)
    after = _existing_tables(target, schema, names)
    where = f' (schema {schema})' if schema else ''
    print(f'create-tables: {target.display}{where}')
    for t in names:
        if t in before:
            print(f'  {t}: already there, left as it is')
        elif t in after:
            print(f'  {t}: created')
        else:                                   # not expected: the statements ran in one committed transaction
            raise RuntimeError(f'{t} is not in the target after create-tables')
    from transforms.sql.meta import load_table_spec, reference_tables
    refs = set(reference_tables(spec_path))
    for t in load_table_spec(spec_path):
        if t not in names:
            why = ('a reference table of the spec' if t in refs else 'in --skip-tables' if t in skip
                   else 'the contract does not write it')
            print(f'  {t}: not created ({why}; foreign keys to it are left out)')
    return 0


def _existing_tables(target, schema, names):
    conn = target.connect()
    try:
        return {t for t in names if target.dialect.introspect_table(conn, schema, t) is not None}
    finally:
        conn.close()


def cmd_generate(argv):
    from contracts.samples import generate
    from pipeline.options import Parser
    return generate.main(argv, prog='python -m pipeline generate', parser_class=Parser) or 0


COMMANDS = {'run': cmd_run, 'map': cmd_map, 'verify': cmd_verify, 'check': cmd_check, 'explain': cmd_explain,
            'create-tables': cmd_create_tables, 'generate': cmd_generate}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.getLogger().addFilter(ScrubLogs())
    if argv and argv[0] in ('--version', '-V'):
        print(f'xml-sql-migrate {VERSION}')
        return 0
    if not argv or argv[0] in ('-h', '--help') or argv[0] not in COMMANDS:
        out = sys.stdout if argv and argv[0] in ('-h', '--help') else sys.stderr
        if argv and argv[0] not in ('-h', '--help'):
            print(f'error: unknown command {argv[0]!r}', file=sys.stderr)
        print(__doc__.strip() + '\n\n`python -m pipeline COMMAND --help` describes every option of a command; '
              '`--version` prints the version.', file=out)
        return 0 if argv and argv[0] in ('-h', '--help') else EXIT_CONFIG
    return run_guarded(lambda: COMMANDS[argv[0]](argv[1:]))
