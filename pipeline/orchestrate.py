"""Running a job: `run(cfg) -> (Summary, exit status)`, the one entry of the launcher.

A job is one pipeline run, or on local runners successive runs of at most --chunk-docs documents (a local runner
keeps a stage's output in memory), or with --processes N shard processes side by side, each given the serialized
configuration (`python -m pipeline.shard CONFIG.json`), never an edited command line. Each run writes
its counts under the work folder (`Paths`); the launcher adds them up, prints progress (rate, ETA) while it runs,
and ends with the SUMMARY line, the JSON files and the report. SIGINT / SIGTERM stop it cleanly with a SUMMARY of
what was committed (counted from the target's processing_log rows of this run's session).

(About 900 lines on purpose: signals, chunks, shard processes, progress and the final report are the launcher's
parts and share its Job state; splitting them would pass that state around instead.)
"""
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import List, Optional

from pipeline.config import ConfigError, RunConfig
from pipeline.summary import Summary, read_counts, read_lines, runner_counters, write_metrics_json

log = logging.getLogger('pipeline')

EXIT_OK = 0
EXIT_STOPPED = 1          # an infrastructure fault stopped the run (database down after retries, disk full, ...)
EXIT_CONFIG = 2           # configuration error, before any data moves
EXIT_UNBALANCED = 3       # read != written + dead_lettered
EXIT_FAILURES = 4         # the run completed, but above --max-dead-letter-rate, or it wrote no document at all
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}     # 128 + the signal, as shells report it
COMPLETED = (EXIT_OK, EXIT_UNBALANCED, EXIT_FAILURES)          # a shard that ran to its end (its counts are valid)

# Set in the environment of the shard processes of --processes: a shard leaves the verdict on the dead-letter rate
# and the clean-stop line to its launcher, which prints one for the whole job.
SHARD_ENV = 'XMLSQL_SHARD_OF_LAUNCHER'


class RunStopped(Exception):
    """The job stopped (e.g. the database stayed down after retries): exit 1, the message scrubbed."""


# ============================================================================================= signals

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


class StopOnSignals:
    """While active (main thread only): the first SIGINT/SIGTERM raises Interrupted in the main thread, where
    the DirectRunner (Beam's FnApiRunner) executes the bundles; a second one during the clean stop ends the
    process at once with the same exit status."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    received_any = None          # the first signal received by this process (any instance)

    def __init__(self):
        self.received = None
        self.previous = {}

    def _handler(self, signum, frame):
        if self.received is not None:
            os.write(2, f'error: second {signal.Signals(signum).name}: stopping at once, without a '
                        'summary\n'.encode())
            os._exit(EXIT_SIGNAL.get(signum, 128 + signum))
        self.received = StopOnSignals.received_any = signum
        stage = sys.modules.get('transforms.stage')     # the flag the bundles look at (loaded with the graph)
        if stage is not None:
            stage.STOP['signal'] = signum
        raise Interrupted(signum)

    def __enter__(self):
        StopOnSignals.received_any = None
        stage = sys.modules.get('transforms.stage')
        if stage is not None:
            stage.STOP['signal'] = None
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        self.previous = {}
        return False


def raise_if_signalled():
    """A signal whose Interrupted was swallowed (raised while Python ran a weakref callback or a __del__, which
    only prints "Exception ignored in ...") still stops the run, at the latest when the current chunk ends."""
    if StopOnSignals.received_any is not None:
        raise Interrupted(StopOnSignals.received_any)


class _StopsClearly:
    """Turn a failed pipeline run into one clear line without passwords or row values."""

    def __init__(self, target_url):
        self.target_url = target_url

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, (ConfigError, KeyboardInterrupt, Interrupted)):
            return False
        if StopOnSignals.received_any is not None:
            # whatever the runner made of the exception the signal raised, the run was interrupted
            raise Interrupted(StopOnSignals.received_any) from None
        from transforms.sql.targets import parse_target
        text = str(exc)
        for marker in ('SinkUnavailable:', 'SinkError:', 'DatabaseUnavailable:', 'CannotConnect:', 'TargetError:'):
            if marker in text:
                text = text[text.rindex(marker):]
                break
        first = next((ln for ln in text.strip().splitlines() if ln.strip()), type(exc).__name__)
        try:
            first = parse_target(self.target_url).scrub(first) if self.target_url else first
        except Exception:
            first = type(exc).__name__
        raise RunStopped(f'the run stopped: {first[:400]}. Documents completed so far are in processing_log; '
                         're-run the same command to resume.') from None


# ============================================================================================= one run

def make_runner(options):
    """DirectRunner means Beam's FnApiRunner here: the legacy direct runner that Beam falls back to for
    GroupIntoBatches is ~3x slower and loses metrics. Portable and cluster runners pass through unchanged."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
    from pipeline.config import DIRECT_RUNNERS
    runner = options.view_as(StandardOptions).runner
    mode = options.view_as(DirectOptions).direct_running_mode
    if runner in DIRECT_RUNNERS:
        if mode == 'multi_threading':
            raise ConfigError('--direct_running_mode=multi_threading is refused: it lost rows in our tests. '
                              'To use several cores, use --processes N (README: "Runners and cores").')
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        return FnApiRunner()
    return None   # Beam resolves --runner itself


