"""Smoke test of bench/throughput.py: a tiny generated corpus into SQLite; the JSON has every field with sane
values. Speed is never asserted here (the machine is shared); the numbers only have to exist and be positive."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_throughput_bench_json(tmp_path):
    out = tmp_path / 'bench.json'
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'throughput.py'), '--docs', '40',
                        '--corpus', 'generated', '--target', 'sqlite', '--json', str(out), '--memory-factor', '2',
                        '--workdir', str(tmp_path / 'work')],
                       cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(out.read_text())
    for k in ('docs_per_min', 'rows_per_s', 'parse_only_docs_per_min', 'partial_parse_docs_per_min',
              'ratio_to_parse_limit', 'no_beam_docs_per_min', 'peak_rss_mb', 'docs', 'cores',
              'ratio_to_baseline', 'baseline_docs_per_min'):
        assert k in d, k
    assert d['docs'] == 40
    assert d['cores'] >= 1
    e = d['end_to_end']
    assert e['invariant_holds'] and e['read'] == e['written'] + e['dead_lettered'] == 40
    assert d['no_beam']['docs'] == 40
    assert d['parse_full']['docs'] == 40
    for k in ('docs_per_min', 'rows_per_s', 'parse_only_docs_per_min', 'partial_parse_docs_per_min',
              'no_beam_docs_per_min', 'ratio_to_parse_limit'):
        assert isinstance(d[k], (int, float)) and d[k] > 0, k
    assert 20 < d['peak_rss_mb'] < 8192
    assert d['rows'] > 0 and e['rows_in_target']['app_base'] == e['written']
    assert 'machine' in d and d['machine'].get('nproc')
    # every ratio of the performance goals, for one and two workers, plus scaling and memory
    assert d['workers_measured'] == [1, 2] and set(d['by_workers']) == {'1', '2'}
    for w in d['by_workers'].values():
        for k in ('ratio_to_parse_limit', 'ratio_to_no_beam'):
            assert isinstance(w[k], float) and w[k] > 0, k
        assert w['end_to_end']['invariant_holds']
    assert d['scaling']['workers'] == 2 and d['scaling']['end_to_end'] > 0
    m = d['memory']
    assert m['factor'] == 2 and m['docs_kn'] == 80 and m['end_to_end_kn']['read'] == 80 and m['ratio'] > 0
    for text in ('documents', 'full lxml parse', 'end to end / parse limit', 'end to end / no Beam',
                 'two workers / one', 'peak RSS at 2N / N'):
        assert text in r.stdout, text


@pytest.mark.slow
def test_throughput_bench_rounds_report_medians_with_their_ranges(tmp_path):
    out = tmp_path / 'bench.json'
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'throughput.py'), '--docs', '20',
                        '--corpus', 'generated', '--target', 'sqlite', '--json', str(out), '--memory-factor', '0',
                        '--workers', '1', '--rounds', '3', '--workdir', str(tmp_path / 'work')],
                       cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(out.read_text())
    assert d['rounds'] == 3 and r.stderr.count('== round ') == 3
    w = d['by_workers']['1']
    assert w['rounds'] == 3 and len(d['end_to_end_runs']['1']) == 3
    for k in ('docs_per_min', 'no_beam_docs_per_min', 'parse_only_docs_per_min', 'ratio_to_parse_limit',
              'ratio_to_no_beam'):
        lo, hi = w['ranges'][k]
        assert 0 < lo <= w[k] <= hi, (k, lo, w[k], hi)
    assert d['ratio_to_no_beam'] == w['ratio_to_no_beam']
    # the median round's own measurements are kept whole, and its rate is the median rate
    assert w['end_to_end']['docs_per_min'] == w['docs_per_min'] and w['end_to_end']['read'] == 20
    assert 'range over 3 rounds' in r.stdout


def test_cc_corpus_ids_are_rewritten_consistently():
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    import corpus
    doc = (b'<Provenir><Request Trans="" ID="123"><CustData><application>'
           b'<contact con_id="55" ac_role_tp_c="PR"/><contact con_id="56"/></application></CustData></Request>'
           b'</Provenir>')
    assert corpus.replicate(doc, 0) == doc
    k2 = corpus.replicate(doc, 2)
    off = 2 * corpus.OFFSET
    assert f'ID="{123 + off}"'.encode() in k2
    assert f'con_id="{55 + off}"'.encode() in k2 and f'con_id="{56 + off}"'.encode() in k2
    assert k2.replace(str(123 + off).encode(), b'123').replace(str(55 + off).encode(), b'55') \
        .replace(str(56 + off).encode(), b'56') == doc


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get('XMLSQL_TEST_PG'), reason='XMLSQL_TEST_PG not set (a PostgreSQL ODBC URL)')
def test_throughput_bench_measures_the_driver_ceiling_on_postgresql(tmp_path):
    out = tmp_path / 'bench.json'
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'throughput.py'), '--docs', '30',
                        '--corpus', 'generated', '--target', 'postgresql', '--json', str(out), '--workers', '1',
                        '--memory-factor', '0', '--skip', 'parse',
                        '--workdir', str(tmp_path / 'work')],
                       cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(out.read_text())
    c = d['by_workers']['1']['write_ceiling']
    assert c['docs'] == 30 and c['rows'] == d['rows'] and c['docs_per_min'] > 0
    assert d['ratio_to_write_ceiling'] > 0 and 'driver ceiling' in r.stdout
    nob = d['by_workers']['1']['no_beam']
    assert c['write_s_total'] > 0 and nob['cpu_split_s']['sink'] > 0
    assert d['ratio_sink_to_write_ceiling'] == round(c['write_s_total'] / nob['cpu_split_s']['sink'], 3)
    assert 'the sink alone / driver ceiling' in r.stdout


def test_a_corpus_built_for_pair_timing_migrates_whole(tmp_path):
    """bench/corpus.py builds a CC corpus into a folder and bench/ab_run.sh migrates it once (what
    `farm-bench --vs` times in pairs, docs/benchmarks.md): every document is written or dead-lettered."""
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    import corpus
    if not corpus.cc_available():
        pytest.skip(f'CC seed corpus not found at {corpus.SEED}')
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'corpus.py'), '--docs', '30', '--out',
                        str(tmp_path / 'c')], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(['bash', os.path.join(ROOT, 'bench', 'ab_run.sh'), ROOT, str(tmp_path / 'c')], cwd=ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith('SUMMARY '))
    counts = dict(kv.split('=') for kv in line.split()[1:])
    assert int(counts['read']) == 30 == int(counts['written']) + int(counts['dead_lettered'])
    assert int(counts['written']) > 0
