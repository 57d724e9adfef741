"""Edges of the fast paths (a review's tests, written to break them): the partial parse's head tree and the check
of the rest of the document inside its re-opened ancestors (namespace scope, a self-closing stop element, the stop
path at the root, errors lxml lets pass, libxml2's 10 MB node limit), the validate scans that skip bytes, and the
sink's per-key-set column plans. The promise each test checks: partial and full parse modes give the same outcome
for every document (rows, or the same failure stage and reason), the scans find what the plain searches find, and
the sink maps every value to its own column."""
import collections
import datetime
import json
import pickle

import apache_beam as beam
import pytest
from lxml import etree

from contracts import compile_contract, load_contract
from pipeline.config import resolve_sample

from test_partial_equals_full import APP_END, DOCS, SPEC, _split, outcome, same, self_closing_application
from transforms.errors import StageError
from transforms.parse import ParseSpec, parse_document
from transforms.stage import run_stage
from transforms.records import Doc
from transforms.validate import Limits, _long_stretches, _may_hold_pi, _too_many_attributes, validate_document


def _ok_doc():
    return next(x for _, x in DOCS if APP_END in x and '</CustData>' in x and same(x)[0] == 'ok')


def _before_last(x, closing, piece):
    i = x.rindex(closing)
    return x[:i] + piece + x[i:]


# ---------------------------------------------------------------------------------------------------------------
# parse: the head tree and the check of the rest inside its re-opened ancestors


def test_prefix_declared_on_custdata_is_not_in_scope_after_custdata_closes():
    """xmlns:b is declared on <CustData> (the stop element's parent): it is in scope up to </CustData> only. A
    <b:Bureau/> after </CustData> (inside <Request>) uses an undefined prefix: a whole tree parse refuses it."""
    x = _ok_doc().replace('<CustData', '<CustData xmlns:b="urn:bureau"', 1)
    x = _before_last(x, '</Request>', '<b:Bureau/>')
    status, stage, reason = same(x)
    assert (status, stage) == ('failed', 'parse'), reason


def test_prefix_declared_on_request_is_not_in_scope_after_request_closes():
    x = _ok_doc().replace('<Request', '<Request xmlns:b="urn:bureau"', 1)
    x = _before_last(x, '</Provenir>', '<b:Bureau/>')
    status, stage, reason = same(x)
    assert (status, stage) == ('failed', 'parse'), reason


def test_prefix_declared_on_custdata_used_inside_custdata_after_the_application_is_accepted():
    x = _ok_doc().replace('<CustData', '<CustData xmlns:b="urn:bureau"', 1)
    x = _before_last(x, '</CustData>', '<b:Bureau b:s="1"/>')
    assert same(x)[0] == 'ok'


@pytest.mark.parametrize('piece', [
    ' ', '\n\t ', 'text right after', '&amp;&lt;&#65;&#x42;', '<![CDATA[ </application> <b:x> ]]>',
    '<!-- c --> <!-- </application> -->', '<Bureau xml:lang="en" xml:space="preserve"/>',
    '<Bureau xmlns=""><S/></Bureau>', '<Bureau xmlns="urn:b"><S xmlns=""/></Bureau>',
    '<x:B xmlns:x="urn:x" x:a="1"/>', '<B xml:lang="not a language"/>', '<B xml:space="bogus"/>',
])
def test_bytes_right_after_the_stop_element_give_the_same_outcome(piece):
    head, tail = _split(_ok_doc())
    a = same(head + piece + tail)
    b = same(_before_last(head + tail, '</Request>', piece))
    assert a[0] == b[0] == 'ok', (a[:3], b[:3])


@pytest.mark.parametrize('piece', ['&nbsp;', '&#0;', ']]>', '<', '&', '</CustData>', '<a:b/>', '<B xmlns:p=""/>',
                                   '<B a="1" a="2"/>', '<B xmlns:x="u" x:a="1" x:a="2"/>'])
def test_bad_bytes_right_after_the_stop_element_are_refused_alike(piece):
    head, tail = _split(_ok_doc())
    status, stage, reason = same(head + piece + tail)
    assert (status, stage) == ('failed', 'parse'), reason


