"""Throughput benchmark: the pipeline end to end against the limits of the same machine, on the same corpus, in one
run, with every ratio the performance goals are stated in (docs/benchmarks.md).

    python bench/throughput.py --docs 5000 --json out.json [--corpus cc|generated] [--target sqlite|postgresql]
                               [--workers 1,2] [--memory-factor 4]

For each worker count W of --workers (default 1 and 2), side by side in this one run:
1. end to end: `python -m pipeline run` as a subprocess on DirectRunner (Beam's FnApiRunner; with W > 1
   the pipeline's `--processes W` shard processes, or with `--mode multi_processing` Beam's
   `--direct_running_mode=multi_processing --direct_num_workers=W`) from a SQLite source table into a fresh
   target; docs/min over the subprocess's wall time (interpreter start, planning and all), rows/s, and the peak
   RSS of the whole process tree (psutil, sampled every 50 ms).
2. the parse limit: every document through the hardened lxml parser (`transforms.parse.hardened_parser()`, a
   full parse of the bytes; decoding/encoding and reading are not timed) in W processes (multiprocessing.Pool(W));
   also the partial-parse limit (the head tree alone, without the well-formedness scan of the rest).
3. the same transforms without Beam: validate -> parse -> map -> the sink's Writer (upsert executemany, one
   transaction per table batch) + processing_log, in one straight loop per process, W processes, into a fresh
   target. Its rate against (1) is Beam's overhead.
4. PostgreSQL targets only: the driver's ceiling, the same documents' rows written with plain batched INSERT
   executemany through the same driver (mapping not timed).
Then: scaling (the largest W against W=1) and memory (an end-to-end run on a corpus --memory-factor times larger,
its peak RSS against the N run's). With --rounds K, steps 1-4 run K times in turn and every rate and ratio is the
median of its K per-round values (each ratio taken within its round), printed with its range.

Prints a table and writes OUT.json. The corpus is built at run time (see bench/corpus.py); the CC corpus is read
from ../shared/seed-corpus/cc (skipped with a message when absent). PostgreSQL: `--pg-url odbc:...` or
$XMLSQL_BENCH_PG / $XMLSQL_TEST_PG (`bash scripts/start_postgres.sh` prints one); each run creates fresh databases
and drops them afterwards. Absolute figures drift by 2x from day to day on shared machines: compare ratios
measured in one run.
"""
import argparse
import collections
import json
import multiprocessing
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import corpus as corpus_mod  # noqa: E402

BASELINE_DOCS_PER_MIN = 2000.0          # the existing system: ~2,000 applications/min on a 4-core laptop
BASELINE_MAPPER_ONE_CORE = 950.0        # its mapper alone, one core, this machine
SKIP_EXIT = 0                           # a missing seed corpus is a skip, not a failure


# ============================================================================================== machine

def machine_info():
    info = {'nproc': os.cpu_count(), 'cores_usable': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
            else os.cpu_count(), 'python': platform.python_version(), 'platform': platform.platform()}
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    info['cpu_model'] = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil
        info['ram_gb'] = round(psutil.virtual_memory().total / 2 ** 30, 1)
        info['load_avg_at_start'] = [round(x, 2) for x in os.getloadavg()]
    except Exception:
        pass
    try:
        import apache_beam
        import lxml.etree
        info['apache_beam'] = apache_beam.__version__
        info['lxml'] = '.'.join(map(str, lxml.etree.LXML_VERSION))
        info['libxml2'] = '.'.join(map(str, lxml.etree.LIBXML_VERSION))
    except Exception:
        pass
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout.split('\n')
        info['git'] = {'head': head, 'modified': sorted(l[3:] for l in dirty if l.strip())}
    except OSError:
        pass
    return info


# ============================================================================================== targets

class Targets:
    """Fresh targets per bench run: SQLite files in the work dir, or fresh PostgreSQL databases (dropped after)."""

    def __init__(self, kind, workdir, pg_url=None):
        self.kind, self.workdir, self.pg_url = kind, workdir, pg_url
        self.created = []
        self.tag = f'xmlsql_bench_{os.getpid()}_{int(time.time())}'

    def fresh(self, label):
        if self.kind == 'sqlite':
            path = os.path.join(self.workdir, f'target_{label}.db')
            for suffix in ('', '-wal', '-shm'):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
            return f'sqlite:///{path}'
        import pyodbc
        name = f'{self.tag}_{label}'.lower()
        conn = pyodbc.connect(self.pg_url[len('odbc:'):], autocommit=True)
        try:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        self.created.append(name)
        return _with_database(self.pg_url, name)

    def cleanup(self):
        if self.kind != 'postgresql' or not self.created:
            return
        import pyodbc
        conn = pyodbc.connect(self.pg_url[len('odbc:'):], autocommit=True)
        try:
            for name in self.created:
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except Exception as e:
                    print(f'warning: could not drop database {name}: {type(e).__name__}', file=sys.stderr)
        finally:
            conn.close()


def _with_database(odbc_url, name):
    if re.search(r'(?i)(^|;)\s*database\s*=', odbc_url):
        return re.sub(r'(?i)((?:^|;)\s*database\s*=)[^;]*', lambda m: m.group(1) + name, odbc_url, count=1)
    return odbc_url.rstrip(';') + f';Database={name}'


