"""Command line: `python -m pipeline {run,map,create-tables,generate} ...`.

`run` migrates documents from a source into a SQL target; `map` writes the mapped rows as JSONL without a
database; `create-tables` creates target tables from a table spec; `generate` writes sample documents.

Exit status (README: "Exit status"): 0 done; 1 stopped by an infrastructure fault (re-run to resume); 2
configuration error, before any data moves; 3 the invariant read = written + dead_lettered broke; 4 done, but too
many documents went to the dead letter (--max-dead-letter-rate) or none was written; 130 / 143 stopped cleanly
by SIGINT / SIGTERM. Every non-zero status comes with one `error:` line on stderr.
"""
import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
import time

EXIT_OK = 0
EXIT_STOPPED = 1          # an infrastructure fault stopped the run (database down after retries, disk full, ...)
EXIT_CONFIG = 2           # configuration error, before any data moves
EXIT_UNBALANCED = 3       # read != written + dead_lettered
EXIT_FAILURES = 4         # the run completed, but above --max-dead-letter-rate, or it wrote no document at all
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}     # 128 + the signal, as shells report it
DIRECT_RUNNERS = (None, 'DirectRunner', 'direct', 'FnApiRunner')    # all run as Beam's FnApiRunner here

log = logging.getLogger('pipeline')


class ConfigError(Exception):
    """Bad configuration: reported as one line, exit status 2."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: the run stops where it is (a BaseException, so that no `except Exception` of
    a stage or of the runner mistakes it for a failed document), reports what was committed and exits 130/143."""

    def __init__(self, sig):
        # Beam re-creates a failing DoFn's exception as type(e)(e.args[0] + " [while running 'step']"): the first
        # argument is the signal's name, so that the re-created one is an Interrupted for the same signal.
        if isinstance(sig, str):
            sig = signal.Signals[sig.split()[0]]
        self.signum = int(sig)
        super().__init__(signal.Signals(self.signum).name)

    @property
    def name(self):
        return signal.Signals(self.signum).name

    @property
    def exit_code(self):
        return EXIT_SIGNAL.get(self.signum, 128 + self.signum)


class _StopOnSignals:
    """While active (main thread only): the first SIGINT/SIGTERM raises Interrupted in the main thread, where
    the DirectRunner (Beam's FnApiRunner) executes the bundles; a second one during the clean stop ends the
    process at once with the same exit status."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = None
        self.previous = {}

    received_any = None          # the first signal received by this process (any instance)

    def _handler(self, signum, frame):
        if self.received is not None:
            os.write(2, f'error: second {signal.Signals(signum).name}: stopping at once, without a '
                        'summary\n'.encode())
            os._exit(EXIT_SIGNAL.get(signum, 128 + signum))
        self.received = _StopOnSignals.received_any = signum
        raise Interrupted(signum)

    def __enter__(self):
        import threading
        _StopOnSignals.received_any = None
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        self.previous = {}
        return False


class _ScrubRunnerLogs(logging.Filter):
    """On the stderr handler. Beam logs the exception of a failing DoFn with its traceback
    (apache_beam.runners.common): such records become one line, scrubbed of row values and passwords, naming
    the exception's type and place; the one an interruption raises is dropped (the clean-stop line says it).
    The product's own loggers never log values and pass unchanged."""

    secrets = set()        # passwords of the targets and sources of this run (transforms.sql.targets)

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, Interrupted) or 'Interrupted: SIG' in str(record.msg):
            return False
        if not record.name.startswith('apache_beam') and exc is None:
            return True
        from transforms.sql.dialects import scrub_message
        text = scrub_message(record.getMessage(), tuple(self.secrets))
        if exc is not None:
            tb, where = exc.__traceback__, ''
            while tb is not None:
                where = f'{tb.tb_frame.f_code.co_filename.rsplit("/", 1)[-1]}:{tb.tb_lineno}'
                tb = tb.tb_next
            text += f' [{type(exc).__name__} at {where}]' if where else f' [{type(exc).__name__}]'
        record.msg, record.args, record.exc_info, record.exc_text = text, (), None, None
        return True


def _remember_secrets(*urls):
    """Passwords of the given targets, for the log filter (never printed; masked wherever they stand)."""
    from transforms.sql.targets import parse_target
    for url in urls:
        if url and url.startswith('odbc:'):
            try:
                _ScrubRunnerLogs.secrets.update(parse_target(url)._secrets)
            except Exception:
                pass


