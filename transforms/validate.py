"""Stage 1, validate: cheap checks on the raw text before any XML parser sees it.

Pure core: `validate_document(doc, limits, root_element) -> Doc` (the returned Doc carries the document as
UTF-8 bytes without BOM or XML declaration, ready for the hardened parser). Raises `StageError('validation', ...)`.
Beam wrapper: `ValidateFn`, whose failures leave through the tagged dead-letter output.
"""
import codecs
import logging
import re
import time
from typing import NamedTuple, Optional

import apache_beam as beam

from transforms.errors import StageError
from transforms.records import DEAD_LETTER_TAG, DeadLetter, Doc
from transforms.stage import MAX_APP_ID, raise_if_stop_requested, run_stage
from transforms.text import prolog_end, to_utf8

log = logging.getLogger(__name__)
STAGE = 'validation'


class Limits(NamedTuple):
    """Resource limits per document. All have safe defaults and are pipeline options. Each is checked cheaply
    (C-speed scans of the text, or between 16 KB parser chunks), before or while the parser builds a tree."""
    max_doc_bytes: int = 16 * 1024 * 1024    # --max-doc-mb 16
    max_depth: int = 256                      # --max-depth (libxml2's own safe limit without huge_tree)
    max_elements: int = 500_000               # --max-elements: tags in the document (bounds the tree's memory)
    max_attributes: int = 1_000               # --max-attributes: attributes on one element
    max_parse_seconds: float = 20.0           # --max-parse-seconds: wall time of one document's decoding + parse


_XML_DECL = re.compile(rb'^<\?xml(?=[\s?])[^>]*\?>', re.I)
_LEADING_JUNK_BYTES = bytes(range(0, 33))
_NAME = re.compile(rb'<([A-Za-z_\x80-\xff][\w.\-\x80-\xff]*(?::[\w.\-\x80-\xff]+)?)')
_BODY_MARKUP = re.compile(rb'<\?|<!\[CDATA\[|<!--')


def _first_pi(data, start, end=None):
    """Index of the first processing instruction in [start, end) outside comments and CDATA, or -1. Linear."""
    pos, end = start, len(data) if end is None else end
    if not _may_hold_pi(data, start, end):
        return -1              # the common case: a few memchr searches, no walk through comments and CDATA
    while True:
        m = _BODY_MARKUP.search(data, pos, end)
        if m is None:
            return -1
        tok = m.group()
        if tok == b'<?':
            return m.start()
        end_at = data.find(b']]>' if tok.startswith(b'<![') else b'-->', m.end())
        if end_at < 0:
            return -1          # unterminated: the parser reports it
        pos = end_at + 3


_FEW_QUESTION_MARKS = 64


def _may_hold_pi(data, start, end):
    """False when no '<?' lies in [start, end). A '?' is rare in documents, and searching one byte is a memchr
    (several GB/s) where searching the pair stops at every '<' (under 1 GB/s): each '?' is looked at, up to a few
    dozen, then the pair search decides."""
    i = data.find(b'?', start + 1, end)
    for _ in range(_FEW_QUESTION_MARKS):
        if i < 0:
            return False
        if data[i - 1] == 0x3C:            # '<'
            return True
        i = data.find(b'?', i + 1, end)
    return data.find(b'<?', start, end) >= 0


def _pi_name(data, at):
    m = re.match(rb'<\?([^\s?>]{0,40})', data[at:at + 45])
    return m.group(1).decode('utf-8', 'replace') if m else ''


# An element with more than N attributes has a start tag of at least 5 N characters (' a=""' each), and a tag is
# never interrupted by '<'. Only such long stretches without '<' are examined (attribute by attribute, stopping at
# N + 1). They are found without looking at every byte: every stretch of at least S bytes contains a multiple of S,
# so the stretch around each multiple of S is measured with two memchr searches (find / rfind of '<'), and the next
# probe starts after the stretch just measured (each byte is searched at most twice).
_TAG_NAME = re.compile(rb'<[A-Za-z_\x80-\xff][^\s/>]*')
_ATTRIBUTE = re.compile(rb'''\s+[^\s=<>"'/]+\s*=\s*(?:"[^"]*"|'[^']*')''')


