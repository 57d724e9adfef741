"""The sink's pure core (no Beam): `Writer` owns one connection and writes batches of RowGroups into one table,
one transaction per batch: upsert on the primary key, key-ownership check, values checked against the live
column types, retry on transient errors, and bisection of data errors down to the one document (`isolate`).

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
  (transforms/sql/values.py), and every step that runs SQL for a group of documents - key-ownership check, upsert,
  prune of a re-migrated document, compensation, ledger and dead-letter writes - goes through `Writer.isolate`,
  which bisects a data error (SQLSTATE 22/23, constraint, conversion, OverflowError) down to the one document
  that causes it. Only infrastructure faults (connection, disk, permissions, missing table/column: `classify` ->
  fatal) raise SinkError and stop the run.
* A document written before (its processing_log row says success) is replaced: its rows are deleted children
  first before its new rows are written, so the target ends with exactly the rows its current version maps to.
"""
import logging
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from transforms.records import RowGroup
from transforms.sql.dialects import FATAL
from transforms.sql.meta import TableMeta
from transforms.sql.retry import RetryingConnection, RetryPolicy
from transforms.sql.values import checkers as value_checkers

log = logging.getLogger(__name__)


class SinkError(Exception):
    """A non-data problem (schema mismatch, permission, SQL error): stops the pipeline, never a document."""


class SinkUnavailable(SinkError):
    """The target stayed unreachable / kept failing transiently after all retries."""


class BatchResult(NamedTuple):
    rows_written: int
    failed: Dict[Any, str]                               # app_id -> reason
    failures: List[Tuple[Any, str, str]] = []            # (app_id, source, reason), in batch order
    written: List[Any] = []                              # app_ids whose rows were committed


class Writer(RetryingConnection):
    """Owns one connection (opened lazily); writes batches with retry, reconnect and bisection. The connection
    handling and the transient-error retry are `transforms.sql.retry.RetryingConnection`'s (`run`, `open`,
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
        self._plans: Dict[int, Tuple[TableMeta, Dict[Tuple, Tuple]]] = {}
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

    _PLANS_PER_TABLE = 4096

    def _plan(self, meta, colmap, keys):
        """(row key, the table's column name, value check or None) for each key of a row: worked out once per set
        of keys of a table (the rows of one mapping share a few), not once per value."""
        entry = self._plans.get(id(meta))
        if entry is None or entry[0] is not meta:            # one table's metadata object, kept alive here
            entry = self._plans[id(meta)] = (meta, {})
        plans = entry[1]
        plan = plans.get(keys)
        if plan is None:
            checks = self._value_checks(meta)
            out = []
            for k in keys:
                c = colmap.get(str(k).lower())
                if c is None:
                    raise SinkError(f'{meta.name}.{k}: column not found in the target table')
                if c.computed:
                    raise SinkError(f'{meta.name}.{k}: is a computed column')
                out.append((k, c.name, checks.get(c.name)))
            plan = tuple(out)
            if len(plans) < self._PLANS_PER_TABLE:
                plans[keys] = plan
        return plan

    def _prepare(self, meta, colmap, g: RowGroup):
        """Rows as dicts keyed by the table's own column spelling; in-document duplicate keys: last wins
        (what row-by-row upserts would do). A value the live column cannot hold fails the document here, before
        any SQL, with a reason naming table.column (never the value)."""
        out: Dict[Tuple, Dict[str, Any]] = {}
        nokey = []
        pk = meta.primary_key
        for row in g.rows:
            r = {}
            for k, name, chk in self._plan(meta, colmap, tuple(row)):
                v = row[k]
                if v is not None and chk is not None:
                    problem = chk(v)
                    if problem:
                        raise _DocError(f'{meta.name}.{name}: {problem}')
                r[name] = v
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
