"""Shared by the tests: the SUMMARY line, the sample contract's tables, and the Beam test pipeline."""
import json
import os
import re
import shlex

import pytest

# The one line every run ends with (pipeline/summary.py: Summary.line).
SUMMARY = re.compile(r'^SUMMARY read=(\d+) written=(\d+) dead_lettered=(\d+) rows=(\d+) docs_per_min=([\d.]+) '
                     r'skipped=(\d+) changed=(\d+) warnings=(\d+)$', re.M)

# The tables contracts/samples/credit_app.json writes.
SAMPLE_TABLES = ['app_base', 'app_contact_base', 'app_pricing_cc', 'app_contact_address', 'app_contact_employment',
                 'app_historical_lookup', 'scores']


def changed_count(out):
    """changed= of a run's SUMMARY line."""
    m = SUMMARY.search(out)
    assert m, f'no SUMMARY line in output: {out[-2000:]}'
    return int(m.group(7))


def summary_counts(out):
    """(read, written, dead_lettered, rows) from a run's stdout; the line must be there and must balance."""
    m = SUMMARY.search(out)
    assert m, f'no SUMMARY line in output: {out[-2000:]}'
    read, written, dead, rows = map(int, m.groups()[:4])
    assert read == written + dead, m.group(0)
    return read, written, dead, rows


def sample_table_counts(db_path):
    """Rows per sample-contract table in a SQLite target."""
    import sqlite3
    conn = sqlite3.connect(db_path)
    try:
        return {t: conn.execute(f'SELECT COUNT(*) FROM {t}').fetchone()[0] for t in SAMPLE_TABLES}
    finally:
        conn.close()


def sample_table_contents(db_path):
    """Every row of the sample-contract tables of a SQLite target (sorted, without generated columns) and the
    ledger's (app_id, status, stage): two targets that compare equal hold the same migration."""
    import sqlite3
    conn = sqlite3.connect(db_path)
    try:
        out = {}
        for t in SAMPLE_TABLES:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info({t})') if r[1] not in ('rowstamp', 'id',
                                                                                            'created_at')]
            out[t] = sorted(map(repr, conn.execute(f'SELECT {", ".join(cols)} FROM {t}')))
        out['ledger'] = sorted(conn.execute('SELECT app_id, status, stage FROM processing_log'))
        out['dead_letter'] = sorted(set(conn.execute('SELECT source, app_id, stage FROM dead_letter')))
        return out
    finally:
        conn.close()


def beam_test_pipeline():
    """A TestPipeline on the runner the options name, resolved as the product resolves it (pipeline.orchestrate's
    make_runner: DirectRunner runs as Beam's FnApiRunner in this process). The options come from
    $XMLSQL_TEST_BEAM_OPTIONS (e.g. `--runner=PortableRunner --job_endpoint=...`); default: the DirectRunner."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_pipeline import TestPipeline
    from pipeline.orchestrate import make_runner
    opts = PipelineOptions(shlex.split(os.environ.get('XMLSQL_TEST_BEAM_OPTIONS', '')))
    return TestPipeline(runner=make_runner(opts), options=opts)


SAMPLE_SPEC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'contracts', 'samples',
                           'credit_app_tables.json')


def time_default_columns():
    """Columns the database fills with the current time: they differ between any two runs."""
    spec = json.load(open(SAMPLE_SPEC))['tables']
    return {(t, c['name']) for t, d in spec.items() for c in d['columns']
            if str(c.get('default') or '').upper().strip('()') in ('GETUTCDATE', 'GETDATE', 'SYSUTCDATETIME')}


def comparable(v):
    """One spelling per value across drivers (sqlite3 keeps what was bound; pyodbc gives typed values)."""
    if v is None:
        return None
    if hasattr(v, 'isoformat'):
        return v.isoformat(sep=' ') if hasattr(v, 'hour') else v.isoformat()
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    s = str(v)
    return s[:-3] if re.fullmatch(r'-?\d+\.00', s) else s


def migration_contents(target):
    """Every row of the sample contract's tables (time-default columns left out) and processing_log's
    (app_id, status, stage, content_hash) of a target (`connect()`, `t(table)`): two targets that compare equal
    hold the same migration."""
    skip = time_default_columns()
    out = {}
    conn = target.connect()
    try:
        for table in SAMPLE_TABLES:
            cur = conn.execute(f'SELECT * FROM {target.t(table)}')
            names = [d[0] for d in cur.description]
            keep = [i for i, n in enumerate(names) if (table, n) not in skip]
            out[table] = sorted(tuple(comparable(r[i]) for i in keep) for r in cur.fetchall())
        out['processing_log'] = sorted(tuple(map(comparable, r)) for r in conn.execute(
            f'SELECT app_id, status, stage, content_hash FROM {target.t("processing_log")}').fetchall())
    finally:
        conn.close()
    return out


def targets_fixture(cls):
    """A `targets` fixture: targets(kind, name) makes a cls(kind, tmp_path, name); each is dropped afterwards."""
    @pytest.fixture
    def targets(tmp_path):
        made = []

        def make(kind, name):
            made.append(cls(kind, tmp_path, name))
            return made[-1]
        yield make
        for t in made:
            t.drop()
    return targets
