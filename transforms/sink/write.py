"""`WriteToSql`: MappedDocs into the target tables, in FK tiers, batched per table by GroupIntoBatches, one
connection per bundle; one Outcome per document."""
import logging
from typing import Dict, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.windowed_value import WindowedValue

from transforms.records import MappedDoc, Outcome, RowGroup
from transforms.sink.bundle import FAILED_TAG, METRICS_NAMESPACE, _ConnPerBundleFn, _metas_by_name
from transforms.sink.owned import CHANGED_TAG, _CompensateFn, _ReplaceFn
from transforms.sink.writer import SinkError, _norm
from transforms.sql.meta import TableMeta
from transforms.sql.retry import RetryPolicy

log = logging.getLogger(__name__)


class WriteBatchesFn(_ConnPerBundleFn):
    """((table, shard), Iterable[micro-batch (list of RowGroup) or RowGroup]) -> ('ok', table, [app_ids],
    n_rows); tagged 'failed': (app_id, source, reason).
    Side input (optional): app_ids that failed in earlier tiers; their rows are not written."""

    def __init__(self, target_url, metas: Dict[str, TableMeta], dialect=None, retry: RetryPolicy = RetryPolicy()):
        super().__init__(target_url, dialect, retry)
        self.metas = _metas_by_name(metas)
        self.c_rows = Metrics.counter(METRICS_NAMESPACE, 'sink_rows_written')
        self.c_batches = Metrics.counter(METRICS_NAMESPACE, 'sink_batches')
        self.c_failed = Metrics.counter(METRICS_NAMESPACE, 'sink_docs_failed')
        self.c_skipped = Metrics.counter(METRICS_NAMESPACE, 'sink_groups_skipped_failed_earlier')
        self._skip_src, self._skip = None, frozenset()

    def _skip_set(self, failed_before):
        if failed_before is None:
            return frozenset()
        if failed_before is not self._skip_src:
            self._skip_src = failed_before
            self._skip = frozenset(_norm(x[0] if isinstance(x, (tuple, list)) else x) for x in failed_before)
        return self._skip

    def process(self, element, failed_before=None):
        key, parts = element
        # micro-batches of RowGroups (_ExplodeFn), or RowGroups
        groups = [g for part in parts for g in (part if isinstance(part, list) else (part,))]
        table = key[0] if isinstance(key, tuple) else key        # (table, shard)
        meta = self.metas.get(table)
        if meta is None:
            raise SinkError(f'no metadata for table {table!r}')
        skip = self._skip_set(failed_before)
        todo = []
        for g in groups:
            if skip and _norm(g.app_id) in skip:
                self.c_skipped.inc()
            else:
                todo.append(g)
        if not todo:
            return
        res = self._writer().write(meta, todo)
        self.c_batches.inc()
        self.c_rows.inc(res.rows_written)
        Metrics.counter('rows_by_table', table).inc(res.rows_written)
        if res.failures:
            self.c_failed.inc(len(res.failures))
        yield ('ok', table, list(res.written), res.rows_written)
        for f in res.failures:
            yield TaggedOutput(FAILED_TAG, f)


MICRO_BATCH = 50      # RowGroups per element into GroupIntoBatches (see _ExplodeFn)


