"""Every option of every command, declared once, with its help text and default.

`MigrationOptions` is a Beam `PipelineOptions` class: `PipelineOptions(argv).view_as(MigrationOptions)` is the one
source of a run's settings (`pipeline.config.RunConfig.from_options` validates them once). Each command shows and
accepts only the option groups it uses (`command_parser`); an option no group and no Beam options class knows is an
error (exit 2), not a warning.
"""
import argparse
import sys

from apache_beam.options.pipeline_options import PipelineOptions

DEFAULT_BATCH_SIZE = 200          # documents' row groups per GroupIntoBatches batch (per table)
DEFAULT_PARTITIONS = 8            # app_id partitions of a table source
DEFAULT_FETCH_SIZE = 100          # rows per keyset page of a table source
DEFAULT_SINK_SHARDS = 4           # GroupIntoBatches keys per table: (table, shard)
DEFAULT_MAX_DOC_MB = 16.0
DEFAULT_MAX_DEPTH = 256
DEFAULT_MAX_ELEMENTS = 500_000
DEFAULT_MAX_ATTRIBUTES = 1_000
DEFAULT_MAX_PARSE_SECONDS = 20.0
DEFAULT_CHUNK_DOCS = 20000        # documents per pipeline run on local runners (bounded memory)
DEFAULT_PROGRESS_SECONDS = 10.0
# Above this fraction of the documents read going to the dead letter, the run exits 4 (README: exit codes). Bad
# input is a few percent (the sample generator breaks 2 %); a systematic fault (wrong contract or source column,
# a target column too short for every value) fails most documents. 0.1 sits between the two: a run that loses one
# document in ten is reported as failed instead of ending 0 unnoticed; a known dirty source raises it.
DEFAULT_MAX_DEAD_LETTER_RATE = 0.1


def _int_or_none(v):
    return None if v in (None, '') else int(v)


class Parser(argparse.ArgumentParser):
    """The parser of every command: a usage error is one `error:` line naming the command's --help (exit 2), not
    argparse's usage block; options are never abbreviated (`--dead` is not `--dead-letter`, `--no` not
    `--no-resume`): a mistyped option is an error, never a guess."""

    def __init__(self, *args, **kw):
        kw.setdefault('allow_abbrev', False)
        super().__init__(*args, **kw)

    def error(self, message):
        raise SystemExit(usage_error(self.prog, message))


def _contract(g):
    g.add_argument('--contract', default=None,
                   help='Mapping contract (JSON, the existing system\'s format). A path, or the name of a sample '
                        'shipped with the package (e.g. credit_app).')


def _source(g):
    g.add_argument('--source', default=None,
                   help='Where the documents are: sqlite:///PATH or odbc:<connection string> (reads app_id and the '
                        'XML column from the contract\'s source_table), a folder / glob of .xml files, or one XML '
                        'file holding many documents.')
    g.add_argument('--source-table', dest='source_table', default=None,
                   help='Source table instead of the contract\'s source_table ([schema.]table).')
    g.add_argument('--source-column', dest='source_column', default=None,
                   help='XML column instead of the contract\'s source_column.')
    g.add_argument('--record-element', dest='record_element', default=None,
                   help='When --source is one XML file holding many documents (its root is not the contract\'s root '
                        'element), the element that is one document. Default: the contract\'s xml_root_element '
                        '(e.g. Provenir). The file is streamed in constant memory.')


def _dialect(g):
    g.add_argument('--dialect', default=None, choices=['sqlite', 'postgresql', 'mssql'],
                   help='SQL dialect of an odbc: target/source when the driver name does not tell.')


def _target(g):
    g.add_argument('--target', default=None,
                   help='Database to write to: sqlite:///PATH or odbc:<connection string>. ${VAR} in the string is '
                        'taken from the environment (keep passwords there). Passwords are never printed.')


def _tables(g, create=True):
    g.add_argument('--tables', default=None,
                   help='Table spec (JSON, like tables.json, or a sample name such as credit_app_tables) used to '
                        'create missing target tables. Without it the target\'s own tables are introspected.')
    if create:
        g.add_argument('--create-tables', dest='create_tables', action='store_true', default=False,
                       help='Create the missing target tables this contract writes (from --tables; reference tables '
                            'and FKs to them are left out) plus processing_log and dead_letter before the run, and '
                            'upgrade those two when an earlier version created them.')


