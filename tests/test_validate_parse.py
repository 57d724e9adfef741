"""Validate and parse stages: pure cores without Beam, then the DoFns with TestPipeline + assert_that."""
import codecs

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.errors import StageError
from transforms.parse import ParsedDoc, ParseFn, ParseSpec, parse_document
from transforms.records import DEAD_LETTER_TAG, Doc
from transforms.text import decode_payload
from transforms.validate import Limits, ValidateFn, validate_document

SPEC = ParseSpec(root_element='Provenir', application_path='/Provenir/Request/CustData/application',
                 app_id_source=('/Provenir/Request', 'ID'),
                 stop_after_path='/Provenir/Request/CustData/application', mode='partial')


def doc_xml(app_id='123', app='application', tail=''):
    return (f'<Provenir><Request ID="{app_id}"><CustData><{app} a="1"><contact con_id="9"/></{app}>'
            f'</CustData>{tail}</Request></Provenir>')


def validated(xml, **kw):
    return validate_document(Doc('f.xml', None, xml), **kw)


def stage_error(fn, *a, **kw):
    with pytest.raises(StageError) as e:
        fn(*a, **kw)
    return e.value


# ------------------------------------------------------------------------------------------------ validate

def test_validate_returns_clean_utf8_bytes_without_bom_or_declaration():
    raw = codecs.BOM_UTF8 + b'<?xml version="1.0" encoding="utf-8"?>\n' + doc_xml().encode()
    out = validated(raw, root_element='Provenir')
    assert out.xml == doc_xml().encode()
    assert out.source == 'f.xml'


@pytest.mark.parametrize('payload, reason', [
    (None, 'xml is NULL'),
    ('', 'document is empty'),
    ('   \n ', 'document is empty'),
    ('hello', 'not XML: text does not start with "<"'),
    ('<Provenir><Request ID="1">', 'document is truncated'),
    ('<Journals><Journal/></Journals>', 'wrong root element <Journals>, expected <Provenir>'),
    ('<!DOCTYPE x [<!ENTITY a "b">]><Provenir/>', 'DOCTYPE not allowed'),
    ('<Provenir>\x00\x01</Provenir>', 'NUL characters'),
])
def test_validate_rejects_with_a_specific_reason(payload, reason):
    e = stage_error(validated, payload, root_element='Provenir')
    assert e.stage == 'validation'
    assert reason in e.reason


def test_validate_size_limit_is_an_option():
    big = doc_xml(tail='<x>' + 'a' * 5000 + '</x>')
    e = stage_error(validated, big, limits=Limits(max_doc_bytes=1000), root_element='Provenir')
    assert 'over the limit' in e.reason and '--max-doc-mb' in e.reason
    assert validated(big, limits=Limits(max_doc_bytes=10000), root_element='Provenir').xml


def test_decode_utf16_bom_and_latin1_declaration():
    s = doc_xml().replace('a="1"', 'a="Müller"')
    assert decode_payload(codecs.BOM_UTF16_LE + s.encode('utf-16-le')) == s
    latin = ('<?xml version="1.0" encoding="ISO-8859-1"?>' + s).encode('latin-1')
    assert 'Müller' in decode_payload(latin)
    assert decode_payload(s.encode('utf-8')) == s
    # 8-bit text without a declaration is not UTF-8: refused with the offset, never re-decoded as cp1252
    with pytest.raises(StageError, match='not valid UTF-8: invalid byte sequence at byte offset 55'):
        decode_payload(s.encode('cp1252'))


# ------------------------------------------------------------------------------------------------ parse

def parse(xml, spec=SPEC, app_id=None):
    return parse_document(Doc('f.xml', app_id, xml.encode() if isinstance(xml, str) else xml), spec)


@pytest.mark.parametrize('mode', ['partial', 'full'])
def test_parse_reads_app_id_and_keeps_the_application(mode):
    p = parse(doc_xml(tail='<Bureau><r/></Bureau>'), SPEC._replace(mode=mode))
    assert p.app_id == 123
    assert p.root.find('Request/CustData/application/contact').get('con_id') == '9'


def test_a_malformed_tail_is_refused_in_both_modes_with_the_same_reason():
    """The contract reads nothing after the application element, but a document that is not well-formed there is
    refused all the same (the existing system did; partial parsing used to accept it)."""
    xml = doc_xml(tail='<Bureau>' + '<r/>' * 20000 + '<broken></Bureau>')
    partial = stage_error(parse, xml, SPEC._replace(mode='partial'))
    full = stage_error(parse, xml, SPEC._replace(mode='full'))
    assert partial.stage == full.stage == 'parse' and 'not well-formed' in partial.reason
    assert partial.reason == full.reason


def test_partial_parse_builds_a_tree_of_the_head_only():
    xml = doc_xml(tail='<Bureau>' + '<r/>' * 20000 + '</Bureau>')
    p = parse(xml, SPEC._replace(mode='partial'))
    assert p.root.find('Request/CustData/application') is not None
    assert p.root.find('Request/Bureau') is None          # after the stop element: checked, never a tree
    assert len(parse(xml, SPEC._replace(mode='full')).root.find('Request/Bureau')) == 20000


