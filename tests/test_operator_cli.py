"""Safe defaults of the operator's toolkit (issue 15), through the CLI as an operator runs it, on SQLite and on the
shared PostgreSQL server (a private schema per test):

* `create-tables --contract C --tables SPEC --target T` creates the contract's tables in its target_schema, leaves
  the reference tables and the foreign keys to them out exactly as `run --create-tables` does, prints one line per
  table, and the next `run` writes every document; the "create them with ..." command that `run` prints for a
  target without tables works when run as printed;
* `check` prints one line per problem (missing table or column, a type or a length that does not fit, an empty or
  missing table a foreign key points to, a broken contract), exits non-zero on problems and 0 without, and never
  prints a password or a row value; `run` refuses the same target before any data moves;
* unknown options are one `error:` line and exit 2 (never a Beam warning); each command's --help lists its own
  options only, each with a help text; --version;
* `create-tables --print` needs no target, ends every statement with one `;`, and survives a closed pipe;
* range, shard and table options given for a source they do not apply to are an error, not ignored.
"""
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys

import pytest

from contracts.samples.generate import write_sqlite_source, write_xml_folder
from helpers import SUMMARY, summary_counts
from operator_helpers import (KINDS, ROOT, SAMPLES, Target, contract_tables, error_lines, pg_password,
                              pg_with_env_password, pipeline, spec_with_reference_table, targets)  # noqa: F401

CC = os.path.join(ROOT, '..', 'shared', 'seed-corpus', 'cc')


def good_source(tmp_path, n=12):
    path = str(tmp_path / 'src.db')
    write_sqlite_source(path, n, seed=11, broken_fraction=0)
    return f'sqlite:///{path}'


# ============================================================================================= 1. create-tables

@pytest.mark.slow
@pytest.mark.parametrize('kind', KINDS)
def test_create_tables_follows_the_contract_like_run_create_tables_and_the_next_run_writes_everything(
        tmp_path, targets, kind):
    spec = spec_with_reference_table(tmp_path / 'tables.json')
    source = good_source(tmp_path)
    t = targets(kind, 'ct')
    assert not t.tables()
    p = pipeline('create-tables', '--contract', t.contract, '--tables', spec, '--target', t.url)
    assert p.returncode == 0, p.stderr[-2000:]
    want = contract_tables() + ['processing_log', 'dead_letter']
    # one line per table: the contract's tables and the tool's own created, the reference table not
    lines = p.stdout.strip().splitlines()
    assert lines[0].startswith('create-tables: ') and (t.schema is None or f'(schema {t.schema})' in lines[0])
    per_table = dict(ln.strip().split(': ', 1) for ln in lines[1:])
    assert len(per_table) == len(lines) - 1
    assert {n for n, what in per_table.items() if what == 'created'} == set(want), p.stdout
    assert per_table['app_enums'].startswith('not created (a reference table'), p.stdout
    # in the contract's target_schema (PostgreSQL: the schema nothing had created), without --schema
    assert t.tables() == set(want)
    assert not any(ref == 'app_enums' for _, _, ref in t.foreign_keys())
    assert {(tab, col) for tab, col, _ in t.foreign_keys()} >= {('app_contact_base', 'app_id')}
    if kind == 'pg':
        assert pg_password() not in p.stdout + p.stderr

    # exactly what `run --create-tables` makes of the same contract and spec
    same = targets(kind, 'ct_run')                  # the same contract, with a schema of its own
    r = pipeline('run', '--contract', same.contract, '--source', source, '--target', same.url, '--tables', spec,
                 '--create-tables', '--progress-seconds', '0')
    assert r.returncode == 0, r.stderr[-2000:]
    assert same.tables() == t.tables()
    assert same.foreign_keys() == t.foreign_keys()
    assert same.columns() == t.columns()

    # the next run on the target create-tables made writes every document
    r = pipeline('run', '--contract', t.contract, '--source', source, '--target', t.url, '--progress-seconds', '0')
    assert r.returncode == 0, r.stderr[-2000:]
    read, written, dead, rows = summary_counts(r.stdout)
    assert (read, written, dead) == (12, 12, 0) and rows > 12
    assert t.rows(f'SELECT COUNT(*) FROM {t.t("app_base")}') == [(12,)]

    # run again: every table is there and left as it is
    p = pipeline('create-tables', '--contract', t.contract, '--tables', spec, '--target', t.url)
    assert p.returncode == 0
    again = dict(ln.strip().split(': ', 1) for ln in p.stdout.strip().splitlines()[1:])
    assert {n for n, what in again.items() if what == 'already there, left as it is'} == set(want), p.stdout
    assert t.rows(f'SELECT COUNT(*) FROM {t.t("app_base")}') == [(12,)]


