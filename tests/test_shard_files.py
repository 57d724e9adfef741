"""Files are assigned to shards (--processes, --shard-count) by the app_id read from their start, so that every
file of one app_id lands in one shard, whose DedupeAppIds keeps one of them as one process does.

The property that makes it safe: whenever the pipeline's own validate + parse accept a document, the scan of
its start (`file_app_id`) finds the same app_id. A file the scan gives no app_id (or another one) could sit in a
shard its app_id does not belong to; the parse stage then dead-letters it with a reason instead of writing it.
"""
import codecs
import os
import re
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import compile_contract, load_contract
from contracts.samples.generate import generate_documents
from pipeline.cli import main as cli
from pipeline.config import resolve_sample as resolve_contract_path
from test_fuzz import hostile_doc
from helpers import summary_counts
from transforms.errors import StageError
from transforms.io import files as files_mod
from transforms.io.files import file_app_id, shard_files
from transforms.io.sources import shard_of
from transforms.parse import ParseSpec, parse_document
from transforms.records import Doc
from transforms.validate import Limits, validate_document

CONTRACT = load_contract(resolve_contract_path('credit_app'))
SPEC = ParseSpec.from_contract(CONTRACT, compile_contract(CONTRACT))
CC = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'seed-corpus', 'cc')


def pipeline_app_id(data: bytes, spec=SPEC):
    """The app_id the pipeline's validate + parse give the file's bytes, or None when they refuse it."""
    try:
        v = validate_document(Doc(source='f.xml', app_id=None, xml=data), Limits(), spec.root_element)
        return parse_document(v, spec).app_id
    except StageError:
        return None


def scanned(tmp_path, data: bytes, spec=SPEC):
    path = tmp_path / 'doc.xml'
    path.write_bytes(data)
    return file_app_id(str(path), spec)


def _base():
    _, xml = next(iter(generate_documents(1, seed=31, broken_fraction=0.0)))
    return xml


BASE = _base()
BASE_ID = int(re.search(r'<Request [^>]*ID="(\d+)"', BASE).group(1))


def _body(xml):
    return re.sub(r'^\s*<\?xml[^>]*\?>\s*', '', xml.lstrip('\ufeff'))


