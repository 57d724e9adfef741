"""The pipeline graph, composed of named transforms that read like its diagram:

    ReadDocuments -> PrepareDocuments (validate -> parse -> map -> one document per app_id)
                  -> WriteRows (run: FK tiers, GroupIntoBatches per (table, shard), sink)   | EmitRows (map: JSONL)
                  -> RecordOutcomes (run: processing_log)
    every dead letter of every step -> one error handler -> DeadLetters (dead_letter table and/or JSONL)
    outcomes + skipped counts -> Reports (the run's counts, status and failure files, under the work folder)

`build(p, cfg, source, sink, paths)` builds it for one run (one chunk) from the frozen configuration. The counts of
a run are computed from the outcome records themselves (`RunCounts`, a combine), never from runner metrics, so a
retried bundle can neither break nor fake the invariant read = written + dead_lettered.

(About 430 lines on purpose: the graph's named transforms are short and read best side by side, in the order of the
diagram above.)
"""
import json
import logging
from typing import Any, NamedTuple, Optional

import apache_beam as beam
from apache_beam.transforms.error_handling import CollectingErrorHandler

from transforms.dedupe import REASON as DUPLICATE_REASON, DedupeAppIds
from transforms.map import MapFn
from transforms.parse import ParseFn, ParseSpec
from transforms.records import DEAD_LETTER_TAG, DeadLetter, Outcome
from transforms.stage import payload_text, raise_if_stop_requested, refetch_payload
from transforms.validate import ValidateFn

log = logging.getLogger(__name__)


class Outputs(NamedTuple):
    """The PCollections a built pipeline exposes (for tests and for writers)."""
    docs: Any              # Doc, as read
    mapped: Any            # MappedDoc
    dead_letters: Any      # DeadLetter, from every stage
    outcomes: Any          # Outcome, one per document read
    counts: Any            # one dict: RunCounts of this run


class Paths(NamedTuple):
    """Where one run (chunk) writes its files (local or any FileSystems path; None: not written)."""
    counts: Optional[str] = None          # RunCounts as one JSON line
    failures: Optional[str] = None        # failed documents: ids, stage, reason (JSONL; never payloads)
    status: Optional[str] = None          # every document's outcome (JSONL)
    dead_letters: Optional[str] = None    # dead letters with payloads (JSONL)
    rows: Optional[str] = None            # map: the rows (JSONL)
    written_ids: Optional[str] = None     # app_ids written by this chunk (file sources of several chunks)


# ============================================================================================= progress

# What this process's workers have done so far (local runners run them in the launcher's process, whose progress
# thread shows it): documents read, documents resume skipped, documents finished (written or dead-lettered).
PROGRESS = {'read': 0, 'skipped': 0, 'finished': 0}


def reset_progress():
    for k in PROGRESS:
        PROGRESS[k] = 0


class ProgressFn(beam.DoFn):
    """Pass-through that counts elements into PROGRESS[what], for the launcher's progress line (local runners
    share this process). `what` = 'skipped': the elements are counts of skipped documents."""

    def __init__(self, what='read'):
        self.what = what

    def process(self, element):
        raise_if_stop_requested()
        PROGRESS[self.what] += element if self.what == 'skipped' else 1
        yield element


# ============================================================================================= composites

class ReadDocuments(beam.PTransform):
    """PBegin -> (documents, counts of the documents resume skipped, their (app_id, source) or None). The
    source's own read transform (a table, files, one file of many documents), plus a progress counter."""

    def __init__(self, source, progress_s=0.0):
        super().__init__()
        self.source, self.progress_s = source, progress_s

    def expand(self, pbegin):
        res = pbegin | 'Source' >> self.source.read()
        docs, skipped = res.docs, res.skipped
        if self.progress_s:
            docs = docs | 'Progress' >> beam.ParDo(ProgressFn())
            skipped = skipped | 'ProgressSkipped' >> beam.ParDo(ProgressFn('skipped'))
        return docs, skipped, res.skipped_keys


