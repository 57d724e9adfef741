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
* One document's data never stops the run. Values are checked against the live column types before any SQL
  (pipeline/db/values.py), and every step that runs SQL for a group of documents - key-ownership check, upsert,
  prune of a re-migrated document, compensation, ledger and dead-letter writes - goes through `Writer.isolate`,
  which bisects a data error (SQLSTATE 22/23, constraint, conversion, OverflowError) down to the one document
  that causes it. Only infrastructure faults (connection, disk, permissions, missing table/column: `classify` ->
  fatal) raise SinkError and stop the run.
* A document written before (its processing_log row says success) is replaced: its rows are deleted children
  first before its new rows are written, so the target ends with exactly the rows its current version maps to.
"""
import datetime
import logging
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from pipeline.db.dialects import FATAL, get_dialect
from pipeline.db.ledger import doc_key
from pipeline.db.meta import TableMeta
from pipeline.db.retry import RetryingConnection, RetryPolicy
from pipeline.db.values import checkers as value_checkers
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
                 scrub: Optional[Callable[[BaseException], str]] = None, sleep=time.sleep, check_values: bool = True):
        super().__init__(connect, dialect, conn=conn, retry=retry, scrub=scrub, sleep=sleep, what='sink')
        self.check_values = check_values        # False only in tests of the SQL-side isolation
        self._checkers: Dict[str, Dict[str, Callable]] = {}
        self.bisections = 0

    # ---- isolation
    def isolate(self, items: Sequence[Any], fn: Callable[[Any, List[Any]], Any], commit: bool = True,
                label: str = ''):
        """Run fn(cursor, part) over `items` in as few transactions as possible: all of them in one; when that
        fails for its data, each half again, down to the single item that causes it. Yields (part, result, None)
        for every part that went through and ([item], None, reason) for every item that failed for its data
        (reason scrubbed). Transient errors are retried by `run`; fatal ones (connection gone for good, missing
        table or column, permissions, disk full) raise SinkError: they stop the run, never a document. The same
        mechanism serves every SQL step that carries several documents."""
        if not items:
            return
        stack = [list(items)]
        while stack:
            part = stack.pop()
            try:
                out = self.run(lambda cur: fn(cur, part), commit=commit)
            except SinkError:
                raise
            except Exception as e:
                kind = self.dialect.classify(e)
                if kind == FATAL:
                    raise SinkError(f'{label}{self.scrub(e)}') from None
                if len(part) == 1:
                    yield part, None, self.scrub(e)
                else:
                    self.bisections += 1
                    mid = len(part) // 2
                    stack.append(part[mid:])
                    stack.append(part[:mid])
            else:
                yield part, out, None

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
            owners: Dict[Tuple, Any] = {}
            keep = []
            for part, found, err in self.isolate(
                    prepared, lambda cur, part: d.select_owners(cur, meta, [k for _, _, keys in part for k in keys]),
                    commit=False, label=f'{meta.name}: ownership check failed: '):
                if err is None:
                    owners.update(found)
                    keep.extend(part)
                else:
                    g = part[0][0]
                    failures.append((g.app_id, g.source, f'{meta.name}: {err}'))
            owners = {tuple(_norm(v) for v in k): v for k, v in owners.items()}
            prepared = []
            for g, rows, keys in keep:
                bad = next((k for k in keys if k in owners and _norm(owners[k]) != _norm(g.app_id)), None)
                if bad is not None:
                    failures.append((g.app_id, g.source, f'{meta.name}: {_key_text(pk, bad)} already belongs to '
                                                         f'app_id {owners[bad]}'))
                else:
                    prepared.append((g, rows, keys))

        written, nrows = [], 0
        for part, _, err in self.isolate(prepared, lambda cur, part: self._upsert_all(cur, meta, part),
                                         label=f'{meta.name}: '):
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

    def _value_checks(self, meta):
        chk = self._checkers.get(meta.name)
        if chk is None:
            chk = self._checkers[meta.name] = value_checkers(meta, self.dialect.name) if self.check_values else {}
        return chk

    def _prepare(self, meta, colmap, g: RowGroup):
        """Rows as dicts keyed by the table's own column spelling; in-document duplicate keys: last wins
        (what row-by-row upserts would do). A value the live column cannot hold fails the document here, before
        any SQL, with a reason naming table.column (never the value)."""
        out: Dict[Tuple, Dict[str, Any]] = {}
        nokey = []
        pk = meta.primary_key
        checks = self._value_checks(meta)
        for row in g.rows:
            r = {}
            for k, v in row.items():
                c = colmap.get(str(k).lower())
                if c is None:
                    raise SinkError(f'{meta.name}.{k}: column not found in the target table')
                if c.computed:
                    raise SinkError(f'{meta.name}.{k}: is a computed column')
                if v is not None:
                    chk = checks.get(c.name)
                    problem = chk(v) if chk is not None else None
                    if problem:
                        raise _DocError(f'{meta.name}.{c.name}: {problem}')
                r[c.name] = v
            if pk:
                missing = [p for p in pk if r.get(p) is None]
                if missing:
                    raise _DocError(f'{meta.name}: primary key column {", ".join(missing)} has no value')
                out[tuple(_norm(r[p]) for p in pk)] = r
            else:
                nokey.append(r)
        return list(out.values()) + nokey, list(out.keys())

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
                retry: RetryPolicy = RetryPolicy(), scrub=None, check_values: bool = True) -> BatchResult:
    """Write one batch on `conn` (one transaction; bisected on data errors). With `reconnect` (a callable
    returning a new connection), transient errors reconnect and retry; without it a transient error that
    needs a new connection raises SinkUnavailable. The connection passed in may have been replaced: use
    `Writer` to own connections across batches."""
    def no_reconnect():
        raise SinkUnavailable('connection lost and no reconnect callable given')
    w = Writer(reconnect or no_reconnect, dialect, conn=conn, retry=retry, scrub=scrub, check_values=check_values)
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

    [replace: documents written before (a processing_log success row for the app_id) lose their old rows first, children
    first, in one transaction per batch of documents] -> per FK tier: [barrier: CoGroupByKey(app_id) of the docs
    still alive with the previous tier's failures: a tier starts only after the previous tier finished, and docs
    that failed earlier are dropped] -> explode to (table, RowGroup) -> GroupIntoBatches(batch_size) ->
    WriteBatchesFn. Outcomes: CoGroupByKey(app_id) of all docs with all failures (so after every tier)."""

    def __init__(self, target_url: str, metas: Dict[str, TableMeta], tiers: Sequence[Sequence[str]],
                 batch_size: int = 500, dialect: Optional[str] = None, retry: RetryPolicy = RetryPolicy(),
                 replace: bool = True, ledger_schema: Optional[str] = None):
        super().__init__()
        self.target_url = target_url
        self.metas = dict(metas)
        self.tiers = [list(t) for t in tiers if t]
        self.batch_size = int(batch_size)
        self.dialect = dialect
        self.retry = retry
        self.replace = replace
        self.ledger_schema = ledger_schema if ledger_schema is not None else next(
            (m.schema for m in self.metas.values()), None)
        missing = [t for tier in self.tiers for t in tier if t not in self.metas]
        if missing:
            raise SinkError(f'WriteToSql: no table metadata for {", ".join(missing)}')

    def expand(self, docs):
        kv_type = beam.typehints.Tuple[str, beam.typehints.Any]
        failed = []
        self.batch_results = []
        written = tuple(t for tier in self.tiers for t in tier)
        alive = docs
        replace_failed = []
        if self.replace and self.tiers:
            # Re-migration replaces a document's rows: what its new version no longer maps to must go, and the
            # target must end as a fresh run of the new version would leave it (defaults, NULLs and all).
            rep = (docs
                   | 'BatchForReplace' >> beam.BatchElements(min_batch_size=1, max_batch_size=self.batch_size)
                   | 'ReplaceEarlierRows' >> beam.ParDo(_ReplaceFn(
                       self.target_url, {t: self.metas[t] for t in written}, self.tiers, self.ledger_schema,
                       self.dialect, self.retry)).with_outputs(FAILED_TAG, main='ok'))
            alive = rep.ok
            replace_failed.append(rep[FAILED_TAG])
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
        summary = docs | 'KeyDocs' >> beam.Map(
            lambda d: (_norm(d.app_id), (d.source, d.app_id, sum(len(d.rows.get(t) or ()) for t in written),
                                         tuple(d.warnings or ()))))
        failures = replace_failed + failed
        if not failures:
            return summary | 'Outcomes' >> beam.Map(lambda kv: Outcome(kv[1][0], kv[1][1], 'success', None, None,
                                                                        kv[1][2], kv[1][3]))
        all_failed = (failures[0] if len(failures) == 1 else tuple(failures) | 'AllFailures' >> beam.Flatten())
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


