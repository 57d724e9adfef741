"""Value conversions to contract data types (SPEC §1.10, with the §10 decisions).

All functions take a string (or an already-typed value) and return a Python value or ``None`` when the input cannot be
converted. They never raise for data reasons.

Numbers are ASCII only, everywhere: Python's ``int()``, ``float()`` and ``Decimal()`` also accept other Unicode digits
(``'٣'`` -> 3), underscores (``'1_000'``), ``'NaN'`` and ``'Infinity'``, and ``str.isdigit()`` is true for ``'²'``
(which ``int()`` then refuses). Every numeric text is matched against an ASCII pattern first; anything else is "not a
number" under the column's normal rules.
"""
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation, ROUND_HALF_UP

_ISO_RE = re.compile(r'(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6}))?)?$', re.ASCII)
_US_RE = re.compile(r'(\d{1,2})/(\d{1,2})/(\d{4})(?: (\d{1,2}):(\d{1,2}):(\d{1,2})(?: ?([AaPp][Mm]))?)?$', re.ASCII)
_FIRST_NUMBER_RE = re.compile(r'-?[0-9]+(?:\.[0-9]+)?')
# A plain ASCII decimal number: sign, digits with an optional fraction, optional exponent (what Decimal() takes,
# minus NaN, Infinity, underscores and non-ASCII digits).
NUMBER_RE = re.compile(r'[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?')
_INTEGER_RE = re.compile(r'[+-]?[0-9]+')
# A number written with thousands separators, strictly grouped ('1,550.00', '12,345,678'): a decimal column reads it
# as the number (as integer columns drop commas, SPEC §1.10). '12,5' or '1,55' is not grouped: not a number.
_GROUPED_RE = re.compile(r'[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?')
_ONE = Decimal(1)
_QUANT = {}


def _mk(y, mo, d, h=0, mi=0, s=0, frac=None):
    if s > 59:                       # the old converter clamped seconds (e.g. ":60") to 59
        s = 59
    us = int(frac.ljust(6, '0')) if frac else 0
    return datetime(y, mo, d, h, mi, s, us)


def to_datetime(v):
    """Parse a date/datetime string: ISO forms, US ``m/d/Y`` (first), then ``d/m/Y``, then ``fromisoformat``."""
    if v is None:
        return None
    if isinstance(v, datetime):
        return v
    s = str(v).strip()
    if not s or not s.isascii():
        return None
    mo = _ISO_RE.match(s)
    try:
        if mo:
            g = mo.groups()
            if g[3] is None:
                return datetime(int(g[0]), int(g[1]), int(g[2]))
            return _mk(int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]), g[6])
        mo = _US_RE.match(s)
        if mo:
            a, b, y, h, mi, sec, ampm = mo.groups()
            h = int(h) if h else 0
            if ampm:
                if not 1 <= h <= 12:
                    return None
                h = h % 12 + (12 if ampm.upper() == 'PM' else 0)
            mi, sec = (int(mi) if mi else 0), (int(sec) if sec else 0)
            try:
                return _mk(int(y), int(a), int(b), h, mi, sec)      # US month/day first
            except ValueError:
                if ampm:
                    return None
                return _mk(int(y), int(b), int(a), h, mi, sec)      # then day/month
    except ValueError:
        return None
    try:
        d = datetime.fromisoformat(s)
    except ValueError:
        return None
    return d.replace(tzinfo=None) if d.tzinfo else d


_OFFSET_RE = re.compile(r'[T ]\d{1,2}:\d{1,2}(?::\d{1,2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$', re.ASCII | re.I)


def has_utc_offset(s) -> bool:
    """True when a date/time text ends with a time-zone designator (``Z``, ``+09:00``, ``-0500``): the datetime
    columns keep the time as written and drop the offset."""
    return type(s) is str and len(s) > 16 and _OFFSET_RE.search(s.strip()) is not None


def to_int(v, lenient=False):
    """Integer, ROUND_HALF_UP; commas removed. ``lenient`` (direct mappings): take the first numeric run when the text
    is not a plain number (``"$1,250"`` -> 1, ``"36.50"`` -> 37)."""
    if v is None:
        return None
    t = type(v)
    if t is int:
        return v
    if t is bool:
        return int(v)
    if t is float:
        if v != v or v in (float('inf'), float('-inf')):
            return None
        return int(Decimal(repr(v)).quantize(_ONE, ROUND_HALF_UP))
    s = str(v).strip()
    if not s:
        return None
    if s.isascii() and s.isdigit() and len(s) < 4000:     # int() refuses more than 4300 digits
        return int(s)
    if lenient:
        mo = _FIRST_NUMBER_RE.search(s)
        if not mo:
            return None
        s = mo.group(0)
    s = s.replace(',', '')
    if not NUMBER_RE.fullmatch(s):
        return None
    try:
        return int(Decimal(s).quantize(_ONE, ROUND_HALF_UP))
    except (InvalidOperation, ValueError):
        return None