def run_pipeline(build, beam_args):
    """Build and run one pipeline; (result, seconds). The FnApiRunner runs it here; other runners are waited for
    (and cancelled when this process is interrupted)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    options = PipelineOptions(list(beam_args), save_main_session=False)
    runner = make_runner(options)
    t0 = time.monotonic()
    p = beam.Pipeline(runner=runner, options=options) if runner is not None else beam.Pipeline(options=options)
    build(p)
    result = p.run()
    try:
        result.wait_until_finish()
    except Interrupted:
        try:                  # a job on a job server / cluster must not go on writing after we stopped
            result.cancel()
        except Exception as e:
            log.warning('could not cancel the submitted job: %s', type(e).__name__)
        raise
    return result, time.monotonic() - t0


class Job:
    """The state of one job while it runs: configuration, source, sink plan, session, work folder, the summary of
    the runs finished so far, and the part files to join at the end."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.t0 = time.monotonic()
        self.contract = cfg.contract()
        self.summary = Summary()
        self.session = cfg.session_id or new_session_id()
        self.session_is_new = cfg.session_id is None or cfg.session_is_new
        self.sink = self.source = None
        self.parts = {'status': [], 'dead_letters': [], 'rows': [], 'failures': []}
        self.progress: List[tuple] = [(0.0, 0)]
        self._own_work = cfg.work_dir is None
        if cfg.work_dir is None:
            import tempfile
            self.work = tempfile.mkdtemp(prefix='xmlsql-run-')
        else:
            self.work = cfg.work_dir.rstrip('/') + '/' + self.session

    def path(self, name):
        from apache_beam.io.filesystems import FileSystems
        return FileSystems.join(self.work, name)

    def close(self):
        if self._own_work:
            import shutil
            shutil.rmtree(self.work, ignore_errors=True)


def new_session_id():
    import secrets
    return dt.datetime.now(dt.timezone.utc).strftime('run-%Y%m%dT%H%M%SZ-') + secrets.token_hex(3)


def prepare(job: Job):
    """Check the source, then prepare the target (create tables, introspect, check, FK tiers): every problem is a
    one-line error before any data moves."""
    from transforms.io.sources import SourceError
    from transforms.io import make_source
    from transforms.sql.plan import prepare_sink, target_schema
    from transforms.sql.targets import TargetError, parse_target
    cfg = job.cfg
    schema = None
    read = cfg.read
    if cfg.command == 'run':
        schema = target_schema(parse_target(cfg.target, dialect=cfg.dialect), job.contract.target_schema)
        if cfg.only_failed and not cfg.source_is_table and os.path.isfile(cfg.source):
            # a container file cannot be read in part: said before looking for the target's dead_letter table
            from transforms.io.container import ONLY_FAILED_REFUSED, is_container
            if is_container(cfg.source, job.contract.root_element):
                raise ConfigError(ONLY_FAILED_REFUSED)
        read = _select_documents(cfg, schema)
    try:
        # The source is checked first: nothing is created in the target for a job that cannot read anything.
        job.source = make_source(cfg.source, job.contract, source_table=cfg.source_table,
                                 source_column=cfg.source_column, opts=read,
                                 resume_target=cfg.target if cfg.command == 'run' else None, resume_schema=schema,
                                 dialect=cfg.dialect, chunk_docs=cfg.chunk_docs or None,
                                 record_element=cfg.record_element)
    except SourceError as e:
        raise ConfigError(str(e)) from None
    if cfg.command != 'run':
        return
    try:
        from pipeline.config import create_tables_command
        job.sink = prepare_sink(cfg.target, job.contract, tables_spec=cfg.tables, create=cfg.create_tables,
                                dialect=cfg.dialect,
                                create_command=create_tables_command(cfg.contract_path, cfg.target, cfg.tables,
                                                                     cfg.dialect))
    except (ConfigError, TargetError):
        raise
    except Exception as e:
        t = parse_target(cfg.target, dialect=cfg.dialect)
        why = t.scrub(e)
        where = '' if t.display in why else f' {t.display}'
        raise RunStopped(f'preparing the target{where} failed: {why[:400]}; nothing was migrated, re-run the '
                         'same command') from None