def _pg_url(args):
    url = args.pg_url or os.environ.get('XMLSQL_BENCH_PG') or os.environ.get('XMLSQL_TEST_PG')
    if not url:
        sys.exit('postgresql target: give --pg-url odbc:... or set XMLSQL_BENCH_PG (bash scripts/start_postgres.sh '
                 'prints one)')
    return url


def target_schema_of(url, contract):
    """The schema the pipeline writes to on a server target: the contract's target_schema (SQLite has none)."""
    if url.startswith('sqlite:'):
        return None
    with open(contract, encoding='utf-8') as f:
        return json.load(f).get('target_schema') or None


def create_tables(tables, url, log, schema=None):
    cmd = [sys.executable, '-m', 'pipeline', 'create-tables', '--tables', tables, '--target', url]
    if schema:
        cmd += ['--schema', schema]
    r = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError(f'create-tables failed ({r.returncode}): {r.stderr.strip()[-800:]}')
    log.write(r.stderr)


def count_rows(url, tables, schema=None):
    if url.startswith('sqlite:///'):
        conn = sqlite3.connect(url[len('sqlite:///'):])
    else:
        import pyodbc
        conn = pyodbc.connect(url[len('odbc:'):])
    try:
        out = {}
        for t in tables:
            try:
                q = f'SELECT COUNT(*) FROM {schema + "." if schema else ""}{t}'
                out[t] = int(conn.execute(q).fetchone()[0])
            except Exception:
                out[t] = None
        return out
    finally:
        conn.close()


# ============================================================================================== RSS sampling

class TreeSampler(threading.Thread):
    """Peak RSS (sum over a process and all its descendants), sampled every `every` seconds."""

    def __init__(self, pid, every=0.05):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = 0
        self.peak_procs = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self):
        import psutil
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._halt.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                break
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.samples += 1
            if total > self.peak:
                self.peak, self.peak_procs = total, len(procs)
            self._halt.wait(self.every)

    def stop(self):
        self._halt.set()
        self.join(timeout=2)


# ============================================================================================== 1. end to end

def run_pipeline(c, target_url, args, workdir, label, workers):
    summary = os.path.join(workdir, f'summary_{label}.json')
    cmd = [sys.executable, '-m', 'pipeline', 'run', '--contract', c.contract, '--source', c.source_url,
           '--source-table', c.source_table, '--source-column', c.source_column, '--target', target_url,
           '--summary-json', summary, '--progress-seconds', '0', '--log-level', 'WARNING',
           '--parse-mode', args.parse_mode]
    if args.batch_size:
        cmd += ['--batch-size', str(args.batch_size)]
    if args.chunk_docs is not None:
        cmd += ['--chunk-docs', str(args.chunk_docs)]
    if args.fetch_size:
        cmd += ['--fetch-size', str(args.fetch_size)]
    if args.partitions:
        cmd += ['--partitions', str(args.partitions)]
    if workers > 1 and args.mode == 'processes':
        cmd += ['--processes', str(workers)]
    elif workers > 1:
        cmd += ['--direct_running_mode=multi_processing', f'--direct_num_workers={workers}']
    cmd += args.pipeline_arg or []
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    with open(os.path.join(workdir, f'pipeline_{label}.log'), 'w') as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        rc = proc.wait()
        wall = time.monotonic() - t0
        sampler.stop()
    if rc != 0:
        with open(os.path.join(workdir, f'pipeline_{label}.log')) as f:
            tail = f.read()[-2000:]
        raise RuntimeError(f'pipeline run failed with exit status {rc}:\n{tail}')
    with open(summary) as f:
        s = json.load(f)
    return {'wall_s': round(wall, 3), 'pipeline_elapsed_s': s.get('elapsed_s'), 'read': s.get('read'),
            'written': s.get('written'), 'dead_lettered': s.get('dead_lettered'), 'rows': s.get('rows'),
            'invariant_holds': s.get('invariant_holds'), 'chunks': s.get('chunks'),
            'dead_lettered_by_stage': s.get('dead_lettered_by_stage'),
            'docs_per_min': round(s.get('read', 0) / wall * 60, 1),
            'docs_per_min_inside_pipeline': s.get('docs_per_min'),
            'rows_per_s': round(s.get('rows', 0) / wall, 1),
            'peak_rss_mb': round(sampler.peak / 2 ** 20, 1), 'peak_rss_processes': sampler.peak_procs,
            'rss_samples': sampler.samples, 'command': _display_cmd(cmd)}


def _display_cmd(cmd):
    out = []
    for a in cmd:
        a = re.sub(r'(?i)(pwd|password)=[^;]*', r'\1=***', a)
        out.append(a if re.fullmatch(r'[\w./:=,+-]+', a) else "'" + a.replace("'", "'\\''") + "'")
    return ' '.join(['python' if out[0] == sys.executable else out[0]] + out[1:])


# ============================================================================================== shared worker code

