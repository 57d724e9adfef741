"""Command line: `python -m pipeline {run,map,create-tables,generate} ...`.

`run` migrates documents from a source into a SQL target; `map` writes the mapped rows as JSONL without a
database; `create-tables` creates target tables from a table spec; `generate` writes sample documents.
Configuration errors end with one clear line on stderr and exit status 2 before any data moves.
"""
import argparse
import datetime as dt
import json
import logging
import os
import sys
import time

EXIT_CONFIG = 2
DIRECT_RUNNERS = (None, 'DirectRunner', 'direct', 'FnApiRunner')    # all run as Beam's FnApiRunner here
EXIT_UNBALANCED = 3

log = logging.getLogger('pipeline')


class ConfigError(Exception):
    """Bad configuration: reported as one line, exit status 2."""


def _setup_logging(level):
    # force: importing Beam may already have given the root logger a handler (logging.warning on import)
    logging.basicConfig(force=True, level=getattr(logging, level), format='%(asctime)s %(levelname)s %(name)s: %(message)s',
                        stream=sys.stderr)
    # Beam's own loggers stay at WARNING whatever --log-level says: at DEBUG its workers print every element
    # they process (row values, i.e. personal data), and logs must never hold those.
    for noisy in ('apache_beam', 'apache_beam.runners', 'apache_beam.transforms'):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # 'Deleting 1 existing files in target path': our JSONL outputs are meant to be replaced on every run.
    logging.getLogger('apache_beam.io.filebasedsink').setLevel(logging.ERROR)


def resolve_contract_path(name_or_path):
    if os.path.exists(name_or_path):
        return name_or_path
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'contracts', 'samples')
    for cand in (os.path.join(here, name_or_path), os.path.join(here, name_or_path + '.json')):
        if os.path.exists(cand):
            return cand
    raise ConfigError(f'contract not found: {name_or_path!r} (a path, or a sample name such as credit_app)')


def load_contract_or_fail(name_or_path):
    from contracts import ContractError, load_contract
    path = resolve_contract_path(name_or_path)
    try:
        return load_contract(path)
    except ContractError as e:
        problems = [ln.strip(' -*') for ln in str(e).splitlines() if ln.strip(' -*')]
        raise ConfigError(f'bad contract {path}: ' + '; '.join(problems)) from None


def _is_direct(beam_args):
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    runner = PipelineOptions(beam_args).view_as(StandardOptions).runner
    return runner in DIRECT_RUNNERS


