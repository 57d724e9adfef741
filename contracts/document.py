"""The state of one document while it is mapped: element navigation along the contract's absolute paths (cached),
case-insensitive attribute look-up, the valid contacts (one filter for contact, address and employment rows:
SPEC §10.5), value extraction, and the name look-ups of calculated fields."""
from contracts.columns import NULLISH, X_APP, X_REL, X_ROLE, X_ROW, column_value


def _required_text(rule):
    return ', '.join(f'{a}' if v is True else f'{a} in {"/".join(v)}' for a, v in rule.required.items())


_ROLE_NAMES = {'last_valid_pr_contact': 'valid PR contact', 'last_valid_sec_contact': 'valid SEC contact',
               'authu_contact': 'AUTHU contact'}


class Document:
    """Per-document state of one mapping: element cache, valid contacts, expression look-ups, warnings."""
    __slots__ = ('cc', 'root', 'cache', 'lower', 'warnings', 'app', 'app_id', 'valid', 'primary', 'valid_rows',
                 'memo', 'tagidx', 'trace')

    def __init__(self, cc, root, trace=None):
        self.cc = cc
        self.root = root
        self.cache = {}
        self.lower = {}
        self.warnings = []
        self.memo = {}
        self.tagidx = None
        self.trace = trace          # `explain` records each column's steps and each row decision here

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
        """Attribute value, exact name first, then case-insensitive (SPEC §1.2): of the names that differ only in
        case, the last on the element. The miss path maps each lowercased name of the element to its name (its
        values are read only when asked for: most misses are attributes the document does not have at all)."""
        v = el.get(attr)
        if v is None:
            names = self.lower.get(el)
            if names is None:
                keys = el.keys()
                names = self.lower[el] = dict(zip(map(str.lower, keys), keys))
            name = names.get(attr_l)
            if name is not None:
                v = el.get(name)
        return v

    def attr(self, el, name):
        """An attribute the contract names in a filter rule, looked up like every value (`get`)."""
        return self.get(el, name, name.lower())

    # -- contacts (one filter for contact, address and employment rows: SPEC §10.5) -----------------------------
    def _is_preferred(self, el, rule):
        """The element has the preferred type of its rule (the first of its list: CURR), compared as the filter
        compares it (blanks around it and case do not matter)."""
        v = self.attr(el, rule.type_attribute)
        return v is not None and v.strip().upper() == rule.type_values[0].strip().upper()

    def _type_rank(self, el):
        cc = self.cc
        v = self.attr(el, cc._contact_rule.type_attribute)
        if v is None:
            return -1
        v = v.strip().upper()
        try:
            return cc._contact_types_u.index(v)
        except ValueError:
            return -1

    def _passes_required(self, el, rule):
        for a, want in rule.required.items():
            v = self.attr(el, a)
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
        dup = set()
        mattrs = cc._meaningful_contact_attrs
        tr = self.trace
        invalid = 0
        for el in self.elems(rule.child_path):
            if not self._passes_required(el, rule):
                invalid += 1
                if tr is not None:
                    tr.note(None, el, 'not a valid contact: a required attribute is missing, empty or not in the '
                                      f'list ({_required_text(rule)})')
                continue
            if mattrs:
                ok = False
                for a in mattrs:
                    v = self.get(el, a, a.lower())
                    if v is not None and v.strip():
                        ok = True
                        break
                if not ok:
                    invalid += 1
                    if tr is not None:
                        tr.note(None, el, f'not a valid contact: none of {", ".join(mattrs)} has a value')
                    continue
            rank = self._type_rank(el)
            key = tuple(self.attr(el, a).strip() for a in cc._contact_true_attrs)
            cur = best.get(key)
            if cur is None:
                order.append(key)
                best[key] = (rank, el)
                continue
            if key not in dup:
                dup.add(key)
                self._warn_duplicate_identity()
            if rank <= cur[0]:
                if tr is not None:
                    tr.note(None, cur[1], 'replaced by a later contact with the same identity and the same or a '
                                          'higher-priority type')
                best[key] = (rank, el)
            elif tr is not None:
                tr.note(None, el, 'dropped: a contact with the same identity has a higher-priority type')
        if invalid:
            self._warn_invalid_contacts(invalid, rule, mattrs)
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

    def _warn_invalid_contacts(self, n, rule, mattrs):
        """Contact elements the filter does not keep make no contact, address or employment rows, as the contract
        says; the document says how many (the existing system's validator warned of invalid roles too). No value
        in it."""
        cc = self.cc
        table = cc._contact_table.name if cc._contact_table is not None else 'contact'
        meaningful = f', or none of {", ".join(mattrs)} has a value' if mattrs else ''
        self.warnings.append(f'{table}: {n} contact element(s) not valid ({_required_text(rule)} missing, empty or '
                             f'not in the list{meaningful}): no contact, address or employment rows from them')

    def _warn_duplicate_identity(self):
        """Two valid contact elements with one identity (a PR and an AUTHU sharing a con_id): one filter keeps one
        of them (SPEC §10.5), so the other's contact, address and employment rows are not written; the existing
        system wrote both elements' addresses and employments under that con_id. Not silent: a warning (no value
        in it)."""
        cc = self.cc
        table = cc._contact_table.name if cc._contact_table is not None else 'contact'
        field = f'{table}.{"/".join(cc._contact_true_attrs)}'
        self.warnings.append(f'{field}: two valid contact elements share one identity; one is kept (the higher-'
                             f'priority type, else the later element), the other\'s contact, address and employment '
                             f'rows are not written')

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
                    v = self.attr(el, a)
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
            pref = [k for k in kids if self._is_preferred(k, sub)] or kids
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
            if col.history_fallback and (v is None or not v.strip() or v.strip().lower() in NULLISH):
                for el in reversed(els[:-1]):
                    w = self._from_contact(col, el)
                    if w is not None and w.strip() and w.strip().lower() not in NULLISH:
                        return w
            return v
        # X_CURR: the row's contact (or the primary contact for app-level tables) -> its last preferred-type child
        el = row_el if row_el is not None else self.primary
        if el is None:
            return None
        kids = list(el.iterchildren(col.rel[0]))
        sub = col.role_sub
        if sub is not None:
            kids = [k for k in kids if self._is_preferred(k, sub)]
        return self.get(kids[-1], col.attr, col.attr_l) if kids else None

    def absent(self, col, row_el):
        """Why `extract` found no value (it returned None), for `explain`: the element the value comes from is not
        in the document, or it has no such attribute. Value-free; never called while mapping for a run."""
        from contracts.explain import element_label
        k = col.xkind
        no_attr = f'no attribute {col.attr!r} on '
        if k == X_APP:
            e = self.last(col.path)
            return f'no element {col.path}' if e is None else no_attr + element_label(e)
        if k == X_ROW:
            return no_attr + element_label(row_el)
        if k == X_REL:
            cur = [row_el]
            for tag in col.rel:
                cur = [c for e in cur for c in e.iterchildren(tag)]
            return (no_attr + element_label(cur[-1]) if cur else
                    f'no <{"/".join(col.rel)}> below {element_label(row_el)}')
        if k == X_ROLE:
            els = self.cache.get(col.role)
            if els is None:
                els = self.cache[col.role] = self._role_elements(col.role)
            role = _ROLE_NAMES.get(col.role, col.role)
            if not els:
                return f'the document has no {role}'
            el = els[-1]
            if not col.rel:
                return no_attr + f'the {role} ' + element_label(el)
            cur = [el]
            for tag in col.rel:
                cur = [c for e in cur for c in e.iterchildren(tag)]
            return (no_attr + element_label(cur[-1]) if cur else
                    f'no <{"/".join(col.rel)}> below the {role} {element_label(el)}')
        el = row_el if row_el is not None else self.primary
        if el is None:
            return 'the document has no primary contact'
        kids = list(el.iterchildren(col.rel[0]))
        sub = col.role_sub
        if sub is not None:
            kids = [k for k in kids if self._is_preferred(k, sub)]
            if not kids:
                return f'no <{col.rel[0]} {sub.type_attribute}="{sub.type_values[0]}"> below {element_label(el)}'
        return no_attr + element_label(kids[-1]) if kids else f'no <{col.rel[0]}> below {element_label(el)}'

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

    def value(self, col, row_el, row_scope):
        return column_value(self, col, row_el, row_scope)
