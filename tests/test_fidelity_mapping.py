"""Issue 11, on the mapper's pure core: documents that differ from the samples in ordinary ways come out exactly right
or fail as a whole. No table, contact or value is lost behind a warning.

Each test names the point of the issue it pins. The contracts are the small CC- and RL-style ones of
test_mapping_types.py, so nothing here depends on one product line's element names.
"""
import copy

import pytest
from lxml import etree

from contracts import ContractError, MappingError, compile_contract, load_contract
from contracts import convert as cv
from test_mapping_types import (ADDR, APP, CON, EMP, P, PR, cc_contract, doc, m, ops, rl_contract,
                                rl_doc, run)
from transforms.errors import StageError
from transforms.validate import parse_app_id

NON_ASCII_DIGITS = ['\u00b2', '\u2468', '7\u00b3', '\u0663', '\uff15']   # ², ⑨, 7³, Arabic-Indic 3, fullwidth 5


# ---------------------------------------------------------------------------------------------------------------------
# 1. a table is never dropped with a warning; numbers are ASCII digits only

@pytest.mark.parametrize('text', NON_ASCII_DIGITS)
def test_non_ascii_digits_are_not_a_number_and_no_table_is_lost(text):
    """`str.isdigit()` is true for '²', int() then raised and the whole table (contacts included) was skipped with a
    warning. Now the value is "not a number" under the column's normal rules and every table is there."""
    c = cc_contract([m(APP, 'n', 'app_ops', 'n', 'int'), m(APP, 'note', 'app_ops', 'note'),
                     m(CON, 'years', 'app_contact_base', 'years', 'int')])
    contacts = PR.format('<contact_address address_tp_c="CURR" city="PROVO" zip="84601"/>')
    contacts = contacts.replace('first_name="ANN"', f'first_name="ANN" years="{text}"')
    r = run(c, doc(f'n="{text}" note="kept"', contacts=contacts))
    assert set(r.rows) == {'app_base', 'app_contact_base', 'app_ops', 'app_contact_address'}
    row = ops(r)
    assert row['note'] == 'kept'
    assert row.get('n') == (7 if text == '7\u00b3' else None)    # lenient: the first ASCII numeric run
    (contact,) = r.rows['app_contact_base']                       # the contact table too, with its row
    assert contact['con_id'] == 11 and contact['first_name'] == 'ANN'
    assert contact.get('years') == (7 if text == '7\u00b3' else None)
    assert not any('skipped' in w for w in r.warnings)


@pytest.mark.parametrize('text', NON_ASCII_DIGITS + ['1_000', 'NaN', 'Infinity', '\u0661\u0662'])
def test_converters_accept_ascii_digits_only(text):
    assert cv.to_int(text) is None
    assert cv.to_key_int(text) is None
    assert cv.to_decimal(text) is None
    assert cv.to_float(text) is None


@pytest.mark.parametrize('text,want', [('1,550.00', 1550.0), ('12,345,678', 12345678.0), ('-1,000.555', -1000.56),
                                       ('12,5', None), ('1,55', None), ('1,5500', None), (',100', None),
                                       ('1,,000', None), ('1,000,00', None)])
def test_decimals_read_strictly_grouped_thousands_separators(text, want):
    """'1,550.00' in a decimal column was dropped with a warning while integer columns drop commas (SPEC §1.10):
    a lost value. Only a strictly grouped number is read so; anything else stays not a number."""
    assert cv.to_decimal(text, 2) == want


def test_ascii_numbers_still_convert():
    assert cv.to_int(' 42 ') == 42 and cv.to_int('1,250') == 1250 and cv.to_int('2.5') == 3
    assert cv.to_int('$1,250', lenient=True) == 1 and cv.to_decimal('-0.125', 2) == -0.13
    assert cv.to_key_int('0738936') == 738936 and cv.to_key_int('+5') == 5
    assert cv.to_datetime('2020-01-02') is not None and cv.to_datetime('\u0662020-01-02') is None


@pytest.mark.parametrize('text', ['\u0663\u0663', '1\u00b2', '\uff11\uff12'])
def test_app_id_with_non_ascii_digits_is_refused(text):
    with pytest.raises(StageError, match='is not an integer'):
        parse_app_id(text)


def test_an_unexpected_exception_while_mapping_fails_the_document_naming_table_and_column(monkeypatch):
    """A bug or an unforeseen shape inside one column's mapping: the document fails (stage mapping), with a reason
    that names table.column and the error, never the value; it is never written without that table."""
    c = cc_contract([m(APP, 'note', 'app_ops', 'note')])
    real = cv.to_string

    def broken(v, length=None):
        if v == 'boom-value':
            raise RuntimeError('boom-value')
        return real(v, length)
    monkeypatch.setattr(cv, 'to_string', broken)
    with pytest.raises(MappingError) as e:
        run(c, doc('note="boom-value"', contacts=PR.format('')))
    assert str(e.value).startswith('app_ops.note: internal error RuntimeError at ')
    assert 'boom-value' not in str(e.value)


