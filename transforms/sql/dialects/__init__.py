"""The SQL dialects (sqlite, postgresql, mssql), one module each over a shared base (`base.Dialect`).
`get_dialect(name)` returns the one instance of a dialect."""
from transforms.sql.dialects.base import (DATA, FATAL, SAFE_IDENTIFIER, TRANSIENT, Dialect, DialectError,
                                          parse_type)
from transforms.sql.dialects.mssql import MSSQLDialect
from transforms.sql.dialects.postgresql import PostgresDialect
from transforms.sql.dialects.sqlite import SQLiteDialect
from transforms.sql.messages import HIDDEN, error_state, mask_secrets, scrub_message

__all__ = ['DATA', 'FATAL', 'HIDDEN', 'SAFE_IDENTIFIER', 'TRANSIENT', 'Dialect', 'DialectError', 'MSSQLDialect',
           'PostgresDialect', 'SQLiteDialect', 'error_state', 'get_dialect', 'mask_secrets', 'parse_type',
           'scrub_message']

_DIALECTS = {'sqlite': SQLiteDialect(), 'postgresql': PostgresDialect(), 'mssql': MSSQLDialect()}
_ALIASES = {'postgres': 'postgresql', 'pg': 'postgresql', 'sqlserver': 'mssql', 'tsql': 'mssql',
            'sqlite3': 'sqlite'}


def get_dialect(name) -> Dialect:
    if isinstance(name, Dialect):
        return name
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    try:
        return _DIALECTS[key]
    except KeyError:
        raise DialectError(f'unknown SQL dialect {name!r} (known: {", ".join(_DIALECTS)})') from None
