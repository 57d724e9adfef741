"""Configuration errors: one clear `error:` line, exit status 2, before any data moves, never a password.

Each case is a real misconfiguration given to the real CLI (`pipeline.cli.main`); the message is asserted to name
what is wrong. "No data moved" is checked on the target: no document row, no ledger row, no dead letter.
"""
import copy
import json
import os
import sqlite3

import pytest

from pipeline.cli import main as cli
from contracts.samples.generate import write_xml_folder

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'contracts', 'samples',
                      'credit_app.json')
SECRET = 'SECRET123'


def sample_contract():
    with open(SAMPLE, encoding='utf-8') as f:
        return json.load(f)


@pytest.fixture(scope='module')
def docs(tmp_path_factory):
    d = tmp_path_factory.mktemp('cfg_docs')
    write_xml_folder(str(d), 3, seed=1, broken_fraction=0.0)
    return str(d)


def write_contract(tmp_path, name, content):
    p = tmp_path / name
    p.write_text(content if isinstance(content, str) else json.dumps(content), encoding='utf-8')
    return str(p)


def run_error(capsys, argv):
    """Run the CLI; return (exit status, the one `error:` line). Fails unless there is exactly one such line and
    it is a single line."""
    rc = cli(argv)
    cap = capsys.readouterr()
    errors = [line for line in cap.err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1, f'expected one error line, got: {cap.err[-2000:]}'
    i = cap.err.splitlines().index(errors[0])
    following = cap.err.splitlines()[i + 1:i + 2]
    assert not following or not following[0].startswith((' ', '\t')), f'the error continues: {cap.err[-2000:]}'
    assert 'Traceback' not in cap.err and 'SUMMARY' not in cap.out
    return rc, errors[0], cap.out + cap.err


def assert_no_data_moved(db):
    if not os.path.exists(db):
        return
    conn = sqlite3.connect(db)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for t in tables & {'app_base', 'processing_log', 'dead_letter', 'scores'}:
            assert conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] == 0, t
    finally:
        conn.close()


def run_argv(contract, docs, db, *extra):
    return ['run', '--contract', contract, '--source', docs, '--target', f'sqlite:///{db}',
            '--tables', 'credit_app_tables', '--create-tables', '--progress-seconds', '0', *extra]


def _first_index(contract, pred):
    return next(i for i, m in enumerate(contract['mappings']) if pred(m))


def bad_contracts():
    c = sample_contract()
    out = []
    out.append(('not_json', '{"mappings": [ oops', 'not valid JSON'))
    d = copy.deepcopy(c)
    del d['mappings']
    out.append(('missing_key', d, "missing required top-level key 'mappings'"))
    d = copy.deepcopy(c)
    i = _first_index(d, lambda m: m.get('target_column') and m['target_column'] != 'app_id')
    d['mappings'][i]['mapping_type'] = ['frobnicate']
    out.append(('unknown_mapping_type', d, f"mappings[{i}] ({d['mappings'][i]['target_table']}."
                                            f"{d['mappings'][i]['target_column']}): key 'mapping_type': unknown "
                                            "mapping_type 'frobnicate'"))
    d = copy.deepcopy(c)
    i = _first_index(d, lambda m: m.get('expression'))
    d['mappings'][i]['expression'] = 'CASE WHEN (( THEN'
    out.append(('broken_expression', d, f"mappings[{i}] ({d['mappings'][i]['target_table']}."
                                         f"{d['mappings'][i]['target_column']}): key 'expression'"))
    return out


@pytest.mark.parametrize('name, content, message', bad_contracts(), ids=[c[0] for c in bad_contracts()])
def test_bad_contract_is_one_line_exit_2(tmp_path, capsys, docs, name, content, message, ):
    path = write_contract(tmp_path, f'{name}.json', content)
    db = str(tmp_path / 't.db')
    rc, line, _ = run_error(capsys, run_argv(path, docs, db))
    assert rc == 2
    assert line.startswith('error: bad contract') and message in line, line
    assert not os.path.exists(db)      # refused before the target is even touched


def test_contract_naming_a_column_the_target_lacks(tmp_path, capsys, docs):
    d = sample_contract()
    i = _first_index(d, lambda m: m['target_table'] == 'app_base' and m.get('target_column') not in (None, 'app_id')
                     and not m.get('mapping_type') and not m.get('enum_name'))
    d['mappings'][i]['target_column'] = 'no_such_column'
    path = write_contract(tmp_path, 'bad_column.json', d)
    db = str(tmp_path / 't.db')
    rc, line, _ = run_error(capsys, run_argv(path, docs, db))
    assert rc == 2
    assert 'app_base.no_such_column' in line and 'not found in the target' in line, line
    assert_no_data_moved(db)


@pytest.mark.parametrize('flag', ['--target', '--source'])
def test_unreachable_database_names_no_password(tmp_path, capsys, docs, flag):
    url = 'odbc:Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=1;Database=x;Uid=u;Pwd=' + SECRET
    db = str(tmp_path / 't.db')
    argv = ['run', '--contract', 'credit_app', '--progress-seconds', '0']
    if flag == '--target':
        argv += ['--source', docs, '--target', url]
    else:
        argv += ['--source', url, '--target', f'sqlite:///{db}', '--tables', 'credit_app_tables', '--create-tables']
    rc, line, everything = run_error(capsys, argv)
    assert rc == 2
    assert SECRET not in everything
    assert 'Pwd=***' in line or 'password' not in line.lower()
    if flag == '--target':
        assert 'cannot connect' in line and ('unreachable' in line or 'driver not found' in line), line
    else:
        assert 'cannot open the source' in line or 'cannot connect' in line, line
    assert_no_data_moved(db)


def test_password_from_an_unset_environment_variable(tmp_path, capsys, docs, monkeypatch):
    monkeypatch.delenv('XMLSQL_NO_SUCH_PWD', raising=False)
    url = 'odbc:Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=1;Database=x;Uid=u;Pwd=${XMLSQL_NO_SUCH_PWD}'
    rc, line, _ = run_error(capsys, ['run', '--contract', 'credit_app', '--source', docs, '--target', url])
    assert rc == 2 and 'XMLSQL_NO_SUCH_PWD is not set' in line


def test_missing_source_table(tmp_path, capsys):
    src = str(tmp_path / 'src.db')
    conn = sqlite3.connect(src)
    conn.execute('CREATE TABLE something_else (x INTEGER)')
    conn.close()
    db = str(tmp_path / 't.db')
    rc, line, _ = run_error(capsys, ['run', '--contract', 'credit_app', '--source', f'sqlite:///{src}',
                                     '--target', f'sqlite:///{db}', '--tables', 'credit_app_tables',
                                     '--create-tables', '--progress-seconds', '0'])
    assert rc == 2
    assert "source table 'app_xml' not found" in line, line
    assert_no_data_moved(db)


@pytest.mark.parametrize('flags, message', [
    (['--max-elements', '0'], '--max-elements'),
    (['--max-attributes', '-1'], '--max-attributes'),
    (['--max-parse-seconds', '-2'], '--max-parse-seconds'),
    (['--max-depth', '1000'], '--max-depth must be between 2 and 256'),
    (['--max-doc-mb', '0'], '--max-doc-mb'),
])
def test_bad_limits_are_configuration_errors(tmp_path, capsys, docs, flags, message):
    out = str(tmp_path / 'rows.jsonl')
    rc, line, _ = run_error(capsys, ['map', '--contract', 'credit_app', '--input', docs, '--output', out] + flags)
    assert rc == 2 and message in line, line
    assert not os.path.exists(out)
