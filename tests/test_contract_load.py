"""Contract loading and validation: every problem is reported at load time, naming the entry and the key."""
import copy
import json

import pytest

from contracts import ContractError, load_contract

APP = '/Provenir/Request/CustData/application'
CON = APP + '/contact'


def base():
    return {
        'xml_root_element': 'Provenir', 'xml_application_path': APP, 'source_table': 'stage',
        'source_column': 'xml', 'source_application_table': 'application', 'target_schema': 'migration',
        'table_insertion_order': ['app_base', 'app_contact_base', 'app_pricing', 'scores', 'processing_log'],
        'element_filtering': {'filter_rules': [
            {'element_type': 'contact', 'xml_parent_path': APP, 'xml_child_path': CON,
             'required_attributes': {'con_id': True, 'ac_role_tp_c': ['PR', 'AUTHU']}}]},
        'relationships': [
            {'parent_table': 'app_base', 'child_table': 'app_contact_base', 'foreign_key_column': 'app_id',
             'xml_parent_path': '/Provenir/Request', 'xml_child_path': CON},
            {'parent_table': 'app_base', 'child_table': 'app_pricing', 'foreign_key_column': 'app_id',
             'xml_parent_path': '/Provenir/Request', 'xml_child_path': '/Provenir/Request'}],
        'enum_mappings': {'contact_type_enum': {'PR': 281, 'AUTHU': 280}, 'yn_enum': {'Y': 1}},
        'bit_conversions': {'char_to_bit': {'Y': 1, 'N': 0}},
        'mappings': [
            {'xml_path': '/Provenir/Request', 'xml_attribute': 'ID', 'target_table': 'app_base',
             'target_column': 'app_id', 'data_type': 'int', 'mapping_type': ['identity_insert'], 'nullable': False},
            {'xml_path': CON, 'xml_attribute': 'con_id', 'target_table': 'app_contact_base',
             'target_column': 'con_id', 'data_type': 'int', 'nullable': False},
            {'xml_path': CON, 'xml_attribute': 'ac_role_tp_c', 'target_table': 'app_contact_base',
             'target_column': 'contact_type_enum', 'data_type': 'smallint', 'mapping_type': ['enum'],
             'nullable': False},
            {'xml_path': APP, 'xml_attribute': 'campaign_num', 'target_table': 'app_pricing',
             'target_column': 'campaign_num', 'data_type': 'string', 'data_length': 6, 'nullable': False},
            {'xml_path': APP, 'xml_attribute': 'tier', 'target_table': 'app_pricing', 'target_column': 'tier',
             'data_type': 'string', 'nullable': True},
            {'xml_path': APP + '/app_product', 'xml_attribute': 'EX_score', 'target_table': 'scores',
             'target_column': '', 'data_type': 'int', 'mapping_type': ['add_score(EX)'], 'nullable': True},
        ],
    }


def error_of(c):
    with pytest.raises(ContractError) as ei:
        load_contract(c)
    return str(ei.value)


def test_valid_contract_and_properties(tmp_path):
    p = tmp_path / 'c.json'
    p.write_text(json.dumps(base()))
    c = load_contract(str(p))
    assert c.source_table == 'stage' and c.source_column == 'xml' and c.target_schema == 'migration'
    assert c.root_element == 'Provenir' and c.application_path == APP and c.source_application_table == 'application'
    assert c.table_order == ['app_base', 'app_contact_base', 'app_pricing', 'scores']
    assert c.tables() == ['app_base', 'app_contact_base', 'app_pricing', 'scores']
    assert c.app_id_source == ('/Provenir/Request', 'ID')
    assert c.raw['source_table'] == 'stage'
    assert load_contract(base()).mappings[5].steps[0].arg == 'EX'


def test_not_json_names_file_line_and_column(tmp_path):
    p = tmp_path / 'bad.json'
    p.write_text('{\n  "xml_root_element": "Provenir",\n  "mappings": [,]\n}')
    msg = error_of(str(p))
    assert msg.startswith(f'{p}: line 3, column 16: not valid JSON')


def test_missing_file():
    assert 'cannot read contract' in error_of('/nonexistent/contract.json')


def test_missing_top_level_key():
    c = base()
    del c['source_column']
    assert error_of(c) == "missing required top-level key 'source_column'"


def test_empty_root_element():
    c = base()
    c['xml_root_element'] = ''
    assert "key 'xml_root_element': must be a non-empty string" in error_of(c)


def test_unknown_data_type_names_entry_and_key():
    c = base()
    c['mappings'][3]['data_type'] = 'strng'
    assert error_of(c) == "mappings[3] (app_pricing.campaign_num): key 'data_type': unknown type 'strng'"


def test_unknown_mapping_type_token():
    c = base()
    c['mappings'][4]['mapping_type'] = ['numbers_only', 'enum_magic']
    assert error_of(c) == "mappings[4] (app_pricing.tier): key 'mapping_type': unknown mapping_type 'enum_magic'"


def test_row_creating_type_needs_argument():
    c = base()
    c['mappings'][5]['mapping_type'] = ['add_score']
    assert error_of(c) == ("mappings[5] (scores.): key 'mapping_type': mapping_type 'add_score' needs an argument: "
                           "add_score(...)")


def test_missing_required_mapping_key():
    c = base()
    del c['mappings'][4]['xml_attribute']
    assert error_of(c) == "mappings[4] (app_pricing.tier): missing required key 'xml_attribute'"


