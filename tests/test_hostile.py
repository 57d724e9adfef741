"""Hostile input: nothing lost, nothing leaked, nothing crashes.

A hostile corpus is built here (entity bombs, external entities, DTDs, processing instructions, 100k-deep nesting,
a 200 MB document, a million attributes, binary and empty files, wrong encodings, a wrong root, a duplicate
app_id, bad app_ids) next to ordinary generated documents, and the whole thing goes through the real CLI
(`pipeline.cli.main(['run', ...])`) into SQLite, in a subprocess whose memory and time are measured. Expected
outcomes come from the case table below (what each document is built to be), never from a previous run.

No file or network access is made on behalf of a document: /etc/passwd's content appears in no output, and a
listener on 127.0.0.1 that every external reference points at receives no connection.
"""
import codecs
import json
import os
import random
import re
import socket
import sqlite3
import sys
import threading
import time

import psutil
import pytest

from contracts.samples.generate import generate_documents
from transforms.errors import StageError
from transforms.parse import ParseSpec, parse_document
from transforms.records import Doc
from transforms.validate import Limits, validate_document
from helpers import SUMMARY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = ParseSpec(root_element='Provenir', application_path='/Provenir/Request/CustData/application',
                 app_id_source=('/Provenir/Request', 'ID'),
                 stop_after_path='/Provenir/Request/CustData/application', mode='partial')
MAX_RSS = 1.5 * 1024 ** 3
MAX_SECONDS = 120


def passwd_markers():
    """Strings that only /etc/passwd's content has (not its name)."""
    out = ['root:x:0:0']
    try:
        with open('/etc/passwd') as f:
            first = f.readline().strip()
        if first:
            out.append(first)
    except OSError:
        pass
    return out


# ------------------------------------------------------------------------------------------------- the corpus

def base_documents(n, start):
    """Well-formed generated documents (no deliberately broken ones): app_id → text."""
    return dict(generate_documents(n, seed=5, start_app_id=start, broken_fraction=0.0))


def _strip_prolog(xml):
    xml = xml.lstrip('\ufeff \n\t')
    if xml.startswith('<?xml'):
        xml = xml[xml.index('?>') + 2:].lstrip()
    return xml


def _in_custdata(xml, fragment):
    """Put `fragment` inside <CustData>, before the application (so even partial parsing reaches it)."""
    i = xml.index('<CustData>') + len('<CustData>')
    return xml[:i] + fragment + xml[i:]


def _in_application(xml, attrs):
    i = xml.index('<application') + len('<application')
    return xml[:i] + ' ' + attrs + xml[i:]


def _set_id(xml, value):
    return re.sub(r'(<Request\b[^>]*?\sID=")[^"]*(")', lambda m: m.group(1) + value + m.group(2), xml, count=1)


class Case:
    def __init__(self, name, data, outcome, stage=None, reason=None):
        self.name, self.data, self.outcome, self.stage, self.reason = name, data, outcome, stage, reason


