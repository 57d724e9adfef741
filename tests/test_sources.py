"""Sources: the partitioned table read returns every row exactly once for any partition count, shard and range;
the file source reads folders and globs."""
import os
import sqlite3

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from transforms.io.files import FileSource, list_xml_files
from transforms.io.sources import ReadOptions, SourceError, shard_of
from transforms.io.tables import TableSource, TableSpec, split_range
from helpers import beam_test_pipeline


def test_split_range_covers_every_id_once():
    for lo, hi, n in [(1, 1, 4), (1, 100, 7), (5, 1000, 8), (10, 12, 10), (1, 2 ** 31 - 1, 16)]:
        parts = split_range(lo, hi, n)
        assert parts[0].lo == lo - 1 and parts[-1].hi == hi
        assert all(a.hi == b.lo for a, b in zip(parts, parts[1:]))
        assert all(p.hi > p.lo for p in parts)
        assert len(parts) <= n
    assert split_range(5, 4, 3) == []


@pytest.fixture(scope='module')
def source_db(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('src') / 'src.db')
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE app_xml (app_id INTEGER PRIMARY KEY, xml TEXT)')
    # Gaps and a NULL xml, like a real staging table.
    ids = [i for i in range(1, 400) if i % 7 != 0] + [1000, 5000, 5001]
    conn.executemany('INSERT INTO app_xml VALUES (?, ?)',
                     [(i, None if i == 13 else f'<Provenir><Request ID="{i}"/></Provenir>') for i in ids])
    conn.commit()
    conn.close()
    return path, ids      # the NULL xml (13) is read too: validation dead-letters it ('xml is NULL')


@pytest.mark.parametrize('partitions', [1, 3, 8, 50])
def test_partitioned_read_returns_every_row_exactly_once(source_db, partitions):
    path, ids = source_db
    opts = ReadOptions(partitions=partitions, fetch_size=17, resume=False)
    src = TableSource(TableSpec(url=f'sqlite:///{path}', table='app_xml', column='xml', schema=None), opts)
    assert src.expected == len(ids)
    with beam_test_pipeline() as p:
        got = (p | src.read()).docs | beam.Map(lambda d: d.app_id)
        assert_that(got, equal_to(ids))


@pytest.mark.parametrize('opts, expect', [
    (dict(app_id_start=50, app_id_end=100), lambda i: 50 <= i <= 100),
    (dict(shard_count=3, shard_index=1), lambda i: shard_of(i, 3) == 1),
    (dict(shard_count=2, shard_index=0, app_id_end=200), lambda i: shard_of(i, 2) == 0 and i <= 200),
])
def test_ranges_and_shards_are_honoured(source_db, opts, expect):
    path, ids = source_db
    src = TableSource(TableSpec(url=f'sqlite:///{path}', table='app_xml', column='xml', schema=None),
                      ReadOptions(partitions=4, fetch_size=10, resume=False, **opts))
    want = [i for i in ids if expect(i)]
    assert src.expected == len(want)
    with beam_test_pipeline() as p:
        assert_that((p | src.read()).docs | beam.Map(lambda d: d.app_id), equal_to(want))



@pytest.mark.parametrize('step', [1, 2, 3, 4, 10, 1000])
def test_shards_of_app_ids_in_steps_are_even_and_every_id_is_in_exactly_one(tmp_path, step):
    """app_id % N put every document of ids stepping by N (or a multiple) in one shard. Each shard's own query
    (the SQL arithmetic) reads its share; together they read every row once, negative and huge ids included."""
    path = str(tmp_path / 'src.db')
    ids = [7 + step * k for k in range(600)] + [-5, -2147483648, 2 ** 63 - 1]
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE app_xml (app_id INTEGER PRIMARY KEY, xml TEXT)')
    conn.executemany('INSERT INTO app_xml VALUES (?, ?)', [(i, '<Provenir/>') for i in ids])
    conn.commit()
    conn.close()
    for n in (2, 3, 4):
        seen = []
        for k in range(n):
            src = TableSource(TableSpec(url=f'sqlite:///{path}', table='app_xml', column='xml', schema=None),
                              ReadOptions(partitions=2, fetch_size=50, resume=False, shard_count=n, shard_index=k))
            with beam_test_pipeline() as p:
                got = (p | src.read()).docs | beam.Map(lambda d: d.app_id)
                want = [i for i in ids if shard_of(i, n) == k]
                assert_that(got, equal_to(want))
            assert abs(len(want) - len(ids) / n) < 0.2 * len(ids) / n, (step, n, k, len(want))
            seen += want
        assert sorted(seen) == sorted(ids)

