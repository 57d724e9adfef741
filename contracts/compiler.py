"""Compile a contract once (per worker) into a fast mapper: ``compile_contract(contract).map(root) -> MapResult``.

How a table's rows are built is derived from the contract, never from table or element names:

* the first table of ``table_insertion_order`` is the *root* table: one row per application, always written;
* a table that is the ``child_table`` of a relationship whose ``xml_child_path`` is the path of an
  ``element_filtering`` rule gets one row per element that passes that rule: the ``contact`` rule's table one row per
  valid (deduplicated) contact; a rule under the contact element (address, employment, ...) one row per filtered
  child of a valid contact, keyed by the relationship's ``foreign_key_column`` taken from the contact's row;
* a table whose mappings are all row-creating (``add_score``, ``add_history``, ``add_collateral(n)``, ...) gets the
  key/value or slot rows those steps make;
* every other table gets one row per application, dropped when nothing but keys and defaults would be written.

Element access is direct navigation from the root along the contract's absolute paths (``iterchildren(tag)``), cached
per document; no ``//`` searches, no XPath compiled per document. See ``docs/design.md`` and SPEC §1.
"""
from typing import Any, Dict, List, NamedTuple, Optional

from contracts import convert as cv
from contracts import rows as rb
from contracts.columns import X_ROW, compile_column
from contracts.document import Document
from contracts.errors import MappingError, describe_exception
from contracts.loader import load_contract
from contracts.model import Contract, ROW_CREATING
from contracts.rows import Table


class MapResult(NamedTuple):
    app_id: int
    rows: Dict[str, List[Dict[str, Any]]]     # table -> rows, tables in contract insertion order (only non-empty)
    warnings: List[str]                       # data-quality warnings; name tables/columns, never values



def compile_contract(contract) -> 'CompiledContract':
    """Compile a Contract (or a path / dict, loaded first)."""
    if not isinstance(contract, Contract):
        contract = load_contract(contract)
    return CompiledContract(contract)


