"""The ledger (processing_log, one row per app_id, upserted) and what resume reads of it."""
import datetime
import logging
from typing import Any, Dict, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.records import Outcome
from transforms.sink.bundle import METRICS_NAMESPACE, _ConnPerBundleFn
from transforms.sink.owned import _delete_owned, _ids_sql, _owned_rows_templates
from transforms.sink.writer import _norm
from transforms.sql.dialects import get_dialect
from transforms.sql.ledger import doc_key
from transforms.sql.introspect import introspect
from transforms.sql.meta import TableMeta
from transforms.sql.retry import RetryPolicy

log = logging.getLogger(__name__)


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _project_meta(conn, dialect, schema, table):
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


LEDGER_COLUMNS = ('app_id', 'status', 'stage', 'failure_reason', 'session_id', 'processing_time', 'content_hash',
                  'app_id_start', 'app_id_end')
DEAD_LETTER_COLUMNS = ('doc_key', 'source', 'app_id', 'stage', 'reason', 'payload', 'session_id', 'attempts',
                       'last_seen_at')


def keyed_view(meta: TableMeta, columns: Sequence[str], key: Optional[str]) -> TableMeta:
    """`meta` with only `columns` (those it has), keyed by `key` - a unique index, not the primary key - so that
    the dialect's upsert conflicts on it (processing_log on app_id, dead_letter on doc_key)."""
    want = {c.lower() for c in columns}
    return TableMeta(meta.name, meta.schema, [c for c in meta.columns if c.name.lower() in want],
                     [key] if key else [])


def _outcome_and_hash(item):
    """WriteLedger takes Outcomes (which carry their content hash) or (Outcome, content_hash) pairs."""
    if isinstance(item, Outcome):
        return item, getattr(item, 'content_hash', None)
    return item[0], item[1]


