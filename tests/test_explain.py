"""`explain`: every mapping of one document with its chain of steps, and why a row, contact or value is missing."""
from contracts import compile_contract, load_contract
from contracts.explain import explain, render
from test_mapping_types import PR, cc_contract, doc


def _report(contacts, app=''):
    return explain(compile_contract(load_contract(cc_contract())), doc(app, contacts=contacts))


def test_every_column_shows_path_raw_value_steps_and_final_value():
    r = _report(PR.format('<contact_address address_tp_c="CURR" city="PROVO" zip="N/A"/>'))
    assert r['status'] == 'ok' and r['app_id'] == 1001
    zips = [c for c in r['columns'] if c['table'] == 'app_contact_address' and c['column'] == 'zip']
    assert zips[0]['xml_attribute'] == 'zip' and zips[0]['mapping_type'] == ['numbers_only']
    assert zips[0]['steps'] == [('extract', 'N/A', None), ('numbers_only', None, 'no digits'), ('=', None, 'missing')]
    text = render(r)
    assert "zip                          contact_address@zip <contact_address>[1] at line 1: raw 'N/A', " \
           "numbers_only NULL (no digits) -> NULL [missing]" in text
    assert "city                         contact_address@city <contact_address>[1] at line 1: raw 'PROVO' -> " \
           "'PROVO' [from the document]" in text


def test_rows_and_contacts_left_out_say_why():
    r = _report(PR.format('<contact_address address_tp_c="PREV"/><contact_address address_tp_c="HOME" city="X"/>')
                + '<contact con_id="" ac_role_tp_c="PR" first_name="Z"/>')
    notes = {(n['table'], n['element']): n['note'] for n in r['notes']}
    assert notes[(None, '<contact>[2] at line 1')].startswith('not a valid contact: a required attribute is missing')
    assert notes[('app_contact_address', '<contact_address>[1] at line 1')].startswith(
        'row not written: no meaningful data')
    assert 'does not pass the filter rule' in notes[('app_contact_address', '<contact_address>[2] at line 1')]


def test_a_failing_document_reports_the_reason_and_what_was_traced():
    r = _report(PR.format('').replace('con_id="11"', 'con_id="11X"'))
    assert r['status'] == 'failed' and r['reason'].startswith('app_contact_base.con_id: key value is not an integer')
    assert any(c['column'] == 'con_id' for c in r['columns'])


def test_shapes_hide_the_values():
    text = render(_report(PR.format('')), shapes=True)
    assert 'ANN' not in text and 'LEE' not in text and "'AAA'" in text
