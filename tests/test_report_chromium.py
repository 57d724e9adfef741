"""`run --report FILE.html` loaded in a real browser (Debian's headless `chromium`): the page is self-contained (no
http(s) reference, no script, style or image from elsewhere) and, as rendered, shows the numbers of the run it
describes — read, written, dead letters by stage and reason, rows per table (counted in the target), the
data-quality warnings by field, a throughput chart whose time never runs backwards, and the run's options under
their command-line names, without the database password. A screenshot is taken and decoded (a small PNG reader,
no imaging library): the page's own colours are on it, so the styles applied and the chart was drawn.

Skipped with a message when chromium is not installed; .ci/run installs it and sets XMLSQL_REQUIRE_CHROMIUM=1, so
in CI these tests run (they fail rather than skip there)."""
import html.parser
import json
import os
import re
import shutil
import struct
import subprocess
import zlib

import pytest

from contracts.samples.generate import generate_documents
from helpers import summary_counts
from pipeline.config import resolve_sample
from test_integrity import NEED_PG, Target, pipeline, sqlite_source

CHROMIUM = shutil.which('chromium') or ('/usr/bin/chromium' if os.access('/usr/bin/chromium', os.X_OK) else None)
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def needs_chromium():
    """Skip without chromium, with a message; fail instead where it must be there (.ci/run sets
    XMLSQL_REQUIRE_CHROMIUM=1 after installing it), so CI can never skip these tests silently."""
    if CHROMIUM is not None:
        return
    why = ('chromium is not installed (Debian package `chromium`): the HTML report is not checked in a browser '
           'here; .ci/run installs it')
    if os.environ.get('XMLSQL_REQUIRE_CHROMIUM'):
        pytest.fail(why + ', and XMLSQL_REQUIRE_CHROMIUM is set')
    pytest.skip(why)
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync']


