"""One large XML file with many documents, streamed record by record in constant memory."""
import json
import os
import re
import subprocess
import sys


from pipeline.cli import main as cli
from contracts.samples.generate import generate_documents
from transforms.io.container import StreamFileSource, count_records
from helpers import summary_counts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DECL = re.compile(r'^\ufeff?\s*<\?xml[^>]*\?>\s*')


def write_container(path, n, seed=2, tail=''):
    docs = []
    with open(path, 'w', encoding='utf-8') as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<Export created="test">\n')
        for app_id, xml in generate_documents(n, seed=seed, broken_fraction=0.0):
            body = DECL.sub('', xml.lstrip('\ufeff'))
            docs.append((app_id, body))
            f.write(body)
            f.write('\n')
        f.write(tail or '</Export>\n')
    return docs


summary = summary_counts


def test_container_maps_like_the_same_documents_as_files(tmp_path, capsys):
    docs = write_container(tmp_path / 'export.xml', 60)
    folder = tmp_path / 'files'
    folder.mkdir()
    for app_id, body in docs:
        (folder / f'{app_id}.xml').write_text(body, encoding='utf-8')
    assert cli(['map', '--contract', 'credit_app', '--input', str(tmp_path / 'export.xml'),
                '--output', str(tmp_path / 'a.jsonl'), '--chunk-docs', '25']) == 0
    read, written, dead, rows = summary(capsys.readouterr().out)
    assert (read, written + dead) == (60, 60)
    assert cli(['map', '--contract', 'credit_app', '--input', str(folder), '--output', str(tmp_path / 'b.jsonl')]) == 0
    assert summary(capsys.readouterr().out)[:3] == (read, written, dead)

    def rows_of(p):
        return sorted(json.dumps([r['app_id'], r['table'], r['row']], sort_keys=True) for r in map(json.loads, open(p)))
    assert rows_of(tmp_path / 'a.jsonl') == rows_of(tmp_path / 'b.jsonl')
    first = json.loads(open(tmp_path / 'a.jsonl').readline())
    assert re.fullmatch(r'export\.xml#\d+', first['file'])


def test_unreadable_rest_of_a_container_is_one_dead_letter(tmp_path, capsys):
    path = tmp_path / 'cut.xml'
    write_container(path, 10, tail='<Provenir><Request ID="1"><broken></Export>')
    assert count_records(str(path), 'Provenir') == 10
    rc = cli(['map', '--contract', 'credit_app', '--input', str(path), '--output', str(tmp_path / 'r.jsonl'),
              '--dead-letter', str(tmp_path / 'dl.jsonl')])
    read, written, dead, _ = summary(capsys.readouterr().out)
    assert rc == 0 and read == written + dead and written == 10 and dead == 1
    dl = [json.loads(x) for x in open(tmp_path / 'dl.jsonl')]
    assert dl[0]['stage'] == 'read' and 'not well-formed from record 10' in dl[0]['reason']
    assert dl[0]['source'] == 'cut.xml#10..'


def test_a_container_error_is_named_where_it_is_and_without_the_text_of_the_document(tmp_path, capsys, caplog):
    """iterparse raises the last error libxml2 logged ('Start tag expected' at line 1, column 1 after an undefined
    entity): the reason names the first one and its position, never its message, which quotes the entity's name
    (text of the document)."""
    path = tmp_path / 'ent.xml'
    docs = write_container(path, 4)
    text = path.read_text(encoding='utf-8')
    second = docs[1][1]
    assert 'first_name="' in second
    path.write_text(text.replace(second, second.replace('first_name="', 'first_name="&Smithers;', 1)),
                    encoding='utf-8')
    rc = cli(['map', '--contract', 'credit_app', '--input', str(path), '--output', str(tmp_path / 'r.jsonl'),
              '--dead-letter', str(tmp_path / 'dl.jsonl')])
    out = capsys.readouterr()
    read, written, dead, _ = summary(out.out)
    assert rc == 0 and (written, dead) == (1, 1)
    (dl,) = [json.loads(x) for x in open(tmp_path / 'dl.jsonl')]
    assert re.search(r'from record 1 on \(ERR_UNDECLARED_ENTITY at line \d+, column \d+\)', dl['reason']), dl['reason']
    assert 'line 1, column 1' not in dl['reason']
    assert 'Smithers' not in dl['reason'] and 'Smithers' not in out.err and 'Smithers' not in caplog.text


def test_container_with_a_doctype_is_refused_before_any_data_moves(tmp_path, capsys):
    path = tmp_path / 'dtd.xml'
    path.write_text('<!DOCTYPE Export [<!ENTITY x SYSTEM "file:///etc/passwd">]><Export>&x;</Export>')
    rc = cli(['map', '--contract', 'credit_app', '--input', str(path), '--output', str(tmp_path / 'r.jsonl')])
    assert rc == 2 and 'DOCTYPE' in capsys.readouterr().err


def test_streaming_a_large_container_keeps_memory_flat(tmp_path):
    """Stream ~60 MB in a child process: its peak RSS grows far less than the file (a full parse would hold
    several times the file size)."""
    path = tmp_path / 'big.xml'
    docs = write_container(path, 700, seed=9)
    size_mb = os.path.getsize(path) / 2 ** 20
    assert size_mb > 40
    code = (
        'import resource, sys\n'
        'from transforms.io.container import StreamRecordsFn\n'
        'before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n'
        'n = sum(1 for _ in StreamRecordsFn("Provenir", "big.xml").process(sys.argv[1]))\n'
        'after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n'
        'print(n, (after - before) / 1024)\n')
    out = subprocess.run([sys.executable, '-c', code, str(path)], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    n, grew_mb = int(out[0]), float(out[1])
    assert n == len(docs)
    assert grew_mb < max(25.0, size_mb / 3), f'peak RSS grew {grew_mb:.0f} MB streaming {size_mb:.0f} MB'


def test_chunks_of_a_container_cover_it_once(tmp_path):
    path = tmp_path / 'c.xml'
    write_container(path, 23)
    src = StreamFileSource(str(path), 'Provenir', chunk_docs=10)
    chunks = src.chunks()
    assert [c.range for c in chunks] == [(0, 10), (10, 20), (20, 23)]
    assert src.fetcher()('c.xml#22').startswith(b'<Provenir')


def test_limit_on_a_chunked_container_reads_only_the_limit(tmp_path, capsys):
    """The last chunk reads on to the end of the file only when it ends with the file's last record."""
    path = tmp_path / 'l.xml'
    write_container(path, 25)
    assert cli(['map', '--contract', 'credit_app', '--input', str(path), '--output', str(tmp_path / 'r.jsonl'),
                '--limit', '15', '--chunk-docs', '10']) == 0
    assert summary(capsys.readouterr().out)[0] == 15