def _variants():
    """Ordinary ways a document differs from the generated one: encodings, prologs, where the app_id sits."""
    body = _body(BASE)
    big = '<!--' + 'x' * 70_000 + '-->'           # the app_id's element beyond the first blocks read
    sibling = '<Journals>' + '<Journal ID="J1" Type="Rule"/>' * 3000 + '</Journals>'
    latin = body.replace('<Request ', '<Request Note="Müller Peña" ', 1)
    return {
        'plain': body.encode('utf-8'),
        'declaration': ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode('utf-8'),
        'bom': codecs.BOM_UTF8 + body.encode('utf-8'),
        'utf16le_bom': codecs.BOM_UTF16_LE + ('<?xml version="1.0" encoding="UTF-16"?>' + body).encode('utf-16-le'),
        'utf16be_bom': codecs.BOM_UTF16_BE + ('<?xml version="1.0" encoding="UTF-16"?>' + body).encode('utf-16-be'),
        'latin1': ('<?xml version="1.0" encoding="ISO-8859-1"?>' + latin).encode('latin-1', 'replace'),
        'cp1252': ('<?xml version="1.0" encoding="windows-1252"?>' + latin).encode('cp1252', 'replace'),
        'blanks_before_declaration': ('\n\n  <?xml version="1.0"?>' + body).encode('utf-8'),
        'bom_and_blanks': codecs.BOM_UTF8 + b'\r\n' + ('<?xml version="1.0"?>' + body).encode('utf-8'),
        'comment_before_root': ('<!-- exported -->' + body).encode('utf-8'),
        'big_comment_before_request': body.replace('<Request ', big + '<Request ', 1).encode('utf-8'),
        'big_sibling_before_request': body.replace('<Request ', sibling + '<Request ', 1).encode('utf-8'),
        'id_lowercase': re.sub(r'(<Request [^>]*)\bID=', r'\1id=', body, count=1).encode('utf-8'),
        'id_blanks': body.replace(f'ID="{BASE_ID}"', f'ID=" {BASE_ID} "', 1).encode('utf-8'),
        'id_char_reference': body.replace(f'ID="{BASE_ID}"', f'ID="&#{ord(str(BASE_ID)[0])};{str(BASE_ID)[1:]}"',
                                          1).encode('utf-8'),
        'second_request': body.replace('</Provenir>', f'<Request ID="{BASE_ID + 1}"/></Provenir>').encode('utf-8'),
        'no_id': re.sub(r'(<Request [^>]*)\bID="\d+"', r'\1', body, count=1).encode('utf-8'),
        'id_not_integer': body.replace(f'ID="{BASE_ID}"', 'ID="12a"', 1).encode('utf-8'),
        'truncated_in_head': body.encode('utf-8')[:60],
        'truncated_later': body.encode('utf-8')[:len(body) // 2],
        'namespaced_root': body.replace('<Provenir', '<p:Provenir xmlns:p="urn:x"', 1)
                               .replace('</Provenir>', '</p:Provenir>').encode('utf-8'),
        'default_namespace': body.replace('<Provenir', '<Provenir xmlns="urn:x"', 1).encode('utf-8'),
        'other_root': body.replace('<Provenir', '<Other', 1).replace('</Provenir>', '</Other>').encode('utf-8'),
        'empty': b'',
        'binary': b'\x00\x01\x02' * 100,
    }


VARIANTS = _variants()


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_the_scan_of_a_files_start_finds_the_app_id_the_pipeline_finds(tmp_path, name):
    data = VARIANTS[name]
    want = pipeline_app_id(data)
    got = scanned(tmp_path, data)
    if want is not None:
        assert got == want, name
    # the variants that stay valid documents (the scan must find them wherever the element sits)
    if name in ('plain', 'declaration', 'bom', 'utf16le_bom', 'utf16be_bom', 'latin1', 'cp1252',
                'blanks_before_declaration', 'bom_and_blanks', 'comment_before_root', 'big_comment_before_request',
                'big_sibling_before_request', 'id_lowercase', 'id_blanks', 'id_char_reference', 'second_request'):
        assert want == BASE_ID and got == BASE_ID, (name, want, got)
    if name in ('no_id', 'id_not_integer', 'truncated_in_head', 'empty', 'binary', 'other_root',
                'default_namespace', 'namespaced_root'):
        assert want is None and got is None, (name, want, got)


def test_the_scan_agrees_with_the_pipeline_on_the_cc_samples(tmp_path):
    if not os.path.isdir(os.path.join(CC, 'xml')):
        pytest.skip(f'the CC samples are not at {os.path.abspath(CC)} (../shared beside the repository)')
    cc = load_contract(os.path.join(CC, 'contract.json'))
    spec = ParseSpec.from_contract(cc, compile_contract(cc))
    paths = sorted(os.path.join(CC, 'xml', f) for f in os.listdir(os.path.join(CC, 'xml')))
    found = 0
    for p in paths:
        with open(p, 'rb') as f:
            want = pipeline_app_id(f.read(), spec)
        if want is not None:
            found += 1
            assert file_app_id(p, spec) == want, p
    assert found >= 150


SEEDS = [x for _, x in generate_documents(6, seed=44, broken_fraction=0.0)]


@st.composite
def ordinary_doc(draw):
    """A valid document written in one of the ordinary ways: its encoding, its prolog, what comes before the
    app_id's element and how the attribute is written."""
    body = _body(draw(st.sampled_from(SEEDS)))
    m = re.search(r'<Request ([^>]*?)ID="(\d+)"', body)
    spaces = draw(st.sampled_from(['', ' ', '\n  ']))
    quote = draw(st.sampled_from(['"', "'"]))
    attr = f'ID{spaces}={spaces}{quote}{draw(st.sampled_from(["", " "]))}{m.group(2)}{quote}'
    body = body[:m.start()] + f'<Request{draw(st.sampled_from([" ", chr(10), chr(9)]))}{m.group(1)}{attr}' + \
        body[m.end():]
    before = draw(st.sampled_from(['', '<!-- c -->', '<!--' + 'y' * draw(st.integers(0, 40_000)) + '-->',
                                   '<Pre a="1"/>' * draw(st.integers(0, 2_000)), '<![CDATA[<Request ID="9">]]>']))
    at = body.index('<Request')
    if before.startswith('<![CDATA['):
        before = '<Note>' + before + '</Note>'
    body = body[:at] + before + body[at:]
    prolog = draw(st.sampled_from(['', '<?xml version="1.0"?>', '<?xml version="1.0" encoding="{enc}"?>\n',
                                   '\n <?xml version="1.0" encoding="{enc}"?>', '<!-- head -->']))
    enc = draw(st.sampled_from(['utf-8', 'utf-8-sig', 'utf-16-le', 'utf-16-be', 'iso-8859-1', 'windows-1252']))
    label = {'utf-8': 'UTF-8', 'utf-8-sig': 'UTF-8', 'utf-16-le': 'UTF-16', 'utf-16-be': 'UTF-16',
             'iso-8859-1': 'ISO-8859-1', 'windows-1252': 'windows-1252'}[enc]
    if enc.startswith('utf-16') and '{enc}' not in prolog:
        prolog = '<?xml version="1.0" encoding="{enc}"?>'
    if enc in ('iso-8859-1', 'windows-1252') and '{enc}' not in prolog:
        prolog = '<?xml version="1.0" encoding="{enc}"?>'
    text = prolog.format(enc=label) + body
    bom = {'utf-16-le': codecs.BOM_UTF16_LE, 'utf-16-be': codecs.BOM_UTF16_BE}.get(enc, b'')
    return bom + text.encode(enc, 'replace')


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=ordinary_doc())
def test_every_ordinary_way_of_writing_a_document_is_scanned_to_its_app_id(tmp_path, data):
    want = pipeline_app_id(data)
    assert want is not None           # these are all valid documents
    assert scanned(tmp_path, data) == want


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large,
                                                                   HealthCheck.function_scoped_fixture])
