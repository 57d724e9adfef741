"""The examples of docs/contracts.md and docs/runbook.md are checked here, so the docs cannot rot.

A fenced block right after a marker comment ``<!-- check: KIND -->`` is an example of that kind:

* ``base-contract`` (json), ``base-document`` (xml), ``base-rows`` (text): the small contract every mapping example
  is added to, one document, and the rows it maps to (``table: {row}`` per line, in order);
* ``example`` (text): sections ``contract:`` (top-level keys merged into the base contract), ``mapping:`` (one JSON
  object each; a column mapping replaces the base mapping of the same table.column, else it is added; a new table is
  added to table_insertion_order), ``xml:`` (the ``<application>`` element, wrapped in
  ``<Provenir><Request ID="1001"><CustData>...``, or a whole ``<Provenir>`` document), then what to expect:
  ``expect: table.column = JSON`` (the table has one row), ``expect: table[i].column = JSON``,
  ``expect: table = [rows]``, ``expect: table: no rows``, ``fails: text`` (the document fails the mapping stage with
  a reason containing text), ``warning: text``;
* ``expression`` (text): ``expr:``, ``with:`` (names -> raw strings), ``value:`` (JSON; a float must be a float), or
  ``error:`` (compile error containing the text);
* ``load-error`` (text): ``contract:`` / ``mapping:`` as for examples, ``error:`` lines the loader must report
  (each exactly one of its problems);
* ``shell`` (bash) and ``output`` (text): the walk-through, run in a scratch folder (slow); an output block holds
  lines the preceding shell block prints (``…`` matches anything), in order.

``python tests/test_docs_examples.py`` prints what every example actually gives (for writing the docs).
"""
import copy
import json
import os
import re
import shlex
import subprocess
import sys
from datetime import datetime

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTRACTS_MD = os.path.join(ROOT, 'docs', 'contracts.md')
SHARED = os.path.join(os.path.dirname(ROOT), 'shared')

MARKER = re.compile(r'^<!-- check: ([a-z-]+) -->\s*$')
FENCE = re.compile(r'^```(\w*)\s*$')
KEYWORD = re.compile(r'^(contract|mapping|xml|expect|fails|warning|expr|with|value|error):\s?(.*)$')
WRAP = '<Provenir><Request ID="1001"><CustData>{}</CustData></Request></Provenir>'


def marked_blocks(path):
    """[(kind, line number, text)] of every marked fenced block of a markdown file."""
    lines = open(path, encoding='utf-8').read().split('\n')
    out = []
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        assert j < len(lines) and FENCE.match(lines[j]), f'{path}:{i + 1}: a check marker must precede a fenced block'
        k = j + 1
        while k < len(lines) and lines[k].strip() != '```':
            k += 1
        assert k < len(lines), f'{path}:{j + 1}: unterminated fenced block'
        out.append((m.group(1), j + 2, '\n'.join(lines[j + 1:k])))
        i = k + 1
    return out


def sections(text):
    """[(keyword, content)] of an example block; a section runs until the next keyword line."""
    out = []
    for line in text.split('\n'):
        m = KEYWORD.match(line)
        if m:
            out.append([m.group(1), m.group(2)])
        elif out:
            out[-1][1] += '\n' + line
        elif line.strip():
            raise AssertionError(f'text before the first keyword: {line!r}')
    return [(k, v.strip()) for k, v in out]


def blocks_of(kind, path=CONTRACTS_MD):
    return [(line, text) for k, line, text in marked_blocks(path) if k == kind]


def base_contract():
    (_, text), = blocks_of('base-contract')
    return json.loads(text)


def _patched(base, secs):
    c = copy.deepcopy(base)
    for key, val in secs:
        if key == 'contract':
            for k, v in json.loads(val).items():
                if isinstance(v, dict) and isinstance(c.get(k), dict):
                    c[k].update(v)
                else:
                    c[k] = v
        elif key == 'mapping':
            m = json.loads(val)
            ms = c['mappings']
            steps = m.get('mapping_type') or []
            row_creating = any(re.match(r'\s*(add_|policy_exceptions|warranty_field)', s) for s in steps)
            same = [i for i, x in enumerate(ms) if m.get('target_column') and not row_creating and
                    (x.get('target_table'), x.get('target_column')) == (m.get('target_table'), m.get('target_column'))]
            if same:
                ms[same[0]] = m
            else:
                ms.append(m)
            order = c['table_insertion_order']
            if m.get('target_table') not in order:
                at = order.index('processing_log') if 'processing_log' in order else len(order)
                order.insert(at, m['target_table'])
    return c