def _long_stretches(data, min_len):
    """Start offsets of every '<' followed by at least `min_len` bytes that are not '<'."""
    n = len(data)
    step = max(min_len // 2, 1)
    q = step
    while q < n:
        a = data.rfind(b'<', 0, q + 1)
        b = data.find(b'<', q + 1)
        if b < 0:
            b = n
        if a >= 0 and b - a - 1 >= min_len:
            yield a
        q = max(q + step, (b // step + 1) * step)


_STRIDE_FROM = 1024     # shorter stretches: probes every min_len / 2 bytes would cost more than one regex scan
_STRETCH_RES = {}


def _stretch_starts(data, min_len):
    if min_len >= _STRIDE_FROM:
        return _long_stretches(data, min_len)
    pattern = _STRETCH_RES.get(min_len)
    if pattern is None:
        pattern = _STRETCH_RES[min_len] = re.compile(rb'<[^<]{%d,}' % min_len)
    return (m.start() for m in pattern.finditer(data))


# libxml2 refuses a single text or name longer than this when it builds a tree (XML_MAX_TEXT_LENGTH, no huge_tree);
# a parser that builds no tree never meets the limit. Refused here, in both parse modes alike: a run of this many
# bytes without '<' (stricter than libxml2 for a text full of entity references, never looser for a plain one).
MAX_TEXT_BYTES = 10_000_000


def _too_many_attributes(data, limit):
    for at in _stretch_starts(data, 5 * limit + 1):
        m = _TAG_NAME.match(data, at)
        if m is None:
            continue               # an end tag, a comment, CDATA: not a start tag
        pos, count = m.end(), 0
        while True:
            a = _ATTRIBUTE.match(data, pos)
            if a is None:
                break
            count += 1
            if count > limit:
                return True
            pos = a.end()
    return False


def check_source_app_id(doc: Doc) -> Doc:
    """A Doc's app_id from a table source must be a positive SQL int. Returns the Doc with an int app_id."""
    if doc.app_id is None or (type(doc.app_id) is int and 0 < doc.app_id <= MAX_APP_ID):
        return doc
    return doc._replace(app_id=parse_app_id(doc.app_id, where='source app_id'))


def validate_document(doc: Doc, limits: Limits = Limits(), root_element: Optional[str] = None) -> Doc:
    """Checks that need no parser. Returns the Doc with its payload as clean UTF-8 bytes (no byte order mark, no XML
    declaration) and the time left of the document's budget (--max-parse-seconds covers decoding and parsing).

    Every scan covers the whole document, whatever the parse mode: partial and full parsing must give the same
    outcome for every document. The scans run on the UTF-8 bytes, so a UTF-8 document is never copied to str."""
    t0 = time.monotonic()
    doc = check_source_app_id(doc)
    xml = doc.xml
    if xml is None:
        raise StageError(STAGE, 'xml is NULL')
    size = len(xml)
    if size > limits.max_doc_bytes:
        raise StageError(STAGE, f'document is {size / 1048576:.1f} MB, over the limit of '
                                f'{limits.max_doc_bytes / 1048576:.1f} MB (--max-doc-mb)')
    data = _lstrip(to_utf8(xml))
    if not data.strip():
        raise StageError(STAGE, 'document is empty')
    if b'\x00' in data:
        raise StageError(STAGE, 'document contains NUL characters (binary data, not XML)')
    if not data.startswith(b'<'):
        raise StageError(STAGE, 'not XML: text does not start with "<"')
    data = _without_declaration(data)
    start, pi = prolog_end(data)
    if start < 0:
        raise StageError(STAGE, 'not XML: no root element')
    if data.startswith(b'<!', start):
        word = data[start:start + 10].upper()
        kind = 'DOCTYPE' if word.startswith(b'<!DOCTYPE') else 'markup declaration'
        raise StageError(STAGE, f'{kind} not allowed: documents with DTDs or entity declarations are '
                                'refused (entity expansion and external entity attacks)')
    m = _NAME.match(data, start)
    if not m:
        raise StageError(STAGE, 'not XML: root element has no valid name')
    root_b = m.group(1)
    root = root_b.decode('utf-8', 'replace')
    if root_element and root.split(':')[-1] != root_element:
        raise StageError(STAGE, f'wrong root element <{root[:50]}>, expected <{root_element}>')
    last = _blank_end(data, len(data))
    end = _content_end(data, last)
    if not data.endswith(b'>', 0, end):
        raise StageError(STAGE, 'document is truncated: it does not end with ">"')
    # after the root's end tag XML allows comments and PIs: when some were skipped, the root's end tag must stand
    # before them (a comment inside an unclosed root is truncation, not a document that ends in '/>')
    if root_element and (end < last or not data.endswith(b'/>', 0, end)) and \
            _root_end_tag(root_b).search(data, max(0, end - len(root_b) - 256), end) is None:
        raise StageError(STAGE, f'document is truncated: it does not end with </{root[:50]}>')
    if pi < 0:
        pi = _first_pi(data, start)
    if pi >= 0:
        raise StageError(STAGE, f'processing instruction <?{_pi_name(data, pi)}?> not allowed (only the XML '
                                'declaration may appear)')
    # Every start tag takes at least 3 characters ('<a>'), so a text shorter than 3 * max_elements cannot exceed
    # the limit: the two counting scans are only run on texts that could.
    tags = data.count(b'<') - data.count(b'</') if len(data) > 3 * limits.max_elements else 0
    if tags > limits.max_elements:
        raise StageError(STAGE, f'document has {tags} tags, over the limit of {limits.max_elements} elements '
                                '(--max-elements)')
    if _too_many_attributes(data, limits.max_attributes):
        raise StageError(STAGE, f'an element has more than {limits.max_attributes} attributes (--max-attributes)')
    if size > MAX_TEXT_BYTES and next(_long_stretches(data, MAX_TEXT_BYTES + 1), None) is not None:
        raise StageError(STAGE, 'a single text or tag is longer than 10 MB (libxml2\'s limit for one node)')
    left = None
    if limits.max_parse_seconds and limits.max_parse_seconds > 0:
        left = limits.max_parse_seconds - (time.monotonic() - t0)
        if left <= 0:
            raise StageError(STAGE, f'decoding and checking took longer than {limits.max_parse_seconds:g} s '
                                    '(--max-parse-seconds)')
    return doc._replace(xml=data, original=None if data == xml else xml, time_left=left)


_BOM = codecs.BOM_UTF8
_TRAILING_BLANKS = b' \t\r\n'
_ROOT_END = {}


def _blank_end(data, end):
    while end and data[end - 1] in _TRAILING_BLANKS:
        end -= 1
    return end


def _content_end(data, end):
    """Where the document's last element ends (`end`: the end of the text without trailing blanks): after it, XML
    allows only blanks, comments and processing instructions (the latter are refused by their own check, with
    their own reason). Never copies the text."""
    while True:
        end = _blank_end(data, end)
        if data.endswith(b'-->', 0, end):
            start = data.rfind(b'<!--', 0, end - 3)     # a comment cannot hold '--', so this is its start
        elif data.endswith(b'?>', 0, end):
            start = data.rfind(b'<?', 0, end - 2)
        else:
            return end
        if start < 0:
            return end
        end = start


def _root_end_tag(root_b):
    """The root's end tag at the end of the text: '</name' then optional blanks then '>'."""
    r = _ROOT_END.get(root_b)
    if r is None:
        r = _ROOT_END[root_b] = re.compile(rb'</' + re.escape(root_b) + rb'[ \t\r\n]*>\Z')
    return r


def _without_declaration(data):
    m = _XML_DECL.match(data)
    return _lstrip(data[m.end():]) if m else data


def decoded(xml) -> bytes:
    """The document as `validate_document` hands it to the parser (UTF-8, no byte order mark, no XML
    declaration), without the checks; StageError when it cannot be decoded."""
    return _without_declaration(_lstrip(to_utf8(xml)))


def _lstrip(data):
    """Leading control characters, blanks and (repeated) byte order marks off."""
    while True:
        data = data.lstrip(_LEADING_JUNK_BYTES)
        if not data.startswith(_BOM):
            return data
        data = data[3:]


def parse_app_id(value, where='app_id'):
    """An app_id from a source row or an attribute: a positive integer that fits an SQL int."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise StageError(STAGE, f'{where} is missing')
    if isinstance(value, bool):
        raise StageError(STAGE, f'{where} is not an integer')
    if isinstance(value, int):
        n = value
    else:
        s = str(value).strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,19}", s):
            raise StageError(STAGE, f'{where} is not an integer')
        n = int(s)
    if n <= 0 or n > MAX_APP_ID:
        raise StageError(STAGE, f'{where} {n} is out of range (1..{MAX_APP_ID})')
    return n


class ValidateFn(beam.DoFn):
    """Doc → Doc (clean bytes) or a DeadLetter on the 'dead_letter' tag."""

    def __init__(self, limits: Limits = Limits(), root_element: Optional[str] = None):
        self.limits = limits
        self.root_element = root_element
        self.read = beam.metrics.Metrics.counter('migration', 'docs_read')
        self.failed = beam.metrics.Metrics.counter('migration', 'validation_failed')
        self.bytes_read = beam.metrics.Metrics.counter('migration', 'bytes_read')

    def process(self, doc: Doc):
        raise_if_stop_requested()          # outside run_stage: a stop is never a document's dead letter
        self.read.inc()
        if isinstance(doc, DeadLetter):       # a source that could not read a document says so this way
            self.failed.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, doc)
            return
        if doc.xml is not None:
            self.bytes_read.inc(len(doc.xml))
        out, dead = run_stage(STAGE, lambda: validate_document(doc, self.limits, self.root_element), doc,
                              self.failed)
        yield out if dead is None else dead