def _hint(stderr):
    """The command of the 'create them with `...`' hint of the one error line."""
    errors = error_lines(stderr)
    assert len(errors) == 1, stderr[-2000:]
    m = re.search(r'create (?:them|the missing tables) with `([^`]+)`', errors[0])
    assert m, errors[0]
    return m.group(1), errors[0]


def _run_literally(command, env=None):
    argv = shlex.split(command)
    assert argv[:3] == ['python', '-m', 'pipeline'], argv
    return subprocess.run([sys.executable] + argv[1:], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
@pytest.mark.parametrize('kind', KINDS)
def test_the_create_tables_command_run_prints_for_a_target_without_tables_works_as_printed(
        tmp_path, targets, kind):
    t = targets(kind, 'hint')
    spec_with_reference_table(t.folder / 'tables.json')          # the table spec beside the contract
    source = good_source(tmp_path)
    url, env = (t.url, {}) if kind == 'sqlite' else pg_with_env_password()
    run = ['run', '--contract', t.contract, '--source', source, '--target', url, '--progress-seconds', '0']
    p = pipeline(*run, env=env)
    assert p.returncode == 2 and 'SUMMARY' not in p.stdout, (p.returncode, p.stderr[-2000:])
    command, line = _hint(p.stderr)
    assert 'CONTRACT' not in command and 'SPEC' not in command and 'TARGET' not in command, command
    if kind == 'pg':
        assert pg_password() not in p.stderr and '${' in command        # the placeholder, not the password
    c = _run_literally(command, env)
    assert c.returncode == 0, c.stderr[-2000:]
    assert 'app_enums: not created' in c.stdout
    p = pipeline(*run, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert summary_counts(p.stdout)[:3] == (12, 12, 0)

    if kind == 'pg':
        # a literal password is never printed: the command shows *** and says to put it back
        other = targets(kind, 'hint_pw')
        p = pipeline('run', '--contract', other.contract, '--source', source, '--target', other.url,
                     '--tables', str(t.folder / 'tables.json'), '--progress-seconds', '0')
        command, line = _hint(p.stderr)
        assert p.returncode == 2 and pg_password() not in p.stderr and 'Pwd=***' in command
        assert 'put the password back' in line


def test_check_names_the_create_tables_command_for_missing_tables_once_per_table(tmp_path, capsys):
    from pipeline.cli import main
    db = tmp_path / 'empty.db'
    rc = main(['check', '--contract', 'credit_app', '--target', f'sqlite:///{db}'])
    out, err = capsys.readouterr()
    assert rc == 2
    lines = out.strip().splitlines()
    # one line per missing table, not one per column of it
    assert sorted(ln.split(':')[0] for ln in lines) == sorted(contract_tables() + ['processing_log', 'dead_letter'])
    command, _ = _hint(err)
    c = _run_literally(command)
    assert c.returncode == 0, c.stderr
    assert main(['check', '--contract', 'credit_app', '--target', f'sqlite:///{db}']) == 0
    assert capsys.readouterr().out.strip() == 'check: no problem found (contract and target)'


@pytest.mark.slow
def test_create_tables_then_run_on_the_existing_systems_cc_corpus(tmp_path):
    """The existing system's own contract and tables.json (13 tables, reference tables app_enums and
    app_campaign_cc with foreign keys to them): the hint's command (tables.json lies beside contract.json), then
    the run writes every document but the two the existing system rejected too."""
    if not os.path.isdir(CC):
        pytest.skip(f'the seed corpus is not at {CC}')
    db = tmp_path / 'cc.db'
    run = ['run', '--contract', os.path.join(CC, 'contract.json'), '--source', os.path.join(CC, 'xml'),
           '--target', f'sqlite:///{db}', '--progress-seconds', '0']
    p = pipeline(*run)
    assert p.returncode == 2
    command, _ = _hint(p.stderr)
    assert os.path.abspath(os.path.join(CC, 'tables.json')) in command
    c = _run_literally(command)
    assert c.returncode == 0, c.stderr[-2000:]
    assert 'app_enums: not created (a reference table' in c.stdout
    assert 'app_campaign_cc: not created (a reference table' in c.stdout
    conn = sqlite3.connect(db)
    refs = {r[2] for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            for r in conn.execute(f'PRAGMA foreign_key_list("{t}")')}
    conn.close()
    assert not refs & {'app_enums', 'app_campaign_cc'}
    p = pipeline(*run)
    assert p.returncode == 0, p.stderr[-2000:]
    assert summary_counts(p.stdout)[:3] == (165, 163, 2)


# ============================================================================================= 2. check

def _bad_spec(path):
    """The sample spec with one problem of each kind check knows, and app_enums as an ordinary (empty) table that
    the enum columns point to."""
    spec = json.load(open(spec_with_reference_table(path)))
    spec['reference_tables'] = []

    def col(table, name):
        return next(c for c in spec['tables'][table]['columns'] if c['name'] == name)
    spec['tables']['app_contact_base']['columns'].remove(col('app_contact_base', 'email'))   # missing column
    col('app_pricing_cc', 'credit_line')['type'] = 'varchar(20)'     # the contract maps a smallint
    col('app_contact_base', 'birth_date')['type'] = 'int'            # the contract maps a date
    col('app_contact_base', 'first_name')['type'] = 'varchar(20)'    # the contract's data_length is 50
    with open(path, 'w') as f:
        json.dump(spec, f)
    return str(path)


ENUM_FKS = {('app_base', 'app_source_enum'), ('app_base', 'app_type_enum'), ('app_base', 'decision_enum'),
            ('app_base', 'product_line_enum'), ('app_contact_base', 'contact_type_enum'),
            ('app_contact_base', 'fraud_type_enum'), ('app_pricing_cc', 'population_assignment_enum'),
            ('app_pricing_cc', 'decision_model_enum'), ('app_contact_address', 'address_type_enum'),
            ('app_contact_address', 'ownership_type_enum'), ('app_contact_employment', 'employment_type_enum'),
            ('app_contact_employment', 'income_type_enum')}


@pytest.mark.slow
@pytest.mark.parametrize('kind', KINDS)
def test_check_prints_one_line_per_problem_and_run_refuses_the_same_target(tmp_path, targets, kind):
    good = targets(kind, 'chk_good')
    assert pipeline('create-tables', '--contract', good.contract, '--tables', 'credit_app_tables',
                    '--target', good.url).returncode == 0
    p = pipeline('check', '--contract', good.contract, '--target', good.url)
    assert (p.returncode, p.stdout.strip()) == (0, 'check: no problem found (contract and target)'), p.stderr

    bad = targets(kind, 'chk_bad')
    # every table of the spec, app_enums and the foreign keys to it included (no --contract)
    args = ['create-tables', '--tables', _bad_spec(tmp_path / 'bad.json'), '--target', bad.url]
    assert pipeline(*args, *(['--schema', bad.schema] if bad.schema else [])).returncode == 0
    secret_value = 'ZQX-not-a-value-to-print'
    bad.execute(f"INSERT INTO {bad.t('dead_letter')} (source, stage, reason, payload, doc_key) VALUES "
                f"('{secret_value}', 'validation', '{secret_value}', '{secret_value}', 'k')")
    p = pipeline('check', '--contract', bad.contract, '--target', bad.url)
    assert p.returncode != 0
    lines = p.stdout.strip().splitlines()
    expected = {
        'app_contact_base.email: column not found in the target table',
        'app_pricing_cc.credit_line: the contract writes smallint values into a',
        'app_contact_base.birth_date: the contract writes date values into a',
        'app_contact_base.first_name: data_length 50 but the column is',
    } | {f'{t}.{c}: references app_enums, which is empty' for t, c in ENUM_FKS}
    for e in expected:
        assert sum(ln.startswith(e) for ln in lines) == 1, (e, p.stdout)
    assert len(lines) == len(expected), p.stdout
    assert error_lines(p.stderr) == [f'error: {len(expected)} problem(s) found'], p.stderr
    out = p.stdout + p.stderr
    assert secret_value not in out
    if kind == 'pg':
        assert pg_password() not in out

    # run refuses it before any data moves (before: a too-narrow column dead-lettered documents one by one)
    r = pipeline('run', '--contract', bad.contract, '--source', good_source(tmp_path), '--target', bad.url,
                 '--progress-seconds', '0')
    assert r.returncode == 2 and 'SUMMARY' not in r.stdout
    assert len(error_lines(r.stderr)) == 1 and 'first_name' in r.stderr
    assert bad.rows(f'SELECT COUNT(*) FROM {bad.t("processing_log")}') == [(0,)]

    # filled, the reference table is no problem any more
    bad.execute(f"INSERT INTO {bad.t('app_enums')} (enum_id, code) VALUES (1, 'X')")
    p = pipeline('check', '--contract', bad.contract, '--target', bad.url)
    assert not [ln for ln in p.stdout.splitlines() if 'app_enums' in ln] and len(p.stdout.splitlines()) == 4


def test_check_names_a_foreign_key_to_a_table_that_is_not_there(tmp_path, capsys):
    """SQLite lets a foreign key point to a table that does not exist; then every insert with a value there
    fails ('no such table'). check says so."""
    from pipeline.cli import main
    spec = spec_with_reference_table(tmp_path / 'tables.json')
    s = json.load(open(spec))
    s['reference_tables'] = []
    json.dump(s, open(spec, 'w'))
    db = tmp_path / 't.db'
    assert main(['create-tables', '--tables', spec, '--target', f'sqlite:///{db}']) == 0
    conn = sqlite3.connect(db)
    conn.execute('DROP TABLE app_enums')
    conn.close()
    capsys.readouterr()
    assert main(['check', '--contract', 'credit_app', '--target', f'sqlite:///{db}']) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert sorted(lines) == sorted(f'{t}.{c}: references app_enums, which is not in the target (or cannot be '
                                   'read): every document with a value there would fail its FOREIGN KEY'
                                   for t, c in ENUM_FKS)


def test_check_of_a_broken_contract_lists_its_errors_one_per_line(tmp_path, capsys):
    from pipeline.cli import main
    c = json.load(open(os.path.join(SAMPLES, 'credit_app.json')))
    c['mappings'][3]['mapping_type'] = ['no_such_type']
    del c['mappings'][4]['target_table']
    path = tmp_path / 'broken.json'
    json.dump(c, open(path, 'w'))
    for target in ([], ['--target', f'sqlite:///{tmp_path}/none.db']):
        rc = main(['check', '--contract', str(path), *target])
        out, err = capsys.readouterr()
        lines = out.strip().splitlines()
        assert rc != 0 and len(lines) == 2, out
        assert "mappings[3]" in lines[0] and 'no_such_type' in lines[0]
        assert "mappings[4]" in lines[1] and 'target_table' in lines[1]
        assert error_lines(err) == ['error: 2 problem(s) found']
    assert main(['check', '--contract', 'credit_app']) == 0
    assert capsys.readouterr().out.strip() == 'check: no problem found (contract)'


# ============================================================================================= 3. options

def _cli(capsys, *argv):
    """main(argv) in this process: (exit status, stdout, stderr); a usage error exits through SystemExit."""
    from pipeline.cli import main
    try:
        rc = main(list(argv))
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_unknown_options_are_one_error_line_and_exit_2_in_a_process(tmp_path):
    """As an operator types them, in a process of its own: no Beam warning, no run, no target created."""
    src = good_source(tmp_path, 3)
    db = tmp_path / 't.db'
    for bad in (['--dead-leter', 'x'], ['--batchsize', '5']):
        p = pipeline('run', '--contract', 'credit_app', '--source', src, '--target', f'sqlite:///{db}',
                     '--tables', 'credit_app_tables', '--create-tables', *bad)
        assert p.returncode == 2, (p.returncode, p.stderr[-1000:])
        assert p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr          # one line
        assert p.stderr.startswith('error: unrecognized arguments: ' + ' '.join(bad)), p.stderr
        assert 'WARNING' not in p.stderr and p.stdout == ''
        assert not db.exists()


@pytest.mark.parametrize('argv, named', [
    (['run', '--dead_letter', 'x'], '--dead_letter'),
    (['run', '--save_main_session', 'stray'], 'stray'),           # a Beam flag takes no value: not a warning
    (['run', '--runner'], '--runner'),                            # Beam's own usage error: one line too
    (['run', '--direct_running_mode=bogus'], 'bogus'),
    (['run', '--dead', 'x'], '--dead'),                           # no abbreviations: --dead is not --dead-letter
    (['run', '--no'], '--no'),                                    # nor --no-resume
    (['map', '--target', 'sqlite:///x.db'], '--target'),          # a run option
    (['map', '--max-dead-letter-rate', '1'], '--max-dead-letter-rate'),
    (['map', '--create-tables'], '--create-tables'),
    (['verify', '--batch-size', '5'], '--batch-size'),
    (['check', '--source', 'x'], '--source'),
    (['create-tables', '--tables', 'credit_app_tables', '--print', '--bogus'], '--bogus'),
    (['explain', '--contract', 'credit_app', '--bogus'], '--bogus'),
    (['generate', '--docs', '1', '--folder', 'x', '--bogus'], '--bogus'),
])
def test_unknown_options_of_every_command_are_one_error_line_and_exit_2(capsys, argv, named):
    cmd, rest = argv[0], argv[1:]
    base = {'run': ['--contract', 'credit_app', '--source', 'nowhere', '--target', 'sqlite:///nowhere.db'],
            'map': ['--contract', 'credit_app', '--input', 'nowhere', '--output', 'nowhere.jsonl'],
            'verify': ['--contract', 'credit_app', '--source', 'nowhere', '--target', 'sqlite:///nowhere.db'],
            'check': ['--contract', 'credit_app']}.get(cmd, [])
    rc, out, err = _cli(capsys, cmd, *base, *rest)
    assert rc == 2, (rc, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith('error: '), err
    assert named in err and f'python -m pipeline {cmd} --help' in err
    assert 'SUMMARY' not in out


def _options_with_help(help_text):
    """{option: its help text} of an argparse --help page."""
    out, current = {}, None
    for line in help_text.splitlines():
        m = re.match(r'^  (-\S.*?)(?:\s{2,}(\S.*))?$', line)
        if m:
            names = re.findall(r'(?:^|, )(--?[\w-]+)', m.group(1))
            current = names[-1] if names else m.group(1)
            out[current] = m.group(2) or ''
        elif current and re.match(r'^\s{3,}\S', line):
            out[current] = (out[current] + ' ' + line.strip()).strip()
        else:
            current = None
    return out


COMMANDS = ['run', 'map', 'verify', 'check', 'explain', 'create-tables', 'generate']


@pytest.mark.parametrize('cmd', COMMANDS)
def test_every_option_of_every_command_has_help_text(capsys, cmd):
    rc, out, _ = _cli(capsys, cmd, '--help')
    assert rc == 0
    options = _options_with_help(out)
    assert len(options) >= 3, out
    assert not [o for o, h in options.items() if len(h) < 10], options
    assert out.startswith(f'usage: python -m pipeline {cmd} ')


RUN_ONLY = ['--target', '--create-tables', '--tables', '--max-dead-letter-rate', '--session-id', '--batch-size',
            '--sink-shards', '--partitions', '--fetch-size', '--processes', '--app-id-start', '--app-id-end',
            '--app-ids', '--only-failed', '--no-resume', '--shard-count', '--dialect']


def test_each_commands_help_lists_its_own_options_only(capsys):
    helps = {c: set(_options_with_help(_cli(capsys, c, '--help')[1])) for c in COMMANDS}
    assert set(RUN_ONLY) <= helps['run']
    assert not set(RUN_ONLY) & helps['map'], set(RUN_ONLY) & helps['map']
    assert {'--contract', '--input', '--output', '--dead-letter', '--status', '--limit'} <= helps['map']
    assert not {'--create-tables', '--tables', '--max-dead-letter-rate', '--session-id', '--batch-size',
                '--only-failed', '--no-resume'} & helps['verify']
    assert helps['check'] == {'--help', '--contract', '--target', '--dialect'}
    assert not {'--source', '--max-dead-letter-rate'} & helps['create-tables']
    # and every option a command lists is one it accepts (parsing it is not an unknown-option error)
    rc, _, err = _cli(capsys, 'map', '--contract', 'credit_app', '--input', 'nowhere', '--output', 'x.jsonl',
                      '--progress-seconds', '0', '--log-level', 'WARNING', '--work-dir', 'w', '--limit', '1')
    assert 'unrecognized' not in err


def test_version(capsys):
    from importlib.metadata import version
    p = pipeline('--version')
    assert p.returncode == 0 and p.stdout.strip() == f'xml-sql-migrate {version("xml-sql-migrate")}', p.stdout
    assert re.fullmatch(r'xml-sql-migrate \d+\.\d+\.\d+', p.stdout.strip())


# ============================================================================================= 4. --print

@pytest.mark.parametrize('dialect', ['sqlite', 'postgresql', 'mssql'])
def test_create_tables_print_needs_no_target_and_ends_every_statement_with_one_semicolon(capsys, tmp_path,
                                                                                        dialect):
    spec = spec_with_reference_table(tmp_path / 'tables.json')
    rc, out, err = _cli(capsys, 'create-tables', '--print', '--contract', 'credit_app', '--tables', spec,
                        '--dialect', dialect)
    assert rc == 0, err
    statements = [s for s in out.split('\n\n') if s.strip()]
    assert len(statements) >= len(contract_tables()) + 2
    for st in statements:
        assert st.rstrip().endswith(';') and not st.rstrip().endswith(';;'), st[-200:]
    assert 'app_enums' not in out                        # neither the reference table nor FKs to it
    created = {m for st in statements for m in re.findall(r'CREATE TABLE (?:IF NOT EXISTS )?(\S+)', st)}
    assert len(created) == len(contract_tables()) + 2, created
    if dialect == 'sqlite':
        # the statements as printed build a target that run accepts
        db = tmp_path / 'printed.db'
        conn = sqlite3.connect(db)
        conn.executescript(out)
        conn.close()
        assert _cli(capsys, 'check', '--contract', 'credit_app', '--target', f'sqlite:///{db}')[0] == 0


def test_create_tables_print_survives_a_closed_pipe(tmp_path):
    spec = 'credit_app_tables'
    p = subprocess.run(['bash', '-o', 'pipefail', '-c', f'{shlex.quote(sys.executable)} -m pipeline create-tables '
                        f'--print --tables {spec} --contract credit_app --dialect mssql | head -1'],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count('\n') == 1 and p.stderr == '', p.stderr
    # the reader gone before the first byte: still no traceback, exit 0
    proc = subprocess.Popen([sys.executable, '-m', 'pipeline', 'create-tables', '--print', '--tables', spec],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and 'Traceback' not in err and 'BrokenPipe' not in err, err


# ============================================================================================= 7. options that do not apply

@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp('docs')
    write_xml_folder(str(d), 3, seed=5, broken_fraction=0)
    return str(d)


@pytest.mark.parametrize('flags, named', [
    (['--app-id-start', '5'], '--app-id-start'),
    (['--app-id-end', '5'], '--app-id-end'),
    (['--app-ids', 'ids.txt'], '--app-ids'),
    (['--source-table', 't'], '--source-table'),
    (['--source-column', 'c'], '--source-column'),
    (['--partitions', '8'], '--partitions'),            # the default value, given: still an error
    (['--fetch-size', '100'], '--fetch-size'),
    (['--record-element', 'Provenir'], '--record-element'),
])
def test_table_options_on_a_folder_source_are_an_error(tmp_path, capsys, folder, flags, named):
    db = tmp_path / 't.db'
    for cmd in ('run', 'verify'):
        rc, out, err = _cli(capsys, cmd, '--contract', 'credit_app', '--source', folder,
                            '--target', f'sqlite:///{db}', '--progress-seconds' if cmd == 'run' else '--log-level',
                            '0' if cmd == 'run' else 'INFO', *flags)
        assert rc == 2, (cmd, rc, err)
        assert error_lines(err) == [err.strip()] and named in err, err
        assert 'SUMMARY' not in out and not db.exists()


def test_options_that_do_not_apply_to_a_table_or_a_container_file_are_an_error(tmp_path, capsys):
    src = good_source(tmp_path, 3)
    rc, _, err = _cli(capsys, 'run', '--contract', 'credit_app', '--source', src, '--target',
                      f'sqlite:///{tmp_path}/t.db', '--record-element', 'Provenir')
    assert rc == 2 and error_lines(err) == [err.strip()] and '--record-element' in err
    export = tmp_path / 'export.xml'
    export.write_text('<export><Provenir><Request ID="1"/></Provenir></export>')
    rc, _, err = _cli(capsys, 'run', '--contract', 'credit_app', '--source', str(export), '--target',
                      f'sqlite:///{tmp_path}/t.db', '--shard-count', '2', '--shard-index', '0')
    assert rc == 2 and error_lines(err) == [err.strip()] and 'sharded' in err
    # --only-failed reads the failed files of a folder again; one file of many documents is read whole
    assert _cli(capsys, 'create-tables', '--tables', 'credit_app_tables', '--target', f'sqlite:///{tmp_path}/t.db',
                '--contract', 'credit_app')[0] == 0
    rc, out, err = _cli(capsys, 'run', '--contract', 'credit_app', '--source', str(export), '--target',
                        f'sqlite:///{tmp_path}/t.db', '--only-failed')
    assert rc == 2 and len(error_lines(err)) == 1 and 'one file of many documents' in err, err
    assert 'SUMMARY' not in out
    # into a target no run went into yet: the same reason (it was the missing dead_letter table), no file made
    fresh = tmp_path / 'fresh.db'
    rc, out, err = _cli(capsys, 'run', '--contract', 'credit_app', '--source', str(export), '--target',
                        f'sqlite:///{fresh}', '--only-failed')
    assert rc == 2 and len(error_lines(err)) == 1 and 'one file of many documents' in err, err
    assert 'SUMMARY' not in out and not fresh.exists()


@pytest.mark.parametrize('source', ['table', 'folder'])
def test_only_failed_into_a_target_nothing_ran_into_is_a_clear_error(tmp_path, capsys, source):
    src = good_source(tmp_path, 3) if source == 'table' else str(tmp_path)
    if source == 'folder':
        (tmp_path / '1.xml').write_text('<Provenir><Request ID="1"/></Provenir>')
    db = tmp_path / 'fresh.db'
    rc, out, err = _cli(capsys, 'run', '--contract', 'credit_app', '--source', src, '--target', f'sqlite:///{db}',
                        '--only-failed', '--progress-seconds', '0')
    table = 'processing_log' if source == 'table' else 'dead_letter'
    assert rc == 2 and error_lines(err) == [err.strip().splitlines()[-1]], err
    assert f'--only-failed: the target has no {table} table' in err and 'SUMMARY' not in out, err
    assert not db.exists()                                   # no empty database file left behind
    sqlite3.connect(db).close()                              # an empty database: no such table either
    rc, out, err = _cli(capsys, 'run', '--contract', 'credit_app', '--source', src, '--target', f'sqlite:///{db}',
                        '--only-failed', '--progress-seconds', '0')
    assert rc == 2 and f'--only-failed: the target has no {table} table' in err, err


@pytest.mark.slow
def test_processing_log_records_the_app_id_range_of_the_run(tmp_path, capsys):
    """SPEC §5.5: each processing_log row carries the run's app_id_start / app_id_end (NULL when not given, and for
    a bound the int column cannot hold)."""
    src = good_source(tmp_path, 12)
    ids = sorted(r[0] for r in sqlite3.connect(src[len('sqlite:///'):]).execute('SELECT app_id FROM app_xml'))
    db = tmp_path / 't.db'

    def run(*flags):
        rc, out, err = _cli(capsys, 'run', '--contract', 'credit_app', '--source', src, '--target', f'sqlite:///{db}',
                            '--tables', 'credit_app_tables', '--create-tables', '--progress-seconds', '0', *flags)
        assert rc == 0, err
        conn = sqlite3.connect(db)
        try:
            return {a: (s, e) for a, s, e in conn.execute('SELECT app_id, app_id_start, app_id_end FROM processing_log')}
        finally:
            conn.close()

    lo, hi = ids[2], ids[6]
    got = run('--app-id-start', str(lo), '--app-id-end', str(hi))
    assert got == {a: (lo, hi) for a in ids if lo <= a <= hi}
    got = run('--app-id-start', str(ids[7]), '--app-id-end', str(10 ** 12))
    assert {a: got[a] for a in ids[7:]} == {a: (ids[7], None) for a in ids[7:]}
    got = run()                                    # the first two: no range given
    assert got[ids[0]] == got[ids[1]] == (None, None) and got[lo] == (lo, hi) and len(got) == len(ids)


@pytest.mark.slow
def test_a_reused_session_id_still_counts_a_changed_document(tmp_path, capsys):
    """--session-id is a label a user may give every run (a job name); a ledger row with that label is then no
    sign that this very run wrote it, so a document whose content changed since is still counted as changed."""
    src = good_source(tmp_path, 4)
    path = src[len('sqlite:///'):]
    db = tmp_path / 't.db'

    def run():
        rc, out, err = _cli(capsys, 'run', '--contract', 'credit_app', '--source', src, '--target', f'sqlite:///{db}',
                            '--tables', 'credit_app_tables', '--create-tables', '--progress-seconds', '0',
                            '--session-id', 'nightly')
        assert rc == 0, err
        return out
    assert 'changed=0' in run()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE app_xml SET xml = replace(xml, '</Provenir>', '<!-- v2 --></Provenir>') "
                 "WHERE app_id = (SELECT MIN(app_id) FROM app_xml)")
    conn.commit()
    conn.close()
    out = run()
    assert 'written=1 ' in out and 'changed=1 ' in out, out