def test_stop_element_is_the_roots_direct_child():
    """A contract whose stop point is /Provenir/Request: the tail re-opens only the root."""
    x = _ok_doc()
    spec = SPEC._replace(stop_after_path='/Provenir/Request')
    for doc in (x, x.replace('</Request>', '</Request><Tail xmlns:q="urn:q"><q:a/></Tail>', 1),
                x.replace('<Provenir', '<Provenir xmlns:q="urn:q"', 1).replace(
                    '</Request>', '</Request><q:a/>', 1)):
        outs = []
        for mode in ('partial', 'full'):
            v = validate_document(Doc('d.xml', None, doc), Limits(), 'Provenir')
            try:
                p = parse_document(v, spec._replace(mode=mode))
                outs.append(('ok', p.app_id))
            except StageError as e:
                outs.append(('failed', e.stage, e.reason))
        assert outs[0] == outs[1] and outs[0][0] == 'ok', outs


def _contract_with_a_mapping_at(path):
    raw = json.load(open(resolve_sample('credit_app')))
    raw['mappings'].append({'xml_path': path, 'xml_attribute': 'n', 'target_table': 'app_base',
                            'target_column': 'transaction_id', 'data_type': 'int', 'nullable': True,
                            'required': False})
    contract = load_contract(raw)
    return contract, compile_contract(contract)


def test_stop_element_is_the_root():
    """A contract that maps a sibling of <Request> (/Provenir/Header) compiles to stop_after_path '/Provenir' (the
    root itself: `_stop_after`'s candidates go down to the root). In partial mode (the default) every document then
    reached `_check_tail` with a parent of None; the stage's DoFn turns the AttributeError into an 'internal error'
    dead letter, while full mode writes the rows."""
    contract, compiled = _contract_with_a_mapping_at('/Provenir/Header')
    assert compiled.stop_after_path == '/Provenir'
    spec = ParseSpec.from_contract(contract, compiled)
    x = _ok_doc().replace('</Request>', '</Request><Header n="5"/>', 1)
    outs = []
    for mode in ('partial', 'full'):
        v = validate_document(Doc('d.xml', None, x), Limits(), contract.root_element)
        out, dead = run_stage('parse', lambda: parse_document(v, spec._replace(mode=mode)), v,
                              beam.metrics.Metrics.counter('review', 'parse_failed'))
        outs.append(('ok', out.app_id) if dead is None else ('dead', dead.value.stage, dead.value.reason))
    assert outs[0] == outs[1] and outs[0][0] == 'ok', outs


@pytest.mark.parametrize('depth', [3, 4, 6, 10])
def test_max_depth_below_256_counts_the_reopened_ancestors(depth):
    """Nesting in the tail is measured from the document's root (the re-opened ancestors count)."""
    x = _ok_doc()
    for extra in range(0, 5):
        doc = _before_last(x, '</CustData>', '<d>' * extra + '</d>' * extra)
        same(doc, Limits(max_depth=depth))


def test_undefined_entity_in_the_head_is_refused_in_both_modes():
    x = _ok_doc()
    i = x.index('<contact ')
    doc = x[:i] + '<note>&nbsp;</note>' + x[i:]
    status, stage, reason = same(doc)
    assert (status, stage) == ('failed', 'parse'), reason


@pytest.mark.parametrize('where', ['head', 'tail'])
@pytest.mark.parametrize('warning', ['<W xml:space="x"/>', '<W xmlns:r="relative"/>', '<W xml:lang="??"/>'])
def test_undefined_prefix_followed_by_a_warning_is_refused_in_both_modes(where, warning):
    """An undefined prefix (a namespace error, which libxml2 does not count against well-formedness) followed by
    a mere warning (an invalid xml:space value): lxml's tree parse looks at the last error only and accepts the
    document, while the no-tree checks (`_raise_logged`) refuse it."""
    x = _ok_doc()
    piece = '<b:Score/>' + warning
    if where == 'head':
        a = x.index('<application')
        doc = x[:a] + piece + x[a:]
    else:
        doc = _before_last(x, '</Request>', piece)
    status, stage, reason = same(doc)
    assert (status, stage) == ('failed', 'parse'), reason


