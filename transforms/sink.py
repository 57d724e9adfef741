"""The sink: upsert RowGroups into the target, one transaction per batch, with retry and bisection.

Pure core (no Beam): `Writer` (owns a connection; reconnects) and `write_batch(conn, dialect, meta, groups)`.
Beam: `WriteBatchesFn`, `WriteToSql` (FK tiers with side-input barriers), `WriteLedger`, `WriteDeadLetters`.

Guarantees:
* Upserts on the table's primary key: re-runs never duplicate rows.
* A document's rows for one table (one RowGroup) are committed together or not at all.
* A data error (constraint, truncation, type) fails only the documents that cause it: the batch is bisected
  over RowGroups, every other document is committed, each bad document gets the database's message
  (scrubbed: no row values, no password).
* A key of a table that carries app_id but is not keyed by it (app_contact_base.con_id) belongs to one
  document: a row whose key is owned by another app_id fails its document; two documents of one batch with the
  same key: the later fails.
* Transient errors (lost connection, deadlock, lock timeout, 'database is locked') reconnect and retry with
  bounded exponential backoff; when retries are exhausted SinkUnavailable is raised (the runner retries the
  bundle; upserts make that safe) rather than failing documents because the database was down.
"""
import logging
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from pipeline.db.dialects import FATAL, TRANSIENT, get_dialect
from pipeline.db.meta import TableMeta
from pipeline.db.retry import RetryingConnection, RetryPolicy
from transforms.records import DeadLetter, MappedDoc, Outcome, RowGroup

log = logging.getLogger(__name__)

METRICS_NAMESPACE = 'sink'
FAILED_TAG = 'failed'


class SinkError(Exception):
    """A non-data problem (schema mismatch, permission, SQL error): stops the pipeline, never a document."""


class SinkUnavailable(SinkError):
    """The target stayed unreachable / kept failing transiently after all retries."""


class BatchResult(NamedTuple):
    rows_written: int
    failed: Dict[Any, str]                               # app_id -> reason
    failures: List[Tuple[Any, str, str]] = []            # (app_id, source, reason), in batch order
    written: List[Any] = []                              # app_ids whose rows were committed


# ============================================================================================== pure core