@given(doc=hostile_doc(), mode=st.sampled_from(['partial', 'full']))
def test_whatever_the_bytes_a_document_the_pipeline_accepts_is_scanned_to_its_app_id(tmp_path, doc, mode):
    data = doc.xml if isinstance(doc.xml, bytes) else doc.xml.encode('utf-8', 'surrogatepass')
    spec = SPEC._replace(mode=mode)
    want = pipeline_app_id(data, spec)
    if want is not None:
        assert scanned(tmp_path, data, spec) == want


def test_every_file_of_one_app_id_is_assigned_to_one_shard_the_rest_by_position(tmp_path):
    docs = list(generate_documents(40, seed=8, broken_fraction=0.0))
    paths = []
    for i, (a, x) in enumerate(docs):
        for copy in range(1 + (i % 3 == 0)):          # every third app_id in two files
            p = tmp_path / f'{i:03d}-{copy}.xml'
            p.write_text(x)
            paths.append(str(p))
    for i in range(5):
        p = tmp_path / f'broken-{i}.xml'
        p.write_text('<Provenir><Request>')
        paths.append(str(p))
    paths.sort()
    for count in (2, 3):
        got = shard_files(paths, SPEC, count)
        assert sorted(p for s in got for p in s) == paths          # each file in exactly one shard
        for index, shard in enumerate(got):
            for p in shard:
                a = file_app_id(p, SPEC)
                if a is None:
                    assert paths.index(p) % count == index, p
                else:
                    assert shard_of(a, count) == index, p


def test_a_file_whose_app_id_belongs_to_another_shard_is_dead_lettered_with_its_reason():
    body = _body(BASE).encode('utf-8')
    v = validate_document(Doc(source='f.xml', app_id=None, xml=body), Limits(), SPEC.root_element)
    home = shard_of(BASE_ID, 3)
    assert parse_document(v, SPEC._replace(shard=(3, home))).app_id == BASE_ID
    with pytest.raises(StageError) as e:
        parse_document(v, SPEC._replace(shard=(3, (home + 1) % 3)))
    assert e.value.stage == 'validation' and f'app_id {BASE_ID} was not found at the start' in e.value.reason
    assert 'without --processes/--shard-count' in e.value.reason