def _self_closing():
    return self_closing_application(_ok_doc())


def test_self_closing_application_then_a_malformed_comment_holding_its_end_tag_is_refused():
    """<application .../> closes without an end tag, so the pull parser reports its end only when fed up to the
    next '</application>' match: here one inside a later comment. The rest is then checked from the middle of
    that comment, as content: a '--' inside the comment (not well-formed) passes as text."""
    y = _self_closing()
    c = y.index('</CustData>')
    status, stage, reason = same(y[:c] + '<!-- </application> -- -->' + y[c:])
    assert (status, stage) == ('failed', 'parse'), reason


def test_self_closing_application_then_an_unbalanced_rest_is_refused():
    """The same split point, and the rest is checked inside the stop element's ancestors (Provenir/Request/
    CustData) although it stands inside Provenir/Request: a stray </CustData> there passes."""
    y = _self_closing()
    c = y.index('</CustData>')
    doc = y[:c] + '</CustData><!-- </application> -->' + y[c + len('</CustData>'):]
    doc = doc.replace('</Request>', '</CustData></Request>', 1)
    status, stage, reason = same(doc)
    assert (status, stage) == ('failed', 'parse'), reason


def test_parsed_document_of_a_self_closing_application_round_trips_through_pickle():
    """ParsedDoc pickles to its head (for an engine that puts a stage boundary between parse and map). With the
    split point inside a comment the head is not well-formed and cannot be parsed again. (Also before the head/rest split.)"""
    y = _self_closing()
    c = y.index('</CustData>')
    v = validate_document(Doc('d.xml', None, y[:c] + '<!-- </application> -->' + y[c:]), Limits(), 'Provenir')
    p = parse_document(v, SPEC)
    q = pickle.loads(pickle.dumps(p))
    assert q.app_id == p.app_id and etree.tostring(q.root) == etree.tostring(p.root)


def test_a_text_over_libxml2s_10_mb_node_limit_after_the_application_gives_the_same_outcome():
    """A tree parse refuses a text node over 10 MB (libxml2's tree builder: 'huge text node'); the no-tree check of
    the rest of the document builds no text node and accepts it. Under --max-doc-mb 16 such a document passes
    validation. (Partial mode differed the same way before the head/rest split: it never built the rest either.)"""
    x = _before_last(_ok_doc(), '</Request>', '<Note>' + 'y' * 10_000_001 + '</Note>')
    a, b = outcome(x, 'partial'), outcome(x, 'full')
    assert a[:3] == b[:3], (a[:3] if a[0] != 'ok' else a[:2], b[:3])


@pytest.mark.parametrize('piece', ['<contact b:x="1"/>', '<b:contact/>'])
def test_undefined_prefix_inside_the_application_is_refused_in_both_modes(piece):
    x = _ok_doc()
    i = x.index('<contact ')
    status, stage, reason = same(x[:i] + piece + x[i:])
    assert (status, stage) == ('failed', 'parse'), reason


@pytest.mark.parametrize('encoding', ['utf-8-sig', 'latin-1', 'utf-16'])
def test_declared_encodings_and_byte_order_marks_give_the_same_outcome(encoding):
    x = _ok_doc()
    x = _before_last(x, '</Request>', '<Note n="\u00e9t\u00e9">caf\u00e9 &#233;</Note>')
    decl = {'utf-8-sig': 'UTF-8', 'latin-1': 'ISO-8859-1', 'utf-16': 'UTF-16'}[encoding]
    data = (f'<?xml version="1.0" encoding="{decl}"?>\n' + x).encode(encoding)
    assert same(data)[0] == 'ok'
    bad = _before_last(x, '</Request>', '<b:Note/>')
    status, stage, reason = same((f'<?xml version="1.0" encoding="{decl}"?>\n' + bad).encode(encoding))
    assert (status, stage) == ('failed', 'parse'), reason


# ---------------------------------------------------------------------------------------------------------------
# validate: the question-mark probe and the stride probes at their edges