def _select_documents(cfg: RunConfig, schema):
    """The ReadOptions of a run: --app-ids and --only-failed become the list of documents to read."""
    read = cfg.read
    if cfg.app_ids is not None:
        return read._replace(app_ids=tuple(sorted(cfg.app_ids)))
    if not cfg.only_failed:
        return read
    from transforms.sql.ledger import Ledger
    from transforms.sql.targets import parse_target
    table = 'processing_log' if cfg.source_is_table else 'dead_letter'
    nothing_ran = ConfigError(f'--only-failed: the target has no {table} table, so no run has failed into it yet '
                              '(check --target; a first run goes without --only-failed)')
    path = parse_target(cfg.target, dialect=cfg.dialect).sqlite_path
    if path and not path.startswith(':') and not path.startswith('file:') and not os.path.exists(path):
        raise nothing_ran                   # (opening it would create an empty database file)
    try:
        ledger = Ledger.open(cfg.target, schema, cfg.dialect)
    except Exception as e:
        raise ConfigError(f'--only-failed: cannot read processing_log of the target: {e}') from None
    try:
        if not ledger.has_table(table):
            raise nothing_ran
        if cfg.source_is_table:
            ids = ledger.failed_app_ids()
            log.info('--only-failed: %d documents are failed in processing_log', len(ids))
            return read._replace(app_ids=tuple(ids), resume=False)
        sources = ledger.failed_sources()
        log.info('--only-failed: %d documents are in dead_letter', len(sources))
        return read._replace(only_sources=tuple(sources), resume=False)
    finally:
        ledger.close()


class _Progress(threading.Thread):
    """Local runners: every few seconds, one line with documents done, rate and ETA, counted inside the running
    chunk too (the workers of a local runner run in this process and count what they read)."""

    def __init__(self, job: Job, every_s, expected):
        super().__init__(daemon=True)
        self.job, self.every_s, self.expected = job, every_s, expected
        self.stop = threading.Event()
        self.base = 0

    def run(self):
        while not self.stop.wait(self.every_s):
            log.info('%s', self.line())

    def line(self):
        """One progress line: documents read or skipped of those expected, how many of those read are finished
        (written or dead-lettered), the rate of documents read and the ETA at that rate. Counted inside the
        running chunk (by the workers of this process), skipped documents included."""
        from pipeline.graph import PROGRESS
        read, skipped, finished = PROGRESS['read'], PROGRESS['skipped'], PROGRESS['finished']
        done = read + skipped
        elapsed = time.monotonic() - self.job.t0
        rate = read / elapsed * 60 if elapsed > 0 else 0.0
        self.job.progress.append((round(elapsed, 2), read))
        left = self.expected - done
        if left > 0:
            eta = f'ETA {left / rate * 60:.0f} s' if rate > 0 else 'ETA unknown'
        else:
            eta = 'all read, writing' if finished < read else 'ETA 0 s'
        return (f'progress: {done} of {self.expected} documents ({100.0 * done / max(self.expected, 1):.0f}%): '
                f'{read} read, {skipped} skipped as done, {finished} finished; {rate:.0f} docs/min, {eta}')


