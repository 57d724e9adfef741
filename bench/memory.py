"""Peak memory of long runs: is it flat as the number of documents grows?

    python bench/memory.py --docs 100000 [--docs 25000 ...] [--chunk-docs 20000] [--container-mb 220]

For each --docs N: generate N documents (contracts.samples.generate, seeded) into a SQLite source, run
`python -m pipeline run` on DirectRunner into a SQLite target, and sample the RSS of the whole process tree every
0.2 s. With --container-mb M: build one XML file of about M MB holding many documents and stream it through
`python -m pipeline map`, the same way. Prints a table and writes --json. Data lives in --workdir (default a temp
folder under /tmp, removed at the end unless --keep).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = re.compile(r'^SUMMARY read=(\d+) written=(\d+) dead_lettered=(\d+) rows=(\d+) docs_per_min=([\d.]+) '
                     r'changed=(\d+)$', re.M)


def run_sampled(cmd, cwd):
    """Run cmd; return (stdout, stderr, returncode, seconds, peak RSS of the process tree in MB)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        try:
            proc = psutil.Process(p.pid)
        except psutil.NoSuchProcess:
            return
        while p.poll() is None:
            try:
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            except psutil.Error:
                rss = 0
            peak[0] = max(peak[0], rss)
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = p.communicate()
    t.join()
    return out, err, p.returncode, time.monotonic() - t0, peak[0] / 2 ** 20


def bench_run(n, workdir, chunk_docs, extra):
    from contracts.samples.generate import write_sqlite_source
    src = os.path.join(workdir, f'src-{n}.db')
    tgt = os.path.join(workdir, f'tgt-{n}.db')
    if not os.path.exists(src):
        write_sqlite_source(src, n, seed=1)
    for p in (tgt, tgt + '-wal', tgt + '-shm'):
        if os.path.exists(p):
            os.remove(p)
    cmd = [sys.executable, '-m', 'pipeline', 'run', '--contract', 'credit_app', '--source', f'sqlite:///{src}',
           '--target', f'sqlite:///{tgt}', '--tables', 'credit_app_tables', '--create-tables',
           '--chunk-docs', str(chunk_docs), '--log-level', 'WARNING'] + extra
    out, err, rc, secs, peak = run_sampled(cmd, ROOT)
    m = SUMMARY.search(out)
    if rc != 0 or not m:
        raise SystemExit(f'run failed ({rc}): {err[-2000:]}')
    read, written, dead, rows = map(int, m.groups()[:4])
    return {'kind': 'table source run', 'docs': n, 'source_mb': round(os.path.getsize(src) / 2 ** 20),
            'read': read, 'written': written, 'dead_lettered': dead, 'rows': rows, 'seconds': round(secs, 1),
            'docs_per_min': round(read / secs * 60), 'peak_rss_mb': round(peak), 'chunk_docs': chunk_docs}


def bench_container(mb, workdir):
    from contracts.samples.generate import generate_documents
    path = os.path.join(workdir, f'export-{mb}mb.xml')
    decl = re.compile(r'^\s*<\?xml[^>]*\?>\s*')
    n = 0
    with open(path, 'w', encoding='utf-8') as f:
        f.write('<Export>\n')
        for _, xml in generate_documents(10 ** 7, seed=3, broken_fraction=0.0):
            f.write(decl.sub('', xml.lstrip('\ufeff')))
            f.write('\n')
            n += 1
            if f.tell() >= mb * 2 ** 20:
                break
        f.write('</Export>\n')
    size = os.path.getsize(path) / 2 ** 20
    out_rows = os.path.join(workdir, 'rows.jsonl')
    cmd = [sys.executable, '-m', 'pipeline', 'map', '--contract', 'credit_app', '--input', path, '--output',
           out_rows, '--log-level', 'WARNING']
    out, err, rc, secs, peak = run_sampled(cmd, ROOT)
    m = SUMMARY.search(out)
    if rc != 0 or not m:
        raise SystemExit(f'map failed ({rc}): {err[-2000:]}')
    read = int(m.group(1))
    return {'kind': 'one container file, map', 'docs': n, 'source_mb': round(size), 'read': read,
            'written': int(m.group(2)), 'dead_lettered': int(m.group(3)), 'rows': int(m.group(4)),
            'seconds': round(secs, 1), 'docs_per_min': round(read / secs * 60), 'peak_rss_mb': round(peak),
            'chunk_docs': 20000}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--docs', type=int, action='append', default=[], help='documents in a table-source run (repeat)')
    ap.add_argument('--chunk-docs', type=int, default=20000, help='the pipeline\'s --chunk-docs (default 20000)')
    ap.add_argument('--container-mb', type=int, default=0, help='also stream one container file of this size')
    ap.add_argument('--workdir', default=None, help='where the data goes (default: a new temp folder)')
    ap.add_argument('--keep', action='store_true', help='keep the workdir')
    ap.add_argument('--json', default=None, help='write the results here')
    ap.add_argument('extra', nargs='*', help='extra pipeline options after --')
    a = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    workdir = a.workdir or tempfile.mkdtemp(prefix='xmlsql-mem-')
    os.makedirs(workdir, exist_ok=True)
    results = []
    try:
        for n in a.docs:
            results.append(bench_run(n, workdir, a.chunk_docs, a.extra))
            print(json.dumps(results[-1]), flush=True)
        if a.container_mb:
            results.append(bench_container(a.container_mb, workdir))
            print(json.dumps(results[-1]), flush=True)
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f'\n{"what":28} {"docs":>8} {"source MB":>9} {"seconds":>8} {"docs/min":>9} {"peak RSS MB":>11}')
    for r in results:
        print(f'{r["kind"]:28} {r["docs"]:>8} {r["source_mb"]:>9} {r["seconds"]:>8} {r["docs_per_min"]:>9} '
              f'{r["peak_rss_mb"]:>11}')
    if a.json:
        with open(a.json, 'w') as f:
            json.dump({'cores': os.cpu_count(), 'results': results}, f, indent=2)


if __name__ == '__main__':
    main()
