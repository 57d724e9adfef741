"""`python -m pipeline verify --contract C --source S --target T [--sample N]`: source-first reconciliation.

A Beam pipeline re-maps the source's documents (or every n-th of them) with the contract and compares the rows
they define with what the target holds for those app_ids, table by table and column by column (CoGroupByKey on
(table, primary key)): rows missing, rows extra, cells that differ (by column), and documents that have rows in
the target but no `success` in processing_log (left by a crash). Prints a table and the first problems, writes
--json, and exits 0 only when source and target agree (4 otherwise). Documents the pipeline itself would
dead-letter (validation, parse, mapping) define no rows: the target must hold none for them. Values are compared
in a normal form per column type (Decimal('1.50') equals 1.5, a datetime equals its text in SQLite, a date column's
midnight equals the date), so only a different value is a difference. Cell values never leave the comparison:
the report names tables, columns, app_ids, primary keys and counts.

(About 500 lines on purpose: the verify pipeline, its value normal forms and its report are one command.)
"""
import datetime as dt
import decimal
import json
import logging
import math
import re
import sys
from typing import Any, Dict, List, Optional

import apache_beam as beam
from apache_beam.transforms.error_handling import CollectingErrorHandler

from pipeline.config import ConfigError, RunConfig
from transforms.sql.dialects import parse_type
from transforms.sql.meta import owner_link

log = logging.getLogger('pipeline')
IDS_PER_QUERY = 200
MAX_LISTED = 50


# ============================================================================================= values

def normalizer(col_type: str):
    """A function giving the comparable form of a value of a column of this type, whatever the driver or the
    mapper returned (SQLite keeps datetimes as text, PostgreSQL gives Decimal and datetime, ...)."""
    try:
        base, args = parse_type(col_type)
    except Exception:
        base, args = col_type.lower(), []
    if base in ('int', 'integer', 'smallint', 'tinyint', 'bigint', 'bit', 'boolean', 'bool'):
        def f(v):
            if v is None or v == '':
                return None
            if isinstance(v, bool):                 # PostgreSQL boolean / a driver's bit as True / False
                return int(v)
            if isinstance(v, str) and v.strip().lower() in ('true', 'false'):
                return int(v.strip().lower() == 'true')
            try:
                return int(decimal.Decimal(str(v)))
            except (decimal.InvalidOperation, ValueError):
                return str(v)
        return f
    if base in ('decimal', 'numeric', 'money'):
        scale = int(args[1]) if len(args) > 1 and args[1].isdigit() else None

        def f(v):
            if v is None or v == '':
                return None
            try:
                d = decimal.Decimal(repr(v) if isinstance(v, float) else str(v))
            except decimal.InvalidOperation:
                return str(v)
            return d.quantize(decimal.Decimal(1).scaleb(-scale), decimal.ROUND_HALF_UP) if scale is not None else \
                d.normalize()
        return f
    if base in ('float', 'real', 'double precision'):
        def f(v):
            if v is None or v == '':
                return None
            try:
                return _Float(float(v))
            except (TypeError, ValueError):
                return str(v)
        return f
    if base in ('date',):
        def f(v):
            d = _as_datetime(v)
            return d.date() if isinstance(d, dt.datetime) else d
        return f
    if base in ('datetime', 'datetime2', 'smalldatetime', 'timestamp', 'datetimeoffset', 'time') or \
            base.startswith('timestamp'):
        digits = int(args[0]) if args and args[0].isdigit() else (3 if base == 'datetime' else 6)
        tolerance = 0.004 if base == 'datetime' else 10 ** -min(digits, 6)

        def f(v):
            d = _as_datetime(v)
            return _Instant(d, tolerance) if isinstance(d, dt.datetime) else d
        return f
    char = base in ('char', 'nchar', 'character')

    def f(v):
        if v is None:
            return None
        s = v.isoformat(sep=' ') if isinstance(v, dt.datetime) else str(v)
        s = s.rstrip() if char else s
        return s if s != '' else None
    return f


def _as_datetime(v):
    if v is None or v == '':
        return None
    if isinstance(v, dt.datetime):
        return v.replace(tzinfo=None)
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day)
    try:
        return dt.datetime.fromisoformat(str(v).strip().replace('T', ' ')).replace(tzinfo=None)
    except ValueError:
        return str(v)