def test_limit_takes_the_lowest_app_ids(source_db):
    path, ids = source_db
    src = TableSource(TableSpec(url=f'sqlite:///{path}', table='app_xml', column='xml', schema=None),
                      ReadOptions(partitions=5, limit=25, resume=False))
    assert src.expected == 25
    with beam_test_pipeline() as p:
        assert_that((p | src.read()).docs | beam.Map(lambda d: d.app_id), equal_to(sorted(ids)[:25]))


def test_missing_source_table_is_a_clear_error(source_db):
    path, _ = source_db
    with pytest.raises(SourceError, match="source table 'nope' not found"):
        TableSource(TableSpec(url=f'sqlite:///{path}', table='nope', column='xml', schema=None), ReadOptions())


@pytest.mark.parametrize('column, id_column, what', [('app_XML', 'app_id', "no XML column 'app_XML'"),
                                                      ('xml', 'request_id', "no id column 'request_id'")])
def test_a_source_column_that_does_not_exist_is_a_clear_error(tmp_path, column, id_column, what):
    """Before: SQLite reads a double-quoted name that is no column as a string literal, so a wrong column (the CC
    contract says app_XML) read the text 'app_XML' as every document and dead-lettered all of them as 'not XML'."""
    path = str(tmp_path / 'nopk.db')
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE app_xml (app_id INTEGER, xml TEXT)')         # no primary key, like many staging tables
    conn.execute("INSERT INTO app_xml VALUES (1, '<Provenir/>')")
    conn.commit()
    conn.close()
    with pytest.raises(SourceError, match=what + r".*its columns: app_id, xml"):
        TableSource(TableSpec(url=f'sqlite:///{path}', table='app_xml', column=column, schema=None,
                              id_column=id_column), ReadOptions())
    # a column named in another case is the same column for SQLite (and SQL Server), as in their SQL
    src = TableSource(TableSpec(url=f'sqlite:///{path}', table='app_xml', column='XML', schema=None), ReadOptions())
    assert src.expected == 1


def test_a_view_is_a_table_source(source_db, tmp_path):
    """Operators point a migration at a view as often as at a table (a filtered or joined staging table); the
    source-column check must find the view's columns, and the view reads like the table it shows."""
    path, ids = source_db
    view_db = str(tmp_path / 'view.db')
    conn = sqlite3.connect(view_db)
    conn.execute(f"ATTACH DATABASE '{path}' AS src")
    conn.execute('CREATE TABLE app_xml AS SELECT * FROM src.app_xml')
    conn.execute('CREATE VIEW app_xml_odd AS SELECT app_id, xml AS doc FROM app_xml WHERE app_id % 2 = 1')
    conn.commit()
    conn.close()
    spec = TableSpec(url=f'sqlite:///{view_db}', table='app_xml_odd', column='doc', schema=None)
    src = TableSource(spec, ReadOptions(resume=False))
    odd = [i for i in ids if i % 2 == 1]
    assert src.expected == len(odd)
    with beam_test_pipeline() as p:
        assert_that((p | src.read()).docs | beam.Map(lambda d: d.app_id), equal_to(odd))
    with pytest.raises(SourceError, match="no XML column 'xml'.*its columns: app_id, doc"):
        TableSource(spec._replace(column='xml'), ReadOptions())


def test_file_source_reads_folders_and_globs(tmp_path):
    for i in range(3):
        (tmp_path / f'd{i}.xml').write_text(f'<a n="{i}"/>')
    (tmp_path / 'notes.txt').write_text('x')
    assert [os.path.basename(p) for p in list_xml_files(str(tmp_path))] == ['d0.xml', 'd1.xml', 'd2.xml']
    assert len(list_xml_files(str(tmp_path / 'd[12].xml'))) == 2
    src = FileSource(str(tmp_path), limit=2)
    assert src.expected == 2
    with beam_test_pipeline() as p:
        assert_that((p | src.read()).docs | beam.Map(lambda d: (d.source, d.xml)),
                    equal_to([('d0.xml', b'<a n="0"/>'), ('d1.xml', b'<a n="1"/>')]))
    assert src.fetcher()('d1.xml') == b'<a n="1"/>'
    with pytest.raises(SourceError, match='no .xml files'):
        FileSource(str(tmp_path / 'empty*'))