def run_chunks(job: Job):
    """Every chunk of the source as one pipeline run; their counts added up into job.summary."""
    from pipeline.graph import Paths, build, reset_progress
    cfg = job.cfg
    chunks = job.source.chunks()
    written_before = set()
    across = cfg.command == 'run' and job.source.kind != 'table' and len(chunks) > 1
    reset_progress()
    ticker = _Progress(job, cfg.progress_seconds, job.source.expected) if cfg.progress_seconds and cfg.is_direct \
        else None
    if ticker:
        ticker.start()
    try:
        for i, chunk in enumerate(chunks, 1):
            paths = Paths(counts=job.path(f'counts-{i:05d}.json'),
                          failures=job.path(f'failures-{i:05d}.jsonl') if cfg.metrics_json else None,
                          status=job.path(f'status-{i:05d}.jsonl') if cfg.status else None,
                          dead_letters=job.path(f'dead-letters-{i:05d}.jsonl') if cfg.dead_letter else None,
                          rows=job.path(f'rows-{i:05d}.jsonl') if cfg.rows_out else None,
                          written_ids=job.path(f'written-{i:05d}.txt') if across else None)
            for k in ('status', 'dead_letters', 'rows', 'failures'):
                if getattr(paths, k):
                    job.parts[k].append(getattr(paths, k))
            before = frozenset(written_before)
            with _StopsClearly(cfg.target):
                result, elapsed = run_pipeline(lambda p: build(p, cfg, job.contract, chunk, job.sink, paths,
                                                               job.session, before,
                                                               session_is_new=job.session_is_new), cfg.beam_args)
            raise_if_signalled()
            job.summary.add(read_counts(paths.counts), elapsed, runner_counters(result))
            job.progress.append((round(time.monotonic() - job.t0, 2), job.summary.read))
            if across:
                written_before.update(int(x) for x in read_lines([paths.written_ids]))
            if len(chunks) > 1:
                s = job.summary
                done, rate = s.read + s.skipped, s.docs_per_min
                left = job.source.expected - done
                eta = left / rate * 60 if rate > 0 and left > 0 else 0
                log.info('progress: chunk %d/%d, %d of %d documents (%.0f%%), %.0f docs/min, ETA %.0f s', i,
                         len(chunks), done, job.source.expected, 100.0 * done / max(job.source.expected, 1), rate,
                         eta)
    finally:
        if ticker:
            ticker.stop.set()
    job.summary.extra['chunks'] = len(chunks)


def join_parts(job: Job):
    """The JSONL outputs of all chunks into the files asked for (any FileSystems path)."""
    from apache_beam.io.filesystems import FileSystems
    cfg = job.cfg
    for key, dest in (('status', cfg.status), ('dead_letters', cfg.dead_letter), ('rows', cfg.rows_out)):
        if not dest:
            continue
        with FileSystems.create(dest) as out:
            for part in job.parts[key]:
                if FileSystems.exists(part):
                    with FileSystems.open(part) as f:
                        while True:
                            buf = f.read(1 << 20)
                            if not buf:
                                break
                            out.write(buf)


def too_many_failures(summary, max_rate):
    """The one-line reason a completed run exits 4, or None: it read documents and wrote none, or more than
    `max_rate` of the documents read went to the dead letter. Documents skipped as already done are not read."""
    read, dead = summary.read, summary.dead_lettered
    if read <= 0:
        return None
    by_stage = ', '.join(f'{k}={v}' for k, v in sorted(summary.counts['dead_lettered_by_stage'].items()))
    where = f' (by stage: {by_stage})' if by_stage else ''
    if summary.written == 0:
        return (f'none of the {read} documents read was written: all went to the dead letter{where}; the '
                'dead_letter table (or --dead-letter file) has the reason of each')
    if max_rate is not None and dead > max_rate * read:
        return (f'{dead} of {read} documents read ({dead / read:.1%}) went to the dead letter{where}, more than '
                f'--max-dead-letter-rate {max_rate:g}; the other {summary.written} are written. The dead_letter '
                'table (or --dead-letter file) has the reason of each')
    return None


def finish(job: Job, interrupted: Optional[Interrupted] = None, failure_files=None) -> int:
    """Print the SUMMARY line, write --summary-json / --metrics-json / --report, print the one `error:` line of
    a non-zero exit status, and return that status."""
    cfg, summary = job.cfg, job.summary
    summary.elapsed_s = summary.elapsed_s or (time.monotonic() - job.t0)
    if interrupted is not None:
        code = interrupted.exit_code
        problem = (f'interrupted by {interrupted.name}: stopped cleanly; the SUMMARY counts what was committed '
                   f'({summary.written} documents written, {summary.dead_lettered} dead-lettered); documents '
                   'still in flight have no ledger row yet (some of their rows may be written): re-run the same '
                   'command to resume, it migrates them again and replaces those rows')
    elif not summary.balanced:
        code = EXIT_UNBALANCED
        problem = (f'read={summary.read} but written + dead_lettered = {summary.written + summary.dead_lettered}: '
                   'documents are unaccounted for')
    else:
        problem = too_many_failures(summary, cfg.max_dead_letter_rate)
        code = EXIT_FAILURES if problem else EXIT_OK
    _record_end(job, code, 'interrupted' if interrupted is not None else ('ok' if code == EXIT_OK else 'failed'),
                interrupted)
    print(summary.line(), flush=True)
    summary.write_json(cfg.summary_json)
    if cfg.metrics_json:
        write_metrics_json(summary, cfg.metrics_json, job.parts['failures'] if failure_files is None
                           else failure_files)
    if cfg.report:
        from pipeline.report import write_report
        from pipeline.summary import metrics
        page = metrics(summary, [])
        page['options'] = _displayed_options(cfg)
        if summary.extra.get('processes'):        # the launcher of --processes N runs its own job as 1
            page['options']['processes'] = summary.extra['processes']
        write_report(page, cfg.report)
    if problem and not (os.environ.get(SHARD_ENV) and code in (EXIT_FAILURES, *EXIT_SIGNAL.values())):
        print(f'error: {problem}', file=sys.stderr, flush=True)
    return code


