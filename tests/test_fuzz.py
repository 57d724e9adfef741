"""Fuzzing validate → parse → map with mutated real documents.

Property: whatever the bytes, the pure cores end every input as a MappedDoc or a StageError, never any other
exception; and the DoFns never raise and never report an internal error. Seeds come from the project's generator;
mutations are truncation, byte flips, inserted markup (DOCTYPE, entities, `&`, processing instructions, CDATA),
deep nesting, duplicated attributes, random unicode, and re-encoding.
"""
import codecs
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apache_beam.pvalue import TaggedOutput

from contracts import compile_contract, load_contract
from pipeline.config import resolve_sample as resolve_contract_path
from contracts.samples.generate import generate_documents
from transforms.errors import StageError
from transforms.map import MapFn, map_document
from transforms.parse import _LIBXML_LIMITS, ParsedDoc, ParseFn, ParseSpec, parse_document
from transforms.records import DEAD_LETTER_TAG, DeadLetter, Doc, MappedDoc
from transforms.validate import Limits, ValidateFn, validate_document

CONTRACT = load_contract(resolve_contract_path('credit_app'))
COMPILED = compile_contract(CONTRACT)
SPECS = {mode: ParseSpec.from_contract(CONTRACT, COMPILED, mode=mode) for mode in ('partial', 'full')}


def _seeds():
    docs = sorted((xml for _, xml in generate_documents(24, seed=21, broken_fraction=0.0)), key=len)
    return [x.encode('utf-8') for x in docs[:4]]      # the smallest few keep each example fast


SEEDS = _seeds()

INSERTS = [b'<!DOCTYPE Provenir [<!ENTITY a "b">]>', b'<!DOCTYPE', b'<!ENTITY x SYSTEM "file:///etc/passwd">',
           b'&', b'&a;', b'&#0;', b'&#x110000;', b'&lt;', b'<?pi data?>', b'<?xml version="1.0"?>', b'<![CDATA[',
           b']]>', b'<!--', b'-->', b'<', b'>', b'"', b"'", b'\x00', b'\xff\xfe', b'\xef\xbb\xbf', b'</Provenir>',
           b'<Provenir>', b'<application>', b'</application>', b' ID="7" ID="8"', b' xmlns:a="x" a:b="1" a:b="2"']


@st.composite
def mutation(draw, n):
    kind = draw(st.sampled_from(['truncate', 'flip', 'insert', 'nest', 'dup_attr', 'unicode', 'delete']))
    pos = draw(st.integers(0, max(n - 1, 0)))
    if kind == 'truncate':
        return ('truncate', pos)
    if kind == 'flip':
        return ('flip', pos, draw(st.integers(0, 255)))
    if kind == 'insert':
        return ('insert', pos, draw(st.sampled_from(INSERTS)))
    if kind == 'nest':
        return ('nest', pos, draw(st.integers(1, 3000)))
    if kind == 'dup_attr':
        return ('dup_attr', draw(st.sampled_from([b'<Request', b'<application', b'<contact'])))
    if kind == 'unicode':
        return ('insert', pos, draw(st.text(min_size=1, max_size=20)).encode('utf-8', 'surrogatepass'))
    return ('delete', pos, draw(st.integers(1, 200)))


def apply(data, m):
    kind = m[0]
    if kind == 'truncate':
        return data[:m[1]]
    if kind == 'flip':
        i = min(m[1], len(data) - 1)
        return data if i < 0 else data[:i] + bytes([m[2]]) + data[i + 1:]
    if kind == 'insert':
        return data[:m[1]] + m[2] + data[m[1]:]
    if kind == 'nest':
        return data[:m[1]] + b'<a>' * m[2] + b'</a>' * m[2] + data[m[1]:]
    if kind == 'dup_attr':
        i = data.find(m[1])
        if i < 0:
            return data
        j = i + len(m[1])
        return data[:j] + b' dup="1" dup="2"' + data[j:]
    if kind == 'delete':
        return data[:m[1]] + data[m[1] + m[2]:]
    raise AssertionError(kind)


