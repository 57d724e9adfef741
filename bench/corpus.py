"""Benchmark corpora, built at run time into a SQLite source table `app_xml(app_id INTEGER PRIMARY KEY, xml TEXT)`.

* `cc`: the existing system's 165 credit-card sample documents, read from `<repo>/../shared/seed-corpus/cc/xml`
  (never copied into the repo), replicated to N documents. Copy k of a document has every id rewritten
  consistently: the Request ID and every con_id attribute become `original + k * OFFSET`, so app_ids and con_ids
  are unique across the whole corpus (no upsert collisions, no ownership clashes). Documents without a Request
  ID (bloat.xml, an edge case that fails validation) get a synthetic source app_id in a range no real id uses.
  Contract `../shared/seed-corpus/cc/contract.json`; tables `.../cc/tables.json` minus its reference tables
  (app_enums, app_campaign_cc), so that the DDL leaves the FKs to them out (the migration never fills them).
* `generated`: the project's own generator (`contracts.samples.generate`, contract `credit_app`) for any N.
"""
import json
import os
import re
import sqlite3
import sys
from typing import Iterator, List, NamedTuple, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = os.path.join(os.path.dirname(REPO), 'shared', 'seed-corpus', 'cc')

OFFSET = 2_000_000                 # id of copy k = original + k * OFFSET (every CC sample id is < 1.9 million)
SYNTHETIC_BASE = 1_900_000         # source app_id of a document without a Request ID (no sample id is that high)

_REQUEST_ID = re.compile(rb'(<Request\b[^>]*?\sID=")(\d+)(")')
_CON_ID = re.compile(rb'(\scon_id=")(\d+)(")')


class Corpus(NamedTuple):
    name: str               # cc | generated
    source_url: str         # sqlite:///... with table app_xml(app_id, xml)
    source_table: str
    source_column: str
    contract: str           # path or sample name for --contract
    tables: str             # path of the table spec for create-tables
    docs: int
    bytes: int


class CorpusMissing(Exception):
    pass


def cc_available() -> bool:
    return os.path.isdir(os.path.join(SEED, 'xml')) and os.path.isfile(os.path.join(SEED, 'contract.json'))


def load_cc_samples() -> List[Tuple[str, bytes]]:
    folder = os.path.join(SEED, 'xml')
    if not cc_available():
        raise CorpusMissing(f'CC seed corpus not found at {SEED} (expected xml/, contract.json, tables.json): '
                            f'use --corpus generated, or put the seed corpus beside the repo')
    out = []
    for name in sorted(os.listdir(folder)):
        if name.endswith('.xml'):
            with open(os.path.join(folder, name), 'rb') as f:
                out.append((name, f.read()))
    return out


def _max_ids(samples) -> int:
    m = 0
    for _, data in samples:
        for rx in (_REQUEST_ID, _CON_ID):
            for mm in rx.finditer(data):
                m = max(m, int(mm.group(2)))
    return m


def replicate(data: bytes, k: int) -> bytes:
    """Copy k of a document: Request ID and every con_id shifted by k * OFFSET (copy 0 is the original)."""
    if k == 0:
        return data

    def shift(m):
        return m.group(1) + str(int(m.group(2)) + k * OFFSET).encode() + m.group(3)
    return _CON_ID.sub(shift, _REQUEST_ID.sub(shift, data))


def _as_text(data: bytes):
    """Stored as TEXT like the generator's table (a BOM stays in the text); not UTF-8: stored as a BLOB."""
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError:
        return data


