"""The map stage: the pure core on documents built here, then MapFn in a TestPipeline with its dead-letter path."""
import json
import os

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from lxml import etree

from contracts import compile_contract, load_contract
from transforms.errors import StageError
from transforms.map import MapFn, map_document
from transforms.parse import ParsedDoc, hardened_parser
from transforms.records import DEAD_LETTER_TAG

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTRACT = json.load(open(os.path.join(ROOT, 'contracts', 'samples', 'credit_app.json')))

DOC = b'''<Provenir><Request ID="4242"><CustData>
<application app_receive_date="01/02/2024" app_source_ind="I" app_type_code="PRODB" product_line="" IP_address=" 10.1.2.3 "
  campaign_num="A1" esign_consent_flag="true" paperless_flag="no" sms_consent_flag="">
 <contact con_id="77" ac_role_tp_c="PR" first_name="Ann" last_name="Lee" ssn="012-34-5678" birth_date="1980-05-06">
  <contact_address address_tp_c="CURR" city="Boston" state="MA" zip="02118" home_phone="(617) 555-0100"/>
 </contact>
 <contact con_id="" ac_role_tp_c="AUTHU" first_name="Nobody"/>
</application></CustData></Request></Provenir>'''


def parsed(xml=DOC, app_id=4242):
    return ParsedDoc('d.xml', app_id, etree.fromstring(xml, hardened_parser()), xml)


@pytest.fixture(scope='module')
def compiled():
    return compile_contract(load_contract(CONTRACT))


def test_map_document_rows_and_values(compiled):
    m = map_document(parsed(), compiled)
    assert m.app_id == 4242 and m.source == 'd.xml'
    base = m.rows['app_base'][0]
    assert base['app_id'] == 4242 and base['ip_address'] == '10.1.2.3'
    assert base['receive_date'].isoformat().startswith('2024-01-02')
    contacts = m.rows['app_contact_base']
    assert [(c['con_id'], c['first_name'], c['ssn']) for c in contacts] == [(77, 'Ann', '012345678')]
    assert contacts[0]['esign_consent_flag'] == 1 and contacts[0]['paperless_flag'] == 0
    addr = m.rows['app_contact_address']
    assert [(a['con_id'], a['city'], a['zip']) for a in addr] == [(77, 'Boston', '02118')]   # leading zero kept
    assert contacts[0]['home_phone'] == '6175550100'


def test_map_document_without_the_application_fails_the_mapping_stage(compiled):
    with pytest.raises(StageError) as e:
        map_document(parsed(b'<Provenir><Request ID="5"><CustData/></Request></Provenir>', 5), compiled)
    assert e.value.stage == 'mapping'


def test_map_fn_outputs_rows_and_dead_letters():
    bad = b'<Provenir><Request ID="5"><CustData/></Request></Provenir>'
    with BeamTestPipeline() as p:
        out = (p | beam.Create([parsed(), parsed(bad, 5)])
               | beam.ParDo(MapFn(CONTRACT)).with_outputs(DEAD_LETTER_TAG, main='ok'))
        assert_that(out.ok | 'Tables' >> beam.Map(lambda m: (m.app_id, sorted(m.rows))),
                    equal_to([(4242, ['app_base', 'app_contact_address', 'app_contact_base', 'app_pricing_cc'])]),
                    label='rows')
        assert_that(out[DEAD_LETTER_TAG] | 'Dead' >> beam.Map(lambda d: (d.app_id, d.stage, d.payload == bad.decode())),
                    equal_to([(5, 'mapping', True)]), label='dead')