def to_key_int(v):
    """An integer key value (primary-key, identity and foreign-key columns): converted strictly. Only an optional
    sign and ASCII digits are accepted; ``None`` for anything else (``'12.5'``, ``'218844X'``, ``'ABC'``, ``'²'``),
    which the mapper turns into a failure of the document, never into another key."""
    if v is None:
        return None
    t = type(v)
    if t is int:
        return v
    if t is bool:
        return None
    s = str(v).strip()
    if not _INTEGER_RE.fullmatch(s):
        return None
    return int(Decimal(s))           # any length (int() refuses more than 4300 digits)


def is_number(s) -> bool:
    """True when ``s`` (a str) is a plain ASCII decimal number (see NUMBER_RE)."""
    return NUMBER_RE.fullmatch(s.strip()) is not None


def to_decimal(v, places=2):
    """Float rounded ROUND_HALF_UP to ``places`` decimals; ``None`` when not a number. Thousands separators are
    read when strictly grouped (``'1,550.00'`` -> 1550.0); the existing system dropped such values (SPEC §1.10)."""
    if v is None:
        return None
    if places is None or places < 0:
        places = 2
    q = _QUANT.get(places)
    if q is None:
        q = _QUANT[places] = Decimal(1).scaleb(-places)
    t = type(v)
    try:
        if t is float:
            if v != v or v in (float('inf'), float('-inf')):
                return None
            d = Decimal(repr(v))
        elif t is int or t is bool:
            return float(v)
        else:
            s = str(v).strip()
            if not NUMBER_RE.fullmatch(s):
                if not _GROUPED_RE.fullmatch(s):
                    return None
                s = s.replace(',', '')
            d = Decimal(s)
        if not d.is_finite():
            return None
        return float(d.quantize(q, ROUND_HALF_UP))
    except (InvalidOperation, ValueError):
        return None


def to_float(v):
    if v is None:
        return None
    t = type(v)
    if t is float:
        return v if v == v and v not in (float('inf'), float('-inf')) else None
    if t is int or t is bool:
        return float(v)
    s = str(v).strip()
    if not NUMBER_RE.fullmatch(s):
        return None
    try:
        f = float(s)
    except (OverflowError, ValueError):
        return None
    return f if f == f and f not in (float('inf'), float('-inf')) else None


def to_string(v, length=None):
    """``str``, stripped, cut to ``length`` (``None`` or -1 = no limit), stripped again."""
    if v is None:
        return None
    s = v if type(v) is str else (_fmt_dt(v) if isinstance(v, datetime) else str(v))
    s = s.strip()
    if length is not None and length > 0 and len(s) > length:
        s = s[:length].strip()
    return s


def _fmt_dt(d):
    return d.isoformat(sep=' ')


def to_bit(v):
    """A bit without a conversion table: truthiness (as the old system)."""
    if v is None:
        return None
    if type(v) is int:
        return 1 if v else 0
    return 1 if v else 0


def convert(v, data_type, length=None, lenient_int=False):
    """Convert ``v`` to ``data_type``; ``None`` when it cannot be converted."""
    if v is None:
        return None
    if data_type == 'string':
        return to_string(v, length)
    if data_type in ('int', 'smallint', 'tinyint', 'bigint'):
        return to_int(v, lenient_int)
    if data_type == 'decimal':
        return to_decimal(v, length)
    if data_type in ('datetime', 'date', 'smalldatetime'):
        return to_datetime(v)
    if data_type in ('bit', 'boolean'):
        return to_bit(v)
    if data_type == 'float':
        return to_float(v)
    return str(v)


def shape(s):
    """The shape of a raw value for diagnostics without its content: digits -> 9, letters -> A (``05-10-1978`` ->
    ``99-99-9999``); long values cut to 12 characters plus their length."""
    s = str(s)
    out = ''.join('9' if ch.isdigit() else ('A' if ch.isalpha() else ch) for ch in s[:12])
    return out if len(s) <= 12 else f'{out}... ({len(s)} chars)'