class Writer(RetryingConnection):
    """Owns one connection (opened lazily); writes batches with retry, reconnect and bisection. The connection
    handling and the transient-error retry are `pipeline.db.retry.RetryingConnection`'s (`run`, `open`,
    `close`): one retry rule for the whole product.

    connect: () -> DB-API connection (autocommit off). scrub: exception -> safe message (defaults to the
    dialect's sanitizer). sleep is injectable for tests."""

    Unavailable = SinkUnavailable        # retries used up
    CannotConnect = SinkError            # a connection that cannot be opened (login failed, ...)

    def __init__(self, connect: Callable[[], Any], dialect, conn=None, retry: RetryPolicy = RetryPolicy(),
                 scrub: Optional[Callable[[BaseException], str]] = None, sleep=time.sleep):
        super().__init__(connect, dialect, conn=conn, retry=retry, scrub=scrub, sleep=sleep, what='sink')
        self.bisections = 0

    # ---- batches
    def write(self, meta: TableMeta, groups: Sequence[RowGroup]) -> BatchResult:
        d = self.dialect
        failures: List[Tuple[Any, str, str]] = []
        prepared = []                           # (group, columns-bucketed rows)
        colmap = {c.name.lower(): c for c in meta.columns}
        pk = meta.primary_key
        owner = meta.owner_column
        claimed: Dict[Tuple, RowGroup] = {}
        for g in groups:
            try:
                rows, keys = self._prepare(meta, colmap, g)
            except _DocError as e:
                failures.append((g.app_id, g.source, e.reason))
                continue
            clash = next((k for k in keys if k in claimed), None)
            if clash is not None:
                other = claimed[clash]
                failures.append((g.app_id, g.source,
                                 f'{meta.name}: {_key_text(pk, clash)} is also written by app_id {other.app_id} '
                                 f'({other.source}) earlier in the same batch'))
                continue
            for k in keys:
                claimed[k] = g
            prepared.append((g, rows, keys))

        if owner and prepared:
            all_keys = [k for _, _, keys in prepared for k in keys]
            try:
                owners = self.run(lambda cur: d.select_owners(cur, meta, all_keys), commit=False)
            except SinkError:
                raise
            except Exception as e:
                raise SinkError(f'{meta.name}: ownership check failed: {self.scrub(e)}') from None
            owners = {tuple(_norm(v) for v in k): v for k, v in owners.items()}
            keep = []
            for g, rows, keys in prepared:
                bad = next((k for k in keys if k in owners and _norm(owners[k]) != _norm(g.app_id)), None)
                if bad is not None:
                    failures.append((g.app_id, g.source, f'{meta.name}: {_key_text(pk, bad)} already belongs to '
                                                         f'app_id {owners[bad]}'))
                else:
                    keep.append((g, rows, keys))
            prepared = keep

        written, nrows = [], 0
        for part, err in self._write_bisect(meta, prepared):
            if err is None:
                written.extend(g.app_id for g, _, _ in part)
                nrows += sum(len(r) for _, r, _ in part)
            else:
                g = part[0][0]
                failures.append((g.app_id, g.source, f'{meta.name}: {err}'))
        failed = {}
        for app_id, _, reason in failures:
            failed.setdefault(app_id, reason)
        return BatchResult(nrows, failed, failures, written)

    def _prepare(self, meta, colmap, g: RowGroup):
        """Rows as dicts keyed by the table's own column spelling; in-document duplicate keys: last wins
        (what row-by-row upserts would do)."""
        out: Dict[Tuple, Dict[str, Any]] = {}
        nokey = []
        pk = meta.primary_key
        for row in g.rows:
            r = {}
            for k, v in row.items():
                c = colmap.get(str(k).lower())
                if c is None:
                    raise SinkError(f'{meta.name}.{k}: column not found in the target table')
                if c.computed:
                    raise SinkError(f'{meta.name}.{k}: is a computed column')
                r[c.name] = v
            if pk:
                missing = [p for p in pk if r.get(p) is None]
                if missing:
                    raise _DocError(f'{meta.name}: primary key column {", ".join(missing)} has no value')
                out[tuple(_norm(r[p]) for p in pk)] = r
            else:
                nokey.append(r)
        return list(out.values()) + nokey, list(out.keys())

    def _write_bisect(self, meta, prepared):
        """Yield (part, None) for committed parts and ([one], message) for each bad document."""
        if not prepared:
            return
        stack = [prepared]
        while stack:
            part = stack.pop()
            try:
                self.run(lambda cur: self._upsert_all(cur, meta, part))
                yield part, None
            except SinkError:
                raise
            except Exception as e:
                kind = self.dialect.classify(e)
                if kind == FATAL:
                    raise SinkError(f'{meta.name}: {self.scrub(e)}') from None
                if len(part) == 1:
                    yield part, self.scrub(e)
                else:
                    self.bisections += 1
                    mid = len(part) // 2
                    stack.append(part[mid:])
                    stack.append(part[:mid])

    def _upsert_all(self, cur, meta, part):
        buckets: Dict[Tuple[str, ...], List[Tuple]] = {}
        order = meta.column_names
        for _, rows, _ in part:
            for r in rows:
                cols = tuple(c for c in order if c in r)
                buckets.setdefault(cols, []).append(tuple(r[c] for c in cols))
        n = 0
        for cols, rows in buckets.items():
            n += self.dialect.upsert(cur, meta, cols, rows)
        return n


class _DocError(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _norm(v):
    """Key normalisation so that 738936, 738936.0, Decimal('738936') and '738936' compare equal."""
    try:
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, (int,)):
            return v
        f = float(v)
        if f.is_integer():
            return int(f)
        return f
    except (TypeError, ValueError):
        return v


def _key_text(pk, key) -> str:
    return ', '.join(f'{c} {v}' for c, v in zip(pk, key))


