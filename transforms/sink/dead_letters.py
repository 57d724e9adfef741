"""The dead letters (dead_letter, one current row per document, keyed by doc_key, upserted with attempts)."""
import logging
from typing import Any, Dict, List

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.records import DeadLetter
from transforms.sink.bundle import METRICS_NAMESPACE, _ConnPerBundleFn
from transforms.sink.ledger import DEAD_LETTER_COLUMNS, _project_meta, _utcnow, keyed_view
from transforms.sink.writer import _norm
from transforms.sql.ledger import doc_key
from transforms.sql.retry import RetryPolicy

log = logging.getLogger(__name__)


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
