"""Tests of the sample-document generator and of the sample contract / table spec it is made for.

Expectations are derived from the documents themselves (parsed with lxml), never from the generator's internals.
"""
import collections
import json
import os
import re
import sqlite3
import statistics

import pytest
from lxml import etree

from contracts.samples import generate
from contracts.samples.generate import generate_documents, write_sqlite_source, write_xml_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTRACT_PATH = os.path.join(ROOT, 'contracts', 'samples', 'credit_app.json')
TABLES_PATH = os.path.join(ROOT, 'contracts', 'samples', 'credit_app_tables.json')
APP = '/Provenir/Request/CustData/application'
KV_TABLES = {'app_historical_lookup': {'app_id', 'name', 'source', 'value'},
             'scores': {'app_id', 'score_identifier', 'score'}}
ROW_CREATING_PREFIXES = ('add_score', 'add_history', 'add_indicator', 'add_report_lookup')

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, recover=False)


def parse(xml):
    """Parse a generated document the way the pipeline must: as UTF-8 bytes (it may carry a declaration/BOM)."""
    return etree.fromstring(xml.encode('utf-8'), _PARSER)


def classify(app_id, xml):
    """(ok, root) for one document: ok = a well-formed Provenir CC document whose Request ID is its app_id."""
    if not xml.strip():
        return False, None
    try:
        root = parse(xml)
    except etree.XMLSyntaxError:
        return False, None
    if root.tag != 'Provenir':
        return False, root
    req = root.find('Request')
    if req is None or req.get('ID') != str(app_id):
        return False, root
    if req.find('CustData/application') is None:
        return False, root
    return True, root


@pytest.fixture(scope='module')
def sample():
    """1,000 documents, seed 3, default broken fraction, classified once."""
    docs = list(generate_documents(1000, seed=3))
    return [(app_id, xml) + classify(app_id, xml) for app_id, xml in docs]


@pytest.fixture(scope='module')
def contract():
    with open(CONTRACT_PATH, encoding='utf-8') as f:
        return json.load(f)


@pytest.fixture(scope='module')
def tables():
    with open(TABLES_PATH, encoding='utf-8') as f:
        return json.load(f)['tables']


# ------------------------------------------------------------------------------------------------ determinism
def test_same_seed_same_bytes():
    a = [(i, x.encode('utf-8')) for i, x in generate_documents(80, seed=11)]
    b = [(i, x.encode('utf-8')) for i, x in generate_documents(80, seed=11)]
    assert a == b


def test_different_seed_different_documents():
    a = dict(generate_documents(20, seed=1))
    b = dict(generate_documents(20, seed=2))
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a) == 20


def test_prefix_and_app_ids():
    short = list(generate_documents(15, seed=5, start_app_id=777))
    long_ = list(generate_documents(40, seed=5, start_app_id=777))
    assert long_[:15] == short
    assert [i for i, _ in long_] == list(range(777, 817))


def test_broken_fraction_does_not_change_the_other_documents():
    clean = dict(generate_documents(200, seed=9, broken_fraction=0.0))
    mixed = dict(generate_documents(200, seed=9, broken_fraction=0.3))
    same = [k for k in clean if clean[k] == mixed[k]]
    differ = [k for k in clean if clean[k] != mixed[k]]
    assert differ, 'some documents must be broken at 30 %'
    assert all(not classify(k, mixed[k])[0] for k in differ)
    assert all(classify(k, mixed[k])[0] for k in same)


# ------------------------------------------------------------------------------------------------ broken docs
def test_broken_fraction_is_respected():
    n, frac = 1500, 0.1
    broken = sum(not classify(i, x)[0] for i, x in generate_documents(n, seed=21, broken_fraction=frac))
    assert 0.6 * n * frac <= broken <= 1.4 * n * frac


def test_no_broken_documents_at_zero_and_all_at_one():
    assert all(classify(i, x)[0] for i, x in generate_documents(300, seed=4, broken_fraction=0.0))
    assert not any(classify(i, x)[0] for i, x in generate_documents(60, seed=4, broken_fraction=1.0))