def _setup_logging(level):
    # force: importing Beam may already have given the root logger a handler (logging.warning on import)
    logging.basicConfig(force=True, level=getattr(logging, level), format='%(asctime)s %(levelname)s %(name)s: %(message)s',
                        stream=sys.stderr)
    for h in logging.getLogger().handlers:
        h.addFilter(_ScrubRunnerLogs())
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
               'FnApiRunner in this process. Exit status: 0 done; 1 stopped by an infrastructure fault (re-run to '
               'resume); 2 configuration error; 3 read != written + dead_lettered; 4 more than '
               '--max-dead-letter-rate dead-lettered, or nothing written; 130 / 143 stopped cleanly by SIGINT / '
               'SIGTERM (re-run to resume).')
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
    from transforms.io.sources import ReadOptions
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
    from transforms.io.sources import SourceError, make_source
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
    result = p.run()          # the FnApiRunner runs the whole pipeline here; other runners only submit it
    try:
        result.wait_until_finish()
    except Interrupted:
        try:                  # a job on a job server / cluster must not go on writing after we stopped
            result.cancel()
        except Exception as e:
            log.warning('could not cancel the submitted job: %s', type(e).__name__)
        raise
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


def _run_chunked(source, build, beam_args, failures_dir=None, after_chunk=None, state=None):
    """Run `build(p, chunk_source, failures_path)` once per chunk of the source; one Summary over all of them,
    with a progress line (documents done / total, rate, ETA) after each chunk. `state.completed` holds the
    summary of the chunks finished so far (what an interrupted run still knows from the runner's metrics)."""
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
        if state is not None:
            state.completed = total
        if len(chunks) > 1:
            done = total.read + total.skipped
            rate = total.docs_per_min
            eta = (expected - done) / rate * 60 if rate > 0 and expected > done else 0
            log.info('progress: chunk %d/%d, %d of %d documents (%.0f%%), %.0f docs/min, ETA %.0f s', i,
                     len(chunks), done, expected, 100.0 * done / max(expected, 1), rate, eta)
    total.extra['chunks'] = len(chunks)
    return total


def _check_failure_options(args):
    rate = getattr(args, 'max_dead_letter_rate', None)
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise ConfigError('--max-dead-letter-rate must be a fraction between 0 and 1 (e.g. 0.1 for 10 %)')


def too_many_failures(summary, max_rate):
    """The one-line reason a completed run exits 4, or None: it read documents and wrote none, or more than
    `max_rate` of the documents read went to the dead letter. Documents skipped as already done are not read."""
    read, dead = summary.read, summary.dead_lettered
    if read <= 0:
        return None
    by_stage = ', '.join(f'{k}={v}' for k, v in sorted((summary.extra.get('dead_lettered_by_stage') or {}).items()))
    where = f' (by stage: {by_stage})' if by_stage else ''
    if summary.written == 0:
        return (f'none of the {read} documents read was written: all went to the dead letter{where}; the '
                'dead_letter table (or --dead-letter file) has the reason of each')
    if max_rate is not None and dead > max_rate * read:
        return (f'{dead} of {read} documents read ({dead / read:.1%}) went to the dead letter{where}, more than '
                f'--max-dead-letter-rate {max_rate:g}; the other {summary.written} are written. The dead_letter '
                'table (or --dead-letter file) has the reason of each')
    return None