def write_batch(conn, dialect, meta: TableMeta, groups: Sequence[RowGroup], reconnect: Optional[Callable] = None,
                retry: RetryPolicy = RetryPolicy(), scrub=None) -> BatchResult:
    """Write one batch on `conn` (one transaction; bisected on data errors). With `reconnect` (a callable
    returning a new connection), transient errors reconnect and retry; without it a transient error that
    needs a new connection raises SinkUnavailable. The connection passed in may have been replaced: use
    `Writer` to own connections across batches."""
    def no_reconnect():
        raise SinkUnavailable('connection lost and no reconnect callable given')
    w = Writer(reconnect or no_reconnect, dialect, conn=conn, retry=retry, scrub=scrub)
    return w.write(meta, groups)


# ============================================================================================== Beam

def _metas_by_name(metas) -> Dict[str, TableMeta]:
    return dict(metas)


class _ConnPerBundleFn(beam.DoFn):
    """One connection per bundle, opened lazily by the first write of the bundle."""

    def __init__(self, target_url: str, dialect: Optional[str] = None, retry: RetryPolicy = RetryPolicy()):
        self.target_url = target_url
        self.dialect_name = dialect
        self.retry = retry
        self.c_opened = Metrics.counter(METRICS_NAMESPACE, 'sink_connections_opened')
        self.c_bundles = Metrics.counter(METRICS_NAMESPACE, 'sink_bundles_with_writes')
        self.c_reconnects = Metrics.counter(METRICS_NAMESPACE, 'sink_reconnects')

    def setup(self):
        from pipeline.db.targets import parse_target
        self.target = parse_target(self.target_url, self.dialect_name)
        self.writer = None

    def start_bundle(self):
        self.writer = None

    def _writer(self) -> Writer:
        if self.writer is None:
            self.writer = Writer(self.target.connect, self.target.dialect_name, retry=self.retry,
                                 scrub=self.target.scrub)
            self.writer.open()
            self.c_opened.inc()
            self.c_bundles.inc()
        return self.writer

    def finish_bundle(self):
        w, self.writer = self.writer, None
        if w is not None:
            if w.reconnects:
                self.c_reconnects.inc(w.reconnects)
            try:
                if w.conn is not None:
                    w.conn.commit()
            finally:
                w.close()

    def teardown(self):
        w, self.writer = getattr(self, 'writer', None), None
        if w is not None:
            w.close()