def test_broken_kinds_all_occur():
    kinds = collections.Counter()
    for app_id, xml in generate_documents(400, seed=8, broken_fraction=1.0):
        if xml == '':
            kinds['empty'] += 1
            continue
        try:
            root = parse(xml)
        except etree.XMLSyntaxError:
            kinds['malformed'] += 1
            continue
        req = root.find('Request')
        if root.tag != 'Provenir':
            kinds['wrong_root'] += 1
        elif req is not None and req.get('ID') != str(app_id):
            kinds['bad_request_id'] += 1
        elif req is not None and req.find('CustData/IL_application') is not None:
            kinds['wrong_product'] += 1
        else:
            kinds['other'] += 1
    assert set(kinds) == {'empty', 'malformed', 'wrong_root', 'bad_request_id', 'wrong_product'}, kinds


def test_default_broken_fraction_is_small(sample):
    broken = sum(not ok for _, _, ok, _ in sample)
    assert 5 <= broken <= 45          # 2 % of 1,000


# ------------------------------------------------------------------------------------------------ well-formed docs
def test_every_non_broken_document_parses_and_is_a_cc_application(sample):
    good = [(app_id, xml, root) for app_id, xml, ok, root in sample if ok]
    assert len(good) >= 950
    for app_id, xml, root in good:
        app = root.find('Request/CustData/application')
        assert app.find('app_product') is not None
        assert app.find('rmts_info') is not None
        contacts = app.findall('contact')
        assert 1 <= len(contacts) <= 3
        assert any(c.get('ac_role_tp_c') == 'PR' for c in contacts)
        assert sum(c.get('ac_role_tp_c') == 'PR' and bool(c.get('con_id')) for c in contacts) <= 1
        for c in contacts:
            addrs = c.findall('contact_address')
            emps = c.findall('contact_employment')
            assert len(addrs) <= 3 and len(emps) <= 2
            a_types = [a.get('address_tp_c') for a in addrs if a.get('address_tp_c') in ('CURR', 'PREV')]
            e_types = [e.get('employment_tp_c') for e in emps if e.get('employment_tp_c') in ('CURR', 'PREV')]
            assert len(a_types) == len(set(a_types)), 'at most one CURR and one PREV address per contact'
            assert len(e_types) == len(set(e_types))
        # the report block follows the application
        assert root.find('Request/Reports') is not None and root.find('Request/Journals') is not None