def _norm(v):
    if isinstance(v, datetime):
        return v.isoformat(sep=' ')
    return v


def _same(got, want):
    got = _norm(got)
    if isinstance(want, float) and not isinstance(got, float):
        return False
    if isinstance(want, int) and not isinstance(want, bool) and isinstance(got, float):
        return False
    return got == want


def run_example(secs, base=None):
    """(rows, warnings, failure reason) of one example."""
    from lxml import etree
    from contracts import compile_contract, load_contract
    from contracts.errors import MappingError
    contract = _patched(base or base_contract(), secs)
    compiled = compile_contract(load_contract(contract))
    xml = next((v for k, v in secs if k == 'xml'), None)
    assert xml, 'an example needs an xml: section'
    doc = xml if xml.lstrip().startswith('<Provenir') else WRAP.format(xml)
    root = etree.fromstring(doc.encode('utf-8'))
    try:
        res = compiled.map(root)
    except MappingError as e:
        return {}, [], str(e)
    return res.rows, res.warnings, None


EXPECT = re.compile(r'^(\w+)(?:\[(\d+)\])?(?:\.(\w+))?\s*(=|:)\s*(.*)$', re.S)


def check_expectations(secs, rows, warnings, failure):
    problems = []
    for key, val in secs:
        if key == 'fails':
            if failure is None or val not in failure:
                problems.append(f'expected the document to fail with {val!r}, got {failure!r}')
        elif key == 'warning':
            if not any(val in w for w in warnings):
                problems.append(f'expected a warning containing {val!r}, got {warnings!r}')
        elif key == 'expect':
            if failure is not None:
                problems.append(f'the document failed: {failure}')
                continue
            m = EXPECT.match(val)
            assert m, f'cannot read expectation {val!r}'
            table, idx, column, op, rhs = m.groups()
            got_rows = rows.get(table, [])
            if op == ':':
                assert rhs.strip() == 'no rows', val
                if got_rows:
                    problems.append(f'{table}: expected no rows, got {got_rows!r}')
                continue
            want = json.loads(rhs)
            if column is None:
                norm = [{k: _norm(v) for k, v in r.items()} for r in got_rows]
                if norm != want:
                    problems.append(f'{table}: expected {want!r}, got {norm!r}')
                continue
            if idx is None and len(got_rows) != 1:
                problems.append(f'{table}: expected one row, got {len(got_rows)}: {got_rows!r}')
                continue
            i = int(idx or 0)
            if i >= len(got_rows):
                problems.append(f'{table}[{i}]: no such row ({len(got_rows)} rows)')
                continue
            got = got_rows[i].get(column)
            if not _same(got, want):
                problems.append(f'{table}[{i}].{column}: expected {want!r}, got {_norm(got)!r}')
    return problems


# ------------------------------------------------------------------------------------------------------------ tests

def test_the_doc_has_examples_of_every_kind():
    kinds = [k for k, _, _ in marked_blocks(CONTRACTS_MD)]
    for k in ('base-contract', 'base-document', 'base-rows', 'example', 'expression', 'load-error', 'shell'):
        assert k in kinds, k
    assert kinds.count('example') >= 25


def test_the_base_contract_loads_and_follows_the_schema():
    from contracts import load_contract
    from contracts.schema import schema_errors
    c = base_contract()
    assert schema_errors(c) == []
    load_contract(c)


def test_every_mapping_type_has_an_example():
    from contracts.model import ARG_STEPS, PLAIN_STEPS
    used = set()
    for _, text in blocks_of('example'):
        for k, v in sections(text):
            if k == 'mapping':
                mt = json.loads(v).get('mapping_type') or ['direct']
                used |= {re.match(r'\w+', t.strip()).group(0) for t in mt}
    missing = (PLAIN_STEPS | set(ARG_STEPS)) - used
    assert not missing, f'mapping types without an example in docs/contracts.md: {sorted(missing)}'


def _rows_block():
    (_, text), = blocks_of('base-rows')
    out = []
    for line in text.split('\n'):
        if line.strip():
            table, row = line.split(':', 1)
            out.append((table.strip(), json.loads(row)))
    return out


def test_the_base_document_maps_to_the_rows_shown():
    (_, xml), = blocks_of('base-document')
    rows, warnings, failure = run_example([('xml', xml)])
    assert failure is None, failure
    got = [(t, {k: _norm(v) for k, v in r.items()}) for t, rs in rows.items() for r in rs]
    assert got == _rows_block()


