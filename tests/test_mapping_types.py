"""Every mapping type and chain of SPEC §1.3/§1.4, pinned on small documents built here.

Two small contracts are built in this file: a CC-style one (application / contact / contact_address /
contact_employment) and an RL-style one (IL_application / IL_contact / IL_contact_address, SEC contacts, collateral,
warranties, policy exceptions), so nothing depends on one product line's element names.
"""
import copy
import datetime as dt

import pytest
from lxml import etree

from contracts import MappingError, compile_contract, load_contract
from contracts import convert as cv

P = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True)
APP = '/Provenir/Request/CustData/application'
CON = APP + '/contact'
ADDR = CON + '/contact_address'
EMP = CON + '/contact_employment'


def m(path, attr, table, column, data_type='string', types=None, **kw):
    d = {'xml_path': path, 'xml_attribute': attr, 'target_table': table, 'target_column': column,
         'data_type': data_type, 'nullable': kw.pop('nullable', True)}
    if types is not None:
        d['mapping_type'] = types
    d.update(kw)
    return d


def cc_contract(extra=(), **top):
    c = {
        'xml_root_element': 'Provenir', 'xml_application_path': APP, 'source_table': 'stage',
        'source_column': 'xml', 'source_application_table': 'application', 'target_schema': 'migration',
        'table_insertion_order': ['app_base', 'app_contact_base', 'app_ops', 'app_contact_address',
                                  'app_contact_employment', 'app_historical_lookup', 'scores', 'indicators',
                                  'app_report_results_lookup', 'processing_log'],
        'element_filtering': {'filter_rules': [
            {'element_type': 'contact', 'xml_parent_path': APP, 'xml_child_path': CON,
             'required_attributes': {'con_id': True, 'ac_role_tp_c': ['PR', 'AUTHU']}},
            {'element_type': 'address', 'xml_parent_path': CON, 'xml_child_path': ADDR,
             'required_attributes': {'address_tp_c': ['CURR', 'PREV']}},
            {'element_type': 'employment', 'xml_parent_path': CON, 'xml_child_path': EMP,
             'required_attributes': {'employment_tp_c': ['CURR', 'PREV']}}]},
        'relationships': [
            {'parent_table': 'app_base', 'child_table': 'app_ops', 'foreign_key_column': 'app_id',
             'xml_parent_path': '/Provenir/Request', 'xml_child_path': '/Provenir/Request'},
            {'parent_table': 'app_base', 'child_table': 'app_contact_base', 'foreign_key_column': 'app_id',
             'xml_parent_path': '/Provenir/Request', 'xml_child_path': CON},
            {'parent_table': 'app_contact_base', 'child_table': 'app_contact_address',
             'foreign_key_column': 'con_id', 'xml_parent_path': CON, 'xml_child_path': ADDR},
            {'parent_table': 'app_contact_base', 'child_table': 'app_contact_employment',
             'foreign_key_column': 'con_id', 'xml_parent_path': CON, 'xml_child_path': EMP}],
        'enum_mappings': {'app_type_enum': {'FPP': 20, 'SECURE': 21}, 'product_line_enum': {'': 600},
                          'contact_type_enum': {'PR': 281, 'AUTHU': 280}, 'address_type_enum': {'CURR': 320,
                                                                                                'PREV': 321},
                          'employment_type_enum': {'CURR': 350, 'PREV': 351}, 'status_enum': {'A': 160},
                          'yn_enum': {'Y': 1, 'N': 2}},
        'bit_conversions': {'char_to_bit': {'Y': 1, 'N': 0, '': 0}, 'boolean_to_bit': {'true': 1, 'false': 0,
                                                                                      'y': 1, 'n': 0, '': 0}},
        'mappings': [
            m('/Provenir/Request', 'ID', 'app_base', 'app_id', 'int', ['identity_insert'], nullable=False),
            m(APP, 'product_line', 'app_base', 'product_line_enum', 'smallint', ['enum'], nullable=False),
            m(CON, 'con_id', 'app_contact_base', 'con_id', 'int', ['identity_insert'], nullable=False),
            m(CON, 'first_name', 'app_contact_base', 'first_name', data_length=50, nullable=False,
              default_value='UNKNOWN', exclude_default_when_record_empty=True),
            m(CON, 'last_name', 'app_contact_base', 'last_name', data_length=50, nullable=False,
              default_value='UNKNOWN', exclude_default_when_record_empty=True),
            m(CON, 'birth_date', 'app_contact_base', 'birth_date', 'date', nullable=False,
              default_value='1900-01-01', exclude_default_when_record_empty=True),
            m(CON, 'ac_role_tp_c', 'app_contact_base', 'contact_type_enum', 'smallint', ['enum'], nullable=False),
            m(ADDR, 'address_tp_c', 'app_contact_address', 'address_type_enum', 'smallint', ['enum'],
              nullable=False),
            m(ADDR, 'city', 'app_contact_address', 'city', data_length=50, default_value='MISSING',
              exclude_default_when_record_empty=True),
            m(ADDR, 'zip', 'app_contact_address', 'zip', types=['numbers_only'], data_length=9,
              default_value='00000', exclude_default_when_record_empty=True),
            m(EMP, 'employment_tp_c', 'app_contact_employment', 'employment_type_enum', 'smallint', ['enum'],
              nullable=False),
            m(EMP, 'b_name', 'app_contact_employment', 'business_name', data_length=100),
            m(EMP, 'b_salary', 'app_contact_employment', 'monthly_salary', 'decimal', ['calculated_field'],
              data_length=2, expression="CASE WHEN b_salary_basis_tp_c = 'ANNUM' THEN b_salary / 12 "
                                        "ELSE b_salary END"),
        ] + list(extra),
    }
    c.update(top)
    return c


def doc(app_attrs='', contacts='', request_attrs='ID="1001"', tail=''):
    x = (f'<Provenir><Request {request_attrs}><CustData><application product_line="CC" {app_attrs}>'
         f'{contacts}</application></CustData>{tail}</Request></Provenir>')
    return etree.fromstring(x.encode(), P)