def test_document_variety(sample):
    """The edge cases the pipeline must handle actually occur in 1,000 documents."""
    good = [(xml, root) for _, xml, ok, root in sample if ok]
    assert sum(x.startswith('\ufeff') for x, _ in good) >= 50
    assert sum('<?xml' in x[:5] or '<?xml' in x[1:6] for x, _ in good) >= 30
    contacts = [c for _, r in good for c in r.iterfind('Request/CustData/application/contact')]
    roles = collections.Counter(c.get('ac_role_tp_c') for c in contacts)
    assert roles['AUTHU'] >= 150 and (roles['SEC'] + roles['COAPP']) >= 5
    assert sum(not c.get('con_id') for c in contacts) >= 10
    addrs = [a for c in contacts for a in c.iterfind('contact_address')]
    zips = [a.get('zip') for a in addrs]
    assert sum(z.startswith('0') for z in zips) >= 20
    assert any('-' in z for z in zips) and any(len(z) == 9 and z.isdigit() for z in zips)
    assert any(a.get('address_tp_c') not in ('CURR', 'PREV') for a in addrs)
    phones = [a.get('home_phone') for a in addrs]
    assert any('(' in p for p in phones) and any(p.startswith('+1') for p in phones)
    births = [c.get('birth_date') for c in contacts]
    assert any(re.fullmatch(r'\d\d/\d\d/\d{4}', b) for b in births)
    assert any(re.fullmatch(r'\d{4}-\d\d-\d\d', b) for b in births)
    assert any(b in generate.BAD_DATES for b in births)
    recv = [r.find('Request/CustData/application').get('app_receive_date') for _, r in good]
    assert any(re.fullmatch(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}', d) for d in recv)
    assert any(d.endswith((' AM', ' PM')) for d in recv)
    assert any(len(c.get('first_name')) > 50 or len(c.get('last_name')) > 50 for c in contacts)
    assert any("'" in c.get('last_name') for c in contacts)
    emps = [e for c in contacts for e in c.iterfind('contact_employment')]
    assert any('&' in e.get('b_name') for e in emps)
    assert {e.get('b_salary_basis_tp_c') for e in emps} >= {'ANNUM', 'MONTH', 'WEEK', 'HOURLY', ''}


def test_sizes_within_range(sample):
    sizes = sorted(len(xml.encode('utf-8')) for _, xml, ok, _ in sample if ok)
    assert sizes[0] >= 10_000
    assert sizes[-1] <= 1_100_000
    big = sum(s > 300_000 for s in sizes)
    assert big <= 0.05 * len(sizes)
    assert 40_000 <= statistics.median(sizes) <= 200_000


def test_con_ids_unique_across_documents(sample):
    seen = {}
    for app_id, _, ok, root in sample:
        if not ok:
            continue
        for c in root.iterfind('Request/CustData/application/contact'):
            con_id = c.get('con_id')
            if not con_id:
                continue
            assert con_id not in seen, 'con_id %s in app %s and %s' % (con_id, seen[con_id], app_id)
            seen[con_id] = app_id
            assert int(con_id) // 10 == app_id
    assert len(seen) >= 1000


def test_contract_paths_occur_in_documents(contract, sample):
    """Every (xml_path, xml_attribute) of the contract is present, non-empty, in some generated document."""
    found = set()
    wanted = {(m['xml_path'], m['xml_attribute']) for m in contract['mappings']}
    for _, _, ok, root in sample[:300]:
        if not ok:
            continue
        for path, attr in wanted - found:
            rel = path[len('/Provenir/'):]
            if any(e.get(attr) for e in root.iterfind(rel)):
                found.add((path, attr))
        if found == wanted:
            break
    assert wanted - found == set()


# ------------------------------------------------------------------------------------------------ contract + tables
def _varchar_length(sql_type):
    m = re.fullmatch(r'n?(?:var)?char\((\d+|max)\)', sql_type.lower())
    if not m:
        return None
    return -1 if m.group(1) == 'max' else int(m.group(1))


def test_contract_shape(contract):
    assert contract['xml_root_element'] == 'Provenir'
    assert contract['xml_application_path'] == APP
    assert contract['source_table'] == 'app_xml' and contract['source_column'] == 'xml'
    assert contract['target_schema'] == 'dbo'
    assert 40 <= len(contract['mappings']) <= 60
    rules = {r['element_type']: r for r in contract['element_filtering']['filter_rules']}
    assert rules['contact']['required_attributes'] == {'con_id': True, 'ac_role_tp_c': ['PR', 'AUTHU']}
    assert rules['address']['required_attributes'] == {'address_tp_c': ['CURR', 'PREV']}
    assert rules['employment']['required_attributes'] == {'employment_tp_c': ['CURR', 'PREV']}
    assert set(contract['bit_conversions']) == {'char_to_bit', 'boolean_to_bit'}


def test_contract_uses_the_required_mapping_types(contract):
    used = set()
    for m in contract['mappings']:
        mt = m.get('mapping_type') or ['direct']
        used.update(re.sub(r'\(.*\)$', '(x)', t) for t in mt)
    required = {'direct', 'enum', 'char_to_bit', 'boolean_to_bit', 'numbers_only', 'calculated_field',
                'last_valid_pr_contact', 'add_history', 'add_score(x)'}
    assert required <= used, required - used
    cases = [m['expression'] for m in contract['mappings'] if 'calculated_field' in (m.get('mapping_type') or [])]
    assert 1 <= sum(e.upper().startswith('CASE') for e in cases) <= 2


def test_every_contract_column_exists_in_the_table_spec(contract, tables):
    cols = {t: {c['name']: c for c in spec['columns']} for t, spec in tables.items()}
    for i, m in enumerate(contract['mappings']):
        where = 'mapping %d (%s.%s)' % (i, m['target_table'], m['target_column'])
        assert m['target_table'] in cols, where
        if not m['target_column']:
            assert m['target_table'] in KV_TABLES, where
            assert any(t.startswith(ROW_CREATING_PREFIXES) for t in m['mapping_type']), where
            continue
        col = cols[m['target_table']].get(m['target_column'])
        assert col is not None, where
        length = _varchar_length(col['type'])
        if m['data_type'] == 'string':
            assert length is not None and m.get('data_length') == length, where
        else:
            assert length is None, where
        if m['data_type'] == 'bit':
            assert col['type'] == 'bit', where
        if not m['nullable']:
            assert col['nullable'] is False, where
    for t, needed in KV_TABLES.items():
        assert needed <= set(cols[t]), t


def test_table_spec_keys_and_order(contract, tables):
    order = contract['table_insertion_order']
    written = {m['target_table'] for m in contract['mappings']}
    assert written <= set(order) and set(order) <= set(tables)
    position = {t: i for i, t in enumerate(order)}
    for name, spec in tables.items():
        names = {c['name'] for c in spec['columns']}
        assert set(spec['primary_key']) <= names, name
        for fk in spec['foreign_keys']:
            assert set(fk['columns']) <= names, name
            assert fk['references'] in tables, name
            assert position[fk['references']] < position[name], '%s must come after %s' % (name, fk['references'])
    fks = {(t, fk['columns'][0], fk['references']) for t, s in tables.items() for fk in s['foreign_keys']}
    for t in ('app_contact_base', 'app_pricing_cc', 'app_historical_lookup', 'scores'):
        assert (t, 'app_id', 'app_base') in fks
    for t in ('app_contact_address', 'app_contact_employment'):
        assert (t, 'con_id', 'app_contact_base') in fks
    for r in contract['relationships']:
        assert (r['child_table'], r['foreign_key_column'], r['parent_table']) in fks


def test_enum_mappings_resolve(contract):
    enums = contract['enum_mappings']
    for m in contract['mappings']:
        if 'enum' in (m.get('mapping_type') or []):
            assert (m.get('enum_name') or m['target_column']) in enums, m['target_column']


def test_contract_loads_through_the_project_loader():
    contracts = pytest.importorskip('contracts')
    load = getattr(contracts, 'load_contract', None)
    if load is None:
        pytest.skip('contracts.load_contract not written yet')
    loaded = load(CONTRACT_PATH)
    assert loaded is not None


# ------------------------------------------------------------------------------------------------ writers + CLI
def test_write_sqlite_source(tmp_path):
    path = str(tmp_path / 'src.db')
    assert write_sqlite_source(path, 45, seed=2, chunk_size=10) == 45
    assert write_sqlite_source(path, 30, seed=2) == 30          # replaces the table
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute('SELECT app_id, xml FROM app_xml ORDER BY app_id').fetchall()
        info = conn.execute('PRAGMA table_info(app_xml)').fetchall()
    finally:
        conn.close()
    assert rows == list(generate_documents(30, seed=2))
    assert [(c[1], c[2], c[5]) for c in info] == [('app_id', 'INTEGER', 1), ('xml', 'TEXT', 0)]


def test_write_sqlite_source_rejects_bad_table_name(tmp_path):
    with pytest.raises(ValueError):
        write_sqlite_source(str(tmp_path / 'x.db'), 1, 0, table='x; DROP TABLE y')


def test_write_xml_folder(tmp_path):
    folder = tmp_path / 'xml'
    assert write_xml_folder(str(folder), 12, seed=6, start_app_id=500) == 12
    for app_id, xml in generate_documents(12, seed=6, start_app_id=500):
        assert (folder / ('app-%d.xml' % app_id)).read_bytes() == xml.encode('utf-8')


def test_cli(tmp_path, capsys):
    db = str(tmp_path / 'cli.db')
    assert generate.main(['--docs', '7', '--sqlite', db, '--seed', '3', '--broken-fraction', '0']) == 0
    conn = sqlite3.connect(db)
    try:
        assert conn.execute('SELECT COUNT(*) FROM app_xml').fetchone() == (7,)
    finally:
        conn.close()
    folder = tmp_path / 'out'
    assert generate.main(['--docs', '3', '--folder', str(folder), '--start-app-id', '42']) == 0
    assert sorted(os.listdir(folder)) == ['app-42.xml', 'app-43.xml', 'app-44.xml']


def test_cli_help_and_errors(capsys):
    with pytest.raises(SystemExit) as e:
        generate.main(['--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ('--docs', '--sqlite', '--folder', '--seed', '--broken-fraction'):
        assert opt in out
    for bad in (['--docs', '3'], ['--docs', '3', '--sqlite', 'a.db', '--folder', 'b'],
                ['--docs', '3', '--folder', 'b', '--broken-fraction', '1.5']):
        with pytest.raises(SystemExit) as e:
            generate.main(bad)
        assert e.value.code == 2