@pytest.mark.parametrize('line,text', blocks_of('example'), ids=lambda x: f'line{x}' if isinstance(x, int) else '')
def test_example(line, text):
    secs = sections(text)
    rows, warnings, failure = run_example(secs)
    problems = check_expectations(secs, rows, warnings, failure)
    assert not problems, f'docs/contracts.md:{line}: ' + '; '.join(problems)


@pytest.mark.parametrize('line,text', blocks_of('expression'), ids=lambda x: f'line{x}' if isinstance(x, int) else '')
def test_expression(line, text):
    from contracts.expressions import ExpressionError, compile_expression
    secs = dict(sections(text))
    if 'error' in secs:
        with pytest.raises(ExpressionError) as e:
            compile_expression(secs['expr'])
        assert secs['error'] in str(e.value), f'docs/contracts.md:{line}: {e.value}'
        return
    names = json.loads(secs.get('with') or '{}')
    low = {k.lower(): v for k, v in names.items()}
    got = compile_expression(secs['expr']).evaluate(lambda n: low.get(n.lower()))
    want = json.loads(secs['value'])
    assert _same(got, want), f'docs/contracts.md:{line}: expected {want!r}, got {got!r}'


@pytest.mark.parametrize('line,text', blocks_of('load-error'), ids=lambda x: f'line{x}' if isinstance(x, int) else '')
def test_load_error(line, text):
    from contracts import load_contract
    from contracts.errors import ContractError
    secs = sections(text)
    with pytest.raises(ContractError) as e:
        load_contract(_patched(base_contract(), secs))
    for k, v in secs:
        if k == 'error':
            assert v in e.value.errors, f'docs/contracts.md:{line}: {v!r} not in {e.value.errors!r}'


def test_the_schema_and_vscode_settings_shown_are_valid():
    """The editor settings block is JSON and points at the schema file that exists."""
    for _, text in blocks_of('editor-settings'):
        settings = json.loads(text)
        for entry in settings['json.schemas']:
            assert os.path.isfile(os.path.join(ROOT, entry['url'].lstrip('./')))


# ------------------------------------------------------------------------------------------------ the walk-through

def _output_matches(lines, expected):
    """Each expected line (… = anything) matches a line of `lines`, in order."""
    pos = 0
    for e in expected:
        pat = re.compile('^' + '.*'.join(re.escape(p) for p in e.split('…')) + '$')
        while pos < len(lines) and not pat.match(lines[pos]):
            pos += 1
        if pos == len(lines):
            return e
        pos += 1
    return None