class _Float(float):
    def __eq__(self, other):
        return isinstance(other, float) and math.isclose(self, other, rel_tol=1e-9, abs_tol=1e-9)

    __hash__ = float.__hash__


class _Instant:
    """A datetime compared within the column's precision (PostgreSQL timestamp(3) rounds to milliseconds, SQL
    Server datetime to 1/300 s)."""
    __slots__ = ('d', 'tol')

    def __init__(self, d, tol):
        self.d, self.tol = d, tol

    def __eq__(self, other):
        return isinstance(other, _Instant) and abs((self.d - other.d).total_seconds()) <= max(self.tol, other.tol)

    def __repr__(self):
        return f'_Instant({self.d})'


_NO_LITERAL = object()


def literal_default(text):
    """The value of a column default that is a constant, as the database would fill it in (``0``, ``((0))``,
    ``'N'::character varying``, ``N'x'``, ``false``), or _NO_LITERAL for anything computed (CURRENT_TIMESTAMP,
    getutcdate(), nextval(...))."""
    if text is None:
        return _NO_LITERAL
    d = str(text).strip()
    while d.startswith('(') and d.endswith(')'):
        d = d[1:-1].strip()
    d = re.sub(r'::[a-z ]+(\(\d+(,\s*\d+)?\))?$', '', d, flags=re.I).strip()
    while d.startswith('(') and d.endswith(')'):
        d = d[1:-1].strip()
    if re.fullmatch(r'-?\d+(\.\d+)?', d):
        return d
    m = re.fullmatch(r"N?'((?:[^']|'')*)'", d)
    if m:
        return m.group(1).replace("''", "'")
    if d.lower() in ('true', 'false'):
        return d.lower()
    return _NO_LITERAL


def compare_rows(expected: Optional[Dict], actual: Optional[Dict], meta) -> List[str]:
    """The columns whose values differ between the row the contract defines and the row the target holds. A
    column the mapped row leaves out holds NULL in the target, or its default where the table has one: a
    constant default is compared, a computed one (the current time, an identity) is not."""
    diff = []
    for c in meta.columns:
        if c.computed or c.name.lower() in ('rowstamp',):
            continue
        if c.name in expected:
            e = expected[c.name]
        elif c.identity:
            continue
        elif c.default is not None:
            e = literal_default(c.default)
            if e is _NO_LITERAL:
                continue
        else:
            e = None
        norm = normalizer(c.type)
        if norm(e) != norm(actual.get(c.name)):
            diff.append(c.name)
    return diff


# ============================================================================================= the pipeline

def _key(meta, row):
    return tuple(normalizer(meta.column(k).type)(row.get(k)) for k in meta.primary_key)


class _ExpectedFn(beam.DoFn):
    """MappedDoc -> ((table, key), ('expected', app_id, row)) for every row the contract defines."""

    def __init__(self, metas):
        self.metas = metas

    def process(self, md):
        for table, rows in md.rows.items():
            meta = self.metas.get(table)
            if meta is None:
                continue
            for row in rows:
                r = {meta.column(k).name if meta.column(k) else k: v for k, v in row.items()}
                yield (table, repr(_key(meta, r))), ('expected', md.app_id, r)


class _ActualFn(beam.DoFn):
    """Batches of app_ids -> ((table, key), ('actual', app_id, row)) for every row the target holds for them,
    and ('ledger', app_id, status) for their processing_log rows. One connection per bundle."""

    def __init__(self, target_url, metas, tiers, schema, dialect=None):
        self.target_url, self.metas, self.tiers, self.schema, self.dialect = target_url, metas, tiers, schema, dialect
        self.db = None

    def setup(self):
        from transforms.sql.targets import parse_target
        self.target = parse_target(self.target_url, dialect=self.dialect)
        self.plan = owned_rows_selects(self.target.dialect, self.metas, self.tiers)
        d = self.target.dialect
        self.ledger = d.qualify('processing_log', self.schema if d.supports_schema else None)

    def process(self, app_ids):
        if self.db is None:
            self.db = self.target.retrying(what=f'verify {self.target.display}')
        ids = sorted({a for a in app_ids if isinstance(a, int)})
        if not ids:
            return
        marks = ', '.join('?' * len(ids))
        out = []

        def read(cur):
            for table, sql, owner in self.plan:
                cur.execute(sql.replace('{ids}', marks), ids)
                names = [c[0] for c in cur.description]
                for r in cur.fetchall():
                    row = dict(zip(names, r))
                    out.append(((table, repr(_key(self.metas[table], row))), ('actual', row.pop(owner), row)))
            cur.execute(f'SELECT app_id, status FROM {self.ledger} WHERE app_id IN ({marks})', ids)
            out.extend(('ledger', (int(a), s)) for a, s in cur.fetchall())
        self.db.run(read, commit=False)
        for item in out:
            if item[0] == 'ledger':
                yield beam.pvalue.TaggedOutput('ledger', item[1])
            else:
                yield item

    def finish_bundle(self):
        if self.db is not None:
            self.db.close()
            self.db = None


