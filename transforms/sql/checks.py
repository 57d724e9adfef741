"""Before any data moves: does the target fit the contract? One line per problem, never a value.

* every column the contract writes exists and is not computed;
* its type can hold the contract's data type (a string into a number column, a date into an int, ...);
* a string column is as long as the contract's data_length (values longer than the column would be
  dead-lettered one by one);
* an integer column is as wide as the contract's integer type (an `int` mapping into a `smallint` column);
* a table a foreign key of a written table points to, which the contract does not write (a reference table such
  as app_enums), exists and is not empty: otherwise every document would fail its FOREIGN KEY.
"""
from typing import Dict, Iterable, List, Mapping

from transforms.sql.dialects import parse_type
from transforms.sql.meta import TableMeta

_STRING = {'varchar', 'nvarchar', 'char', 'nchar', 'text', 'ntext', 'character varying', 'character'}
_INT_WIDTH = {'tinyint': 1, 'smallint': 2, 'int': 4, 'integer': 4, 'bigint': 8}
_NUMERIC = {'decimal', 'numeric', 'float', 'real', 'double precision', 'money'}
_DATE = {'datetime', 'datetime2', 'date', 'smalldatetime', 'timestamp', 'timestamp without time zone',
         'timestamp with time zone', 'datetimeoffset'}
_BIT = {'bit', 'boolean', 'bool'}

# contract data type -> the column type families that can hold it
_FITS = {
    'string': _STRING,
    'int': set(_INT_WIDTH) | _NUMERIC, 'smallint': set(_INT_WIDTH) | _NUMERIC, 'tinyint': set(_INT_WIDTH) | _NUMERIC,
    'bigint': set(_INT_WIDTH) | _NUMERIC,
    'decimal': _NUMERIC, 'float': _NUMERIC,
    'bit': _BIT | set(_INT_WIDTH), 'boolean': _BIT | set(_INT_WIDTH),
    'datetime': _DATE, 'date': _DATE, 'smalldatetime': _DATE,
}


def _length(args):
    if not args:
        return None
    a = args[0]
    if a == 'max':
        return None
    try:
        return int(a)
    except ValueError:
        return None


def column_problems(contract, metas: Mapping[str, TableMeta], skip_tables=()) -> List[str]:
    """Problems of the contract's columns against the live tables (types, lengths, widths, existence). A table
    that is not in `metas` is one problem, not one per column; `skip_tables`: missing tables the caller has
    reported already."""
    from contracts.model import INT_TYPES, ROW_CREATING
    out = []
    seen = set()
    missing = set(skip_tables)
    for m in contract.mappings:
        t, c = m.target_table, m.target_column
        if not c or any(s.name in ROW_CREATING for s in m.steps) or (t, c) in seen:
            continue
        seen.add((t, c))
        meta = metas.get(t)
        if meta is None:
            if t not in missing:
                missing.add(t)
                out.append(f'{t}: table not found in the target')
            continue
        col = meta.column(c)
        if col is None:
            out.append(f'{t}.{c}: column not found in the target table')
            continue
        if col.computed:
            out.append(f'{t}.{c}: is a computed column in the target table')
            continue
        try:
            base, args = parse_type(col.type)
        except Exception:
            continue
        dtype = m.data_type
        # enum and bit steps give integers whatever the mapping's data_type says
        produced = 'int' if any(s.name in ('enum', 'char_to_bit', 'boolean_to_bit') for s in m.steps) \
            and dtype == 'string' else dtype
        fits = _FITS.get(produced)
        if fits is not None and base not in fits:
            out.append(f'{t}.{c}: the contract writes {produced} values into a {col.type} column')
            continue
        if produced == 'string' and base in _STRING:
            n = _length(args)
            if n is not None:
                if m.data_length == -1:
                    out.append(f'{t}.{c}: data_length -1 (no limit) but the column is {col.type}: longer values '
                               'would be dead-lettered')
                elif m.data_length is not None and m.data_length > n:
                    out.append(f'{t}.{c}: data_length {m.data_length} but the column is {col.type}: values '
                               f'longer than {n} would be dead-lettered')
        if produced in INT_TYPES and base in _INT_WIDTH and _INT_WIDTH[base] < _INT_WIDTH.get(produced, 4) \
                and not any(s.name in ('enum', 'char_to_bit', 'boolean_to_bit') for s in m.steps):
            out.append(f'{t}.{c}: the contract writes {produced} values into a {col.type} column (narrower)')
    return out


def empty_references(conn, dialect, metas: Mapping[str, TableMeta], written: Iterable[str]) -> List[str]:
    """FKs of written tables to tables the contract does not write, whose referenced table is empty."""
    written = {w.lower() for w in written}
    out, checked = [], {}
    cur = conn.cursor()
    try:
        for t, meta in metas.items():
            for fk in meta.foreign_keys:
                ref = fk.references
                if ref.lower() in written:
                    continue
                if ref not in checked:
                    try:
                        cur.execute(f'SELECT COUNT(*) FROM {dialect.qualify(ref, meta.schema)}')
                        checked[ref] = int(cur.fetchone()[0])
                    except Exception:
                        checked[ref] = None
                        conn.rollback()
                if checked[ref] == 0:
                    out.append(f'{t}.{", ".join(fk.columns)}: references {ref}, which is empty: every document '
                               f'with a value there would fail its FOREIGN KEY (fill {ref} first)')
                elif checked[ref] is None:
                    out.append(f'{t}.{", ".join(fk.columns)}: references {ref}, which is not in the target (or '
                               'cannot be read): every document with a value there would fail its FOREIGN KEY')
    finally:
        cur.close()
    return out


def target_problems(conn, dialect, contract, metas: Dict[str, TableMeta], written, skip_tables=()) -> List[str]:
    return column_problems(contract, metas, skip_tables) + empty_references(conn, dialect, metas, written)
