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
from datetime import datetime, timezone
from typing import Any, Dict, List, NamedTuple, Optional

from contracts import convert as cv
from contracts.errors import ContractError, MappingError, describe_exception
from contracts.model import Contract, DATE_TYPES, INT_TYPES, ROW_CREATING, load_contract


class MapResult(NamedTuple):
    app_id: int
    rows: Dict[str, List[Dict[str, Any]]]     # table -> rows, tables in contract insertion order (only non-empty)
    warnings: List[str]                       # data-quality warnings; name tables/columns, never values


# column value status
_MISSING, _PRESENT, _MEANINGFUL, _DEFAULTED = 0, 1, 2, 3
_NULLISH = frozenset({'null', 'none'})
_TRUTHY = frozenset({'y', 'yes', 'true', 't', '1'})

# step codes (ints for a lean hot loop)
S_ENUM, S_CALC, S_C2B, S_B2B, S_NUM, S_UTC = 1, 2, 3, 4, 5, 6
_STEP_CODES = {'enum': S_ENUM, 'calculated_field': S_CALC, 'char_to_bit': S_C2B, 'boolean_to_bit': S_B2B,
               'numbers_only': S_NUM, 'extract_numeric': S_NUM, 'default_getutcdate_if_null': S_UTC}
# extraction kinds
X_ROW, X_REL, X_APP, X_ROLE, X_CURR = 0, 1, 2, 3, 4


def compile_contract(contract) -> 'CompiledContract':
    """Compile a Contract (or a path / dict, loaded first)."""
    if not isinstance(contract, Contract):
        contract = load_contract(contract)
    return CompiledContract(contract)


class _Col:
    """One compiled mapping."""
    __slots__ = ('m', 'column', 'dtype', 'length', 'nullable', 'default', 'has_default', 'default_any',
                 'xkind', 'path', 'attr', 'attr_l', 'rel', 'role', 'role_sub', 'history_fallback', 'steps',
                 'expr', 'enum_exact', 'enum_lower', 'enum_catch', 'bits', 'lenient', 'is_date', 'label',
                 'row_kind', 'row_arg', 'selector', 'calc_then_enum', 'numeric', 'zeroish', 'key')

    def __init__(self, m):
        self.m = m
        self.label = f'{m.target_table}.{m.target_column}' if m.target_column else \
            f'{m.target_table}[mappings[{m.index}]]'


