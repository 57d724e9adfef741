"""The run summary: the counts of a run (from its outcome records, `pipeline.graph.RunCounts`), the invariant
read = written + dead_lettered, the one SUMMARY line, and the JSON files for operators."""
import json
import logging
from typing import Any, Dict, List, Optional

from apache_beam.metrics.metric import MetricsFilter

log = logging.getLogger(__name__)

MAX_FAILED_LISTED = 100000


def runner_counters(result, sources: Optional[Dict[str, int]] = None) -> Dict[str, Dict[str, int]]:
    """The runner's metrics, for diagnostics only (the counts of a run come from its records, RunCounts):
    namespace → name → sum of the counter's committed value, or of its attempted value where the runner
    reports no committed one.

    Runners differ here. Measured with Beam 2.77: the FnApiRunner (DirectRunner in_memory and multi_processing)
    fills both; under the PortableRunner (local job service) a counter comes back with committed set and
    attempted None, because the job service returns committed and attempted as two separate lists and
    PortableMetrics pairs them per key — a job server that fills only the attempted list (not measured here:
    Flink, Spark) gives committed None instead. The rule is Beam's own
    `MetricResult.result`: committed when it is set and non-zero, else attempted — committed is exact (no
    retried bundles counted twice), attempted is the fallback for runners that do not commit metrics. Using
    only one of them would make the SUMMARY read 0 on some runner. `sources`, when given, gets the number of
    counters taken from each ('committed' / 'attempted')."""
    out: Dict[str, Dict[str, int]] = {}
    try:
        res = result.metrics().query(MetricsFilter())
    except Exception as e:  # a runner without metrics support: the summary says so instead of guessing
        log.warning('metrics unavailable from this runner: %s', type(e).__name__)
        return out
    for c in res.get('counters', []):
        try:
            committed = c.committed
        except Exception:
            committed = None
        try:
            attempted = c.attempted
        except Exception:
            attempted = None
        if committed:
            v, kind = committed, 'committed'
        elif attempted:
            v, kind = attempted, 'attempted'
        else:
            v, kind = committed if committed is not None else attempted, 'committed'
        if sources is not None and v is not None:
            sources[kind] = sources.get(kind, 0) + 1
        ns = c.key.metric.namespace
        out.setdefault(ns, {})
        out[ns][c.key.metric.name] = out[ns].get(c.key.metric.name, 0) + int(v or 0)
    return out


class Summary:
    """Counts of one run. `skipped`: documents not read because they are done and unchanged (resume).
    `changed`: documents written that had been migrated before with other content (their rows were replaced);
    part of `written`. A changed document whose new version fails is dead-lettered and loses its old rows. `counts` holds the rest of RunCounts (by stage and reason, rows by table, warnings by
    field); `extra` what the launcher adds (session, source, target, exit status, progress samples, ...)."""

    def __init__(self, counts: Optional[Dict[str, Any]] = None, elapsed_s: float = 0.0, extra=None):
        from pipeline.graph import RunCounts
        self.counts = RunCounts().create_accumulator()
        if counts:
            from pipeline.graph import merge_counts
            merge_counts(self.counts, counts)
        self.elapsed_s = elapsed_s
        self.extra = dict(extra or {})

    def __getattr__(self, name):
        counts = self.__dict__.get('counts')
        if counts is not None and name in counts:
            return counts[name]
        raise AttributeError(name)

    def add(self, counts: Dict[str, Any], elapsed_s: float = 0.0, runner=None) -> 'Summary':
        """This summary with the counts of one more run (chunk, shard) added; `runner`: that run's runner
        counters (diagnostics, kept apart under 'counters')."""
        from pipeline.graph import merge_counts
        merge_counts(self.counts, counts)
        self.elapsed_s += elapsed_s
        if runner:
            merge_counts(self.extra.setdefault('counters', {}), runner)
        return self

    @property
    def warnings(self):
        return self.counts['quality_warnings']

    @property
    def docs_per_min(self):
        return self.read / self.elapsed_s * 60 if self.elapsed_s > 0 else 0.0

    @property
    def balanced(self):
        return self.read == self.written + self.dead_lettered

    def line(self):
        return (f'SUMMARY read={self.read} written={self.written} dead_lettered={self.dead_lettered} '
                f'rows={self.rows} docs_per_min={self.docs_per_min:.1f} skipped={self.skipped} '
                f'changed={self.changed} warnings={self.warnings}')

    def as_dict(self):
        c = self.counts
        d = {'read': c['read'], 'written': c['written'], 'dead_lettered': c['dead_lettered'], 'rows': c['rows'],
             'docs_per_min': round(self.docs_per_min, 1), 'elapsed_s': round(self.elapsed_s, 3),
             'skipped': c['skipped'], 'changed': c['changed'], 'invariant_holds': self.balanced,
             'quality_warnings': c['quality_warnings'], 'docs_with_quality_warnings': c['docs_with_quality_warnings'],
             'dead_lettered_by_stage': dict(sorted(c['dead_lettered_by_stage'].items())),
             'dead_lettered_without_app_id': c['dead_lettered_without_app_id'], 'counts': c}
        d.update(self.extra)
        return d

    def write_json(self, path: Optional[str]):
        if path:
            _write_text(path, json.dumps(self.as_dict(), indent=2, sort_keys=True, default=str))


def _write_text(path, text):
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.create(path) as f:
        f.write(text.encode('utf-8'))


def read_lines(paths: List[str]):
    """The lines of JSONL files written by the workers (any FileSystems path); missing files are skipped."""
    from apache_beam.io.filesystems import FileSystems
    for p in paths:
        if not p or not FileSystems.exists(p):
            continue
        with FileSystems.open(p) as f:
            for line in f.read().decode('utf-8').splitlines():
                if line.strip():
                    yield line


def read_counts(path) -> Dict[str, Any]:
    """The RunCounts one run wrote (one JSON line)."""
    lines = list(read_lines([path]))
    if not lines:
        raise FileNotFoundError(f'the run wrote no counts file at {path}')
    return json.loads(lines[-1])


def metrics(summary: Summary, failure_files: List[str]) -> Dict[str, Any]:
    """Everything an operator needs after a run: counts by stage and reason, rows per table, warnings by field,
    and the failed documents (ids, stage, reason; never their contents)."""
    failed = []
    total = 0
    for line in read_lines(failure_files):
        total += 1
        if len(failed) < MAX_FAILED_LISTED:
            failed.append(json.loads(line))
    c = summary.counts
    d = summary.as_dict()
    d.update({'dead_lettered_by_stage_and_reason': c['dead_lettered_by_stage_and_reason'],
              'rows_by_table': dict(sorted(c['rows_by_table'].items())),
              'warnings_by_field': dict(sorted(c['warnings_by_field'].items(), key=lambda kv: (-kv[1], kv[0]))),
              'failed': failed, 'failed_listed': len(failed), 'failed_total': total})
    return d


def write_metrics_json(summary: Summary, path, failure_files=()):
    _write_text(path, json.dumps(metrics(summary, list(failure_files)), indent=2, sort_keys=True, default=str))