def _finish(summary, args, failures_dir=None, interrupted=None):
    """Print the SUMMARY line, write --summary-json / --metrics-json, print the one `error:` line of a
    non-zero exit status, and return that status (see the module docstring)."""
    from pipeline.options import DEFAULT_MAX_DEAD_LETTER_RATE
    max_rate = getattr(args, 'max_dead_letter_rate', DEFAULT_MAX_DEAD_LETTER_RATE)
    problem, code = None, EXIT_OK
    if interrupted is not None:
        code = interrupted.exit_code
        problem = (f'interrupted by {interrupted.name}: stopped cleanly; the SUMMARY counts what was committed '
                   f'({summary.written} documents written, {summary.dead_lettered} dead-lettered); documents '
                   'still in flight were rolled back: re-run the same command to resume')
    elif not summary.balanced:
        code = EXIT_UNBALANCED
        problem = (f'read={summary.read} but written + dead_lettered = {summary.written + summary.dead_lettered}: '
                   'documents are unaccounted for')
    else:
        problem = too_many_failures(summary, max_rate)
        code = EXIT_FAILURES if problem else EXIT_OK
    summary.extra.update({
        'exit_code': code, 'interrupted': interrupted is not None,
        'signal': interrupted.name if interrupted is not None else None,
        'max_dead_letter_rate': max_rate,
        'dead_letter_rate': round(summary.dead_lettered / summary.read, 6) if summary.read else 0.0})
    print(summary.line(), flush=True)
    summary.write_json(args.summary_json)
    if getattr(args, 'metrics_json', None):
        from pipeline.summary import write_metrics_json
        write_metrics_json(summary, args.metrics_json, failures_dir)
    if failures_dir:
        import shutil
        shutil.rmtree(failures_dir, ignore_errors=True)
    if problem and not (os.environ.get(_SHARD_ENV) and code in (EXIT_FAILURES, *EXIT_SIGNAL.values())):
        print(f'error: {problem}', file=sys.stderr, flush=True)
    return code


# Set in the environment of the shard processes of --processes: a shard leaves the verdict on the dead-letter rate
# and the clean-stop line to its launcher, which prints one for the whole job (a shard's own clean-stop count would
# cover the whole shared session).
_SHARD_ENV = 'XMLSQL_SHARD_OF_LAUNCHER'


class _RunState:
    """What an interrupted run reports from: the summary of the chunks that finished, and once the run has
    started, the sink plan and session whose processing_log rows say what the unfinished chunk committed."""

    def __init__(self):
        from pipeline.summary import Summary
        self.t0 = time.monotonic()
        self.completed = Summary(0, 0, 0, 0, 0.0)
        self.sink = self.session = self.target = self.dialect = None
        self.failures_dir = None
        self.outputs = []          # _part_paths of the JSONL outputs


def _without_app_id(summary):
    """Dead letters without an app_id (a file whose app_id could not be read): they have no processing_log row."""
    return int(summary.extra.get('counters', {}).get('sink', {}).get('ledger_outcomes_without_app_id', 0))


def _committed_summary(state, completed=None, skipped=None, without_app_id=None):
    """The Summary of an interrupted run: counts from the target's processing_log rows of this session (written
    after the sink commits, so they are exactly what was committed) and rows counted in the written tables; falls
    back to the finished chunks' metrics when the target cannot be asked."""
    from transforms.sql.ledger import committed_by_session
    from transforms.sql.retry import RetryPolicy
    from pipeline.summary import Summary
    done = completed if completed is not None else state.completed
    elapsed = time.monotonic() - state.t0
    if state.sink is None or not state.session:
        out = Summary(done.read, done.written, done.dead_lettered, done.rows, elapsed, done.skipped, dict(done.extra))
        out.extra['counts_from'] = 'finished_chunks'
        return out
    try:
        by_status, rows, by_table = committed_by_session(
            state.target, state.sink.schema, state.session, state.sink.metas, state.sink.tiers,
            dialect=state.dialect, retry=RetryPolicy(attempts=3, base_delay=0.2, max_delay=1.0))
    except Exception as e:
        from transforms.sql.targets import parse_target
        try:
            why = parse_target(state.target, dialect=state.dialect).scrub(e)
        except Exception:
            why = type(e).__name__
        log.warning('cannot count what was committed from processing_log (%s): the SUMMARY has the finished '
                    'chunks only', why[:300])
        out = Summary(done.read, done.written, done.dead_lettered, done.rows, elapsed, done.skipped, dict(done.extra))
        out.extra['counts_from'] = 'finished_chunks'
        return out
    written = sum(by_status.get('success', {}).values())
    failed = by_status.get('failed', {})
    noid = _without_app_id(done) if without_app_id is None else without_app_id
    dead = sum(failed.values()) + noid
    out = Summary(written + dead, written, dead, rows, elapsed, done.skipped if skipped is None else skipped,
                  {'dead_lettered_by_stage': dict(sorted((k or 'unknown', v) for k, v in failed.items())),
                   'rows_by_table': by_table, 'counters': done.extra.get('counters', {}),
                   'counts_from': 'processing_log'})
    if noid:
        out.extra['dead_lettered_without_app_id'] = noid
    return out


