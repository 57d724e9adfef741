"""One app_id, one document per run: later occurrences of an app_id go to the dead letter.

Two files (or rows) may carry the same app_id. Writing both would let the second silently overwrite the first
(the sink upserts on the primary key). `DedupeAppIds` keeps one document per app_id and dead-letters the others with
the reason ``duplicate app_id in this run (app_id N, kept <source>)``, stage ``dedupe``. The dead letter's own
app_id is None: processing_log holds one row per app_id, which belongs to the kept document.

Which one is kept is deterministic, not "whichever arrived first" (a parallel runner has no arrival order): the
document with the smallest `source` reference (file name / table reference) among those that mapped successfully
and those resume skipped as done and unchanged (`skipped_keys`: a skipped document is not read, but it still
owns its app_id, so a re-run keeps what a fresh run kept instead of letting its twin replace it).

Memory: only the small `(app_id, source)` keys go through the GroupByKey; the set of losers (normally empty) is a
side input to a filter on the MappedDocs. The lxml trees and payloads are never shuffled. The losers' payloads are
re-read from the source by reference, as for sink failures, so the dead letter keeps the original document.

Wiring (pipeline/graph.py, right after the Map step)::

    d = m.ok | 'DedupeAppIds' >> DedupeAppIds(source)
    mapped = d.kept
    early_dead = ((v[DEAD_LETTER_TAG], pr[DEAD_LETTER_TAG], m[DEAD_LETTER_TAG], d.dead_letters)
                  | 'EarlyDeadLetters' >> beam.Flatten())
"""
import logging
from typing import Any, NamedTuple

import apache_beam as beam

from transforms.records import DeadLetter
from transforms.stage import refetch_payload

log = logging.getLogger(__name__)
STAGE = 'dedupe'
REASON = 'duplicate app_id in this run'


class Deduped(NamedTuple):
    kept: Any            # PCollection[MappedDoc]: one per app_id
    dead_letters: Any    # PCollection[DeadLetter]: the other occurrences


def losers_of(app_id_and_sources):
    """(app_id, [sources]) → (loser source, kept source) for every source but the smallest."""
    _, sources = app_id_and_sources
    sources = sorted(set(sources))
    for s in sources[1:]:
        yield s, sources[0]


class _DropLosersFn(beam.DoFn):
    def __init__(self):
        self.dupes = beam.metrics.Metrics.counter('migration', 'duplicate_app_ids')

    def process(self, mapped, losers):
        kept = losers.get(mapped.source)
        if kept is None:
            yield mapped
            return
        self.dupes.inc()
        log.debug('dead letter: source=%s app_id=%s stage=%s reason=%s', mapped.source, mapped.app_id, STAGE, REASON)
        yield beam.pvalue.TaggedOutput('dead', (mapped.source, mapped.app_id, kept))


class _RefetchFn(beam.DoFn):
    """The loser's original payload, read again from the source (the MappedDoc no longer carries it)."""

    def __init__(self, fetch):
        self.fetch = fetch

    def process(self, item):
        src, app_id, kept = item
        payload = refetch_payload(self.fetch, src)
        # app_id None on purpose: processing_log keeps one row per app_id, and that row belongs to the kept
        # document (a 'failed' here would overwrite its 'success'). The reason names the app_id instead.
        yield DeadLetter(source=src, app_id=None, stage=STAGE,
                         reason=f'{REASON} (app_id {app_id}, kept {kept[:200]})', payload=payload)

    def finish_bundle(self):
        close = getattr(self.fetch, 'close', None)
        if close is not None:
            close()


class DedupeAppIds(beam.PTransform):
    """PCollection[MappedDoc] → Deduped(kept, dead_letters). `source` (a pipeline.sources source, or None) is
    used to re-read the payload of each dropped duplicate; `skipped_keys` (a PCollection of (app_id, source), or
    None) are the documents resume skipped, which take part in the choice but are never dead-lettered here."""

    def __init__(self, source=None, skipped_keys=None):
        super().__init__()
        self.source, self.skipped_keys = source, skipped_keys

    def expand(self, mapped):
        keys = mapped | 'Keys' >> beam.Map(lambda md: (md.app_id, md.source))
        if self.skipped_keys is not None:
            keys = (keys, self.skipped_keys) | 'WithSkipped' >> beam.Flatten()
        losers = (keys
                  | 'ByAppId' >> beam.GroupByKey()
                  | 'Losers' >> beam.FlatMap(losers_of))
        split = mapped | 'DropLosers' >> beam.ParDo(
            _DropLosersFn(), losers=beam.pvalue.AsDict(losers)).with_outputs('dead', main='kept')
        fetch = self.source.fetcher() if self.source is not None else None   # small: no file list, no rows
        dead = split.dead | 'DuplicateDeadLetters' >> beam.ParDo(_RefetchFn(fetch))
        return Deduped(kept=split.kept, dead_letters=dead)