class _Table:
    __slots__ = ('name', 'kind', 'cols', 'rule', 'fk', 'fk_from', 'add_app_id', 'keys', 'parent_rule',
                 'meaningful', 'key_columns', 'bit_defaults')

    def __init__(self, name, kind):
        self.name, self.kind, self.cols = name, kind, []
        self.rule = self.fk = self.fk_from = self.parent_rule = None
        self.add_app_id = False
        self.keys = ()
        self.meaningful = None     # child tables: the columns whose data makes a row worth writing (None: any)
        self.key_columns = ()      # the columns that identify a row of this table within one document
        self.bit_defaults = {}     # warranty rows: the combined char_to_bit column and its default


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
        self._tables: List[_Table] = []
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
            t = _Table(name, kind)
            t.rule = rule
            if kind == 'contact':
                t.add_app_id = rel.foreign_key_column == 'app_id'
                self._contact_table = t
            elif kind == 'child':
                t.fk = rel.foreign_key_column
                t.fk_from = rel.parent_table
            elif kind in ('root', 'app'):
                t.add_app_id = True
            for m in ms:
                t.cols.append(self._compile_col(m, t))
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
        if self._contact_table is not None:
            for t in self._tables:
                if t.kind == 'child' and t.fk_from != self._contact_table.name:
                    t.fk_from = None

    def _compile_col(self, m, table):
        c = self.contract
        col = _Col(m)
        col.column = m.target_column
        col.dtype = m.data_type
        col.length = m.data_length if m.data_length != -1 else None     # SPEC §10.2: -1 = no limit
        col.nullable = m.nullable
        col.is_date = m.data_type in DATE_TYPES
        col.numeric = m.data_type in INT_TYPES or m.data_type in ('decimal', 'float')
        col.zeroish = col.numeric or m.data_type in ('bit', 'boolean')    # a zero alone does not make a record
        col.attr = m.xml_attribute
        col.attr_l = m.xml_attribute.lower()
        names = [s.name for s in m.steps]
        col.lenient = not [n for n in names if n not in ('direct', 'identity_insert', 'extract_date')]
        col.row_kind = col.row_arg = None
        for s in m.steps:
            if s.name in ROW_CREATING:
                col.row_kind, col.row_arg = s.name, s.arg
        col.calc_then_enum = False
        codes = []
        for i, n in enumerate(names):
            code = _STEP_CODES.get(n)
            if code is not None:
                codes.append(code)
            if n == 'calculated_field' and i + 1 < len(names) and names[i + 1] == 'enum':
                col.calc_then_enum = True
        col.steps = tuple(codes)
        col.expr = None
        if S_CALC in codes:
            from contracts.expressions import compile_expression
            col.expr = compile_expression(m.expression)
        col.enum_exact = col.enum_lower = col.enum_catch = None
        if S_ENUM in codes:
            tab = c.enum_mappings[m.enum_type]
            col.enum_exact = {str(k): v for k, v in tab.items() if k != ''}
            col.enum_lower = {}
            for k, v in col.enum_exact.items():
                col.enum_lower.setdefault(k.lower(), v)
            col.enum_catch = tab.get('')
        col.bits = None
        if S_C2B in codes:
            col.bits = c.bit_conversions['char_to_bit']
        elif S_B2B in codes:
            col.bits = {str(k).lower(): v for k, v in c.bit_conversions['boolean_to_bit'].items()}
        # default value, converted once
        col.has_default = m.has_default
        col.default_any = bool(m.has_default)
        col.default = None
        if m.has_default:
            d = m.default_value
            if col.dtype == 'string':
                d = cv.to_string(str(d), col.length)
            elif col.dtype in ('bit', 'boolean'):
                d = cv.to_int(d) if cv.to_int(d) is not None else cv.to_bit(d)
            else:
                d = cv.convert(d if not isinstance(d, float) else d, col.dtype, m.data_length)
            if d is None or d == '':
                col.has_default = False
            col.default = d
        # defaults of enum/bit chains apply only to NOT NULL columns (SPEC §1.9)
        if col.has_default and (S_ENUM in codes or S_C2B in codes or S_B2B in codes) and col.nullable:
            col.has_default = False
        # extraction
        col.path = m.xml_path
        col.rel = ()
        col.role = col.role_sub = None
        col.history_fallback = 'add_history' in names
        first = names[0] if names else None
        cr = self._contact_rule
        row_path = table.rule.child_path if table.kind in ('contact', 'child') else None
        if first in ('last_valid_pr_contact', 'last_valid_sec_contact', 'authu_contact'):
            col.xkind = X_ROLE
            col.role = first
            col.rel = self._rel_from(m.xml_path, cr.child_path, m)
            if col.rel:
                sub = self._sub_rules.get(col.rel[0]) if len(col.rel) == 1 else None
                col.role_sub = sub
        elif first == 'curr_address_only':
            col.xkind = X_CURR
            col.rel = self._rel_from(m.xml_path, cr.child_path, m)
            if len(col.rel) != 1:
                raise ContractError(f"{m.label}: key 'xml_path': curr_address_only needs a path one element below the "
                                    f"contact element ({cr.child_path})")
            col.role_sub = self._sub_rules.get(col.rel[0])
        elif row_path is not None and m.xml_path == row_path:
            col.xkind = X_ROW
        elif row_path is not None and m.xml_path.startswith(row_path + '/'):
            col.xkind = X_REL
            col.rel = tuple(m.xml_path[len(row_path) + 1:].split('/'))
        else:
            col.xkind = X_APP
        col.selector = (table.rule is not None and col.xkind == X_ROW and m.xml_attribute in table.rule.required)
        # key columns convert strictly: an identity column, or the identity attribute of a contact row (con_id)
        col.key = ('identity_insert' in names
                   or (table.kind == 'contact' and col.xkind == X_ROW
                       and table.rule.required.get(m.xml_attribute) is True))
        return col

    @staticmethod
    def _rel_from(path, base, m):
        if path == base:
            return ()
        if path.startswith(base + '/'):
            return tuple(path[len(base) + 1:].split('/'))
        raise ContractError(f"{m.label}: key 'xml_path': a contact-role mapping must read the contact element or an "
                            f"element below it ({base})")

    # ------------------------------------------------------------------------------------------------------------
    # map time

    def map(self, root, app_id: Optional[int] = None) -> MapResult:
        if hasattr(root, 'getroot'):
            root = root.getroot()
        d = _Doc(self, root)
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
                    r, meaningful = d.one_row(t)
                    if r is not None:
                        rows[t.name] = [r]
                        anything = anything or meaningful
                elif kind == 'contact':
                    out = d.contact_rows(t)
                    if out:
                        rows[t.name] = out
                        anything = True
                elif kind == 'child':
                    out = d.child_rows(t, rows)
                    if out:
                        rows[t.name] = out
                        anything = True
                else:
                    out = d.kv_rows(t)
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


