"""The pipeline graph: read → validate → parse → map → (per FK tier) key by table → GroupIntoBatches → sink,
then the ledger (processing_log) and the dead letters. `build_pipeline` is the one place the graph is built; the
CLI, the tests and the benchmarks all use it.
"""
import json
import logging
import time
from typing import Any, NamedTuple, Optional

import apache_beam as beam

from transforms.dedupe import DedupeAppIds
from transforms.map import MapFn
from transforms.parse import ParseFn, ParseSpec
from transforms.records import DEAD_LETTER_TAG, DeadLetter, Outcome
from transforms.stage import payload_text, refetch_payload
from transforms.validate import Limits, ValidateFn

log = logging.getLogger(__name__)


class Outputs(NamedTuple):
    """The PCollections a built pipeline exposes (for tests and for writers)."""
    docs: Any              # Doc, as read
    mapped: Any            # MappedDoc
    dead_letters: Any      # DeadLetter, from every stage
    outcomes: Any          # Outcome, one per document read


class ProgressFn(beam.DoFn):
    """Pass-through that logs progress of this worker at a steady interval (documents, rate); the launcher logs
    done/total, rate and ETA after every chunk."""

    def __init__(self, label, every_s, expected=None):
        self.label, self.every_s, self.expected = label, every_s, expected

    def setup(self):
        self.n, self.t0, self.last = 0, time.monotonic(), time.monotonic()

    def process(self, element):
        self.n += 1
        now = time.monotonic()
        if self.every_s and now - self.last >= self.every_s:
            self.last = now
            rate = self.n / max(now - self.t0, 1e-9) * 60
            log.info('progress %s: %d documents%s read by this worker, %.0f docs/min', self.label, self.n,
                     f' of this run\'s {self.expected}' if self.expected else '', rate)
        yield element


def _outcome_of_dead_letter(dl: DeadLetter) -> Outcome:
    return Outcome(source=dl.source, app_id=dl.app_id, status='failed', stage=dl.stage, reason=dl.reason, rows=0)


class RefetchPayloadFn(beam.DoFn):
    """Sink failures carry no payload (the XML is not dragged through the shuffle): fetch it again by reference."""

    def __init__(self, fetch):
        self.fetch = fetch

    def process(self, o: Outcome):
        yield DeadLetter(source=o.source, app_id=o.app_id, stage=o.stage or 'sink', reason=o.reason or '',
                         payload=refetch_payload(self.fetch, o.source))


def _read_ledger(target_url, dialect, read):
    """read(conn, dialect name) on a connection to the target that rides out a short outage (retry.py)."""
    from transforms.sql.targets import parse_target
    target = parse_target(target_url, dialect=dialect)
    db = target.retrying(what=f'resume ledger {target.display}')
    try:
        return db.run(lambda cur: read(db.conn, target.dialect_name), commit=False)
    finally:
        db.close()


class SkipUnchangedFn(beam.DoFn):
    """Resume for sources that learn a document's app_id only from the XML (files, container files), before any
    parsing: a document whose content hash (sha256 of the bytes read) is the content_hash of a processing_log
    `success` row was migrated exactly as it is now - skipped (counted as skipped, not read). A changed document
    has a new hash and goes on; the ledger then counts it as changed. The hashes of the done documents are read
    once per worker, 8 bytes each."""

    def __init__(self, target_url, schema, dialect=None):
        self.target_url, self.schema, self.dialect = target_url, schema, dialect
        self.skipped = beam.metrics.Metrics.counter('migration', 'docs_skipped_done')

    def setup(self):
        from transforms.sink import read_success_hashes
        self.done = _read_ledger(self.target_url, self.dialect,
                                 lambda conn, d: read_success_hashes(conn, d, self.schema))

    def process(self, doc):
        from transforms.sink import hash_prefix
        if self.done and hash_prefix(doc.content_hash) in self.done:
            self.skipped.inc()
            return
        yield doc


class SkipDoneFn(beam.DoFn):
    """For sources that learn a document's app_id only from the XML (files, container files), after parsing:

    * resume: drop documents whose app_id has a processing_log `success` row without content hash (written by an
      earlier version of the tool: nothing tells whether they changed; --no-resume once records the hashes).
      Documents whose hash matches were skipped before parsing (SkipUnchangedFn); counted as skipped;
    * an app_id already written from another document by an earlier chunk of this same invocation is a duplicate
      in this run: dead letter (within one chunk, DedupeAppIds catches it)."""

    def __init__(self, target_url, schema, dialect=None, resume=True, written_before=frozenset()):
        self.target_url, self.schema, self.dialect = target_url, schema, dialect
        self.resume, self.written_before = resume, frozenset(written_before or ())
        self.skipped = beam.metrics.Metrics.counter('migration', 'docs_skipped_done_late')

    def setup(self):
        self.done = frozenset()
        if not self.resume:
            return
        from transforms.sink import read_unhashed_success_ids
        self.done = _read_ledger(self.target_url, self.dialect,
                                 lambda conn, d: read_unhashed_success_ids(conn, d, self.schema))

    def process(self, parsed):
        if parsed.app_id in self.written_before:
            from transforms.dedupe import REASON
            # app_id left empty on purpose: the ledger's success row belongs to the document that was written
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(
                source=parsed.source, app_id=None, stage='validation',
                reason=f'{REASON} (app_id {parsed.app_id}, written from another document in an earlier chunk)',
                payload=payload_text(parsed.original if parsed.original is not None else parsed.xml)))
            return
        if parsed.app_id in self.done:
            self.skipped.inc()
            return
        yield parsed