IDS = '{ids}'     # placeholder for the app_id parameter(s) in the owned-rows DELETE templates


def _owned_rows_templates(metas: Dict[str, TableMeta], tiers: Sequence[Sequence[str]], d) -> List[Tuple[str, str]]:
    """(table, DELETE template with IDS where the app_id parameter(s) go) for every written table, children first
    (reverse FK-tier order). A table without an app_id column is reached through a single-column FK to a table
    that has one."""
    plan = []
    for tier in reversed([list(t) for t in tiers]):
        for t in reversed(tier):
            m = metas[t]
            q = d.qualify(m.name, m.schema)
            if m.column('app_id') is not None:
                plan.append((t, f'DELETE FROM {q} WHERE {d.quote("app_id")} {IDS}'))
                continue
            for fk in m.foreign_keys:
                parent = metas.get(fk.references) or next(
                    (pm for pn, pm in metas.items() if pn.lower() == fk.references.lower()), None)
                if parent is not None and parent.column('app_id') is not None and len(fk.columns) == 1:
                    pq = d.qualify(parent.name, parent.schema)
                    plan.append((t, f'DELETE FROM {q} WHERE {d.quote(fk.columns[0])} IN (SELECT '
                                    f'{d.quote(fk.ref_columns[0])} FROM {pq} WHERE {d.quote("app_id")} {IDS})'))
                    break
            else:
                log.warning('rows of failed or re-migrated documents cannot be removed from %s: no app_id column and '
                            'no single-column FK to a table with one', t)
    return plan