def _ranges(source_db, table, n_per_task):
    """app_id ranges [lo, hi] of about n_per_task rows each (keyset over the source table)."""
    conn = sqlite3.connect(source_db)
    try:
        ids = [r[0] for r in conn.execute(f'SELECT app_id FROM "{table}" ORDER BY app_id')]
    finally:
        conn.close()
    return [(ids[i], ids[min(i + n_per_task, len(ids)) - 1]) for i in range(0, len(ids), n_per_task)]


_W = {}     # per worker process state


def _read_range(lo, hi):
    conn = _W.get('src')
    if conn is None:
        conn = _W['src'] = sqlite3.connect(_W['source_db'])
    return conn.execute(f'SELECT app_id, "{_W["column"]}" FROM "{_W["table"]}" WHERE app_id BETWEEN ? AND ? '
                        f'ORDER BY app_id', (lo, hi)).fetchall()


def _init_worker(state):
    _W.clear()
    _W.update(state)


def _as_bytes(x):
    if x is None:
        return b''
    return x.encode('utf-8') if isinstance(x, str) else bytes(x)


# ============================================================================================== 2. parse limits

def _parse_task(rng):
    from lxml import etree
    from transforms.parse import _partial_parse, hardened_parser
    datas = [_as_bytes(x) for _, x in _read_range(*rng)]
    mode, stop = _W['mode'], _W.get('stop')
    ok = bad = 0
    t0 = time.perf_counter()
    if mode == 'full':
        parser = hardened_parser()
        for d in datas:
            try:
                etree.fromstring(d, parser)
                ok += 1
            except Exception:
                bad += 1
    else:
        for d in datas:
            try:
                _partial_parse(d, stop)
                ok += 1
            except Exception:
                bad += 1
    return os.getpid(), time.perf_counter() - t0, ok, bad, sum(len(d) for d in datas)


def parse_limit(c, workers, mode, stop=None):
    src = c.source_url[len('sqlite:///'):]
    state = {'source_db': src, 'table': c.source_table, 'column': c.source_column, 'mode': mode, 'stop': stop}
    per_pid = collections.Counter()
    ok = bad = nbytes = 0
    t0 = time.monotonic()
    with multiprocessing.get_context('fork').Pool(workers, initializer=_init_worker, initargs=(state,)) as pool:
        for pid, secs, o, b, nb in pool.imap_unordered(_parse_task, _ranges(src, c.source_table, 50)):
            per_pid[pid] += secs
            ok, bad, nbytes = ok + o, bad + b, nbytes + nb
    wall = time.monotonic() - t0
    docs = ok + bad
    # The limit: documents over the parse time of the busiest process (the processes ran side by side).
    busiest = max(per_pid.values()) if per_pid else 0.0
    return {'mode': mode, 'docs': docs, 'parsed_ok': ok, 'not_well_formed': bad,
            'docs_per_min': round(docs / busiest * 60, 1) if busiest else None,
            'mb_per_s': round(nbytes / 2 ** 20 / busiest, 1) if busiest else None,
            'parse_s_per_process': {str(k): round(v, 3) for k, v in per_pid.items()},
            'wall_incl_read_s': round(wall, 3),
            'wall_incl_read_docs_per_min': round(docs / wall * 60, 1)}


# ============================================================================================== 3. without Beam

def _nobeam_init(state):
    _init_worker(state)
    from contracts import compile_contract, load_contract
    from transforms.sql.introspect import introspect
    from transforms.sql.meta import fk_tiers
    from transforms.sql.plan import target_schema
    from transforms.sql.targets import parse_target
    from transforms.parse import ParseSpec
    contract = load_contract(state['contract'])
    compiled = compile_contract(contract)
    target = parse_target(state['target'])
    schema = target_schema(target, contract.target_schema)
    written = [t for t in contract.table_order if t not in ('processing_log', 'dead_letter')]
    conn = target.connect()
    try:
        metas = introspect(conn, target.dialect_name, schema, written)
    finally:
        conn.close()
    _W.update(contract=contract, compiled=compiled, target_obj=target, schema=schema, metas=metas,
              tiers=fk_tiers(metas, written),
              spec=ParseSpec.from_contract(contract, compiled, mode=state['mode']))


