"""A table in a database as the source (`sqlite:///PATH` or `odbc:...`): `TableSource`.

`app_id, xml` rows of a table in a database (`sqlite:///PATH` or `odbc:...`), read as a
  partitioned read like Beam's JdbcIO `readWithPartitions`: the app_id range is split into N partitions at launch
  (from min/max), the partitions are reshuffled, and each is read with its own connection and keyset pagination
  (`app_id > last ORDER BY app_id`), never OFFSET. Sharding (a hash of the app_id: `sources.shard_sql`) is applied
  in the query. Resume is per page: the page is first read as app_ids and looked up in the target's
  processing_log; the source database computes the content hash (sha256 of the XML text) of the ones already
  `success`; only documents not yet `success`, or whose hash changed, have their XML read.

(About 460 lines on purpose: planning (bounds, partitions, chunks, misfit ids), the checks of the source and the
partitioned, resumable reader share one table spec and one connection discipline.)
"""
import logging
import os
from typing import List, NamedTuple, Optional, Tuple

import apache_beam as beam

from transforms.io.sources import ReadOptions, ReadResult, SourceError, shard_sql
from transforms.records import SKIPPED_TAG, Doc
from transforms.text import database_text

log = logging.getLogger(__name__)


class Partition(NamedTuple):
    lo: int      # exclusive
    hi: int      # inclusive


MISFITS = Partition(0, -1)   # not a range: the rows whose app_id is not an integer (SQLite sources)


