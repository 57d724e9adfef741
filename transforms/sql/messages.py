"""Database and driver messages: the SQLSTATE of an error, its kind, and the message scrubbed of row values and
passwords before it reaches a log, the ledger, a dead letter's reason or a metrics file (SPEC §10.9)."""
import re
from typing import Optional, Sequence, Tuple

TRANSIENT, DATA, FATAL = 'transient', 'data', 'fatal'

# Scrubbing: database and driver messages lose every row value and every password before they reach a log, the
# ledger, the dead letter's reason or a metrics file (SPEC §10.9). Shapes audited (tests/test_scrub.py):
#   PostgreSQL (psqlODBC): value "…" is out of range for type T; invalid input syntax for type T: "…";
#     date/time field value out of range: "…"; invalid input value for enum E: "…"; invalid byte sequence for
#     encoding "UTF8": 0x..; DETAIL: Key (…)=(…) … / Failing row contains (…) / Token "…" is invalid;
#     CONTEXT: … (JSON data, parameters $n = '…'); value too long for type character varying(N) (no value);
#     numeric field overflow (its value is only in the DETAIL).
#   SQL Server: The duplicate key value is (…) (2627, 2601); Truncated value: '…' (2628); converting the
#     varchar value '…' to data type … (245); The conversion of the varchar value '…' overflowed … (248);
#     Arithmetic overflow error for data type T, value = N (220); 8152, 8114, 241, 547, 515 carry no value.
#   SQLite: CHECK / UNIQUE / NOT NULL / FOREIGN KEY constraint failed: <constraint, table.column or check
#     expression>, datatype mismatch, Python int too large to convert to SQLite INTEGER: no values.
# Rules: the DETAIL and CONTEXT parts of a PostgreSQL message are dropped whole; the known value slots are
# replaced greedily (a value may itself contain quotes or newlines); then every remaining quoted token is hidden
# unless the word before it says it is a name (column "x", constraint 'y', relation "z", ...).

HIDDEN = '<hidden>'
_NAME_WORDS = (r'relation|table|column|columns|constraint|index|schema|type|encoding|database|role|user|sequence|'
               r'view|function|procedure|operator|domain|trigger|extension|cursor|statement|savepoint|portal|'
               r'collation|tablespace|object|login|lib|driver|file|server|host|name|at|dsn|parameter|attribute|'
               r'running')
_RECORDS = re.compile(r';\s*(?=\[[0-9A-Z]{5}\])')           # pyodbc joins diagnostic records with '; '
_STATE = re.compile(r'^\s*(\[[0-9A-Z]{5}\])\s*')
_ODBC_TAIL = re.compile(r'(?:\s*\(\d+\))?\s*\(SQL\w+\)\s*$')
_PG_TAIL = re.compile(r'\s*;?\s*\n?\s*Error while executing the query\s*$')
_PG_EXTRA = re.compile(r'\s*\b(?:DETAIL|CONTEXT):.*', re.S)     # Key (..)=(..), Failing row contains (..), ...
_VALUE_SLOTS = [
    (re.compile(r'\bvalue ".*" is out of range', re.S), f'value {HIDDEN} is out of range'),          # PG 22003
    (re.compile(r'(:\s*)".*"', re.S), r'\1' + HIDDEN),       # PG: …for type T: "…", …out of range: "…", enum E: "…"
    (re.compile(r'Key \(.*?\)=\(.*\)', re.S), 'Key (...)=(...)'),
    (re.compile(r'Failing row contains \(.*\)', re.S), 'Failing row contains (...)'),
    (re.compile(r'(The duplicate key value is )\(.*\)', re.S), r'\1(...)'),                   # SQL Server 2627/2601
    (re.compile(r"(Truncated value: )'.*'", re.S), r'\1' + HIDDEN),                             # SQL Server 2628
    (re.compile(r"(convert(?:ing|ion of) the \w+ value )'.*'", re.S), r'\1' + HIDDEN),          # SQL Server 245/248
    (re.compile(r'(\bvalue\s*=\s*).*?(\.?\s*)$', re.S), r'\1' + HIDDEN + r'\2'),               # SQL Server 220
    (re.compile(r'\b0x[0-9A-Fa-f]{2}(?:\s+0x[0-9A-Fa-f]{2})*'), '0x..'),                       # byte sequences
    (re.compile(r'unnamed portal parameter \$\d+ = .*', re.S), 'unnamed portal parameter'),
]
# A quoted token, kept when a name word (or an opening parenthesis: SQLite's check expressions) is right before
# it, hidden otherwise. An apostrophe inside a word ("can't") does not open a quote.
_QUOTED = re.compile(r'(?i)(\b(?:' + _NAME_WORDS + r')\b\s*:?\s*|\()?(?<![\w\'"])("[^"\n]*"|\'[^\'\n]*\')')
_PWD_VALUE = re.compile(r'(?i)\b(pwd|password)(\s*=\s*)(\{(?:[^}]|\}\})*\}|\*\*\*|[^;\s]*)')
_URL_PASSWORD = re.compile(r'(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]*@')


