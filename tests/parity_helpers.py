"""Parity driver: map the seed corpus with our mapper and write rows in the comparison tool's format.

    python tests/parity_helpers.py CORPUS_DIR OUT.jsonl [--time]

CORPUS_DIR holds contract.json and xml/. Documents that do not parse or that the mapper rejects are listed on stderr
with the error class only.
"""
import datetime as dt
import json
import os
import sys
import time

from lxml import etree

from contracts import MappingError, compile_contract, load_contract

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = os.path.normpath(os.path.join(REPO, '..', 'shared', 'seed-corpus'))
TOOL = os.path.normpath(os.path.join(REPO, '..', 'shared', 'tools', 'compare_rows.py'))


def hardened_parser():
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True)


def _json_default(v):
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    raise TypeError(type(v).__name__)


def parse_corpus(corpus_dir):
    """[(file name, root or None, error)] for every document of the corpus, sorted by name."""
    parser = hardened_parser()
    xml_dir = os.path.join(corpus_dir, 'xml')
    out = []
    for name in sorted(os.listdir(xml_dir)):
        if not name.endswith('.xml'):
            continue
        try:
            root = etree.parse(os.path.join(xml_dir, name), parser).getroot()
            out.append((name, root, None))
        except etree.XMLSyntaxError as e:
            out.append((name, None, f'parse: {e.__class__.__name__}'))
    return out


def map_corpus(corpus_dir, compiled=None):
    """(rows as dicts ready for JSONL, {file: error}) over the corpus."""
    compiled = compiled or compile_contract(load_contract(os.path.join(corpus_dir, 'contract.json')))
    lines, errors = [], {}
    for name, root, err in parse_corpus(corpus_dir):
        if root is None:
            errors[name] = err
            continue
        try:
            res = compiled.map(root)
        except MappingError as e:
            errors[name] = f'mapping: {e}'
            continue
        for table, rows in res.rows.items():
            for row in rows:
                lines.append({'file': name, 'app_id': res.app_id, 'table': table, 'row': row})
    return lines, errors


def write_rows(lines, path):
    with open(path, 'w', encoding='utf-8') as f:
        for rec in lines:
            f.write(json.dumps(rec, default=_json_default) + '\n')


def time_mapper(corpus_dir, repeat=3):
    """docs/min of map() alone (documents parsed beforehand), best of ``repeat`` passes."""
    compiled = compile_contract(load_contract(os.path.join(corpus_dir, 'contract.json')))
    roots = [r for _, r, _ in parse_corpus(corpus_dir) if r is not None]
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = 0
        for r in roots:
            try:
                compiled.map(r)
                n += 1
            except MappingError:
                n += 1
        el = time.perf_counter() - t0
        best = el if best is None else min(best, el)
    return len(roots), best, len(roots) / best * 60.0


def main(argv):
    corpus, out = argv[0], argv[1]
    lines, errors = map_corpus(corpus)
    write_rows(lines, out)
    for name, err in sorted(errors.items()):
        print(f'{name}: {err}', file=sys.stderr)
    print(f'{len(lines)} rows written, {len(errors)} documents rejected', file=sys.stderr)
    if '--time' in argv:
        n, sec, rate = time_mapper(corpus)
        print(f'map(): {n} docs in {sec:.3f}s = {rate:,.0f} docs/min', file=sys.stderr)


if __name__ == '__main__':
    main(sys.argv[1:])