@pytest.mark.parametrize('chunk_docs', [1, 10, 57, 1000])
def test_chunks_cover_the_source_once_in_bounded_runs(source_db, chunk_docs):
    path, ids = source_db
    src = TableSource(TableSpec(url=f'sqlite:///{path}', table='app_xml', column='xml', schema=None),
                      ReadOptions(partitions=3, resume=False), chunk_docs=chunk_docs)
    chunks = src.chunks()
    assert sum(c.expected for c in chunks) == len(ids)
    assert all(c.expected <= chunk_docs for c in chunks)
    for c in chunks[:4] + chunks[-2:]:   # reading every 1-doc chunk would take long; ranges are checked below
        with beam_test_pipeline() as p:
            assert_that((p | c.read()).docs | beam.Map(lambda d: d.app_id),
                        equal_to([i for i in ids if c.partitions[0].lo < i <= c.partitions[-1].hi]))
    bounds = [(c.partitions[0].lo, c.partitions[-1].hi) for c in chunks]
    assert bounds[0][0] < min(ids) and bounds[-1][1] == max(ids)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    for (lo, hi), c in zip(bounds, chunks):
        assert c.expected == sum(1 for i in ids if lo < i <= hi)


@pytest.mark.parametrize('dialect, read', [('mssql', 'tsql'), ('postgresql', 'postgres'), ('sqlite', 'sqlite')])
def test_source_queries_parse_in_each_dialect(dialect, read):
    """SQL Server cannot run here: its source queries (TOP, OFFSET/FETCH, bracket quoting) are checked by a real
    T-SQL parser, as are the other dialects' by theirs."""
    import sqlglot
    from transforms.sql.dialects import get_dialect
    from transforms.io.tables import _Query
    spec = TableSpec(url='x', table='app_xml_staging', column='app_XML', schema='migration')
    q = _Query(spec, get_dialect(dialect), ReadOptions(app_id_start=10, app_id_end=500, shard_count=4,
                                                       shard_index=1))
    for sql, params in [q.bounds(), q.nth_id(25), q.page(99, 500, 100), q.nth_after(99, 500, 25),
                        q.page(99, 500, 100, xml=False), q.hashes([101, 102]), q.fetch([101, 102, 103])]:
        tree = sqlglot.parse_one(sql.replace('?', '1'), read=read)
        tables = {t.name for t in tree.find_all(sqlglot.exp.Table)}
        assert tables == {'app_xml_staging'}, sql
        assert sql.count('?') == len(params)
    page = q.page(99, 500, 100)[0]
    if dialect == 'mssql':
        # app_id, the content hash computed by the server (resume compares it with the ledger), the XML
        assert page.startswith("SELECT TOP (100) [app_id], LOWER(CONVERT(varchar(64), HASHBYTES('SHA2_256', "
                               "CAST([app_XML] AS nvarchar(max))), 2)), [app_XML] FROM [migration].[app_xml_staging]")
        assert 'OFFSET' not in page
    else:
        assert page.endswith('ORDER BY "app_id" LIMIT 100')


@pytest.mark.parametrize('fetch_size', [1, 2, 3, 5])
def test_keyset_pages_never_skip_rows_of_a_repeated_app_id(tmp_path, fetch_size):
    """A staging table without a unique app_id: pages must not lose the rows that share a page boundary's id."""
    path = str(tmp_path / 'dup.db')
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE app_xml (app_id INTEGER, xml TEXT)')
    rows = [(1, 'a'), (2, 'b'), (2, 'c'), (2, 'd'), (3, 'e'), (4, 'f'), (4, 'g'), (5, 'h')]
    conn.executemany('INSERT INTO app_xml VALUES (?, ?)', rows)
    conn.commit()
    conn.close()
    src = TableSource(TableSpec(url=f'sqlite:///{path}', table='app_xml', column='xml', schema=None),
                      ReadOptions(partitions=2, fetch_size=fetch_size, resume=False))
    with beam_test_pipeline() as p:
        # a SQLite source hands over each document's stored bytes (validation decodes them, strictly)
        assert_that((p | src.read()).docs | beam.Map(lambda d: (d.app_id, d.xml.decode('utf-8'))), equal_to(rows))


