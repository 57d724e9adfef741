"""The rows of one table for one document, by the table's kind (derived from the contract, never from names):

* ``root`` / ``app``: one row per application (`one_row`), an ``app`` row dropped when it would hold nothing but
  keys and defaults (SPEC §10.3);
* ``contact``: one row per valid contact (`contact_rows`);
* ``child``: one row per filtered element under a valid contact, written only when a meaningful column holds
  document data (`child_rows`, SPEC §1.9);
* ``kv``: the key/value and slot rows of the row-creating mapping types (`kv_rows`, SPEC §1.3).

Within one document two different rows with the same key fail the document (`unique_rows`).
"""
from contracts import convert as cv
from contracts.columns import (DEFAULTED, MEANINGFUL, NULLISH, PRESENT, TRUTHY, X_APP, internal_error, plain_value,
                               raw_through_chain)
from contracts.errors import MappingError
from contracts.model import ROW_SHAPES


class Table:
    """One target table of a compiled contract: how its rows are built (`kind`) and its compiled columns."""
    __slots__ = ('name', 'kind', 'cols', 'rule', 'fk', 'add_app_id', 'keys', 'meaningful', 'key_columns',
                 'bit_defaults')

    def __init__(self, name, kind):
        self.name, self.kind, self.cols = name, kind, []
        self.rule = self.fk = None
        self.add_app_id = False
        self.keys = ()
        self.meaningful = None     # child tables: the columns whose data makes a row worth writing (None: any)
        self.key_columns = ()      # the columns that identify a row of this table within one document
        self.bit_defaults = {}     # warranty rows: the combined char_to_bit column and its default


def unique_rows(t, rows):
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


def one_row(doc, t):
    row = {}
    keep = t.kind == 'root'
    meaningful = False
    fast = doc.trace is None
    cache = doc.cache
    for col in t.cols:
        if fast and col.plain and col.xkind == X_APP:
            # the most common column, inlined (Document.extract + column_value): an application-level attribute
            try:
                els = cache.get(col.path)
                if els is None:
                    els = doc.elems(col.path)
                v, st = plain_value(doc, col, doc.get(els[-1], col.attr, col.attr_l) if els else None)
            except MappingError:
                raise
            except Exception as ex:         # as column_value: the document fails naming the column
                raise internal_error(col, ex) from None
        else:
            v, st = doc.value(col, None, False)
        if v is not None:
            row[col.column] = v
            if st == MEANINGFUL or st == PRESENT:
                if col.column != 'app_id':
                    keep = True
                    meaningful = True
    if not keep:
        if doc.trace is not None:
            doc.trace.note(t.name, None, 'row not written: nothing but keys and defaults (SPEC §10.3)')
        return None, False
    row['app_id'] = doc.app_id
    return row, meaningful

def contact_rows(doc, t):
    out = []
    for el in doc.valid:
        row = {}
        for col in t.cols:
            v, st = doc.value(col, el, col.xkind != X_APP)
            if v is not None:
                row[col.column] = v
        if t.add_app_id:
            row['app_id'] = doc.app_id
        doc.valid_rows[id(el)] = row
        out.append(row)
    return unique_rows(t, out)

def child_rows(doc, t):
    rule = t.rule
    tag = rule.element_name
    out = []
    fk = t.fk
    for parent in doc.valid:
        prow = doc.valid_rows.get(id(parent))
        if prow is not None and fk in prow:
            key = prow[fk]
        else:
            raw = doc.attr(parent, fk)
            if raw is None or not raw.strip():
                continue
            key = cv.to_key_int(raw)
            if key is None:
                raise MappingError(f'{t.name}.{fk}: key value of the parent contact is not an integer (shape '
                                   f'{cv.shape(raw.strip())!r})')
        meaningful = t.meaningful
        for el in parent.iterchildren(tag):
            if not doc._passes_required(el, rule):
                if doc.trace is not None:
                    doc.trace.note(t.name, el, 'row not written: the element does not pass the filter rule '
                                               f'({", ".join(rule.required)})')
                continue
            row = {}
            keep = False
            for col in t.cols:
                v, st = doc.value(col, el, col.xkind != X_APP)
                if v is not None:
                    row[col.column] = v
                    if (st == MEANINGFUL and not col.selector and not (col.zeroish and v == 0)
                            and (meaningful is None or col.column in meaningful)):
                        keep = True
            if not keep:        # no meaningful data: only keys, defaults or other details (SPEC §1.9, §10.3)
                if doc.trace is not None:
                    doc.trace.note(t.name, el, 'row not written: no meaningful data' + (
                        f' (none of {", ".join(sorted(meaningful))} has a value from the document)'
                        if meaningful else ' (only keys and defaults)'))
                continue
            row[fk] = key
            out.append(row)
    return unique_rows(t, out)

class _Group:
    """The row of one warranty type, policy exception or collateral slot while its columns are collected."""
    __slots__ = ('row', 'meaningful', 'defaults')

    def __init__(self, row):
        self.row, self.meaningful, self.defaults = row, False, []