def test_question_mark_probe_at_start_and_end():
    for data in (b'<?', b'x<?', b'<?x', b'?<?', b'<<??', b'??' * 100 + b'<?', b'?' * 64 + b'<?', b'?' * 65 + b'<?',
                 b'?' * 63 + b'<?'):
        n = len(data)
        for start in range(0, n + 1):
            for end in range(start, n + 1):
                assert _may_hold_pi(data, start, end) == (data.find(b'<?', start, end) >= 0), (data, start, end)


def test_stride_probe_at_exact_multiples_and_the_end_of_the_buffer():
    def oracle(data, min_len):
        out = []
        for i in range(len(data)):
            if data[i] == 0x3C:
                j = data.find(b'<', i + 1)
                if (len(data) if j < 0 else j) - i - 1 >= min_len:
                    out.append(i)
        return out
    for min_len in (1, 2, 3, 4, 5, 6, 7, 8, 11, 16):
        step = max(min_len // 2, 1)
        for total in range(0, 6 * min_len + 4):
            for lt_at in {0, step - 1, step, step + 1, 2 * step, total - 1, total - min_len, total - min_len - 1}:
                for second in {None, lt_at + min_len, lt_at + min_len + 1, lt_at + min_len - 1, total - 1}:
                    buf = bytearray(b'x' * total)
                    for p in (lt_at, second):
                        if p is not None and 0 <= p < total:
                            buf[p] = 0x3C
                    data = bytes(buf)
                    assert list(_long_stretches(data, min_len)) == oracle(data, min_len), (data, min_len)


def test_bomb_ending_at_the_end_of_the_buffer_and_at_stride_multiples():
    limit = 3
    for pad in range(0, 40):
        for n_attr in (limit, limit + 1):
            bomb = b'<e' + b' a="1"' * n_attr
            data = b'<r>' + b'x' * pad + bomb          # the tag runs to the end of the buffer (truncated)
            assert _too_many_attributes(data, limit) == (n_attr > limit), (pad, n_attr)
            data = b'<r>' + b'x' * pad + bomb + b'/></r>'
            assert _too_many_attributes(data, limit) == (n_attr > limit), (pad, n_attr)


# ---------------------------------------------------------------------------------------------------------------
# sink: the column plans


from test_sink_helpers import db  # noqa: E402,F401 (fixture: sqlite and PostgreSQL)
from transforms.records import RowGroup  # noqa: E402
from transforms.sink import RetryPolicy, Writer  # noqa: E402
from transforms.sql.meta import TableMeta  # noqa: E402


def test_rows_with_different_key_sets_and_two_metadata_objects_land_in_their_own_columns(db):
    """One Writer (one bundle): rows of one table whose key sets differ (order, spelling, which keys), a second
    TableMeta object for the same table (columns in another order), and a value check that only one key set
    reaches: every value in its own column, every check applied."""
    metas = db.create()
    meta = metas['app_contact_base']
    other = TableMeta(meta.name, meta.schema, list(reversed(meta.columns)), meta.primary_key, meta.foreign_keys,
                      meta.unique)
    w = Writer(db.target.connect, db.dialect, retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.1),
               scrub=db.target.scrub)
    assert w.write(metas['app_base'], [RowGroup(i, f'd{i}', [{'app_id': i, 'product_line_enum': 600,
                                                                  'receive_date': datetime.datetime(2020, 1, 1)}])
                                       for i in (1, 2, 3, 4)]).failed == {}
    g1 = RowGroup(1, 'd1', [{'con_id': 11, 'app_id': 1, 'first_name': 'ANN', 'flag': True},
                            {'first_name': 'BOB', 'con_id': 12, 'app_id': 1},
                            {'CON_ID': 13, 'App_Id': 1, 'First_Name': 'CY', 'birth_date': datetime.date(1970, 1, 2)}])
    g2 = RowGroup(2, 'd2', [{'app_id': 2, 'con_id': 21, 'first_name': 'DAN'},
                            {'flag': False, 'con_id': 22, 'app_id': 2, 'first_name': 'EVE'}])
    r = w.write(meta, [g1, g2])
    assert r.failed == {}, r.failed
    g3 = RowGroup(3, 'd3', [{'app_id': 3, 'con_id': 31, 'first_name': 'FAY'},
                            {'birth_date': datetime.date(1980, 5, 6), 'first_name': 'GUS', 'app_id': 3, 'con_id': 32}])
    g4 = RowGroup(4, 'd4', [{'first_name': 'BOB', 'con_id': 41, 'app_id': 4},
                            {'first_name': 'X' * 11, 'con_id': 42, 'app_id': 4}])     # over varchar(10)
    r = w.write(other, [g3, g4])
    assert set(r.failed) == {4} and 'first_name' in r.failed[4], r.failed
    w.close()
    got = db.rows(f"SELECT con_id, app_id, first_name, flag, birth_date FROM {db.q('app_contact_base')} "
                  f"ORDER BY con_id")
    norm = [(c, a, f, int(fl), str(b) if b is not None else None) for c, a, f, fl, b in got]
    assert norm == [(11, 1, 'ANN', 1, None), (12, 1, 'BOB', 0, None), (13, 1, 'CY', 0, '1970-01-02'),
                    (21, 2, 'DAN', 0, None), (22, 2, 'EVE', 0, None),
                    (31, 3, 'FAY', 0, None), (32, 3, 'GUS', 0, '1980-05-06')], norm


