"""Side by side on one generated corpus: the project's own `--processes 2` against the real engines that
deploy/portable_local.sh starts (Flink embedded, Flink session cluster, Spark local[2], Prism), and the
single-process DirectRunner for reference.

For each runner, one after the other on the same machine:
  * docs/min of the big run (N documents), end to end (wall clock of the whole command, services included) and as
    the SUMMARY line reports it (the launcher's own clock: from building the graph to the job's end);
  * peak RSS of the whole process tree (the command and every descendant: job servers, Flink JobManager and
    TaskManager, SDK worker processes), sampled every 0.2 s with psutil;
  * start-up: the wall clock of a tiny job (TINY documents), i.e. what it costs to start the services, submit
    the job and tear down.
With --rounds R the runners are interleaved R times and the medians are printed at the end.
Each run gets a fresh copy of the corpus (source and target in one SQLite file), or with --target pg a fresh
PostgreSQL schema (XMLSQL_TEST_PG) and the SQLite file as the source.

  python bench/engines.py [--docs 2000] [--tiny 20] [--runners processes2,flink,...] [--target sqlite|pg] [--rounds 3]
                          [--json out.json]
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'deploy', 'portable_local.sh')
SUMMARY = re.compile(r'^SUMMARY read=(\d+) written=(\d+) dead_lettered=(\d+) rows=(\d+) docs_per_min=([\d.]+)', re.M)
PY = sys.executable
RUNNERS = {
    'in_memory': [PY, '-m', 'pipeline', 'run'],
    'processes2': [PY, '-m', 'pipeline', 'run', '--processes', '2'],
    'flink': [SCRIPT, 'flink'],
    'flink-cluster': [SCRIPT, 'flink-cluster'],
    'spark': [SCRIPT, 'spark'],
    'prism': [SCRIPT, 'prism'],
}


def tree_rss(proc):
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def measure(cmd, env):
    """(wall seconds, peak tree RSS bytes, stdout, stderr) of one command."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO)
        ps = psutil.Process(p.pid)
        peak = 0
        while p.poll() is None:
            peak = max(peak, tree_rss(ps))
            time.sleep(0.2)
        wall = time.monotonic() - t0
        out.seek(0), err.seek(0)
        return p.returncode, wall, peak, out.read(), err.read()


