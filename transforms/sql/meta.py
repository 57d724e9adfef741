"""Table metadata: from a table spec (tables.json format) or introspected from the LIVE target.

`TableMeta` is what the sink writes against. Introspection is the source of truth at run time: the contract's
columns are checked against the live table before any row is written (`transforms/sql/checks.py`), and the FK tiers come
from the target's own foreign keys (`fk_tiers`).
"""
import json
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union


class MetaError(Exception):
    """The target's tables do not match what the contract needs (missing table/column, bad spec)."""


class ColumnMeta(NamedTuple):
    name: str
    type: str                      # type as in the spec (SQL Server spelling) or as introspected
    nullable: bool = True
    identity: bool = False
    default: Optional[str] = None
    computed: bool = False         # computed column ('as' in the spec): never written


class ForeignKey(NamedTuple):
    columns: Tuple[str, ...]
    references: str
    ref_columns: Tuple[str, ...]
    on_delete: str = 'NO ACTION'


class TableMeta(NamedTuple):
    name: str
    schema: Optional[str]
    columns: List[ColumnMeta]
    primary_key: List[str]
    foreign_keys: List[ForeignKey] = []
    unique: List[List[str]] = []

    def column(self, name: str) -> Optional[ColumnMeta]:
        for c in self.columns:
            if c.name.lower() == name.lower():
                return c
        return None

    @property
    def column_names(self) -> List[str]:
        return [c.name for c in self.columns]

    @property
    def identity_columns(self) -> List[str]:
        return [c.name for c in self.columns if c.identity]

    @property
    def owner_column(self) -> Optional[str]:
        """'app_id' when the table carries the owning document's id but its key is not the app_id:
        a key of such a table may belong to one document only (the sink's ownership check)."""
        col = self.column('app_id')
        if col is None or not self.primary_key:
            return None
        if any(k.lower() == 'app_id' for k in self.primary_key):
            return None
        return col.name


# ------------------------------------------------------------------------------------------------ table spec

def _column_from_spec(table: str, d: Mapping[str, Any]) -> ColumnMeta:
    try:
        name, typ = d['name'], str(d['type']).strip()
    except KeyError as e:
        raise MetaError(f'table spec: {table}: column without {e.args[0]!r}') from None
    computed = typ.lower() == 'as' or bool(d.get('computed'))
    return ColumnMeta(name=name, type=typ, nullable=bool(d.get('nullable', True)),
                      identity=bool(d.get('identity', False)), default=d.get('default'), computed=computed)


def table_from_spec(name: str, d: Mapping[str, Any], schema: Optional[str] = None) -> TableMeta:
    cols = [_column_from_spec(name, c) for c in d.get('columns', [])]
    if not cols:
        raise MetaError(f'table spec: {name}: no columns')
    names = {c.name.lower() for c in cols}
    pk = list(d.get('primary_key') or [])
    for k in pk:
        if k.lower() not in names:
            raise MetaError(f'table spec: {name}: primary key column {k!r} is not a column')
    fks = []
    for fk in d.get('foreign_keys') or []:
        fks.append(ForeignKey(tuple(fk['columns']), fk['references'], tuple(fk['ref_columns']),
                              str(fk.get('on_delete') or 'NO ACTION').upper()))
    return TableMeta(name=name, schema=schema, columns=cols, primary_key=pk, foreign_keys=fks,
                     unique=[list(u) for u in d.get('unique') or []])


def load_table_spec(path_or_dict: Union[str, Mapping[str, Any]], schema: Optional[str] = None
                    ) -> Dict[str, TableMeta]:
    """Read a table spec (the tables.json format: {"tables": {name: {columns, primary_key, foreign_keys,
    unique}}, "reference_tables": [...]}) into TableMeta by table name (spec order kept)."""
    if isinstance(path_or_dict, (str, bytes)) or hasattr(path_or_dict, '__fspath__'):
        with open(path_or_dict, encoding='utf-8') as f:
            data = json.load(f)
    else:
        data = path_or_dict
    tables = data.get('tables', data) if isinstance(data, Mapping) else None
    if not isinstance(tables, Mapping):
        raise MetaError('table spec: expected {"tables": {name: {...}}}')
    return {name: table_from_spec(name, d, schema) for name, d in tables.items()}


def reference_tables(path_or_dict) -> List[str]:
    if isinstance(path_or_dict, Mapping):
        return list(path_or_dict.get('reference_tables') or [])
    with open(path_or_dict, encoding='utf-8') as f:
        return list(json.load(f).get('reference_tables') or [])


class OwnerLink(NamedTuple):
    """How a written table's rows are tied to their document's app_id: its own `app_id` column (parent None), or
    `column`, a single-column foreign key to `parent_column` of `parent`, a table that has app_id."""
    column: str
    parent: Optional['TableMeta'] = None
    parent_column: Optional[str] = None


def owner_link(metas: Mapping[str, TableMeta], table: str) -> Optional[OwnerLink]:
    """The OwnerLink of `table` among the written tables `metas`, or None when it has neither an app_id column nor
    a single-column FK to a table that has one. The one rule the sink's clean-up, the interrupted-run counts and
    verify share to find a document's rows."""
    m = metas[table]
    if m.column('app_id') is not None:
        return OwnerLink('app_id')
    for fk in m.foreign_keys:
        parent = metas.get(fk.references) or next(
            (pm for pn, pm in metas.items() if pn.lower() == fk.references.lower()), None)
        if parent is not None and parent.column('app_id') is not None and len(fk.columns) == 1:
            return OwnerLink(fk.columns[0], parent, fk.ref_columns[0])
    return None


def fk_tiers(metas: Mapping[str, TableMeta], table_order: Sequence[str]) -> List[List[str]]:
    """Group the written tables (`table_order`, the contract's insertion order) into tiers from the target's
    foreign keys: tier 0 references no other written table; a table's tier is 1 + the highest tier it
    references. Within a tier the contract's order is kept. Self-references are ignored. Raises MetaError on
    an FK cycle or on a written table without metadata."""
    written = [t for t in table_order]
    wset = {t.lower(): t for t in written}
    for t in written:
        if t not in metas:
            raise MetaError(f'fk_tiers: no metadata for written table {t!r}')
    deps = {t: {wset[fk.references.lower()] for fk in metas[t].foreign_keys
                if fk.references.lower() in wset and fk.references.lower() != t.lower()} for t in written}
    tier: Dict[str, int] = {}
    visiting = set()

    def level(t):
        if t in tier:
            return tier[t]
        if t in visiting:
            raise MetaError(f'fk_tiers: foreign key cycle through {t!r}')
        visiting.add(t)
        lv = 0 if not deps[t] else 1 + max(level(p) for p in deps[t])
        visiting.discard(t)
        tier[t] = lv
        return lv

    for t in written:
        level(t)
    n = 1 + max(tier.values()) if tier else 0
    return [[t for t in written if tier[t] == i] for i in range(n)]