# ---------------------------------------------------------------------------------------------------------------
# map: columns without steps (`Column.plain`) take `plain_value`, and application-level ones are inlined in one_row

_ODD_VALUES = ['', ' ', '  \t', 'x', ' padded ', 'NULL', 'none', '0', '00012', ' 12 ', '-3', '1e3', '12,5', '12.50',
               '3.14159265358979', '9' * 40, 'abc' * 200, '2024-02-30', '2024-02-29', '2024-02-29 13:45:00',
               '07/04/2023', 'Y', 'n', 'T', '\u00e9t\u00e9', '\u00b2', '\uff15', '&amp;', '1 000']


def _mutated(x, rng):
    """A generated document with about a third of its attribute values replaced by odd ones, and some attribute
    names in upper case (case-insensitive look-up)."""
    root = etree.fromstring(x.encode('utf-8'))
    for el in root.iter():
        for k in list(el.attrib):
            r = rng.random()
            if r < 0.3:
                el.set(k, rng.choice(_ODD_VALUES).replace('&amp;', '&'))
            elif r < 0.35 and k.lower() not in ('id', 'con_id', 'app_id'):
                v = el.attrib.pop(k)
                el.set(k.upper(), v)
    return etree.tostring(root, encoding='unicode')


def test_plain_columns_map_exactly_as_the_general_path():
    """Every value, status-driven row decision, warning and failure equals what the general path (extract, chain,
    convert) gives with the plain-column path switched off, on 60 generated documents (some broken) and six
    mutations of each one that maps."""
    import random
    from transforms.map import map_document
    rng = random.Random(1602)
    contract = load_contract(resolve_sample('credit_app'))
    fast, slow = compile_contract(contract), compile_contract(contract)
    plain = [c for t in slow._tables for c in t.cols if c.plain]
    assert len(plain) > 20
    for c in plain:
        c.plain = False
    assert sum(c.plain for t in fast._tables for c in t.cols) == len(plain)     # two compilations, not one
    whole = [x for _, x in DOCS if same(x)[0] == 'ok']
    docs = [x for _, x in DOCS] + [_mutated(x, rng) for _ in range(6) for x in whole]

    def mapped(x, compiled):
        try:
            v = validate_document(Doc('d.xml', None, x), Limits(), contract.root_element)
            m = map_document(parse_document(v, SPEC), compiled)
        except StageError as e:
            return ('failed', e.stage, e.reason)
        return ('ok', m.app_id, m.rows, m.warnings)

    outcomes = collections.Counter()
    for x in docs:
        a, b = mapped(x, fast), mapped(x, slow)
        assert a == b
        outcomes[a[0]] += 1
    assert outcomes['ok'] > 200 and outcomes['failed'] > 10, outcomes