def _nobeam_task(rng):
    from transforms.sql.dialects import get_dialect
    from transforms.errors import StageError
    from transforms.map import map_document
    from transforms.parse import parse_document
    from transforms.records import Doc, RowGroup
    from transforms.sink import Writer
    from transforms.validate import validate_document
    t0 = time.perf_counter()
    rows = _read_range(*rng)
    t_read = time.perf_counter() - t0
    contract, compiled, spec = _W['contract'], _W['compiled'], _W['spec']
    table = _W['table']
    mapped, failed = [], []
    t1 = time.perf_counter()
    for app_id, xml in rows:
        doc = Doc(source=f'{table}:{app_id}', app_id=int(app_id), xml=xml)
        try:
            d = validate_document(doc, root_element=contract.root_element)
            p = parse_document(d, spec)
            mapped.append(map_document(p, compiled))
        except StageError as e:
            failed.append((int(app_id), e.stage, e.reason))
        except Exception as e:    # counted as failed, like the pipeline's dead letter
            failed.append((int(app_id), 'internal', type(e).__name__))
    t_xform = time.perf_counter() - t1
    t2 = time.perf_counter()
    target = _W['target_obj']
    w = _W.get('writer')
    if w is None:
        w = _W['writer'] = Writer(target.connect, target.dialect_name, scrub=target.scrub)
    nrows = 0
    bad = set()
    for tier in _W['tiers']:
        for t in tier:
            groups = [RowGroup(m.app_id, m.source, list(m.rows[t])) for m in mapped
                      if m.rows.get(t) and m.app_id not in bad]
            if groups:
                res = w.write(_W['metas'][t], groups)
                nrows += res.rows_written
                bad.update(res.failed)
    # the ledger, as the pipeline writes it: an upsert on processing_log's unique app_id, one transaction
    from transforms.sql.ddl import project_metas
    from transforms.sink import keyed_view
    d = get_dialect(target.dialect_name)
    view = keyed_view(project_metas(_W['schema'] if d.supports_schema else None)['processing_log'],
                      ['app_id', 'status'], 'app_id')
    led = dict([(a, 'failed') for a, _, _ in failed] +
               [(m.app_id, 'failed' if m.app_id in bad else 'success') for m in mapped])
    if led:
        w.run(lambda cur: d.upsert(cur, view, ['app_id', 'status'], sorted(led.items()), owner_check=False))
    t_sink = time.perf_counter() - t2
    return len(rows), len(mapped) - len(bad), len(failed) + len(bad), nrows, t_read, t_xform, t_sink


def no_beam(c, target_url, workers, mode, batch):
    src = c.source_url[len('sqlite:///'):]
    state = {'source_db': src, 'table': c.source_table, 'column': c.source_column, 'mode': mode,
             'contract': corpus_mod.contract_path(c), 'target': target_url}
    n = ok = failed = nrows = 0
    t_read = t_xform = t_sink = 0.0
    t0 = time.monotonic()
    with multiprocessing.get_context('fork').Pool(workers, initializer=_nobeam_init, initargs=(state,)) as pool:
        for r in pool.imap_unordered(_nobeam_task, _ranges(src, c.source_table, batch)):
            n, ok, failed, nrows = n + r[0], ok + r[1], failed + r[2], nrows + r[3]
            t_read, t_xform, t_sink = t_read + r[4], t_xform + r[5], t_sink + r[6]
    wall = time.monotonic() - t0
    return {'docs': n, 'written': ok, 'failed': failed, 'rows': nrows, 'wall_s': round(wall, 3),
            'docs_per_min': round(n / wall * 60, 1), 'rows_per_s': round(nrows / wall, 1),
            'cpu_split_s': {'read': round(t_read, 2), 'validate_parse_map': round(t_xform, 2),
                            'sink': round(t_sink, 2)}}


# ============================================================================================== 4. the driver's ceiling

def _ceiling_task(rng):
    """The same documents mapped (not timed), then their rows written with nothing but the driver: one plain
    INSERT per table, `executemany` in batches, a commit per batch. What any writer through this driver costs at
    least; the pipeline's sink does more (upsert, key ownership, replace, ledger)."""
    from transforms.errors import StageError
    from transforms.map import map_document
    from transforms.parse import parse_document
    from transforms.records import Doc
    from transforms.sql.dialects import get_dialect
    from transforms.validate import validate_document
    contract, compiled, spec = _W['contract'], _W['compiled'], _W['spec']
    mapped = []
    for app_id, xml in _read_range(*rng):
        try:
            d = validate_document(Doc(source=str(app_id), app_id=int(app_id), xml=xml),
                                  root_element=contract.root_element)
            mapped.append(map_document(parse_document(d, spec), compiled))
        except StageError:
            pass
    target = _W['target_obj']
    d = get_dialect(target.dialect_name)
    conn = _W.get('ceiling_conn')
    if conn is None:
        conn = _W['ceiling_conn'] = target.connect()
    batch = _W['batch']
    nrows = 0
    t0 = time.perf_counter()
    cur = conn.cursor()
    for tier in _W['tiers']:
        for t in tier:
            rows = [r for m in mapped for r in m.rows.get(t, ())]
            if not rows:
                continue
            cols = sorted({c for r in rows for c in r})
            sql = (f'INSERT INTO {d.qualify(t, _W["schema"] if d.supports_schema else None)} '
                   f'({", ".join(d.quote(c) for c in cols)}) VALUES ({", ".join("?" for _ in cols)})')
            for i in range(0, len(rows), batch):
                cur.executemany(sql, [tuple(r.get(c) for c in cols) for r in rows[i:i + batch]])
                conn.commit()
            nrows += len(rows)
    return len(mapped), nrows, time.perf_counter() - t0


