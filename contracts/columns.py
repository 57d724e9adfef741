"""One column of a compiled contract: compiled once (`compile_column`), evaluated per row (`column_value`).

A column's value is extracted from the document (the row's own element, an element below it, an application-level
element, or a contact of a role), goes through the mapping's chain of steps (enum, calculated field, bit
conversions, digits) and is converted to the column's data type. `column_value` returns the value and its status:
missing, present, meaningful (it came from the document) or defaulted. SPEC §1.3, §1.4, §1.9, §1.10.
"""
from datetime import datetime, timezone

from contracts import convert as cv
from contracts.errors import ContractError, MappingError, describe_exception
from contracts.expressions import compile_expression
from contracts.model import DATE_TYPES, INT_TYPES, ROW_CREATING

# column value status
MISSING, PRESENT, MEANINGFUL, DEFAULTED = 0, 1, 2, 3
NULLISH = frozenset({'null', 'none'})
TRUTHY = frozenset({'y', 'yes', 'true', 't', '1'})

STATUS_NAMES = {MISSING: 'missing', PRESENT: 'present', MEANINGFUL: 'from the document', DEFAULTED: 'default'}

# step codes (ints for a lean hot loop)
S_ENUM, S_CALC, S_C2B, S_B2B, S_NUM, S_UTC = 1, 2, 3, 4, 5, 6
_STEP_CODES = {'enum': S_ENUM, 'calculated_field': S_CALC, 'char_to_bit': S_C2B, 'boolean_to_bit': S_B2B,
               'numbers_only': S_NUM, 'extract_numeric': S_NUM, 'default_getutcdate_if_null': S_UTC}
STEP_NAMES = {S_ENUM: 'enum', S_CALC: 'calculated_field', S_C2B: 'char_to_bit', S_B2B: 'boolean_to_bit',
              S_NUM: 'numbers_only', S_UTC: 'default_getutcdate_if_null'}
# extraction kinds
X_ROW, X_REL, X_APP, X_ROLE, X_CURR = 0, 1, 2, 3, 4


class Column:
    """One compiled mapping: where its value comes from, the steps it goes through, its type and default."""
    __slots__ = ('m', 'column', 'dtype', 'length', 'nullable', 'default', 'has_default',
                 'xkind', 'path', 'attr', 'attr_l', 'rel', 'role', 'role_sub', 'history_fallback', 'steps',
                 'expr', 'enum_exact', 'enum_lower', 'enum_catch', 'bits', 'lenient', 'is_date', 'label',
                 'row_kind', 'row_arg', 'selector', 'calc_then_enum', 'numeric', 'zeroish', 'key', 'plain')

    def __init__(self, m):
        self.m = m
        self.label = f'{m.target_table}.{m.target_column}' if m.target_column else \
            f'{m.target_table}[mappings[{m.index}]]'


def compile_column(cc, m, table) -> Column:
    """One mapping compiled for its table: extraction, chain of steps, conversions, default."""
    c = cc.contract
    col = Column(m)
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
    col.plain = not codes         # no steps: plain_value
    col.expr = None
    if S_CALC in codes:
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
    cr = cc._contact_rule
    row_path = table.rule.child_path if table.kind in ('contact', 'child') else None
    if first in ('last_valid_pr_contact', 'last_valid_sec_contact', 'authu_contact'):
        col.xkind = X_ROLE
        col.role = first
        col.rel = _rel_from(m.xml_path, cr.child_path, m)
        if col.rel:
            sub = cc._sub_rules.get(col.rel[0]) if len(col.rel) == 1 else None
            col.role_sub = sub
    elif first == 'curr_address_only':
        col.xkind = X_CURR
        col.rel = _rel_from(m.xml_path, cr.child_path, m)
        if len(col.rel) != 1:
            raise ContractError(f"{m.label}: key 'xml_path': curr_address_only needs a path one element below the "
                                f"contact element ({cr.child_path})")
        col.role_sub = cc._sub_rules.get(col.rel[0])
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


def _rel_from(path, base, m):
    if path == base:
        return ()
    if path.startswith(base + '/'):
        return tuple(path[len(base) + 1:].split('/'))
    raise ContractError(f"{m.label}: key 'xml_path': a contact-role mapping must read the contact element or an "
                        f"element below it ({base})")


def column_value(doc, col, row_el, row_scope):
    """(value, status) of one column for the row of element `row_el` (None for application-level rows).
    `row_scope`: expressions see the row element's own attributes. An unexpected exception fails the document
    with the column's name."""
    try:
        return _value(doc, col, row_el, row_scope)
    except MappingError:
        raise
    except Exception as ex:
        raise internal_error(col, ex) from None


def internal_error(col, ex) -> MappingError:
    """An unexpected exception while computing one column's value: the document fails naming table.column and
    the error, never the value."""
    return MappingError(f'{col.label}: internal error {describe_exception(ex)}')