def run(contract, root, app_id=None):
    return compile_contract(load_contract(contract)).map(root, app_id)


def ops(res):
    return res.rows['app_ops'][0]


INVALID_CONTACT = ('app_contact_base: {} contact element(s) not valid (con_id, ac_role_tp_c in PR/AUTHU missing, '
                   'empty or not in the list, or none of first_name, last_name, birth_date has a value): no contact, '
                   'address or employment rows from them')
PR = '<contact con_id="11" ac_role_tp_c="PR" first_name="ANN" last_name="LEE" birth_date="1980-02-03">{}</contact>'


# ---------------------------------------------------------------------------------------------------------------------
# direct, defaults, types

def test_direct_string_truncates_and_no_limit_for_minus_one():
    c = cc_contract([m(APP, 'note', 'app_ops', 'note', data_length=4),
                     m(APP, 'blob', 'app_ops', 'blob', data_length=-1)])
    r = run(c, doc('note="  abcdef " blob="0123456789"'))
    assert ops(r) == {'note': 'abcd', 'blob': '0123456789', 'app_id': 1001}


def test_direct_empty_uses_default_even_for_nullable_and_case_insensitive_attribute():
    c = cc_contract([m(APP, 'mail_cell', 'app_ops', 'segment', data_length=10, default_value='UNKNOWN'),
                     m(APP, 'partner_url_id', 'app_ops', 'meta_url', data_length=50)])
    r = run(c, doc('mail_cell="" Partner_URL_ID="abc"'))
    assert ops(r) == {'segment': 'UNKNOWN', 'meta_url': 'abc', 'app_id': 1001}


def test_attribute_lookup_exact_name_first_then_the_last_case_insensitive_match():
    """The exact name wins; without it, of the names that differ only in case the last on the element; an absent
    name stays absent (the miss path reads the element's names, then only the value asked for)."""
    c = cc_contract([m(APP, 'a_code', 'app_ops', 'exact', data_length=10),
                     m(APP, 'b_code', 'app_ops', 'last', data_length=10),
                     m(APP, 'c_code', 'app_ops', 'absent', data_length=10),
                     m(APP, 'd_code', 'app_ops', 'upper', data_length=10)])
    r = run(c, doc('A_CODE="no" a_code="yes" B_Code="first" B_CODE="second" D_CODE="up"'))
    assert ops(r) == {'exact': 'yes', 'last': 'second', 'upper': 'up', 'app_id': 1001}


def test_direct_integer_takes_first_numeric_run_and_rounds_half_up():
    c = cc_contract([m(APP, 'a', 'app_ops', 'a', 'int'), m(APP, 'b', 'app_ops', 'b', 'smallint'),
                     m(APP, 'c', 'app_ops', 'c', 'tinyint'), m(APP, 'd', 'app_ops', 'd', 'int')])
    r = run(c, doc('a="$1,250" b="36.50" c="2.5" d="abc"'))
    assert ops(r) == {'a': 1, 'b': 37, 'c': 3, 'app_id': 1001}
    assert r.warnings == ["app_ops.d: not a valid int (shape 'AAA'); left empty"]


@pytest.mark.parametrize('text,offset', [('2023-09-15T12:54:36-05:00', True), ('2023-09-15T12:54:36+09:00', True),
                                         ('2023-09-15 12:54:36 +0900', True), ('2023-09-15T12:54:36Z', True),
                                         ('2023-09-15 12:54:36', False), ('09/15/2023 12:54:36', False)])
def test_a_time_zone_offset_is_dropped_and_said(text, offset):
    """Datetime columns hold no zone: the time as written is kept (what the existing system's pyodbc sent), and a
    document whose value carried an offset says that it was dropped (two instants may become one value)."""
    c = cc_contract([m(APP, 'decision_date', 'app_ops', 'decision_date', 'datetime')])
    r = run(c, doc(f'decision_date="{text}"'))
    assert ops(r)['decision_date'] == dt.datetime(2023, 9, 15, 12, 54, 36)
    assert r.warnings == ([f"app_ops.decision_date: a time-zone offset was dropped; the time is kept as written "
                           f"(shape {cv.shape(text)!r})"] if offset else [])


def test_decimal_rounding_and_places():
    c = cc_contract([m(APP, 'a', 'app_ops', 'a', 'decimal', data_length=2),
                     m(APP, 'b', 'app_ops', 'b', 'decimal', data_length=5),
                     m(APP, 'c', 'app_ops', 'c', 'decimal')])
    r = run(c, doc('a="2.345" b="1.1234567" c="7"'))
    assert ops(r) == {'a': 2.35, 'b': 1.12346, 'c': 7.0, 'app_id': 1001}


@pytest.mark.parametrize('text,expected', [
    ('2015-11-5 9:2:34.767', dt.datetime(2015, 11, 5, 9, 2, 34, 767000)),
    ('11/05/2015', dt.datetime(2015, 11, 5)),
    ('03/04/2020', dt.datetime(2020, 3, 4)),          # US first
    ('25/12/2020', dt.datetime(2020, 12, 25)),        # then day/month
    ('2020-01-02 10:11:60', dt.datetime(2020, 1, 2, 10, 11, 59)),   # seconds clamped
    ('01/02/2020 1:05:06 PM', dt.datetime(2020, 1, 2, 13, 5, 6)),
    ('2021-07-08T09:10:11', dt.datetime(2021, 7, 8, 9, 10, 11)),
])
def test_datetime_formats(text, expected):
    c = cc_contract([m(APP, 'd', 'app_ops', 'd', 'datetime')])
    assert ops(run(c, doc(f'd="{text}"')))['d'] == expected


def test_bad_date_not_null_gets_default_and_warning_without_value():
    c = cc_contract()
    r = run(c, doc(contacts=PR.format('').replace('1980-02-03', '05-10-1978')))
    assert r.rows['app_contact_base'][0]['birth_date'] == dt.datetime(1900, 1, 1)
    assert r.warnings == ["app_contact_base.birth_date: unparseable date (shape '99-99-9999'); default applied"]
    assert '1978' not in ' '.join(r.warnings)