def _record_end(job: Job, code: int, status: str, interrupted: Optional[Interrupted] = None) -> None:
    """How the run ended, in the summary's JSON fields (finish, stopped_summary)."""
    summary = job.summary
    summary.extra.update({
        'exit_code': code, 'interrupted': interrupted is not None,
        'signal': interrupted.name if interrupted is not None else None,
        'max_dead_letter_rate': job.cfg.max_dead_letter_rate, 'session_id': job.session, 'status': status,
        'dead_letter_rate': round(summary.dead_lettered / summary.read, 6) if summary.read else 0.0,
        'progress': _progress_points(job)})


def _progress_points(job: Job):
    """(seconds since the launch, documents read) samples for the report's chart, the end of the run last; one
    clock (the launcher's wall clock) for every point, so time never runs backwards."""
    points = list(job.progress)
    end = (round(time.monotonic() - job.t0, 2), job.summary.read)
    if not points or end[0] > points[-1][0]:
        points.append(end)
    return points


def _displayed_options(cfg: RunConfig):
    """The options of a run for the report, under their command-line names, passwords masked."""
    from transforms.sql.targets import mask_password
    out = {}
    for k, name in (('source', 'source'), ('target', 'target'), ('contract_path', 'contract'),
                    ('parse_mode', 'parse-mode'), ('batch_size', 'batch-size'), ('sink_shards', 'sink-shards'),
                    ('chunk_docs', 'chunk-docs'), ('processes', 'processes'),
                    ('max_dead_letter_rate', 'max-dead-letter-rate'), ('only_failed', 'only-failed')):
        v = getattr(cfg, k)
        if v not in (None, False):
            out[name] = mask_password(str(v)) if isinstance(v, str) else v
    for k, v in cfg.read._asdict().items():
        if k == 'resume':
            out['resume' if v else 'no-resume'] = True
        elif v is not None and k not in ('app_ids', 'only_sources', 'shard_paths', 'max_doc_bytes'):
            # (lists and internal copies are left out: max_doc_bytes is shown as --max-doc-mb below)
            out[k.replace('_', '-')] = v
    for k, v in cfg.limits._asdict().items():
        if k == 'max_doc_bytes':
            mb = round(v / (1024 * 1024), 3)
            out['max-doc-mb'] = int(mb) if float(mb).is_integer() else mb
        else:
            out[k.replace('_', '-')] = v
    if cfg.beam_args:
        out['beam options'] = ' '.join(cfg.beam_args)
    return out


def committed_summary(job: Job) -> Summary:
    """The Summary of an interrupted run: counts from the target's processing_log rows of this session (written
    after the sink commits, so they are exactly what was committed); the finished chunks' counts otherwise."""
    from transforms.sql.ledger import committed_by_session
    from transforms.sql.retry import RetryPolicy
    done = job.summary
    if job.sink is None:
        done.extra['counts_from'] = 'finished_chunks'
        return done
    try:
        by_status, rows, by_table = committed_by_session(
            job.cfg.target, job.sink.schema, job.session, job.sink.metas, job.sink.tiers, dialect=job.cfg.dialect,
            retry=RetryPolicy(attempts=3, base_delay=0.2, max_delay=1.0))
    except Exception as e:
        from transforms.sql.targets import parse_target
        try:
            why = parse_target(job.cfg.target, dialect=job.cfg.dialect).scrub(e)
        except Exception:
            why = type(e).__name__
        log.warning('cannot count what was committed from processing_log (%s): the SUMMARY has the finished '
                    'chunks only', why[:300])
        done.extra['counts_from'] = 'finished_chunks'
        return done
    written = sum(by_status.get('success', {}).values())
    failed = by_status.get('failed', {})
    noid = done.counts['dead_lettered_without_app_id']
    dead = sum(failed.values()) + noid
    out = Summary({'read': written + dead, 'written': written, 'dead_lettered': dead, 'rows': rows,
                   'skipped': done.skipped, 'dead_lettered_without_app_id': noid,
                   'dead_lettered_by_stage': {k or 'unknown': v for k, v in failed.items()},
                   'rows_by_table': by_table}, time.monotonic() - job.t0, done.extra)
    out.extra['counts_from'] = 'processing_log'
    return out