class SkipWrittenBeforeFn(beam.DoFn):
    """File sources learn an app_id only from the document: an app_id already written from another document by
    an earlier chunk of this same run is a duplicate (dead letter), not an overwrite. Within one chunk
    DedupeAppIds catches it; table sources need neither (one app_id never spans chunks)."""

    def __init__(self, written_before):
        self.written_before = frozenset(written_before or ())

    def process(self, parsed):
        if parsed.app_id in self.written_before:
            # app_id left empty on purpose: the ledger's success row belongs to the document that was written
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(
                source=parsed.source, app_id=None, stage='dedupe',
                reason=f'{DUPLICATE_REASON} (app_id {parsed.app_id}, written from another document in an earlier '
                       'chunk)',
                payload=payload_text(parsed.original if parsed.original is not None else parsed.xml),
                content_hash=parsed.content_hash))
            return
        yield parsed


class PrepareDocuments(beam.PTransform):
    """PCollection[Doc] -> PCollection[MappedDoc]: validate -> parse -> map -> one document per app_id. Every
    document that fails a step goes to the error handler as a DeadLetter with the step's stage, its reason and
    the original payload."""

    def __init__(self, contract, limits, parse_mode, errors, dedupe_source=None, dedupe=True,
                 written_before=frozenset(), skipped_keys=None):
        super().__init__()
        from contracts import compile_contract
        self.contract, self.limits, self.errors = contract, limits, errors
        self.spec = ParseSpec.from_contract(contract, compile_contract(contract), mode=parse_mode,
                                            max_depth=limits.max_depth, max_seconds=limits.max_parse_seconds)
        # files assigned to shards by their app_id: each must carry one of its shard (transforms.io.files)
        self.spec = self.spec._replace(shard=getattr(dedupe_source, 'shard', None))
        self.dedupe_source, self.dedupe, self.written_before = dedupe_source, dedupe, written_before
        self.skipped_keys = skipped_keys     # (app_id, source) of the documents resume skipped (file sources)

    def expand(self, docs):
        v = docs | 'Validate' >> beam.ParDo(ValidateFn(self.limits, self.contract.root_element)).with_outputs(
            DEAD_LETTER_TAG, main='ok')
        self.errors.add_error_pcollection(v[DEAD_LETTER_TAG])
        p = v.ok | 'Parse' >> beam.ParDo(ParseFn(self.spec)).with_outputs(DEAD_LETTER_TAG, main='ok')
        self.errors.add_error_pcollection(p[DEAD_LETTER_TAG])
        parsed = p.ok
        if self.written_before:
            s = parsed | 'SkipWrittenBefore' >> beam.ParDo(SkipWrittenBeforeFn(self.written_before)).with_outputs(
                DEAD_LETTER_TAG, main='ok')
            self.errors.add_error_pcollection(s[DEAD_LETTER_TAG])
            parsed = s.ok
        m = parsed | 'Map' >> beam.ParDo(MapFn(self.contract.raw)).with_outputs(DEAD_LETTER_TAG, main='ok')
        self.errors.add_error_pcollection(m[DEAD_LETTER_TAG])
        if not self.dedupe:
            return m.ok
        # a second document with one app_id, read or skipped by resume
        d = m.ok | 'DedupeAppIds' >> DedupeAppIds(self.dedupe_source, self.skipped_keys)
        self.errors.add_error_pcollection(d.dead_letters)
        return d.kept


class RefetchPayloadFn(beam.DoFn):
    """Sink failures carry no payload (the XML is not dragged through the shuffles): it is read again from the
    source by reference, on one connection per bundle."""

    def __init__(self, fetcher):
        self.fetcher = fetcher

    def process(self, o: Outcome):
        yield DeadLetter(source=o.source, app_id=o.app_id, stage=o.stage or 'sink', reason=o.reason or '',
                         payload=refetch_payload(self.fetcher, o.source), content_hash=o.content_hash)

    def finish_bundle(self):
        close = getattr(self.fetcher, 'close', None)
        if close is not None:
            close()


class WriteRows(beam.PTransform):
    """PCollection[MappedDoc] -> PCollection[Outcome] of the sink (run): the rows into the target tables
    (transforms/sink/write.py); the documents that fail there go to the error handler with their payload."""

    def __init__(self, cfg, sink, source, errors, session_id=None):
        super().__init__()
        self.cfg, self.sink, self.source, self.errors = cfg, sink, source, errors
        self.session_id = session_id

    def expand(self, mapped):
        from transforms.sink import WriteToSql
        cfg, sink = self.cfg, self.sink
        outcomes = mapped | 'ToTables' >> WriteToSql(cfg.target, sink.metas, sink.tiers, cfg.batch_size,
                                                     dialect=sink.dialect, ledger_schema=sink.schema,
                                                     shards=cfg.sink_shards, session_id=self.session_id)
        failed = (outcomes | 'Failed' >> beam.Filter(lambda o: o.status != 'success')
                  | 'RefetchPayload' >> beam.ParDo(RefetchPayloadFn(self.source.fetcher())))
        self.errors.add_error_pcollection(failed)
        return outcomes | 'Written' >> beam.Filter(lambda o: o.status == 'success')