def _with_content_hash(kv):
    """(source, {'outcome': [...], 'hash': [...]}) -> (Outcome, content hash) for the ledger. A source table with
    two rows for one app_id gives one source two hashes: the smallest is kept (such a document is never skipped
    by resume, whose rows must all match)."""
    _, groups = kv
    hashes = sorted(h for h in groups['hash'] if h)
    for o in groups['outcome']:
        yield o, (hashes[0] if hashes else None)


class CountOutcomesFn(beam.DoFn):
    def __init__(self):
        self.written = beam.metrics.Metrics.counter('migration', 'docs_written')
        self.dead = beam.metrics.Metrics.counter('migration', 'docs_dead_lettered')
        self.rows = beam.metrics.Metrics.counter('migration', 'rows_written')
        self.with_warnings = beam.metrics.Metrics.counter('migration', 'docs_with_quality_warnings')

    def process(self, o: Outcome):
        if o.warnings:
            self.with_warnings.inc()
        if o.status == 'success':
            self.written.inc()
            self.rows.inc(o.rows)
        else:
            self.dead.inc()
            beam.metrics.Metrics.counter('dead_letter_stage', o.stage or 'unknown').inc()
        yield o


def _jsonable(v):
    if hasattr(v, 'isoformat'):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode('utf-8', 'replace')
    try:
        from decimal import Decimal
        if isinstance(v, Decimal):
            return str(v)
    except ImportError:
        pass
    return str(v)


def dumps(obj):
    return json.dumps(obj, default=_jsonable, ensure_ascii=False, separators=(',', ':'))


def row_lines(mapped):
    """MappedDoc → JSONL lines of the `map` command: {"file", "app_id", "table", "row"}."""
    for table, rows in mapped.rows.items():
        for row in rows:
            yield dumps({'file': mapped.source, 'app_id': mapped.app_id, 'table': table, 'row': row})


def status_line(o: Outcome):
    return dumps({'file': o.source, 'app_id': o.app_id, 'status': 'ok' if o.status == 'success' else 'failed',
                  'stage': o.stage, 'error': o.reason, 'rows': o.rows, 'warnings': list(o.warnings or ())})


def dead_letter_line(d: DeadLetter):
    return dumps(d._asdict())


def failure_line(o: Outcome):
    """A failed outcome for the operator's metrics file: ids, stage, reason; never the payload."""
    return dumps({'source': o.source, 'app_id': o.app_id, 'stage': o.stage, 'reason': o.reason})


def _write_jsonl(pcoll, path, label):
    return pcoll | label >> beam.io.WriteToText(path, num_shards=1, shard_name_template='')


