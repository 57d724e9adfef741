"""The sink's micro-batches (transforms/sink/write.py _ExplodeFn: a table's RowGroups gathered within a bundle per
window, GroupIntoBatches counting micro-batches): what a review wrote to break them. Windowed input keeps each
document in its own window, a batch holds --batch-size documents when the bundle has them and never more, bundles
of one lose and duplicate nothing, WriteBatchesFn still takes plain RowGroups, and Prism writes what the
DirectRunner writes with the default --batch-size (several micro-batches per batch)."""
import collections

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window

from helpers import beam_test_pipeline
from test_sink_beam import mapped
from test_sink_helpers import TABLES, db  # noqa: F401 (fixture)
from transforms.records import RowGroup
from transforms.sink import WriteBatchesFn, WriteToSql
from transforms.sql.meta import fk_tiers


def counter(result, name):
    res = result.metrics().query(MetricsFilter().with_name(name))['counters']
    return sum((c.committed or c.attempted or 0) for c in res)


# ------------------------------------------------------------------------------------- windowed input (latent)

def test_windowed_input_a_failed_document_is_never_reported_success(db):
    """WriteToSql is a public PTransform; on windowed input every failure must still meet its document in the
    outcome join. 60 documents, one per second, FixedWindows(10s); app 21 (a micro-batch emitted by process,
    carrying documents of earlier windows) and app 57 (left in the buffer: emitted by finish_bundle, in the global
    window) fail at the sink. Rule 3: both must come out 'failed', never 'success' with a row missing."""
    db.create()
    docs = [mapped(i, 5000 + i) for i in range(1, 61)]
    docs[20] = mapped(21, 5021, ip='Z' * 60)            # too long for varchar(39): fails in tier 0
    docs[56] = mapped(57, 5057, ip='Z' * 60)
    tiers = fk_tiers(db.metas, TABLES)
    p = beam_test_pipeline()
    outcomes = (p | beam.Create(docs)
                | 'Stamp' >> beam.Map(lambda d: window.TimestampedValue(d, d.app_id))
                | 'Fixed' >> beam.WindowInto(window.FixedWindows(10))
                | WriteToSql(db.url, db.metas, tiers, batch_size=200))
    status = outcomes | beam.Map(lambda o: (o.app_id, o.status))
    expected = [(i, 'failed' if i in (21, 57) else 'success') for i in range(1, 61)]
    assert_that(status | beam.WindowInto(window.GlobalWindows()), equal_to(expected))
    p.run().wait_until_finish()
    assert db.rows(f"SELECT COUNT(*) FROM {db.q('app_contact_base')} WHERE app_id IN (21, 57)") == [(0,)]


# ------------------------------------------------------------------------------------ --batch-size semantics

def _one_tier_run(db, n, batch_size, replace=True):
    db.create()
    docs = [mapped(i, 5000 + i) for i in range(1, n + 1)]
    p = beam_test_pipeline()
    outcomes = p | beam.Create(docs) | WriteToSql(db.url, db.metas, [['app_base']], batch_size=batch_size, replace=replace)
    status = outcomes | beam.Map(lambda o: (o.app_id, o.status, o.rows))
    assert_that(status, equal_to([(i, 'success', 1) for i in range(1, n + 1)]))
    result = p.run()
    result.wait_until_finish()
    assert db.count('app_base') == n
    return result


def test_a_batch_holds_batch_size_documents_when_the_bundle_has_them(db):
    """README: --batch-size is the documents per batch and transaction, per table. 99 documents in one bundle
    (FnApiRunner), --batch-size 99: one batch (3 micro-batches of 33; micro-batches of 50 gave two batches)."""
    result = _one_tier_run(db, 99, 99)
    assert counter(result, 'sink_batches') == 1


def _bundles_of_one(docs, batch_size, tables=('app_base',)):
    """_ExplodeFn driven as a runner drives it (start_bundle, process, finish_bundle) with bundles of one
    document each (a streaming runner, or a heavily split batch): the elements it hands to GroupIntoBatches, and
    the documents per batch that GroupIntoBatches(batch_size // micro) then makes of them per key."""
    from apache_beam.transforms.window import GlobalWindow
    from transforms.sink.write import _ExplodeFn, micro_batches
    micro, n = micro_batches(batch_size)
    fn = _ExplodeFn(tables, 1, micro)
    elements = []
    for d in docs:
        fn.start_bundle()
        for out in fn.process(d, window=GlobalWindow()):
            elements.append(out)
        for wv in fn.finish_bundle() or ():
            elements.append(wv.value)
        assert fn._buf == {}
    per_key = collections.defaultdict(list)
    for key, part in elements:
        per_key[key].append(part)
    batches = []
    for key, parts in per_key.items():
        for i in range(0, len(parts), n):
            batches.append(sum(len(p) for p in parts[i:i + n]))
    return elements, batches