def _ids_sql(n: int) -> str:
    return '= ?' if n == 1 else f'IN ({", ".join("?" * n)})'


def delete_plan(metas: Dict[str, TableMeta], tiers: Sequence[Sequence[str]], dialect,
                n_ids: int = 1) -> List[Tuple[str, str]]:
    """(table, DELETE statement for the rows of `n_ids` app_ids, given as parameters) for every written table,
    children first. A table without an app_id column is reached through a single-column FK to a table that has
    one."""
    d = get_dialect(dialect)
    return [(t, sql.replace(IDS, _ids_sql(n_ids))) for t, sql in _owned_rows_templates(metas, tiers, d)]


def _delete_owned(cur, templates, app_ids, per=500) -> int:
    """Delete every row of `app_ids` from the tables of `templates` (children first). Returns rows deleted."""
    n = 0
    for _, tpl in templates:
        for i in range(0, len(app_ids), per):
            chunk = list(app_ids[i:i + per])
            cur.execute(tpl.replace(IDS, _ids_sql(len(chunk))), chunk)
            n += max(cur.rowcount or 0, 0)
    return n


class _ReplaceFn(_ConnPerBundleFn):
    """Batches of MappedDoc -> the same docs, after the rows of those written before are deleted (children
    first, one transaction per batch). 'Written before' = the app_id has a processing_log row with status
    success (one indexed SELECT per batch; first-time documents cost nothing more; a failed document's rows were
    removed by the compensation already). A document whose old rows cannot be deleted for its data (e.g. a
    foreign key from a table the contract does not write) fails alone (tagged 'failed')."""

    def __init__(self, target_url, metas, tiers, ledger_schema, dialect=None, retry: RetryPolicy = RetryPolicy()):
        super().__init__(target_url, dialect, retry)
        self.metas, self.tiers, self.ledger_schema = metas, [list(t) for t in tiers], ledger_schema
        self.c_docs = Metrics.counter(METRICS_NAMESPACE, 'docs_replaced')
        self.c_rows = Metrics.counter(METRICS_NAMESPACE, 'rows_deleted_for_replace')
        self.c_failed = Metrics.counter(METRICS_NAMESPACE, 'sink_docs_failed')

    def setup(self):
        super().setup()
        d = get_dialect(self.target.dialect_name)
        self.templates = _owned_rows_templates(self.metas, self.tiers, d)
        self.ledger = d.qualify('processing_log', self.ledger_schema if d.supports_schema else None)
        self.app_id, self.status = d.quote('app_id'), d.quote('status')

    def _known(self, w, ids):
        """The app_ids of `ids` that have a processing_log success row."""
        def select(cur, part):
            found = set()
            for i in range(0, len(part), 500):
                chunk = part[i:i + 500]
                cur.execute(f'SELECT {self.app_id} FROM {self.ledger} WHERE {self.status} = ? '
                            f'AND {self.app_id} {_ids_sql(len(chunk))}', ['success'] + list(chunk))
                found.update(_norm(r[0]) for r in cur.fetchall())
            return found
        known = set()
        for part, found, err in w.isolate(ids, select, commit=False, label='processing_log: '):
            known.update(found if err is None else part)     # unknown: replace to be safe (a DELETE of nothing)
        return known

    def process(self, docs: List[MappedDoc]):
        if not self.templates:
            yield from docs
            return
        ids = sorted({a for a in (_norm(d.app_id) for d in docs) if isinstance(a, int)})
        if not ids:
            yield from docs
            return
        w = self._writer()
        known = self._known(w, ids)
        todo = [d for d in docs if _norm(d.app_id) in known]
        bad = set()
        for part, n, err in w.isolate(todo, lambda cur, part: _delete_owned(cur, self.templates,
                                                                             [_norm(d.app_id) for d in part]),
                                      label='replacing the rows written before: '):
            if err is None:
                self.c_docs.inc(len(part))
                self.c_rows.inc(n or 0)
            else:
                doc = part[0]
                bad.add(id(doc))
                self.c_failed.inc()
                yield TaggedOutput(FAILED_TAG, (doc.app_id, doc.source,
                                                f'its rows written before could not be replaced: {err}'))
        for doc in docs:
            if id(doc) not in bad:
                yield doc