def build_pipeline(p, contract, source, *, target=None, sink=None, parse_mode='partial', limits=Limits(),
                   batch_size=200, rows_out: Optional[str] = None, status_out: Optional[str] = None,
                   dead_letter_out: Optional[str] = None, session_id=None, progress_s=0.0,
                   resume=False, failures_out: Optional[str] = None, written_before=frozenset(),
                   written_ids_out: Optional[str] = None) -> Outputs:
    """Build the migration graph on pipeline `p`.

    contract: a loaded `contracts.Contract`; source: a `pipeline.sources` source; target: a target URL (None for
    `map`, which only writes JSONL); sink: the sink plan (`transforms.sql.plan.SinkPlan`) when target is given.
    """
    from contracts import compile_contract
    compiled = compile_contract(contract)
    spec = ParseSpec.from_contract(contract, compiled, mode=parse_mode, max_depth=limits.max_depth,
                                   max_seconds=getattr(limits, 'max_parse_seconds', 20.0))

    docs = p | 'Read' >> source.transform()
    if target is not None and resume and getattr(source, 'kind', None) != 'table':
        docs = docs | 'SkipUnchanged' >> beam.ParDo(SkipUnchangedFn(target, sink.schema, sink.dialect))
    if progress_s:
        docs = docs | 'Progress' >> beam.ParDo(ProgressFn('read', progress_s, source.expected))
    v = docs | 'Validate' >> beam.ParDo(ValidateFn(limits, contract.root_element)).with_outputs(
        DEAD_LETTER_TAG, main='ok')
    pr = v.ok | 'Parse' >> beam.ParDo(ParseFn(spec)).with_outputs(DEAD_LETTER_TAG, main='ok')
    parsed = pr.ok
    dead_parts = [v[DEAD_LETTER_TAG], pr[DEAD_LETTER_TAG]]
    if target is not None and getattr(source, 'kind', None) != 'table' and (resume or written_before):
        sk = parsed | 'SkipDone' >> beam.ParDo(SkipDoneFn(target, sink.schema, sink.dialect, resume,
                                                          written_before)).with_outputs(DEAD_LETTER_TAG, main='ok')
        parsed = sk.ok
        dead_parts.append(sk[DEAD_LETTER_TAG])
    m = parsed | 'Map' >> beam.ParDo(MapFn(contract.raw)).with_outputs(DEAD_LETTER_TAG, main='ok')
    d = m.ok | 'DedupeAppIds' >> DedupeAppIds(source)    # a second document with the same app_id: dead letter
    mapped = d.kept
    early_dead = (tuple(dead_parts) + (m[DEAD_LETTER_TAG], d.dead_letters)) | 'EarlyDeadLetters' >> beam.Flatten()

    if target is not None:
        from transforms.sink import WriteDeadLetters, WriteLedger, WriteToSql
        sink_outcomes = mapped | 'Write' >> WriteToSql(target, sink.metas, sink.tiers, batch_size,
                                                       dialect=sink.dialect, ledger_schema=sink.schema)
        sink_failed = sink_outcomes | 'SinkFailures' >> beam.Filter(lambda o: o.status != 'success')
        sink_dead = sink_failed | 'RefetchPayload' >> beam.ParDo(RefetchPayloadFn(source.fetcher()))
        dead = (early_dead, sink_dead) | 'AllDeadLetters' >> beam.Flatten()
        outcomes = ((sink_outcomes, early_dead | 'EarlyOutcomes' >> beam.Map(_outcome_of_dead_letter))
                    | 'AllOutcomes' >> beam.Flatten())
        counted = outcomes | 'Count' >> beam.ParDo(CountOutcomesFn())
        # The ledger records the content hash of the version processed (resume compares it next time): the
        # hashes come from the source, joined by source reference (they are not carried through the stages).
        hashes = docs | 'ContentHashes' >> beam.Map(lambda doc: (doc.source, doc.content_hash))
        ledger_in = ({'outcome': counted | 'OutcomesBySource' >> beam.Map(lambda o: (o.source, o)),
                      'hash': hashes}
                     | 'JoinContentHashes' >> beam.CoGroupByKey()
                     | 'WithContentHash' >> beam.FlatMap(_with_content_hash))
        ledger_in | 'Ledger' >> WriteLedger(target, sink.schema, session_id, dialect=sink.dialect)
        early_dead | 'DeadLetterTable' >> WriteDeadLetters(target, sink.schema, dialect=sink.dialect,
                                                           session_id=session_id)
        sink_dead | 'SinkDeadLetterTable' >> WriteDeadLetters(target, sink.schema, dialect=sink.dialect,
                                                              session_id=session_id)
    else:
        dead = early_dead
        ok = mapped | 'MappedOutcomes' >> beam.Map(
            lambda md: Outcome(source=md.source, app_id=md.app_id, status='success', stage=None, reason=None,
                               rows=sum(len(r) for r in md.rows.values()), warnings=tuple(md.warnings)))
        outcomes = ((ok, early_dead | 'EarlyOutcomes' >> beam.Map(_outcome_of_dead_letter))
                    | 'AllOutcomes' >> beam.Flatten())
        counted = outcomes | 'Count' >> beam.ParDo(CountOutcomesFn())
        if rows_out:
            _write_jsonl(mapped | 'RowLines' >> beam.FlatMap(row_lines), rows_out, 'WriteRows')

    if status_out:
        _write_jsonl(counted | 'StatusLines' >> beam.Map(status_line), status_out, 'WriteStatus')
    if written_ids_out:
        _write_jsonl(counted | 'Written' >> beam.Filter(lambda o: o.status == 'success' and o.app_id is not None)
                     | 'WrittenIds' >> beam.Map(lambda o: str(o.app_id)), written_ids_out, 'WriteWrittenIds')
    if failures_out:
        _write_jsonl(counted | 'Failed' >> beam.Filter(lambda o: o.status != 'success')
                     | 'FailureLines' >> beam.Map(failure_line), failures_out, 'WriteFailures')
    if dead_letter_out:
        _write_jsonl(dead | 'DeadLetterLines' >> beam.Map(dead_letter_line), dead_letter_out, 'WriteDeadLetterJsonl')
    return Outputs(docs=docs, mapped=mapped, dead_letters=dead, outcomes=counted)