@pytest.mark.slow
def test_the_walk_through_runs_as_shown(tmp_path):
    """Every command of the walk-through, in a scratch folder, as a user would type it; exit status 0 unless the
    line ends with `# exit N`; output blocks are lines the commands print."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env['PATH']
    last_out = None
    ran = 0
    for kind, line, text in marked_blocks(CONTRACTS_MD):
        if kind == 'shell':
            last_out = []
            for cmd in _commands(text):
                want = 0
                m = re.search(r'#\s*exit\s+(\d+)\s*$', cmd)
                if m:
                    want = int(m.group(1))
                p = subprocess.run(['bash', '-c', cmd], cwd=tmp_path, env=env, capture_output=True, text=True,
                                   timeout=600)
                assert p.returncode == want, (f'docs/contracts.md:{line}: `{cmd}` exited {p.returncode}:\n'
                                              f'{p.stdout[-2000:]}\n{p.stderr[-3000:]}')
                last_out += (p.stdout + p.stderr).splitlines()
                ran += 1
        elif kind == 'output':
            assert last_out is not None, f'docs/contracts.md:{line}: an output block needs a shell block before it'
            missing = _output_matches(last_out, [ln for ln in text.split('\n') if ln.strip()])
            assert missing is None, f'docs/contracts.md:{line}: not printed: {missing!r}\n' + '\n'.join(last_out[-60:])
    assert ran >= 5


def _commands(text):
    """Shell commands of a block: one per line, `\\` continues a line, comments and blank lines skipped."""
    out, cur = [], ''
    for ln in text.split('\n'):
        if cur:
            cur += '\n' + ln
        elif ln.strip() and not ln.lstrip().startswith('#'):
            cur = ln
        else:
            continue
        if not cur.rstrip().endswith('\\'):
            out.append(cur)
            cur = ''
    if cur:
        out.append(cur)
    return out


# ------------------------------------------------------------------------------------------------ the runbook

RUNBOOK_MD = os.path.join(ROOT, 'docs', 'runbook.md')
# options the runbook names on purpose although no command has them (the typo of its exit-status example)
RUNBOOK_NOT_OPTIONS = {'--dead-leter'}
PIPELINE_CMD = re.compile(r'python -m pipeline ([a-z][a-z-]*)((?:\\\n|[^`\n])*)')


def _help_text(command):
    import contextlib
    import io
    sys.path.insert(0, ROOT)
    from pipeline.cli import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main([command, '--help'])
        except SystemExit:
            pass
    return buf.getvalue()


def _help_options(command):
    return set(re.findall(r'(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9](?![\w*-])', _help_text(command)))


def runbook_commands():
    """[(line number, command, options named after it)] of every `python -m pipeline CMD ...` in the runbook, in
    fenced blocks (a trailing backslash continues the line) and in inline code."""
    text = open(RUNBOOK_MD, encoding='utf-8').read()
    out = []
    for m in PIPELINE_CMD.finditer(text):
        line = text.count('\n', 0, m.start()) + 1
        args = m.group(2).split('#')[0]          # a shell comment ends the command
        out.append((line, m.group(1), re.findall(r'(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9](?![\w*-])', args)))
    return out


def test_every_runbook_command_and_option_exists():
    """Every `python -m pipeline CMD --opt` the runbook names is a command whose --help lists that option, and
    every other `--option` it names is in some command's --help: a renamed option cannot leave the runbook stale."""
    cmds = runbook_commands()
    assert len(cmds) >= 15, cmds
    helps = {}
    for line, cmd, opts in cmds:
        if cmd not in helps:
            helps[cmd] = _help_options(cmd)
            assert helps[cmd], f'docs/runbook.md:{line}: `python -m pipeline {cmd}` is not a command'
        for o in opts:
            if o not in RUNBOOK_NOT_OPTIONS:
                assert o in helps[cmd], f'docs/runbook.md:{line}: `python -m pipeline {cmd}` has no option {o}'
    every = set().union(*(_help_options(c) for c in ('run', 'verify', 'explain', 'check', 'create-tables',
                                                      'generate')))
    text = open(RUNBOOK_MD, encoding='utf-8').read()
    named = set(re.findall(r'(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9](?![\w*-])', text)) - RUNBOOK_NOT_OPTIONS
    assert named - every == set(), f'docs/runbook.md names options no command has: {sorted(named - every)}'


def test_runbook_exit_statuses_and_summary_fields_are_the_codes():
    """The exit-status table lists exactly the statuses the launcher uses, and every quoted SUMMARY line has the
    fields, in the order, that the SUMMARY line has now."""
    sys.path.insert(0, ROOT)
    from pipeline import orchestrate
    from pipeline.summary import Summary
    text = open(RUNBOOK_MD, encoding='utf-8').read()
    table = re.search(r'## 5\. Exit status\n(.*?)\n## ', text, re.S).group(1)
    listed = {int(n) for row in re.findall(r'^\| ([\d /]+) \|', table, re.M) for n in row.split('/')}
    codes = {orchestrate.EXIT_OK, orchestrate.EXIT_STOPPED, orchestrate.EXIT_CONFIG, orchestrate.EXIT_UNBALANCED,
             orchestrate.EXIT_FAILURES, *orchestrate.EXIT_SIGNAL.values()}
    assert listed == codes
    import inspect
    fields = re.findall(r'(\w+)=\{', inspect.getsource(Summary.line))      # the f-string that prints the line
    assert fields[:3] == ['read', 'written', 'dead_lettered'], fields
    quoted = re.findall(r'^SUMMARY (.*)$', text, re.M)
    assert quoted
    for q in quoted:
        assert re.findall(r'(\w+)=', q) == fields, q


# ------------------------------------------------------------------------------------------------ for doc writers

def _show():
    base = base_contract()
    for kind, line, text in marked_blocks(CONTRACTS_MD):
        if kind != 'example':
            continue
        secs = sections(text)
        try:
            rows, warnings, failure = run_example(secs, base)
        except Exception as e:          # a contract error in the example
            print(f'--- line {line}: {type(e).__name__}: {e}')
            continue
        print(f'--- line {line}: ' + ('FAILS: ' + failure if failure else ''))
        for t, rs in rows.items():
            for r in rs:
                print(f'  {t}: {json.dumps({k: _norm(v) for k, v in r.items()}, default=str)}')
        for w in warnings:
            print(f'  warning: {w}')
        for p in check_expectations(secs, rows, warnings, failure):
            print(f'  PROBLEM: {p}')


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    _show()