def chromium(tmp_path, *args):
    profile = tmp_path / 'chromium-profile'
    profile.mkdir(exist_ok=True)
    p = subprocess.run([CHROMIUM, *FLAGS, f'--user-data-dir={profile}', *args], capture_output=True, text=True,
                       timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


# ------------------------------------------------------------------------------------------------ the DOM

class Page(html.parser.HTMLParser):
    """What the rendered page shows: the cards (label -> value), each section's table (h2 -> rows of cell
    texts), the chart's points."""

    def __init__(self, text):
        super().__init__()
        self.cards, self.tables, self.points = {}, {}, []
        self._h2 = self._text = None
        self._card = self._row = None
        self._in = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._in.append(tag)
        if tag == 'div' and a.get('class') == 'card':
            self._card = []
        elif tag in ('h2', 'td', 'b', 'span'):
            self._text = ''
        elif tag == 'tr' and self._h2:
            self._row = []
        elif tag == 'polyline':
            self.points = [tuple(map(float, p.split(','))) for p in a['points'].split()]

    def handle_endtag(self, tag):
        if self._in:
            self._in.pop()
        if tag == 'h2':
            self._h2 = self._text.strip()
            self.tables[self._h2] = []
        elif tag == 'td' and self._row is not None:
            self._row.append(self._text.strip())
        elif tag in ('b', 'span') and self._card is not None:
            self._card.append(self._text.strip())
            if len(self._card) == 2:
                self.cards[self._card[1]] = self._card[0]
                self._card = None
        elif tag == 'tr' and self._row is not None:
            if self._row:
                self.tables[self._h2].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._text is not None:
            self._text += data


def number(text):
    return int(text.replace(',', ''))


# ------------------------------------------------------------------------------------------------ a PNG reader

def read_png(path):
    """(width, height, bytes per pixel, rows of unfiltered pixel bytes) of an 8-bit, non-interlaced PNG."""
    data = open(path, 'rb').read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack('>I4s', data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b'IHDR':
            ihdr = struct.unpack('>IIBBBBB', body)
        elif kind == b'IDAT':
            idat.append(body)
        elif kind == b'IEND':
            break
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0 and ctype in (2, 6), ihdr
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b''.join(idat))
    stride = w * bpp
    assert len(raw) == h * (stride + 1)
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


def colours(png):
    w, h, bpp, rows = png
    out = {}
    for r in rows:
        for i in range(0, len(r), bpp):
            px = r[i:i + 3]
            out[px] = out.get(px, 0) + 1
    return out


# ------------------------------------------------------------------------------------------------ the test

def _options_of_run_help():
    p = pipeline('run', '--help')
    return set(re.findall(r'--[a-z][a-z-]*', p.stdout))


@pytest.mark.parametrize('kind', ['sqlite', pytest.param('pg', marks=[NEED_PG, pytest.mark.postgres])])
def test_report_in_chromium_shows_the_run(tmp_path, kind):
    target = Target(kind, tmp_path, 'report')
    try:
        _check_report(tmp_path, target)
    finally:
        target.drop()


def _check_report(tmp_path, target):
    docs = dict(generate_documents(60, seed=9, broken_fraction=0.12))
    source = sqlite_source(str(tmp_path / 'src.db'), docs)
    report, summary_json = tmp_path / 'run.html', tmp_path / 'summary.json'
    p = pipeline('run', '--contract', target.contract, '--source', source, '--target', target.url, '--tables',
                 'credit_app_tables', '--create-tables', '--max-dead-letter-rate', '1', '--chunk-docs', '20',
                 '--report', str(report), '--summary-json', str(summary_json))
    assert p.returncode == 0, p.stderr[-3000:]
    read, written, dead, rows = summary_counts(p.stdout)
    assert dead > 0
    summary = json.load(open(summary_json))
    page = report.read_text(encoding='utf-8')

    # self-contained: the only http(s) text is the SVG namespace name (an identifier, never fetched)
    assert [m.group(0) for m in re.finditer(r'https?://[^\s"\'<>)]*', page)] == ['http://www.w3.org/2000/svg']
    assert not re.search(r'<script|<link|<img|<iframe|<object|@import|url\(|\ssrc=|\shref=', page, re.I)
    if target.kind == 'pg':
        password = re.search(r'Pwd=([^;]+)', target.url).group(1)
        assert password not in page and 'Pwd=***' in page

    shown = Page(chromium(tmp_path, '--dump-dom', report.as_uri()))
    # the counts of the run, as rendered
    assert {k: number(shown.cards[k]) for k in ('read', 'written', 'dead-lettered', 'rows')} == \
        {'read': read, 'written': written, 'dead-lettered': dead, 'rows': rows}
    # rows per table: what the target holds
    per_table = {r[0]: number(r[1]) for r in shown.tables['Rows per table']}
    assert per_table == {t: target.rows(f'SELECT COUNT(*) FROM {target.t(t)}')[0][0] for t in per_table}
    assert sum(per_table.values()) == rows and len(per_table) == 7
    # dead letters by stage and reason: what the dead_letter table holds
    by_reason = {}
    for stage, reason, n in shown.tables['Dead letters by stage and reason']:
        by_reason[(stage, reason)] = number(n)
    held = {}
    for stage, reason in target.rows(f'SELECT stage, reason FROM {target.t("dead_letter")}'):
        held[(stage, reason)] = held.get((stage, reason), 0) + 1
    assert by_reason == held and sum(by_reason.values()) == dead
    by_stage = {}
    for (stage, _), n in by_reason.items():
        by_stage[stage] = by_stage.get(stage, 0) + n
    assert by_stage == summary['dead_lettered_by_stage']
    # the most frequent data-quality warnings by field, as counted by the run
    want = sorted(summary['counts']['warnings_by_field'].items(), key=lambda kv: (-kv[1], kv[0]))[:25]
    assert [(f, w, number(n)) for f, w, n in shown.tables['Most frequent data-quality warnings']] == \
        [(k.split(' | ')[0], k.split(' | ')[-1], n) for k, n in want]
    # throughput over time: one point per chunk and the end, time never running backwards
    xs = [x for x, _ in shown.points]
    assert len(shown.points) >= 4 and xs == sorted(xs), shown.points
    # the options, under the names the command line knows, the password masked
    options = {r[0]: r[1] for r in shown.tables['Options of this run']}
    assert options['--contract'] == resolve_sample(target.contract) and options['--chunk-docs'] == '20'
    assert set(options) <= _options_of_run_help(), set(options) - _options_of_run_help()
    assert options['--target'] == (target.url if target.kind == 'sqlite' else
                                   target.url.replace(password, '***'))

    shot = tmp_path / 'report.png'
    chromium(tmp_path, f'--screenshot={shot}', '--window-size=1280,1600', report.as_uri())
    assert shot.stat().st_size > 20_000
    png = read_png(str(shot))
    assert png[:2] == (1280, 1600)
    seen = colours(png)
    white = seen.get(b'\xff\xff\xff', 0)
    assert len(seen) > 100 and white < 0.97 * 1280 * 1600, (len(seen), white)
    # the page's own colours: the status badge (ok), the table heads, the chart's line
    for rgb in ('1f7a44', 'f5f7fa', '2563c9'):
        assert bytes.fromhex(rgb) in seen, rgb