class CompiledContract:
    """The compiled mapper. Immutable after construction; safe to share between threads."""

    def __init__(self, contract: Contract):
        self.contract = contract
        c = contract
        self.tables: List[str] = c.tables()
        self._root_path = '/' + c.root_element
        self._app_path = c.application_path
        self._app_aliases = {c.source_application_table.lower(), c.application_path.rsplit('/', 1)[-1].lower(),
                             'application'}
        self._rules = {r.child_path: r for r in c.filter_rules}
        self._contact_rule = c.rule('contact')
        cr = self._contact_rule
        self._contact_aliases = {'contact', cr.element_name.lower()}
        self._contact_true_attrs = tuple(a for a, v in cr.required.items() if v is True)
        self._contact_types_u = tuple(t.upper() for t in cr.type_values)
        # rules for elements right under the contact element: element name -> rule
        self._sub_rules = {r.element_name: r for r in c.filter_rules if r.parent_path == cr.child_path}
        app_m = c.app_id_mapping
        self._app_id_path, self._app_id_attr = app_m.xml_path, app_m.xml_attribute
        self._compile_tables()
        self.stop_after_path: Optional[str] = self._stop_after()
        # known app-level element paths: for unprefixed / element-prefixed names in expressions
        paths = []
        for m in c.mappings:
            if m.xml_path not in paths:
                paths.append(m.xml_path)
        self._known_paths = tuple(paths)
        self._known_by_tag = {}
        for p in paths:
            self._known_by_tag.setdefault(p.rsplit('/', 1)[-1].lower(), []).append(p)

    # ------------------------------------------------------------------------------------------------------------
    # compile time

    def _stop_after(self):
        paths = {m.xml_path for m in self.contract.mappings}
        paths |= {r.child_path for r in self.contract.filter_rules}
        # candidates: the application element and its ancestors (single elements; a repeated element such as a
        # contact cannot be a stop point: the parser would stop after the first one)
        segs = self._app_path.split('/')
        cands = ['/'.join(segs[:i]) for i in range(len(segs), 1, -1)]
        best = None
        for cand in cands:
            if all(p == cand or cand.startswith(p + '/') or p.startswith(cand + '/') for p in paths):
                best = cand
                break
        return best

    def _compile_tables(self):
        c = self.contract
        first = c.table_order[0]
        rel_by_child = {r.child_table: r for r in c.relationships}
        by_table = {}
        for m in c.mappings:
            by_table.setdefault(m.target_table, []).append(m)
        self._tables: List[Table] = []
        self._contact_table = None
        for name in self.tables:
            ms = by_table[name]
            rule = None
            rel = rel_by_child.get(name)
            if rel is not None and rel.xml_child_path in self._rules:
                rule = self._rules[rel.xml_child_path]
            if all(any(s.name in ROW_CREATING for s in m.steps) for m in ms):
                kind = 'kv'
            elif name == first:
                kind = 'root'
            elif rule is not None and rule is self._contact_rule:
                kind = 'contact'
            elif rule is not None and rule.parent_path == self._contact_rule.child_path:
                kind = 'child'
            else:
                kind = 'app'
                rule = None
            t = Table(name, kind)
            t.rule = rule
            if kind == 'contact':
                t.add_app_id = rel.foreign_key_column == 'app_id'
                self._contact_table = t
            elif kind == 'child':
                t.fk = rel.foreign_key_column
            elif kind in ('root', 'app'):
                t.add_app_id = True
            for m in ms:
                t.cols.append(compile_column(self, m, t))
            if kind in ('contact', 'child'):
                sel = [col.column for col in t.cols if col.selector]
                t.keys = tuple(sel)
            if kind == 'contact':
                t.key_columns = tuple(col.column for col in t.cols if col.key)
            elif kind == 'child':
                t.key_columns = (t.fk,) + t.keys
                written = {col.column for col in t.cols}
                present = frozenset(c for c in (rule.meaningful_columns or ()) if c in written)
                t.meaningful = present or None
            elif kind == 'kv':
                # warranty rows: the combined char_to_bit column gets its default on every row (SPEC §1.3)
                for col in t.cols:
                    if col.row_kind == 'warranty_field' and col.bits is not None and col.column:
                        t.bit_defaults[col.column] = col.default if col.default is not None else 0
            self._tables.append(t)
        # contact "meaningful data" attributes: contact-table columns whose defaults are excluded when the record is
        # empty (CC/RL: first_name, last_name, ssn, birth_date); else every attribute the contact table reads
        cr = self._contact_rule
        attrs = []
        if self._contact_table is not None:
            own = [col for col in self._contact_table.cols if col.xkind == X_ROW]
            attrs = [col.attr for col in own if col.m.exclude_default_when_empty]
            if not attrs:
                attrs = [col.attr for col in own if col.attr not in cr.required]
        self._meaningful_contact_attrs = tuple(dict.fromkeys(attrs))

    # ------------------------------------------------------------------------------------------------------------
    # map time

    def map(self, root, app_id: Optional[int] = None, trace=None) -> MapResult:
        """The rows of one parsed document. `trace` (a `contracts.explain.Trace`) records every step."""
        if hasattr(root, 'getroot'):
            root = root.getroot()
        d = Document(self, root, trace)
        warnings = d.warnings
        apps = d.elems(self._app_path)
        if not apps:
            raise MappingError(f'application element {self._app_path} not found')
        d.app = apps[-1]
        xml_id = None
        e = d.last(self._app_id_path)
        if e is not None:
            raw = d.get(e, self._app_id_attr, self._app_id_attr.lower())
            xml_id = cv.to_int(raw) if raw is not None else None
            if xml_id is not None and (raw.strip() != str(xml_id) or xml_id <= 0):
                xml_id = None
        if app_id is None:
            if xml_id is None:
                raise MappingError(f'no app_id: {self._app_id_path}@{self._app_id_attr} missing, not a positive '
                                   f'integer')
            app_id = xml_id
        elif xml_id is not None and xml_id != app_id:
            warnings.append(f'app_id of the source differs from {self._app_id_path}@{self._app_id_attr}; the '
                            f'source app_id is used')
        d.app_id = app_id
        d.contacts()
        rows: Dict[str, List[dict]] = {}
        anything = False
        for t in self._tables:
            try:
                kind = t.kind
                if kind == 'root' or kind == 'app':
                    r, meaningful = rb.one_row(d, t)
                    if r is not None:
                        rows[t.name] = [r]
                        anything = anything or meaningful
                elif kind == 'contact':
                    out = rb.contact_rows(d, t)
                    if out:
                        rows[t.name] = out
                        anything = True
                elif kind == 'child':
                    out = rb.child_rows(d, t)
                    if out:
                        rows[t.name] = out
                        anything = True
                else:
                    out = rb.kv_rows(d, t)
                    if out:
                        rows[t.name] = out
                        anything = True
            except MappingError:
                raise
            except Exception as ex:      # a bug or an unforeseen document shape: the document fails, whole
                raise MappingError(f'{t.name}: internal error {describe_exception(ex)}') from None
        if not anything:
            raise MappingError('nothing mapped: no column of any table has a value')
        return MapResult(app_id, rows, warnings)
