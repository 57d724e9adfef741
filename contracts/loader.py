"""Loading and validating a mapping contract: ``load_contract(path_or_dict) -> Contract``.

Every problem found is reported at load time with the entry it belongs to
(``mappings[17] (app_pricing_cc.campaign_num): key 'data_type': unknown type 'strng'``), never later while mapping.
The format is the existing system's (SPEC §1); `contracts/contract.schema.json` describes every key.

(About 430 lines on purpose: one validator per contract entry kind, kept together so that every load-time message
follows one pattern.)
"""
import json
import os
import re
from typing import List, Optional

from contracts.convert import to_datetime
from contracts.errors import ContractError
from contracts.expressions import ExpressionError, compile_expression
from contracts.schema import schema_errors
from contracts.model import (ARG_STEPS, DATA_TYPES, DATE_TYPES, ENUM_SUBSTRINGS, EXTRACTORS, LOG_TABLE,
                             OPTIONAL_DICT_TOP, PLAIN_STEPS, REQUIRED_TOP, ROW_CREATING, Contract, FilterRule,
                             Mapping, Relationship, Step)

_STEP_RE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?$')
_PATH_RE = re.compile(r'^(/[A-Za-z_][\w.\-]*)+$')


def _read_json(path):
    try:
        with open(path, encoding='utf-8-sig') as f:
            text = f.read()
    except OSError as e:
        raise ContractError(f'{path}: cannot read contract: {e.strerror or e}') from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ContractError(f'{path}: line {e.lineno}, column {e.colno}: not valid JSON: {e.msg}') from None


def parse_steps(value) -> List[Step]:
    """Parse a ``mapping_type`` value (list, or comma-separated string) into steps; raises ValueError."""
    if value is None:
        return []
    if isinstance(value, str):
        tokens = _split_commas(value)
    elif isinstance(value, list):
        tokens = value
    else:
        raise ValueError(f'must be a list or a string, not {type(value).__name__}')
    steps = []
    for tok in tokens:
        if not isinstance(tok, str) or not tok.strip():
            raise ValueError(f'step {tok!r} is not a non-empty string')
        t = tok.strip()
        mo = _STEP_RE.match(t)
        if not mo:
            raise ValueError(f'unknown mapping_type {t!r}')
        name, arg = mo.group(1), mo.group(2)
        if name in ARG_STEPS:
            required, as_int = ARG_STEPS[name]
            if arg is None or not arg.strip():
                if required or arg is None:
                    raise ValueError(f'mapping_type {t!r} needs an argument: {name}(...)')
                arg = None
            else:
                arg = arg.strip()
                if as_int:
                    try:
                        arg = int(arg)
                    except ValueError:
                        raise ValueError(f'mapping_type {t!r}: argument must be an integer') from None
        elif name in PLAIN_STEPS:
            if arg is not None:
                raise ValueError(f'mapping_type {t!r}: {name} takes no argument')
        else:
            raise ValueError(f'unknown mapping_type {t!r}')
        steps.append(Step(name, arg, t))
    return steps


def _split_commas(s):
    out, depth, cur = [], 0, ''
    for ch in s:
        if ch == '(':
            depth += 1
        elif ch == ')':
            depth -= 1
        if ch == ',' and depth == 0:
            out.append(cur)
            cur = ''
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


def resolve_enum_type(column, enum_name, enum_mappings) -> Optional[str]:
    """Enum table for a column (SPEC §1.6): enum_name, column name, ``*_enum`` column, then name patterns."""
    if enum_name:
        return enum_name if enum_name in enum_mappings else None
    if column in enum_mappings:
        return column
    if column.endswith('_enum') and column in enum_mappings:
        return column
    for sub, name in ENUM_SUBSTRINGS:
        if sub in column and name in enum_mappings:
            return name
    return None