def _remove_partial_outputs(job: Job):
    """An interrupted chunk leaves Beam's temporary folders next to the outputs (beam-temp-<name>-<uuid>)."""
    import glob
    import shutil
    if os.path.isdir(job.work):
        for d in glob.glob(os.path.join(job.work, 'beam-temp-*')):
            shutil.rmtree(d, ignore_errors=True)


# ============================================================================================= entries

def run(cfg: RunConfig, shard_main=None) -> int:
    """Run a job (run or map command) to its end: the exit status (its SUMMARY printed). `shard_main(cfg) -> exit
    status`: what a forked shard process runs with --processes (pipeline.shard.run_shard; without it every shard
    is a new interpreter)."""
    if cfg.processes > 1:
        return run_processes(cfg, shard_main)
    job = Job(cfg)
    try:
        return _run_job(job)
    except RunStopped as stopped:
        if not os.environ.get(SHARD_ENV):     # a shard's launcher counts the whole session itself
            stopped_summary(job, stopped)
        raise
    finally:
        job.close()


def stopped_summary(job: Job, stopped: 'RunStopped') -> None:
    """An infrastructure fault stopped the run (exit status 1): the SUMMARY of what was committed is printed all
    the same, and --summary-json written with status 'stopped' and the reason; the caller prints the one error
    line. Counted from processing_log when the target still answers, else from the finished chunks (a warning
    says which). Never raises: the fault itself is what the operator must see."""
    try:
        job.summary = committed_summary(job)
        summary = job.summary
        summary.elapsed_s = summary.elapsed_s or (time.monotonic() - job.t0)
        _record_end(job, EXIT_STOPPED, 'stopped')
        summary.extra['error'] = str(stopped)
        print(summary.line(), flush=True)
        summary.write_json(job.cfg.summary_json)
    except Exception as e:
        log.warning('could not write the summary of the stopped run: %s', type(e).__name__)


def _run_job(job: Job) -> int:
    prepare(job)
    log.info('source: %s', job.source.describe())
    if job.sink is not None:
        log.info('target: %s (%s), tables in FK tiers %s', job.sink.display, job.sink.dialect, job.sink.tiers)
        job.summary.extra.update({'source': job.source.describe(), 'target': job.sink.display})
    try:
        run_chunks(job)
        raise_if_signalled()
    except Interrupted as stop:
        log.warning('%s received: the run stopped; counting what was committed', stop.name)
        job.summary = committed_summary(job)
        join_parts(job)
        _remove_partial_outputs(job)
        return finish(job, interrupted=stop)
    join_parts(job)
    return finish(job)


def run_processes(cfg: RunConfig, shard_main=None) -> int:
    """--processes N: N shard processes on this machine, each running this configuration for one shard (app_id
    hash, for folders of the app_id read from each file's start: transforms/io/files.py); one summary."""
    import tempfile
    n = cfg.processes
    job = Job(cfg.replace(processes=1))
    # Check everything once, create the tables once, before any process starts.
    try:
        prepare(job)
        reads = _shard_reads(job, n)
        for i in range(n):
            shard = job.cfg.replace(read=reads[i])
            probe = Job.__new__(Job)
            probe.cfg, probe.contract = shard, job.contract
            prepare_source_only(probe)
    except RunStopped as stopped:
        stopped_summary(job, stopped)        # nothing migrated: a SUMMARY of zeros, and the JSON says why
        job.close()
        raise
    except BaseException:
        job.close()
        raise
    work = tempfile.mkdtemp(prefix='xmlsql-procs-')
    procs, t0 = [], time.monotonic()
    preexec = _die_with_parent()
    forward = _ForwardSignals(procs)
    shard_cfgs = []
    with forward:
        try:
            _start_shards(job, cfg, reads, work, shard_main, preexec, procs, shard_cfgs, forward)
        except BaseException:
            # a shard that could not start (fork or exec refused): the ones already running stop and are waited
            # for, so that none is left writing after the launcher reports the error
            for p in procs:
                forward._send(p, signal.SIGTERM)
            for p in procs:
                p.wait()
            import shutil
            shutil.rmtree(work, ignore_errors=True)
            job.close()
            raise
        log.info('%d shard processes started (session %s), target %s', len(procs), job.session, job.sink.display)

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
    import shutil
    try:
        for sc in shard_cfgs:
            if os.path.exists(sc.summary_json):
                d = json.load(open(sc.summary_json))
                job.summary.add(d.get('counts') or {}, 0.0)
        job.summary.elapsed_s = time.monotonic() - t0
        job.summary.extra.update({'processes': n, 'target': job.sink.display, 'shard_exit_codes': codes,
                                  'source': job.source.describe()})
        failure_files = [os.path.join(work, 'failures.jsonl')]
        with open(failure_files[0], 'w', encoding='utf-8') as out:
            for sc in shard_cfgs:
                if sc.metrics_json and os.path.exists(sc.metrics_json):
                    for rec in json.load(open(sc.metrics_json)).get('failed', []):
                        out.write(json.dumps(rec) + '\n')
        _join_local([sc.status for sc in shard_cfgs], cfg.status)
        _join_local([sc.dead_letter for sc in shard_cfgs], cfg.dead_letter)
        if forward.received is not None:
            stop = Interrupted(forward.received)
            job.summary = committed_summary(job)
            return finish(job, interrupted=stop, failure_files=failure_files)
        # 0, 3 and 4 are shards that completed (their counts are in their JSON and decide the exit status below).
        bad = [i for i, c in enumerate(codes) if c not in COMPLETED]
        if bad:
            stopped = RunStopped(f'shard process(es) {bad} ended with exit code(s) {[codes[i] for i in bad]} (their '
                                 'errors are above); documents completed so far are in processing_log; re-run the '
                                 'same command to resume')
            stopped_summary(job, stopped)
            raise stopped
        return finish(job, failure_files=failure_files)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        job.close()