def make_runner(options):
    """DirectRunner means Beam's FnApiRunner here: the legacy direct runner that Beam falls back to for
    GroupIntoBatches is ~3x slower and loses metrics. Portable and cluster runners pass through unchanged."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
    runner = options.view_as(StandardOptions).runner
    mode = options.view_as(DirectOptions).direct_running_mode
    if runner in DIRECT_RUNNERS:
        if mode == 'multi_threading':
            raise ConfigError('--direct_running_mode=multi_threading is refused: it lost rows in our tests. '
                              'Use in_memory (default) or multi_processing.')
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        return FnApiRunner()
    return None   # Beam resolves --runner itself


def _common_options_parser(prog, description):
    from pipeline.options import MigrationOptions
    ap = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Any Apache Beam pipeline option may follow (they are passed to Beam), e.g. --runner=PortableRunner '
               '--job_endpoint=localhost:8099 --environment_type=LOOPBACK, or --direct_running_mode=multi_processing '
               '--direct_num_workers=2 to use two cores locally. The default runner is DirectRunner, run as Beam\'s '
               'FnApiRunner in this process.')
    MigrationOptions._add_argparse_args(ap)
    ap.add_argument('--log-level', dest='log_level', default='INFO',
                    choices=['DEBUG', 'INFO', 'WARNING', 'ERROR'], help='Log level of this product\'s loggers (default '
                    'INFO; Beam\'s own stay at WARNING). Logs never contain row values.')
    return ap


def _limits(args):
    from transforms.validate import Limits
    if args.max_depth > 256 or args.max_depth < 2:
        raise ConfigError('--max-depth must be between 2 and 256')
    if not args.max_doc_mb > 0:
        raise ConfigError('--max-doc-mb must be above 0')
    if args.max_elements < 1 or args.max_attributes < 1 or args.max_parse_seconds < 0:
        raise ConfigError('--max-elements and --max-attributes must be at least 1, --max-parse-seconds at least 0')
    return Limits(max_doc_bytes=int(args.max_doc_mb * 1024 * 1024), max_depth=args.max_depth,
                  max_elements=args.max_elements, max_attributes=args.max_attributes,
                  max_parse_seconds=args.max_parse_seconds)


def _read_options(args):
    from pipeline.sources import ReadOptions
    if (args.shard_count is None) != (args.shard_index is None):
        raise ConfigError('--shard-count and --shard-index go together')
    if args.shard_count is not None and not (args.shard_count >= 1 and 0 <= args.shard_index < args.shard_count):
        raise ConfigError('--shard-index must be in 0 .. shard-count-1')
    if args.app_id_start is not None and args.app_id_end is not None and args.app_id_start > args.app_id_end:
        raise ConfigError('--app-id-start is after --app-id-end')
    if args.limit is not None and args.limit < 1:
        raise ConfigError('--limit must be at least 1')
    if args.partitions < 1 or args.batch_size < 1 or args.fetch_size < 1:
        raise ConfigError('--partitions, --batch-size and --fetch-size must be at least 1')
    return ReadOptions(app_id_start=args.app_id_start, app_id_end=args.app_id_end, limit=args.limit,
                       partitions=args.partitions, shard_count=args.shard_count, shard_index=args.shard_index,
                       fetch_size=args.fetch_size, resume=args.resume)


def _make_source(args, contract, target_url=None, schema=None):
    from pipeline.sources import SourceError, make_source
    from pipeline.options import DEFAULT_CHUNK_DOCS
    if args.chunk_docs is None:
        args.chunk_docs = DEFAULT_CHUNK_DOCS if _is_direct(getattr(args, 'beam_args', [])) else 0
    if args.chunk_docs < 0:
        raise ConfigError('--chunk-docs must be 0 (one run) or more')
    try:
        return make_source(args.source, contract, source_table=args.source_table, source_column=args.source_column,
                           opts=_read_options(args), resume_target=target_url, resume_schema=schema,
                           dialect=args.dialect, chunk_docs=args.chunk_docs or None,
                           record_element=args.record_element)
    except SourceError as e:
        raise ConfigError(str(e)) from None


def _failures_dir(args):
    """Where the failed documents' ids and reasons go for --metrics-json (local runners share this disk)."""
    if not getattr(args, 'metrics_json', None):
        return None
    import tempfile
    return tempfile.mkdtemp(prefix='xmlsql-failures-')


class _part_paths:
    """One output file written by several chunked runs: each run writes a part, joined at the end."""

    def __init__(self, path, n):
        self.path, self.n, self.parts = path, n, []

    def next(self):
        if not self.path:
            return None
        if self.n <= 1:
            return self.path
        self.parts.append(f'{self.path}.part{len(self.parts):05d}')
        return self.parts[-1]

    def join(self):
        if not self.path or self.n <= 1:
            return
        with open(self.path, 'wb') as out:
            for part in self.parts:
                if os.path.exists(part):
                    with open(part, 'rb') as f:
                        while True:
                            buf = f.read(1 << 20)
                            if not buf:
                                break
                            out.write(buf)
                    os.remove(part)


def _beam_options(beam_args, job_name):
    from apache_beam.options.pipeline_options import PipelineOptions
    return PipelineOptions(beam_args, save_main_session=False)