def _remove_partial_outputs(paths, folders=()):
    """An interrupted chunk leaves Beam's temporary folder next to a JSONL output (beam-temp-<name>-<uuid>)."""
    import glob
    import shutil
    patterns = [os.path.join(os.path.dirname(os.path.abspath(p)), f'beam-temp-{os.path.basename(p)}*')
                for p in paths if p]
    patterns += [os.path.join(f, 'beam-temp-*') for f in folders if f]
    for pattern in patterns:
        for d in glob.glob(pattern):
            shutil.rmtree(d, ignore_errors=True)


def _finish_interrupted(state, args, stop):
    summary = _committed_summary(state)
    for parts in state.outputs:
        parts.join()
    _remove_partial_outputs([getattr(args, k, None) for k in ('dead_letter', 'status', 'output')],
                            [state.failures_dir])
    summary.extra.update({k: v for k, v in (('session_id', state.session),) if v})
    log.warning('%s received: the run stopped; counting what was committed', stop.name)
    return _finish(summary, args, state.failures_dir, interrupted=stop)


class RunStopped(Exception):
    """The job stopped (e.g. the database stayed down after retries): exit 1, the message scrubbed."""


class _stops_clearly:
    """Turn a failed pipeline run into one clear line without passwords or row values."""

    def __init__(self, target_url):
        self.target_url = target_url

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, (ConfigError, KeyboardInterrupt, Interrupted)):
            return False
        if _StopOnSignals.received_any is not None:
            # whatever the runner made of the exception the signal raised, the run was interrupted
            raise Interrupted(_StopOnSignals.received_any) from None
        from transforms.sql.targets import parse_target
        text = str(exc)
        for marker in ('SinkUnavailable:', 'SinkError:', 'DatabaseUnavailable:', 'CannotConnect:', 'TargetError:'):
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


def _prepare_sink(args, contract):
    """The sink plan (tables created, introspected, checked). A configuration problem is a ConfigError/TargetError
    (exit 2); anything else here is the database failing under us (a connection ended mid-introspection):
    RunStopped, one line with the target's display (password masked)."""
    from transforms.sql.plan import prepare_sink
    from transforms.sql.targets import TargetError, parse_target
    tables = resolve_contract_path(args.tables) if args.tables else None
    try:
        return prepare_sink(args.target, contract, tables_spec=tables, create=args.create_tables,
                            dialect=args.dialect)
    except (ConfigError, TargetError):
        raise
    except Exception as e:
        t = parse_target(args.target, dialect=args.dialect)
        why = t.scrub(e)
        where = '' if t.display in why else f' {t.display}'
        raise RunStopped(f'preparing the target{where} failed: {why[:400]}; nothing was migrated, re-run the '
                         'same command') from None


def _new_session_id():
    import secrets
    return dt.datetime.now(dt.timezone.utc).strftime('run-%Y%m%dT%H%M%SZ-') + secrets.token_hex(3)


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
    _check_failure_options(args)
    _remember_secrets(args.target, args.source)
    if args.processes > 1:
        return _run_processes(argv, args, contract)
    state = _RunState()
    try:
        return _run_one(args, beam_args, contract, limits, state)
    except Interrupted as stop:
        return _finish_interrupted(state, args, stop)


def _run_one(args, beam_args, contract, limits, state):
    from transforms.sql.plan import target_schema
    from transforms.sql.targets import parse_target
    # The source is checked first: nothing is created in the target for a job that cannot read anything.
    schema = target_schema(parse_target(args.target, dialect=args.dialect), contract.target_schema)
    source = _make_source(args, contract, target_url=args.target, schema=schema)
    sink = _prepare_sink(args, contract)
    session = args.session_id or _new_session_id()
    state.sink, state.session, state.target, state.dialect = sink, session, args.target, args.dialect
    log.info('source: %s', source.describe())
    log.info('target: %s (%s), tables in FK tiers %s', sink.display, sink.dialect, sink.tiers)
    from pipeline.graph import build_pipeline
    dl_parts = _part_paths(args.dead_letter, len(source.chunks()))
    st_parts = _part_paths(args.status, len(source.chunks()))
    state.outputs = [dl_parts, st_parts]
    fdir = state.failures_dir = _failures_dir(args)
    seen = _WrittenAcrossChunks(source)
    try:
        with _stops_clearly(args.target):
            summary = _run_chunked(source, lambda p, chunk, fpath: build_pipeline(
                p, contract, chunk, target=args.target, sink=sink, parse_mode=args.parse_mode, limits=limits,
                batch_size=args.batch_size, dead_letter_out=dl_parts.next(), status_out=st_parts.next(),
                session_id=session, progress_s=args.progress_seconds, resume=args.resume, failures_out=fpath,
                written_before=seen.ids(), written_ids_out=seen.next_path()), beam_args, fdir,
                after_chunk=seen.collect, state=state)
    finally:
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