def owned_rows_selects(d, metas, tiers):
    """(table, SELECT of the rows of a list of app_ids with {ids} for the parameters, the column holding the
    app_id in the result) for every written table; a table without app_id is reached through its FK."""
    out = []
    for tier in tiers:
        for t in tier:
            m, link = metas[t], owner_link(metas, t)
            q = d.qualify(m.name, m.schema)
            cols = ', '.join(f'c.{d.quote(c.name)}' for c in m.columns if not c.computed)
            if link is None:
                continue
            if link.parent is None:
                out.append((t, f'SELECT {cols}, c.{d.quote("app_id")} AS "_owner" FROM {q} c WHERE '
                               f'c.{d.quote("app_id")} IN ({{ids}})', '_owner'))
            else:
                pq = d.qualify(link.parent.name, link.parent.schema)
                out.append((t, f'SELECT {cols}, p.{d.quote("app_id")} AS "_owner" FROM {q} c JOIN {pq} p ON '
                               f'c.{d.quote(link.column)} = p.{d.quote(link.parent_column)} WHERE '
                               f'p.{d.quote("app_id")} IN ({{ids}})', '_owner'))
    return out


def _key_of(meta, row):
    """The primary key of a row as {column: value} for the report (ids and codes, the key the database holds)."""
    out = {}
    for k in meta.primary_key:
        c = meta.column(k)
        v = row.get(c.name if c is not None else k)
        out[c.name if c is not None else k] = v if v is None or isinstance(v, (int, str)) else str(v)
    return out


def _compare(kv, metas):
    """One (table, primary key) with the rows the source defines and the rows the target holds for it, paired by
    the document (app_id) that owns them: ('match' | 'differs' | 'missing' | 'extra', table, app_id, key,
    differing columns)."""
    (table, _), items = kv
    meta = metas[table]
    exp = {}
    for kind, app_id, row in items:
        if kind == 'expected':
            exp.setdefault(app_id, row)
    act = [(app_id, row) for kind, app_id, row in items if kind == 'actual']
    held = set()
    for app_id, row in act:
        if app_id in exp and app_id not in held:
            held.add(app_id)
            cols = compare_rows(exp[app_id], row, meta)
            yield ('differs' if cols else 'match', table, app_id, _key_of(meta, row), cols)
        else:                       # no document of the source maps to it (or a second copy): extra
            yield ('extra', table, app_id, _key_of(meta, row), [])
    for app_id, row in exp.items():
        if app_id not in held:
            yield ('missing', table, app_id, _key_of(meta, row), [])


def _new_table():
    return {'match': 0, 'missing': 0, 'extra': 0, 'rows_differ': 0, 'differs': {}, 'examples': []}


class _Tally(beam.CombineFn):
    """Everything compared, as counts (per table, per column) and the first MAX_LISTED problems per table."""

    def create_accumulator(self):
        return {'tables': {}, 'apps': {}, 'ledger': {}, 'documents': 0, 'not_mapped': 0}

    def add_input(self, acc, item):
        if item[0] == 'ledger':
            acc['ledger'][item[1]] = item[2]
            return acc
        if item[0] == 'has_rows':
            acc['apps'][item[1]] = True
            return acc
        if item[0] == 'document':
            acc['documents'] += 1
            acc['not_mapped'] += 0 if item[1] else 1
            return acc
        kind, table, app_id, key, cols = item
        t = acc['tables'].setdefault(table, _new_table())
        if kind == 'differs':
            t['rows_differ'] += 1
            for col in cols:
                t['differs'][col] = t['differs'].get(col, 0) + 1
        else:
            t[kind] += 1
        if kind != 'match' and len(t['examples']) < MAX_LISTED:
            t['examples'].append({'kind': kind, 'app_id': app_id, 'key': key, 'columns': list(cols)})
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            out['ledger'].update(a['ledger'])
            out['apps'].update(a['apps'])
            out['documents'] += a['documents']
            out['not_mapped'] += a['not_mapped']
            for table, t in a['tables'].items():
                o = out['tables'].setdefault(table, _new_table())
                for k in ('match', 'missing', 'extra', 'rows_differ'):
                    o[k] += t[k]
                for c, n in t['differs'].items():
                    o['differs'][c] = o['differs'].get(c, 0) + n
                o['examples'] = (o['examples'] + t['examples'])[:MAX_LISTED]
        return out

    def extract_output(self, acc):
        return acc