def _run_pipeline(build, beam_args):
    import apache_beam as beam
    options = _beam_options(beam_args, 'migration')
    runner = make_runner(options)
    t0 = time.monotonic()
    p = beam.Pipeline(runner=runner, options=options) if runner is not None else beam.Pipeline(options=options)
    build(p)
    result = p.run()
    result.wait_until_finish()
    return result, time.monotonic() - t0


class _WrittenAcrossChunks:
    """File sources learn app_ids only from the documents: the app_ids written by earlier chunks of this
    invocation go to the next chunk, so that a second document with the same app_id in a later chunk is a
    duplicate (dead letter), not an overwrite. Table sources need none of this: one app_id never spans chunks."""

    def __init__(self, source):
        import tempfile
        self.active = getattr(source, 'kind', None) != 'table' and len(source.chunks()) > 1
        self.dir = tempfile.mkdtemp(prefix='xmlsql-written-') if self.active else None
        self.seen, self.path = set(), None

    def ids(self):
        return frozenset(self.seen)

    def next_path(self):
        if not self.active:
            return None
        self.path = os.path.join(self.dir, f'written-{len(os.listdir(self.dir)):05d}.txt')
        return self.path

    def collect(self):
        if self.path and os.path.exists(self.path):
            with open(self.path) as f:
                self.seen.update(int(x) for x in f if x.strip())

    def close(self):
        if self.dir:
            import shutil
            shutil.rmtree(self.dir, ignore_errors=True)


def _run_chunked(source, build, beam_args, failures_dir=None, after_chunk=None):
    """Run `build(p, chunk_source, failures_path)` once per chunk of the source; one Summary over all of them,
    with a progress line (documents done / total, rate, ETA) after each chunk."""
    from pipeline.summary import Summary, summarize
    chunks = source.chunks()
    total = Summary(0, 0, 0, 0, 0.0)
    expected = source.expected
    for i, chunk in enumerate(chunks, 1):
        fpath = os.path.join(failures_dir, f'failures-{i:05d}.jsonl') if failures_dir else None
        result, elapsed = _run_pipeline(lambda p: build(p, chunk, fpath), beam_args)
        if after_chunk:
            after_chunk()
        s = summarize(result, elapsed)
        total = total.merge(s)
        if len(chunks) > 1:
            done = total.read + total.skipped
            rate = total.docs_per_min
            eta = (expected - done) / rate * 60 if rate > 0 and expected > done else 0
            log.info('progress: chunk %d/%d, %d of %d documents (%.0f%%), %.0f docs/min, ETA %.0f s', i,
                     len(chunks), done, expected, 100.0 * done / max(expected, 1), rate, eta)
    total.extra['chunks'] = len(chunks)
    return total


def _finish(summary, args, failures_dir=None):
    print(summary.line(), flush=True)
    summary.write_json(args.summary_json)
    if getattr(args, 'metrics_json', None):
        from pipeline.summary import write_metrics_json
        write_metrics_json(summary, args.metrics_json, failures_dir)
    if failures_dir:
        import shutil
        shutil.rmtree(failures_dir, ignore_errors=True)
    if not summary.balanced:
        print(f'ERROR: read={summary.read} but written + dead_lettered = '
              f'{summary.written + summary.dead_lettered}: documents are unaccounted for', file=sys.stderr)
        return EXIT_UNBALANCED
    return 0


class RunStopped(Exception):
    """The job stopped (e.g. the database stayed down after retries): exit 1, the message scrubbed."""


class _stops_clearly:
    """Turn a failed pipeline run into one clear line without passwords or row values."""

    def __init__(self, target_url):
        self.target_url = target_url

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, (ConfigError, KeyboardInterrupt)):
            return False
        from pipeline.db.targets import parse_target
        text = str(exc)
        for marker in ('SinkUnavailable:', 'SinkError:', 'TargetError:'):
            if marker in text:
                text = text[text.rindex(marker):]
                break
        first = next((ln for ln in text.strip().splitlines() if ln.strip()), type(exc).__name__)
        try:
            first = parse_target(self.target_url).scrub(first)
        except Exception:
            first = type(exc).__name__
        raise RunStopped(f'the run stopped: {first[:400]}. Documents completed so far are in processing_log; '
                         're-run the same command to resume.') from None


