"""Resume for sources that learn a document's app_id only from its XML (files, container files): before any
parsing, a document whose content hash (sha256 of the bytes read) is the content_hash of a processing_log
`success` row was migrated exactly as it is now, and is skipped (counted as skipped, not read). The ledger is
asked in batches (an indexed `content_hash IN (...)`), never loaded whole into a worker."""
import apache_beam as beam

from transforms.records import SKIPPED_TAG

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
    """PCollection[Doc] -> (docs not done in this version, counts of the skipped ones)."""

    def __init__(self, target_url, schema, dialect=None):
        super().__init__()
        self.args = (target_url, schema, dialect)

    def expand(self, docs):
        res = (docs
               | 'Batch' >> beam.BatchElements(min_batch_size=1, max_batch_size=BATCH)
               | 'SkipDone' >> beam.ParDo(_SkipUnchangedFn(*self.args)).with_outputs(SKIPPED_TAG, main='docs'))
        return res.docs, res[SKIPPED_TAG]
