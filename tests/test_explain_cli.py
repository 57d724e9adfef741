"""`python -m pipeline explain` as a contract author runs it, on a generated document and on a sample of the existing
system's CC corpus: every mapping with its XML path and attribute, the raw value, each step, the final value; a
column that is NULL because its attribute is absent says so; an enum-mapped value shows the enum step; a row left
out says why; a missing file, an unknown app_id or a missing source database is one `error:` line and exit 2.

Expectations come from the documents and the contracts themselves (the enum maps, the XML's attributes)."""
import json
import os
import re

import pytest
from lxml import etree

from contracts.samples.generate import generate_documents
from pipeline.cli import main
from test_integrity import ROOT, sqlite_source

SAMPLE_CONTRACT = os.path.join(ROOT, 'contracts', 'samples', 'credit_app.json')
CC = os.path.join(os.path.dirname(ROOT), 'shared', 'seed-corpus', 'cc')
CC_SAMPLE = os.path.join(CC, 'xml', 'sample--127582.xml')


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def pipeline(capsys):
    """`python -m pipeline explain ...` through the command line's own entry point, in this process (explain runs
    no Beam pipeline; tests/test_integrity.py runs commands in a process of their own)."""
    def run(*args):
        capsys.readouterr()
        rc = main(list(args))
        out = capsys.readouterr()
        return Result(rc, out.out, out.err)
    return run


def one_error_line(p):
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), (p.returncode, p.stderr)
    return lines[0]


def column_line(out, column, table_block):
    """The line of `column` inside the block of `table_block` of the text trace."""
    block = out.split(f'\n{table_block}: ', 1)[1].split('\n', 1)[1]
    block = re.split(r'\n(?=\S)', block, maxsplit=1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith(f'  {column} ')]
    assert lines, (column, table_block, out[:3000])
    return lines[0]


@pytest.fixture(scope='module')
def document(tmp_path_factory):
    """A generated document, edited so that its application has no IP_address attribute, its app_source_ind is
    an enum code, and its first contact has an address of a type the contract filters out."""
    app_id, xml = next(iter(generate_documents(1, seed=21, broken_fraction=0)))
    xml, n = re.subn(r' IP_address="[^"]*"', '', xml, count=1)
    assert n == 1
    xml, n = re.subn(r'app_source_ind="[^"]*"', 'app_source_ind="EX-API"', xml, count=1)
    assert n == 1
    first_contact = re.search(r'<contact con_id="\d+"[^>]*>', xml)
    xml = xml[:first_contact.end()] + '\n<contact_address address_tp_c="MAIL" city="Nowhere"/>' + \
        xml[first_contact.end():]
    folder = tmp_path_factory.mktemp('explain')
    path = folder / f'app-{app_id}.xml'
    path.write_bytes(xml.encode('utf-8'))
    return app_id, xml, str(path), folder


def test_every_mapping_of_a_generated_document_with_why_null(document, pipeline):
    app_id, xml, path, _ = document
    contract = json.load(open(SAMPLE_CONTRACT))
    p = pipeline('explain', '--contract', 'credit_app', path)
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout
    assert out.startswith(f'app_id {app_id}: ok\n')
    # every mapping with a target column appears, in the block of its table
    for m in contract['mappings']:
        if m.get('target_column') and m['target_table'] in out:
            assert f"{m['xml_path'].rsplit('/', 1)[-1]}@{m['xml_attribute']}" in out, m
    # NULL because the attribute is absent: says which attribute on which element
    line = column_line(out, 'ip_address', 'app_base')
    assert "application@IP_address: raw NULL (no attribute 'IP_address' on <application>[1] at line " in line
    assert line.endswith('-> NULL [missing]')
    # an enum-mapped value shows the step and its result, from the contract's enum map
    want = contract['enum_mappings']['app_source_enum']['EX-API']
    assert column_line(out, 'app_source_enum', 'app_base').endswith(
        f"application@app_source_ind: raw 'EX-API', enum {want} -> {want} [from the document]")
    # an attribute present but empty is told apart from an absent one
    assert re.search(r"^  middle_initial +contact@initials <contact>\[1\] at line \d+: raw '' -> NULL \[missing\]$",
                     out, re.M)
    # a row not written says why
    assert re.search(r'^  ! <contact_address>\[1\] at line \d+ row not written: the element does not pass the '
                     r'filter rule', out, re.M), out

    j = pipeline('explain', '--contract', 'credit_app', path, '--json')
    report = json.loads(j.stdout)
    ip = [c for c in report['columns'] if c['table'] == 'app_base' and c['column'] == 'ip_address']
    assert ip[0]['xml_attribute'] == 'IP_address' and ip[0]['steps'][0][:2] == ['extract', None]
    assert ip[0]['steps'][0][2].startswith("no attribute 'IP_address' on <application>[1]")
    assert ip[0]['steps'][-1] == ['=', None, 'missing']
    assert report['rows']['app_base'][0]['app_source_enum'] == want and 'ip_address' not in report['rows']['app_base'][0]

    shapes = pipeline('explain', '--contract', 'credit_app', path, '--shapes')
    first_name = re.search(r'first_name="([^"]+)"', xml).group(1)
    assert shapes.returncode == 0 and first_name in out and first_name not in shapes.stdout