def _selection(g, table_only_note=True):
    g.add_argument('--app-id-start', dest='app_id_start', type=_int_or_none, default=None,
                   help='First app_id to read (inclusive; table sources only).')
    g.add_argument('--app-id-end', dest='app_id_end', type=_int_or_none, default=None,
                   help='Last app_id to read (inclusive; table sources only).')
    g.add_argument('--limit', type=_int_or_none, default=None,
                   help='Read at most this many documents (the lowest app_ids / first files).')
    g.add_argument('--shard-count', dest='shard_count', type=_int_or_none, default=None,
                   help='Sharding: this run reads only the app_ids of one shard of shard-count (table sources: a hash '
                        'of the app_id, even shares also when app_ids step by shard-count; folders: the same hash of '
                        'the app_id read from the start of each file, so all files of one app_id share a shard; '
                        'a file without one there goes by its position). Every shard of one job must run the '
                        'same version.')
    g.add_argument('--shard-index', dest='shard_index', type=_int_or_none, default=None,
                   help='Sharding: which shard this run reads (0 .. shard-count-1).')
    g.add_argument('--app-ids', dest='app_ids', default=None,
                   help='Read only these app_ids: a file with one app_id per line (table sources).')


def _resume(g):
    g.add_argument('--resume', dest='resume', action='store_true', default=True,
                   help='Skip documents already success in the target\'s processing_log with the same content hash; '
                        'documents whose content changed are migrated again and replace their rows (default).')
    g.add_argument('--no-resume', dest='resume', action='store_false',
                   help='Process every document again (rows are replaced, nothing is duplicated).')
    g.add_argument('--only-failed', dest='only_failed', action='store_true', default=False,
                   help='Read only the documents that failed: of a table source, the app_ids whose latest '
                        'processing_log status is failed (selected before any XML is read); of a folder of files, the '
                        'files the target\'s dead_letter table holds now (a file whose document succeeded since has '
                        'no dead_letter row). Not for one file of many documents.')


def _tuning(g, sink=True):
    if sink:
        g.add_argument('--batch-size', dest='batch_size', type=int, default=DEFAULT_BATCH_SIZE,
                       help='Documents per sink batch and transaction, per table (GroupIntoBatches; at most: bundles of '
                            'fewer than 50 documents make smaller batches). '
                            f'Default {DEFAULT_BATCH_SIZE}.')
        g.add_argument('--sink-shards', dest='sink_shards', type=int, default=DEFAULT_SINK_SHARDS,
                       help='GroupIntoBatches keys per table, (table, shard): on a cluster each key is written by '
                            f'one worker at a time. Default {DEFAULT_SINK_SHARDS}.')
        g.add_argument('--partitions', type=int, default=None,
                       help=f'app_id partitions of a table source, each read by its own connection. '
                            f'Default {DEFAULT_PARTITIONS}.')
        g.add_argument('--fetch-size', dest='fetch_size', type=int, default=None,
                       help=f'Rows per page when reading a table source. Default {DEFAULT_FETCH_SIZE}.')
        g.add_argument('--processes', type=int, default=1,
                       help='Local runs: split the job into this many shard processes (an app_id hash for table '
                            'sources and for folders, whose files are assigned by the app_id at their start), run side '
                            'by side on one machine, one summary. '
                            'This is how to use several cores with the DirectRunner (docs/benchmarks.md). '
                            'Default 1.')
    g.add_argument('--chunk-docs', dest='chunk_docs', type=int, default=None,
                   help='Run the job as successive pipeline runs of at most this many documents, so memory stays '
                        'flat however large the source (local runners keep a stage\'s output in memory). 0 = one '
                        f'run. Default {DEFAULT_CHUNK_DOCS} on DirectRunner, 0 on other runners (a cluster spills '
                        'to disk, and each submission costs a job start).')
    g.add_argument('--parse-mode', dest='parse_mode', choices=['partial', 'full'], default='partial',
                   help='partial (default): build a tree only of the part of a document up to the end of the last '
                        'element the contract reads, and check the rest for well-formedness without building one. '
                        'full: build the tree of the whole document. Both give the same rows and outcomes (every '
                        'document is checked well-formed in both); partial is faster.')