def build(p, cfg, contract, source, sink):
    from pipeline.graph import PrepareDocuments, ReadDocuments
    metas = sink.metas
    errors = CollectingErrorHandler()
    with errors:
        docs, _, _ = p | 'ReadDocuments' >> ReadDocuments(source)
        mapped = docs | 'PrepareDocuments' >> PrepareDocuments(contract, cfg.limits, cfg.parse_mode, errors,
                                                               dedupe_source=source)
    not_mapped = errors.output()
    failed_ids = not_mapped | 'FailedIds' >> beam.FlatMap(lambda dl: [dl.app_id] if dl.app_id else [])
    ids = (mapped | 'Ids' >> beam.Map(lambda md: md.app_id), failed_ids) | 'AllIds' >> beam.Flatten()
    expected = mapped | 'ExpectedRows' >> beam.ParDo(_ExpectedFn(metas))
    got = (ids | 'BatchIds' >> beam.BatchElements(min_batch_size=1, max_batch_size=IDS_PER_QUERY)
           | 'TargetRows' >> beam.ParDo(_ActualFn(cfg.target, metas, sink.tiers, sink.schema, sink.dialect))
           .with_outputs('ledger', main='rows'))
    compared = ((expected, got.rows) | 'Both' >> beam.Flatten() | 'ByKey' >> beam.GroupByKey()
                | 'Compare' >> beam.FlatMap(_compare, metas))
    has_rows = got.rows | 'AppsWithRows' >> beam.Map(lambda kv: ('has_rows', kv[1][1]))
    ledger = got.ledger | 'LedgerRows' >> beam.Map(lambda a: ('ledger', a[0], a[1]))
    counted = ((mapped | 'CountMapped' >> beam.Map(lambda md: ('document', True)),
                not_mapped | 'CountNotMapped' >> beam.Map(lambda dl: ('document', False)))
               | 'Documents' >> beam.Flatten())
    return ((compared, has_rows, ledger, counted) | 'Everything' >> beam.Flatten()
            | 'Tally' >> beam.CombineGlobally(_Tally()))


def _sampled(cfg, contract, source):
    """Every n-th document of the source for --sample N (table sources: chosen by app_id before any XML is
    read)."""
    n = cfg.sample
    if not n or source.expected <= n:
        return source
    from transforms.io import make_source
    step = source.expected / n
    if source.kind == 'table':
        from transforms.sql.targets import parse_target
        from transforms.io.tables import _Query
        t = parse_target(source.spec.url, dialect=source.spec.dialect)
        q = _Query(source.spec, t.dialect, cfg.read)
        conn = t.connect()
        try:
            cur = conn.cursor()
            cur.execute(f'SELECT {q.id} FROM {q.t} WHERE ' + ' AND '.join(q.where) + f' ORDER BY {q.id}', q.params)
            ids = [int(r[0]) for r in cur.fetchall()]
        finally:
            conn.close()
        pick = tuple(ids[int(i * step)] for i in range(n))
        return make_source(cfg.source, contract, source_table=cfg.source_table, source_column=cfg.source_column,
                           opts=cfg.read._replace(resume=False, app_ids=pick), dialect=cfg.dialect)
    if source.kind == 'files':
        from transforms.io.files import FileSource
        paths = [source.paths[int(i * step)] for i in range(n)]
        return FileSource(source.pattern, _paths=paths, _root=source.root)
    return source


