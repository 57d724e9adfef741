"""Targets: where the rows go. `parse_target(url)` -> `Target`; `Target.connect()` -> DB-API connection.

  sqlite:///PATH                       stdlib sqlite3 (PATH relative unless it starts with '/': sqlite:////abs)
  odbc:<ODBC connection string>        pyodbc; dialect from the driver name, or explicit `dialect`

`${ENV}` placeholders are expanded from the environment (passwords come from env vars). Nothing this module
says (display, TargetError) ever contains the password.
"""
import os
import re
from typing import Optional

from transforms.sql.dialects import Dialect, error_state, get_dialect, scrub_message
from transforms.sql.messages import _TRANSIENT_TEXT, _URL_PASSWORD


class TargetError(Exception):
    """The target could not be parsed or reached. The message never contains the password.

    `transient` (connection errors only): True when retrying may succeed (server unreachable, refusing,
    restarting, too many clients), False when it cannot (login failed, driver or database missing), None for
    errors that are not about opening a connection."""

    def __init__(self, message, transient=None):
        super().__init__(message)
        self.transient = transient


# Connection failures that retrying cannot cure. Everything else that goes wrong while opening a connection
# (refused, reset, timed out, 'the database system is starting up / shutting down', too many clients) is
# transient: the launcher has already connected once, so a failure mid-run is the server, not the settings.
_CONNECT_FATAL = re.compile(r"password authentication failed|login failed|authentication failed|"
                            r"no pg_hba\.conf entry|does not exist|can't open lib|data source name not found|"
                            r"permission denied|not permitted|unable to open database|readonly database|"
                            r"certificate verify failed", re.I)


def connect_error_is_transient(state, msg) -> bool:
    if state and (state.startswith(('IM', '28')) or state in ('3D000',)):
        return False
    return not _CONNECT_FATAL.search(msg or '')


_ENV = re.compile(r'\$\{([A-Za-z_][A-Za-z0-9_]*)\}')
_PWD = re.compile(r'(?i)(\b(?:pwd|password)\s*=\s*)(\{(?:[^}]|\}\})*\}|[^;]*)')


def sha256_hex(value) -> Optional[str]:
    """The content hash of a document: sha256 hex of its bytes (text: of its UTF-8 encoding). None for None."""
    if value is None:
        return None
    import hashlib
    if isinstance(value, str):
        value = value.encode('utf-8', errors='surrogatepass')
    elif not isinstance(value, (bytes, bytearray, memoryview)):
        value = str(value).encode('utf-8')
    return hashlib.sha256(value).hexdigest()


def expand_env(s: str) -> str:
    def sub(m):
        v = os.environ.get(m.group(1))
        if v is None:
            raise TargetError(f'target: environment variable {m.group(1)} is not set')
        return v
    return _ENV.sub(sub, s)


def mask_password(s: str) -> str:
    """A target string for display: the Pwd=/Password= value and a URL's password (`scheme://user:pw@`) masked."""
    return _URL_PASSWORD.sub(r'\1***@', _PWD.sub(lambda m: m.group(1) + '***', s))


def command_line_target(url: str):
    """A target string as it may stand in a command printed for the operator: (text, masked). A password given as
    an environment placeholder (`Pwd=${PGPASSWORD}`) is kept as it is (the command then works as printed); a
    literal password is masked (masked=True: the operator puts it back)."""
    masked = []

    def pwd(m):
        if _ENV.fullmatch(m.group(2).strip()):
            return m.group(0)
        masked.append(1)
        return m.group(1) + '***'

    def url_pwd(m):
        if _ENV.fullmatch(m.group(2)):
            return m.group(0)
        masked.append(1)
        return m.group(1) + '***@'
    text = _URL_PASSWORD_PARTS.sub(url_pwd, _PWD.sub(pwd, url))
    return text, bool(masked)


_URL_PASSWORD_PARTS = re.compile(r'(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)([^\s@/]*)@')


def _passwords(conn_str: str):
    out = []
    for m in _PWD.finditer(conn_str):
        v = m.group(2).strip()
        if v.startswith('{') and v.endswith('}'):
            out.append(v[1:-1].replace('}}', '}'))
        out.append(v)
    return [p for p in out if p]


def _odbc_attr(conn_str: str, key: str) -> Optional[str]:
    m = re.search(r'(?i)(?:^|;)\s*' + key + r'\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)', conn_str)
    if not m:
        return None
    v = m.group(1).strip()
    return v[1:-1] if v.startswith('{') else v


def dialect_from_driver(driver: str) -> Optional[str]:
    d = (driver or '').lower()
    if 'sql server' in d or re.search(r'odbc driver \d+', d) or 'msodbcsql' in d or 'freetds' in d:
        return 'mssql'
    if 'postgres' in d or 'psqlodbc' in d:
        return 'postgresql'
    if 'sqlite' in d:
        return 'sqlite'
    return None