class _WriteLedgerFn(_ConnPerBundleFn):
    def __init__(self, target_url, schema, session_id, dialect=None, retry=RetryPolicy(), owned=None,
                 app_id_range=(None, None)):
        super().__init__(target_url, dialect, retry)
        self.schema = schema
        # the run's --app-id-start / --app-id-end, as SPEC §5.5 records them; a bound the int column cannot hold
        # (an 'up to 10^12' end) is left NULL rather than failing every ledger row
        self.app_id_range = tuple(v if v is not None and -2 ** 31 <= v < 2 ** 31 else None for v in app_id_range)
        self.owned = owned          # (metas, tiers) of the written tables: a failed re-migration loses its rows
        self.session_id = None if session_id is None else str(session_id)[:50]
        self.c_rows = Metrics.counter(METRICS_NAMESPACE, 'ledger_rows_written')
        self.c_noid = Metrics.counter(METRICS_NAMESPACE, 'ledger_outcomes_without_app_id')
        self.c_rejected = Metrics.counter(METRICS_NAMESPACE, 'ledger_rows_rejected')
        self.c_cleared = Metrics.counter(METRICS_NAMESPACE, 'dead_letters_cleared')
        self.c_changed = Metrics.counter('migration', 'docs_changed')
        self.c_stale = Metrics.counter(METRICS_NAMESPACE, 'rows_removed_of_failed_remigrations')

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
        self.templates = _owned_rows_templates(*self.owned, d) if self.owned else []
        self.has_session = 'session_id' in self.cols
        self.tbl = d.qualify('processing_log', self.view.schema)
        self.dl_tbl = d.qualify('dead_letter', self.view.schema)

    def _tx(self, d, cur, part):
        """One batch of ledger rows: note which were 'success' with another content hash (changed documents),
        upsert them on app_id, and clear the dead letters of the documents that now succeeded."""
        changed = 0
        prior = {}
        if 'content_hash' in self.cols or self.templates:
            ids = [r['app_id'] for r in part]
            hash_col = d.quote('content_hash') if 'content_hash' in self.cols else 'NULL'
            session_col = d.quote('session_id') if self.has_session else 'NULL'
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                cur.execute(f'SELECT {d.quote("app_id")}, {d.quote("status")}, {hash_col}, {session_col} '
                            f'FROM {self.tbl} WHERE {d.quote("app_id")} {_ids_sql(len(chunk))}', chunk)
                prior.update({_norm(r[0]): (r[1], r[2], r[3]) for r in cur.fetchall()})
            for r in part:
                st, h, _ = prior.get(r['app_id'], (None, None, None))
                if r['status'] == 'success' and st == 'success' and h and r['content_hash'] \
                        and h != r['content_hash']:
                    changed += 1
        # A document migrated by an earlier run (its row says success, written by another session) whose new
        # version failed defines no rows now: its old rows are deleted after this transaction commits the failed
        # row (process(), children first), so that a stop in between leaves it failed, to be retried, never
        # 'success' without rows. A 'replacing' row is left alone: this run is rewriting that document.
        stale = [r['app_id'] for r in part if r['status'] != 'success' and isinstance(r['app_id'], int)
                 and prior.get(r['app_id'], (None,))[0] == 'success'
                 and not (self.has_session and prior[r['app_id']][2] == self.session_id)]
        d.upsert(cur, self.view, self.cols, [tuple(r[c] for c in self.cols) for r in part], owner_check=False)
        cleared = 0
        keys = [r['_doc_key'] for r in part if r['status'] == 'success']
        if keys and self.dl_keyed:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                cur.execute(f'DELETE FROM {self.dl_tbl} WHERE {d.quote("doc_key")} {_ids_sql(len(chunk))}', chunk)
                cleared += max(cur.rowcount or 0, 0)
        return changed, cleared, stale

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
                         'processing_time': now, 'content_hash': h, '_doc_key': doc_key(o.source),
                         'app_id_start': self.app_id_range[0], 'app_id_end': self.app_id_range[1]})
        n, stale = 0, []
        for part, res, err in w.isolate(rows, lambda cur, part: self._tx(d, cur, part), label='processing_log: '):
            if err is None:
                n += len(part)
                self.c_changed.inc(res[0])
                self.c_cleared.inc(res[1])
                stale.extend(res[2])
            else:
                # The outcome stands (it was counted); only its ledger row is missing, so a resumed run
                # processes the document again.
                self.c_rejected.inc()
                log.warning('processing_log row of app_id %s rejected by the target: %s', part[0]['app_id'], err)
        if stale and self.templates:
            remove = lambda cur, part: _delete_owned(cur, self.templates, part)      # noqa: E731
            for part, removed, err in w.isolate(sorted(stale), remove,
                                                label='removing the rows of a failed re-migration: '):
                if err is None:
                    self.c_stale.inc(removed or 0)
                else:       # e.g. a foreign key from a table the contract does not write: the ledger says failed
                    log.warning('the earlier rows of failed app_id %s could not be removed: %s', part[0], err)
        self.c_rows.inc(n)
        yield n


class WriteLedger(beam.PTransform):
    """PCollection[Outcome or (Outcome, content_hash)] -> processing_log: one row per app_id, upserted on its
    unique app_id (concurrent runs of one job cannot duplicate it), with the content hash of the version that was
    processed; documents that succeeded lose their dead_letter row. Outcomes without app_id are counted (metric
    ledger_outcomes_without_app_id), not written. Counts documents whose content changed since their last
    success (migration/docs_changed). With `owned` = (metas, tiers) of the tables the run writes, a document
    that an earlier run migrated (success, another session) and whose new version failed loses its old rows
    (children first) right after its failed ledger row is committed. Output: PCollection[int] (rows per batch)."""

    def __init__(self, target_url, schema=None, session_id=None, batch_size=500, dialect=None, owned=None,
                 app_id_range=(None, None)):
        super().__init__()
        self.args = (target_url, schema, session_id, dialect)
        self.batch_size = batch_size
        self.owned = owned
        self.app_id_range = tuple(app_id_range)

    def expand(self, outcomes):
        url, schema, session, dialect = self.args
        return (outcomes
                | 'BatchOutcomes' >> beam.BatchElements(min_batch_size=1, max_batch_size=self.batch_size)
                | 'WriteProcessingLog' >> beam.ParDo(_WriteLedgerFn(url, schema, session, dialect,
                                                                    owned=self.owned,
                                                                    app_id_range=self.app_id_range)))