class _CompensateFn(_ConnPerBundleFn):
    """Delete every row of a sink-failed document (children first), in one transaction per document. Rows that
    cannot be deleted for their data (a foreign key from a table the contract does not write) are reported in the
    document's reason; the run goes on."""

    def __init__(self, target_url, metas, tiers, dialect=None, retry: RetryPolicy = RetryPolicy()):
        super().__init__(target_url, dialect, retry)
        self.metas, self.tiers = metas, [list(t) for t in tiers]
        self.c_removed = Metrics.counter(METRICS_NAMESPACE, 'partial_rows_removed')
        self.c_kept = Metrics.counter(METRICS_NAMESPACE, 'partial_rows_not_removable')

    def setup(self):
        super().setup()
        self.templates = _owned_rows_templates(self.metas, self.tiers, get_dialect(self.target.dialect_name))

    def process(self, o: Outcome):
        if o.app_id is None or not self.templates:
            yield o
            return
        for _, removed, err in self._writer().isolate(
                [o], lambda cur, part: _delete_owned(cur, self.templates, [part[0].app_id]),
                label='removing the rows of a failed document: '):
            if err is None:
                if removed:
                    self.c_removed.inc(removed)
                    log.info('removed %d partial rows of failed app_id %s', removed, o.app_id)
            else:
                self.c_kept.inc()
                log.warning('the rows of failed app_id %s could not be removed: %s', o.app_id, err)
                o = o._replace(reason=f'{o.reason}; its rows could not be removed: {err}')
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

def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _project_meta(conn, dialect, schema, table):
    from pipeline.db.meta import introspect
    return introspect(conn, dialect, schema, [table])[table]


def _ledger_meta(conn, dialect, schema):
    return _project_meta(conn, dialect, schema, 'processing_log')