def hostile_cases(port):
    """Every hostile case: (file name, bytes, expected outcome 'dead'|'written', stage, reason substring)."""
    docs = base_documents(40, 910000)
    ids = iter(sorted(docs))

    def nxt():
        a = next(ids)
        return a, _strip_prolog(docs[a])

    url = f'http://127.0.0.1:{port}'
    cases = []
    dtd_reason = 'DOCTYPE not allowed'

    def dead(name, data, stage, reason):
        cases.append(Case(name, data if isinstance(data, bytes) else data.encode('utf-8'), 'dead', stage, reason))

    def written(name, data):
        cases.append(Case(name, data if isinstance(data, bytes) else data.encode('utf-8'), 'written'))

    _, x = nxt()
    lol = '<!DOCTYPE Provenir [<!ENTITY lol "lol">' + ''.join(
        f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10)) + ']>'
    dead('billion_laughs.xml', lol + _in_application(x, 'bomb="&lol9;"'), 'validation', dtd_reason)
    _, x = nxt()
    dead('quadratic_blowup.xml', '<!DOCTYPE Provenir [<!ENTITY a "' + 'A' * 50000 + '">]>'
         + _in_application(x, 'q="' + '&a;' * 20000 + '"'), 'validation', dtd_reason)
    _, x = nxt()
    dead('xxe_file.xml', '<!DOCTYPE Provenir [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
         + _in_application(x, 'leak="&xxe;"'), 'validation', dtd_reason)
    _, x = nxt()
    dead('xxe_http.xml', f'<!DOCTYPE Provenir [<!ENTITY xxe SYSTEM "{url}/xxe">]>'
         + _in_application(x, 'leak="&xxe;"'), 'validation', dtd_reason)
    _, x = nxt()
    dead('external_dtd.xml', f'<!DOCTYPE Provenir SYSTEM "{url}/evil.dtd">' + x, 'validation', dtd_reason)
    _, x = nxt()
    dead('parameter_entity.xml', f'<!DOCTYPE Provenir [<!ENTITY % p SYSTEM "{url}/p.dtd"> %p;]>' + x,
         'validation', dtd_reason)
    _, x = nxt()
    dead('doctype_after_comment.xml', '<?xml version="1.0"?><!-- hello --><!DOCTYPE Provenir '
         '[<!ENTITY xxe SYSTEM "file:///etc/passwd">]>' + _in_application(x, 'leak="&xxe;"'), 'validation',
         dtd_reason)
    _, x = nxt()
    dead('doctype_utf16.xml', codecs.BOM_UTF16_LE + ('<!DOCTYPE Provenir [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
         + _in_application(x, 'leak="&xxe;"')).encode('utf-16-le'), 'validation', dtd_reason)
    _, x = nxt()
    dead('entity_without_dtd.xml', _in_application(x, 'e="&undefined;"'), 'parse', 'not well-formed XML: ERR_UNDECLARED_ENTITY')
    _, x = nxt()
    dead('pi_prolog.xml', f'<?xml-stylesheet type="text/xsl" href="{url}/s.xsl"?>' + x, 'validation',
         'processing instruction <?xml-stylesheet?> not allowed')
    _, x = nxt()
    dead('pi_body.xml', _in_custdata(x, "<?php system('cat /etc/passwd'); ?>"), 'validation',
         'processing instruction <?php?> not allowed')
    _, x = nxt()
    dead('deep_nesting.xml', _in_custdata(x, '<a>' * 100_000 + '</a>' * 100_000), 'parse',
         'nests deeper than 256 levels')
    _, x = nxt()
    dead('million_attributes.xml', _in_application(x, ' '.join(f'a{i}="1"' for i in range(1_000_000))),
         'validation', 'more than 1000 attributes (--max-attributes)')
    _, x = nxt()
    dead('many_elements.xml', _in_custdata(x, '<e/>' * 600_000), 'validation',
         'over the limit of 500000 elements (--max-elements)')
    # 200 MB: an ordinary document with a 200 MB filler block after the application.
    _, x = nxt()
    i = x.rindex('</Request>')
    big = (x[:i] + '<Filler>').encode() + b'x' * (200 * 1024 * 1024) + ('</Filler>' + x[i:]).encode()
    dead('huge_200mb.xml', big, 'validation', 'over the limit of 16.0 MB (--max-doc-mb)')
    rng = random.Random(3)
    dead('binary.xml', b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR' + bytes(rng.randrange(256) for _ in range(4000)),
         'validation', 'not valid UTF-8: invalid byte sequence at byte offset 0')
    dead('nul_bytes.xml', b'<Provenir>\x00\x00\x00</Provenir>', 'validation', 'NUL characters')
    dead('not_xml.xml', 'app_id,name\n1,hello\n', 'validation', 'not XML: text does not start with "<"')
    dead('empty.xml', b'', 'validation', 'document is empty')
    dead('whitespace.xml', b' \r\n\t \n', 'validation', 'document is empty')
    _, x = nxt()
    dead('undefined_cp1252_bytes.xml', _in_application(x, 'n="CafXX"').encode().replace(b'CafXX', b'Caf\x81\x8d'),
         'validation', 'not valid UTF-8: invalid byte sequence at byte offset')
    # One bad byte in a UTF-8 document full of accents: never re-decoded as cp1252 (that garbled every accent)
    for name, bad in (('utf8_one_ff.xml', b'\xff'), ('utf8_surrogate.xml', b'\xed\xa0\x80'),
                      ('utf8_overlong_nul.xml', b'\xc0\x80')):
        _, x = nxt()
        body = _in_application(x, 'a="Große Straße" n="Caf\u00e9XX"').encode('utf-8').replace(b'XX', bad)
        dead(name, body, 'validation', 'not valid UTF-8: invalid byte sequence at byte offset')
    _, x = nxt()
    dead('invalid_utf8_cp1252.xml', _in_application(x, 'note="Caf\u00e9"').encode('cp1252', 'xmlcharrefreplace'),
         'validation',
         'not valid UTF-8: invalid byte sequence at byte offset')
    for enc in ('punycode', 'unicode_escape', 'idna', 'utf-7'):
        _, x = nxt()
        dead(f'encoding_{enc}.xml', (f'<?xml version="1.0" encoding="{enc}"?>' + x).encode('ascii', 'replace'),
             'validation', f"encoding '{enc}' in the XML declaration is not accepted")
    _, x = nxt()
    dead('utf16_odd_length.xml', codecs.BOM_UTF16_LE + x.encode('utf-16-le') + b'\x00', 'validation',
         'not valid UTF-16')
    _, x = nxt()
    dead('wrong_root.xml', x.replace('<Provenir', '<Journals', 1).replace('</Provenir>', '</Journals>'),
         'validation', 'wrong root element <Journals>, expected <Provenir>')
    _, x = nxt()
    dead('truncated.xml', x[:len(x) // 2], 'validation', 'document is truncated')
    _, x = nxt()
    dead('app_id_not_integer.xml', _set_id(x, '12abc'), 'validation', '/Provenir/Request/@ID is not an integer')
    _, x = nxt()
    dead('app_id_zero.xml', _set_id(x, '0'), 'validation', '/Provenir/Request/@ID 0 is out of range')
    _, x = nxt()
    dead('app_id_negative.xml', _set_id(x, '-42'), 'validation', '/Provenir/Request/@ID -42 is out of range')
    _, x = nxt()
    dead('app_id_too_big.xml', _set_id(x, '99999999999'), 'validation',
         '/Provenir/Request/@ID 99999999999 is out of range')
    # Accepted: odd encodings decode to the same document; XInclude / schemaLocation are inert text to us.
    _, x = nxt()
    written('utf16_bom.xml', codecs.BOM_UTF16_LE + x.encode('utf-16-le'))
    _, x = nxt()
    written('latin1_declared.xml', ('<?xml version="1.0" encoding="ISO-8859-1"?>' +
                                    _in_application(x, 'note="Müller"')).encode('latin-1'))
    _, x = nxt()
    written('cp1252_declared.xml', ('<?xml version="1.0" encoding="windows-1252"?>' + _in_application(
        x, 'note="Caf\u00e9 \u20ac"')).encode('cp1252', 'xmlcharrefreplace'))
    _, x = nxt()
    written('xinclude_inert.xml', _in_custdata(
        x, '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" parse="text"/>'
           f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{url}/xi"/>'
           f'<s xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="urn:x {url}/s.xsd"/>'))
    # The duplicate: the kept one sorts first ('dup_a' < 'dup_b').
    a, x = nxt()
    written('dup_a.xml', x)
    dead('dup_b.xml', x, 'dedupe', f'duplicate app_id in this run (app_id {a}, kept dup_a.xml)')
    return cases


class Listener:
    """A TCP listener on 127.0.0.1 that counts connections (it must count none)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            c.close()

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


def run_measured(argv, env=None, timeout=600):
    """`pipeline.cli.main(argv)` in a subprocess; returns (rc, stdout, stderr, peak RSS bytes, seconds)."""
    code = 'import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))'
    out_path, err_path = argv[-1] + '.stdout', argv[-1] + '.stderr'
    t0 = time.monotonic()
    with open(out_path, 'wb') as out, open(err_path, 'wb') as err:
        proc = psutil.Popen([sys.executable, '-c', code] + argv, stdout=out, stderr=err, cwd=ROOT,
                            env=dict(os.environ, **(env or {})))
        peak = 0
        while proc.poll() is None:
            try:
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            if time.monotonic() - t0 > timeout:
                proc.kill()
                raise AssertionError(f'the run took more than {timeout} s')
            time.sleep(0.05)
    elapsed = time.monotonic() - t0
    with open(out_path, encoding='utf-8', errors='replace') as f:
        stdout = f.read()
    with open(err_path, encoding='utf-8', errors='replace') as f:
        stderr = f.read()
    return proc.returncode, stdout, stderr, peak, elapsed


def summary_of(stdout):
    m = SUMMARY.search(stdout)
    assert m, f'no SUMMARY line: {stdout[-2000:]}'
    return dict(zip(('read', 'written', 'dead', 'rows'), map(int, m.groups()[:4])))


def sqlite_rows(db, sql):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def all_text_in(db):
    """Every text value of every table of a SQLite file, and the file's raw bytes, for leak checks."""
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        parts = []
        for t in tables:
            for row in conn.execute(f'SELECT * FROM "{t}"'):
                parts.extend(str(v) for v in row if v is not None)
        return '\n'.join(parts)
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------ folder run

@pytest.fixture(scope='module')
def folder_run(tmp_path_factory):
    d = tmp_path_factory.mktemp('hostile')
    folder = d / 'docs'
    folder.mkdir()
    listener = Listener()
    try:
        cases = hostile_cases(listener.port)
        for c in cases:
            (folder / c.name).write_bytes(c.data)
        n_ordinary = 0
        for app_id, xml in base_documents(12, 920000).items():
            (folder / f'ordinary-{app_id}.xml').write_bytes(xml.encode('utf-8'))
            n_ordinary += 1
        db = str(d / 'target.db')
        dl = str(d / 'dead.jsonl')
        argv = ['run', '--contract', 'credit_app', '--source', str(folder), '--target', f'sqlite:///{db}',
                '--tables', 'credit_app_tables', '--create-tables', '--dead-letter', dl,
                '--progress-seconds', '0', '--log-level', 'DEBUG',
                '--max-dead-letter-rate', '1']        # the corpus is mostly hostile on purpose
        rc, out, err, peak, elapsed = run_measured(argv + ['--session-id', str(d / 'run')])
        time.sleep(0.3)
        connections = listener.connections
    finally:
        listener.close()
    return dict(cases=[Case(c.name, None, c.outcome, c.stage, c.reason) for c in cases], n_ordinary=n_ordinary,
                db=db, dl=dl, rc=rc, out=out, err=err, peak=peak, elapsed=elapsed, connections=connections,
                n_files=len(cases) + n_ordinary)


def test_run_exits_0_and_every_document_is_accounted_for(folder_run):
    r = folder_run
    assert r['rc'] == 0, r['err'][-3000:]
    s = summary_of(r['out'])
    assert s['read'] == r['n_files']
    assert s['read'] == s['written'] + s['dead']
    expected_dead = sum(1 for c in r['cases'] if c.outcome == 'dead')
    assert s['dead'] == expected_dead
    assert s['written'] == r['n_ordinary'] + sum(1 for c in r['cases'] if c.outcome == 'written')


def test_every_hostile_document_is_dead_lettered_with_its_specific_reason(folder_run):
    r = folder_run
    table = {src: (stage, reason, app_id, payload is not None)
             for src, stage, reason, app_id, payload in
             sqlite_rows(r['db'], 'SELECT source, stage, reason, app_id, payload FROM dead_letter')}
    with open(r['dl'], encoding='utf-8') as f:
        jsonl = {d['source']: d for d in map(json.loads, f)}
    for c in r['cases']:
        if c.outcome != 'dead':
            assert c.name not in table, f'{c.name} was dead-lettered: {table.get(c.name)}'
            continue
        assert c.name in table, f'{c.name} is not in the dead_letter table'
        stage, reason, app_id, has_payload = table[c.name]
        assert (stage, c.reason in reason) == (c.stage, True), f'{c.name}: got {stage}: {reason}'
        assert jsonl[c.name]['stage'] == c.stage and c.reason in jsonl[c.name]['reason']
        # The original payload is kept, except for the document over the size limit (it stays in its file).
        assert has_payload == (c.name != 'huge_200mb.xml'), c.name
    assert len(table) == sum(1 for c in r['cases'] if c.outcome == 'dead')


def test_accepted_odd_encodings_and_inert_references_are_written(folder_run):
    r = folder_run
    ok = {a for (a,) in sqlite_rows(r['db'], "SELECT app_id FROM processing_log WHERE status = 'success'")}
    n_ok_cases = sum(1 for c in r['cases'] if c.outcome == 'written')
    assert len(ok) == r['n_ordinary'] + n_ok_cases
    assert len({a for (a,) in sqlite_rows(r['db'], 'SELECT app_id FROM app_base')}) == len(ok)
    # the duplicate's processing_log row is the kept document's success, not the dead letter
    failed = sqlite_rows(r['db'], "SELECT app_id, failure_reason FROM processing_log WHERE status <> 'success'")
    assert not any('duplicate' in (reason or '') for _, reason in failed)


def test_no_file_or_network_access_on_behalf_of_a_document(folder_run):
    r = folder_run
    assert r['connections'] == 0, 'a document made the pipeline connect to 127.0.0.1'
    everything = all_text_in(r['db'])
    with open(r['dl'], encoding='utf-8') as f:
        everything += f.read()
    everything += r['out'] + r['err']
    assert 'file:///etc/passwd' in everything          # the documents themselves are kept (sanity of the scan)
    for marker in passwd_markers():
        assert marker not in everything


def test_logs_carry_no_row_values(folder_run):
    # 'Müller' / 'Café' are values of the accepted documents; the ordinary documents' names come from the generator.
    r = folder_run
    logs = r['out'] + r['err']
    for value in ('Müller', 'Café', 'Caf\u00c3'):
        assert value not in logs


def test_memory_and_time_are_bounded(folder_run):
    r = folder_run
    print(f'hostile run: peak RSS {r["peak"] / 2 ** 20:.0f} MB, {r["elapsed"]:.1f} s')
    assert r['peak'] < MAX_RSS
    assert r['elapsed'] < MAX_SECONDS


# ------------------------------------------------------------------------------------------------- table run

@pytest.fixture(scope='module')
def table_run(tmp_path_factory):
    d = tmp_path_factory.mktemp('hostile_table')
    src = str(d / 'src.db')
    docs = base_documents(14, 930000)
    ids = sorted(docs)
    conn = sqlite3.connect(src)
    conn.execute('CREATE TABLE app_xml (app_id INTEGER, xml TEXT)')   # no PK: a staging table with bad ids
    rows, expect = [], {}
    for a in ids[:6]:                                                   # ordinary
        rows.append((a, docs[a]))
    rows.append((ids[6], None)); expect[f'app_xml:{ids[6]}'] = 'xml is NULL'
    rows.append(('abc', docs[ids[7]])); expect['app_xml:abc'] = 'source app_id is not an integer'
    rows.append((12.5, docs[ids[8]])); expect['app_xml:12.5'] = 'source app_id is not an integer'
    rows.append((None, docs[ids[9]])); expect['app_xml:None'] = 'source app_id is missing'
    rows.append((0, _set_id(docs[ids[10]], '0'))); expect['app_xml:0'] = 'source app_id 0 is out of range'
    rows.append((-7, docs[ids[11]])); expect['app_xml:-7'] = 'source app_id -7 is out of range'
    rows.append((2 ** 40, docs[ids[12]])); expect[f'app_xml:{2 ** 40}'] = f'source app_id {2 ** 40} is out of range'
    rows.append((ids[13], docs[ids[12]]))                               # the document names another app_id
    expect[f'app_xml:{ids[13]}'] = f"source app_id {ids[13]} differs from the document's {ids[12]}"
    conn.executemany('INSERT INTO app_xml VALUES (?, ?)', rows)
    conn.commit()
    conn.close()
    db = str(d / 'target.db')
    argv = ['run', '--contract', 'credit_app', '--source', f'sqlite:///{src}', '--target', f'sqlite:///{db}',
            '--tables', 'credit_app_tables', '--create-tables', '--dead-letter', str(d / 'dead.jsonl'),
            '--progress-seconds', '0', '--partitions', '3', '--fetch-size', '4',
            '--max-dead-letter-rate', '1']            # most rows are bad on purpose
    rc, out, err, peak, elapsed = run_measured(argv + ['--session-id', str(d / 'run')])
    return dict(rc=rc, out=out, err=err, db=db, expect=expect, n_rows=len(rows), n_ok=6)


def test_table_source_null_xml_and_bad_app_ids_are_dead_lettered(table_run):
    r = table_run
    assert r['rc'] == 0, r['err'][-3000:]
    s = summary_of(r['out'])
    assert s['read'] == r['n_rows'] and s['read'] == s['written'] + s['dead']
    assert s['written'] == r['n_ok'] and s['dead'] == len(r['expect'])
    got = {src: (stage, reason, app_id) for src, stage, reason, app_id in
           sqlite_rows(r['db'], 'SELECT source, stage, reason, app_id FROM dead_letter')}
    assert set(got) == set(r['expect'])
    for src, reason in r['expect'].items():
        assert got[src][0] == 'validation' and reason in got[src][1], (src, got[src])
        # an invalid app_id never reaches the int column
        assert got[src][2] is None or 1 <= got[src][2] <= 2 ** 31 - 1


# ------------------------------------------------------------------------------------- pure cores and limits

def validated(xml, limits=Limits()):
    return validate_document(Doc('f.xml', None, xml), limits, 'Provenir')


def one_doc():
    return _strip_prolog(next(iter(base_documents(1, 940000).values())))


def test_parse_time_limit_is_enforced_between_chunks():
    x = one_doc()
    assert len(x.encode()) > 16 * 1024 * 2
    doc = validated(x)
    for mode in ('partial', 'full'):
        with pytest.raises(StageError) as e:
            parse_document(doc, SPEC._replace(mode=mode, max_seconds=1e-9,
                                              stop_after_path='/Provenir/NotThere'))
        assert e.value.stage == 'parse' and '--max-parse-seconds' in e.value.reason
        assert parse_document(doc, SPEC._replace(mode=mode)).app_id == 940000


def test_lower_depth_limit_is_checked_in_one_walk():
    x = _in_custdata(one_doc(), '<a>' * 40 + '</a>' * 40)
    doc = validated(x)
    with pytest.raises(StageError) as e:
        parse_document(doc, SPEC._replace(mode='full', max_depth=30))
    assert 'deeper than 30' in e.value.reason
    assert parse_document(doc, SPEC._replace(mode='full', max_depth=60)).app_id == 940000


def test_limits_are_options_with_the_documented_reasons():
    x = one_doc()
    tags = x.count('<') - x.count('</')
    with pytest.raises(StageError) as e:
        validated(x, Limits(max_elements=tags - 1))
    assert '--max-elements' in e.value.reason
    assert validated(x, Limits(max_elements=tags)).xml
    wide = _in_application(x, ' '.join(f'w{i}="v"' for i in range(50)))
    with pytest.raises(StageError) as e:
        validated(wide, Limits(max_attributes=40))
    assert 'more than 40 attributes' in e.value.reason
    assert validated(wide, Limits(max_attributes=300)).xml


def test_attribute_count_ignores_long_text_and_sees_gt_inside_values():
    x = one_doc()
    # a long text node is not an element with attributes
    assert validated(_in_custdata(x, '<t>' + ' a="1"' * 3000 + '</t>'), Limits(max_attributes=200)).xml
    # '>' inside attribute values does not hide attributes from the count
    sneaky = _in_application(x, ' '.join(f'g{i}=">"' for i in range(2000)))
    with pytest.raises(StageError) as e:
        validated(sneaky, Limits(max_attributes=1000))
    assert '--max-attributes' in e.value.reason


@pytest.mark.parametrize('payload, reason', [
    (codecs.BOM_UTF32_LE + '<Provenir/>'.encode('utf-32-le'), None),
    (b'<?xml version="1.0" encoding="utf-16"?><Provenir/>', None),            # a declaration that lies
    (b'<?xml version="1.0" encoding="x-klingon"?><Provenir/>', "unknown encoding 'x-klingon'"),
    (b'<!-- c --><?pi x?><Provenir/>', 'processing instruction <?pi?>'),
    (b'<Provenir><![CDATA[ <?not-a-pi?> ]]><!-- <?nor-this?> --></Provenir>', None),
    (b'<Provenir><x/><?target data?></Provenir>', 'processing instruction <?target?>'),
])
def test_encodings_and_processing_instructions(payload, reason):
    if reason is None:
        assert validated(payload).xml.startswith(b'<Provenir')
    else:
        with pytest.raises(StageError) as e:
            validated(payload)
        assert reason in e.value.reason and e.value.stage == 'validation'
