"""The run summary: counts from the pipeline's metrics, the invariant read = written + dead_lettered, the one
SUMMARY line, and the JSON files for operators."""
import json
import logging
from typing import Dict, Optional

from apache_beam.metrics.metric import MetricsFilter

log = logging.getLogger(__name__)


def counters(result, sources: Optional[Dict[str, int]] = None) -> Dict[str, Dict[str, int]]:
    """namespace → name → sum of the counter's committed value, or of its attempted value where the runner
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
    """Counts of one run. `changed`: documents read that had been migrated successfully before with other
    content (their rows were replaced); they are part of `read`. `skipped`: documents not read because they are
    done and unchanged (resume)."""

    def __init__(self, read, written, dead_lettered, rows, elapsed_s, skipped=0, extra=None, changed=0):
        self.read, self.written, self.dead_lettered, self.rows = read, written, dead_lettered, rows
        self.elapsed_s, self.skipped, self.changed = elapsed_s, skipped, changed
        self.extra = extra or {}

    def merge(self, other):
        """The summary of two successive runs (chunks) of one job."""
        extra = dict(self.extra)
        for k in ('quality_warnings', 'docs_with_quality_warnings'):
            extra[k] = extra.get(k, 0) + other.extra.get(k, 0)
        for k in ('dead_lettered_by_stage',):
            merged = dict(extra.get(k, {}))
            for kk, v in other.extra.get(k, {}).items():
                merged[kk] = merged.get(kk, 0) + v
            extra[k] = merged
        counters = {ns: dict(v) for ns, v in extra.get('counters', {}).items()}
        for ns, v in other.extra.get('counters', {}).items():
            for kk, n in v.items():
                counters.setdefault(ns, {})[kk] = counters.get(ns, {}).get(kk, 0) + n
        extra['counters'] = counters
        froms = set(filter(None, '+'.join(x.get('metrics_from', '') for x in (self.extra, other.extra)).split('+')))
        froms.discard('none')
        if froms or 'metrics_from' in other.extra:
            extra['metrics_from'] = '+'.join(sorted(froms)) or 'none'
        return Summary(self.read + other.read, self.written + other.written,
                       self.dead_lettered + other.dead_lettered, self.rows + other.rows,
                       self.elapsed_s + other.elapsed_s, self.skipped + other.skipped, extra,
                       self.changed + other.changed)

    @property
    def docs_per_min(self):
        return self.read / self.elapsed_s * 60 if self.elapsed_s > 0 else 0.0

    @property
    def balanced(self):
        return self.read == self.written + self.dead_lettered

    def line(self):
        return (f'SUMMARY read={self.read} written={self.written} dead_lettered={self.dead_lettered} '
                f'rows={self.rows} docs_per_min={self.docs_per_min:.1f} changed={self.changed}')

    def as_dict(self):
        d = {'read': self.read, 'written': self.written, 'dead_lettered': self.dead_lettered, 'rows': self.rows,
             'docs_per_min': round(self.docs_per_min, 1), 'elapsed_s': round(self.elapsed_s, 3),
             'skipped_already_done': self.skipped, 'changed': self.changed, 'invariant_holds': self.balanced}
        d.update(self.extra)
        return d

    def write_json(self, path: Optional[str]):
        if path:
            with open(path, 'w', encoding='utf-8') as f:
                json.dump(self.as_dict(), f, indent=2, sort_keys=True)


def summarize(result, elapsed_s) -> Summary:
    sources: Dict[str, int] = {}
    c = counters(result, sources)
    m = c.get('migration', {})
    late = m.get('docs_skipped_done_late', 0)    # read, parsed, then found done in the ledger (file sources)
    s = Summary(read=m.get('docs_read', 0) - late, written=m.get('docs_written', 0),
                dead_lettered=m.get('docs_dead_lettered', 0), rows=m.get('rows_written', 0),
                elapsed_s=elapsed_s, skipped=m.get('docs_skipped_done', 0) + late,
                changed=m.get('docs_changed', 0))
    s.extra['dead_lettered_by_stage'] = dict(sorted(c.get('dead_letter_stage', {}).items()))
    s.extra['quality_warnings'] = m.get('quality_warnings', 0)
    s.extra['docs_with_quality_warnings'] = m.get('docs_with_quality_warnings', 0)
    s.extra['counters'] = {ns: dict(sorted(v.items())) for ns, v in sorted(c.items())}
    s.extra['metrics_from'] = ('+'.join(sorted(sources)) or 'none')
    if 'attempted' in sources:
        log.info('%d metric(s) were reported as attempted only by this runner (no committed value)',
                 sources['attempted'])
    return s


MAX_FAILED_LISTED = 100000


def _reason_class(reason):
    """A reason with its ids and numbers folded, so that reasons can be counted ('con_id N already belongs')."""
    import re
    return re.sub(r'\d+', 'N', (reason or '').split('\n')[0])[:120]


def write_metrics_json(summary: Summary, path, failures_dir=None):
    """Everything an operator needs after a run: counts by stage and reason, rows per table, the failed
    documents (ids, stage, reason; never their contents), elapsed, docs/min, time per stage."""
    import glob
    import os
    failed, by_reason, total_failed = [], {}, 0
    for fp in sorted(glob.glob(os.path.join(failures_dir, '*'))) if failures_dir else []:
        with open(fp, encoding='utf-8') as f:
            for line in f:
                if not line.strip():
                    continue
                rec = json.loads(line)
                total_failed += 1
                key = rec.get('stage') or 'unknown'
                by_reason.setdefault(key, {})
                rc = _reason_class(rec.get('reason'))
                by_reason[key][rc] = by_reason[key].get(rc, 0) + 1
                if len(failed) < MAX_FAILED_LISTED:
                    failed.append(rec)
    c = summary.extra.get('counters', {})
    stage_us = c.get('stage_time_us', {})
    d = summary.as_dict()
    d.pop('counters', None)
    d.update({
        'dead_lettered_by_stage_and_reason': by_reason,
        'rows_by_table': dict(sorted(c.get('rows_by_table', {}).items())),
        'stage_cpu_seconds': {k: round(v / 1e6, 3) for k, v in sorted(stage_us.items())},
        'failed': failed,
        'failed_listed': len(failed),
        'failed_total_in_files': total_failed if failures_dir else None,
        'counters': c,
    })
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(d, f, indent=2, sort_keys=True, default=str)


def merge_metrics_files(paths, total: Summary, out_path):
    """One --metrics-json for a job run as several shard processes."""
    import os
    merged = total.as_dict()
    merged.pop('counters', None)
    failed, by_reason, rows, stage = [], {}, {}, {}
    for p in paths:
        if not os.path.exists(p):
            continue
        d = json.load(open(p, encoding='utf-8'))
        failed += d.get('failed', [])
        for st, reasons in d.get('dead_lettered_by_stage_and_reason', {}).items():
            for r, n in reasons.items():
                by_reason.setdefault(st, {})
                by_reason[st][r] = by_reason[st].get(r, 0) + n
        for t, n in d.get('rows_by_table', {}).items():
            rows[t] = rows.get(t, 0) + n
        for k, v in d.get('stage_cpu_seconds', {}).items():
            stage[k] = round(stage.get(k, 0) + v, 3)
    merged.update({'failed': failed[:MAX_FAILED_LISTED], 'failed_listed': min(len(failed), MAX_FAILED_LISTED),
                   'dead_lettered_by_stage_and_reason': by_reason, 'rows_by_table': dict(sorted(rows.items())),
                   'stage_cpu_seconds': stage, 'counters': total.extra.get('counters', {})})
    with open(out_path, 'w', encoding='utf-8') as f:
        json.dump(merged, f, indent=2, sort_keys=True, default=str)