def micro_batches(batch_size: int):
    """(RowGroups per micro-batch, micro-batches per GroupIntoBatches batch), their product `batch_size` where a
    divisor allows micro-batches of 10 to 50 documents (200 = 50 x 4, 99 = 33 x 3, 120 = 40 x 3), else at most
    `batch_size` (101 -> 33 x 3)."""
    b = max(1, int(batch_size))
    least = -(-b // MICRO_BATCH)
    for n in range(least, b + 1):
        if b % n == 0 and (b // n >= 10 or n == least):
            return b // n, n
        if b // n < 10:
            break
    return b // least, least


class _ExplodeFn(beam.DoFn):
    """MappedDoc -> ((table, shard), [RowGroup, ...]) for the tables of one tier: micro-batches of up to
    `micro` documents' rows of one table and window, gathered within the bundle (the rest leaves at the bundle's
    end, at the end of its window). GroupIntoBatches keeps its state element by element (a timer set, a bag
    append, a count read for each), which cost about as much per element as writing its rows: one element per
    micro-batch instead of one per document and table. Documents that failed in an earlier tier (side inputs:
    lists of (app_id, source, reason), one per earlier tier) are dropped. The side inputs are the barrier: this
    step starts only when every earlier tier has finished, and only failed ids cross it."""

    def __init__(self, tables: Sequence[str], shards: int = 1, micro: int = MICRO_BATCH):
        self.tables, self.shards = tuple(tables), max(1, int(shards))
        self.micro = max(1, int(micro))
        self.c_skipped = Metrics.counter(METRICS_NAMESPACE, 'sink_docs_skipped_failed_earlier')
        self._src, self._skip = None, frozenset()
        self._buf = {}

    def start_bundle(self):
        self._buf = {}

    def finish_bundle(self):
        buf, self._buf = self._buf, {}
        for (key, window), groups in buf.items():
            if groups:
                yield WindowedValue((key, groups), window.max_timestamp(), [window])

    def process(self, doc: MappedDoc, window=beam.DoFn.WindowParam, *failed_before):
        # (Beam passes the side inputs after the window: runners/common.py _get_arg_placeholders)
        if failed_before:
            if failed_before != self._src:
                self._src = failed_before
                self._skip = frozenset(_norm(f[0]) for fb in failed_before for f in fb)
            if self._skip and _norm(doc.app_id) in self._skip:
                self.c_skipped.inc()
                return
        shard = _norm(doc.app_id) % self.shards if isinstance(_norm(doc.app_id), int) else 0
        for t in self.tables:
            rows = doc.rows.get(t)
            if rows:
                key = (t, shard)
                part = self._buf.get((key, window))
                if part is None:
                    part = self._buf[(key, window)] = []
                part.append(RowGroup(doc.app_id, doc.source, list(rows)))
                if len(part) >= self.micro:
                    del self._buf[(key, window)]
                    yield key, part        # in the window of the documents it holds


class WriteToSql(beam.PTransform):
    """PCollection[MappedDoc] -> PCollection[Outcome] (one per MappedDoc).

    [replace: documents written before (a processing_log success row for the app_id) lose their old rows first,
    children first, in one transaction per batch of documents] -> per FK tier: explode to ((table, shard),
    RowGroup) in micro-batches of up to 50 documents, dropping the documents that failed in an earlier tier (side
    inputs of the earlier tiers' failures: the barrier) -> GroupIntoBatches (about batch_size documents per batch),
    keyed by (table, shard) so that a table is written by up to `shards` workers at a time -> WriteBatchesFn (one
    connection per bundle). Outcomes: CoGroupByKey(app_id) of every document's summary with all failures; a
    document that failed after some tier had written it has those rows removed again (compensation)."""

    def __init__(self, target_url: str, metas: Dict[str, TableMeta], tiers: Sequence[Sequence[str]],
                 batch_size: int = 500, dialect: Optional[str] = None, retry: RetryPolicy = RetryPolicy(),
                 replace: bool = True, ledger_schema: Optional[str] = None, shards: int = 1,
                 session_id: Optional[str] = None):
        super().__init__()
        self.target_url = target_url
        self.metas = dict(metas)
        self.tiers = [list(t) for t in tiers if t]
        self.batch_size = int(batch_size)
        self.dialect = dialect
        self.retry = retry
        self.replace = replace
        self.shards = max(1, int(shards))
        self.session_id = session_id      # ledger rows of this run are not 'before' it (changed = since an earlier run)
        self.ledger_schema = ledger_schema if ledger_schema is not None else next(
            (m.schema for m in self.metas.values()), None)
        missing = [t for tier in self.tiers for t in tier if t not in self.metas]
        if missing:
            raise SinkError(f'WriteToSql: no table metadata for {", ".join(missing)}')

    def expand(self, docs):
        key_type = beam.typehints.Tuple[beam.typehints.Tuple[str, int], beam.typehints.Any]
        failed = []
        written = tuple(t for tier in self.tiers for t in tier)
        alive = docs
        early_failed, changed = [], None
        if self.replace and self.tiers:
            # Re-migration replaces a document's rows: what its new version no longer maps to must go, and the
            # target must end as a fresh run of the new version would leave it (defaults, NULLs and all).
            rep = (docs
                   | 'BatchForReplace' >> beam.BatchElements(min_batch_size=1, max_batch_size=self.batch_size)
                   | 'ReplaceEarlierRows' >> beam.ParDo(_ReplaceFn(
                       self.target_url, {t: self.metas[t] for t in written}, self.tiers, self.ledger_schema,
                       self.dialect, self.retry, session_id=self.session_id))
                   .with_outputs(FAILED_TAG, CHANGED_TAG, main='ok'))
            alive = rep.ok
            early_failed.append(rep[FAILED_TAG])
            changed = rep[CHANGED_TAG]
        micro, per_batch = micro_batches(self.batch_size)
        for i, tier in enumerate(self.tiers):
            before = [beam.pvalue.AsList(f) for f in early_failed + failed]
            keyed = (alive | f'ExplodeTier{i}' >> beam.ParDo(_ExplodeFn(tuple(tier), self.shards, micro), *before)
                     .with_output_types(key_type))
            # batches of about batch_size documents: GroupIntoBatches counts micro-batches
            batches = keyed | f'BatchTier{i}' >> beam.GroupIntoBatches(per_batch)
            fn = WriteBatchesFn(self.target_url, {t: self.metas[t] for t in tier}, self.dialect, self.retry)
            res = batches | f'WriteTier{i}' >> beam.ParDo(fn).with_outputs(FAILED_TAG, main='ok')
            failed.append(res[FAILED_TAG])
        summary = docs | 'KeyDocs' >> beam.Map(_doc_summary, written)
        failures = early_failed + failed
        joined = {'doc': summary}
        if failures:
            all_failed = failures[0] if len(failures) == 1 else tuple(failures) | 'AllFailures' >> beam.Flatten()
            joined['failed'] = all_failed | 'KeyFailed' >> beam.Map(lambda f: (_norm(f[0]), f))
        if changed is not None:
            joined['changed'] = changed | 'KeyChanged' >> beam.Map(lambda a: (a, True))
        if len(joined) == 1:
            return summary | 'Outcomes' >> beam.Map(lambda kv: _outcome(kv[1], None, False))
        outcomes = joined | 'JoinOutcomes' >> beam.CoGroupByKey() | 'Outcomes' >> beam.FlatMap(_outcomes)
        if not failures:
            return outcomes
        # A document that failed in a later tier may have rows committed in earlier ones: remove them, so that a
        # dead-lettered document leaves nothing half-written behind. The failed outcomes pass through.
        failed_docs = outcomes | 'SinkFailed' >> beam.Filter(lambda o: o.status != 'success')
        ok_docs = outcomes | 'SinkOk' >> beam.Filter(lambda o: o.status == 'success')
        cleaned = failed_docs | 'RemovePartialRows' >> beam.ParDo(
            _CompensateFn(self.target_url, {t: self.metas[t] for t in written}, self.tiers, self.dialect,
                          self.retry))
        return (ok_docs, cleaned) | 'FinalOutcomes' >> beam.Flatten()


def _doc_summary(d: MappedDoc, written):
    """(app_id, what the outcome of the document needs): small, the rows stay behind."""
    tables = tuple((t, len(d.rows[t])) for t in written if d.rows.get(t))
    return _norm(d.app_id), (d.source, d.app_id, tables, tuple(d.warnings or ()), d.content_hash)


def _outcome(doc, failure, changed):
    source, app_id, tables, warnings, content_hash = doc
    if failure is None:
        return Outcome(source, app_id, 'success', None, None, sum(n for _, n in tables), warnings,
                       content_hash, changed, tables)
    return Outcome(source, app_id, 'failed', 'sink', failure[2], 0, warnings, content_hash, False)


def _failure_for(source, failures):
    """The failure of the doc with `source` among the failures of its app_id (matched by source; a failure
    whose source matches no doc of the app_id applies to all of them)."""
    for f in failures:
        if f[1] == source:
            return f
    return None


def _outcomes(kv):
    _, groups = kv
    failures = list(groups.get('failed', ()))
    changed = bool(list(groups.get('changed', ())))
    for doc in groups['doc']:
        yield _outcome(doc, _failure_for(doc[0], failures) if failures else None, changed)
