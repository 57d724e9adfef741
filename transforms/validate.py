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

log = logging.getLogger(__name__)
STAGE = 'validation'

# App ids go into SQL int columns.
MAX_APP_ID = 2 ** 31 - 1


class Limits(NamedTuple):
    """Resource limits per document. All have safe defaults and are pipeline options. Each is checked cheaply
    (C-speed scans of the text, or between 16 KB parser chunks), before or while the parser builds a tree."""
    max_doc_bytes: int = 16 * 1024 * 1024    # --max-doc-mb 16
    max_depth: int = 256                      # --max-depth (libxml2's own safe limit without huge_tree)
    max_elements: int = 500_000               # --max-elements: tags in the document (bounds the tree's memory)
    max_attributes: int = 1_000               # --max-attributes: attributes on one element
    max_parse_seconds: float = 20.0           # --max-parse-seconds: wall time of one document's decoding + parse


# A payload bigger than this is not copied into the dead letter (it stays at its source, named by `source`).
MAX_DEAD_LETTER_PAYLOAD = 16 * 1024 * 1024


_XML_DECL = re.compile(rb'^<\?xml(?=[\s?])[^>]*\?>', re.I)
_DECLARED_ENCODING = re.compile(rb'^<\?xml\s[^>]*encoding\s*=\s*["\']([A-Za-z0-9._-]+)["\']')
_LEADING_JUNK_BYTES = bytes(range(0, 33))
_NAME = re.compile(rb'<([A-Za-z_\x80-\xff][\w.\-\x80-\xff]*(?::[\w.\-\x80-\xff]+)?)')


# The encodings a document may be in (XML declaration or byte order mark). Everything else (punycode, idna,
# unicode_escape, utf-7, rot13, EBCDIC, ...) is refused: those are not document encodings, and some decode in
# quadratic time outside every limit. Names as codecs.lookup() spells them.
ACCEPTED_ENCODINGS = frozenset(
    ['utf-8', 'utf-16', 'utf-16-le', 'utf-16-be', 'utf-32', 'utf-32-le', 'utf-32-be', 'ascii']
    + [f'iso8859-{n}' for n in range(1, 17) if n != 12]
    + [f'cp{n}' for n in range(1250, 1259)])
ACCEPTED_ENCODINGS_TEXT = 'UTF-8, UTF-16, UTF-32, US-ASCII, ISO-8859-1..16, windows-1250..1258'

# XML's autodetection of a document without byte order mark (XML 1.0 appendix F): '<?' in UTF-16/32.
_NO_BOM_UTF = ((b'<\x00\x00\x00', 'utf-32-le'), (b'\x00\x00\x00<', 'utf-32-be'),
               (b'<\x00?\x00', 'utf-16-le'), (b'\x00<\x00?', 'utf-16-be'))


def _decode(data, encoding, label=None):
    """Strict decoding: a byte sequence that is not valid in `encoding` fails the document with its offset."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise StageError(STAGE, f'not valid {label or encoding}: invalid byte sequence at byte offset '
                                f'{e.start} (the document is refused, never re-decoded in another encoding)')


def _encoding_of(data):
    """(encoding, label, offset of the text) of a document's bytes: a byte order mark, else XML's autodetection of
    UTF-16/32, else the XML declaration's encoding, else UTF-8. Refuses encodings that are not document encodings."""
    if data.startswith(codecs.BOM_UTF8):
        return 'utf-8', 'UTF-8', 3
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return 'utf-32', 'UTF-32', 0
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return 'utf-16', 'UTF-16', 0
    for head, enc in _NO_BOM_UTF:
        if data.startswith(head):
            return enc, enc.upper(), 0
    declared = _DECLARED_ENCODING.match(data.lstrip())
    if declared:
        name = declared.group(1).decode('ascii')
        try:
            enc = codecs.lookup(name).name
        except LookupError:
            raise StageError(STAGE, f'unknown encoding {name[:40]!r} in the XML declaration') from None
        if enc not in ACCEPTED_ENCODINGS:
            raise StageError(STAGE, f'encoding {name[:40]!r} in the XML declaration is not accepted (accepted: '
                                    f'{ACCEPTED_ENCODINGS_TEXT})')
        # A 16/32-bit declaration on 8-bit bytes ('<?xml' readable as ASCII, no BOM) does not describe the
        # document: it is read as UTF-8, XML's default, strictly.
        if enc not in ('utf-8', 'ascii') and not enc.startswith(('utf-16', 'utf-32')):
            return enc, name[:40], 0
    return 'utf-8', 'UTF-8', 0