def write_ceiling(c, target_url, workers, mode, batch):
    """Docs/min of the plain executemany writes alone (the busiest process's write time, processes side by
    side), for the documents that map."""
    src = c.source_url[len('sqlite:///'):]
    state = {'source_db': src, 'table': c.source_table, 'column': c.source_column, 'mode': mode,
             'contract': corpus_mod.contract_path(c), 'target': target_url, 'batch': batch}
    docs = nrows = 0
    per_pid = collections.Counter()
    with multiprocessing.get_context('fork').Pool(workers, initializer=_nobeam_init, initargs=(state,)) as pool:
        for pid, (n, r, secs) in pool.imap_unordered(_pid_and(_ceiling_task), _ranges(src, c.source_table, 200)):
            docs, nrows, per_pid[pid] = docs + n, nrows + r, per_pid[pid] + secs
    busiest = max(per_pid.values()) if per_pid else 0.0
    return {'docs': docs, 'rows': nrows, 'write_s_busiest_process': round(busiest, 3),
            'write_s_total': round(sum(per_pid.values()), 3),
            'docs_per_min': round(docs / busiest * 60, 1) if busiest else None,
            'rows_per_s': round(nrows / busiest, 1) if busiest else None, 'batch': batch}


class _pid_and:
    """A pool task that also says which process ran it (picklable, unlike a closure)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, arg):
        return os.getpid(), self.fn(arg)


# ============================================================================================== report

def _fmt(v, nd=0):
    if v is None:
        return '-'
    if isinstance(v, float):
        return f'{v:,.{nd}f}'
    return f'{v:,}' if isinstance(v, int) else str(v)


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def print_table(r):
    """Every measurement of the run, and every ratio the performance goals are stated in."""
    print(f"\n{r['docs']:,} documents ({r['corpus']} corpus, {r['corpus_mb']:.0f} MB), target {r['target']}, "
          f"{r['cores']} cores ({r['machine'].get('cpu_model', '?')}), load at start "
          f"{r['machine'].get('load_avg_at_start')}")
    ws = [str(w) for w in r['workers_measured']]
    print(f"{'docs/min':36s} " + ' '.join(f'{"W=" + w:>10s}' for w in ws))
    lines = [('end to end (Beam, DirectRunner)', 'docs_per_min'), ('same transforms, no Beam', 'no_beam_docs_per_min'),
             ('full lxml parse (the parse limit)', 'parse_only_docs_per_min'),
             ('partial parse', 'partial_parse_docs_per_min'), ('plain executemany (driver ceiling)',
                                                               'write_ceiling_docs_per_min'),
             ('peak RSS, MB (process tree)', 'peak_rss_mb')]
    for label, key in lines:
        vals = [r['by_workers'][w].get(key) for w in ws]
        if any(v is not None for v in vals):
            print(f'{label:36s} ' + ' '.join(f'{_fmt(v):>10s}' for v in vals))
    if r.get('rounds', 1) > 1:
        print(f"(each figure and each ratio: the median of {r['rounds']} rounds (of an even count the lower middle); "
              f"a ratio is taken within its round, so it need not equal the ratio of the figures above)")
    print('ratios (goal)')
    goals = [('end to end / parse limit (>= 1.0)', 'ratio_to_parse_limit'),
             ('end to end / no Beam (>= 0.85)', 'ratio_to_no_beam'),
             ('end to end / driver ceiling (>= 0.8, postgresql)', 'ratio_to_write_ceiling'),
             ('(no goal) the sink alone / driver ceiling', 'ratio_sink_to_write_ceiling')]
    rounds = r.get('rounds', 1)

    def spread(lo_hi):
        return f'{lo_hi[0]:.2f}-{lo_hi[1]:.2f}' if lo_hi else '-'
    for label, key in goals:
        vals = [r['by_workers'][w].get(key) for w in ws]
        if any(v is not None for v in vals):
            print(f'  {label:48s} ' + ' '.join(f'{_fmt(v, 2):>10s}' for v in vals))
            if rounds > 1:
                print(f"  {'  range over ' + str(rounds) + ' rounds':48s} "
                      + ' '.join(f"{spread(r['by_workers'][w].get('ranges', {}).get(key)):>10s}" for w in ws))
    if r.get('scaling'):
        sc = r['scaling']
        rng = sc.get('ranges', {})
        print(f"  two workers / one, end to end (>= 1.8)           {_fmt(sc.get('end_to_end'), 2):>10s}   "
              f"(no Beam {_fmt(sc.get('no_beam'), 2)}, parse {_fmt(sc.get('parse_full'), 2)})"
              + (f"  range {spread(rng.get('end_to_end'))} (no Beam {spread(rng.get('no_beam'))}, parse "
                 f"{spread(rng.get('parse_full'))})" if rounds > 1 else ''))
    if r.get('memory'):
        m = r['memory']
        print(f"  peak RSS at {m['factor']}N / N (<= 1.10)                 {_fmt(m['ratio'], 2):>10s}   "
              f"({_fmt(m['rss_n_mb'])} MB at {m['docs_n']:,}, {_fmt(m['rss_kn_mb'])} MB at {m['docs_kn']:,}, "
              f"W={m['workers']})")
    print(f"  end to end / the existing system's ~2,000 docs/min {_fmt(r['ratio_to_baseline'], 1):>9s}x")
    e = r['end_to_end']
    print(f"read={e['read']} written={e['written']} dead_lettered={e['dead_lettered']} rows={e['rows']} "
          f"invariant={'ok' if e['invariant_holds'] else 'BROKEN'} chunks={e.get('chunks')}")


def _workers_list(text):
    try:
        ws = sorted({int(x) for x in text.split(',') if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f'--workers: a number or a comma-separated list, not {text!r}')
    if not ws or ws[0] < 1:
        raise argparse.ArgumentTypeError('--workers: at least 1')
    return ws


def _end_to_end(c, args, targets, workdir, setup_log, w, label):
    runs = []
    for i in range(args.repeat):
        url = targets.fresh(f'{label}_{i}')
        create_tables(c.tables, url, setup_log, target_schema_of(url, corpus_mod.contract_path(c)))
        print(f'end to end, {w} worker(s), {c.docs} docs, run {i + 1}/{args.repeat} ...', file=sys.stderr)
        runs.append(run_pipeline(c, url, args, workdir, f'{label}_{i}', w))
        print(f"  {runs[-1]['docs_per_min']:,.0f} docs/min, {runs[-1]['peak_rss_mb']:.0f} MB peak RSS",
              file=sys.stderr)
    e2e = sorted(runs, key=lambda r: r['docs_per_min'])[(len(runs) - 1) // 2]  # the median; of two, the slower
    return e2e, runs, url


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--docs', type=int, required=True, help='documents in the corpus (N)')
    ap.add_argument('--target', choices=['sqlite', 'postgresql'], default='sqlite')
    ap.add_argument('--json', required=True, help='write the results here')
    ap.add_argument('--corpus', choices=['cc', 'generated'], default='cc',
                    help='cc: the 165 CC samples replicated (default); generated: contracts.samples.generate')
    ap.add_argument('--workers', type=_workers_list, default=[1, 2],
                    help='worker counts to measure side by side, e.g. 1,2 (default) or 2: every measurement runs '
                         'with each; the scaling ratio is the largest against 1')
    ap.add_argument('--mode', choices=['processes', 'multi_processing'], default='processes',
                    help='how the end-to-end run uses W > 1 workers: the pipeline\'s --processes W shard processes '
                         '(default), or Beam\'s --direct_running_mode=multi_processing --direct_num_workers=W')
    ap.add_argument('--parse-mode', dest='parse_mode', choices=['partial', 'full'], default='partial')
    ap.add_argument('--batch-size', dest='batch_size', type=int, default=None, help='pipeline --batch-size '
                    '(default: the pipeline\'s); also the no-Beam loop\'s and the driver ceiling\'s batch '
                    '(default 200)')
    ap.add_argument('--chunk-docs', dest='chunk_docs', type=int, default=None,
                    help='pipeline --chunk-docs (default: the pipeline\'s, 20000); 0 = one run')
    ap.add_argument('--fetch-size', dest='fetch_size', type=int, default=None, help='pipeline --fetch-size')
    ap.add_argument('--partitions', type=int, default=None, help='pipeline --partitions')
    ap.add_argument('--pipeline-arg', dest='pipeline_arg', action='append',
                    help='extra argument for `python -m pipeline run` (repeatable), e.g. '
                         '--pipeline-arg=--direct_running_mode=in_memory')
    ap.add_argument('--repeat', type=int, default=1, help='end-to-end runs (fresh target each); the median counts')
    ap.add_argument('--rounds', type=int, default=1,
                    help='measure everything (end to end, parse limits, no-Beam loop, ceiling, each worker count) '
                         'this many times in turn, and report each ratio as the median of its per-round values '
                         'with their range: on a shared machine one round\'s ratios move by +-0.1')
    ap.add_argument('--memory-factor', dest='memory_factor', type=int, default=4,
                    help='also run end to end on a corpus this many times larger (with the largest worker count) '
                         'and compare the peak RSS of the process tree with the N run (default 4; 0: skip)')
    ap.add_argument('--skip', action='append', default=[], choices=['parse', 'nobeam', 'ceiling'],
                    help='leave out a measurement (repeatable); the driver ceiling is measured for postgresql '
                         'targets only')
    ap.add_argument('--pg-url', dest='pg_url', default=None, help='ODBC URL of a PostgreSQL server (fresh '
                    'databases are created and dropped); default $XMLSQL_BENCH_PG or $XMLSQL_TEST_PG')
    ap.add_argument('--seed', type=int, default=7, help='generator seed (generated corpus)')
    ap.add_argument('--workdir', default=None, help='keep corpus, targets and logs here (default: a temp dir, '
                    'removed at the end)')
    args = ap.parse_args(argv)
    if args.docs < 1 or args.repeat < 1 or args.rounds < 1 or args.memory_factor < 0:
        ap.error('--docs, --repeat and --rounds must be at least 1, --memory-factor at least 0')
    if args.corpus == 'cc' and not corpus_mod.cc_available():
        print(f'SKIP: the CC seed corpus is not at {corpus_mod.SEED} (it is read at run time, never copied into '
              f'the repo); run with --corpus generated instead', file=sys.stderr)
        return SKIP_EXIT
    workdir = args.workdir or tempfile.mkdtemp(prefix='xmlsql-bench-')
    os.makedirs(workdir, exist_ok=True)
    pg = _pg_url(args) if args.target == 'postgresql' else None
    targets = Targets(args.target, workdir, pg)
    machine = machine_info()
    try:
        t0 = time.monotonic()
        c = corpus_mod.build(args.corpus, args.docs, workdir, seed=args.seed)
        build_s = time.monotonic() - t0
        print(f'corpus: {c.docs} {c.name} documents, {c.bytes / 2 ** 20:.0f} MB, built in {build_s:.1f} s '
              f'({workdir})', file=sys.stderr)
        from contracts import compile_contract, load_contract
        contract = load_contract(corpus_mod.contract_path(c))
        tables = [t for t in contract.table_order if t not in ('processing_log', 'dead_letter')]
        stop = compile_contract(contract).stop_after_path
        setup_log = open(os.path.join(workdir, 'setup.log'), 'w')
        batch = args.batch_size or 200

        per_round = []
        for rnd in range(args.rounds):
            if args.rounds > 1:
                print(f'== round {rnd + 1}/{args.rounds}', file=sys.stderr)
            per_round.append(_measure_round(c, args, targets, workdir, setup_log, batch, tables, stop,
                                            f'r{rnd}_' if args.rounds > 1 else ''))
        by_w, all_runs = _median_round([b for b, _ in per_round]), per_round[0][1]
        if args.rounds > 1:
            all_runs = {w: [run for _, rr in per_round for run in rr[w]] for w in per_round[0][1]}

        top = by_w[str(max(args.workers))]
        scaling = None
        if 1 in args.workers and len(args.workers) > 1:
            rounds_sc = [_scaling(b, max(args.workers)) for b, _ in per_round]
            scaling = {'workers': max(args.workers)}
            for k in ('end_to_end', 'no_beam', 'parse_full'):
                scaling[k], spread = _median_spread([sc[k] for sc in rounds_sc])
                if args.rounds > 1:
                    scaling.setdefault('ranges', {})[k] = spread
        memory = None
        if args.memory_factor > 1:
            k = args.memory_factor
            big_dir = os.path.join(workdir, f'x{k}')
            cb = corpus_mod.build(args.corpus, args.docs * k, big_dir, seed=args.seed)
            ebig, _, _ = _end_to_end(cb, argparse.Namespace(**{**vars(args), 'repeat': 1}), targets, workdir,
                                     setup_log, max(args.workers), f'mem_x{k}')
            memory = {'factor': k, 'workers': max(args.workers), 'docs_n': c.docs, 'docs_kn': cb.docs,
                      'rss_n_mb': top['peak_rss_mb'], 'rss_kn_mb': ebig['peak_rss_mb'],
                      'ratio': _ratio(ebig['peak_rss_mb'], top['peak_rss_mb']),
                      'docs_per_min_kn': ebig['docs_per_min'], 'end_to_end_kn': ebig}
            shutil.rmtree(big_dir, ignore_errors=True)
        return _finish(args, argv, c, build_s, machine, by_w, all_runs, top, scaling, memory)
    finally:
        targets.cleanup()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _measure_round(c, args, targets, workdir, setup_log, batch, tables, stop, prefix):
    """Every measurement once, for each worker count: ({str(W): figures and ratios}, {str(W): end-to-end runs})."""
    by_w, all_runs = {}, {}
    for w in args.workers:
        e2e, runs, url = _end_to_end(c, args, targets, workdir, setup_log, w, f'{prefix}e2e_w{w}')
        e2e['rows_in_target'] = count_rows(url, tables, target_schema_of(url, corpus_mod.contract_path(c)))
        full = partial = nob = ceiling = None
        if 'parse' not in args.skip:
            print(f'parse limits, {w} worker(s) ...', file=sys.stderr)
            full = parse_limit(c, w, 'full')
            partial = parse_limit(c, w, 'partial', stop) if stop else None
        if 'nobeam' not in args.skip:
            print(f'no-Beam loop, {w} worker(s) ...', file=sys.stderr)
            url_nb = targets.fresh(f'{prefix}nobeam_w{w}')
            create_tables(c.tables, url_nb, setup_log, target_schema_of(url_nb, corpus_mod.contract_path(c)))
            nob = no_beam(c, url_nb, w, args.parse_mode, batch)
        if args.target == 'postgresql' and 'ceiling' not in args.skip:
            print(f'driver ceiling (plain executemany), {w} worker(s) ...', file=sys.stderr)
            url_c = targets.fresh(f'{prefix}ceiling_w{w}')
            create_tables(c.tables, url_c, setup_log, target_schema_of(url_c, corpus_mod.contract_path(c)))
            ceiling = write_ceiling(c, url_c, w, args.parse_mode, batch)
        dpm = e2e['docs_per_min']
        by_w[str(w)] = {
            'workers': w, 'docs_per_min': dpm, 'rows_per_s': e2e['rows_per_s'], 'peak_rss_mb': e2e['peak_rss_mb'],
            'parse_only_docs_per_min': full and full['docs_per_min'],
            'partial_parse_docs_per_min': partial and partial['docs_per_min'],
            'no_beam_docs_per_min': nob and nob['docs_per_min'],
            'write_ceiling_docs_per_min': ceiling and ceiling['docs_per_min'],
            'ratio_to_parse_limit': _ratio(dpm, full and full['docs_per_min']),
            'ratio_to_partial_parse_limit': _ratio(dpm, partial and partial['docs_per_min']),
            'ratio_to_no_beam': _ratio(dpm, nob and nob['docs_per_min']),
            'ratio_to_write_ceiling': _ratio(dpm, ceiling and ceiling['docs_per_min']),
            # not a goal: the sink's own writes (the no-Beam loop's, ledger included) against the plain executemany
            # of the same rows, seconds summed over the processes; >= 1: the sink writes as fast as the ceiling
            'ratio_sink_to_write_ceiling': _ratio(ceiling and ceiling.get('write_s_total'),
                                                  nob and nob['cpu_split_s']['sink']),
            'end_to_end': e2e, 'parse_full': full, 'parse_partial': partial, 'no_beam': nob,
            'write_ceiling': ceiling}
        all_runs[str(w)] = runs
    return by_w, all_runs


_RATIOS = ('ratio_to_parse_limit', 'ratio_to_partial_parse_limit', 'ratio_to_no_beam', 'ratio_to_write_ceiling',
           'ratio_sink_to_write_ceiling')
_RATES = ('docs_per_min', 'rows_per_s', 'peak_rss_mb', 'parse_only_docs_per_min', 'partial_parse_docs_per_min',
          'no_beam_docs_per_min', 'write_ceiling_docs_per_min')


def _median_spread(vals):
    """(median, [min, max]) of the values that are not None (of an even count, the lower middle); (None, None)."""
    v = sorted(x for x in vals if x is not None)
    if not v:
        return None, None
    return v[(len(v) - 1) // 2], [v[0], v[-1]]


def _median_round(rounds):
    """One {str(W): ...} of several rounds: each rate and each ratio the median of its per-round values (a ratio
    is taken within its round, then the median: never a ratio of medians from different rounds), the ranges under
    'ranges'; the nested measurements (end_to_end, no_beam, ...) those of the round whose end-to-end rate is the
    median."""
    if len(rounds) == 1:
        return rounds[0]
    out = {}
    for w in rounds[0]:
        rs = [r[w] for r in rounds]
        mid = sorted(rs, key=lambda x: x['docs_per_min'])[(len(rs) - 1) // 2]
        b = dict(mid)
        b['ranges'] = {}
        for k in _RATES + _RATIOS:
            b[k], spread = _median_spread([x.get(k) for x in rs])
            if spread is not None:
                b['ranges'][k] = spread
        b['rounds'] = len(rs)
        out[w] = b
    return out


def _scaling(by_w, top_w):
    one, top = by_w['1'], by_w[str(top_w)]
    return {'end_to_end': _ratio(top['docs_per_min'], one['docs_per_min']),
            'no_beam': _ratio(top['no_beam_docs_per_min'], one['no_beam_docs_per_min']),
            'parse_full': _ratio(top['parse_only_docs_per_min'], one['parse_only_docs_per_min'])}


def _finish(args, argv, c, build_s, machine, by_w, all_runs, top, scaling, memory):
    e2e = top['end_to_end']
    res = {
        'docs': e2e['read'], 'corpus': c.name, 'corpus_mb': round(c.bytes / 2 ** 20, 1),
        'target': args.target, 'workers_measured': args.workers, 'workers': max(args.workers),
        'mode': args.mode, 'cores': machine['cores_usable'],
        'parse_mode': args.parse_mode, 'batch_size': args.batch_size, 'chunk_docs': args.chunk_docs,
        # the largest worker count's figures at the top level
        **{key: top[key] for key in ('docs_per_min', 'rows_per_s', 'peak_rss_mb', 'parse_only_docs_per_min',
                                     'partial_parse_docs_per_min', 'no_beam_docs_per_min',
                                     'write_ceiling_docs_per_min', 'ratio_to_parse_limit',
                                     'ratio_to_partial_parse_limit', 'ratio_to_no_beam',
                                     'ratio_to_write_ceiling', 'ratio_sink_to_write_ceiling')},
        'rows': e2e['rows'], 'by_workers': by_w, 'scaling': scaling, 'memory': memory,
        'baseline_docs_per_min': BASELINE_DOCS_PER_MIN,
        'ratio_to_baseline': round(top['docs_per_min'] / BASELINE_DOCS_PER_MIN, 2),
        'end_to_end': e2e, 'end_to_end_runs': all_runs,
        'parse_full': top['parse_full'], 'parse_partial': top['parse_partial'], 'no_beam': top['no_beam'],
        'machine': machine, 'corpus_build_s': round(build_s, 1), 'rounds': args.rounds,
        'command': _display_cmd([sys.executable, os.path.relpath(os.path.abspath(__file__), REPO)]
                                + list(argv if argv is not None else sys.argv[1:])),
    }
    with open(args.json, 'w') as f:
        json.dump(res, f, indent=2, sort_keys=True)
    try:
        print_table(res)
    except Exception as e:   # the JSON is what counts
        print(f'(table not printed: {type(e).__name__}: {e})')
    # every end-to-end run of every round and worker count, not only the median ones the table shows
    ok = all(run['invariant_holds'] for runs in all_runs.values() for run in runs)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