def _die_with_parent():
    """A preexec_fn for shard processes: their own process group (a Ctrl-C in the terminal reaches the launcher
    only, which forwards it), and on Linux the parent-death signal SIGKILL (prctl PR_SET_PDEATHSIG), so that a
    launcher killed in any way (even SIGKILL) takes its shards with it instead of leaving them writing. Stopping a
    shard at once is safe: each batch is one transaction and the ledger row is written after the commit, so a
    re-run redoes exactly what was not committed."""
    parent = os.getpid()
    prctl = None
    if sys.platform.startswith('linux'):
        try:
            import ctypes
            prctl = ctypes.CDLL(None, use_errno=True).prctl      # looked up here, before the fork
        except (OSError, AttributeError):
            prctl = None

    def preexec():
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(1, int(signal.SIGKILL), 0, 0, 0)                # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:                            # the launcher died before prctl took effect
                os._exit(EXIT_STOPPED)
    return preexec


class _ForwardSignals:
    """In the --processes launcher: SIGINT/SIGTERM are passed on to every shard's process group (each shard
    then stops cleanly and reports what it committed) instead of stopping the launcher, which waits for its
    shards and prints one combined SUMMARY. A second signal is forwarded too (the shards then stop at once)."""

    def __init__(self, procs):
        self.procs, self.received, self.previous = procs, None, {}

    def _handler(self, signum, frame):
        if self.received is None:
            self.received = signum
            os.write(2, f'{signal.Signals(signum).name} received: stopping the shard processes\n'.encode())
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signum)
                except (ProcessLookupError, PermissionError):
                    pass

    def __enter__(self):
        for sig in _StopOnSignals.SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        return False