# Shard processes are forked from the launcher where the platform can (Linux): the launcher has already imported
# Beam and the project, which a new interpreter spends about a second doing again, on every shard. Set
# XMLSQL_SHARD_START=spawn to start each one as a new interpreter instead (as on other platforms).
_FORK_SHARDS = hasattr(os, 'fork') and sys.platform.startswith('linux') and \
    os.environ.get('XMLSQL_SHARD_START', 'fork') != 'spawn'


class _ForkedShard:
    """A forked shard process, with the part of subprocess.Popen's interface that run_processes uses. The signal
    handler polls while the main thread may be waiting on the same child: whichever reaps it records the status,
    the other finds it recorded (waitpid's ECHILD)."""

    def __init__(self, pid, stdout, stderr):
        self.pid, self.stdout, self.stderr, self.returncode = pid, stdout, stderr, None

    def _reap(self, flags):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:           # reaped meanwhile by the other caller
                if self.returncode is None:
                    self.returncode = EXIT_STOPPED
                return self.returncode
            if pid and self.returncode is None:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self):
        return self._reap(os.WNOHANG)

    def wait(self):
        return self._reap(0)


def _shard_reads(job, n):
    """The ReadOptions of each of the n shards. A folder's files are assigned here, once, by the app_id at each
    file's start (transforms/io/files.py: shard_files), and each shard is given its list: every shard works from
    the same assignment, forked or a new interpreter, and the files are read once for it."""
    read = job.cfg.read._replace(shard_count=n)
    plan = None
    if job.source.kind == 'files':
        from transforms.io import folder_shards
        from transforms.io.files import FileSource
        plan = folder_shards(FileSource(job.cfg.source, limit=read.limit).paths, job.contract, read)
    return [read._replace(shard_index=i, shard_paths=None if plan is None else tuple(plan[i])) for i in range(n)]


def _start_shards(job, cfg, reads, work, shard_main, preexec, procs, shard_cfgs, forward):
    """Start the shard processes (one per entry of `reads`; forked, or new interpreters given their configuration
    file); a signal that arrives meanwhile stops the starting and reaches every shard already started."""
    for i, read in enumerate(reads):
        if forward.received is not None:
            break
        shard = job.cfg.replace(
            read=read, create_tables=False,
            session_id=job.session, session_is_new=job.session_is_new, summary_json=os.path.join(work, f's{i}.json'),
            report=None,
            metrics_json=os.path.join(work, f'm{i}.json') if cfg.metrics_json else None,
            status=os.path.join(work, f'status{i}.jsonl') if cfg.status else None,
            dead_letter=os.path.join(work, f'dead{i}.jsonl') if cfg.dead_letter else None)
        shard_cfgs.append(shard)
        _start_one(shard, os.path.join(work, f'config{i}.json'), shard_main, preexec, procs)
        forward.catch_up()