def _as_bytes(xml):
    if xml is None:
        raise StageError(STAGE, 'xml is NULL')
    if isinstance(xml, memoryview):
        xml = bytes(xml)
    if not isinstance(xml, (bytes, bytearray)):
        raise StageError(STAGE, f'xml has unsupported type {type(xml).__name__}')
    return bytes(xml)


def decode_payload(xml):
    """Bytes or str -> str, decoded strictly in the document's encoding (see `_encoding_of`, ACCEPTED_ENCODINGS).
    A document is never re-decoded in a guessed encoding: one bad byte in a UTF-8 document would turn every
    accented character of it into mojibake."""
    if isinstance(xml, str):
        return xml
    data = _as_bytes(xml)
    enc, label, skip = _encoding_of(data)
    return _decode(data[skip:] if skip else data, enc, label)


def to_utf8(xml):
    """The document as valid UTF-8 bytes, without a byte order mark. UTF-8 input is checked, not copied through
    str and back; other encodings are decoded strictly and encoded once."""
    if isinstance(xml, str):
        try:
            return xml.encode('utf-8')
        except UnicodeEncodeError as e:       # a str from a driver may hold a lone UTF-16 surrogate
            raise StageError(STAGE, f'the text holds an unpaired UTF-16 surrogate at character {e.start} (not '
                                    'representable in any encoding)') from None
    data = _as_bytes(xml)
    enc, label, skip = _encoding_of(data)
    if enc in ('utf-8', 'ascii'):
        data = data[skip:] if skip else data
        if not data.isascii():
            _decode(data, 'utf-8', label)     # the check only: the bytes are kept as they are
        return data
    return _decode(data, enc, label).encode('utf-8')


def _prolog_end(text):
    """(index of the root element's '<' after the prolog, index of the first processing instruction or -1).
    `text` is bytes or str.

    The prolog may hold comments, processing instructions and a doctype; the index points at a '<!' for a
    doctype or other markup declaration (reported by the caller)."""
    lt, pio, pic, co, cc = ('<', '<?', '?>', '<!--', '-->') if isinstance(text, str) else \
        (b'<', b'<?', b'?>', b'<!--', b'-->')
    i, n, pi = 0, len(text), -1
    while i < n:
        j = text.find(lt, i)
        if j < 0:
            return -1, pi
        if text.startswith(pio, j):
            if pi < 0:
                pi = j
            k = text.find(pic, j)
            i = n if k < 0 else k + 2
        elif text.startswith(co, j):
            k = text.find(cc, j)
            i = n if k < 0 else k + 3
        else:
            return j, pi      # root element, or '<!' DOCTYPE / ENTITY
    return -1, pi


_BODY_MARKUP = re.compile(rb'<\?|<!\[CDATA\[|<!--')


def _first_pi(data, start, end=None):
    """Index of the first processing instruction in [start, end) outside comments and CDATA, or -1. Linear."""
    pos, end = start, len(data) if end is None else end
    if data.find(b'<?', start, end) < 0:
        return -1              # the common case: one fast search, no walk through comments and CDATA
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


def _pi_name(data, at):
    m = re.match(rb'<\?([^\s?>]{0,40})', data[at:at + 45])
    return m.group(1).decode('utf-8', 'replace') if m else ''


# An element with more than N attributes has a start tag of at least 5 N characters (' a=""' each), and a tag is
# never interrupted by '<'. Only such long stretches are examined (attribute by attribute, stopping at N + 1), so an
# ordinary document costs one C-speed regex scan.
_TAG_NAME = re.compile(rb'<[A-Za-z_\x80-\xff][^\s/>]*')
_ATTRIBUTE = re.compile(rb'''\s+[^\s=<>"'/]+\s*=\s*(?:"[^"]*"|'[^']*')''')
_LONG_STRETCH = {}