def test_explain_from_a_table_source_and_its_errors(document, tmp_path, pipeline):
    app_id, xml, path, _ = document
    src = sqlite_source(str(tmp_path / 'src.db'), {app_id: xml})
    p = pipeline('explain', '--contract', 'credit_app', '--source', src, '--app-id', str(app_id))
    assert p.returncode == 0 and p.stdout == pipeline('explain', '--contract', 'credit_app', path).stdout
    assert 'ip_address' in p.stdout

    assert 'is not in app_xml' in one_error_line(
        pipeline('explain', '--contract', 'credit_app', '--source', src, '--app-id', '5'))
    assert 'cannot read' in one_error_line(pipeline('explain', '--contract', 'credit_app', str(tmp_path / 'no.xml')))
    missing_db = tmp_path / 'nothing-here.db'
    assert 'no SQLite database' in one_error_line(
        pipeline('explain', '--contract', 'credit_app', '--source', f'sqlite:///{missing_db}', '--app-id', '1'))
    assert not missing_db.exists()                  # explaining does not create an empty database
    wrong_table = tmp_path / 'other.db'
    sqlite_source(str(wrong_table), {1: xml})
    assert 'no_such_table' in one_error_line(pipeline(
        'explain', '--contract', 'credit_app', '--source', f'sqlite:///{wrong_table}', '--app-id', '1',
        '--source-table', 'no_such_table'))
    one_error_line(pipeline('explain', '--contract', 'credit_app'))                      # neither FILE nor --source
    one_error_line(pipeline('explain', '--contract', 'credit_app', '--source', src))      # --source without --app-id

    broken = tmp_path / 'broken.xml'
    broken.write_text(xml.replace('<Provenir', '<Journals', 1).replace('</Provenir>', '</Journals>'))
    p = pipeline('explain', '--contract', 'credit_app', str(broken))
    assert p.returncode == 4 and p.stdout.startswith('app_id None: failed (validation: wrong root element')


@pytest.mark.skipif(not os.path.isfile(CC_SAMPLE), reason=f'the existing system\'s CC corpus is not at {CC} '
                                                          '(<repo>/../shared/seed-corpus/cc): skipped')
def test_a_cc_sample_with_the_cc_contract(pipeline):
    contract_path = os.path.join(CC, 'contract.json')
    contract = json.load(open(contract_path))
    application = etree.parse(CC_SAMPLE).find('.//application')
    assert application.get('IP_address') is None             # the premise, read off the document itself
    raw = application.get('app_type_code')
    want = contract['enum_mappings']['app_type_enum'][raw]
    p = pipeline('explain', '--contract', contract_path, CC_SAMPLE)
    assert p.returncode == 0, p.stderr[-2000:]
    app_id = etree.parse(CC_SAMPLE).find('.//Request').get('ID')
    assert p.stdout.startswith(f'app_id {app_id}: ok\n')
    line = column_line(p.stdout, 'ip_address', 'app_base')
    assert "raw NULL (no attribute 'IP_address' on <application>[1] at line " in line and \
        line.endswith('-> NULL [missing]')
    assert column_line(p.stdout, 'app_type_enum', 'app_base').endswith(
        f"application@app_type_code: raw '{raw}', enum {want} -> {want} [from the document]")
    # every table the contract writes has a block (or a note saying why it has no row)
    for table in contract['table_insertion_order']:
        if table != 'processing_log':
            assert re.search(rf'^{table}: ', p.stdout, re.M), table