def _meaningful_text(s):
    return bool(s) and s.lower() not in NULLISH         # 'null' / 'none' are no data (SPEC §1.3)


def _score(doc, col, shape, keyed, groups, notes):
    v, st = doc.value(col, None, False)
    if v is None or st == DEFAULTED:
        return
    if type(v) is not int:
        v = cv.to_int(v)
        if v is None:
            return
    keyed[('s', col.row_arg)] = {'app_id': doc.app_id, shape.arg_column: col.row_arg, shape.value_column: v}


def _text_value(doc, col):
    """The mapped text of a key/value row, stripped; None when empty or null/none."""
    raw = raw_through_chain(doc, col)
    s = raw.strip() if raw is not None else ''
    return s if _meaningful_text(s) else None


def _history(doc, col, shape, keyed, groups, notes):
    s = _text_value(doc, col)
    if s is not None:
        name = f'[{col.attr}]'
        keyed[('h', name)] = {'app_id': doc.app_id, shape.name_column: name,
                              shape.source_column: '[' + col.path.rsplit('/', 1)[-1] + ']', shape.value_column: s}


def _report_lookup(doc, col, shape, keyed, groups, notes):
    s = _text_value(doc, col)
    if s is not None:
        keyed[('r', col.attr)] = {'app_id': doc.app_id, shape.name_column: col.attr, shape.value_column: s,
                                  shape.arg_column: col.row_arg}


def _indicator(doc, col, shape, keyed, groups, notes):
    s = _text_value(doc, col)
    if s is not None and s.lower() in TRUTHY:
        keyed[('i', col.row_arg)] = {'app_id': doc.app_id, shape.arg_column: col.row_arg, shape.value_column: '1'}


def _policy_exception(doc, col, shape, keyed, groups, notes):
    s = _text_value(doc, col)
    if s is None:
        return
    if col.row_arg is None:                      # policy_exceptions(): the notes every exception row shares
        notes[col.column or shape.notes_column] = s
        return
    g = groups.get(('p', col.row_arg))
    if g is None:
        g = groups[('p', col.row_arg)] = _Group({'app_id': doc.app_id, shape.arg_column: col.row_arg})
    g.row[col.column or shape.value_column] = s
    g.meaningful = True


def _warranty(doc, col, shape, keyed, groups, notes):
    g = groups.get(('w', col.row_arg))
    if g is None:
        g = groups[('w', col.row_arg)] = _Group({'app_id': doc.app_id, shape.arg_column: col.row_arg})
    if col.bits is not None:                     # the combined char_to_bit flag: never makes a row by itself
        v, _ = doc.value(col, None, False)
        g.row[col.column] = v if v is not None else 0
        return
    raw = doc.extract(col, None)                 # stripped strings, no conversion, no truncation (SPEC §1.3)
    s = raw.strip() if raw is not None else ''
    if doc.trace is not None:
        doc.trace.column(col, None).extend([('extract', raw, doc.absent(col, None) if raw is None else None),
                                            ('=', s or None, 'stripped text')])
    if s:
        g.row[col.column] = s
        g.meaningful = g.meaningful or _meaningful_text(s)


def _collateral(doc, col, shape, keyed, groups, notes):
    g = groups.get(('c', col.row_arg))
    if g is None:
        g = groups[('c', col.row_arg)] = _Group({'app_id': doc.app_id, shape.arg_column: col.row_arg})
    v, st = doc.value(col, None, False)
    if st == DEFAULTED:
        g.defaults.append((col.column, v))       # NOT NULL defaults only once the slot is known to have data
        return
    if v is None:
        return
    g.row[col.column] = v
    if st == MEANINGFUL and col.expr is None and col.bits is None:
        # computed and bit columns never make a slot; a zero alone is no data
        if col.numeric:
            g.meaningful = g.meaningful or v > 0
        elif not (type(v) is str and not _meaningful_text(v.strip())):
            g.meaningful = True


_KV_BUILDERS = {'add_score': _score, 'add_history': _history, 'add_report_lookup': _report_lookup,
                'add_indicator': _indicator, 'policy_exceptions': _policy_exception, 'warranty_field': _warranty,
                'add_collateral': _collateral}


def kv_rows(doc, t):
    """The rows of a table whose mappings are all row-creating: one per key (scores, indicators, history, report
    look-ups) or one per group (a warranty type, a policy exception, a collateral slot) with meaningful data."""
    keyed, groups, notes = {}, {}, {}
    for col in t.cols:
        _KV_BUILDERS[col.row_kind](doc, col, ROW_SHAPES[col.row_kind], keyed, groups, notes)
    out = list(keyed.values())
    for (kind, arg), g in groups.items():
        if not g.meaningful:
            if doc.trace is not None:
                doc.trace.note(t.name, None, f'row {arg} not written: no meaningful data')
            continue
        row = g.row
        if kind == 'p':
            row.update(notes)
        elif kind == 'w':
            for c, dv in t.bit_defaults.items():
                row.setdefault(c, dv)
        else:
            for c, dv in g.defaults:
                row.setdefault(c, dv)
        out.append(row)
    return out
