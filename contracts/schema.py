"""The contract's JSON Schema (`contracts/contract.schema.json`, for editors) checked by the loader.

A small validator for the subset of JSON Schema 2020-12 the file uses (type, required, properties,
additionalProperties, items, enum, const, pattern, minLength, minItems, minProperties, minimum, anyOf, local $ref),
so the loader needs no extra package. Its messages follow the loader's style: they name the entry and the key
(``mappings[3] (app_pricing_cc.tier): unknown key 'mapping_typ' (did you mean 'mapping_type'?)``).
"""
import difflib
import json
import os
import re
from functools import lru_cache
from typing import Any, List

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'contract.schema.json')

_TYPES = {'string': str, 'integer': int, 'number': (int, float), 'boolean': bool, 'object': dict, 'array': list,
          'null': type(None)}


@lru_cache(maxsize=1)
def contract_schema():
    with open(SCHEMA_PATH, encoding='utf-8') as f:
        return json.load(f)


def _is(value, t):
    if t in ('integer', 'number') and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[t])


def _where(path, doc):
    """A path as the loader names entries: mappings[3] (table.column), element_filtering.filter_rules[0]."""
    out = ''
    for i, p in enumerate(path):
        if isinstance(p, int):
            out += f'[{p}]'
            m = doc.get('mappings') if i == 1 and path[0] == 'mappings' and isinstance(doc, dict) else None
            if isinstance(m, list) and p < len(m) and isinstance(m[p], dict):
                out += f" ({m[p].get('target_table', '?')}.{m[p].get('target_column', '?')})"
        else:
            out += ('.' if out else '') + p
    return out


def _short(v):
    return json.dumps(v)[:40]


class _Checker:
    def __init__(self, root_schema, doc):
        self.root, self.doc, self.errors = root_schema, doc, []

    def err(self, path, msg):
        if path and isinstance(path[-1], str):
            where = _where(path[:-1], self.doc)
            self.errors.append(f"{where + ': ' if where else ''}key {path[-1]!r}: {msg}")
        else:
            self.errors.append(f"{_where(path, self.doc) or 'contract'}: {msg}")

    def resolve(self, schema):
        while '$ref' in schema:
            ref = schema['$ref']
            assert ref.startswith('#/'), ref
            node = self.root
            for part in ref[2:].split('/'):
                node = node[part]
            schema = node
        return schema

    def matches(self, schema, value):
        sub = _Checker(self.root, self.doc)
        sub.check(schema, value, [])
        return not sub.errors

    def check(self, schema, value, path):
        schema = self.resolve(schema)
        if 'anyOf' in schema:
            if not any(self.matches(s, value) for s in schema['anyOf']):
                self.err(path, self._any_of_text(schema['anyOf']))
                return
        t = schema.get('type')
        if t is not None:
            types = t if isinstance(t, list) else [t]
            if not any(_is(value, x) for x in types):
                self.err(path, f'must be {" or ".join(_article(x) for x in types)}')
                return
        if 'const' in schema and value != schema['const']:
            self.err(path, f'must be {_short(schema["const"])}')
        if 'enum' in schema and value not in schema['enum']:
            self.err(path, f'must be one of {", ".join(_short(x) for x in schema["enum"])}')
        if isinstance(value, str):
            if len(value) < schema.get('minLength', 0):
                self.err(path, 'must be a non-empty string')
            if 'pattern' in schema and not re.search(schema['pattern'], value):
                self.err(path, f'{_short(value)} is not of the expected form')
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 'minimum' in schema \
                and value < schema['minimum']:
            self.err(path, f'must be at least {schema["minimum"]}')
        if isinstance(value, list):
            if len(value) < schema.get('minItems', 0):
                self.err(path, 'must not be empty')
            if 'items' in schema:
                for i, item in enumerate(value):
                    self.check(schema['items'], item, path + [i])
        if isinstance(value, dict):
            if len(value) < schema.get('minProperties', 0):
                self.err(path, 'must not be empty')
            for k in schema.get('required', ()):
                if k not in value:
                    self.err(path, f'missing required key {k!r}')
            props = schema.get('properties', {})
            extra = schema.get('additionalProperties', True)
            for k, v in value.items():
                if k in props:
                    self.check(props[k], v, path + [k])
                elif extra is False:
                    near = difflib.get_close_matches(k, list(props), n=1)
                    hint = f' (did you mean {near[0]!r}?)' if near else ''
                    self.err(path, f'unknown key {k!r}{hint}')
                elif isinstance(extra, dict):
                    self.check(extra, v, path + [k])

    def _any_of_text(self, options):
        parts = []
        for s in options:
            s = self.resolve(s)
            if 'const' in s:
                parts.append(_short(s['const']))
            elif 'minimum' in s:
                parts.append(f'at least {s["minimum"]}')
            elif s.get('type') == 'array':
                parts.append('a list')
            elif s.get('type'):
                parts.append(_article(s['type']))
        return 'must be ' + ' or '.join(parts)


def _article(t):
    return {'string': 'a string', 'integer': 'an integer', 'number': 'a number', 'boolean': 'true or false',
            'object': 'an object', 'array': 'a list', 'null': 'null'}.get(t, t)


def schema_errors(doc: Any) -> List[str]:
    """Every place where `doc` (a parsed contract) does not follow the contract schema; [] when it does."""
    c = _Checker(contract_schema(), doc)
    c.check(c.root, doc, [])
    return c.errors
