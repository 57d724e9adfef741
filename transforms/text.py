"""Document text: its encoding (a byte order mark, XML's autodetection, the XML declaration, else UTF-8),
strict decoding, UTF-8 bytes, and the prolog scan that finds the root element. Pure, no Beam."""
import codecs
import re

from transforms.errors import StageError

STAGE = 'validation'
_DECLARED_ENCODING = re.compile(rb'^<\?xml\s[^>]*encoding\s*=\s*["\']([A-Za-z0-9._-]+)["\']')


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


def database_text(data):
    """The value of a database TEXT column, as the bytes the database stores it in (UTF-8), for the decoding
    that follows. A TEXT value is characters: an XML declaration naming another 8-bit encoding (ISO-8859-1,
    windows-1252, ...) describes the file the text was once loaded from, not the value, so valid UTF-8 bytes
    under such a declaration are returned as the str they spell (read by the declaration, every accented
    character turned into mojibake, silently). Anything else is returned as it is: bytes that are not UTF-8
    (a loader that stored a file's raw bytes as text) and every other document still go by `_encoding_of`."""
    if data is None or isinstance(data, str):
        return data
    data = bytes(data)
    if data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data
    declared = _DECLARED_ENCODING.match(data.lstrip())
    if not declared:
        return data
    try:
        enc = codecs.lookup(declared.group(1).decode('ascii')).name
    except LookupError:
        return data                         # validation refuses the unknown name
    if enc in ('utf-8', 'ascii') or enc.startswith(('utf-16', 'utf-32')) or data.isascii():
        return data                         # decoded as UTF-8 anyway
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError:
        return data


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


def prolog_end(text):
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