@pytest.mark.parametrize('xml, stage, reason', [
    (doc_xml(app_id=''), 'validation', '/Provenir/Request/@ID is missing'),
    (doc_xml(app_id='abc'), 'validation', 'is not an integer'),
    (doc_xml(app_id='0'), 'validation', 'out of range'),
    (doc_xml(app_id='99999999999'), 'validation', 'out of range'),
    (doc_xml(app='IL_application'), 'validation', 'wrong product line: found <IL_application>'),
    ('<Provenir><Request ID="5"><CustData/></Request></Provenir>', 'validation', 'missing required application'),
    ('<Provenir><Request ID="5"><CustData><application></CustData></Request></Provenir>', 'parse',
     'not well-formed'),
    ('<Other/>', 'validation', 'wrong root element <Other>'),
])
def test_parse_rejects_with_stage_and_reason(xml, stage, reason):
    e = stage_error(parse, xml)
    assert e.stage == stage
    assert reason in e.reason


def test_parse_checks_the_source_app_id_against_the_document():
    assert parse(doc_xml(), app_id=123).app_id == 123
    e = stage_error(parse, doc_xml(), app_id=124)
    assert 'differs' in e.reason


def test_parser_resolves_no_entities_and_reads_no_files():
    # validate refuses DTDs; the parser itself is hardened too (defence in depth).
    xml = ('<!DOCTYPE Provenir [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           '<Provenir><Request ID="7"><CustData><application a="&x;"/></CustData></Request></Provenir>')
    try:
        p = parse(xml, SPEC._replace(mode='full'))
    except StageError:
        return
    assert 'root:' not in (p.root.find('Request/CustData/application').get('a') or '')


def test_deep_nesting_is_refused_by_the_parser():
    xml = '<Provenir><Request ID="1"><CustData><application/>' + '<a>' * 5000 + '</a>' * 5000 + \
          '</CustData></Request></Provenir>'
    e = stage_error(parse, xml, SPEC._replace(mode='full'))
    assert e.stage == 'parse'


def test_parsed_doc_pickles_as_its_xml():
    import pickle
    p = parse(doc_xml())
    q = pickle.loads(pickle.dumps(p))
    assert isinstance(q, ParsedDoc) and q.app_id == 123 and q.source == 'f.xml'
    assert q.root.find('Request/CustData/application').get('a') == '1'


# ------------------------------------------------------------------------------------------------ DoFns

def test_validate_and_parse_dofns_route_failures_to_the_dead_letter_output():
    docs = [Doc('good.xml', None, doc_xml().encode()), Doc('empty.xml', None, b''),
            Doc('bad.xml', None, b'<Provenir><Request ID="x"><CustData><application/></CustData></Request></Provenir>'),
            Doc('null.xml', None, None)]
    with BeamTestPipeline() as p:
        v = (p | beam.Create(docs)
             | 'V' >> beam.ParDo(ValidateFn(Limits(), 'Provenir')).with_outputs(DEAD_LETTER_TAG, main='ok'))
        pr = v.ok | 'P' >> beam.ParDo(ParseFn(SPEC)).with_outputs(DEAD_LETTER_TAG, main='ok')
        assert_that(pr.ok | 'Ids' >> beam.Map(lambda d: (d.source, d.app_id)), equal_to([('good.xml', 123)]),
                    label='parsed')
        dead = (v[DEAD_LETTER_TAG], pr[DEAD_LETTER_TAG]) | beam.Flatten()
        assert_that(dead | 'Why' >> beam.Map(lambda d: (d.source, d.stage, d.payload is not None)),
                    equal_to([('empty.xml', 'validation', True), ('bad.xml', 'validation', True),
                              ('null.xml', 'validation', False)]), label='dead')


# ------------------------------------------------------------------------------------------------ time budget

class _FakeClock:
    """A monotonic clock that moves only when told: decoding is made to 'take' a known time, without sleeping."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


@pytest.mark.parametrize('mode', ['partial', 'full'])
def test_decoding_counts_against_the_documents_time_limit(monkeypatch, mode):
    """Issue 11, point 6: --max-parse-seconds covers decoding and parsing together. A document whose decoding
    used up the budget is refused at validation; one that used part of it is parsed with only what is left."""
    import transforms.validate as validate_mod
    clock = _FakeClock()
    real = validate_mod.to_utf8

    def slow_to_utf8(xml):           # decoding 'takes' 5 s of the document's budget
        clock.now += 5.0
        return real(xml)
    monkeypatch.setattr(validate_mod, 'time', clock)
    monkeypatch.setattr(validate_mod, 'to_utf8', slow_to_utf8)
    payload = codecs.BOM_UTF16_LE + doc_xml(tail='<x>' + 'a' * (3 * 16 * 1024) + '</x>').encode('utf-16-le')
    e = stage_error(validated, payload, limits=Limits(max_parse_seconds=4.0), root_element='Provenir')
    assert e.stage == 'validation' and 'decoding and checking took longer than 4 s (--max-parse-seconds)' in e.reason
    v = validated(payload, limits=Limits(max_parse_seconds=20.0), root_element='Provenir')
    assert v.time_left == pytest.approx(15.0)
    # the parse gets what is left of the budget, not a fresh --max-parse-seconds
    spec = SPEC._replace(mode=mode, max_seconds=20.0, stop_after_path='/Provenir/NotThere')
    assert parse_document(v, spec).app_id == 123
    e = stage_error(parse_document, v._replace(time_left=1e-9), spec)
    assert e.stage == 'parse' and '--max-parse-seconds' in e.reason