class Targets:
    def __init__(self, kind, work):
        self.kind, self.work, self.schemas = kind, work, []

    def make(self, corpus_db, label):
        """(source url, target url, contract) for one run."""
        db = os.path.join(self.work, f'{label}.db')
        shutil.copy(corpus_db, db)
        if self.kind == 'sqlite':
            return f'sqlite:///{db}', f'sqlite:///{db}', 'credit_app'
        import pyodbc
        pg = os.environ['XMLSQL_TEST_PG']
        schema = 'bench_' + uuid.uuid4().hex[:8]
        conn = pyodbc.connect(pg[len('odbc:'):], autocommit=True)
        conn.execute(f'CREATE SCHEMA {schema}')
        conn.close()
        self.schemas.append(schema)
        c = json.load(open(os.path.join(REPO, 'contracts', 'samples', 'credit_app.json')))
        c['target_schema'] = schema
        path = os.path.join(self.work, f'{label}-contract.json')
        json.dump(c, open(path, 'w'))
        return f'sqlite:///{db}', pg, path

    def drop(self):
        if not self.schemas:
            return
        import pyodbc
        conn = pyodbc.connect(os.environ['XMLSQL_TEST_PG'][len('odbc:'):], autocommit=True)
        for s in self.schemas:
            conn.execute(f'DROP SCHEMA {s} CASCADE')
        conn.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--docs', type=int, default=2000, help='documents in the big run (default 2000)')
    ap.add_argument('--tiny', type=int, default=20, help='documents in the start-up run (default 20)')
    ap.add_argument('--runners', default='in_memory,processes2,flink,flink-cluster,spark,prism',
                    help='comma-separated, from: ' + ', '.join(RUNNERS))
    ap.add_argument('--target', choices=('sqlite', 'pg'), default='sqlite',
                    help='SQLite file (default) or a PostgreSQL schema on XMLSQL_TEST_PG')
    ap.add_argument('--rounds', type=int, default=1, help='rounds, runners interleaved (default 1)')
    ap.add_argument('--seed', type=int, default=7, help='generator seed (default 7)')
    ap.add_argument('--json', help='also write the results to this JSON file')
    args = ap.parse_args(argv)
    runners = args.runners.split(',')
    work = tempfile.mkdtemp(prefix='bench_engines.')
    targets = Targets(args.target, work)
    env = dict(os.environ, PYTHON=PY)
    results = []
    try:
        corpora = {}
        for n in (args.tiny, args.docs):
            corpora[n] = os.path.join(work, f'corpus{n}.db')
            subprocess.run([PY, '-m', 'pipeline', 'generate', '--docs', str(n), '--sqlite', corpora[n],
                            '--seed', str(args.seed)], check=True, capture_output=True, cwd=REPO)
        print(f'# {args.docs} generated documents (seed {args.seed}), tiny run {args.tiny}, target {args.target}, '
              f'{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start', flush=True)
        print(f'{"runner":14} {"round":>5} {"docs/min wall":>13} {"docs/min SUMMARY":>16} {"wall s":>7} '
              f'{"tiny wall s":>11} {"peak tree RSS MiB":>17} {"load":>5}', flush=True)
        for rnd in range(1, args.rounds + 1):
            for r in runners:                   # interleaved, so that a busy minute hits every runner alike
                row = {'runner': r, 'round': rnd, 'load': round(os.getloadavg()[0], 1)}
                for n, key in ((args.tiny, 'tiny'), (args.docs, 'big')):
                    src, tgt, contract = targets.make(corpora[n], f'{r}-{key}-{rnd}')
                    cmd = RUNNERS[r] + ['--contract', contract, '--source', src, '--target', tgt, '--tables',
                                        'credit_app_tables', '--create-tables', '--log-level', 'WARNING']
                    rc, wall, peak, out, err = measure(cmd, env)
                    m = SUMMARY.search(out)
                    if rc != 0 or not m:
                        row[key] = {'rc': rc, 'error': err.strip().splitlines()[-3:]}
                        break
                    row[key] = {'wall_s': round(wall, 1), 'peak_rss_mib': round(peak / 2**20),
                                'summary_docs_per_min': float(m.group(5)), 'read': int(m.group(1)),
                                'written': int(m.group(2)), 'dead': int(m.group(3)), 'rows': int(m.group(4))}
                results.append(row)
                big, tiny = row.get('big', {}), row.get('tiny', {})
                if 'wall_s' not in big or 'wall_s' not in tiny:
                    print(f'{r:14} {rnd:>5} FAILED: {big.get("error") or tiny.get("error")}', flush=True)
                    continue
                row['docs_per_min_wall'] = round(args.docs / big['wall_s'] * 60)
                print(f'{r:14} {rnd:>5} {row["docs_per_min_wall"]:>13} {big["summary_docs_per_min"]:>16.0f} '
                      f'{big["wall_s"]:>7.1f} {tiny["wall_s"]:>11.1f} {big["peak_rss_mib"]:>17} {row["load"]:>5}',
                      flush=True)
    finally:
        targets.drop()
        shutil.rmtree(work, ignore_errors=True)
    # medians over the rounds
    med = {}
    for r in runners:
        ok = [x for x in results if x['runner'] == r and 'docs_per_min_wall' in x]
        if ok:
            med[r] = {'docs_per_min_wall': statistics.median(x['docs_per_min_wall'] for x in ok),
                      'wall_s': statistics.median(x['big']['wall_s'] for x in ok),
                      'tiny_wall_s': statistics.median(x['tiny']['wall_s'] for x in ok),
                      'peak_rss_mib': max(x['big']['peak_rss_mib'] for x in ok), 'runs': len(ok)}
    print('# medians: runner, docs/min (wall), wall s, tiny-job wall s (start-up), max peak tree RSS MiB, runs')
    for r, m in med.items():
        rel = (f', {m["docs_per_min_wall"] / med["processes2"]["docs_per_min_wall"]:.0%} of --processes 2'
               if 'processes2' in med and r != 'processes2' else '')
        print(f'# {r:14} {m["docs_per_min_wall"]:>8.0f} {m["wall_s"]:>6.1f} {m["tiny_wall_s"]:>6.1f} '
              f'{m["peak_rss_mib"]:>6}  ({m["runs"]} runs{rel})')
    if args.json:
        json.dump({'docs': args.docs, 'tiny': args.tiny, 'target': args.target, 'results': results,
                   'medians': med}, open(args.json, 'w'), indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