@st.composite
def hostile_doc(draw):
    data = draw(st.sampled_from(SEEDS))
    for m in draw(st.lists(mutation(len(data)), min_size=1, max_size=3)):
        data = apply(data, m)
    enc = draw(st.sampled_from(['bytes', 'bytes', 'bytes', 'str', 'utf-16']))
    if enc == 'str':
        payload = data.decode('utf-8', 'replace')
    elif enc == 'utf-16':
        payload = codecs.BOM_UTF16_LE + data.decode('utf-8', 'replace').encode('utf-16-le', 'surrogatepass')
    else:
        payload = data
    # Mostly a file source (no app_id from the source); sometimes a table source's good or bad app_id.
    app_id = None if draw(st.integers(0, 9)) < 8 else draw(st.sampled_from([0, -1, 'abc', 2 ** 40, 12.5, None]))
    return Doc(source='fuzz.xml', app_id=app_id, xml=payload)


PARSE_REASON = re.compile(r'not well-formed XML: ([A-Z][A-Z0-9_]+|libxml2 error \d+|no root element)'
                          r'( at line \d+, column \d+)?|document nests deeper than \d+ levels \(--max-depth\)')
PARSE_LIMIT_REASONS = {reason for _, reason in _LIBXML_LIMITS}
LIMITS = st.sampled_from([Limits(), Limits(), Limits(max_elements=5000, max_attributes=200, max_depth=40)])


def run_cores(doc, limits, mode):
    """validate → parse → map. Returns the MappedDoc, or the StageError that stopped it."""
    try:
        v = validate_document(doc, limits, CONTRACT.root_element)
        p = parse_document(v, SPECS[mode]._replace(max_depth=limits.max_depth))
        return map_document(p, COMPILED)
    except StageError as e:
        return e


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(doc=hostile_doc(), limits=LIMITS, mode=st.sampled_from(['partial', 'full']))
def test_pure_cores_end_in_a_mapped_doc_or_a_stage_error(doc, limits, mode):
    out = run_cores(doc, limits, mode)      # any other exception fails the property
    assert isinstance(out, (MappedDoc, StageError))
    if isinstance(out, StageError):
        assert out.stage in ('validation', 'parse', 'mapping') and out.reason
        assert 'root:x:0:0' not in out.reason
        if out.stage == 'parse':     # libxml2's words (which may quote value fragments) never reach the reason
            assert PARSE_REASON.fullmatch(out.reason) or out.reason in PARSE_LIMIT_REASONS, out.reason
    else:
        assert isinstance(out.app_id, int) and 1 <= out.app_id <= 2 ** 31 - 1 and out.rows


def _run_fns(doc, fns):
    """Push one Doc through the DoFns as a runner would; collect (main outputs, dead letters)."""
    validate, parse, mapper = fns
    dead, mapped = [], []
    for v in validate.process(doc):
        if isinstance(v, TaggedOutput):
            dead.append(v)
            continue
        for p in parse.process(v):
            if isinstance(p, TaggedOutput):
                dead.append(p)
                continue
            assert isinstance(p, ParsedDoc)
            for m in mapper.process(p):
                (dead if isinstance(m, TaggedOutput) else mapped).append(m)
    return mapped, dead


@pytest.fixture(scope='module')
def fns():
    mapper = MapFn(CONTRACT.raw)
    mapper.setup()
    return ValidateFn(Limits(), CONTRACT.root_element), ParseFn(SPECS['partial']), mapper


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large,
                                                                   HealthCheck.function_scoped_fixture])
@given(doc=hostile_doc())
def test_dofns_never_raise_and_account_for_every_document(fns, doc):
    mapped, dead = _run_fns(doc, fns)
    assert len(mapped) + len(dead) == 1                   # exactly one outcome per document
    for d in dead:
        assert d.tag == DEAD_LETTER_TAG and isinstance(d.value, DeadLetter)
        assert not d.value.reason.startswith('internal error'), d.value.reason
        assert d.value.app_id is None or (type(d.value.app_id) is int and 1 <= d.value.app_id <= 2 ** 31 - 1)
    for m in mapped:
        assert isinstance(m, MappedDoc)


def test_the_seeds_themselves_map():
    for data in SEEDS:
        assert isinstance(run_cores(Doc('seed.xml', None, data), Limits(), 'partial'), MappedDoc)