@pytest.mark.parametrize('ddl, rows, unique', [
    ('CREATE TABLE app_xml (app_id INTEGER PRIMARY KEY, xml TEXT)', [(1, '<a/>'), (2, '<a/>')], True),
    ('CREATE TABLE app_xml (app_id INTEGER, xml TEXT); CREATE UNIQUE INDEX u ON app_xml (app_id)',
     [(1, '<a/>'), (2, '<a/>')], True),
    ('CREATE TABLE app_xml (app_id INTEGER, xml TEXT)', [(1, '<a/>'), (1, '<b/>')], False),
    # a unique index does not stop '2' (text) and 2 (integer) from both being there: both read as app_id 2
    ('CREATE TABLE app_xml (app_id, xml TEXT); CREATE UNIQUE INDEX u ON app_xml (app_id)',
     [(2, '<a/>'), ('2', '<b/>')], False),
])
def test_a_source_keyed_by_app_id_needs_no_dedupe(tmp_path, ddl, rows, unique):
    """The dedupe shuffle (every mapped document through a GroupByKey) is only needed where two source rows can
    carry one app_id; a source whose id column is its key cannot."""
    path = str(tmp_path / 's.db')
    conn = sqlite3.connect(path)
    conn.executescript(ddl)
    conn.executemany('INSERT INTO app_xml VALUES (?, ?)', rows)
    conn.commit()
    conn.close()
    src = TableSource(TableSpec(url=f'sqlite:///{path}', table='app_xml', column='xml', schema=None),
                      ReadOptions(resume=False))
    assert src.unique_ids is unique
    assert all(c.unique_ids is unique for c in src.chunks())


def test_a_sqlite_text_value_is_its_characters_whatever_its_xml_declaration_says(tmp_path):
    """A TEXT value holds characters, stored in the database's encoding (UTF-8): an XML declaration naming another
    encoding describes the file the text once came from, not the value. Read as the value's bytes, such a document
    was decoded as ISO-8859-1 and every accented character written as mojibake ('ZoÃ«'), silently (a PostgreSQL
    source, whose driver hands over characters, wrote 'Zoë'). A BLOB holds the bytes of the file: its
    declaration still decides, and TEXT bytes that are no UTF-8 still go by the declaration."""
    from transforms.text import to_utf8       # how validation turns Doc.xml into the bytes it parses
    path = str(tmp_path / 'src.db')
    latin = '<?xml version="1.0" encoding="ISO-8859-1"?>\n<Provenir><Request ID="{}" note="Zoë Ñandú"/></Provenir>'
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE app_xml (app_id INTEGER PRIMARY KEY, xml TEXT)')
    conn.executemany('INSERT INTO app_xml VALUES (?, ?)', [
        (1, latin.format(1)),                                           # TEXT, declared ISO-8859-1
        (2, latin.format(2).replace('ISO-8859-1', 'windows-1252')),     # TEXT, declared windows-1252
        (3, latin.format(3).encode('latin-1')),                         # BLOB of a Latin-1 file
        (4, latin.format(4).replace('ISO-8859-1', 'UTF-8')),            # TEXT, declared UTF-8
    ])
    # TEXT whose bytes are Latin-1 (a loader that stored a file's bytes as text): not UTF-8, the declaration decides
    conn.execute('INSERT INTO app_xml VALUES (5, CAST(? AS TEXT))', [latin.format(5).encode('latin-1')])
    conn.commit()
    conn.close()
    src = TableSource(TableSpec(url=f'sqlite:///{path}', table='app_xml', column='xml', schema=None),
                      ReadOptions(partitions=1, resume=False))
    with beam_test_pipeline() as p:
        got = (p | src.read()).docs | beam.Map(
            lambda d: (d.app_id, to_utf8(d.xml).decode('utf-8').split('note="')[1].split('"')[0]))
        assert_that(got, equal_to([(i, 'Zoë Ñandú') for i in range(1, 6)]))
    # the dead letter's payload and `explain --source` read the document again by reference: the same text
    from transforms.io.tables import fetch_from_table
    spec = TableSpec(url=f'sqlite:///{path}', table='app_xml', column='xml', schema=None)
    for i in range(1, 6):
        assert 'Zoë Ñandú' in to_utf8(fetch_from_table(spec, i)).decode('utf-8'), i