def split_range(lo, hi, n) -> List[Partition]:
    """Split the inclusive app_id range [lo, hi] into at most n contiguous partitions (lo exclusive bounds)."""
    if hi < lo:
        return []
    n = max(1, min(n, hi - lo + 1))
    step = (hi - lo + 1) / n
    bounds = [lo - 1] + [lo - 1 + int(round(step * i)) for i in range(1, n)] + [hi]
    return [Partition(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


class TableSpec(NamedTuple):
    url: str
    table: str
    column: str
    schema: Optional[str]
    id_column: str = 'app_id'
    dialect: Optional[str] = None


def _connect(url, dialect=None):
    from transforms.sql.targets import parse_target
    target = parse_target(url, dialect=dialect)
    path = target.sqlite_path
    if path and path != ':memory:' and not path.startswith('file:') and not os.path.exists(path):
        # sqlite3 would create an empty database there, and the run would then stop on a missing table
        raise SourceError(f'source database {target.display} does not exist')
    return target, target.connect()


class IdList(NamedTuple):
    """A partition given as app_ids (--app-ids, --only-failed): read with `app_id IN (...)`, no range scan."""
    ids: Tuple[int, ...]


class _Query:
    """SQL for one table source in one dialect (paging and id conditions are the dialect's)."""

    def __init__(self, spec: TableSpec, dialect, opts: ReadOptions):
        self.d = dialect
        try:
            self.t = dialect.qualify(spec.table, spec.schema)
            self.id = dialect.quote(spec.id_column)
            self.col = dialect.document_column_sql(dialect.quote(spec.column))
        except Exception as e:
            raise SourceError(str(e)) from None
        self.hash = dialect.content_hash_sql(self.col)
        # SQLite: whether each document is a TEXT value (characters) or a BLOB (a file's bytes): see `xml_of`
        self.kind = dialect.document_kind_sql(dialect.quote(spec.column))
        # Rows with a NULL xml are read (and dead-lettered by validation: 'xml is NULL'), never skipped silently.
        # SQLite columns may hold non-integer app_ids: the keyset reads take the integers, `misfits()` the rest.
        where = [dialect.integer_ids(self.id)]
        params = []
        if opts.app_id_start is not None:
            where.append(f'{self.id} >= ?'); params.append(opts.app_id_start)
        if opts.app_id_end is not None:
            where.append(f'{self.id} <= ?'); params.append(opts.app_id_end)
        if opts.shard_count:
            where.append(f'{shard_sql(self.id)} % ? = ?'); params += [opts.shard_count, opts.shard_index]
        self.where, self.params = where, params

    @property
    def has_misfits(self):
        return self.d.misfit_ids is not None

    def misfits(self, cols=None):
        """SQLite only: the rows whose app_id is not an integer (text, real, blob or NULL)."""
        return (f"SELECT {cols or self._cols(True)} FROM {self.t} WHERE {self.d.misfit_ids(self.id)}", [])

    def bounds(self):
        return (f'SELECT MIN({self.id}), MAX({self.id}), COUNT(*) FROM {self.t} WHERE ' + ' AND '.join(self.where),
                list(self.params))

    def nth_id(self, n):
        """The app_id of the n-th row (1-based) in app_id order: the inclusive end for --limit."""
        return (self.d.select_rows(self.id, self.t, ' AND '.join(self.where), self.id, limit=1, offset=True),
                list(self.params) + [n - 1])

    def nth_after(self, after, hi, n):
        """The app_id n rows (1-based) after `after`, within `hi`: a chunk boundary found by keyset, not OFFSET
        from the start."""
        w = ' AND '.join(self.where + [f'{self.id} > ?', f'{self.id} <= ?'])
        return self.d.select_rows(self.id, self.t, w, self.id, limit=1, offset=True), \
            list(self.params) + [after, hi, n - 1]

    def _cols(self, xml):
        if not xml:
            return self.id
        return f'{self.id}, {self.hash}, {self.col}' + (f', {self.kind}' if self.kind else '')

    def document(self):
        """SELECT list of one document read again by reference: the XML (and its kind, see `xml_of`)."""
        return self.col + (f', {self.kind}' if self.kind else '')

    def xml_of(self, row, at=2):
        """The document of a row read with `_cols(True)` (at 2) or `document()` (at 0), its kind after it: a
        TEXT value's bytes are characters in UTF-8 (transforms/text.py: database_text)."""
        xml = row[at]
        return database_text(xml) if self.kind and row[at + 1] == 'text' else xml

    def same_id(self, app_id, xml=True):
        """Every row of one app_id (a source table whose app_id is not unique)."""
        return (f'SELECT {self._cols(xml)} FROM {self.t} WHERE ' + ' AND '.join(self.where + [f'{self.id} = ?']),
                list(self.params) + [app_id])

    def page(self, after, hi, size, xml=True):
        """One keyset page: (app_id, content hash, xml) rows; with xml=False only the app_ids (resume asks the
        ledger first, then reads hashes / XML of just the documents that need them)."""
        w = ' AND '.join(self.where + [f'{self.id} > ?', f'{self.id} <= ?'])
        return self.d.select_rows(self._cols(xml), self.t, w, self.id, limit=size), list(self.params) + [after, hi]

    def _in(self, cols, app_ids):
        w = ' AND '.join(self.where + [f'{self.id} IN ({", ".join("?" * len(app_ids))})'])
        return f'SELECT {cols} FROM {self.t} WHERE {w} ORDER BY {self.id}', list(self.params) + list(app_ids)

    def hashes(self, app_ids):
        """(app_id, content hash) of the rows of `app_ids`: computed by the server, the XML does not travel."""
        return self._in(f'{self.id}, {self.hash}', app_ids)

    def fetch(self, app_ids, xml=True):
        """(app_id, content hash, xml) of the rows of `app_ids` (one page's documents that resume does not skip);
        with xml=False only their app_ids."""
        return self._in(self._cols(xml), app_ids)


def _plan_ids(cur, q, opts, chunk_docs):
    """--app-ids / --only-failed: the listed app_ids that are in the source (within its range and shard), in
    IdList partitions of fetch_size ids, and chunks of at most chunk_docs of them."""
    ids = sorted(opts.app_ids)
    present = []
    for i in range(0, len(ids), 500):
        cur.execute(*q.fetch(ids[i:i + 500], xml=False))
        present.extend(int(r[0]) for r in cur.fetchall())
    present = sorted(set(present))
    missing = len(set(ids)) - len(present)
    if opts.limit is not None:
        present = present[:opts.limit]
    if missing:
        log.warning('%d of the %d app_ids asked for are not in the source (or not in its range / shard)', missing,
                    len(set(ids)))
    size = max(1, opts.fetch_size)
    per = chunk_docs or len(present) or 1
    chunks = []
    for c in range(0, len(present), per):
        group = present[c:c + per]
        chunks.append(([IdList(tuple(group[i:i + size])) for i in range(0, len(group), size)], len(group)))
    return chunks or [([], 0)]


def plan_partitions(spec: TableSpec, opts: ReadOptions, chunk_docs=None):
    """At launch: check the source is readable and plan its reads. Returns (partitions, row_count, chunks,
    unique): the app_id range split into partitions, `chunks`, the (partitions, rows) of successive runs of at most
    `chunk_docs` rows each (keyset boundaries), and whether no two rows can share an app_id (primary key or unique
    index on the id column). With `opts.app_ids` the partitions are lists of those ids."""
    try:
        target, conn = _connect(spec.url, spec.dialect)
    except Exception as e:
        raise SourceError(f'cannot open the source: {e}') from None
    try:
        q = _Query(spec, target.dialect, opts)
        meta = _check_source_columns(conn, target, spec)
        unique = _ids_are_unique(conn, target, spec, meta)
        cur = conn.cursor()
        try:
            cur.execute(*q.bounds())
        except Exception as e:
            raise SourceError(f'cannot read source table {spec.table!r} ({spec.column}, {spec.id_column}) '
                              f'in {target.display}: {_first_line(e)}') from None
        lo, hi, count = cur.fetchone()
        if opts.app_ids is not None:
            chunks = _plan_ids(cur, q, opts, chunk_docs)
            return [p for parts, _ in chunks for p in parts], sum(n for _, n in chunks), chunks, unique
        misfits = []
        # (read by the first shard only when sharded: every row of the table is read by exactly one shard)
        if q.has_misfits and opts.app_id_start is None and opts.app_id_end is None \
                and (not opts.shard_count or opts.shard_index == 0) and opts.limit is None:
            cur.execute(q.misfits('COUNT(*)')[0])
            n_misfits = int(cur.fetchone()[0])
            if n_misfits:
                misfits, count = [MISFITS], int(count or 0) + n_misfits
        # rows whose app_id is no integer (SQLite) may read as the app_id of another row ('12' and 12)
        unique = unique and not misfits
        if lo is None:
            return misfits, int(count or 0), ([(misfits, count)] if misfits else []), unique
        lo, hi, count = int(lo), int(hi), int(count)
        if opts.limit is not None and opts.limit < count:
            cur.execute(*q.nth_id(opts.limit))
            hi, count = int(cur.fetchone()[0]), opts.limit
        chunks, after = [], lo - 1
        if chunk_docs and count > chunk_docs:
            while True:
                cur.execute(*q.nth_after(after, hi, chunk_docs))
                row = cur.fetchone()
                if row is None or int(row[0]) >= hi:
                    break
                chunks.append((after, int(row[0]), chunk_docs))
                after = int(row[0])
        chunks.append((after, hi, count - (chunk_docs or 0) * len(chunks)))
        plans = [(split_range(a + 1, b, opts.partitions) + (misfits if i == 0 else []), n)
                 for i, (a, b, n) in enumerate(chunks)]      # the misfits are read once, with the first chunk
        return split_range(lo, hi, opts.partitions) + misfits, count, plans, unique
    finally:
        conn.close()


def _check_source_columns(conn, target, spec: TableSpec):
    """The source table and its XML and id columns must exist. SQLite reads a double-quoted name that is no column
    as a string literal: without this check a wrong --source-column would read that name as every document's
    text (each one dead-lettered as 'not XML') instead of stopping with one clear line."""
    d = target.dialect
    try:
        meta = d.introspect_table(conn, spec.schema, spec.table, views=True)
    except Exception:
        return          # the bounds query below reports an unreadable table with the driver's message
    if meta is None:
        where = f' in schema {spec.schema!r}' if spec.schema else ''
        raise SourceError(f'source table {spec.table!r} not found{where} in {target.display}')
    names = [c.name for c in meta.columns]
    fold = (lambda n: n) if d.case_sensitive_names else str.lower
    folded = {fold(n) for n in names}
    for what, col, opt in (('XML column', spec.column, '--source-column'), ('id column', spec.id_column, None)):
        if fold(col) not in folded:
            hint = f' (set it with {opt})' if opt else ''
            raise SourceError(f'source table {spec.table!r} has no {what} {col!r}{hint}; its columns: '
                              f'{", ".join(names)}')
    return meta


def _ids_are_unique(conn, target, spec: TableSpec, meta) -> bool:
    """True when the source's id column is its primary key or has a unique index: no two rows share an app_id,
    so the run needs no dedupe shuffle (a document's app_id must equal its row's, parse checks it)."""
    if meta is None:
        return False
    if [k.lower() for k in meta.primary_key] == [spec.id_column.lower()]:
        return True
    try:
        return bool(target.dialect.has_unique_index(conn, spec.schema, spec.table, spec.id_column))
    except Exception:
        return False


def _first_line(e):
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__


class ReadPartitionFn(beam.DoFn):
    """Reads one app_id partition with keyset pagination, one connection per bundle. Opening the connection
    and every page read are retried on transient errors (transforms/sql/retry.py): a page is a keyset query from
    the last app_id read, so reading it again after a reconnect neither skips nor repeats a document.

    With resume, each page is read as app_ids first and looked up in processing_log; for the app_ids that are
    `success` there the source database computes the content hash (the XML does not travel), and a document whose
    hash is the one recorded (or whose success row has no hash: written by an earlier version) is skipped. Only
    the other documents' XML is read. Without resume a page carries the XML directly. So a first run reads each
    document once, and a resumed run never transfers the XML of a document it skips."""

    def __init__(self, spec: TableSpec, opts: ReadOptions, resume_target=None, resume_schema=None):
        self.spec, self.opts = spec, opts
        self.resume_target, self.resume_schema = resume_target, resume_schema
        self.skipped = beam.metrics.Metrics.counter('migration', 'docs_skipped_done')
        self.db = self.ledger = None

    def start_bundle(self):
        self.db = self.ledger = None

    def _open(self):
        from transforms.sql.targets import parse_target
        target = parse_target(self.spec.url, dialect=self.spec.dialect)
        self.db = target.retrying(what=f'source {target.display}')
        self.db.open()
        self.q = _Query(self.spec, target.dialect, self.opts)
        self.max_params = min(target.dialect.max_params, 900)
        if self.opts.resume and self.resume_target:
            from transforms.sql.ledger import Ledger
            self.ledger = Ledger.open(self.resume_target, self.resume_schema)

    def _fetch(self, sql_params):
        sql, params = sql_params
        return self.db.run(lambda cur: (cur.execute(sql, params), cur.fetchall())[1], commit=False)

    def process(self, part):
        if self.db is None:
            self._open()
        if isinstance(part, IdList):
            keys_only = self.ledger is not None
            for i in range(0, len(part.ids), self.max_params):
                page = self._fetch(self.q.fetch(part.ids[i:i + self.max_params], xml=not keys_only))
                yield from (self._resumed(page) if keys_only else self._docs(page))
            return
        if part == MISFITS:
            # Non-integer app_ids: read so that validation dead-letters them ('source app_id is not an integer').
            for row in self._fetch(self.q.misfits()):
                app_id, h = row[0], row[1]
                yield Doc(source=f'{self.spec.table}:{app_id}', app_id='' if app_id is None else app_id,
                          xml=self.q.xml_of(row), content_hash=h)
            return
        after = part.lo
        size = self.opts.fetch_size
        keys_only = self.ledger is not None
        while True:
            page = self._fetch(self.q.page(after, part.hi, size, xml=not keys_only))
            if not page:
                break
            full = len(page) == size
            if full:
                # A source whose app_id is not unique: rows sharing the last app_id may continue on the next
                # page, and `app_id > last` would skip them. Leave that app_id to the next page; if the whole
                # page is one app_id, read all of its rows at once.
                last = int(page[-1][0])
                trimmed = [r for r in page if int(r[0]) != last]
                if trimmed:
                    page = trimmed
                else:
                    page = self._fetch(self.q.same_id(last, xml=not keys_only))
            yield from (self._resumed(page) if keys_only else self._docs(page))
            after = int(page[-1][0])
            if not full:
                break

    def _docs(self, rows):
        for row in rows:
            app_id = int(row[0])
            yield Doc(source=f'{self.spec.table}:{app_id}', app_id=app_id, xml=self.q.xml_of(row),
                      content_hash=row[1])

    def _resumed(self, page):
        """app_id rows of one page -> Docs of the documents not already done in this version."""
        rows = {}
        for r in page:
            rows[int(r[0])] = rows.get(int(r[0]), 0) + 1        # a source whose app_id is not unique: rows per id
        done = self.ledger.done(list(rows))
        skip = {a for a, h in done.items() if h is None}       # success before content hashes existed
        check = [a for a, h in done.items() if h is not None]
        for i in range(0, len(check), self.max_params):
            hashes = {}
            for app_id, h in self._fetch(self.q.hashes(check[i:i + self.max_params])):
                hashes.setdefault(int(app_id), []).append(h)
            skip.update(a for a, hs in hashes.items() if all(h == done[a] for h in hs))
        todo = [a for a in rows if a not in skip]
        n_skipped = sum(rows[a] for a in rows if a in skip)
        if n_skipped:
            self.skipped.inc(n_skipped)
            yield beam.pvalue.TaggedOutput(SKIPPED_TAG, n_skipped)
        for i in range(0, len(todo), self.max_params):
            yield from self._docs(self._fetch(self.q.fetch(todo[i:i + self.max_params])))

    def finish_bundle(self):
        self.teardown()

    def teardown(self):
        for c in (getattr(self, 'db', None), getattr(self, 'ledger', None)):
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass
        self.db = self.ledger = None


class ReadTable(beam.PTransform):
    """PBegin -> ReadResult(docs, skipped): the partitions, spread over the workers, each read by its own
    connection; `skipped` holds counts of documents resume skipped."""

    def __init__(self, spec: TableSpec, opts: ReadOptions, partitions, resume_target=None, resume_schema=None):
        super().__init__()
        self.spec, self.opts, self.partitions = spec, opts, partitions
        self.resume_target, self.resume_schema = resume_target, resume_schema

    def expand(self, pbegin):
        res = (pbegin
               | 'Partitions' >> beam.Create(self.partitions, reshuffle=False)    # spread just below
               | 'Spread' >> beam.Reshuffle()
               | 'ReadPartition' >> beam.ParDo(ReadPartitionFn(self.spec, self.opts, self.resume_target,
                                                               self.resume_schema)).with_outputs(SKIPPED_TAG,
                                                                                                 main='docs'))
        return ReadResult(res.docs, res[SKIPPED_TAG])


class _TableFetcher:
    """Reads a document's XML again by its source reference (a failed document's payload for the dead letter).
    One connection, opened at the first call and kept until `close()` (the caller's bundle ends), with the
    transient-error retry of every connection a worker opens."""

    def __init__(self, spec):
        self.spec = spec
        self.db = self.q = None

    def __getstate__(self):
        return {'spec': self.spec}

    def __setstate__(self, state):
        self.spec, self.db, self.q = state['spec'], None, None

    def __call__(self, source_ref):
        if self.db is None:
            from transforms.sql.targets import parse_target
            target = parse_target(self.spec.url, dialect=self.spec.dialect)
            self.q = _Query(self.spec, target.dialect, ReadOptions())
            self.db = target.retrying(what=f'source {target.display}')
        app_id = int(source_ref.rsplit(':', 1)[1])

        def read(cur):
            cur.execute(f'SELECT {self.q.document()} FROM {self.q.t} WHERE {self.q.id} = ?', [app_id])
            return cur.fetchone()
        row = self.db.run(read, commit=False)
        return None if row is None else self.q.xml_of(row, 0)

    def close(self):
        if self.db is not None:
            self.db.close()
            self.db = None


def fetch_from_table(spec: TableSpec, app_id):
    """One document's XML read again by app_id."""
    f = _TableFetcher(spec)
    try:
        return f(f'{spec.table}:{app_id}')
    finally:
        f.close()


class TableSource:
    kind = 'table'

    def __init__(self, spec: TableSpec, opts: ReadOptions, resume_target=None, resume_schema=None,
                 chunk_docs=None, _plan=None):
        self.spec, self.opts = spec, opts
        self.resume_target, self.resume_schema = resume_target, resume_schema
        self.partitions, self.count, self._chunks, self.unique_ids = _plan or plan_partitions(spec, opts,
                                                                                             chunk_docs)

    @property
    def expected(self):
        return self.count

    def read(self):
        return ReadTable(self.spec, self.opts, self.partitions, self.resume_target, self.resume_schema)

    def chunks(self):
        """Sources for successive pipeline runs of at most chunk_docs documents each (bounded memory)."""
        if len(self._chunks) <= 1:
            return [self]
        return [TableSource(self.spec, self.opts, self.resume_target, self.resume_schema,
                            _plan=(parts, n, [(parts, n)], self.unique_ids)) for parts, n in self._chunks]

    def fetcher(self):
        return _TableFetcher(self.spec)

    def describe(self):
        from transforms.sql.targets import parse_target
        return (f'table {self.spec.table}.{self.spec.column} in {parse_target(self.spec.url).display}: '
                f'{self.count} rows in {len(self.partitions)} partitions')