def _run_processes(argv, args, contract):
    """--processes N: N shard processes of this same command on this machine, one summary."""
    import subprocess
    import tempfile
    import threading
    from transforms.sql.plan import target_schema
    from transforms.sql.targets import parse_target
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
    state = _RunState()
    # Check everything once, create the tables once, before any process starts.
    schema = target_schema(parse_target(args.target, dialect=args.dialect), contract.target_schema)
    for i in range(n):
        args.shard_count, args.shard_index = n, i
        _make_source(args, contract, target_url=args.target, schema=schema)
    args.shard_count = args.shard_index = None
    sink = _prepare_sink(args, contract)
    session = args.session_id or _new_session_id()
    state.sink, state.session, state.target, state.dialect = sink, session, args.target, args.dialect
    work = tempfile.mkdtemp(prefix='xmlsql-procs-')
    base = _strip_options(argv)
    dl, st = _part_paths(args.dead_letter, n), _part_paths(args.status, n)
    procs, t0 = [], time.monotonic()
    preexec = _die_with_parent()
    forward = _ForwardSignals(procs)
    with forward:
        for i in range(n):
            if forward.received is not None:
                break
            cmd = [sys.executable, '-m', 'pipeline', 'run', *base, '--shard-count', str(n), '--shard-index',
                   str(i), '--session-id', session, '--summary-json', os.path.join(work, f's{i}.json')]
            if args.metrics_json:
                cmd += ['--metrics-json', os.path.join(work, f'm{i}.json')]
            for opt, parts in (('--dead-letter', dl), ('--status', st)):
                path = parts.next()
                if path:
                    cmd += [opt, path]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          preexec_fn=preexec, env={**os.environ, _SHARD_ENV: str(os.getpid())}))
        log.info('%d shard processes started (session %s), target %s', len(procs), session, sink.display)

        def relay(i, stream):
            for line in stream:
                if not line.startswith('SUMMARY '):
                    sys.stderr.write(f'[shard {i}] {line}')
        threads = [threading.Thread(target=relay, args=(i, p.stderr), daemon=True) for i, p in enumerate(procs)]
        for t in threads:
            t.start()
        for p in procs:
            p.stdout.read()       # drained so that no child blocks on a full pipe; the summary comes from its JSON
        codes = [p.wait() for p in procs]
        for t in threads:
            t.join()
    elapsed = time.monotonic() - t0
    dl.join()
    st.join()
    total = Summary(0, 0, 0, 0, 0.0)
    skipped = noid = 0
    for i in range(n):
        path = os.path.join(work, f's{i}.json')
        if not os.path.exists(path):
            continue
        d = json.load(open(path))
        skipped += d.get('skipped_already_done', 0)
        noid += int(d.get('counters', {}).get('sink', {}).get('ledger_outcomes_without_app_id', 0))
        total = total.merge(Summary(d['read'], d['written'], d['dead_lettered'], d['rows'], 0.0,
                                    d.get('skipped_already_done', 0),
                                    {'dead_lettered_by_stage': d.get('dead_lettered_by_stage', {}),
                                     'quality_warnings': d.get('quality_warnings', 0),
                                     'docs_with_quality_warnings': d.get('docs_with_quality_warnings', 0),
                                     'counters': d.get('counters', {})}, d.get('changed', 0)))
    total.elapsed_s = elapsed
    import shutil
    if forward.received is not None:
        # The shards share one session: what they committed is counted once, over the whole session.
        stop = Interrupted(forward.received)
        state.t0 = t0
        total = _committed_summary(state, completed=total, skipped=skipped, without_app_id=noid)
        total.extra.update({'session_id': session, 'processes': n, 'target': sink.display,
                            'shard_exit_codes': codes, 'interrupted': True, 'signal': stop.name})
        try:
            if args.metrics_json:     # the shards' finished chunks (a shard's failures of its unfinished one are lost)
                merge_metrics_files([os.path.join(work, f'm{i}.json') for i in range(n)], total, args.metrics_json)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _remove_partial_outputs([args.dead_letter, args.status])
        args.metrics_json = None
        return _finish(total, args, interrupted=stop)
    total.extra.update({'session_id': session, 'processes': n, 'target': sink.display,
                        'shard_exit_codes': codes})
    # 0, 3 and 4 are shards that completed (their counts are in their JSON and decide the exit status below).
    bad = [i for i, c in enumerate(codes) if c not in (EXIT_OK, EXIT_UNBALANCED, EXIT_FAILURES)]
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
    _check_failure_options(args)
    state = _RunState()
    state.outputs = [rows, status, dl]
    fdir = state.failures_dir = _failures_dir(args)
    try:
        summary = _run_chunked(source, lambda p, chunk, fpath: build_pipeline(
            p, contract, chunk, parse_mode=args.parse_mode, limits=_limits(args), rows_out=rows.next(),
            status_out=status.next(), dead_letter_out=dl.next(), progress_s=args.progress_seconds,
            failures_out=fpath), beam_args, fdir, state=state)
    except Interrupted as stop:       # no database: the summary is that of the chunks that finished
        return _finish_interrupted(state, args, stop)
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
    from transforms.sql.plan import create_target_tables
    skip = [t.strip() for t in args.skip_tables.split(',') if t.strip()]
    for stmt in create_target_tables(args.target, resolve_contract_path(args.tables), schema=args.schema,
                                     dialect=args.dialect, execute=not args.print_only, skip_tables=skip):
        if args.print_only:
            print(stmt.rstrip() + ';\n')
    return 0


def cmd_generate(argv):
    from contracts.samples import generate
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
    from transforms.sql.targets import TargetError
    with _StopOnSignals():
        try:
            return COMMANDS[argv[0]](argv[1:])
        except (ConfigError, TargetError) as e:
            print(f'error: {e}', file=sys.stderr)
            return EXIT_CONFIG
        except RunStopped as e:
            print(f'error: {e}', file=sys.stderr)
            return EXIT_STOPPED
        except Interrupted as e:        # before a run started (or a command without a summary)
            print(f'error: interrupted by {e.name}: stopped before any document was migrated', file=sys.stderr)
            return e.exit_code
        except Exception as e:          # anything else: still one line, scrubbed (no traceback with values)
            from transforms.sql.dialects import scrub_message
            print(f'error: the run stopped: {type(e).__name__}: '
                  f'{scrub_message(str(e), tuple(_ScrubRunnerLogs.secrets))[:400]}', file=sys.stderr)
            return EXIT_STOPPED