# ---------------------------------------------------------------------------------------------------------------------
# 2. key columns convert strictly; two different rows with one key fail the document

@pytest.mark.parametrize('con_id', ['12.5', '218844X', 'ABC', '7\u00b3'])
def test_a_bad_con_id_fails_the_document(con_id):
    """'12.5' was rounded to 13, '218844X' cut to 218844, 'ABC' lost, while contacts were told apart by the raw
    string: two contacts could share one key and the sink kept the last one."""
    c = cc_contract()
    contacts = (PR.format('') + PR.format('').replace('con_id="11"', f'con_id="{con_id}"')
                .replace('ac_role_tp_c="PR"', 'ac_role_tp_c="AUTHU"'))
    with pytest.raises(MappingError, match=r"app_contact_base\.con_id: key value is not an integer \(shape '"):
        run(c, doc(contacts=contacts))


def test_two_contacts_whose_keys_convert_to_one_value_fail_the_document():
    c = cc_contract()
    contacts = PR.format('') + PR.format('').replace('con_id="11"', 'con_id="011"').replace('ANN', 'BOB')
    with pytest.raises(MappingError, match=r'app_contact_base: two different rows with the same key \(con_id\)'):
        run(c, doc(contacts=contacts))


def test_a_contact_repeated_identically_collapses():
    c = cc_contract()
    r = run(c, doc(contacts=PR.format('') + PR.format('')))
    assert len(r.rows['app_contact_base']) == 1


# ---------------------------------------------------------------------------------------------------------------------
# Mapping semantics of the existing system (SPEC §1) that had drifted

@pytest.mark.parametrize('raw,expected', [(' Y', 1), ('Y ', 1), (' N ', 0), ('\tY', 1), (' ', 0)])
def test_bit_conversions_strip_surrounding_whitespace(raw, expected):
    c = cc_contract([m(APP, 'a', 'app_ops', 'a', 'bit', ['char_to_bit']),
                     m(APP, 'b', 'app_ops', 'b', 'bit', ['boolean_to_bit']),
                     m(APP, 'f', 'app_ops', 'f', 'bit', ['char_to_bit'], nullable=False, default_value='0')])
    b_raw = {' Y': ' true', 'Y ': 'y ', ' N ': ' n ', '\tY': '\ty', ' ': ' '}[raw]
    row = ops(run(c, doc(f'a="{raw}" b="{b_raw}" f="{raw}"')))
    assert (row['a'], row['b'], row['f']) == (expected, expected, expected)


def test_application_level_values_in_expressions_are_stripped():
    """'MARINE ' with a trailing blank is 'MARINE' for the existing system's parser: the collateral type (a key
    column of the collateral row) and app-level CASE results do not change with surrounding white space."""
    base = run(rl_contract(), rl_doc()).rows['app_collateral_rl']
    x = etree.tostring(rl_doc()).decode().replace('app_type_code="MARINE"', 'app_type_code=" MARINE  "')
    padded = run(rl_contract(), etree.fromstring(x.encode(), P)).rows['app_collateral_rl']
    assert padded[0]['collateral_type_enum'] == base[0]['collateral_type_enum'] == 412
    c = cc_contract([m(APP, 'x', 'app_ops', 'seg', 'string', ['calculated_field'],
                       expression="CASE WHEN application.tier = 'GOLD' THEN 'G' ELSE 'OTHER' END")])
    assert ops(run(c, doc('tier="GOLD "')))['seg'] == 'G'


def _rl_with(**attrs):
    x = etree.tostring(rl_doc()).decode()
    for k, v in attrs.items():
        x = x.replace(f'{k}=""', f'{k}="{v}"', 1)
    return etree.fromstring(x.encode(), P)


@pytest.mark.parametrize('nullish', ['null', 'NULL', 'None', ' none '])
def test_null_and_none_do_not_make_rows_in_row_creating_types(nullish):
    r = run(rl_contract(), _rl_with(svc_company=nullish, pe_income=nullish, make_2=nullish))
    assert [w['warranty_type_enum'] for w in r.rows['app_warranties_rl']] == [623]          # no 620 row
    assert [p['policy_exception_type_enum'] for p in r.rows['app_policy_exceptions_rl']] == [630]  # no 631
    assert [s['sort_order'] for s in r.rows['app_collateral_rl']] == [1, 3]                 # no slot 2
    x = etree.tostring(rl_doc()).decode().replace('pe_notes="see file"', f'pe_notes="{nullish}"')
    notes = run(rl_contract(), etree.fromstring(x.encode(), P)).rows['app_policy_exceptions_rl'][0]
    assert 'notes' not in notes


def test_warranty_rows_get_the_combined_bit_column_default_on_every_row():
    r = run(rl_contract(), _rl_with(svc_company='SVCCO'))
    rows = {w['warranty_type_enum']: w for w in r.rows['app_warranties_rl']}
    assert rows[620] == {'app_id': 600000, 'warranty_type_enum': 620, 'company_name': 'SVCCO',
                         'merrick_lienholder_flag': 0}
    assert rows[623]['merrick_lienholder_flag'] == 0


