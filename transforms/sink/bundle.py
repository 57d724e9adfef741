"""One connection per bundle: the base of every sink DoFn (rows, replacement, compensation, ledger, dead letters)."""
from typing import Dict, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.sink.writer import Writer
from transforms.sql.meta import TableMeta
from transforms.sql.retry import RetryPolicy

METRICS_NAMESPACE = 'sink'
FAILED_TAG = 'failed'


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
        from transforms.sql.targets import parse_target
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