def test_bit_without_conversion_is_truthiness():
    c = cc_contract([m(APP, 'f', 'app_ops', 'f', 'bit')])
    assert ops(run(c, doc('f="N"')))['f'] == 1


# ---------------------------------------------------------------------------------------------------------------------
# enum

def test_enum_exact_case_insensitive_catch_all_and_unmapped():
    c = cc_contract([m(APP, 'app_type_code', 'app_ops', 'app_type_enum', 'smallint', ['enum']),
                     m(APP, 'x', 'app_ops', 'status_enum', 'smallint', ['enum']),
                     m(APP, 'y', 'app_ops', 'answer', 'smallint', ['enum'], enum_name='yn_enum')])
    r = run(c, doc('app_type_code="secure" x="Z" y="N"'))
    assert ops(r) == {'app_type_enum': 21, 'answer': 2, 'app_id': 1001}      # status 'Z' unmapped, nullable
    assert r.rows['app_base'][0] == {'app_id': 1001, 'product_line_enum': 600}  # '' catch-all for any value


def test_enum_not_null_unmapped_uses_default():
    c = cc_contract([m(APP, 'x', 'app_ops', 'status_enum', 'smallint', ['enum'], nullable=False,
                       default_value='160'),
                     m(APP, 'note', 'app_ops', 'note')])
    assert ops(run(c, doc('x="Q" note="n"'))) == {'status_enum': 160, 'note': 'n', 'app_id': 1001}
    # a row with nothing but the default is not written
    assert 'app_ops' not in run(c, doc('x="Q"')).rows


# ---------------------------------------------------------------------------------------------------------------------
# bits, numbers

def test_char_to_bit_and_boolean_to_bit():
    c = cc_contract([m(APP, 'a', 'app_ops', 'a', 'bit', ['char_to_bit']),
                     m(APP, 'b', 'app_ops', 'b', 'bit', ['char_to_bit']),
                     m(APP, 'c', 'app_ops', 'c', 'bit', ['char_to_bit']),
                     m(APP, 'd', 'app_ops', 'd', 'bit', ['boolean_to_bit']),
                     m(APP, 'e', 'app_ops', 'e', 'bit', ['boolean_to_bit'])])
    assert ops(run(c, doc('a="y" b="Q" d="TRUE" e="maybe"'))) == {'a': 1, 'b': 0, 'c': 0, 'd': 1, 'e': 0,
                                                                   'app_id': 1001}


def test_numbers_only_keeps_leading_zeros_for_strings_and_extract_numeric():
    c = cc_contract([m(APP, 'ssn', 'app_ops', 'ssn', types=['numbers_only'], data_length=9),
                     m(APP, 'n', 'app_ops', 'n', 'int', ['numbers_only']),
                     m(APP, 'fee', 'app_ops', 'fee', 'tinyint', ['extract_numeric']),
                     m(APP, 'fee2', 'app_ops', 'fee2', 'int', ['extract_numeric'])])
    r = run(c, doc('ssn="012-34-5678" n="0042" fee="Up to $40" fee2="$1.50"'))
    assert ops(r) == {'ssn': '012345678', 'n': 42, 'fee': 40, 'fee2': 150, 'app_id': 1001}


def test_identity_insert_extract_date_and_default_getutcdate():
    c = cc_contract([m(APP, 'when', 'app_ops', 'when', 'datetime', ['extract_date']),
                     m(APP, 'stamp', 'app_ops', 'stamp', 'datetime', ['default_getutcdate_if_null'])])
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    row = ops(run(c, doc('when="2020-05-06"')))
    assert row['when'] == dt.datetime(2020, 5, 6)
    assert before <= row['stamp'] <= dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert row['app_id'] == 1001


# ---------------------------------------------------------------------------------------------------------------------
# calculated fields

def test_calculated_app_level_uses_application_prefix_and_case_insensitive_names():
    c = cc_contract([m(APP + '/app_product', 'regb_start_date', 'app_ops', 'regb_start_date', 'datetime',
                       ['calculated_field'], expression='CASE WHEN regb_start_date IS NOT EMPTY THEN regb_start_date '
                                                        'ELSE application.app_receive_date END'),
                     m(APP + '/app_product', 'r1', 'app_ops', 'factor', data_length=25, types=['calculated_field'],
                       expression="CASE WHEN app_product.risk_reason1 IS NOT EMPTY AND "
                                  "application.population_assignment = 'BL' THEN 'ben_lomond' ELSE '' END")])
    r = run(c, doc('app_receive_date="11/05/2015" population_assignment="BL"',
                   '<app_product regb_start_date="" Risk_Reason1="X1"/>'))
    assert ops(r) == {'regb_start_date': dt.datetime(2015, 11, 5), 'factor': 'ben_lomond', 'app_id': 1001}
    r = run(c, doc('app_receive_date="11/05/2015" population_assignment="JB"',
                   '<app_product regb_start_date="2016-01-02" Risk_Reason1="X1"/>'))
    assert ops(r) == {'regb_start_date': dt.datetime(2016, 1, 2), 'app_id': 1001}     # '' -> NULL


def test_calculated_in_employment_row_uses_the_element_attributes():
    c = cc_contract()
    x = PR.format('<contact_employment employment_tp_c="CURR" b_salary="60000" b_salary_basis_tp_c="ANNUM"/>'
                  '<contact_employment employment_tp_c="PREV" b_salary="3000.555" b_salary_basis_tp_c=""/>')
    r = run(c, doc(contacts=x))
    assert r.rows['app_contact_employment'] == [
        {'employment_type_enum': 350, 'monthly_salary': 5000.0, 'con_id': 11},
        {'employment_type_enum': 351, 'monthly_salary': 3000.56, 'con_id': 11}]


@pytest.mark.parametrize('years,want,warned', [('38', 461, False), ('abc', 5, True), ('1,038', 5, True),
                                               ('\uff13\uff18', 5, True), ('', None, False)])