class EmitRows(beam.PTransform):
    """PCollection[MappedDoc] -> PCollection[Outcome] (map): the rows as JSONL, no database."""

    def __init__(self, rows_out):
        super().__init__()
        self.rows_out = rows_out

    def expand(self, mapped):
        if self.rows_out:
            _write_jsonl(mapped | 'RowLines' >> beam.FlatMap(row_lines), self.rows_out, 'WriteRows')
        return mapped | 'Outcomes' >> beam.Map(
            lambda md: Outcome(source=md.source, app_id=md.app_id, status='success', stage=None, reason=None,
                               rows=sum(len(r) for r in md.rows.values()), warnings=tuple(md.warnings),
                               content_hash=md.content_hash,
                               tables=tuple((t, len(r)) for t, r in md.rows.items())))


class DeadLetters(beam.PTransform):
    """The error handler's consumer: every dead letter of the run, written once (dead_letter table of the
    target, and/or a JSONL file). Passes the dead letters through."""

    def __init__(self, cfg=None, sink=None, session_id=None, jsonl=None):
        super().__init__()
        self.cfg, self.sink, self.session_id, self.jsonl = cfg, sink, session_id, jsonl

    def expand(self, letters):
        if self.sink is not None:
            from transforms.sink import WriteDeadLetters
            letters | 'ToTable' >> WriteDeadLetters(self.cfg.target, self.sink.schema, dialect=self.sink.dialect,
                                                    session_id=self.session_id)
        if self.jsonl:
            _write_jsonl(letters | 'Lines' >> beam.Map(dead_letter_line), self.jsonl, 'ToJsonl')
        return letters


def _outcome_of_dead_letter(dl: DeadLetter) -> Outcome:
    return Outcome(source=dl.source, app_id=dl.app_id, status='failed', stage=dl.stage, reason=dl.reason, rows=0,
                   content_hash=dl.content_hash)


class RecordOutcomes(beam.PTransform):
    """(written outcomes, dead letters) -> every document's Outcome, one per document read; with a target they
    go to processing_log (one row per app_id, upserted, with the content hash of the version processed)."""

    def __init__(self, cfg=None, sink=None, session_id=None):
        super().__init__()
        self.cfg, self.sink, self.session_id = cfg, sink, session_id

    def expand(self, pcolls):
        written, dead = pcolls
        outcomes = ((written, dead | 'FailedOutcomes' >> beam.Map(_outcome_of_dead_letter))
                    | 'AllOutcomes' >> beam.Flatten())
        if self.sink is not None:
            from transforms.sink import WriteLedger
            read = self.cfg.read
            outcomes | 'Ledger' >> WriteLedger(self.cfg.target, self.sink.schema, self.session_id,
                                               dialect=self.sink.dialect, owned=(self.sink.metas, self.sink.tiers),
                                               app_id_range=(read.app_id_start, read.app_id_end))
        return outcomes


# ============================================================================================= counts

def _reason_class(reason):
    """A reason with its ids and numbers folded, so that reasons can be counted ('con_id N already belongs')."""
    import re
    return re.sub(r'\d+', 'N', (reason or '').split('\n')[0])[:160]