def _folder_with_twins(tmp_path, n=10):
    folder = tmp_path / 'xml'
    folder.mkdir()
    docs = list(generate_documents(n, seed=12, broken_fraction=0.0))
    for i, (a, x) in enumerate(docs):
        (folder / f'{i:03d}.xml').write_text(x)
        if i < 4:
            con = re.search(r'<contact [^>]*con_id="(\d+)"', x).group(1)
            (folder / f'{i:03d}b.xml').write_text(x.replace(f'con_id="{con}"', f'con_id="{int(con) + 5_000_000}"'))
    (folder / 'zz-broken.xml').write_text('<Provenir><Request ID="1">')
    return folder


def _tables(db):
    c = sqlite3.connect(db)
    try:
        out = {}
        for t in ('app_base', 'app_contact_base', 'app_contact_address', 'dead_letter'):
            cols = [r[1] for r in c.execute(f'PRAGMA table_info({t})')
                    if r[1] not in ('rowstamp', 'id', 'created_at', 'last_seen_at', 'session_id')]
            out[t] = sorted(map(repr, c.execute(f'SELECT {", ".join(cols)} FROM {t}')))
        return out
    finally:
        c.close()


def test_shards_run_one_after_another_write_what_one_process_writes_twin_files_included(tmp_path, capsys):
    """--shard-count/--shard-index over a folder (shards on several machines, one target): before, each shard
    took every N-th file, so twin files of one app_id were both written by different shards."""
    folder = _folder_with_twins(tmp_path)
    common = ['run', '--contract', 'credit_app', '--source', str(folder), '--tables', 'credit_app_tables',
              '--create-tables', '--max-dead-letter-rate', '1']
    assert cli([*common, '--target', f'sqlite:///{tmp_path}/one.db']) == 0
    one = summary_counts(capsys.readouterr().out)
    assert one[:3] == (15, 10, 5)
    totals = [0, 0, 0]
    for i in range(3):
        assert cli([*common, '--target', f'sqlite:///{tmp_path}/three.db', '--shard-count', '3',
                    '--shard-index', str(i)]) in (0, 4)
        got = summary_counts(capsys.readouterr().out)
        totals = [t + g for t, g in zip(totals, got[:3])]
    assert tuple(totals) == one[:3]
    assert _tables(f'{tmp_path}/three.db') == _tables(f'{tmp_path}/one.db')


def test_a_file_the_scan_misplaces_is_dead_lettered_not_written_and_counted(tmp_path, capsys, monkeypatch):
    """Should the scan ever disagree with the parse (it is built not to), the document is accounted for in the
    dead letter with a reason that says what to do, never written beside a twin in another shard."""
    folder = _folder_with_twins(tmp_path, n=6)
    victim = str(folder / '005.xml')
    real = files_mod.file_app_id
    monkeypatch.setattr(files_mod, 'file_app_id', lambda p, spec, *a: None if p == victim else real(p, spec, *a))
    a = real(victim, SPEC)
    # the index whose position-assignment differs from the app_id's shard
    paths = sorted(str(p) for p in folder.glob('*.xml'))
    count = next(n for n in (2, 3, 4, 5) if paths.index(victim) % n != shard_of(a, n))
    common = ['run', '--contract', 'credit_app', '--source', str(folder), '--tables', 'credit_app_tables',
              '--create-tables', '--max-dead-letter-rate', '1', '--target', f'sqlite:///{tmp_path}/t.db',
              '--shard-count', str(count), '--dead-letter', str(tmp_path / 'dl.jsonl')]
    read = written = dead = 0
    for i in range(count):
        dl = tmp_path / 'dl.jsonl'
        if dl.exists():
            dl.unlink()
        cli([*common, '--shard-index', str(i)])
        r, w, d = summary_counts(capsys.readouterr().out)[:3]
        read, written, dead = read + r, written + w, dead + d
        if i == paths.index(victim) % count:
            lines = dl.read_text().splitlines()
            assert any('005.xml' in ln and f'app_id {a} was not found at the start' in ln for ln in lines)
    assert read == len(paths) and read == written + dead
    c = sqlite3.connect(f'{tmp_path}/t.db')
    try:
        assert c.execute('SELECT COUNT(*) FROM app_base WHERE app_id = ?', (a,)).fetchone()[0] == 0
    finally:
        c.close()