def _too_many_attributes(data, limit):
    long_stretch = _LONG_STRETCH.get(limit)
    if long_stretch is None:
        long_stretch = _LONG_STRETCH[limit] = re.compile(rb'<[A-Za-z_\x80-\xff][^<]{%d,}' % (5 * limit))
    for m in long_stretch.finditer(data):
        pos, count = _TAG_NAME.match(data, m.start()).end(), 0
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
    m = _XML_DECL.match(data)
    if m:
        data = _lstrip(data[m.end():])
    start, pi = _prolog_end(data)
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
    tail = data.rstrip()
    if not tail.endswith(b'>'):
        raise StageError(STAGE, 'document is truncated: it does not end with ">"')
    if root_element and not tail.endswith(b'</' + root_b + b'>') and not tail.endswith(b'/>'):
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
    left = None
    if limits.max_parse_seconds and limits.max_parse_seconds > 0:
        left = limits.max_parse_seconds - (time.monotonic() - t0)
        if left <= 0:
            raise StageError(STAGE, f'decoding and checking took longer than {limits.max_parse_seconds:g} s '
                                    '(--max-parse-seconds)')
    return doc._replace(xml=data, original=None if data == xml else xml, time_left=left)


_BOM = codecs.BOM_UTF8


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


def payload_text(xml, limit=None):
    """The original payload as text for the dead letter (best effort, never raises). None when it is absent or
    longer than `limit` (an oversized document stays at its source, which the dead letter names)."""
    if xml is None:
        return None
    if limit is not None and len(xml) > limit:
        return None
    if isinstance(xml, str):
        return xml
    data = bytes(xml)
    try:
        return data.decode('utf-8')           # as it is, a byte order mark included
    except UnicodeDecodeError:
        pass
    try:
        return decode_payload(data)           # UTF-16/32, a declared 8-bit encoding
    except StageError:
        # not valid in its encoding (that may be why it is here): the bytes that are not UTF-8 are kept visible
        # as \xNN escapes rather than guessed
        return data.decode('utf-8', errors='backslashreplace')


def clean_app_id(value):
    """Only a valid app_id goes into a dead letter or outcome (an SQL int column); anything else becomes None."""
    return value if type(value) is int and 0 < value <= MAX_APP_ID else None


def dead_letter(doc: Doc, stage, reason, app_id=None):
    return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(
        source=doc.source, app_id=clean_app_id(app_id if app_id is not None else doc.app_id),
        stage=stage, reason=reason,
        payload=payload_text(doc.original if getattr(doc, 'original', None) is not None else doc.xml,
                             MAX_DEAD_LETTER_PAYLOAD)))


def run_stage(stage, call, doc, failed_counter, app_id=None):
    """The one way a stage's pure core is run inside its DoFn: `call()` → (result, None), or (None, the
    dead-letter output). A StageError keeps its stage, reason and app_id; any other exception becomes an
    'internal error' reason naming its type and place, never the data. Never raises to the runner."""
    try:
        return call(), None
    except StageError as e:
        failed_counter.inc()
        app_id = e.app_id if e.app_id is not None else app_id
        log.debug('dead letter: source=%s app_id=%s stage=%s reason=%s', doc.source, app_id, e.stage, e.reason)
        return None, dead_letter(doc, e.stage, e.reason, app_id=app_id)
    except Exception as e:  # never to the runner
        failed_counter.inc()
        reason = internal_reason(e)
        log.warning('dead letter: source=%s app_id=%s stage=%s reason=%s', doc.source, app_id, stage, reason)
        return None, dead_letter(doc, stage, reason, app_id=app_id)


def refetch_payload(fetch, source_ref):
    """A failed document's original payload, read again from its source by reference (documents that fail
    after the shuffles no longer carry it). None, with a warning, when it cannot be read."""
    try:
        return payload_text(fetch(source_ref)) if fetch is not None else None
    except Exception as e:
        log.warning('cannot re-read the payload of %s: %s', source_ref, type(e).__name__)
        return None


def internal_reason(exc):
    """A reason for an unexpected exception that names its type and place, never the data it saw."""
    tb = exc.__traceback__
    where = ''
    while tb is not None:
        where = f'{tb.tb_frame.f_code.co_filename.rsplit("/", 1)[-1]}:{tb.tb_lineno}'
        tb = tb.tb_next
    return f'internal error {type(exc).__name__} at {where}'


class ValidateFn(beam.DoFn):
    """Doc → Doc (clean bytes) or a DeadLetter on the 'dead_letter' tag."""

    def __init__(self, limits: Limits = Limits(), root_element: Optional[str] = None):
        self.limits = limits
        self.root_element = root_element
        self.read = beam.metrics.Metrics.counter('migration', 'docs_read')
        self.failed = beam.metrics.Metrics.counter('migration', 'validation_failed')
        self.bytes_read = beam.metrics.Metrics.counter('migration', 'bytes_read')

    def process(self, doc: Doc):
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