def test_a_non_number_in_arithmetic_counts_as_zero_and_is_said(years, want, warned):
    """SPEC §1.5: a non-numeric operand counts as 0 and the result stands (parity); the document says so, naming
    the column and not the value, instead of writing months_at_address = 5 in silence (an empty operand makes
    the result NULL: nothing to say)."""
    c = cc_contract([m(ADDR, 'months_at_residence', 'app_contact_address', 'months_at_address', 'smallint',
                       ['calculated_field'], expression='months_at_residence + (years_at_residence * 12)')])
    x = PR.format(f'<contact_address address_tp_c="CURR" city="PROVO" months_at_residence="5" '
                  f'years_at_residence="{years}"/>')
    r = run(c, doc(contacts=x))
    assert r.rows['app_contact_address'][0].get('months_at_address') == want
    said = [w for w in r.warnings if 'not a number and counted as 0' in w]
    assert said == (['app_contact_address.months_at_address: an operand of its expression is not a number and '
                     'counted as 0 (SPEC §1.5)'] if warned else [])
    assert years not in ' '.join(r.warnings) or not years


def test_calculated_then_enum_falls_back_to_the_xml_value():
    c = cc_contract([m(APP, 'req', 'app_ops', 'answer', 'smallint', ['calculated_field', 'enum'], enum_name='yn_enum',
                       expression="CASE WHEN other = 'X' THEN 1 ELSE '' END")])
    assert ops(run(c, doc('req="Y" other="X"')))['answer'] == 1      # computed value: enum skipped
    assert ops(run(c, doc('req="N" other="Q"')))['answer'] == 2      # empty result: enum of the XML value


# ---------------------------------------------------------------------------------------------------------------------
# contacts: filter, dedup, role extractors

def test_contact_filter_dedup_and_primary():
    c = cc_contract()
    x = ('<contact con_id="5" ac_role_tp_c="AUTHU" first_name="AU"/>'
         '<contact con_id="7" ac_role_tp_c="PR" first_name="P1"/>'
         '<contact con_id="5" ac_role_tp_c="PR" first_name="P5"/>'      # PR beats AUTHU on con_id 5
         '<contact con_id="" ac_role_tp_c="PR" first_name="NOID"/>'
         '<contact con_id="8" ac_role_tp_c="WEIRD" first_name="W"/>'
         '<contact con_id="9" ac_role_tp_c="PR" suffix="JR"/>')          # no meaningful data
    rows = run(c, doc(contacts=x)).rows['app_contact_base']
    assert [(r['con_id'], r['first_name'], r['contact_type_enum']) for r in rows] == [(5, 'P5', 281),
                                                                                      (7, 'P1', 281)]
    assert rows[0]['last_name'] == 'UNKNOWN' and rows[0]['birth_date'] == dt.datetime(1900, 1, 1)
    assert rows[0]['app_id'] == 1001


def test_a_shared_contact_identity_keeps_one_element_and_says_so():
    """A PR and an AUTHU sharing one con_id: one contact filter (SPEC §10.5) keeps the PR, and with it only the PR's
    addresses; the AUTHU element's address is not written (the existing system wrote both under that con_id). The
    document carries one warning saying so, without any value; documents whose identities are distinct carry none."""
    c = cc_contract()
    x = ('<contact con_id="5" ac_role_tp_c="AUTHU" first_name="AU">'
         '<contact_address address_tp_c="CURR" city="AUTHUTOWN"/></contact>'
         '<contact con_id="5" ac_role_tp_c="PR" first_name="P5"><contact_address address_tp_c="CURR" city="PRTOWN"/>'
         '</contact>'
         '<contact con_id="6" ac_role_tp_c="AUTHU" first_name="A6"/><contact con_id="6" ac_role_tp_c="AUTHU" '
         'first_name="A6B"/>')
    res = run(c, doc(contacts=x))
    assert [(r['con_id'], r['first_name']) for r in res.rows['app_contact_base']] == [(5, 'P5'), (6, 'A6B')]
    assert [(r['con_id'], r['city']) for r in res.rows['app_contact_address']] == [(5, 'PRTOWN')]
    dup = [w for w in res.warnings if 'share one identity' in w]
    assert len(dup) == 2 and all(w.startswith('app_contact_base.con_id: ') for w in dup), res.warnings
    assert not any(v in w for w in dup for v in ('AUTHUTOWN', 'PRTOWN', 'P5', 'A6', '"5"', '"6"'))
    clean = run(c, doc(contacts=x.replace('con_id="5" ac_role_tp_c="AUTHU"', 'con_id="4" ac_role_tp_c="AUTHU"')
                       .replace('con_id="6" ac_role_tp_c="AUTHU" first_name="A6B"',
                                'con_id="3" ac_role_tp_c="AUTHU" first_name="A6B"')))
    assert not [w for w in clean.warnings if 'share one identity' in w], clean.warnings


def test_last_valid_pr_contact_paths_and_enum_chain():
    c = cc_contract([m(CON, 'banking_aba', 'app_ops', 'aba', data_length=9, types=['last_valid_pr_contact']),
                     m(CON + '/app_prod_bcard', 'credit_line', 'app_ops', 'credit_line', 'smallint',
                       ['last_valid_pr_contact']),
                     m(ADDR, 'monthly_pymnt', 'app_ops', 'housing', 'decimal', ['last_valid_pr_contact'],
                       data_length=2),
                     m(CON, 'kind', 'app_ops', 'kind', 'smallint', ['last_valid_pr_contact', 'enum'],
                       enum_name='yn_enum')])
    x = ('<contact con_id="1" ac_role_tp_c="PR" first_name="A" banking_aba="111" kind="N">'
         '<app_prod_bcard credit_line="100"/></contact>'
         '<contact con_id="2" ac_role_tp_c="PR" first_name="B" banking_aba="222333444555" kind="Y">'
         '<contact_address address_tp_c="PREV" monthly_pymnt="9"/>'
         '<contact_address address_tp_c="CURR" monthly_pymnt=""/>'
         '<contact_address address_tp_c="CURR" monthly_pymnt="1,234.565"/>'
         '<app_prod_bcard credit_line="1,500"/><app_prod_bcard credit_line="2000"/></contact>'
         '<contact con_id="" ac_role_tp_c="PR" first_name="C" banking_aba="999"/>')
    r = run(c, doc(contacts=x))
    # last PR with a con_id (contact 2): aba cut to 9; last app_prod_bcard; first non-empty CURR address value,
    # a number with a thousands separator (read as the number, ROUND_HALF_UP to 2 places)
    assert ops(r) == {'aba': '222333444', 'credit_line': 2000, 'kind': 1, 'housing': 1234.57, 'app_id': 1001}
    assert r.warnings == [INVALID_CONTACT.format(1)]          # contact 3: con_id empty