def test_one_document_bundles_lose_and_duplicate_nothing():
    """Bundles of one: every document's RowGroup comes out exactly once (through finish_bundle), nothing left in
    the buffer between bundles."""
    docs = [mapped(i, 5000 + i) for i in range(1, 41)]
    elements, _ = _bundles_of_one(docs, 200)
    ids = [g.app_id for _, part in elements for g in part]
    assert sorted(ids) == list(range(1, 41))


def test_one_document_bundles_never_make_a_batch_over_batch_size():
    """A micro-batch never spans a bundle: with bundles of one document a batch holds fewer documents than
    --batch-size (README and docs/design.md say so), never more, and every document is in exactly one."""
    docs = [mapped(i, 5000 + i) for i in range(1, 41)]
    _, batches = _bundles_of_one(docs, 200)
    assert sum(batches) == 40 and all(0 < b <= 200 for b in batches)
    _, batches = _bundles_of_one(docs, 7)
    assert sum(batches) == 40 and all(0 < b <= 7 for b in batches)


# ----------------------------------------------------------------------------------- WriteBatchesFn contract

@pytest.mark.parametrize('db', ['sqlite'], indirect=True)
def test_write_batches_fn_takes_what_its_docstring_says(db):
    """WriteBatchesFn is exported by transforms.sink and takes plain RowGroups as well as micro-batches."""
    db.create()
    fn = WriteBatchesFn(db.url, {'app_base': db.metas['app_base']})
    fn.setup()
    fn.start_bundle()
    rows = mapped(1, 5001).rows['app_base']
    out = list(fn.process((('app_base', 0), [RowGroup(1, 'doc-1.xml', rows)])))
    fn.finish_bundle()
    fn.teardown()
    assert out and out[0][:2] == ('ok', 'app_base')
    assert db.count('app_base') == 1


# ------------------------------------------------------------------------ Prism, batches of several micro-batches

@pytest.mark.slow
def test_prism_default_batch_size_writes_the_same_as_direct_runner(tmp_path):
    """tests/test_engines.py runs every engine with --batch-size 16 (micro-batch 16, GroupIntoBatches(1)): no
    engine ever sees a batch of several micro-batches. Here --batch-size 200 (GroupIntoBatches(4) of lists) on
    Prism, compared with the DirectRunner run of the same documents."""
    import json
    import test_engines as te
    from pipeline.cli import main as cli
    from contracts.samples.generate import write_sqlite_source
    import os
    if te._missing('prism'):
        pytest.skip('go not installed')
    src = tmp_path / 'generated.db'
    write_sqlite_source(str(src), 120, seed=te.SEED)
    corpus = te.Corpus('generated', 'credit_app', os.path.join(te.REPO, 'contracts', 'samples',
                                                               'credit_app_tables.json'), f'sqlite:///{src}')
    got = {}
    for label in ('direct', 'prism'):
        target = te.Target('sqlite', tmp_path, label)
        outputs = te._outputs(tmp_path, label)
        args = te._args(corpus, target, corpus.contract, outputs) + ['--batch-size', '200']
        if label == 'direct':
            assert cli(['run'] + args) == 0
        else:
            proc = te._run_script('prism', args)
            assert proc.returncode == 0, proc.stderr[-4000:]
            assert '(prism), environment --environment_type=EXTERNAL' in proc.stderr
        s = json.load(open(outputs['--summary-json']))
        assert s['invariant_holds'] is True
        got[label] = (target.contents(corpus.spec()), s['read'], s['written'], s['dead_lettered'], s['rows'])
    assert got['direct'][1] == 120 and got['direct'][4] > 500
    assert got['prism'][1:] == got['direct'][1:]
    for t in got['direct'][0]:
        assert got['prism'][0][t] == got['direct'][0][t], t