class WriteBatchesFn(_ConnPerBundleFn):
    """(table, Iterable[RowGroup]) -> ('ok', table, [app_ids], n_rows); tagged 'failed': (app_id, source, reason).
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
        table, groups = element
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


class _ExplodeFn(beam.DoFn):
    """MappedDoc -> (table, RowGroup) for the tables of one tier; docs that failed in an earlier tier (side
    input: list of (app_id, source, reason)) are dropped."""

    def __init__(self, tables: Sequence[str]):
        self.tables = tuple(tables)
        self.c_skipped = Metrics.counter(METRICS_NAMESPACE, 'sink_docs_skipped_failed_earlier')
        self._src, self._skip = None, frozenset()

    def process(self, doc: MappedDoc, failed_before=None):
        if failed_before:
            if failed_before is not self._src:
                self._src = failed_before
                self._skip = frozenset(_norm(f[0]) for f in failed_before)
            if _norm(doc.app_id) in self._skip:
                self.c_skipped.inc()
                return
        for t in self.tables:
            rows = doc.rows.get(t)
            if rows:
                yield (t, RowGroup(doc.app_id, doc.source, list(rows)))


class WriteToSql(beam.PTransform):
    """PCollection[MappedDoc] -> PCollection[Outcome] (one per MappedDoc).

    Per FK tier: [barrier: CoGroupByKey(app_id) of the docs still alive with the previous tier's failures: a
    tier starts only after the previous tier finished, and docs that failed earlier are dropped] -> explode to
    (table, RowGroup) -> GroupIntoBatches(batch_size) -> WriteBatchesFn. Outcomes: CoGroupByKey(app_id) of
    all docs with all failures (so after every tier)."""

    def __init__(self, target_url: str, metas: Dict[str, TableMeta], tiers: Sequence[Sequence[str]],
                 batch_size: int = 500, dialect: Optional[str] = None, retry: RetryPolicy = RetryPolicy()):
        super().__init__()
        self.target_url = target_url
        self.metas = dict(metas)
        self.tiers = [list(t) for t in tiers if t]
        self.batch_size = int(batch_size)
        self.dialect = dialect
        self.retry = retry
        missing = [t for tier in self.tiers for t in tier if t not in self.metas]
        if missing:
            raise SinkError(f'WriteToSql: no table metadata for {", ".join(missing)}')

    def expand(self, docs):
        kv_type = beam.typehints.Tuple[str, beam.typehints.Any]
        failed = []
        self.batch_results = []
        alive = docs
        for i, tier in enumerate(self.tiers):
            if failed:
                # barrier: a CoGroupByKey on app_id with the previous tier's failures. Its output exists only
                # once that tier finished (incl. GroupIntoBatches' timer-flushed last batches), and it drops
                # the docs that failed there. (Side inputs were tried: on the FnApiRunner a side input read
                # by the ParDo after GroupIntoBatches loses the timer-flushed batches, and side inputs built
                # from shared Flattens leave 'watermark-pending bundles' - measured, see the tests.)
                alive = ({'doc': alive | f'KeyDocsTier{i}' >> beam.Map(lambda d: (_norm(d.app_id), d)),
                          'failed': failed[-1] | f'KeyFailedTier{i}' >> beam.Map(lambda f: (_norm(f[0]), f))}
                         | f'JoinTier{i}' >> beam.CoGroupByKey()
                         | f'AliveTier{i}' >> beam.FlatMap(_alive_docs))
            keyed = alive | f'ExplodeTier{i}' >> beam.ParDo(_ExplodeFn(tuple(tier))).with_output_types(kv_type)
            batches = keyed | f'BatchTier{i}' >> beam.GroupIntoBatches(self.batch_size)
            fn = WriteBatchesFn(self.target_url, {t: self.metas[t] for t in tier}, self.dialect, self.retry)
            res = batches | f'WriteTier{i}' >> beam.ParDo(fn).with_outputs(FAILED_TAG, main='ok')
            self.batch_results.append(res.ok)
            failed.append(res[FAILED_TAG])
        written = tuple(t for tier in self.tiers for t in tier)
        summary = docs | 'KeyDocs' >> beam.Map(
            lambda d: (_norm(d.app_id), (d.source, d.app_id, sum(len(d.rows.get(t) or ()) for t in written),
                                         tuple(d.warnings or ()))))
        if not failed:
            return summary | 'Outcomes' >> beam.Map(lambda kv: Outcome(kv[1][0], kv[1][1], 'success', None, None,
                                                                        kv[1][2], kv[1][3]))
        all_failed = (failed[0] if len(failed) == 1 else tuple(failed) | 'AllFailures' >> beam.Flatten())
        outcomes = ({'doc': summary, 'failed': all_failed | 'KeyFailed' >> beam.Map(lambda f: (_norm(f[0]), f))}
                    | 'JoinOutcomes' >> beam.CoGroupByKey()
                    | 'Outcomes' >> beam.FlatMap(_outcomes))
        # A document that failed in a later tier may have rows committed in earlier ones: remove them, so that a
        # dead-lettered document leaves nothing half-written behind. The failed outcomes pass through.
        failed_docs = outcomes | 'SinkFailed' >> beam.Filter(lambda o: o.status != 'success')
        ok_docs = outcomes | 'SinkOk' >> beam.Filter(lambda o: o.status == 'success')
        cleaned = failed_docs | 'RemovePartialRows' >> beam.ParDo(
            _CompensateFn(self.target_url, {t: self.metas[t] for t in written}, self.tiers, self.dialect,
                          self.retry))
        return (ok_docs, cleaned) | 'FinalOutcomes' >> beam.Flatten()


def delete_plan(metas: Dict[str, TableMeta], tiers: Sequence[Sequence[str]], dialect) -> List[Tuple[str, str]]:
    """(table, DELETE statement with one '?' for an app_id) for every written table, children first. A table
    without an app_id column is reached through a single-column FK to a table that has one."""
    d = get_dialect(dialect)
    plan = []
    for tier in reversed([list(t) for t in tiers]):
        for t in reversed(tier):
            m = metas[t]
            q = d.qualify(m.name, m.schema)
            if m.column('app_id') is not None:
                plan.append((t, f'DELETE FROM {q} WHERE {d.quote("app_id")} = ?'))
                continue
            for fk in m.foreign_keys:
                parent = metas.get(fk.references) or next(
                    (pm for pn, pm in metas.items() if pn.lower() == fk.references.lower()), None)
                if parent is not None and parent.column('app_id') is not None and len(fk.columns) == 1:
                    pq = d.qualify(parent.name, parent.schema)
                    plan.append((t, f'DELETE FROM {q} WHERE {d.quote(fk.columns[0])} IN (SELECT '
                                    f'{d.quote(fk.ref_columns[0])} FROM {pq} WHERE {d.quote("app_id")} = ?)'))
                    break
            else:
                log.warning('partial rows of failed documents cannot be removed from %s: no app_id column and '
                            'no single-column FK to a table with one', t)
    return plan


class _CompensateFn(_ConnPerBundleFn):
    """Delete every row of a sink-failed document (children first), in one transaction per document."""

    def __init__(self, target_url, metas, tiers, dialect=None, retry: RetryPolicy = RetryPolicy()):
        super().__init__(target_url, dialect, retry)
        self.metas, self.tiers = metas, [list(t) for t in tiers]
        self.c_removed = Metrics.counter(METRICS_NAMESPACE, 'partial_rows_removed')

    def setup(self):
        super().setup()
        self.plan = delete_plan(self.metas, self.tiers, self.target.dialect_name)

    def _delete_rows(self, app_id):
        def delete(cur):
            n = 0
            for _, sql in self.plan:
                cur.execute(sql, (app_id,))
                n += max(cur.rowcount or 0, 0)
            return n
        return self._writer().run(delete)

    def process(self, o: Outcome):
        if o.app_id is not None and self.plan:
            removed = self._delete_rows(o.app_id)
            if removed:
                self.c_removed.inc(removed)
                log.info('removed %d partial rows of failed app_id %s', removed, o.app_id)
        yield o


def _failure_for(source, failures):
    """The failure of the doc with `source` among the failures of its app_id (matched by source; a failure
    whose source matches no doc of the app_id applies to all of them)."""
    for f in failures:
        if f[1] == source:
            return f
    return None


def _alive_docs(kv):
    _, groups = kv
    failures = list(groups['failed'])
    for d in groups['doc']:
        if not failures or _failure_for(d.source, failures) is None:
            yield d


def _outcomes(kv):
    _, groups = kv
    failures = list(groups['failed'])
    for source, app_id, n, warnings in groups['doc']:
        f = _failure_for(source, failures) if failures else None
        if f is None:
            yield Outcome(source, app_id, 'success', None, None, n, warnings)
        else:
            yield Outcome(source, app_id, 'failed', 'sink', f[2], 0, warnings)


# ---------------------------------------------------------------------------------------- ledger / dead letters

def _ledger_meta(conn, dialect, schema):
    from pipeline.db.meta import introspect
    return introspect(conn, dialect, schema, ['processing_log'])['processing_log']


def read_success_ids(conn, dialect, schema: Optional[str] = None) -> set:
    """app_ids whose latest processing_log status is 'success' (for --resume)."""
    d = get_dialect(dialect)
    cur = conn.cursor()
    cur.execute(f'SELECT DISTINCT {d.quote("app_id")} FROM {d.qualify("processing_log", schema)} '
                f'WHERE {d.quote("status")} = ?', ('success',))
    out = {_norm(r[0]) for r in cur.fetchall()}
    cur.close()
    return out


class _WriteLedgerFn(_ConnPerBundleFn):
    def __init__(self, target_url, schema, session_id, dialect=None, retry=RetryPolicy()):
        super().__init__(target_url, dialect, retry)
        self.schema = schema
        self.session_id = session_id
        self.c_rows = Metrics.counter(METRICS_NAMESPACE, 'ledger_rows_written')
        self.c_noid = Metrics.counter(METRICS_NAMESPACE, 'ledger_outcomes_without_app_id')

    def setup(self):
        super().setup()
        self.columns = None

    def process(self, outcomes: List[Outcome]):
        latest: Dict[Any, Outcome] = {}
        for o in outcomes:
            if o.app_id is None:
                self.c_noid.inc()
                continue
            latest[_norm(o.app_id)] = o
        if not latest:
            return
        w = self._writer()
        d = w.dialect
        if self.columns is None:
            meta = w.run(lambda cur: _ledger_meta(w.conn, d.name, self.schema), commit=False)
            self.columns = {c.name.lower() for c in meta.columns}
        cols = ['app_id', 'status', 'stage', 'failure_reason', 'session_id']
        cols = [c for c in cols if c in self.columns]
        tbl = d.qualify('processing_log', self.schema)
        ids = list(latest)
        rows = []
        for app_id, o in latest.items():
            vals = {'app_id': app_id, 'status': o.status, 'stage': o.stage,
                    'failure_reason': (o.reason or None) and str(o.reason)[:500], 'session_id': self.session_id}
            rows.append(tuple(vals[c] for c in cols))
        ins = f'INSERT INTO {tbl} ({d.cols(cols)}) VALUES ({", ".join("?" * len(cols))})'

        def tx(cur):
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                cur.execute(f'DELETE FROM {tbl} WHERE {d.quote("app_id")} IN ({", ".join("?" * len(chunk))})',
                            chunk)
            cur.executemany(ins, rows)
        w.run(tx)
        self.c_rows.inc(len(rows))
        yield len(rows)


class WriteLedger(beam.PTransform):
    """PCollection[Outcome] -> processing_log: one row per app_id (delete + insert per app_id, one transaction
    per batch). Outcomes without app_id are counted (metric ledger_outcomes_without_app_id), not written.
    Output: PCollection[int] (rows per batch)."""

    def __init__(self, target_url, schema=None, session_id=None, batch_size=500, dialect=None):
        super().__init__()
        self.args = (target_url, schema, session_id, dialect)
        self.batch_size = batch_size

    def expand(self, outcomes):
        url, schema, session, dialect = self.args
        return (outcomes
                | 'BatchOutcomes' >> beam.BatchElements(min_batch_size=1, max_batch_size=self.batch_size)
                | 'WriteProcessingLog' >> beam.ParDo(_WriteLedgerFn(url, schema, session, dialect)))


class _WriteDeadLettersFn(_ConnPerBundleFn):
    def __init__(self, target_url, schema, dialect=None, retry=RetryPolicy()):
        super().__init__(target_url, dialect, retry)
        self.schema = schema
        self.c_rows = Metrics.counter(METRICS_NAMESPACE, 'dead_letters_written')

    def process(self, letters: List[DeadLetter]):
        if not letters:
            return
        w = self._writer()
        d = w.dialect
        cols = ['source', 'app_id', 'stage', 'reason', 'payload']
        sql = (f'INSERT INTO {d.qualify("dead_letter", self.schema)} ({d.cols(cols)}) '
               f'VALUES ({", ".join("?" * len(cols))})')
        rows = []
        for dl in letters:
            payload = dl.payload
            if isinstance(payload, bytes):
                payload = payload.decode('utf-8', errors='replace')
            app_id = _norm(dl.app_id) if dl.app_id is not None else None
            if not isinstance(app_id, int):
                app_id = None
            rows.append((str(dl.source)[:1000], app_id, str(dl.stage)[:20], str(dl.reason)[:2000], payload))
        w.run(lambda cur: cur.executemany(sql, rows))
        self.c_rows.inc(len(rows))
        yield len(rows)


class WriteDeadLetters(beam.PTransform):
    """PCollection[DeadLetter] -> dead_letter table. Output: PCollection[int] (rows per batch)."""

    def __init__(self, target_url, schema=None, batch_size=200, dialect=None):
        super().__init__()
        self.args = (target_url, schema, dialect)
        self.batch_size = batch_size

    def expand(self, letters):
        url, schema, dialect = self.args
        return (letters
                | 'BatchDeadLetters' >> beam.BatchElements(min_batch_size=1, max_batch_size=self.batch_size)
                | 'WriteDeadLetter' >> beam.ParDo(_WriteDeadLettersFn(url, schema, dialect)))