def cmd_run(argv):
    ap = _common_options_parser('python -m pipeline run',
                                'Migrate XML documents from a source into SQL tables, as the contract maps them.')
    ap.add_argument('--status', default=None, help='Also write the outcome of every document (status, stage, '
                                                    'reason, rows, data-quality warnings) to this JSONL file.')
    args, beam_args = ap.parse_known_args(argv)
    args.beam_args = beam_args
    _setup_logging(args.log_level)
    for need in ('contract', 'source', 'target'):
        if not getattr(args, need):
            raise ConfigError(f'--{need} is required (see --help)')
    contract = load_contract_or_fail(args.contract)
    limits = _limits(args)
    if args.processes > 1:
        return _run_processes(argv, args, contract)
    from pipeline.db.plan import prepare_sink, target_schema
    from pipeline.db.targets import parse_target
    # The source is checked first: nothing is created in the target for a job that cannot read anything.
    schema = target_schema(parse_target(args.target, dialect=args.dialect), contract.target_schema)
    source = _make_source(args, contract, target_url=args.target, schema=schema)
    tables = resolve_contract_path(args.tables) if args.tables else None
    sink = prepare_sink(args.target, contract, tables_spec=tables, create=args.create_tables, dialect=args.dialect)
    session = args.session_id or dt.datetime.now(dt.timezone.utc).strftime('run-%Y%m%dT%H%M%SZ')
    log.info('source: %s', source.describe())
    log.info('target: %s (%s), tables in FK tiers %s', sink.display, sink.dialect, sink.tiers)
    from pipeline.graph import build_pipeline
    dl_parts = _part_paths(args.dead_letter, len(source.chunks()))
    st_parts = _part_paths(args.status, len(source.chunks()))
    fdir = _failures_dir(args)
    seen = _WrittenAcrossChunks(source)
    with _stops_clearly(args.target):
        summary = _run_chunked(source, lambda p, chunk, fpath: build_pipeline(
            p, contract, chunk, target=args.target, sink=sink, parse_mode=args.parse_mode, limits=limits,
            batch_size=args.batch_size, dead_letter_out=dl_parts.next(), status_out=st_parts.next(),
            session_id=session, progress_s=args.progress_seconds, resume=args.resume, failures_out=fpath,
            written_before=seen.ids(), written_ids_out=seen.next_path()), beam_args, fdir, after_chunk=seen.collect)
    seen.close()
    dl_parts.join()
    st_parts.join()
    summary.extra.update({'session_id': session, 'source': source.describe(), 'target': sink.display})
    return _finish(summary, args, fdir)


_WITH_VALUE = ('--processes', '--tables', '--summary-json', '--metrics-json', '--dead-letter', '--status',
               '--session-id', '--shard-count', '--shard-index')
_FLAGS = ('--create-tables',)


def _strip_options(argv, with_value=_WITH_VALUE, flags=_FLAGS):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split('=', 1)[0]
        if name in flags:
            continue
        if name in with_value:
            skip = '=' not in a
            continue
        out.append(a)
    return out