def test_last_valid_pr_contact_address_prefers_curr_first_non_empty():
    c = cc_contract([m(ADDR, 'pay', 'app_ops', 'housing', 'decimal', ['last_valid_pr_contact'], data_length=2)])
    x = PR.format('<contact_address address_tp_c="PREV" pay="9"/><contact_address address_tp_c="CURR" pay=""/>'
                  '<contact_address address_tp_c="CURR" pay="12.345"/>')
    assert ops(run(c, doc(contacts=x)))['housing'] == 12.35
    x = PR.format('<contact_address address_tp_c="PREV" pay="9"/>')
    assert ops(run(c, doc(contacts=x)))['housing'] == 9.0


def test_last_valid_pr_contact_history_falls_back_to_earlier_pr():
    c = cc_contract([m(CON, 'spouse', 'app_historical_lookup', '', types=['last_valid_pr_contact', 'add_history'])])
    x = ('<contact con_id="1" ac_role_tp_c="PR" first_name="A" spouse="BOB"/>'
         '<contact con_id="2" ac_role_tp_c="PR" first_name="B" spouse="null"/>')
    assert run(c, doc(contacts=x)).rows['app_historical_lookup'] == [
        {'app_id': 1001, 'name': '[spouse]', 'source': '[contact]', 'value': 'BOB'}]


def test_authu_contact_char_to_bit_none_without_authu():
    c = cc_contract([m(CON + '/app_prod_bcard', 'issue_card_ind', 'app_ops', 'auth_flag', 'bit',
                       ['authu_contact', 'char_to_bit'])])
    x = PR.format('<app_prod_bcard issue_card_ind="Y"/>')
    r = run(c, doc('other="1"', contacts=x))
    assert 'auth_flag' not in r.rows.get('app_ops', [{}])[0]
    x2 = x + '<contact ac_role_tp_c="AUTHU" first_name="Z"><app_prod_bcard issue_card_ind="Y"/></contact>'
    assert ops(run(c, doc(contacts=x2)))['auth_flag'] == 1          # no con_id check for AUTHU


def test_curr_address_only_uses_the_rows_own_contact():
    c = cc_contract([m(ADDR, 'home_phone', 'app_contact_base', 'home_phone', data_length=10,
                       types=['curr_address_only', 'numbers_only'])])
    x = ('<contact con_id="3" ac_role_tp_c="PR" first_name="P">'
         '<contact_address address_tp_c="CURR" home_phone="(012) 555-0101"/>'
         '<contact_address address_tp_c="PREV" home_phone="999"/></contact>'
         '<contact con_id="3" ac_role_tp_c="AUTHU" first_name="A">'
         '<contact_address address_tp_c="CURR" home_phone="888"/></contact>')
    rows = run(c, doc(contacts=x)).rows['app_contact_base']
    assert [(r['con_id'], r['home_phone']) for r in rows] == [(3, '0125550101')]   # shared con_id: PR's phone


@pytest.mark.parametrize('curr', ['curr', 'CURR ', ' Curr'])
def test_the_preferred_address_type_is_compared_as_the_filter_compares_it(curr):
    """The filter accepts 'curr' and 'CURR ' as CURR (SPEC §1.8: list match case-insensitive); the address the
    contact's own columns (curr_address_only) and last_valid_pr_contact read must be chosen by the same comparison
    (SPEC §10.5: one filter), else the phones came out NULL and the payment was read from the PREV address."""
    c = cc_contract([m(ADDR, 'home_phone', 'app_contact_base', 'home_phone', data_length=10,
                       types=['curr_address_only', 'numbers_only']),
                     m(ADDR, 'pay', 'app_ops', 'housing', 'decimal', ['last_valid_pr_contact'], data_length=2)])
    x = PR.format(f'<contact_address address_tp_c="PREV" home_phone="999" pay="9999" city="OREM"/>'
                  f'<contact_address address_tp_c="{curr}" home_phone="555-0101" pay="550" city="PROVO"/>')
    r = run(c, doc(contacts=x))
    assert r.rows['app_contact_base'][0]['home_phone'] == '5550101'
    assert ops(r)['housing'] == 550.0
    assert sorted(a['address_type_enum'] for a in r.rows['app_contact_address']) == [320, 321]
    assert r.warnings == []


def test_filter_attributes_are_looked_up_like_every_other_attribute():
    """A contact written with CON_ID / AC_ROLE_TP_C (attribute names in another case) is the same contact: its
    values are read case-insensitively (SPEC §1.2), so its filter attributes and keys are too; it used to vanish
    with its addresses and employments, without a warning."""
    c = cc_contract()
    x = ('<contact CON_ID="11" AC_ROLE_TP_C="PR" first_name="ANN" last_name="LEE" birth_date="1980-02-03">'
         '<contact_address ADDRESS_TP_C="CURR" city="PROVO" zip="01106"/>'
         '<contact_employment Employment_Tp_C="CURR" b_name="ACME"/></contact>')
    plain = ('<contact con_id="11" ac_role_tp_c="PR" first_name="ANN" last_name="LEE" birth_date="1980-02-03">'
             '<contact_address address_tp_c="CURR" city="PROVO" zip="01106"/>'
             '<contact_employment employment_tp_c="CURR" b_name="ACME"/></contact>')
    got, want = run(c, doc(contacts=x)), run(c, doc(contacts=plain))
    assert got.rows == want.rows
    assert [r['con_id'] for r in got.rows['app_contact_base']] == [11]
    assert len(got.rows['app_contact_address']) == len(got.rows['app_contact_employment']) == 1