def test_empty_target_column_only_for_row_creating():
    c = base()
    c['mappings'][4]['target_column'] = ''
    assert error_of(c) == ("mappings[4] (app_pricing.): key 'target_column': may be empty only for row-creating "
                           "mapping types")


def test_duplicate_table_column():
    c = base()
    c['mappings'].append(dict(c['mappings'][4], xml_attribute='other'))
    assert error_of(c) == ("mappings[6] (app_pricing.tier): key 'target_column': duplicate rule for "
                           "app_pricing.tier (also mappings[4])")


def test_table_not_in_insertion_order():
    c = base()
    c['mappings'][4]['target_table'] = 'app_nowhere'
    assert error_of(c) == ("mappings[4] (app_nowhere.tier): key 'target_table': table 'app_nowhere' is not in "
                           "table_insertion_order")


def test_enum_that_does_not_resolve():
    c = base()
    c['mappings'][4]['mapping_type'] = ['enum']
    assert error_of(c) == ("mappings[4] (app_pricing.tier): key 'mapping_type': enum step does not resolve to an "
                           "enum_mappings table (give 'enum_name' or name the column after the enum)")
    c['mappings'][4]['enum_name'] = 'nope_enum'
    assert error_of(c) == "mappings[4] (app_pricing.tier): key 'enum_name': enum 'nope_enum' is not in enum_mappings"
    c['mappings'][4]['enum_name'] = 'yn_enum'
    assert load_contract(c).mappings[4].enum_type == 'yn_enum'


def test_broken_expression_reported_at_load():
    c = base()
    c['mappings'][4].update(mapping_type=['calculated_field'], expression="CASE WHEN a = 'x' THEN 1")
    msg = error_of(c)
    assert msg.startswith("mappings[4] (app_pricing.tier): key 'expression': ")
    c['mappings'][4]['expression'] = ''
    assert error_of(c) == ("mappings[4] (app_pricing.tier): key 'expression': calculated_field needs a non-empty "
                           "expression")


def test_bit_conversion_table_required():
    c = base()
    c['mappings'][4].update(mapping_type=['boolean_to_bit'], data_type='bit')
    assert error_of(c) == ("mappings[4] (app_pricing.tier): key 'mapping_type': 'boolean_to_bit' needs "
                           "bit_conversions.boolean_to_bit")


def test_extractor_must_come_first_and_row_creating_last():
    c = base()
    c['mappings'][4]['mapping_type'] = ['numbers_only', 'last_valid_pr_contact']
    assert error_of(c) == ("mappings[4] (app_pricing.tier): key 'mapping_type': 'last_valid_pr_contact' chooses "
                           "the source element and must come first")
    c = base()
    c['mappings'][5]['mapping_type'] = ['add_score(EX)', 'numbers_only']
    assert error_of(c) == "mappings[5] (scores.): key 'mapping_type': 'add_score(EX)' must be the last step"


def test_bad_data_length_and_nullable():
    c = base()
    c['mappings'][4]['data_length'] = 'ten'
    c['mappings'][3]['nullable'] = 'no'
    msg = error_of(c)
    assert msg.splitlines() == [
        '2 problems in contract:',
        "mappings[3] (app_pricing.campaign_num): key 'nullable': must be true or false",
        "mappings[4] (app_pricing.tier): key 'data_length': must be a positive integer or -1 (no limit)"]


def test_element_filtering_rules():
    c = base()
    c['element_filtering']['filter_rules'][0]['required_attributes']['ac_role_tp_c'] = []
    msg = error_of(c)
    assert ("element_filtering.filter_rules[0] (contact): key 'required_attributes.ac_role_tp_c': must be true or a "
            "non-empty list of distinct strings (first = highest priority)") in msg
    c = base()
    c['element_filtering']['filter_rules'][0]['element_type'] = 'person'
    assert error_of(c) == "element_filtering: no rule with element_type 'contact'"
    c = base()
    c['element_filtering']['filter_rules'][0]['xml_child_path'] = APP + '/x/contact'
    assert error_of(c) == ("element_filtering.filter_rules[0] (contact): key 'xml_child_path': must be a child of "
                           "xml_parent_path")


def test_relationships_against_insertion_order():
    c = base()
    c['relationships'][1]['child_table'] = 'app_missing'
    msg = error_of(c)
    assert ("relationships[1] (app_base -> app_missing): key 'child_table': table 'app_missing' is not in "
            "table_insertion_order") in msg
    c = base()
    c['table_insertion_order'] = ['app_contact_base', 'app_base', 'app_pricing', 'scores']
    msg = error_of(c)
    assert ("relationships[0] (app_base -> app_contact_base): child table comes before its parent in "
            "table_insertion_order") in msg
    c = base()
    del c['relationships'][1]
    assert error_of(c) == ("table_insertion_order (app_pricing): table has column mappings but is not the "
                           "child_table of any relationship")


def test_first_table_needs_app_id():
    c = base()
    c['mappings'][0]['target_column'] = 'id'
    assert error_of(c) == "table_insertion_order[0] (app_base): no mapping fills app_base.app_id"


def test_path_outside_root():
    c = base()
    c['mappings'][4]['xml_path'] = '/Other/thing'
    assert error_of(c) == "mappings[4] (app_pricing.tier): key 'xml_path': does not start at xml_root_element 'Provenir'"


def test_load_does_not_modify_input():
    c = base()
    before = copy.deepcopy(c)
    load_contract(c)
    assert c == before