def read_success_ids(conn, dialect, schema: Optional[str] = None) -> set:
    """app_ids whose processing_log status is 'success'."""
    d = get_dialect(dialect)
    cur = conn.cursor()
    cur.execute(f'SELECT DISTINCT {d.quote("app_id")} FROM {d.qualify("processing_log", schema)} '
                f'WHERE {d.quote("status")} = ?', ('success',))
    out = {_norm(r[0]) for r in cur.fetchall()}
    cur.close()
    return out


def hash_prefix(h: Optional[str]) -> Optional[int]:
    """The first 64 bits of a content hash (hex) as an int: what a worker keeps in memory per done document."""
    try:
        return int(str(h)[:16], 16) if h else None
    except ValueError:
        return None


def read_success_hashes(conn, dialect, schema: Optional[str] = None) -> set:
    """hash_prefix of the content_hash of every processing_log 'success' row (resume for file sources: a file
    whose bytes hash to one of these was migrated as it is now)."""
    d = get_dialect(dialect)
    cur = conn.cursor()
    cur.execute(f'SELECT {d.quote("content_hash")} FROM {d.qualify("processing_log", schema)} '
                f'WHERE {d.quote("status")} = ? AND {d.quote("content_hash")} IS NOT NULL', ('success',))
    out = set()
    while True:
        rows = cur.fetchmany(10000)
        if not rows:
            break
        out.update(hash_prefix(r[0]) for r in rows)
    cur.close()
    out.discard(None)
    return out


def read_unhashed_success_ids(conn, dialect, schema: Optional[str] = None) -> set:
    """app_ids whose processing_log row is 'success' without a content_hash (written by an earlier version of the
    tool): resume keeps skipping them, since nothing tells whether they changed."""
    d = get_dialect(dialect)
    cur = conn.cursor()
    cur.execute(f'SELECT {d.quote("app_id")} FROM {d.qualify("processing_log", schema)} '
                f'WHERE {d.quote("status")} = ? AND {d.quote("content_hash")} IS NULL', ('success',))
    out = {_norm(r[0]) for r in cur.fetchall()}
    cur.close()
    return out


LEDGER_COLUMNS = ('app_id', 'status', 'stage', 'failure_reason', 'session_id', 'processing_time', 'content_hash')
DEAD_LETTER_COLUMNS = ('doc_key', 'source', 'app_id', 'stage', 'reason', 'payload', 'session_id', 'attempts',
                       'last_seen_at')


def keyed_view(meta: TableMeta, columns: Sequence[str], key: Optional[str]) -> TableMeta:
    """`meta` with only `columns` (those it has), keyed by `key` - a unique index, not the primary key - so that
    the dialect's upsert conflicts on it (processing_log on app_id, dead_letter on doc_key)."""
    want = {c.lower() for c in columns}
    return TableMeta(meta.name, meta.schema, [c for c in meta.columns if c.name.lower() in want],
                     [key] if key else [])


def _outcome_and_hash(item):
    """WriteLedger takes Outcomes or (Outcome, content_hash) pairs."""
    if isinstance(item, Outcome):
        return item, None
    return item[0], item[1]