def test_contact_elements_the_filter_drops_are_said():
    """A contact without con_id, with an unknown role, or with none of the meaningful attributes makes no rows (the
    contract's filter); the document says how many, without values, instead of losing them in silence."""
    c = cc_contract()
    x = (PR.format('') + '<contact ac_role_tp_c="PR" first_name="NOID"/>'
         '<contact con_id="12" ac_role_tp_c="WEIRD" first_name="W"/><contact con_id="13" ac_role_tp_c="PR"/>')
    r = run(c, doc(contacts=x))
    assert [row['con_id'] for row in r.rows['app_contact_base']] == [11]
    assert r.warnings == [INVALID_CONTACT.format(3)]
    assert run(c, doc(contacts=PR.format(''))).warnings == []


# ---------------------------------------------------------------------------------------------------------------------
# child rows

def test_address_rows_filter_empty_records():
    c = cc_contract()
    x = PR.format('<contact_address address_tp_c="CURR" city="PROVO" zip="01106"/>'
                  '<contact_address address_tp_c="PREV"/>'                   # keys + defaults only: not written
                  '<contact_address address_tp_c="HOME" city="X"/>'          # type not in the rule
                  '<contact_address address_tp_c="prev" city="" zip="84"/>')
    r = run(c, doc(contacts=x))
    assert r.rows['app_contact_address'] == [
        {'address_type_enum': 320, 'city': 'PROVO', 'zip': '01106', 'con_id': 11},
        {'address_type_enum': 321, 'city': 'MISSING', 'zip': '84', 'con_id': 11}]
    assert r.warnings == []


def test_two_different_rows_with_one_key_fail_the_document():
    """A second CURR address of one contact with other data would share the row's primary key (con_id, type): one
    of them would silently replace the other. The document fails, naming the table and the key."""
    c = cc_contract()
    x = PR.format('<contact_address address_tp_c="CURR" city="PROVO" zip="01106"/>'
                  '<contact_address address_tp_c="CURR" city="OREM"/>')
    with pytest.raises(MappingError, match=r'app_contact_address: two different rows with the same key '
                                           r'\(con_id, address_type_enum\)'):
        run(c, doc(contacts=x))


def test_identical_repeated_rows_collapse_into_one():
    c = cc_contract()
    a = '<contact_address address_tp_c="CURR" city="PROVO" zip="01106"/>'
    r = run(c, doc(contacts=PR.format(a + a)))
    assert r.rows['app_contact_address'] == [{'address_type_enum': 320, 'city': 'PROVO', 'zip': '01106',
                                              'con_id': 11}]


def test_employment_with_only_zero_amounts_is_not_written():
    c = cc_contract()
    x = PR.format('<contact_employment employment_tp_c="CURR" b_salary="0" b_salary_basis_tp_c="MONTH"/>')
    assert 'app_contact_employment' not in run(c, doc(contacts=x)).rows


def test_no_valid_contact_means_no_contact_rows():
    c = cc_contract()
    r = run(c, doc(contacts='<contact con_id="" ac_role_tp_c="PR" first_name="A"><contact_address '
                            'address_tp_c="CURR" city="X"/></contact>'))
    assert set(r.rows) == {'app_base'}


# ---------------------------------------------------------------------------------------------------------------------
# key/value rows

def test_scores_indicators_history_report_lookup():
    P_ = APP + '/app_product'
    c = cc_contract([m(P_, 'EX_score', 'scores', '', 'int', ['add_score(EX)']),
                     m(P_, 'TU_score', 'scores', '', 'int', ['add_score(TU)']),
                     m(P_, 'bad_score', 'scores', '', 'int', ['add_score(BAD)']),
                     m(P_, 'fraud_ind', 'indicators', '', types=['add_indicator(fraud)']),
                     m(P_, 'ssn_ind', 'indicators', '', types=['add_indicator(ssn)']),
                     m(P_, 'EX_score', 'app_historical_lookup', '', types=['add_history']),
                     m(P_, 'gone', 'app_historical_lookup', '', types=['add_history']),
                     m(ADDR, 'mailing_city', 'app_historical_lookup', '', types=['add_history']),
                     m(P_, 'GIACT', 'app_report_results_lookup', '', types=['add_report_lookup(GIACT)'])])
    x = (PR.format('<contact_address address_tp_c="CURR" mailing_city="A"/>') +
         '<contact con_id="12" ac_role_tp_c="AUTHU" first_name="Q"><contact_address address_tp_c="CURR" '
         'mailing_city=" LAST "/></contact>')
    r = run(c, doc(contacts='<app_product EX_score="0" TU_score="" bad_score="n/a" fraud_ind="Yes" ssn_ind="N" '
                            'gone="None" GIACT="OK"/>' + x))
    assert r.rows['scores'] == [{'app_id': 1001, 'score_identifier': 'EX', 'score': 0}]
    assert r.rows['indicators'] == [{'app_id': 1001, 'indicator': 'fraud', 'value': '1'}]
    assert r.rows['app_historical_lookup'] == [
        {'app_id': 1001, 'name': '[EX_score]', 'source': '[app_product]', 'value': '0'},
        {'app_id': 1001, 'name': '[mailing_city]', 'source': '[contact_address]', 'value': 'LAST'}]
    assert r.rows['app_report_results_lookup'] == [{'app_id': 1001, 'name': 'GIACT', 'value': 'OK',
                                                    'source_report_key': 'GIACT'}]
    assert list(r.rows) == ['app_base', 'app_contact_base', 'app_historical_lookup',
                            'scores', 'indicators', 'app_report_results_lookup']


# ---------------------------------------------------------------------------------------------------------------------
# one-row tables, document-level behaviour

def test_one_row_table_with_only_defaults_is_not_written():
    c = cc_contract([m(APP, 'seg', 'app_ops', 'segment', data_length=10, default_value='UNKNOWN')])
    assert 'app_ops' not in run(c, doc()).rows
    c = cc_contract([m(APP, 'flag', 'app_ops', 'flag', 'bit', ['char_to_bit'], default_value='0')])
    assert run(c, doc()).rows['app_ops'] == [{'flag': 0, 'app_id': 1001}]   # a conversion result is a value