def _with_contact_rows(extra):
    c = cc_contract([m(ADDR, 'unit', 'app_contact_address', 'unit'),
                     m(ADDR, 'phone', 'app_contact_address', 'phone', types=['numbers_only']),
                     m(EMP, 'b_phone', 'app_contact_employment', 'phone', types=['numbers_only'])])
    return run(c, doc(contacts=PR.format(extra))).rows


def test_prev_address_or_employment_with_only_a_phone_or_unit_is_not_written():
    rows = _with_contact_rows('<contact_address address_tp_c="PREV" unit="APT 2" phone="555-1234"/>'
                              '<contact_employment employment_tp_c="PREV" b_phone="(555) 123-4567"/>')
    assert 'app_contact_address' not in rows and 'app_contact_employment' not in rows


def test_prev_address_and_employment_with_location_or_employer_data_are_written():
    rows = _with_contact_rows('<contact_address address_tp_c="PREV" unit="APT 2" city="OREM"/>'
                              '<contact_employment employment_tp_c="PREV" b_name="ACME" b_phone="5551234"/>')
    assert rows['app_contact_address'] == [{'address_type_enum': 321, 'city': 'OREM', 'unit': 'APT 2',
                                            'zip': '00000', 'con_id': 11}]
    assert rows['app_contact_employment'] == [{'employment_type_enum': 351, 'business_name': 'ACME',
                                               'phone': '5551234', 'con_id': 11}]


def test_a_contract_can_name_its_own_meaningful_columns():
    c = cc_contract([m(ADDR, 'unit', 'app_contact_address', 'unit')])
    c['element_filtering']['filter_rules'][1]['meaningful_columns'] = ['unit']
    rows = run(c, doc(contacts=PR.format('<contact_address address_tp_c="PREV" unit="APT 2"/>'))).rows
    assert rows['app_contact_address'][0]['unit'] == 'APT 2'
    bad = copy.deepcopy(c)
    bad['element_filtering']['filter_rules'][1]['meaningful_columns'] = 'unit'
    with pytest.raises(ContractError, match="meaningful_columns': must be a non-empty list"):
        load_contract(bad)


def test_numbers_only_without_digits_on_a_nullable_column_is_null_not_the_default():
    c = cc_contract([m(APP, 'z', 'app_ops', 'zip', types=['numbers_only'], default_value='00000'),
                     m(APP, 'q', 'app_ops', 'zip_nn', types=['numbers_only'], default_value='00000',
                       nullable=False),
                     m(APP, 'e', 'app_ops', 'zip_empty', types=['numbers_only'], default_value='00000'),
                     m(APP, 'note', 'app_ops', 'note')])
    row = ops(run(c, doc('z="N/A" q="N/A" e="" note="x"')))
    assert 'zip' not in row                      # present, no digits, nullable: NULL
    assert row['zip_nn'] == '00000'              # NOT NULL: its default
    assert row['zip_empty'] == '00000'           # empty source value: the default, as the existing system
    assert ops(run(c, doc('z="\u0663\u0663" note="x"'))).get('zip') is None    # non-ASCII digits are no digits


def test_whitespace_only_operand_in_arithmetic_gives_null():
    c = cc_contract([m(APP, 'n', 'app_ops', 'n_plus', 'int', ['calculated_field'], expression='n + 1'),
                     m(APP, 'note', 'app_ops', 'note')])
    assert 'n_plus' not in ops(run(c, doc('n="   " note="x"')))
    assert ops(run(c, doc('n="4" note="x"')))['n_plus'] == 5


def test_a_contract_missing_the_filter_rule_its_tables_need_is_a_load_error():
    c = cc_contract()
    c['element_filtering']['filter_rules'] = [r for r in c['element_filtering']['filter_rules']
                                              if r['element_type'] != 'address']
    with pytest.raises(ContractError) as e:
        load_contract(c)
    msg = str(e.value)
    assert 'relationships[2] (app_contact_base -> app_contact_address)' in msg
    assert f'no rule whose xml_child_path is {ADDR}' in msg


def test_sample_contracts_still_load():
    import os
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'contracts', 'samples')
    compile_contract(load_contract(os.path.join(here, 'credit_app.json')))


def test_an_unexpected_exception_reading_an_application_level_attribute_names_table_and_column(monkeypatch):
    """The same for the inlined application-level path of rows.one_row (columns without steps): an error while
    reading the attribute fails the document naming table.column, never the value."""
    from contracts.document import Document
    c = cc_contract([m(APP, 'note', 'app_ops', 'note')])
    real = Document.get

    def broken(self, el, attr, attr_l):
        if attr == 'note':
            raise RuntimeError('boom-value')
        return real(self, el, attr, attr_l)
    monkeypatch.setattr(Document, 'get', broken)
    with pytest.raises(MappingError) as e:
        run(c, doc('note="x"'))
    assert 'app_ops.note' in str(e.value) and 'RuntimeError' in str(e.value) and 'boom-value' not in str(e.value)