class Target:
    """A parsed target. Picklable (holds strings only): DoFns carry it and connect on the worker."""

    def __init__(self, kind: str, conn_str: str, dialect: str, display: str, secrets=()):
        self.kind = kind                 # 'sqlite' | 'odbc'
        self._conn_str = conn_str        # expanded; contains the password for odbc
        self.dialect_name = dialect
        self.display = display
        self._secrets = tuple(secrets)

    def __repr__(self):
        return f'Target({self.display!r}, dialect={self.dialect_name!r})'

    @property
    def dialect(self) -> Dialect:
        return get_dialect(self.dialect_name)

    @property
    def sqlite_path(self) -> Optional[str]:
        return self._conn_str if self.kind == 'sqlite' else None

    def scrub(self, msg) -> str:
        """A message (or exception) with passwords and row values removed."""
        if isinstance(msg, BaseException):
            return self.dialect.sanitize(msg, self._secrets)
        return scrub_message(str(msg), self._secrets)

    def connect(self, timeout: int = 15):
        """A new DB-API connection, autocommit off. Raises TargetError (no password in the message)."""
        if self.kind == 'sqlite':
            import sqlite3
            try:
                conn = sqlite3.connect(self._conn_str, timeout=timeout, check_same_thread=False)
                conn.execute('PRAGMA foreign_keys = ON')
                # the content hash of a document column, as PostgreSQL / SQL Server compute it in SQL (resume)
                conn.create_function('xmlsql_sha256', 1, sha256_hex, deterministic=True)
                conn.execute('PRAGMA busy_timeout = %d' % (timeout * 1000))
                try:
                    conn.execute('PRAGMA journal_mode = WAL')
                except sqlite3.OperationalError:
                    pass
                return conn
            except sqlite3.Error as e:
                raise TargetError(f'cannot open {self.display}: {e}',
                                  transient=bool(_TRANSIENT_TEXT.search(str(e)))) from None
        import pyodbc
        try:
            conn = pyodbc.connect(self._conn_str, autocommit=False, timeout=timeout)
        except pyodbc.Error as e:
            state, msg = error_state(e)
            raise TargetError(f'cannot connect to {self.display}: {self._describe(state, msg)}',
                              transient=connect_error_is_transient(state, msg)) from None
        if self.dialect_name == 'postgresql':
            try:
                # values come back as str for unknown types; keep encodings explicit
                conn.setdecoding(pyodbc.SQL_CHAR, encoding='utf-8')
                conn.setdecoding(pyodbc.SQL_WCHAR, encoding='utf-8')
                conn.setencoding(encoding='utf-8')
            except Exception:
                pass
        return conn

    def retrying(self, what: Optional[str] = None, retry=None):
        """A `RetryingConnection` to this target (transforms/sql/retry.py): opened lazily, every transaction
        retried on transient errors (server restarting or unreachable, connection lost, deadlock, 'database is
        locked'); a login failure or a missing driver is raised at once. Every connection a worker opens mid-run
        is one of these."""
        from transforms.sql.retry import DEFAULT_RETRY, RetryingConnection
        return RetryingConnection(self.connect, self.dialect_name, retry=retry or DEFAULT_RETRY, scrub=self.scrub,
                                  what=what or self.display)

    def _describe(self, state, msg) -> str:
        clean = scrub_message(msg, self._secrets)
        low = msg.lower()
        if "can't open lib" in low or 'data source name not found' in low or state == 'IM002':
            what = 'ODBC driver not found'
        elif state == '28000' or 'login failed' in low or 'password authentication failed' in low:
            what = 'login failed'
        elif state and state.startswith('08') or 'refused' in low or 'timeout' in low or 'unreachable' in low:
            what = 'server unreachable'
        else:
            what = 'connection failed'
        return f'{what} ({state or "?"}): {clean}'


def parse_target(url: str, dialect: Optional[str] = None) -> Target:
    if not isinstance(url, str) or not url.strip():
        raise TargetError('target: empty target url')
    url = url.strip()
    expanded = expand_env(url)
    secrets = _passwords(expanded)
    display = mask_password(url)
    if url.startswith('sqlite:'):
        m = re.match(r'^sqlite:///(.+)$', expanded)
        if not m:
            raise TargetError(f'target: expected sqlite:///PATH, got {display!r}')
        if dialect and get_dialect(dialect).name != 'sqlite':
            raise TargetError(f'target: a sqlite:/// target cannot use dialect {dialect!r}')
        return Target('sqlite', m.group(1), 'sqlite', display)
    if url.startswith('odbc:'):
        conn_str = expanded[len('odbc:'):]
        if not conn_str.strip():
            raise TargetError('target: empty ODBC connection string')
        driver = _odbc_attr(conn_str, 'driver') or _odbc_attr(conn_str, 'dsn') or ''
        name = get_dialect(dialect).name if dialect else dialect_from_driver(driver)
        if not name:
            raise TargetError(f'target: cannot tell the SQL dialect from driver {driver!r}; pass dialect= '
                              '(sqlite, postgresql, mssql)')
        return Target('odbc', conn_str, name, display, secrets)
    raise TargetError(f'target: unsupported target {display!r} (expected sqlite:///PATH or odbc:<connection string>)')