def _unique_rows(t, rows):
    """The rows of one table of one document with distinct keys: an identical repetition collapses; two different
    rows with the same key fail the document (writing both would let one silently replace the other)."""
    cols = t.key_columns
    if not cols or len(rows) < 2:
        return rows
    seen = {}
    out = []
    for r in rows:
        k = tuple(r.get(c) for c in cols)
        prev = seen.get(k)
        if prev is None:
            seen[k] = r
            out.append(r)
        elif prev != r:
            raise MappingError(f'{t.name}: two different rows with the same key ({", ".join(cols)}) in one '
                               f'document')
    return out


class _Doc:
    """Per-document state: element cache, contacts, warnings."""
    __slots__ = ('cc', 'root', 'cache', 'lower', 'warnings', 'app', 'app_id', 'valid', 'primary', 'valid_rows',
                 'memo', 'tagidx')

    def __init__(self, cc, root):
        self.cc = cc
        self.root = root
        self.cache = {}
        self.lower = {}
        self.warnings = []
        self.memo = {}
        self.tagidx = None

    # -- elements and attributes ------------------------------------------------------------------------------
    def elems(self, path):
        r = self.cache.get(path)
        if r is None:
            parent, _, tag = path.rpartition('/')
            if not parent:
                r = [self.root] if self.root.tag == tag else []
            else:
                r = []
                for p in self.elems(parent):
                    r.extend(p.iterchildren(tag))
            self.cache[path] = r
        return r

    def last(self, path):
        r = self.elems(path)
        return r[-1] if r else None

    def get(self, el, attr, attr_l):
        """Attribute value, exact name first, then case-insensitive (SPEC §1.2)."""
        v = el.get(attr)
        if v is None:
            lm = self.lower.get(el)
            if lm is None:
                lm = {k.lower(): x for k, x in el.items()}
                self.lower[el] = lm
            v = lm.get(attr_l)
        return v

    # -- contacts (one filter for contact, address and employment rows: SPEC §10.5) -----------------------------
    def _type_rank(self, el):
        cc = self.cc
        v = el.get(cc._contact_rule.type_attribute)
        if v is None:
            return -1
        v = v.strip().upper()
        try:
            return cc._contact_types_u.index(v)
        except ValueError:
            return -1

    def _passes_required(self, el, rule):
        for a, want in rule.required.items():
            v = el.get(a)
            if v is None or not v.strip():
                return False
            if want is not True and v.strip().upper() not in {w.upper() for w in want}:
                return False
        return True

    def contacts(self):
        """Valid contacts: required attributes, meaningful data, deduplicated by identity (con_id): lower type index
        wins, equal priority -> later element wins; order = first appearance of each identity."""
        cc = self.cc
        rule = cc._contact_rule
        best = {}
        order = []
        mattrs = cc._meaningful_contact_attrs
        for el in self.elems(rule.child_path):
            if not self._passes_required(el, rule):
                continue
            if mattrs:
                ok = False
                for a in mattrs:
                    v = self.get(el, a, a.lower())
                    if v is not None and v.strip():
                        ok = True
                        break
                if not ok:
                    continue
            rank = self._type_rank(el)
            key = tuple(el.get(a).strip() for a in cc._contact_true_attrs)
            cur = best.get(key)
            if cur is None:
                order.append(key)
                best[key] = (rank, el)
            elif rank <= cur[0]:
                best[key] = (rank, el)
        self.valid = [best[k][1] for k in order]
        prim = None
        for k in order:
            if best[k][0] == 0:
                prim = best[k][1]
                break
        if prim is None and self.valid:
            prim = self.valid[0]
        self.primary = prim
        self.valid_rows = {}

    def _role_elements(self, role):
        """Contacts of a role in document order: PR = type[0] with identity attributes, SEC = type[1] likewise,
        AUTHU = type[1] without the identity check (SPEC §1.3)."""
        cc = self.cc
        idx = 0 if role == 'last_valid_pr_contact' else 1
        check_id = role != 'authu_contact'
        out = []
        for el in self.elems(cc._contact_rule.child_path):
            if self._type_rank(el) != idx:
                continue
            if check_id:
                ok = True
                for a in cc._contact_true_attrs:
                    v = el.get(a)
                    if v is None or not v.strip():
                        ok = False
                        break
                if not ok:
                    continue
            out.append(el)
        return out

    # -- extraction ------------------------------------------------------------------------------------------------
    def _from_contact(self, col, el):
        rel = col.rel
        if not rel:
            return self.get(el, col.attr, col.attr_l)
        sub = col.role_sub
        if sub is not None:             # a filtered child (address): preferred type first, first non-empty value
            kids = list(el.iterchildren(rel[0]))
            want = sub.type_values[0]
            pref = [k for k in kids if k.get(sub.type_attribute) == want] or kids
            val = None
            for k in pref:
                val = self.get(k, col.attr, col.attr_l)
                if val is not None and val.strip():
                    return val
            return val
        cur = [el]
        for tag in rel:
            nxt = []
            for e in cur:
                nxt.extend(e.iterchildren(tag))
            cur = nxt
        if not cur:
            return None
        return self.get(cur[-1], col.attr, col.attr_l)

    def extract(self, col, row_el):
        k = col.xkind
        if k == X_APP:
            e = self.last(col.path)
            return self.get(e, col.attr, col.attr_l) if e is not None else None
        if k == X_ROW:
            return self.get(row_el, col.attr, col.attr_l)
        if k == X_REL:
            cur = [row_el]
            for tag in col.rel:
                nxt = []
                for e in cur:
                    nxt.extend(e.iterchildren(tag))
                cur = nxt
            return self.get(cur[-1], col.attr, col.attr_l) if cur else None
        if k == X_ROLE:
            els = self.cache.get(col.role)
            if els is None:
                els = self.cache[col.role] = self._role_elements(col.role)
            if not els:
                return None
            v = self._from_contact(col, els[-1])
            if col.history_fallback and (v is None or not v.strip() or v.strip().lower() in _NULLISH):
                for el in reversed(els[:-1]):
                    w = self._from_contact(col, el)
                    if w is not None and w.strip() and w.strip().lower() not in _NULLISH:
                        return w
            return v
        # X_CURR: the row's contact (or the primary contact for app-level tables) -> its last preferred-type child
        el = row_el if row_el is not None else self.primary
        if el is None:
            return None
        kids = list(el.iterchildren(col.rel[0]))
        sub = col.role_sub
        if sub is not None:
            want = sub.type_values[0]
            kids = [k for k in kids if k.get(sub.type_attribute) == want]
        return self.get(kids[-1], col.attr, col.attr_l) if kids else None

    # -- expression lookups ----------------------------------------------------------------------------------------
    def _tag_last(self, tag_l):
        cc = self.cc
        for p in reversed(cc._known_by_tag.get(tag_l, ())):
            e = self.last(p)
            if e is not None:
                return e
        if self.tagidx is None:
            idx = {}
            for e in self.app.iter():
                t = e.tag
                if isinstance(t, str):
                    idx[t.lower()] = e
            self.tagidx = idx
        return self.tagidx.get(tag_l)

    def lookup_for(self, own, row_scope):
        """A lookup for an expression evaluated on element ``own``. ``row_scope``: a contact/address/employment row,
        whose context is the element's own attributes (plus explicitly prefixed names). Values read at application
        level are stripped, as the existing system's parser stored them (SPEC §1.4: ``'MARINE '`` is ``'MARINE'``);
        a row's own attributes are used as they are, as there."""
        cc = self.cc
        # keyed by the element itself, not id(own): lxml element proxies are transient (child rows iterate
        # iterchildren()), so an id() can be reused by the next element and return the previous one's values.
        # Holding the proxy in the key keeps it alive for this document, and lxml returns that same proxy for
        # its node while it lives.
        memo = self.memo.setdefault((own, row_scope), {})

        def lookup(name):
            try:
                return memo[name]
            except KeyError:
                pass
            nl = name.lower()
            v = None
            if '.' in nl:
                prefix, attr = nl.split('.', 1)
                if own is not None and own.tag.lower() == prefix:
                    el = own
                elif prefix in cc._app_aliases:
                    el = self.app
                elif prefix in cc._contact_aliases:
                    el = self.primary
                else:
                    el = self._tag_last(prefix)
                if el is not None:
                    v = self.get(el, name.split('.', 1)[1], attr)
                    if v is not None and (el is not own or not row_scope):
                        v = v.strip()
            else:
                if own is not None:
                    v = self.get(own, name, nl)
                    if v is not None and not row_scope:
                        v = v.strip()
                if v is None and not row_scope:
                    for el in (self.app, self.primary):
                        if el is not None:
                            v = self.get(el, name, nl)
                            if v is not None:
                                v = v.strip()
                                break
                    if v is None:
                        for p in cc._known_paths:
                            e = self.last(p)
                            if e is not None:
                                v = self.get(e, name, nl)
                                if v is not None:
                                    v = v.strip()
                                    break
            memo[name] = v
            return v
        return lookup

    # -- one value -------------------------------------------------------------------------------------------------
    def value(self, col, row_el, row_scope):
        """(value, status) for one column. An unexpected exception fails the document with the column's name."""
        try:
            return self._value(col, row_el, row_scope)
        except MappingError:
            raise
        except Exception as ex:
            raise MappingError(f'{col.label}: internal error {describe_exception(ex)}') from None

    def _value(self, col, row_el, row_scope):
        raw = self.extract(col, row_el)
        v = raw
        src = raw is not None and raw.strip() != ''
        steps = col.steps
        n = len(steps)
        i = 0
        if raw is None and col.xkind >= X_ROLE and n and steps[0] != S_ENUM:
            n = 0                   # no contact of that role: the chain stops here (SPEC §1.4)
        while i < n:
            st = steps[i]
            if st == S_ENUM:
                key = '' if v is None else (v if type(v) is str else str(v)).strip()
                r = col.enum_exact.get(key)
                if r is None and key:
                    r = col.enum_lower.get(key.lower())
                if r is None:
                    r = col.enum_catch
                v = r
            elif st == S_C2B:
                key = '' if v is None else str(v).strip()
                r = col.bits.get(key)
                if r is None:
                    r = col.bits.get(key.upper(), 0)
                v = r
            elif st == S_B2B:
                v = col.bits.get('' if v is None else str(v).strip().lower(), 0)
            elif st == S_NUM:
                if v is not None:
                    s = v if type(v) is str else str(v)
                    digits = ''.join(ch for ch in s if '0' <= ch <= '9')       # ASCII digits only
                    if not digits:
                        if s.strip() and col.nullable:
                            return None, _MISSING   # a value without digits: NULL, not the default
                        v = None
                    elif col.dtype == 'string':
                        v = digits                      # SPEC §10.1: leading zeros survive
                    else:
                        v = int(digits)
            elif st == S_CALC:
                v = col.expr.evaluate(self.lookup_for(row_el if row_scope else self._own(col), row_scope))
                if col.calc_then_enum:
                    if v is None or v == '':
                        v = raw                         # conditional enum fallback: enum of the XML value
                    else:
                        i += 1                          # a computed value skips the enum step
                src = v is not None and v != ''
            elif st == S_UTC:
                if v is None or (type(v) is str and not v.strip()):
                    v = datetime.now(timezone.utc).replace(tzinfo=None)
                    src = True
            if v is None and st != S_ENUM and st != S_UTC and not (i + 1 < n and steps[i + 1] == S_ENUM):
                break
            i += 1
        # final conversion
        bad = False
        if v is not None:
            dt = col.dtype
            if type(v) is str or dt == 'string':
                if dt == 'string':
                    v = cv.to_string(v, col.length)
                    if v == '':
                        v = None
                elif v.strip() == '':
                    v = None
                elif col.key and dt in INT_TYPES:
                    c = cv.to_key_int(v)
                    if c is None:
                        raise MappingError(f'{col.label}: key value is not an integer (shape '
                                           f'{cv.shape(v.strip())!r})')
                    v = c
                else:
                    c = cv.convert(v, dt, col.length, col.lenient)
                    if c is None:
                        bad = True
                        self._bad(col, v)
                    v = c
            elif dt == 'decimal':
                v = cv.to_decimal(v, col.length)
            elif dt in INT_TYPES:
                v = cv.to_int(v)
            elif col.is_date:
                v = cv.to_datetime(v)
            elif dt in ('bit', 'boolean') and type(v) is not int:
                v = cv.to_bit(v)
        if v is None:
            if col.has_default and not (bad and col.nullable):
                return col.default, _DEFAULTED
            return None, _MISSING
        return v, (_MEANINGFUL if src else _PRESENT)

    def _own(self, col):
        if col.xkind == X_APP:
            return self.last(col.path)
        return None

    def _bad(self, col, raw):
        what = 'unparseable date' if col.is_date else f'not a valid {col.dtype}'
        fix = 'default applied' if col.has_default and not col.nullable else 'left empty'
        self.warnings.append(f'{col.label}: {what} (shape {cv.shape(raw.strip())!r}); {fix}')

    # -- rows ------------------------------------------------------------------------------------------------------
    def one_row(self, t):
        row = {}
        keep = t.kind == 'root'
        meaningful = False
        for col in t.cols:
            v, st = self.value(col, None, False)
            if v is not None:
                row[col.column] = v
                if st == _MEANINGFUL or st == _PRESENT:
                    if col.column != 'app_id':
                        keep = True
                        meaningful = True
        if not keep:
            return None, False
        row['app_id'] = self.app_id
        return row, meaningful

    def contact_rows(self, t):
        out = []
        for el in self.valid:
            row = {}
            for col in t.cols:
                v, st = self.value(col, el, col.xkind != X_APP)
                if v is not None:
                    row[col.column] = v
            if t.add_app_id:
                row['app_id'] = self.app_id
            self.valid_rows[id(el)] = row
            out.append(row)
        return _unique_rows(t, out)

    def child_rows(self, t, rows):
        rule = t.rule
        tag = rule.element_name
        out = []
        fk = t.fk
        for parent in self.valid:
            prow = self.valid_rows.get(id(parent))
            if prow is not None and fk in prow:
                key = prow[fk]
            else:
                raw = parent.get(fk)
                if raw is None or not raw.strip():
                    continue
                key = cv.to_key_int(raw)
                if key is None:
                    raise MappingError(f'{t.name}.{fk}: key value of the parent contact is not an integer (shape '
                                       f'{cv.shape(raw.strip())!r})')
            meaningful = t.meaningful
            for el in parent.iterchildren(tag):
                if not self._passes_required(el, rule):
                    continue
                row = {}
                keep = False
                for col in t.cols:
                    v, st = self.value(col, el, col.xkind != X_APP)
                    if v is not None:
                        row[col.column] = v
                        if (st == _MEANINGFUL and not col.selector and not (col.zeroish and v == 0)
                                and (meaningful is None or col.column in meaningful)):
                            keep = True
                if not keep:        # no meaningful data: only keys, defaults or other details (SPEC §1.9, §10.3)
                    continue
                row[fk] = key
                out.append(row)
        return _unique_rows(t, out)

    def kv_rows(self, t):
        app_id = self.app_id
        keyed = {}
        groups = {}
        notes = {}
        for col in t.cols:
            kind = col.row_kind
            if kind == 'add_score':
                v, st = self.value(col, None, False)
                if v is not None and st != _DEFAULTED:
                    if type(v) is not int:
                        v = cv.to_int(v)
                        if v is None:
                            continue
                    keyed[('s', col.row_arg)] = {'app_id': app_id, 'score_identifier': col.row_arg, 'score': v}
            elif kind == 'add_history' or kind == 'add_report_lookup' or kind == 'add_indicator':
                raw = self._raw_through_chain(col)
                if raw is None:
                    continue
                s = raw.strip()
                if not s or s.lower() in _NULLISH:
                    continue
                if kind == 'add_history':
                    name = f'[{col.attr}]'
                    keyed[('h', name)] = {'app_id': app_id, 'name': name,
                                          'source': '[' + col.path.rsplit('/', 1)[-1] + ']', 'value': s}
                elif kind == 'add_report_lookup':
                    keyed[('r', col.attr)] = {'app_id': app_id, 'name': col.attr, 'value': s,
                                              'source_report_key': col.row_arg}
                elif s.lower() in _TRUTHY:
                    keyed[('i', col.row_arg)] = {'app_id': app_id, 'indicator': col.row_arg, 'value': '1'}
            elif kind == 'policy_exceptions':
                raw = self._raw_through_chain(col)
                s = raw.strip() if raw is not None else ''
                if s.lower() in _NULLISH:
                    s = ''
                if col.row_arg is None:
                    if s:
                        notes[col.column or 'notes'] = s
                elif s:
                    groups.setdefault(('p', col.row_arg), {'app_id': app_id, 'policy_exception_type_enum':
                                                           col.row_arg})[col.column or 'reason_code'] = s
            elif kind == 'warranty_field':
                g = groups.setdefault(('w', col.row_arg), [{'app_id': app_id, 'warranty_type_enum': col.row_arg},
                                                           False])
                if col.bits is not None:
                    v, st = self.value(col, None, False)
                    g[0][col.column] = v if v is not None else 0
                else:
                    raw = self.extract(col, None)
                    s = raw.strip() if raw is not None else ''
                    if s:
                        g[0][col.column] = s
                        if s.lower() not in _NULLISH:
                            g[1] = True
            elif kind == 'add_collateral':
                g = groups.setdefault(('c', col.row_arg), [{'app_id': app_id, 'sort_order': col.row_arg}, False, []])
                v, st = self.value(col, None, False)
                if st == _DEFAULTED:
                    g[2].append((col.column, v))       # defaults only once the slot is known to have data
                    continue
                if v is not None:
                    g[0][col.column] = v
                    if st == _MEANINGFUL and col.expr is None and col.bits is None:
                        if col.numeric:
                            if v > 0:
                                g[1] = True
                        elif not (type(v) is str and v.strip().lower() in _NULLISH):
                            g[1] = True
        out = list(keyed.values())
        for (k, _arg), g in groups.items():
            if k == 'p':
                g.update(notes)
                out.append(g)
            elif k == 'w':
                if g[1]:
                    row = g[0]
                    for c, dv in t.bit_defaults.items():
                        row.setdefault(c, dv)
                    out.append(row)
            elif k == 'c':
                if g[1]:
                    row = g[0]
                    for c, v in g[2]:
                        row.setdefault(c, v)
                    out.append(row)
        return out

    def _raw_through_chain(self, col):
        """For string-valued key/value rows: the extracted value after any transforming steps, as text."""
        if not col.steps:
            return self.extract(col, None)
        v, st = self.value(col, None, False)
        if v is None or st == _DEFAULTED:
            return None
        return v if type(v) is str else (v.isoformat(sep=' ') if isinstance(v, datetime) else str(v))