class RunCounts(beam.CombineFn):
    """Outcomes (and the skipped counts) -> the run's counts: read, written, dead_lettered, rows, skipped,
    changed, by stage and reason, rows by table, warnings by field. Computed from the records, so exact on every
    runner (a retried bundle's output is discarded with it)."""

    def create_accumulator(self):
        return {'read': 0, 'written': 0, 'dead_lettered': 0, 'rows': 0, 'skipped': 0, 'changed': 0,
                'quality_warnings': 0, 'docs_with_quality_warnings': 0, 'dead_lettered_without_app_id': 0,
                'dead_lettered_by_stage': {}, 'dead_lettered_by_stage_and_reason': {}, 'rows_by_table': {},
                'warnings_by_field': {}}

    def add_input(self, acc, item):
        if isinstance(item, int):                       # a count of skipped documents
            acc['skipped'] += item
            return acc
        o = item
        acc['read'] += 1
        if o.warnings:
            acc['docs_with_quality_warnings'] += 1
            acc['quality_warnings'] += len(o.warnings)
            from pipeline.report import warning_field
            for w in o.warnings:
                field, what = warning_field(w)
                k = f'{field} | {what}'
                acc['warnings_by_field'][k] = acc['warnings_by_field'].get(k, 0) + 1
        if o.status == 'success':
            acc['written'] += 1
            acc['rows'] += o.rows
            acc['changed'] += 1 if o.changed else 0
            for t, n in o.tables or ():
                acc['rows_by_table'][t] = acc['rows_by_table'].get(t, 0) + n
        else:
            acc['dead_lettered'] += 1
            if o.app_id is None:
                acc['dead_lettered_without_app_id'] += 1
            st = o.stage or 'unknown'
            acc['dead_lettered_by_stage'][st] = acc['dead_lettered_by_stage'].get(st, 0) + 1
            by = acc['dead_lettered_by_stage_and_reason'].setdefault(st, {})
            rc = _reason_class(o.reason)
            by[rc] = by.get(rc, 0) + 1
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            merge_counts(out, a)
        return out

    def extract_output(self, acc):
        return acc


def merge_counts(into, other):
    """Add the counts `other` to `into` (both RunCounts outputs); returns `into`."""
    for k, v in other.items():
        if isinstance(v, dict):
            d = into.setdefault(k, {})
            for kk, vv in v.items():
                if isinstance(vv, dict):
                    dd = d.setdefault(kk, {})
                    for r, n in vv.items():
                        dd[r] = dd.get(r, 0) + n
                else:
                    d[kk] = d.get(kk, 0) + vv
        else:
            into[k] = into.get(k, 0) + v
    return into


class Reports(beam.PTransform):
    """(outcomes, skipped counts) -> the run's counts (one JSON line at paths.counts) and, where asked for, the
    status file, the failures list (for --metrics-json) and the app_ids written (for the next chunk; those of
    the documents resume skipped too, from `skipped_keys`: a later chunk's twin of one must not replace it)."""

    def __init__(self, paths: Paths, skipped_keys=None):
        super().__init__()
        self.paths, self.skipped_keys = paths, skipped_keys

    def expand(self, pcolls):
        outcomes, skipped = pcolls
        counts = ((outcomes, skipped) | 'CountInputs' >> beam.Flatten()
                  | 'Count' >> beam.CombineGlobally(RunCounts()))
        p = self.paths
        if p.counts:
            _ = counts | 'WriteCounts' >> beam.ParDo(_WriteCountsFn(p.counts))
        if p.status:
            _write_jsonl(outcomes | 'StatusLines' >> beam.Map(status_line), p.status, 'WriteStatus')
        if p.failures:
            _write_jsonl(outcomes | 'FailedOnly' >> beam.Filter(lambda o: o.status != 'success')
                         | 'FailureLines' >> beam.Map(failure_line), p.failures, 'WriteFailures')
        if p.written_ids:
            ids = (outcomes | 'WrittenOnly' >> beam.Filter(lambda o: o.status == 'success' and o.app_id is not None)
                   | 'WrittenIds' >> beam.Map(lambda o: str(o.app_id)))
            if self.skipped_keys is not None:
                ids = (ids, self.skipped_keys | 'SkippedIds' >> beam.Map(lambda k: str(k[0]))) \
                    | 'WrittenOrSkipped' >> beam.Flatten()
            _write_jsonl(ids, p.written_ids, 'WriteWrittenIds')
        return counts


# ============================================================================================= lines

def _jsonable(v):
    if hasattr(v, 'isoformat'):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode('utf-8', 'replace')
    return str(v)


def dumps(obj):
    return json.dumps(obj, default=_jsonable, ensure_ascii=False, separators=(',', ':'))


def row_lines(mapped):
    """MappedDoc -> JSONL lines of the `map` command: {"file", "app_id", "table", "row"}."""
    for table, rows in mapped.rows.items():
        for row in rows:
            yield dumps({'file': mapped.source, 'app_id': mapped.app_id, 'table': table, 'row': row})


