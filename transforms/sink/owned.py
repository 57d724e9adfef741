"""The rows a document owns, deleted children first: before a re-migrated document is written again
(`_ReplaceFn`) and after a document failed in a later tier (`_CompensateFn`)."""
import logging
from typing import Dict, List, Sequence, Tuple

from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from transforms.records import MappedDoc, Outcome
from transforms.sink.bundle import FAILED_TAG, METRICS_NAMESPACE, _ConnPerBundleFn
from transforms.sink.writer import _norm
from transforms.sql.dialects import get_dialect
from transforms.sql.meta import TableMeta, owner_link
from transforms.sql.retry import RetryPolicy

log = logging.getLogger(__name__)

CHANGED_TAG = 'changed'
REPLACING = 'replacing'       # processing_log status while a re-migrated document's rows are replaced


IDS = '{ids}'     # placeholder for the app_id parameter(s) in the owned-rows DELETE templates


def _owned_rows_templates(metas: Dict[str, TableMeta], tiers: Sequence[Sequence[str]], d) -> List[Tuple[str, str]]:
    """(table, DELETE template with IDS where the app_id parameter(s) go) for every written table, children first
    (reverse FK-tier order). A table without an app_id column is reached through a single-column FK to a table
    that has one."""
    plan = []
    for tier in reversed([list(t) for t in tiers]):
        for t in reversed(tier):
            m, link = metas[t], owner_link(metas, t)
            q = d.qualify(m.name, m.schema)
            if link is None:
                log.warning('rows of failed or re-migrated documents cannot be removed from %s: no app_id column and '
                            'no single-column FK to a table with one', t)
            elif link.parent is None:
                plan.append((t, f'DELETE FROM {q} WHERE {d.quote("app_id")} {IDS}'))
            else:
                pq = d.qualify(link.parent.name, link.parent.schema)
                plan.append((t, f'DELETE FROM {q} WHERE {d.quote(link.column)} IN (SELECT '
                                f'{d.quote(link.parent_column)} FROM {pq} WHERE {d.quote("app_id")} {IDS})'))
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

    def __init__(self, target_url, metas, tiers, ledger_schema, dialect=None, retry: RetryPolicy = RetryPolicy(),
                 session_id=None):
        super().__init__(target_url, dialect, retry)
        self.metas, self.tiers, self.ledger_schema = metas, [list(t) for t in tiers], ledger_schema
        self.session_id = None if session_id is None else str(session_id)[:50]
        self.c_docs = Metrics.counter(METRICS_NAMESPACE, 'docs_replaced')
        self.c_rows = Metrics.counter(METRICS_NAMESPACE, 'rows_deleted_for_replace')
        self.c_failed = Metrics.counter(METRICS_NAMESPACE, 'sink_docs_failed')

    def setup(self):
        super().setup()
        d = self.dialect_impl = get_dialect(self.target.dialect_name)
        self.templates = _owned_rows_templates(self.metas, self.tiers, d)
        self.ledger = d.qualify('processing_log', self.ledger_schema if d.supports_schema else None)
        self.app_id, self.status, self.hash = d.quote('app_id'), d.quote('status'), d.quote('content_hash')
        self.session = d.quote('session_id')
        self.has_session = None         # whether processing_log has session_id: asked on the first batch

    def _known(self, w, ids):
        """{app_id: content hash recorded, or None when this run wrote that row} of the app_ids of `ids` that
        have a processing_log success row."""
        if self.has_session is None:
            d = self.dialect_impl
            meta = w.run(lambda cur: d.introspect_table(w.conn, self.ledger_schema if d.supports_schema else None,
                                                        'processing_log'), commit=False)
            self.has_session = meta is not None and meta.column('session_id') is not None
        session = self.session if self.has_session and self.session_id is not None else 'NULL'

        def select(cur, part):
            found = {}
            for i in range(0, len(part), 500):
                chunk = part[i:i + 500]
                cur.execute(f'SELECT {self.app_id}, {self.hash}, {session} FROM {self.ledger} WHERE {self.status} = ? '
                            f'AND {self.app_id} {_ids_sql(len(chunk))}', ['success'] + list(chunk))
                # A row this run's own session wrote (a bundle retried by a runner, say) is no version 'before'
                # the run: the document counts as changed only against an earlier run's row.
                found.update((_norm(r[0]), None if r[2] is not None and r[2] == self.session_id else r[1])
                             for r in cur.fetchall())
            return found
        known = {}
        for part, found, err in w.isolate(ids, select, commit=False, label='processing_log: '):
            known.update(found if err is None else {a: None for a in part})   # unknown: replace to be safe
        return known

    def _replace(self, cur, app_ids):
        """In one transaction: the ledger rows say 'replacing' (a run that stops before the new rows are written
        leaves the document to be migrated again, never skipped as done with its rows gone), then every row of
        the documents is deleted, children first."""
        for i in range(0, len(app_ids), 500):
            chunk = list(app_ids[i:i + 500])
            cur.execute(f'UPDATE {self.ledger} SET {self.status} = ? WHERE {self.app_id} {_ids_sql(len(chunk))}',
                        [REPLACING] + chunk)
        return _delete_owned(cur, self.templates, app_ids)

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
        for part, n, err in w.isolate(todo, lambda cur, part: self._replace(cur, [_norm(d.app_id) for d in part]),
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
            if id(doc) in bad:
                continue
            before = known.get(_norm(doc.app_id))
            if before and doc.content_hash and before != doc.content_hash:
                yield TaggedOutput(CHANGED_TAG, _norm(doc.app_id))     # migrated before with another content
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