def load_contract(path_or_dict) -> Contract:
    """Load and validate a contract from a JSON file path or an already-parsed dict."""
    source = None
    if isinstance(path_or_dict, Contract):
        return path_or_dict
    if isinstance(path_or_dict, (str, os.PathLike)):
        source = os.fspath(path_or_dict)
        raw = _read_json(source)
    elif isinstance(path_or_dict, dict):
        raw = path_or_dict
    else:
        raise ContractError(f'contract must be a path or a dict, not {type(path_or_dict).__name__}')
    if not isinstance(raw, dict):
        raise ContractError(f'{source or "contract"}: top level must be a JSON object')
    return _Validator(raw, source).run()


class _Validator:
    def __init__(self, raw, source):
        self.raw, self.source, self.errors = raw, source, []

    def err(self, msg):
        self.errors.append(msg)

    def fail_if_errors(self):
        if self.errors:
            prefix = f'{self.source}: ' if self.source else ''
            lines = [prefix + e for e in self.errors]
            n = len(lines)
            head = lines[0] if n == 1 else f'{n} problems in contract:\n' + '\n'.join(lines)
            raise ContractError(head, lines)

    def run(self) -> Contract:
        raw = self.raw
        # top level
        for k in REQUIRED_TOP:
            if k not in raw:
                self.err(f'missing required top-level key {k!r}')
        for k in ('xml_root_element', 'xml_application_path', 'source_table', 'source_column',
                  'source_application_table', 'target_schema'):
            if k in raw and (not isinstance(raw[k], str) or not raw[k].strip()):
                self.err(f'key {k!r}: must be a non-empty string')
        for k in ('table_insertion_order', 'mappings', 'relationships'):
            if k in raw and not isinstance(raw[k], list):
                self.err(f'key {k!r}: must be a list')
        for k in ('element_filtering',) + OPTIONAL_DICT_TOP:
            if k in raw and not isinstance(raw[k], dict):
                self.err(f'key {k!r}: must be an object')
        self.fail_if_errors()
        root, app_path = raw['xml_root_element'], raw['xml_application_path']
        if not _PATH_RE.match(app_path):
            self.err(f"key 'xml_application_path': {app_path!r} is not an absolute element path")
        elif app_path.split('/')[1] != root:
            self.err(f"key 'xml_application_path': {app_path!r} does not start at xml_root_element {root!r}")
        order = raw['table_insertion_order']
        seen = set()
        for i, t in enumerate(order):
            if not isinstance(t, str) or not t:
                self.err(f'table_insertion_order[{i}]: must be a non-empty string')
            elif t in seen:
                self.err(f'table_insertion_order[{i}]: table {t!r} listed twice')
            seen.add(t)
        tables = [t for t in order if isinstance(t, str) and t != LOG_TABLE]
        if not tables:
            self.err("key 'table_insertion_order': lists no target table")
        enums = raw.get('enum_mappings') or {}
        for name, table in enums.items():
            if not isinstance(table, dict):
                self.err(f'enum_mappings[{name!r}]: must be an object of code -> id')
        bits = raw.get('bit_conversions') or {}
        for name, table in bits.items():
            if not isinstance(table, dict):
                self.err(f'bit_conversions[{name!r}]: must be an object of value -> 0/1')
            else:
                for code, v in table.items():
                    if v not in (0, 1) or isinstance(v, bool):
                        self.err(f'bit_conversions[{name!r}][{code!r}]: must be 0 or 1')
        self.fail_if_errors()
        rules = self.check_filtering(raw['element_filtering'])
        rels = self.check_relationships(raw['relationships'], tables)
        mappings = [self.check_mapping(i, m, set(tables), enums, bits) for i, m in enumerate(raw['mappings'])]
        self.fail_if_errors()
        self.check_duplicates(mappings)
        self.check_tables(mappings, tables, rels, rules)
        self.fail_if_errors()
        # What the checks above do not look at (unknown keys, e.g. a misspelt 'mapping_typ', types of optional
        # keys), from the JSON Schema editors use: contracts/contract.schema.json.
        for e in schema_errors(raw):
            self.err(e)
        self.fail_if_errors()
        return Contract(raw, mappings, rules, rels, self.source)

    # -- element_filtering ---------------------------------------------------------------------------------------
    def check_filtering(self, ef):
        rules = []
        fr = ef.get('filter_rules')
        if not isinstance(fr, list):
            self.err("element_filtering: key 'filter_rules': must be a list")
            return rules
        types = set()
        for i, r in enumerate(fr):
            where = f'element_filtering.filter_rules[{i}]'
            if not isinstance(r, dict):
                self.err(f'{where}: must be an object')
                continue
            bad = False
            for k in ('element_type', 'xml_parent_path', 'xml_child_path'):
                v = r.get(k)
                if not isinstance(v, str) or not v:
                    self.err(f'{where}: key {k!r}: must be a non-empty string')
                    bad = True
            req = r.get('required_attributes')
            if not isinstance(req, dict) or not req:
                self.err(f"{where}: key 'required_attributes': must be a non-empty object")
                bad = True
            if bad:
                continue
            et = r['element_type']
            where = f'{where} ({et})'
            if et in types:
                self.err(f"{where}: key 'element_type': duplicate rule for {et!r}")
            types.add(et)
            for k in ('xml_parent_path', 'xml_child_path'):
                if not _PATH_RE.match(r[k]):
                    self.err(f'{where}: key {k!r}: {r[k]!r} is not an absolute element path')
            if _PATH_RE.match(r['xml_child_path']) and r['xml_child_path'].rsplit('/', 1)[0] != r['xml_parent_path']:
                self.err(f"{where}: key 'xml_child_path': must be a child of xml_parent_path")
            for a, v in req.items():
                if v is True:
                    continue
                if (isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)
                        and len(set(v)) == len(v)):
                    continue
                self.err(f"{where}: key 'required_attributes.{a}': must be true or a non-empty list of distinct "
                         f"strings (first = highest priority)")
            mc = r.get('meaningful_columns')
            if mc is not None and (not isinstance(mc, list) or not mc
                                   or not all(isinstance(x, str) and x for x in mc)):
                self.err(f"{where}: key 'meaningful_columns': must be a non-empty list of target column names")
                mc = None
            rule = FilterRule(i, et, r['xml_parent_path'], r['xml_child_path'], req, mc)
            rules.append(rule)
        contact = next((r for r in rules if r.element_type == 'contact'), None)
        if contact is None:
            self.err("element_filtering: no rule with element_type 'contact'")
        elif contact.type_attribute is None:
            self.err(f"element_filtering.filter_rules[{contact.index}] (contact): key 'required_attributes': needs a "
                     f"type attribute with a list of contact types (first = primary)")
        return rules

    # -- relationships -------------------------------------------------------------------------------------------
    def check_relationships(self, rels, tables):
        out = []
        pos = {t: i for i, t in enumerate(tables)}
        for i, r in enumerate(rels):
            where = f'relationships[{i}]'
            if not isinstance(r, dict):
                self.err(f'{where}: must be an object')
                continue
            bad = False
            for k in ('parent_table', 'child_table', 'foreign_key_column', 'xml_parent_path', 'xml_child_path'):
                if not isinstance(r.get(k), str) or not r.get(k):
                    self.err(f'{where}: key {k!r}: missing or not a non-empty string')
                    bad = True
            if bad:
                continue
            where = f"{where} ({r['parent_table']} -> {r['child_table']})"
            for k in ('parent_table', 'child_table'):
                if r[k] not in pos:
                    self.err(f'{where}: key {k!r}: table {r[k]!r} is not in table_insertion_order')
            if r['parent_table'] in pos and r['child_table'] in pos and pos[r['parent_table']] >= pos[r['child_table']]:
                self.err(f"{where}: child table comes before its parent in table_insertion_order")
            out.append(Relationship(i, **{k: r[k] for k in ('parent_table', 'child_table', 'foreign_key_column',
                                                             'xml_parent_path', 'xml_child_path')}))
        return out

    # -- one mapping ---------------------------------------------------------------------------------------------
    def check_mapping(self, i, raw, tables, enums, bits):
        m = Mapping(i, raw)
        if not isinstance(raw, dict):
            self.err(f'mappings[{i}]: must be an object')
            return m
        m.target_table = raw.get('target_table') if isinstance(raw.get('target_table'), str) else '?'
        m.target_column = raw.get('target_column') if isinstance(raw.get('target_column'), str) else '?'
        where = m.label
        n0 = len(self.errors)
        for k in ('xml_path', 'xml_attribute', 'target_table', 'data_type'):
            v = raw.get(k)
            if k not in raw:
                self.err(f'{where}: missing required key {k!r}')
            elif not isinstance(v, str) or not v.strip():
                self.err(f'{where}: key {k!r}: must be a non-empty string')
        if 'target_column' not in raw:
            self.err(f"{where}: missing required key 'target_column'")
        elif not isinstance(raw['target_column'], str):
            self.err(f"{where}: key 'target_column': must be a string")
        try:
            m.steps = parse_steps(raw.get('mapping_type'))
        except ValueError as e:
            self.err(f"{where}: key 'mapping_type': {e}")
            m.steps = []
        if len(self.errors) > n0:
            return m
        m.xml_path, m.xml_attribute = raw['xml_path'], raw['xml_attribute']
        m.data_type = raw['data_type'].strip().lower()
        names = [s.name for s in m.steps]
        row_creating = [s for s in m.steps if s.name in ROW_CREATING]
        if not _PATH_RE.match(m.xml_path):
            self.err(f"{where}: key 'xml_path': {m.xml_path!r} is not an absolute element path (no predicates)")
        elif m.xml_path.split('/')[1] != self.raw['xml_root_element']:
            self.err(f"{where}: key 'xml_path': does not start at xml_root_element {self.raw['xml_root_element']!r}")
        if m.target_table not in tables:
            self.err(f"{where}: key 'target_table': table {m.target_table!r} is not in table_insertion_order")
        if m.data_type not in DATA_TYPES:
            self.err(f"{where}: key 'data_type': unknown type {raw['data_type']!r}")
        if not m.target_column and not row_creating:
            self.err(f"{where}: key 'target_column': may be empty only for row-creating mapping types")
        if len(row_creating) > 1:
            self.err(f"{where}: key 'mapping_type': more than one row-creating step")
        if row_creating and m.steps[-1].name not in ROW_CREATING:
            self.err(f"{where}: key 'mapping_type': {row_creating[0].token!r} must be the last step")
        for j, s in enumerate(m.steps):
            if s.name in EXTRACTORS and j != 0:
                self.err(f"{where}: key 'mapping_type': {s.token!r} chooses the source element and must come first")
            if s.name == 'direct' and len(m.steps) > 1:
                self.err(f"{where}: key 'mapping_type': 'direct' cannot be chained")
        dl = raw.get('data_length')
        if dl is not None and (not isinstance(dl, int) or isinstance(dl, bool) or dl < -1 or dl == 0):
            self.err(f"{where}: key 'data_length': must be a positive integer or -1 (no limit)")
        m.data_length = dl if isinstance(dl, int) and not isinstance(dl, bool) else None
        nl = raw.get('nullable', True)
        if not isinstance(nl, bool):
            self.err(f"{where}: key 'nullable': must be true or false")
        m.nullable = bool(nl)
        ex = raw.get('exclude_default_when_record_empty', False)
        if not isinstance(ex, bool):
            self.err(f"{where}: key 'exclude_default_when_record_empty': must be true or false")
        m.exclude_default_when_empty = ex is True
        m.default_value = raw.get('default_value')
        m.has_default = m.default_value is not None
        if m.has_default and not isinstance(m.default_value, (str, int, float)):
            self.err(f"{where}: key 'default_value': must be a string or a number")
        if m.has_default and m.data_type in DATE_TYPES and m.default_value != '':
            if to_datetime(str(m.default_value)) is None:
                self.err(f"{where}: key 'default_value': not a date the converter understands")
        # expression
        m.expression = raw.get('expression')
        if 'calculated_field' in names:
            if not isinstance(m.expression, str) or not m.expression.strip():
                self.err(f"{where}: key 'expression': calculated_field needs a non-empty expression")
            else:
                try:
                    compile_expression(m.expression)
                except ExpressionError as e:
                    self.err(f"{where}: key 'expression': {e}")
        elif m.expression is not None and not isinstance(m.expression, str):
            self.err(f"{where}: key 'expression': must be a string")
        # enum
        m.enum_name = raw.get('enum_name')
        m.enum_type = None
        if m.enum_name is not None and (not isinstance(m.enum_name, str) or not m.enum_name):
            self.err(f"{where}: key 'enum_name': must be a non-empty string")
        elif 'enum' in names:
            m.enum_type = resolve_enum_type(m.target_column, m.enum_name, enums)
            if m.enum_type is None:
                if m.enum_name:
                    self.err(f"{where}: key 'enum_name': enum {m.enum_name!r} is not in enum_mappings")
                else:
                    self.err(f"{where}: key 'mapping_type': enum step does not resolve to an enum_mappings table "
                             f"(give 'enum_name' or name the column after the enum)")
        for conv in ('char_to_bit', 'boolean_to_bit'):
            if conv in names and conv not in bits:
                self.err(f"{where}: key 'mapping_type': {conv!r} needs bit_conversions.{conv}")
        return m

    def check_duplicates(self, mappings):
        seen = {}
        for m in mappings:
            if not m.target_column or any(s.name in ROW_CREATING for s in m.steps):
                continue
            if any(s.name in ('last_valid_pr_contact', 'last_valid_sec_contact') for s in m.steps):
                continue
            key = (m.target_table, m.target_column)
            if key in seen:
                self.err(f"{m.label}: key 'target_column': duplicate rule for {m.target_table}.{m.target_column} "
                         f"(also mappings[{seen[key]}])")
            else:
                seen[key] = m.index

    def check_tables(self, mappings, tables, rels, rules):
        first = tables[0] if tables else None
        if first and not any(m.target_table == first and m.target_column == 'app_id' for m in mappings):
            self.err(f"table_insertion_order[0] ({first}): no mapping fills {first}.app_id")
        children = {r.child_table for r in rels}
        # Rows under a contact (addresses, employments) are one per element that passes a filter rule: a table fed
        # by such a relationship without its rule would get one row per application instead, without the contact's
        # key. That is a contract error, found here rather than as rows without a con_id.
        contact = next((r for r in rules if r.element_type == 'contact'), None)
        by_child_path = {r.child_path for r in rules}
        contact_tables = {r.child_table for r in rels if contact is not None and r.xml_child_path == contact.child_path}
        for r in rels:
            under_contact = contact is not None and r.xml_child_path.startswith(contact.child_path + '/')
            if (under_contact or r.parent_table in contact_tables) and r.xml_child_path not in by_child_path:
                self.err(f"relationships[{r.index}] ({r.parent_table} -> {r.child_table}): its rows are one per "
                         f"<{r.xml_child_path.rsplit('/', 1)[-1]}> of a contact, but element_filtering has no rule "
                         f"whose xml_child_path is {r.xml_child_path} (add one, e.g. element_type 'address')")
        used = {}
        for m in mappings:
            used.setdefault(m.target_table, []).append(m)
        for t in tables:
            ms = used.get(t)
            if t == first or not ms:
                continue
            rc = [m for m in ms if any(s.name in ROW_CREATING for s in m.steps)]
            if rc and len(rc) != len(ms):
                other = next(m for m in ms if m not in rc)
                self.err(f"{other.label}: table {t!r} mixes row-creating mappings with column mappings")
            if not rc and t not in children:
                self.err(f"table_insertion_order ({t}): table has column mappings but is not the child_table of any "
                         f"relationship")