def run(cfg: RunConfig) -> int:
    from pipeline.orchestrate import run_pipeline
    from transforms.io.sources import SourceError
    from transforms.io import make_source
    from transforms.sql.plan import prepare_sink
    contract = cfg.contract()
    try:
        source = make_source(cfg.source, contract, source_table=cfg.source_table, source_column=cfg.source_column,
                             opts=cfg.read._replace(resume=False), dialect=cfg.dialect,
                             record_element=cfg.record_element)
    except SourceError as e:
        raise ConfigError(str(e)) from None
    source = _sampled(cfg, contract, source)
    sink = prepare_sink(cfg.target, contract, dialect=cfg.dialect)
    import tempfile
    from apache_beam.io.filesystems import FileSystems
    from pipeline.summary import read_lines
    work = cfg.work_dir or tempfile.mkdtemp(prefix='xmlsql-verify-')
    out = FileSystems.join(work, 'verify.json')
    run_pipeline(lambda p: (build(p, cfg, contract, source, sink)
                            | 'AsJson' >> beam.Map(lambda r: json.dumps(r, default=str))
                            | 'Write' >> beam.io.WriteToText(out, num_shards=1, shard_name_template='')),
                 cfg.beam_args)
    lines = list(read_lines([out]))
    if cfg.work_dir is None:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    if not lines:
        raise ConfigError('verify: the comparison produced no result')
    report = _report(json.loads(lines[-1]), source)
    report['sample'] = cfg.sample
    _print(report)
    if cfg.verify_json:
        with open(cfg.verify_json, 'w', encoding='utf-8') as f:
            json.dump(report, f, indent=2, sort_keys=True, default=str)
    if not report['agree']:
        print(f"error: the target differs from the source: {report['problems']} problem(s) (see above)",
              file=sys.stderr)
        return 4
    return 0


def _report(r, source) -> Dict[str, Any]:
    tables = r['tables']
    ledger = {int(a): st for a, st in r['ledger'].items()}          # (JSON turned the app_ids into text)
    unfinished = sorted(int(a) for a in r['apps'] if ledger.get(int(a)) != 'success')
    problems = sum(t['missing'] + t['extra'] + sum(t['differs'].values()) for t in tables.values()) + len(unfinished)
    return {'documents': r['documents'], 'documents_not_mapped': r['not_mapped'], 'tables': tables,
            'agree': problems == 0, 'problems': problems,
            'documents_with_rows_but_no_success': unfinished[:MAX_LISTED],
            'documents_with_rows_but_no_success_count': len(unfinished)}


def _key_text(key):
    return ', '.join(f'{k}={v}' for k, v in key.items())


def _print(report, out=None, listed=20):
    out = out or sys.stdout

    def p(line=''):
        print(line, file=out)
    p(f"verify: {report['documents']} documents compared ({report['documents_not_mapped']} of them not mapped: "
      'dead-lettered by validation, parse or mapping, so they define no rows)')
    p(f"{'table':32} {'rows ok':>9} {'missing':>9} {'extra':>9} {'rows differ':>12} {'cells differ':>13}")
    for table, t in sorted(report['tables'].items()):
        p(f"{table:32} {t['match']:9} {t['missing']:9} {t['extra']:9} {t['rows_differ']:12} "
          f"{sum(t['differs'].values()):13}")
        for col, n in sorted(t['differs'].items(), key=lambda kv: (-kv[1], kv[0])):
            p(f"  {table}.{col}: {n} cells differ")
    examples = [(table, e) for table, t in sorted(report['tables'].items()) for e in t['examples']]
    if examples:
        p(f'first problems (of each table at most {MAX_LISTED} in --json):')
        for table, e in examples[:listed]:
            what = f"{table}.{','.join(e['columns'])}" if e['columns'] else table
            p(f"  {e['kind']:8} {what}  app_id {e['app_id']}  key {_key_text(e['key'])}")
        if len(examples) > listed:
            p(f'  ... {len(examples) - listed} more listed in --json')
    n = report['documents_with_rows_but_no_success_count']
    if n:
        p(f"{n} documents have rows in the target but no success in processing_log (a run stopped between "
          f"their rows and their ledger row, or their ledger row says failed): app_id {', '.join(map(str, report['documents_with_rows_but_no_success'][:listed]))}"
          + (' ...' if n > listed else ''))
    p('VERIFY ' + ('agree' if report['agree'] else f"differ problems={report['problems']}"))