def status_line(o: Outcome):
    return dumps({'file': o.source, 'app_id': o.app_id, 'status': 'ok' if o.status == 'success' else 'failed',
                  'stage': o.stage, 'error': o.reason, 'rows': o.rows, 'warnings': list(o.warnings or ()),
                  'changed': bool(o.changed)})


def dead_letter_line(d: DeadLetter):
    return dumps({k: v for k, v in d._asdict().items() if k != 'content_hash'})


def failure_line(o: Outcome):
    """A failed outcome for the operator's metrics file: ids, stage, reason; never the payload."""
    return dumps({'source': o.source, 'app_id': o.app_id, 'stage': o.stage, 'reason': o.reason})


class _WriteCountsFn(beam.DoFn):
    """The run's one counts element as one JSON line at `path` (a FileSystems path the launcher reads): written
    under a temporary name and renamed, so a retried bundle replaces it whole. One step where WriteToText takes
    eight transforms and four stages for this single line (each stage costs every run some 10 to 40 ms)."""

    def __init__(self, path):
        self.path = path

    def process(self, counts):
        import uuid
        from apache_beam.io.filesystems import FileSystems
        tmp = f'{self.path}.{uuid.uuid4().hex}.tmp'
        with FileSystems.create(tmp) as f:
            f.write(json.dumps(counts, sort_keys=True).encode('utf-8') + b'\n')
        if FileSystems.exists(self.path):
            FileSystems.delete([self.path])
        FileSystems.rename([tmp], [self.path])


def _write_jsonl(pcoll, path, label):
    return pcoll | label >> beam.io.WriteToText(path, num_shards=1, shard_name_template='')


# ============================================================================================= the graph

def build(p, cfg, contract, source, sink=None, paths: Paths = Paths(), session_id=None,
          written_before=frozenset(), session_is_new=False) -> Outputs:
    """The graph of one run (one chunk) on pipeline `p`: `cfg` a RunConfig, `contract` the loaded contract,
    `source` a source of transforms/io, `sink` the sink plan (transforms/sql/plan.py) for `run` (None for map)."""
    errors = CollectingErrorHandler()
    with errors:
        docs, skipped, skipped_keys = p | 'ReadDocuments' >> ReadDocuments(source, cfg.progress_seconds)
        # One document per app_id: a table source whose app_id column is its key cannot hold two.
        dedupe = not getattr(source, 'unique_ids', False)
        mapped = docs | 'PrepareDocuments' >> PrepareDocuments(
            contract, cfg.limits, cfg.parse_mode, errors, dedupe_source=source, dedupe=dedupe,
            written_before=written_before, skipped_keys=skipped_keys)
        if sink is not None:
            # ledger rows of a session this launch made are this run's own; a reused --session-id says nothing
            written = mapped | 'WriteRows' >> WriteRows(cfg, sink, source, errors,
                                                        session_id if session_is_new else None)
        else:
            written = mapped | 'EmitRows' >> EmitRows(paths.rows)
    dead = errors.output() | 'DeadLetters' >> DeadLetters(cfg, sink, session_id, paths.dead_letters)
    outcomes = (written, dead) | 'RecordOutcomes' >> RecordOutcomes(cfg, sink, session_id)
    if cfg.progress_seconds:
        outcomes = outcomes | 'ProgressFinished' >> beam.ParDo(ProgressFn('finished'))
    counts = (outcomes, skipped) | 'Reports' >> Reports(paths, skipped_keys)
    return Outputs(docs=docs, mapped=mapped, dead_letters=dead, outcomes=outcomes, counts=counts)


def build_pipeline(p, contract, source, *, target=None, sink=None, parse_mode='partial', limits=None,
                   batch_size=200, rows_out=None, status_out=None, dead_letter_out=None, session_id=None,
                   progress_s=0.0, sink_shards=1) -> Outputs:
    """The graph with its settings given one by one (tests and benchmarks that build a pipeline by hand)."""
    from transforms.validate import Limits
    cfg = _AdHocConfig(target=target, limits=limits or Limits(), parse_mode=parse_mode, batch_size=batch_size,
                       sink_shards=sink_shards, progress_seconds=progress_s)
    return build(p, cfg, contract, source, sink, Paths(status=status_out, dead_letters=dead_letter_out,
                                                        rows=rows_out), session_id)


class _AdHocConfig(NamedTuple):
    target: Optional[str]
    limits: Any
    parse_mode: str
    batch_size: int
    sink_shards: int
    progress_seconds: float
