"""The contract's JSON Schema (contracts/contract.schema.json): editors use it, the loader checks it. Our small
validator (contracts/schema.py) must agree with a real JSON Schema implementation on what is valid."""
import copy
import json
import os

import pytest

from contracts import ContractError, load_contract
from contracts.schema import SCHEMA_PATH, contract_schema, schema_errors
from test_mapping_types import cc_contract, rl_contract

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CC = os.path.join(ROOT, '..', 'shared', 'seed-corpus', 'cc', 'contract.json')
SAMPLE = os.path.join(ROOT, 'contracts', 'samples', 'credit_app.json')


def contracts():
    out = [('cc-style test contract', cc_contract()), ('rl-style test contract', rl_contract()),
           ('sample credit_app', json.load(open(SAMPLE)))]
    if os.path.exists(CC):
        out.append(('seed CC contract', json.load(open(CC))))
    return out


def broken():
    """Contracts that break the schema in ways the loader's own checks do not look at."""
    out = []
    c = cc_contract()
    c['mappings'][3]['mapping_typ'] = ['enum']
    out.append(('misspelt mapping key', c, "mappings[3] (app_contact_base.first_name): unknown key 'mapping_typ' "
                                          "(did you mean 'mapping_type'?)"))
    c = cc_contract()
    c['table_insertion_ordr'] = []
    out.append(('misspelt top-level key', c, "contract: unknown key 'table_insertion_ordr' (did you mean "
                                             "'table_insertion_order'?)"))
    c = cc_contract()
    c['mappings'][4]['required'] = 'yes'
    out.append(('required not a boolean', c, "mappings[4] (app_contact_base.last_name): key 'required': must be "
                                             "true or false"))
    c = cc_contract()
    c['relationships'][0]['fk'] = 'app_id'
    out.append(('unknown relationship key', c, "relationships[0]: unknown key 'fk'"))
    c = cc_contract()
    c['mappings'][0]['description'] = 42
    out.append(('description not a string', c, "mappings[0] (app_base.app_id): key 'description': must be a "
                                                "string"))
    return out


@pytest.mark.parametrize('name,contract', contracts(), ids=lambda x: x if isinstance(x, str) else '')
def test_real_contracts_follow_the_schema(name, contract):
    assert schema_errors(contract) == []
    load_contract(contract)


@pytest.mark.parametrize('name,contract,message', broken(), ids=lambda x: x if isinstance(x, str) and
                         len(x) < 40 else '')
def test_the_loader_reports_what_the_schema_finds(name, contract, message):
    with pytest.raises(ContractError) as e:
        load_contract(contract)
    assert message in str(e.value)


def test_a_real_json_schema_validator_agrees():
    jsonschema = pytest.importorskip('jsonschema', reason='the jsonschema package (test extra) is not installed')
    schema = contract_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    for name, c in contracts():
        assert list(v.iter_errors(c)) == [], name
    for name, c, _ in broken():
        assert list(v.iter_errors(c)) and schema_errors(c), name
    # more mutations: every key of a mapping set to a wrong type, every top-level key removed
    base = cc_contract()
    for key in base['mappings'][0]:
        for bad in (None, 7, [], {}, 'x', True):
            c = copy.deepcopy(base)
            c['mappings'][0][key] = bad
            assert bool(list(v.iter_errors(c))) == bool(schema_errors(c)), (key, bad)
    for key in list(base):
        c = copy.deepcopy(base)
        del c[key]
        assert bool(list(v.iter_errors(c))) == bool(schema_errors(c)), key


def test_the_schema_file_is_shipped_with_the_package():
    assert os.path.exists(SCHEMA_PATH)
    assert "'*.json'" in open(os.path.join(ROOT, 'setup.py')).read()