def _run_processes(argv, args, contract):
    """--processes N: N shard processes of this same command on this machine, one summary."""
    import subprocess
    import tempfile
    import threading
    from pipeline.db.plan import prepare_sink, target_schema
    from pipeline.db.targets import parse_target
    from pipeline.summary import Summary, merge_metrics_files
    n = args.processes
    if args.shard_count is not None:
        raise ConfigError('--processes shards the job itself: it does not combine with --shard-count/--shard-index')
    if not _is_direct(args.beam_args):
        raise ConfigError('--processes is for local runs; on a cluster runner the runner spreads the work')
    is_table = args.source.startswith(('sqlite:', 'odbc:'))
    if is_table and args.limit is not None:
        raise ConfigError('--limit does not combine with --processes for a table source (each shard would take '
                          'its own N); run one process, or use --app-id-start/--app-id-end')
    # Check everything once, create the tables once, before any process starts.
    schema = target_schema(parse_target(args.target, dialect=args.dialect), contract.target_schema)
    for i in range(n):
        args.shard_count, args.shard_index = n, i
        _make_source(args, contract, target_url=args.target, schema=schema)
    args.shard_count = args.shard_index = None
    tables = resolve_contract_path(args.tables) if args.tables else None
    sink = prepare_sink(args.target, contract, tables_spec=tables, create=args.create_tables, dialect=args.dialect)
    session = args.session_id or dt.datetime.now(dt.timezone.utc).strftime('run-%Y%m%dT%H%M%SZ')
    work = tempfile.mkdtemp(prefix='xmlsql-procs-')
    base = _strip_options(argv)
    dl, st = _part_paths(args.dead_letter, n), _part_paths(args.status, n)
    procs, t0 = [], time.monotonic()
    for i in range(n):
        cmd = [sys.executable, '-m', 'pipeline', 'run', *base, '--shard-count', str(n), '--shard-index', str(i),
               '--session-id', session, '--summary-json', os.path.join(work, f's{i}.json')]
        if args.metrics_json:
            cmd += ['--metrics-json', os.path.join(work, f'm{i}.json')]
        for opt, parts in (('--dead-letter', dl), ('--status', st)):
            path = parts.next()
            if path:
                cmd += [opt, path]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    log.info('%d shard processes started (session %s), target %s', n, session, sink.display)

    def relay(i, stream):
        for line in stream:
            if not line.startswith('SUMMARY '):
                sys.stderr.write(f'[shard {i}] {line}')
    threads = [threading.Thread(target=relay, args=(i, p.stderr), daemon=True) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    for p in procs:
        p.stdout.read()           # drained so that no child blocks on a full pipe; the summary comes from its JSON
    codes = [p.wait() for p in procs]
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    dl.join()
    st.join()
    total = Summary(0, 0, 0, 0, 0.0)
    for i in range(n):
        path = os.path.join(work, f's{i}.json')
        if not os.path.exists(path):
            continue
        d = json.load(open(path))
        total = total.merge(Summary(d['read'], d['written'], d['dead_lettered'], d['rows'], 0.0,
                                    d.get('skipped_already_done', 0),
                                    {'dead_lettered_by_stage': d.get('dead_lettered_by_stage', {}),
                                     'quality_warnings': d.get('quality_warnings', 0),
                                     'docs_with_quality_warnings': d.get('docs_with_quality_warnings', 0),
                                     'counters': d.get('counters', {})}, d.get('changed', 0)))
    total.elapsed_s = elapsed
    total.extra.update({'session_id': session, 'processes': n, 'target': sink.display,
                        'shard_exit_codes': codes})
    bad = [i for i, c in enumerate(codes) if c != 0]
    import shutil
    try:
        if bad:
            print(total.line(), flush=True)
            raise RunStopped(f'shard process(es) {bad} ended with exit code(s) {[codes[i] for i in bad]} (their '
                             'errors are above); documents completed so far are in processing_log; re-run the '
                             'same command to resume')
        if args.metrics_json:
            merge_metrics_files([os.path.join(work, f'm{i}.json') for i in range(n)], total, args.metrics_json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.metrics_json = None          # written above, merged
    return _finish(total, args)


def cmd_map(argv):
    ap = _common_options_parser('python -m pipeline map',
                                'Map XML files with a contract and write every row as JSONL (no database).')
    ap.add_argument('--input', required=True, help='Folder or glob of .xml files (one document each).')
    ap.add_argument('--output', required=True, help='JSONL file for the rows: {"file","app_id","table","row"}.')
    ap.add_argument('--status', default=None, help='JSONL file for the outcome of every document.')
    args, beam_args = ap.parse_known_args(argv)
    args.beam_args = beam_args
    _setup_logging(args.log_level)
    if not args.contract:
        raise ConfigError('--contract is required (see --help)')
    contract = load_contract_or_fail(args.contract)
    args.source = args.input
    source = _make_source(args, contract)
    from pipeline.graph import build_pipeline
    n = len(source.chunks())
    rows, status, dl = _part_paths(args.output, n), _part_paths(args.status, n), _part_paths(args.dead_letter, n)
    fdir = _failures_dir(args)
    summary = _run_chunked(source, lambda p, chunk, fpath: build_pipeline(
        p, contract, chunk, parse_mode=args.parse_mode, limits=_limits(args), rows_out=rows.next(),
        status_out=status.next(), dead_letter_out=dl.next(), progress_s=args.progress_seconds,
        failures_out=fpath), beam_args, fdir)
    for parts in (rows, status, dl):
        parts.join()
    return _finish(summary, args, fdir)


def cmd_create_tables(argv):
    ap = argparse.ArgumentParser(prog='python -m pipeline create-tables',
                                 description='Create the target tables of a table spec (plus processing_log and '
                                             'dead_letter) in a database; tables that exist are left alone, except '
                                             'processing_log / dead_letter created by an earlier version, which are '
                                             'upgraded (columns added, duplicate rows merged, unique keys added).')
    ap.add_argument('--tables', required=True, help='Table spec (JSON, like tables.json) or a sample name.')
    ap.add_argument('--target', required=True, help='sqlite:///PATH or odbc:<connection string>.')
    ap.add_argument('--schema', default=None, help='Schema to create them in (ignored by SQLite).')
    ap.add_argument('--dialect', default=None, choices=['sqlite', 'postgresql', 'mssql'],
                    help='Dialect when the ODBC driver name does not tell.')
    ap.add_argument('--skip-tables', dest='skip_tables', default='',
                    help='Comma-separated tables of the spec not to create (e.g. reference tables app_enums,'
                         'app_campaign_cc); foreign keys to them are left out.')
    ap.add_argument('--print', dest='print_only', action='store_true', help='Print the DDL instead of running it.')
    args = ap.parse_args(argv)
    _setup_logging('INFO')
    from pipeline.db.plan import create_target_tables
    skip = [t.strip() for t in args.skip_tables.split(',') if t.strip()]
    for stmt in create_target_tables(args.target, resolve_contract_path(args.tables), schema=args.schema,
                                     dialect=args.dialect, execute=not args.print_only, skip_tables=skip):
        if args.print_only:
            print(stmt.rstrip() + ';\n')
    return 0


def cmd_generate(argv):
    from pipeline import generate
    return generate.main(argv) or 0


COMMANDS = {'run': cmd_run, 'map': cmd_map, 'create-tables': cmd_create_tables, 'generate': cmd_generate}


class _DropImportNoise(logging.Filter):
    """Beam warns on import about Google Cloud client libraries this product never uses."""

    def filter(self, record):
        return 'apitools not found' not in str(record.msg)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.getLogger().addFilter(_DropImportNoise())
    if not argv or argv[0] in ('-h', '--help') or argv[0] not in COMMANDS:
        print(__doc__.strip() + '\n\nCommands:\n'
              '  run            migrate documents into a SQL target      (python -m pipeline run --help)\n'
              '  map            write mapped rows as JSONL, no database  (python -m pipeline map --help)\n'
              '  create-tables  create target tables from a table spec   (python -m pipeline create-tables --help)\n'
              '  generate       write sample documents                  (python -m pipeline generate --help)',
              file=sys.stdout if argv and argv[0] in ('-h', '--help') else sys.stderr)
        return 0 if argv and argv[0] in ('-h', '--help') else EXIT_CONFIG
    from pipeline.db.targets import TargetError
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (ConfigError, TargetError) as e:
        print(f'error: {e}', file=sys.stderr)
        return EXIT_CONFIG
    except RunStopped as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