def _start_one(shard, config_path, shard_main, preexec, procs):
    """Start one shard process (forked, or a new interpreter given its configuration file) into `procs`."""
    import subprocess
    if _FORK_SHARDS and shard_main is not None:
        _fork_shard(shard, shard_main, preexec, procs)
        return
    with open(config_path, 'w', encoding='utf-8') as f:
        f.write(shard.to_json())
    procs.append(subprocess.Popen([sys.executable, '-m', 'pipeline.shard', config_path],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  preexec_fn=preexec, env={**os.environ, SHARD_ENV: str(os.getpid())}))


def _fork_shard(shard_cfg, shard_main, preexec, procs) -> None:
    """Fork one shard process running `shard_main(shard_cfg)`, its stdout and stderr piped to the launcher, and
    append it to `procs` before a signal can be handled (they stay blocked until then, and the child is put in its
    own process group by both sides, so that the launcher's forwarding reaches it from the first instant). The
    launcher has no other thread at this point (the relays start after the last fork) and holds no transaction
    open; the child opens its own connections, never touches the launcher's, and leaves by os._exit (no atexit
    handler, no finally block of the launcher's, no close of an inherited connection runs in it)."""
    launcher = os.getpid()
    blocked = set(StopOnSignals.SIGNALS)
    fds = []
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)     # no launcher handler runs in the child
    try:
        out_r, out_w = os.pipe()
        fds += [out_r, out_w]
        err_r, err_w = os.pipe()
        fds += [err_r, err_w]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
    except BaseException:
        for fd in fds:
            os.close(fd)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        raise
    if pid == 0:
        code = EXIT_STOPPED
        try:
            for sib in procs:                                         # the other shards' pipes are not ours
                for f in (sib.stdout, sib.stderr):
                    try:
                        os.close(f.fileno())
                    except OSError:
                        pass
            os.close(out_r)
            os.close(err_r)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.close(out_w)
            os.close(err_w)
            # new text streams on the pipes (the launcher's may be any object: a test's capture, for one)
            sys.stdout = open(1, 'w', encoding='utf-8', errors='replace', buffering=1, closefd=False)
            sys.stderr = open(2, 'w', encoding='utf-8', errors='replace', buffering=1, closefd=False)
            for sig in blocked:
                signal.signal(sig, signal.SIG_DFL)
            preexec()
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            os.environ[SHARD_ENV] = str(launcher)
            code = shard_main(RunConfig.from_json(shard_cfg.to_json()))
        except BaseException as e:          # one line, as a shard interpreter would print it
            try:
                os.write(2, f'error: the shard process stopped: {type(e).__name__}\n'.encode())
            except OSError:
                pass
        finally:
            try:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    try:
        try:
            os.setpgid(pid, pid)          # as the child does: whichever runs first, killpg reaches it
        except OSError:
            pass
        os.close(out_w)
        os.close(err_w)
        procs.append(_ForkedShard(pid, os.fdopen(out_r, 'r', encoding='utf-8', errors='replace'),
                                  os.fdopen(err_r, 'r', encoding='utf-8', errors='replace')))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def prepare_source_only(job):
    """make_source for one shard's configuration: a bad source is a one-line error before any shard starts (a
    folder's shard is given its files by _shard_reads, and may get none)."""
    from transforms.io.sources import SourceError
    from transforms.io import make_source
    cfg = job.cfg
    try:
        make_source(cfg.source, job.contract, source_table=cfg.source_table, source_column=cfg.source_column,
                    opts=cfg.read._replace(resume=False), dialect=cfg.dialect, chunk_docs=None,
                    record_element=cfg.record_element)
    except SourceError as e:
        raise ConfigError(str(e)) from None


def _join_local(parts, dest):
    """The local part files into `dest`."""
    if not dest:
        return
    with open(dest, 'wb') as out:
        for p in parts:
            if p and os.path.exists(p):
                with open(p, 'rb') as f:
                    shutil_copy(f, out)


def shutil_copy(src, dst):
    import shutil
    shutil.copyfileobj(src, dst, 1 << 20)


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
        self.signalled = set()          # pids that got the first signal

    def _send(self, p, signum):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass
        self.signalled.add(p.pid)

    def _handler(self, signum, frame):
        if self.received is None:
            self.received = signum
            os.write(2, f'{signal.Signals(signum).name} received: stopping the shard processes\n'.encode())
        for p in list(self.procs):
            self._send(p, signum)

    def catch_up(self):
        """A shard started while (or after) the signal was handled gets it too: it was not in the list then."""
        if self.received is not None:
            for p in list(self.procs):
                if p.pid not in self.signalled:
                    self._send(p, self.received)

    def __enter__(self):
        for sig in StopOnSignals.SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        return False