class _WriteLedgerFn(_ConnPerBundleFn):
    def __init__(self, target_url, schema, session_id, dialect=None, retry=RetryPolicy()):
        super().__init__(target_url, dialect, retry)
        self.schema = schema
        self.session_id = None if session_id is None else str(session_id)[:50]
        self.c_rows = Metrics.counter(METRICS_NAMESPACE, 'ledger_rows_written')
        self.c_noid = Metrics.counter(METRICS_NAMESPACE, 'ledger_outcomes_without_app_id')
        self.c_rejected = Metrics.counter(METRICS_NAMESPACE, 'ledger_rows_rejected')
        self.c_cleared = Metrics.counter(METRICS_NAMESPACE, 'dead_letters_cleared')
        self.c_changed = Metrics.counter('migration', 'docs_changed')

    def setup(self):
        super().setup()
        self.view = None

    def _prepare(self, w):
        """The columns this processing_log has (the existing system's has no stage / content_hash) and the table
        seen as keyed by app_id (its unique index), for the upsert."""
        d = w.dialect
        meta = w.run(lambda cur: _ledger_meta(w.conn, d.name, self.schema), commit=False)
        present = {c.name.lower() for c in meta.columns}
        self.cols = [c for c in LEDGER_COLUMNS if c in present]
        self.view = keyed_view(meta, self.cols, 'app_id')
        try:
            dl = w.run(lambda cur: _project_meta(w.conn, d.name, self.schema, 'dead_letter'), commit=False)
            self.dl_keyed = dl.column('doc_key') is not None
        except Exception:
            self.dl_keyed = False
        self.tbl = d.qualify('processing_log', self.view.schema)
        self.dl_tbl = d.qualify('dead_letter', self.view.schema)

    def _tx(self, d, cur, part):
        """One batch of ledger rows: note which were 'success' with another content hash (changed documents),
        upsert them on app_id, and clear the dead letters of the documents that now succeeded."""
        changed = 0
        if 'content_hash' in self.cols:
            prior = {}
            ids = [r['app_id'] for r in part]
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                cur.execute(f'SELECT {d.quote("app_id")}, {d.quote("status")}, {d.quote("content_hash")} '
                            f'FROM {self.tbl} WHERE {d.quote("app_id")} {_ids_sql(len(chunk))}', chunk)
                prior.update({_norm(r[0]): (r[1], r[2]) for r in cur.fetchall()})
            for r in part:
                st, h = prior.get(r['app_id'], (None, None))
                if st == 'success' and h and r['content_hash'] and h != r['content_hash']:
                    changed += 1
        d.upsert(cur, self.view, self.cols, [tuple(r[c] for c in self.cols) for r in part], owner_check=False)
        cleared = 0
        keys = [r['_doc_key'] for r in part if r['status'] == 'success']
        if keys and self.dl_keyed:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                cur.execute(f'DELETE FROM {self.dl_tbl} WHERE {d.quote("doc_key")} {_ids_sql(len(chunk))}', chunk)
                cleared += max(cur.rowcount or 0, 0)
        return changed, cleared

    def process(self, batch):
        latest: Dict[Any, Tuple[Outcome, Optional[str]]] = {}
        for item in batch:
            o, h = _outcome_and_hash(item)
            if o.app_id is None:
                self.c_noid.inc()
                continue
            latest[_norm(o.app_id)] = (o, h)
        if not latest:
            return
        w = self._writer()
        d = w.dialect
        if self.view is None:
            self._prepare(w)
        now = _utcnow()
        rows = []
        for app_id in sorted(latest, key=lambda a: (str(type(a)), a)):      # one order: fewer deadlocks
            o, h = latest[app_id]
            rows.append({'app_id': app_id, 'status': o.status, 'stage': o.stage,
                         'failure_reason': (o.reason or None) and str(o.reason)[:500], 'session_id': self.session_id,
                         'processing_time': now, 'content_hash': h, '_doc_key': doc_key(o.source)})
        n = 0
        for part, res, err in w.isolate(rows, lambda cur, part: self._tx(d, cur, part), label='processing_log: '):
            if err is None:
                n += len(part)
                self.c_changed.inc(res[0])
                self.c_cleared.inc(res[1])
            else:
                # The outcome stands (it was counted); only its ledger row is missing, so a resumed run
                # processes the document again.
                self.c_rejected.inc()
                log.warning('processing_log row of app_id %s rejected by the target: %s', part[0]['app_id'], err)
        self.c_rows.inc(n)
        yield n