def cc_documents(n: int, samples=None) -> Iterator[Tuple[int, object]]:
    samples = samples if samples is not None else load_cc_samples()
    if _max_ids(samples) >= SYNTHETIC_BASE:
        raise ValueError('a CC sample id is >= the synthetic base; raise OFFSET')
    if n > len(samples) * ((2 ** 31 - 1 - OFFSET) // OFFSET):
        raise ValueError(f'--docs {n} is more than this replication scheme can give unique int ids for')
    i = 0
    k = 0
    while i < n:
        for j, (_, data) in enumerate(samples):
            if i >= n:
                break
            m = _REQUEST_ID.search(data)
            base = int(m.group(2)) if m else SYNTHETIC_BASE + j
            yield base + k * OFFSET, _as_text(replicate(data, k))
            i += 1
        k += 1


def _write_table(path, rows, table='app_xml') -> Tuple[int, int]:
    if os.path.exists(path):
        os.remove(path)
    conn = sqlite3.connect(path)
    try:
        conn.execute(f'CREATE TABLE "{table}" (app_id INTEGER PRIMARY KEY, xml TEXT)')
        n = nbytes = 0
        batch = []
        for app_id, xml in rows:
            batch.append((app_id, xml))
            n += 1
            nbytes += len(xml.encode('utf-8')) if isinstance(xml, str) else len(xml)
            if len(batch) >= 500:
                conn.executemany(f'INSERT INTO "{table}" (app_id, xml) VALUES (?, ?)', batch)
                batch = []
        if batch:
            conn.executemany(f'INSERT INTO "{table}" (app_id, xml) VALUES (?, ?)', batch)
        conn.commit()
        return n, nbytes
    finally:
        conn.close()


def cc_tables_spec(out_path: str) -> str:
    """tables.json without its reference tables: the DDL then leaves the FKs to them out."""
    with open(os.path.join(SEED, 'tables.json'), encoding='utf-8') as f:
        spec = json.load(f)
    refs = {t.lower() for t in spec.get('reference_tables') or ['app_enums', 'app_campaign_cc']}
    spec['tables'] = {n: d for n, d in spec['tables'].items() if n.lower() not in refs}
    spec['reference_tables'] = []
    with open(out_path, 'w', encoding='utf-8') as f:
        json.dump(spec, f)
    return out_path


def build(kind: str, n: int, workdir: str, seed: int = 7) -> Corpus:
    os.makedirs(workdir, exist_ok=True)
    db = os.path.join(workdir, 'source.db')
    if kind == 'cc':
        samples = load_cc_samples()
        docs, nbytes = _write_table(db, cc_documents(n, samples))
        return Corpus('cc', f'sqlite:///{db}', 'app_xml', 'xml', os.path.join(SEED, 'contract.json'),
                      cc_tables_spec(os.path.join(workdir, 'cc_tables_no_refs.json')), docs, nbytes)
    if kind == 'generated':
        sys.path.insert(0, REPO)
        from contracts.samples.generate import generate_documents
        docs, nbytes = _write_table(db, generate_documents(n, seed=seed))
        return Corpus('generated', f'sqlite:///{db}', 'app_xml', 'xml', 'credit_app',
                      os.path.join(REPO, 'contracts', 'samples', 'credit_app_tables.json'), docs, nbytes)
    raise ValueError(f'unknown corpus {kind!r} (cc | generated)')


def contract_path(corpus: Corpus) -> str:
    if os.path.exists(corpus.contract):
        return corpus.contract
    return os.path.join(REPO, 'contracts', 'samples', corpus.contract + '.json')


def main(argv=None):
    """Build a corpus into a folder, for runs timed outside the throughput bench (bench/ab_run.sh)."""
    import argparse
    ap = argparse.ArgumentParser(description='Build a benchmark corpus: DIR/source.db (app_xml) and, for cc, '
                                             'DIR/cc_tables_no_refs.json.')
    ap.add_argument('--docs', type=int, required=True, help='documents in the corpus')
    ap.add_argument('--corpus', choices=['cc', 'generated'], default='cc')
    ap.add_argument('--out', required=True, help='folder to build it in')
    a = ap.parse_args(argv)
    c = build(a.corpus, a.docs, a.out)
    print(f'{c.docs} documents, {c.bytes / 2 ** 20:.0f} MB: {c.source_url} (tables {c.tables})')


if __name__ == '__main__':
    main()
