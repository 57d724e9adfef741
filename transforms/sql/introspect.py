"""Reading the LIVE definition of target tables (columns, primary key, identity, nullability, FKs) through the
dialect: `introspect(conn, dialect, schema, tables)`."""
from typing import Dict, Iterable, Optional

from transforms.sql.dialects import get_dialect
from transforms.sql.meta import MetaError, TableMeta


def introspect(conn, dialect, schema: Optional[str], tables: Iterable[str]) -> Dict[str, TableMeta]:
    """Read the LIVE definition of `tables` (columns, pk, identity, nullability, FKs). Raises MetaError naming
    every table that does not exist."""
    d = get_dialect(dialect)
    out, missing = {}, []
    for t in tables:
        d.check_identifier(t)
        m = d.introspect_table(conn, schema, t)
        if m is None:
            missing.append(t)
        else:
            out[t] = m
    if missing:
        where = f' in schema {schema!r}' if schema and d.name != 'sqlite' else ''
        raise MetaError(f'target table(s) not found{where}: {", ".join(missing)}')
    return out