class WriteLedger(beam.PTransform):
    """PCollection[Outcome or (Outcome, content_hash)] -> processing_log: one row per app_id, upserted on its
    unique app_id (concurrent runs of one job cannot duplicate it), with the content hash of the version that was
    processed; documents that succeeded lose their dead_letter row. Outcomes without app_id are counted (metric
    ledger_outcomes_without_app_id), not written. Counts documents whose content changed since their last
    success (migration/docs_changed). Output: PCollection[int] (rows per batch)."""

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
    def __init__(self, target_url, schema, session_id=None, dialect=None, retry=RetryPolicy()):
        super().__init__(target_url, dialect, retry)
        self.schema = schema
        self.session_id = None if session_id is None else str(session_id)[:50]
        self.c_rows = Metrics.counter(METRICS_NAMESPACE, 'dead_letters_written')
        self.c_no_payload = Metrics.counter(METRICS_NAMESPACE, 'dead_letters_without_payload')
        self.c_rejected = Metrics.counter(METRICS_NAMESPACE, 'dead_letters_rejected')

    def setup(self):
        super().setup()
        self.view = None

    def _prepare(self, w):
        d = w.dialect
        meta = w.run(lambda cur: _project_meta(w.conn, d.name, self.schema, 'dead_letter'), commit=False)
        present = {c.name.lower() for c in meta.columns}
        self.keyed = 'doc_key' in present
        self.cols = [c for c in DEAD_LETTER_COLUMNS if c in present]
        self.view = keyed_view(meta, self.cols, 'doc_key' if self.keyed else None)

    def _write(self, w, rows):
        def tx(cur, part):
            vals = [tuple(r[c] for c in self.cols) for r in part]
            if self.keyed:
                w.dialect.upsert(cur, self.view, self.cols, vals, increments=('attempts',), owner_check=False)
            else:        # a dead_letter table of the existing shape without doc_key: plain inserts
                sql = (f'INSERT INTO {w.dialect.qualify("dead_letter", self.view.schema)} '
                       f'({w.dialect.cols(self.cols)}) VALUES ({", ".join("?" * len(self.cols))})')
                cur.executemany(sql, [[w.dialect.adapt(v) for v in r] for r in vals])
        return w.isolate(rows, tx, label='dead_letter: ')

    def process(self, letters: List[DeadLetter]):
        if not letters:
            return
        w = self._writer()
        if self.view is None:
            self._prepare(w)
        now = _utcnow()
        by_key: Dict[str, Dict[str, Any]] = {}
        for dl in letters:
            payload = dl.payload
            if isinstance(payload, bytes):
                payload = payload.decode('utf-8', errors='replace')
            app_id = _norm(dl.app_id) if dl.app_id is not None else None
            if not isinstance(app_id, int):
                app_id = None
            key = doc_key(dl.source)
            by_key[key] = {'doc_key': key, 'source': str(dl.source)[:1000], 'app_id': app_id,
                           'stage': str(dl.stage)[:20], 'reason': str(dl.reason)[:2000], 'payload': payload,
                           'session_id': self.session_id, 'attempts': 1, 'last_seen_at': now}
        rows = [by_key[k] for k in sorted(by_key)]
        n = 0
        for part, _, err in self._write(w, rows):
            if err is None:
                n += len(part)
                continue
            r = dict(part[0])
            if r['payload'] is not None:
                # The payload itself may be what the column refuses (e.g. a NUL character in PostgreSQL text):
                # keep the dead letter without it; the document is still at its source.
                r['payload'] = None
                r['reason'] = f'{r["reason"]} (payload not stored: {err})'[:2000]
                if all(e is None for _, _, e in self._write(w, [r])):
                    n += 1
                    self.c_no_payload.inc()
                    log.warning('dead letter of %s stored without its payload: %s', r['source'][:200], err)
                    continue
            self.c_rejected.inc()
            log.warning('dead letter of %s rejected by the target: %s', r['source'][:200], err)
        self.c_rows.inc(n)
        yield n


class WriteDeadLetters(beam.PTransform):
    """PCollection[DeadLetter] -> dead_letter table: one current row per document (keyed by doc_key, sha1 of its
    source), upserted: stage, reason, payload and session of the latest failure, created_at = first seen,
    last_seen_at, attempts = number of runs it failed in. Output: PCollection[int] (rows per batch)."""

    def __init__(self, target_url, schema=None, batch_size=200, dialect=None, session_id=None):
        super().__init__()
        self.args = (target_url, schema, session_id, dialect)
        self.batch_size = batch_size

    def expand(self, letters):
        url, schema, session, dialect = self.args
        return (letters
                | 'BatchDeadLetters' >> beam.BatchElements(min_batch_size=1, max_batch_size=self.batch_size)
                | 'WriteDeadLetter' >> beam.ParDo(_WriteDeadLettersFn(url, schema, session, dialect)))