def plain_value(doc, col, raw):
    """(value, status) of a column without steps (`col.plain`: 167 of the CC contract's 222 columns) from its
    extracted value: `_value` without the chain, for the hot loops (`rows.one_row`). The caller turns an
    unexpected exception into `internal_error`, as column_value does."""
    if raw is None:
        return (col.default, DEFAULTED) if col.has_default else (None, MISSING)
    if col.dtype == 'string':
        v = cv.to_string(raw, col.length)       # stripped: empty only when raw is blank
        if v:
            return v, MEANINGFUL
        return (col.default, DEFAULTED) if col.has_default else (None, MISSING)
    v, bad = _convert(doc, col, raw)
    if v is not None:
        return v, (MEANINGFUL if raw.strip() != '' else PRESENT)
    if col.has_default and not (bad and col.nullable):
        return col.default, DEFAULTED
    return None, MISSING


def _value(doc, col, row_el, row_scope):
    raw = doc.extract(col, row_el)
    if col.plain and doc.trace is None:
        return plain_value(doc, col, raw)
    tr = doc.trace.column(col, row_el) if doc.trace is not None else None     # `explain`: record each step
    v, src, nodigits = _chain(doc, col, row_el, row_scope, raw, tr)
    if nodigits:
        v, st = None, MISSING              # a value without digits on a nullable column: NULL, not the default
    else:
        v, bad = _convert(doc, col, v)
        if v is not None:
            st = MEANINGFUL if src else PRESENT
        elif col.has_default and not (bad and col.nullable):
            v, st = col.default, DEFAULTED
        else:
            st = MISSING
    if tr is not None:
        tr.append(('=', v, STATUS_NAMES[st]))
    return v, st


def _chain(doc, col, row_el, row_scope, raw, tr):
    """The mapping's steps over the extracted value: (value, from the document?, no digits on a nullable
    numbers_only column?). A step that gives None stops the chain unless the next step is enum (SPEC §1.4)."""
    v = raw
    src = raw is not None and raw.strip() != ''
    steps = col.steps
    n = len(steps)
    i = 0
    if tr is not None:
        tr.append(('extract', raw, doc.absent(col, row_el) if raw is None else None))
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
                        if tr is not None:
                            tr.append((STEP_NAMES[st], None, 'no digits'))
                        return None, src, True
                    v = None
                elif col.dtype == 'string':
                    v = digits                      # SPEC §10.1: leading zeros survive
                else:
                    v = int(digits)
        elif st == S_CALC:
            v, coerced = col.expr.evaluate_noting(doc.lookup_for(row_el if row_scope else _own(doc, col), row_scope))
            if coerced and v is not None:
                doc.warnings.append(f'{col.label}: an operand of its expression is not a number and counted as 0 '
                                    '(SPEC §1.5)')
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
        if tr is not None:
            tr.append((STEP_NAMES[st], v, None))
        if v is None and st != S_ENUM and st != S_UTC and not (i + 1 < n and steps[i + 1] == S_ENUM):
            break
        i += 1
    return v, src, False


def _convert(doc, col, v):
    """The chain's result converted to the column's data type: (value, not convertible?)."""
    if v is None:
        return None, False
    dt = col.dtype
    if type(v) is str or dt == 'string':
        if dt == 'string':
            v = cv.to_string(v, col.length)
            return (None if v == '' else v), False
        if v.strip() == '':
            return None, False
        if col.key and dt in INT_TYPES:
            c = cv.to_key_int(v)
            if c is None:
                raise MappingError(f'{col.label}: key value is not an integer (shape {cv.shape(v.strip())!r})')
            return c, False
        c = cv.convert(v, dt, col.length, col.lenient)
        if c is None:
            _bad(doc, col, v)
            return None, True
        if col.is_date and cv.has_utc_offset(v):
            doc.warnings.append(f'{col.label}: a time-zone offset was dropped; the time is kept as written '
                                f'(shape {cv.shape(v.strip())!r})')
        return c, False
    if dt == 'decimal':
        return cv.to_decimal(v, col.length), False
    if dt in INT_TYPES:
        return cv.to_int(v), False
    if col.is_date:
        return cv.to_datetime(v), False
    if dt in ('bit', 'boolean') and type(v) is not int:
        return cv.to_bit(v), False
    return v, False


def _own(doc, col):
    if col.xkind == X_APP:
        return doc.last(col.path)
    return None

def _bad(doc, col, raw):
    what = 'unparseable date' if col.is_date else f'not a valid {col.dtype}'
    fix = 'default applied' if col.has_default and not col.nullable else 'left empty'
    doc.warnings.append(f'{col.label}: {what} (shape {cv.shape(raw.strip())!r}); {fix}')


def raw_through_chain(doc, col):
    """For string-valued key/value rows: the extracted value after any transforming steps, as text."""
    if not col.steps:
        raw = doc.extract(col, None)
        if doc.trace is not None:
            doc.trace.column(col, None).extend([('extract', raw, doc.absent(col, None) if raw is None else None),
                                                ('=', raw, 'text')])
        return raw
    v, st = column_value(doc, col, None, False)
    if v is None or st == DEFAULTED:
        return None
    return v if type(v) is str else (v.isoformat(sep=' ') if isinstance(v, datetime) else str(v))