def test_mapping_errors_and_app_id_override():
    c = cc_contract()
    with pytest.raises(MappingError, match='application element'):
        run(c, etree.fromstring(b'<Provenir><Request ID="5"><CustData><IL_application/></CustData></Request>'
                                b'</Provenir>', P))
    with pytest.raises(MappingError, match='no app_id'):
        run(c, doc(request_attrs='ID="abc"'))
    r = run(c, doc(), app_id=77)
    assert r.app_id == 77 and r.rows['app_base'][0]['app_id'] == 77
    assert r.warnings == ['app_id of the source differs from /Provenir/Request@ID; the source app_id is used']


def test_stop_after_path_and_partial_tree():
    cc = compile_contract(load_contract(cc_contract()))
    assert cc.stop_after_path == APP
    assert cc.tables == ['app_base', 'app_contact_base', 'app_contact_address', 'app_contact_employment']
    # a document truncated right after </application> maps the same as the whole one
    full = (b'<Provenir><Request ID="9"><CustData><application product_line="x"><contact con_id="1" '
            b'ac_role_tp_c="PR" first_name="A"/></application></CustData><Journals><J/></Journals></Request>'
            b'</Provenir>')
    cut = full[:full.index(b'</application>') + len(b'</application>')]
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True,
                             recover=True)
    assert cc.map(etree.fromstring(full, P)).rows == cc.map(etree.fromstring(cut, parser)).rows
    outside = cc_contract([m('/Provenir/Request/Journals', 'x', 'app_ops', 'x')])
    assert compile_contract(load_contract(outside)).stop_after_path == '/Provenir/Request'


# ---------------------------------------------------------------------------------------------------------------------
# RL-style contract: other element names, SEC contacts, collateral, warranties, policy exceptions

RAPP = '/Provenir/Request/CustData/IL_application'
RCON = RAPP + '/IL_contact'
RADDR = RCON + '/IL_contact_address'
RCOLL = RAPP + '/IL_collateral'


def rl_contract():
    return {
        'xml_root_element': 'Provenir', 'xml_application_path': RAPP, 'source_table': 'stage_rl',
        'source_column': 'xml', 'source_application_table': 'IL_application', 'target_schema': 'migration',
        'table_insertion_order': ['app_base', 'app_contact_base', 'app_dealer', 'app_contact_address',
                                  'app_collateral_rl', 'app_warranties_rl', 'app_policy_exceptions_rl',
                                  'processing_log'],
        'element_filtering': {'filter_rules': [
            {'element_type': 'contact', 'xml_parent_path': RAPP, 'xml_child_path': RCON,
             'required_attributes': {'con_id': True, 'ac_role_tp_c': ['PR', 'SEC']}},
            {'element_type': 'address', 'xml_parent_path': RCON, 'xml_child_path': RADDR,
             'required_attributes': {'address_type_code': ['CURR', 'PREV']}}]},
        'relationships': [
            {'parent_table': 'app_base', 'child_table': 'app_contact_base', 'foreign_key_column': 'app_id',
             'xml_parent_path': '/Provenir/Request', 'xml_child_path': RCON},
            {'parent_table': 'app_base', 'child_table': 'app_dealer', 'foreign_key_column': 'app_id',
             'xml_parent_path': '/Provenir/Request', 'xml_child_path': '/Provenir/Request'},
            {'parent_table': 'app_contact_base', 'child_table': 'app_contact_address',
             'foreign_key_column': 'con_id', 'xml_parent_path': RCON, 'xml_child_path': RADDR}],
        'enum_mappings': {'contact_type_enum': {'PR': 281, 'SEC': 282}, 'address_type_enum': {'CURR': 320,
                                                                                              'PREV': 321}},
        'bit_conversions': {'char_to_bit': {'Y': 1, 'N': 0, 'J': 1, '': 0}},
        'mappings': [
            m('/Provenir/Request', 'ID', 'app_base', 'app_id', 'int', ['identity_insert'], nullable=False),
            m(RAPP, 'app_type_code', 'app_base', 'app_type', data_length=10),
            m(RCON, 'con_id', 'app_contact_base', 'con_id', 'int', ['identity_insert'], nullable=False),
            m(RCON, 'first_name', 'app_contact_base', 'first_name', nullable=False, default_value='UNKNOWN',
              exclude_default_when_record_empty=True),
            m(RCON, 'ac_role_tp_c', 'app_contact_base', 'contact_type_enum', 'smallint', ['enum'],
              nullable=False),
            m(RADDR, 'address_type_code', 'app_contact_address', 'address_type_enum', 'smallint', ['enum'],
              nullable=False),
            m(RADDR, 'city', 'app_contact_address', 'city'),
            m(RCON, 'email', 'app_dealer', 'sec_email', types=['last_valid_sec_contact']),
            m(RADDR, 'city', 'app_dealer', 'sec_city', types=['last_valid_sec_contact']),
            m(RCON, 'email', 'app_dealer', 'pr_email', types=['last_valid_pr_contact']),
            # collateral slots
            m(RCOLL, 'make_1', 'app_collateral_rl', 'make', types=['add_collateral(1)'], nullable=False,
              default_value='MISSING'),
            m(RCOLL, 'year_1', 'app_collateral_rl', 'year', 'smallint', ['numbers_only', 'add_collateral(1)'],
              nullable=False, default_value='9999'),
            m(RCOLL, 'used_1', 'app_collateral_rl', 'used_flag', 'bit', ['char_to_bit', 'add_collateral(1)'],
              nullable=False, default_value='0'),
            m(RCOLL, 'value_1', 'app_collateral_rl', 'wholesale_value', 'decimal', ['add_collateral(1)']),
            m(RCOLL, 'make_1', 'app_collateral_rl', 'collateral_type_enum', 'smallint',
              ['calculated_field', 'add_collateral(1)'], nullable=False, default_value='423',
              expression="CASE WHEN IL_application.app_type_code = 'MARINE' AND IL_collateral.make_1 LIKE "
                         "'%YAMAHA%' THEN 412 WHEN IL_application.app_type_code = 'MARINE' THEN 413 END"),
            m(RCOLL, 'make_2', 'app_collateral_rl', 'make', types=['add_collateral(2)'], nullable=False,
              default_value='MISSING'),
            m(RCOLL, 'value_2', 'app_collateral_rl', 'wholesale_value', 'decimal', ['add_collateral(2)']),
            m(RCOLL, 'make_3', 'app_collateral_rl', 'make', types=['add_collateral(3)'], nullable=False,
              default_value='MISSING'),
            m(RCOLL, 'value_3', 'app_collateral_rl', 'wholesale_value', 'decimal', ['add_collateral(3)']),
            m(RCOLL, 'used_3', 'app_collateral_rl', 'used_flag', 'bit', ['char_to_bit', 'add_collateral(3)'],
              nullable=False, default_value='0'),
            # warranties
            m(RAPP + '/IL_backend_policies', 'gap_company', 'app_warranties_rl', 'company_name',
              types=['warranty_field(623)']),
            m(RAPP + '/IL_backend_policies', 'gap_amount', 'app_warranties_rl', 'amount', 'decimal',
              types=['warranty_field(623)']),
            m(RAPP + '/IL_backend_policies', 'gap_lien', 'app_warranties_rl', 'merrick_lienholder_flag', 'bit',
              ['char_to_bit', 'warranty_field(623)']),
            m(RAPP + '/IL_backend_policies', 'svc_company', 'app_warranties_rl', 'company_name',
              types=['warranty_field(620)']),
            # policy exceptions
            m(RAPP + '/IL_app_decision_info', 'pe_notes', 'app_policy_exceptions_rl', 'notes',
              types=['policy_exceptions()']),
            m(RAPP + '/IL_app_decision_info', 'pe_cap', 'app_policy_exceptions_rl', 'reason_code',
              types=['policy_exceptions(630)']),
            m(RAPP + '/IL_app_decision_info', 'pe_income', 'app_policy_exceptions_rl', 'reason_code',
              types=['policy_exceptions(631)']),
        ],
    }


