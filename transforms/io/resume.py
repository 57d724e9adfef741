"""Resume for sources that learn a document's app_id only from its XML (files, container files): before any
parsing, a document whose content hash (sha256 of the bytes read) is the content_hash of a processing_log
`success` row was migrated exactly as it is now, and is skipped (counted as skipped, not read). The ledger is
asked in batches (an indexed `content_hash IN (...)`), never loaded whole into a worker.

A skipped document still owns its app_id in this run: its `(app_id, source)` leaves on a side output, so that
DedupeAppIds weighs it against another document of the same app_id that is read (a twin file). Without it the
twin was the only document of its app_id in the run and replaced the skipped one's rows, and the next run,
skipping the twin, put the first back: re-runs flipped the target instead of converging."""
import apache_beam as beam

from transforms.records import SKIPPED_KEYS_TAG, SKIPPED_TAG

BATCH = 200


class _SkipUnchangedFn(beam.DoFn):
    def __init__(self, target_url, schema, dialect=None):
        self.target_url, self.schema, self.dialect = target_url, schema, dialect
        self.skipped = beam.metrics.Metrics.counter('migration', 'docs_skipped_done')
        self.ledger = None

    def process(self, docs):
        if self.ledger is None:
            from transforms.sql.ledger import Ledger
            self.ledger = Ledger.open(self.target_url, self.schema, self.dialect)
        done = self.ledger.done_hashes(d.content_hash for d in docs)
        n = 0
        for d in docs:
            if d.content_hash and d.content_hash in done:
                n += 1
                yield beam.pvalue.TaggedOutput(SKIPPED_KEYS_TAG, (done[d.content_hash], d.source))
            else:
                yield d
        if n:
            self.skipped.inc(n)
            yield beam.pvalue.TaggedOutput(SKIPPED_TAG, n)

    def finish_bundle(self):
        self.teardown()

    def teardown(self):
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None


class SkipUnchanged(beam.PTransform):
    """PCollection[Doc] -> (docs not done in this version, counts of the skipped ones, their (app_id, source))."""

    def __init__(self, target_url, schema, dialect=None):
        super().__init__()
        self.args = (target_url, schema, dialect)

    def expand(self, docs):
        res = (docs
               | 'Batch' >> beam.BatchElements(min_batch_size=1, max_batch_size=BATCH)
               | 'SkipDone' >> beam.ParDo(_SkipUnchangedFn(*self.args)).with_outputs(
                   SKIPPED_TAG, SKIPPED_KEYS_TAG, main='docs'))
        return res.docs, res[SKIPPED_TAG], res[SKIPPED_KEYS_TAG]
