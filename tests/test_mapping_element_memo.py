"""Regression: a calculated field evaluated on a child element (contact_address.months_at_address =
months_at_residence + years_at_residence * 12) must read *that* element's attributes.

The compiler memoised lookups by id(element); lxml element proxies made while iterating children are freed and
their ids reused, so an address could get the previous contact's address values. It showed up as a difference
between the in_memory and multi_processing runners (tests/test_runners.py), because re-parsed documents lay out
their proxies differently. Expectations here are computed from the XML with plain lxml."""
from lxml import etree

from contracts import compile_contract, load_contract
from pipeline.config import resolve_sample as resolve_contract_path
from contracts.samples.generate import generate_documents


def _int(v):
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        return None


def test_months_at_address_comes_from_the_address_element_itself():
    compiled = compile_contract(load_contract(resolve_contract_path('credit_app')))
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    checked = 0
    for app_id, xml in generate_documents(300, seed=23):
        try:
            root = etree.fromstring(xml.encode('utf-8'), parser)
        except etree.XMLSyntaxError:
            continue
        try:
            rows = compiled.map(root, app_id=app_id).rows.get('app_contact_address') or []
        except Exception:
            continue
        # (con_id, address_line_1) -> every months value the XML allows for that address
        allowed = {}
        for contact in root.iter('contact'):
            for a in contact.iterchildren('contact_address'):
                m, y = _int(a.get('months_at_residence')), _int(a.get('years_at_residence'))
                if m is not None and y is not None:
                    allowed.setdefault((_int(contact.get('con_id')), (a.get('address_line_1') or '').strip()),
                                       set()).add(m + 12 * y)
        for r in rows:
            if r.get('months_at_address') is None:
                continue
            key = (r['con_id'], (r.get('address_line_1') or '').strip())
            assert key in allowed, (app_id, key)
            assert r['months_at_address'] in allowed[key], (app_id, key, r['months_at_address'], allowed[key])
            checked += 1
    assert checked > 300
