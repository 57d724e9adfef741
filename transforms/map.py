"""Stage 3, map: the compiled contract turns a parsed document into rows per target table.

The contract is compiled once per worker in `DoFn.setup` (never per document). Pure core:
`map_document(parsed, compiled) -> MappedDoc`. Beam wrapper: `MapFn`.
"""
import logging
import time

import apache_beam as beam

from contracts.errors import MappingError
from transforms.errors import StageError
from transforms.records import MappedDoc
from transforms.stage import run_stage

log = logging.getLogger(__name__)
STAGE = 'mapping'


def map_document(parsed, compiled) -> MappedDoc:
    try:
        result = compiled.map(parsed.root, app_id=parsed.app_id)
    except MappingError as e:
        raise StageError(STAGE, str(e))
    rows = {t: rs for t, rs in result.rows.items() if rs}
    if not rows:
        raise StageError(STAGE, 'the contract mapped no rows from this document')
    return MappedDoc(source=parsed.source, app_id=result.app_id, rows=rows, warnings=list(result.warnings),
                     content_hash=getattr(parsed, 'content_hash', None))


class MapFn(beam.DoFn):
    """ParsedDoc → MappedDoc, or a DeadLetter on the 'dead_letter' tag.

    `contract_source` is the contract as a dict (shipped with the job, so workers need no file)."""

    def __init__(self, contract_source):
        self.contract_source = contract_source
        self.compiled = None
        self.failed = beam.metrics.Metrics.counter('migration', 'mapping_failed')
        self.warnings = beam.metrics.Metrics.counter('migration', 'quality_warnings')
        self.rows = beam.metrics.Metrics.counter('migration', 'rows_mapped')
        self.micros = beam.metrics.Metrics.counter('stage_time_us', STAGE)

    def setup(self):
        from contracts import compile_contract, load_contract
        self.compiled = compile_contract(load_contract(self.contract_source))

    def process(self, parsed):
        t0 = time.perf_counter()
        mapped, dead = run_stage(STAGE, lambda: map_document(parsed, self.compiled), parsed, self.failed,
                                 app_id=parsed.app_id)
        self.micros.inc(int((time.perf_counter() - t0) * 1e6))
        if dead is not None:
            yield dead
            return
        if mapped.warnings:
            self.warnings.inc(len(mapped.warnings))
        self.rows.inc(sum(len(r) for r in mapped.rows.values()))
        yield mapped
