"""The validate stage's whole-document scans (processing instructions, attribute bombs) find exactly what the
plain byte-by-byte searches find. The scans skip most bytes (memchr searches and probes at a stride), so each is
checked against the simple search as an oracle, on generated texts with the interesting bytes at every kind of
position (stretch boundaries, probe points, the ends of the text)."""
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.validate import _long_stretches, _may_hold_pi, _too_many_attributes


def _oracle_too_many_attributes(data, limit):
    """The scan as it was written first: a regex over every byte for a '<' and a name followed by 5 N bytes
    without '<', then the attributes counted."""
    tag_name = re.compile(rb'<[A-Za-z_\x80-\xff][^\s/>]*')
    attribute = re.compile(rb'''\s+[^\s=<>"'/]+\s*=\s*(?:"[^"]*"|'[^']*')''')
    for m in re.finditer(rb'<[A-Za-z_\x80-\xff][^<]{%d,}' % (5 * limit), data):
        pos, count = tag_name.match(data, m.start()).end(), 0
        while True:
            a = attribute.match(data, pos)
            if a is None:
                break
            count += 1
            if count > limit:
                return True
            pos = a.end()
    return False


def _oracle_stretches(data, min_len):
    return [i for i in range(len(data)) if data[i] == 0x3C
            and (data.find(b'<', i + 1) if data.find(b'<', i + 1) >= 0 else len(data)) - i - 1 >= min_len]


PIECES = st.sampled_from([b'<', b'>', b'?', b'<?', b'x', b' a="1"', b' b=">"', b'</t>', b'<t', b'<!--', b'-->',
                          b'  ', b'text', b'<t a="1" b="2" c="3"/>'])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(PIECES, st.integers(1, 40)), max_size=30), st.integers(1, 12))
def test_long_stretches_are_every_stretch_the_plain_search_finds(parts, min_len):
    data = b''.join(p * k for p, k in parts)
    assert list(_long_stretches(data, min_len)) == _oracle_stretches(data, min_len)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(PIECES, st.integers(1, 30)), max_size=30), st.integers(1, 6))
def test_attribute_count_agrees_with_the_byte_by_byte_scan(parts, limit):
    data = b'<r>' + b''.join(p * k for p, k in parts) + b'</r>'
    assert _too_many_attributes(data, limit) == _oracle_too_many_attributes(data, limit)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(PIECES, st.integers(1, 80)), max_size=20), st.integers(0, 5), st.integers(0, 5))
def test_processing_instruction_probe_agrees_with_the_pair_search(parts, cut_start, cut_end):
    data = b''.join(p * k for p, k in parts)
    start, end = min(cut_start, len(data)), max(len(data) - cut_end, 0)
    assert _may_hold_pi(data, start, end) == (data.find(b'<?', start, end) >= 0)


def test_a_bomb_at_any_offset_is_found_and_a_long_text_is_not_one():
    bomb = b'<e' + b' a="1"' * 12 + b'/>'
    for pad in range(0, 200, 7):
        data = b'<r>' + b'x' * pad + bomb + b'y' * pad + b'</r>'
        assert _too_many_attributes(data, 10), pad
        assert not _too_many_attributes(data, 12), pad
    assert not _too_many_attributes(b'<r>' + b' a="1"' * 500 + b'</r>', 10)     # text, not a tag
    many_question_marks = b'<r>' + b'why? ' * 500 + b'<?pi x?></r>'
    assert _may_hold_pi(many_question_marks, 0, len(many_question_marks))
    assert not _may_hold_pi(b'<r>' + b'why? ' * 500 + b'</r>', 0, 2503)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(PIECES, st.integers(1, 400)), max_size=12), st.sampled_from([3, 40, 1023, 1024, 1500]))
def test_both_ways_of_finding_long_stretches_agree(parts, min_len):
    """Short stretches are found by one regex scan (probes every min_len / 2 bytes would cost more), long ones by
    stride probes: each gives what the plain search gives."""
    from transforms.validate import _stretch_starts
    data = b''.join(p * k for p, k in parts)
    assert list(_stretch_starts(data, min_len)) == _oracle_stretches(data, min_len)


def test_a_text_over_10_mb_is_refused_at_validation_in_both_modes():
    from transforms.errors import StageError
    from transforms.records import Doc
    from transforms.validate import Limits, validate_document
    import pytest
    doc = Doc('d.xml', None, b'<Provenir><a>' + b'y' * 10_000_001 + b'</a></Provenir>')
    with pytest.raises(StageError) as e:
        validate_document(doc, Limits(), 'Provenir')
    assert e.value.stage == 'validation' and '10 MB' in e.value.reason
    ok = Doc('d.xml', None, b'<Provenir><a>' + b'y' * 9_999_990 + b'</a></Provenir>')
    assert validate_document(ok, Limits(), 'Provenir').xml