def mask_secrets(s: str, secrets: Sequence[str] = ()) -> str:
    """Passwords masked: each known secret where it stands as a whole token (never inside another word, so a
    password 'x' leaves 'expected' alone), `Pwd=…`/`password=…` values, and the password of a URL
    (`postgresql://user:pw@host`)."""
    for secret in sorted({x for x in secrets if x}, key=len, reverse=True):
        s = re.sub(r'(?<![A-Za-z0-9_])' + re.escape(secret) + r'(?![A-Za-z0-9_])', '***', s)
    s = _PWD_VALUE.sub(lambda m: m.group(1) + m.group(2) + '***', s)
    return _URL_PASSWORD.sub(r'\1***@', s)


def _hide_quoted(m):
    return m.group(0) if m.group(1) else HIDDEN


def _scrub_record(rec: str) -> str:
    m = _STATE.match(rec)
    state, text = (m.group(1), rec[m.end():]) if m else ('', rec)
    text = _ODBC_TAIL.sub('', text)
    text = _PG_TAIL.sub('', text)
    text = _PG_EXTRA.sub('', text)
    for rx, rep in _VALUE_SLOTS:
        text = rx.sub(rep, text)
    text = _QUOTED.sub(_hide_quoted, text)
    text = re.sub(r'[\s;]+$', '', text)
    return f'{state} {text}' if state else text


def scrub_message(msg: str, secrets: Sequence[str] = ()) -> str:
    """A database/driver message without row values and passwords, on one line (at most 1,000 characters)."""
    s = mask_secrets(str(msg), secrets)
    s = '; '.join(r for r in (_scrub_record(rec) for rec in _RECORDS.split(s)) if r.strip())
    s = ' '.join(s.split())
    return s[:1000]


def error_state(exc: BaseException) -> Tuple[Optional[str], str]:
    """(SQLSTATE or None, message) of a DB-API exception (pyodbc puts (state, message) in args)."""
    args = getattr(exc, 'args', ())
    if len(args) >= 2 and isinstance(args[0], str) and re.match(r'^[0-9A-Z]{5}$', args[0]):
        return args[0], str(args[1])
    return None, str(exc)


_TRANSIENT_STATES = {'40001', '40P01', 'HYT00', 'HYT01', '57P01', '57P02', '57P03', '53300'}
_TRANSIENT_TEXT = re.compile(r'database (table )?is locked|database is busy|connection (has been |was )?lost|'
                             r'server closed the connection|could not receive data|could not send data|'
                             r'deadlock|\(1205\)|\(10054\)|\(10053\)|communication link failure|'
                             r'terminating connection|internal SAVEPOINT failed|no connection to the server|'
                             r'SSL SYSCALL error|connection not open', re.I)
_FATAL_TEXT = re.compile(r'no such table|no such column|has no column named|readonly database|'
                         r'unable to open database|Invalid object name|Invalid column name|'
                         r'permission denied|does not exist|'
                         r'database or disk is full|disk is full|no space left on device|could not extend file|'
                         r'disk I/O error|log file .* is full|\(1105\)|\(9002\)', re.I)