def _limits(g):
    g.add_argument('--max-doc-mb', dest='max_doc_mb', type=float, default=DEFAULT_MAX_DOC_MB,
                   help=f'Largest document accepted, in MB. Default {DEFAULT_MAX_DOC_MB:g}.')
    g.add_argument('--max-depth', dest='max_depth', type=int, default=DEFAULT_MAX_DEPTH,
                   help=f'Deepest element nesting accepted (at most 256). Default {DEFAULT_MAX_DEPTH}.')
    g.add_argument('--max-elements', dest='max_elements', type=int, default=DEFAULT_MAX_ELEMENTS,
                   help='Most tags (elements) in one document; bounds the memory of its tree. '
                        f'Default {DEFAULT_MAX_ELEMENTS}.')
    g.add_argument('--max-attributes', dest='max_attributes', type=int, default=DEFAULT_MAX_ATTRIBUTES,
                   help=f'Most attributes on one element. Default {DEFAULT_MAX_ATTRIBUTES}.')
    g.add_argument('--max-parse-seconds', dest='max_parse_seconds', type=float, default=DEFAULT_MAX_PARSE_SECONDS,
                   help='Longest decoding + parse of one document, in seconds (checked every 16 KB; 0 turns it off). '
                        f'Default {DEFAULT_MAX_PARSE_SECONDS:g}.')


def _outputs(g, run=True):
    g.add_argument('--dead-letter', dest='dead_letter', default=None,
                   help='Also write dead letters (stage, reason, original XML) to this JSONL file'
                        + (' (they always go to the target\'s dead_letter table).' if run else '.'))
    g.add_argument('--status', default=None,
                   help='Also write the outcome of every document (status, stage, reason, rows, data-quality '
                        'warnings) to this JSONL file.')
    g.add_argument('--summary-json', dest='summary_json', default=None,
                   help='Write the run summary (the SUMMARY line\'s fields and more) to this JSON file.')
    g.add_argument('--metrics-json', dest='metrics_json', default=None,
                   help='Write counts by stage and reason, rows per table, the failed documents (ids, stage, '
                        'reason) and the warnings by field to this JSON file.')
    g.add_argument('--report', default=None,
                   help='Write a self-contained HTML report of the run (counts, dead letters by stage and reason, '
                        'warnings by field, throughput over time, options) to this file.')
    g.add_argument('--work-dir', dest='work_dir', default=None,
                   help='Where the workers write the run\'s counts and part files: a local folder or any path '
                        'Beam\'s FileSystems reach (gs://..., s3://...) that every worker shares. Default: a '
                        'temporary folder on this machine (fine for local runners).')
    g.add_argument('--progress-seconds', dest='progress_seconds', type=float, default=DEFAULT_PROGRESS_SECONDS,
                   help='Seconds between progress lines on stderr (DirectRunner), counted inside a chunk too: '
                        '"progress: D of N documents (P%%): R read, S skipped as done, F finished; '
                        'X docs/min, ETA T s"; with several chunks also one line per chunk. 0 turns them off. '
                        f'Default {DEFAULT_PROGRESS_SECONDS:g}.')
    if run:
        g.add_argument('--max-dead-letter-rate', dest='max_dead_letter_rate', type=float,
                       default=DEFAULT_MAX_DEAD_LETTER_RATE,
                       help='Exit 4 when more than this fraction of the documents read goes to the dead letter (a '
                            'run that read documents and wrote none always exits 4). Default '
                            f'{DEFAULT_MAX_DEAD_LETTER_RATE:g}; 1 turns the rate check off.')
        g.add_argument('--session-id', dest='session_id', default=None,
                       help='Label written to processing_log.session_id. Default: run-<UTC time>-<random>.')


def _log_level(g):
    g.add_argument('--log-level', dest='log_level', default='INFO', choices=['DEBUG', 'INFO', 'WARNING', 'ERROR'],
                   help='Log level of this product\'s loggers (default INFO; Beam\'s own stay at WARNING). Logs '
                        'never contain row values.')


def _map_io(g):
    g.add_argument('--input', default=None, help='Folder or glob of .xml files, or one XML file of many documents.')
    g.add_argument('--output', default=None, help='JSONL file for the rows: {"file","app_id","table","row"}.')