def rl_doc():
    x = ('<Provenir><Request ID="600000"><CustData><IL_application app_type_code="MARINE">'
         '<IL_contact con_id="1" ac_role_tp_c="PR" first_name="P" email="p@x">'
         '<IL_contact_address address_type_code="CURR" city="BOISE"/></IL_contact>'
         '<IL_contact con_id="2" ac_role_tp_c="SEC" first_name="S" email="s@x">'
         '<IL_contact_address address_type_code="PREV" city="OLD"/>'
         '<IL_contact_address address_type_code="CURR" city="NAMPA"/></IL_contact>'
         '<IL_collateral make_1="YAMAHA BOAT" year_1="MY 2019" used_1="Y" value_1="0" make_2="" value_2="0" '
         'make_3="" value_3="1500.5" used_3=""/>'
         '<IL_backend_policies gap_company="GAPCO" gap_amount="" gap_lien="" svc_company=""/>'
         '<IL_app_decision_info pe_notes="see file" pe_cap="CAP1" pe_income=""/>'
         '</IL_application></CustData></Request></Provenir>')
    return etree.fromstring(x.encode(), P)


def test_rl_contract_contacts_sec_and_children():
    r = run(rl_contract(), rl_doc())
    assert r.rows['app_contact_base'] == [
        {'con_id': 1, 'first_name': 'P', 'contact_type_enum': 281, 'app_id': 600000},
        {'con_id': 2, 'first_name': 'S', 'contact_type_enum': 282, 'app_id': 600000}]
    assert r.rows['app_contact_address'] == [
        {'address_type_enum': 320, 'city': 'BOISE', 'con_id': 1},
        {'address_type_enum': 321, 'city': 'OLD', 'con_id': 2},
        {'address_type_enum': 320, 'city': 'NAMPA', 'con_id': 2}]
    assert r.rows['app_dealer'] == [{'sec_email': 's@x', 'sec_city': 'NAMPA', 'pr_email': 'p@x',
                                     'app_id': 600000}]


def test_rl_collateral_slots():
    rows = run(rl_contract(), rl_doc()).rows['app_collateral_rl']
    assert rows == [
        {'app_id': 600000, 'sort_order': 1, 'make': 'YAMAHA BOAT', 'year': 2019, 'used_flag': 1,
         'wholesale_value': 0.0, 'collateral_type_enum': 412},
        # slot 2: only a zero value -> no row; slot 3: value > 0 -> row with NOT NULL defaults
        {'app_id': 600000, 'sort_order': 3, 'wholesale_value': 1500.5, 'used_flag': 0, 'make': 'MISSING'}]


def test_rl_warranties_and_policy_exceptions():
    r = run(rl_contract(), rl_doc())
    assert r.rows['app_warranties_rl'] == [{'app_id': 600000, 'warranty_type_enum': 623, 'company_name': 'GAPCO',
                                            'merrick_lienholder_flag': 0}]
    assert r.rows['app_policy_exceptions_rl'] == [{'app_id': 600000, 'policy_exception_type_enum': 630,
                                                   'reason_code': 'CAP1', 'notes': 'see file'}]
    assert list(r.rows) == ['app_base', 'app_contact_base', 'app_dealer', 'app_contact_address',
                            'app_collateral_rl', 'app_warranties_rl', 'app_policy_exceptions_rl']


def test_rl_stop_after_and_tables():
    cc = compile_contract(load_contract(rl_contract()))
    assert cc.stop_after_path == RAPP
    assert cc.contract.app_id_source == ('/Provenir/Request', 'ID')
    assert cc.contract.root_element == 'Provenir' and cc.contract.source_application_table == 'IL_application'


def test_compiled_contract_is_reusable_across_documents():
    cc = compile_contract(load_contract(cc_contract()))
    a = cc.map(doc(contacts=PR.format('')))
    b = cc.map(doc(request_attrs='ID="2002"'))
    assert a.rows['app_contact_base'][0]['con_id'] == 11 and 'app_contact_base' not in b.rows
    assert b.app_id == 2002


def test_contract_dict_is_not_modified():
    c = cc_contract()
    before = copy.deepcopy(c)
    compile_contract(load_contract(c))
    assert c == before
