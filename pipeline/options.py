"""Every option of the migration as a Beam PipelineOptions flag, with its help text and default."""
from apache_beam.options.pipeline_options import PipelineOptions

DEFAULT_BATCH_SIZE = 200          # documents' row groups per GroupIntoBatches batch (per table)
DEFAULT_PARTITIONS = 8            # app_id partitions of a table source
DEFAULT_FETCH_SIZE = 100          # rows per keyset page of a table source
DEFAULT_MAX_DOC_MB = 16.0
DEFAULT_MAX_DEPTH = 256
DEFAULT_MAX_ELEMENTS = 500_000
DEFAULT_MAX_ATTRIBUTES = 1_000
DEFAULT_MAX_PARSE_SECONDS = 20.0
DEFAULT_CHUNK_DOCS = 20000        # documents per pipeline run on local runners (bounded memory)
# Above this fraction of the documents read going to the dead letter, the run exits 4 (README: exit codes). Bad
# input is a few percent (the sample generator breaks 2 %); a systematic fault (wrong contract or source column,
# a target column too short for every value) fails most documents. 0.1 sits between the two: a run that loses one
# document in ten is reported as failed instead of ending 0 unnoticed; a known dirty source raises it.
DEFAULT_MAX_DEAD_LETTER_RATE = 0.1


def _int_or_none(v):
    return None if v in (None, '') else int(v)