def _find_app_id(data: bytes, spec):
    """What parse_document's lookup gives on the whole tree (transforms.parse._find, first match per step)."""
    from lxml import etree
    from transforms.parse import PARSER_OPTIONS, _find
    from transforms.validate import parse_app_id
    try:
        root = etree.fromstring(data, etree.XMLParser(**PARSER_OPTIONS))
    except etree.XMLSyntaxError:
        return None
    holder = _find(root, spec.app_id_source[0])
    try:
        return None if holder is None else parse_app_id(holder.get('ID') or holder.get('id'))
    except StageError:
        return None


@st.composite
def nested_doc(draw):
    """Random trees of A/B/X elements (many siblings at times: the scan prunes what it has passed), the app_id
    path /Provenir/A/B: the first A's first B holds it, or _find gives None (the first A has no B)."""
    counter = iter(range(1, 10 ** 6))

    def element(depth):
        tag = draw(st.sampled_from(['A', 'B', 'X']))
        attrs = f' ID="{next(counter)}"' if draw(st.booleans()) else ''
        if depth >= 3 or draw(st.integers(0, 2)) == 0:
            return f'<{tag}{attrs}/>'
        kids = ''.join(element(depth + 1) for _ in range(draw(st.integers(0, 4))))
        return f'<{tag}{attrs}>{kids}</{tag}>'
    filler = '<X/>' * draw(st.sampled_from([0, 0, 5000, 20000]))
    body = ''.join(element(1) for _ in range(draw(st.integers(0, 5))))
    where = draw(st.integers(0, 2))
    parts = [filler, body] if where == 0 else [body, filler] if where == 1 else [body]
    return ('<Provenir>' + ''.join(parts) + '</Provenir>').encode('utf-8')


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(data=nested_doc())
def test_the_scan_takes_the_first_match_of_each_step_as_the_parse_does(data):
    from transforms.parse import head_app_id
    spec = SPEC._replace(app_id_source=('/Provenir/A/B', 'ID'))
    assert head_app_id(files_mod._pieces([data]), spec) == _find_app_id(data, spec)


def test_a_file_over_the_size_limit_is_not_scanned(tmp_path):
    path = tmp_path / 'big.xml'
    path.write_bytes(_body(BASE).encode('utf-8'))
    assert file_app_id(str(path), SPEC) == BASE_ID
    assert file_app_id(str(path), SPEC, max_bytes=path.stat().st_size) == BASE_ID
    assert file_app_id(str(path), SPEC, max_bytes=path.stat().st_size - 1) is None   # validation refuses it


def test_processes_scan_each_file_once_in_the_launcher_and_hand_each_shard_its_list(tmp_path, capsys,
                                                                                      monkeypatch):
    """The shards work from the launcher's one assignment (a shard that scanned again could see a file that
    changed meanwhile elsewhere than the launcher did); the configuration a spawned shard reads carries it."""
    from pipeline.config import RunConfig
    from pipeline import orchestrate
    folder = _folder_with_twins(tmp_path, n=6)
    log = tmp_path / 'scans.log'
    real = files_mod.file_app_id

    def counted(p, spec, *a):
        with open(log, 'a') as f:
            f.write(f'{os.getpid()} {p}\n')
        return real(p, spec, *a)
    monkeypatch.setattr(files_mod, 'file_app_id', counted)
    seen = []
    real_start = orchestrate._start_one
    monkeypatch.setattr(orchestrate, '_start_one', lambda shard, *a: (seen.append(shard), real_start(shard, *a)))
    assert cli(['run', '--contract', 'credit_app', '--source', str(folder), '--tables', 'credit_app_tables',
                '--create-tables', '--max-dead-letter-rate', '1', '--target', f'sqlite:///{tmp_path}/t.db',
                '--processes', '2']) == 0
    assert summary_counts(capsys.readouterr().out)[:3] == (11, 6, 5)
    scans = log.read_text().splitlines()
    files = sorted(str(p) for p in folder.glob('*.xml'))
    assert sorted(ln.split(' ', 1)[1] for ln in scans) == files          # each file once
    assert {ln.split(' ', 1)[0] for ln in scans} == {str(os.getpid())}   # by the launcher
    assert sorted(p for s in seen for p in s.read.shard_paths) == files
    again = RunConfig.from_json(seen[0].to_json())
    assert list(again.read.shard_paths) == list(seen[0].read.shard_paths) and again.read.shard_index == 0