def _verify(g):
    g.add_argument('--sample', type=_int_or_none, default=None,
                   help='Compare only this many documents of the source (every n-th app_id / file), not all.')
    g.add_argument('--json', dest='verify_json', default=None,
                   help='Write the comparison (per table: rows matching, missing, extra, differing cells by column, '
                        'and the first 50 problems with app_id, primary key and columns; documents with rows but '
                        'no success in the ledger) to this JSON file.')


# command -> the option groups it shows and accepts (each: (title, adder))
GROUPS = {
    'run': [('what to migrate', lambda g: (_contract(g), _source(g), _target(g), _dialect(g), _tables(g))),
            ('which documents', lambda g: (_selection(g), _resume(g))),
            ('tuning', _tuning),
            ('limits per document (exceeding one dead-letters the document)', _limits),
            ('outputs and reporting', lambda g: (_outputs(g), _log_level(g)))],
    'map': [('what to map', lambda g: (_contract(g), _map_io(g), _source(g))),
            ('which documents', lambda g: g.add_argument('--limit', type=_int_or_none, default=None,
                                                         help='Map at most this many documents (the first files).')),
            ('tuning', lambda g: _tuning(g, sink=False)),
            ('limits per document (exceeding one dead-letters the document)', _limits),
            ('outputs and reporting', lambda g: (_outputs(g, run=False), _log_level(g)))],
    'verify': [('what to compare', lambda g: (_contract(g), _source(g), _target(g), _dialect(g))),
               ('which documents', lambda g: (_selection(g), _verify(g))),
               ('tuning', lambda g: (_tuning(g, sink=False),
                                     g.add_argument('--partitions', type=int, default=None,
                                                    help='app_id partitions of a table source. '
                                                         f'Default {DEFAULT_PARTITIONS}.'),
                                     g.add_argument('--fetch-size', dest='fetch_size', type=int,
                                                    default=None,
                                                    help=f'Rows per page of a table source. '
                                                         f'Default {DEFAULT_FETCH_SIZE}.'))),
               ('limits per document', _limits),
               ('logging', _log_level)],
}


def add_groups(parser, command):
    for title, add in GROUPS[command]:
        add(parser.add_argument_group(title))


class MigrationOptions(PipelineOptions):
    """The options of `python -m pipeline run` as Beam pipeline options (Beam's own, e.g. --runner, pass
    through). `PipelineOptions(argv).view_as(MigrationOptions)`."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_groups(parser, 'run')


def _beam_parser():
    """A parser of every flag Beam's own options classes define (--runner, --job_endpoint, --flink_master, ...),
    strict like ours: no abbreviations, a usage error is one line."""
    global _BEAM_PARSER
    if _BEAM_PARSER is None:
        p = _RaisingParser(prog='Beam options', add_help=False, conflict_handler='resolve')
        todo, seen = list(PipelineOptions.__subclasses__()), set()
        while todo:
            cls = todo.pop()
            if cls in seen:
                continue
            seen.add(cls)
            todo.extend(cls.__subclasses__())
            if cls.__module__.startswith('apache_beam'):
                try:
                    cls._add_argparse_args(p)
                except argparse.ArgumentError:
                    pass
        _BEAM_PARSER = p
    return _BEAM_PARSER


_BEAM_PARSER = None


class _BeamUsage(Exception):
    pass


class _RaisingParser(Parser):
    def error(self, message):
        raise _BeamUsage(message)


def split_beam_args(extra, prog):
    """The arguments our parser left over must all be Beam options, with valid values; anything else is an
    unknown option: an error naming it (exit 2, one line), so that '--dead-leter' or '--batchsize' never run
    with a warning, and Beam never prints its own usage block. Returns the Beam arguments."""
    if not extra:
        return []
    try:
        _, unknown = _beam_parser().parse_known_args(list(extra))
    except _BeamUsage as e:
        raise SystemExit(usage_error(prog, str(e))) from None
    if unknown:
        raise SystemExit(usage_error(prog, f'unrecognized arguments: {" ".join(unknown)}'))
    return list(extra)


def usage_error(prog, msg):
    """Print one `error:` line for a usage error of command `prog`; returns the exit status (2)."""
    print(f'error: {msg} (`{prog} --help` lists the options)', file=sys.stderr)
    return 2