class MigrationOptions(PipelineOptions):
    """Options of `python -m pipeline run` (Beam's own options, e.g. --runner, pass through)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        g = parser.add_argument_group('what to migrate')
        g.add_argument('--contract', required=False,
                       help='Mapping contract (JSON, the existing system\'s format). A path, or the name of a '
                            'sample shipped with the package (e.g. credit_app).')
        g.add_argument('--source', required=False,
                       help='Where the documents are: sqlite:///PATH or odbc:<connection string> (reads app_id and '
                            'the XML column from the contract\'s source_table), or a folder / glob of .xml files.')
        g.add_argument('--source-table', dest='source_table', default=None,
                       help='Source table instead of the contract\'s source_table ([schema.]table).')
        g.add_argument('--source-column', dest='source_column', default=None,
                       help='XML column instead of the contract\'s source_column.')
        g.add_argument('--record-element', dest='record_element', default=None,
                       help='When --source is one XML file holding many documents (its root is not the contract\'s '
                            'root element), the element that is one document. Default: the contract\'s '
                            'xml_root_element (e.g. Provenir). The file is streamed in constant memory.')
        g.add_argument('--target', required=False,
                       help='Database to write to: sqlite:///PATH or odbc:<connection string>. ${VAR} in the string '
                            'is taken from the environment (keep passwords there). Passwords are never printed.')
        g.add_argument('--dialect', default=None, choices=['sqlite', 'postgresql', 'mssql'],
                       help='SQL dialect of an odbc: target/source when the driver name does not tell.')
        g.add_argument('--tables', default=None,
                       help='Table spec (JSON, like tables.json) used to create missing target tables with '
                            '--create-tables. Without it the target\'s own tables are introspected.')
        g.add_argument('--create-tables', dest='create_tables', action='store_true', default=False,
                       help='Create the missing target tables this contract writes (from --tables; reference tables and FKs to them are left out) plus processing_log and dead_letter '
                            'before the run; processing_log / dead_letter created by an earlier version are upgraded '
                            '(columns added, duplicate rows merged, unique keys added).')

        g = parser.add_argument_group('which documents')
        g.add_argument('--app-id-start', dest='app_id_start', type=_int_or_none, default=None,
                       help='First app_id to read (inclusive; table sources).')
        g.add_argument('--app-id-end', dest='app_id_end', type=_int_or_none, default=None,
                       help='Last app_id to read (inclusive; table sources).')
        g.add_argument('--limit', type=_int_or_none, default=None,
                       help='Read at most this many documents (the lowest app_ids / first files).')
        g.add_argument('--shard-count', dest='shard_count', type=_int_or_none, default=None,
                       help='Modulo sharding: this run reads only app_id %% shard-count = shard-index.')
        g.add_argument('--shard-index', dest='shard_index', type=_int_or_none, default=None,
                       help='Modulo sharding: which shard this run reads (0 .. shard-count-1).')
        g.add_argument('--resume', dest='resume', action='store_true', default=True,
                       help='Skip documents already marked success in the target\'s processing_log with the same '
                            'content hash (default); changed documents are migrated again and replace their rows.')
        g.add_argument('--no-resume', dest='resume', action='store_false',
                       help='Re-process every document (a document migrated before has its rows replaced, so '
                            'nothing is duplicated or left stale).')

        g = parser.add_argument_group('tuning')
        g.add_argument('--batch-size', dest='batch_size', type=int, default=DEFAULT_BATCH_SIZE,
                       help='Documents per sink batch and transaction, per table (GroupIntoBatches). '
                            f'Default {DEFAULT_BATCH_SIZE}.')
        g.add_argument('--partitions', type=int, default=DEFAULT_PARTITIONS,
                       help=f'app_id partitions of a table source, each read by its own connection. '
                            f'Default {DEFAULT_PARTITIONS}.')
        g.add_argument('--fetch-size', dest='fetch_size', type=int, default=DEFAULT_FETCH_SIZE,
                       help=f'Rows per page when reading a table source. Default {DEFAULT_FETCH_SIZE}.')
        g.add_argument('--processes', type=int, default=1,
                       help='Local runs: split the job into this many shard processes (app_id modulo for table '
                            'sources, every N-th file for folders), run side by side on one machine, one summary. '
                            'This is what uses several cores with the DirectRunner: its multi_processing mode runs '
                            'this graph\'s stages one after another and was no faster here. Default 1.')
        g.add_argument('--chunk-docs', dest='chunk_docs', type=int, default=None,
                       help='Run the job as successive pipeline runs of at most this many documents, so memory '
                            'stays flat however large the source (local runners keep a stage\'s output in memory). '
                            f'0 = one run. Default {DEFAULT_CHUNK_DOCS} on DirectRunner, 0 on other runners '
                            '(a cluster spills to disk, and each submission costs a job start).')
        g.add_argument('--parse-mode', dest='parse_mode', choices=['partial', 'full'], default='partial',
                       help='partial (default): build a tree only of the part of a document up to the end of the '
                            'last element the contract reads, and check the rest for well-formedness without '
                            'building one. full: build the tree of the whole document. Both give the same rows and '
                            'outcomes (every document is checked well-formed in both); partial is faster.')

        g = parser.add_argument_group('limits per document (exceeding one dead-letters the document)')
        g.add_argument('--max-doc-mb', dest='max_doc_mb', type=float, default=DEFAULT_MAX_DOC_MB,
                       help=f'Largest document accepted, in MB. Default {DEFAULT_MAX_DOC_MB:g}.')
        g.add_argument('--max-depth', dest='max_depth', type=int, default=DEFAULT_MAX_DEPTH,
                       help=f'Deepest element nesting accepted (at most 256). Default {DEFAULT_MAX_DEPTH}.')
        g.add_argument('--max-elements', dest='max_elements', type=int, default=DEFAULT_MAX_ELEMENTS,
                       help='Most tags (elements) in one document; bounds the memory of its tree. '
                            f'Default {DEFAULT_MAX_ELEMENTS}.')
        g.add_argument('--max-attributes', dest='max_attributes', type=int, default=DEFAULT_MAX_ATTRIBUTES,
                       help=f'Most attributes on one element. Default {DEFAULT_MAX_ATTRIBUTES}.')
        g.add_argument('--max-parse-seconds', dest='max_parse_seconds', type=float,
                       default=DEFAULT_MAX_PARSE_SECONDS,
                       help='Longest decoding + parse of one document, in seconds (checked every 16 KB; 0 turns it '
                            f'off). Default {DEFAULT_MAX_PARSE_SECONDS:g}.')

        g = parser.add_argument_group('outputs and reporting')
        g.add_argument('--dead-letter', dest='dead_letter', default=None,
                       help='Also write dead letters (stage, reason, original XML) to this JSONL file. They always '
                            'go to the target\'s dead_letter table.')
        g.add_argument('--summary-json', dest='summary_json', default=None,
                       help='Write the run summary (the SUMMARY line\'s fields and more) to this JSON file.')
        g.add_argument('--metrics-json', dest='metrics_json', default=None,
                       help='Write every counter (by stage and reason, rows per table, failed app_ids, elapsed, '
                            'docs/min) to this JSON file.')
        g.add_argument('--session-id', dest='session_id', default=None,
                       help='Label written to processing_log.session_id. Default: a timestamp and a random '
                            'suffix, unique per run.')
        g.add_argument('--max-dead-letter-rate', dest='max_dead_letter_rate', type=float,
                       default=DEFAULT_MAX_DEAD_LETTER_RATE,
                       help='Highest fraction (0..1) of the documents read that may go to the dead letter for the '
                            'run to exit 0; above it the run still completes (every other document is written) '
                            'but exits 4. A run that read documents and wrote none exits 4 whatever this says. '
                            f'Default {DEFAULT_MAX_DEAD_LETTER_RATE:g}: a few percent is bad input, most '
                            'documents failing is a fault to look at.')
        g.add_argument('--progress-seconds', dest='progress_seconds', type=float, default=10.0,
                       help='Seconds between progress lines on long runs (0 turns them off). Default 10.')
