"""Reading the completion ledger (processing_log) for resume: which app_ids are already `success`, and with which
content hash (a document whose hash changed is migrated again)."""
import hashlib

from transforms.sql.meta import owner_link
from transforms.sql.targets import parse_target


def doc_key(source) -> str:
    """dead_letter's key of a document: sha1 hex of its `source` reference (a source may be 1,000 characters;
    SQL Server index keys are limited to 900 bytes)."""
    return hashlib.sha1(str(source).encode('utf-8', errors='surrogatepass')).hexdigest()


class Ledger:
    """A connection to the target's processing_log, asked page by page (a page = one keyset page of the source).
    Opening it and every read are retried on transient errors (transforms/sql/retry.py)."""

    def __init__(self, target, db, schema):
        d = target.dialect
        self.db = db
        self.dialect, self.schema = d, (schema if d.supports_schema else None)
        self.table = d.qualify('processing_log', self.schema)
        self.dead_letter = d.qualify('dead_letter', self.schema)
        self.max_params = min(d.max_params, 900)

    @classmethod
    def open(cls, target_url, schema=None, dialect=None):
        target = parse_target(target_url, dialect=dialect)
        db = target.retrying(what=f'resume ledger {target.display}')
        db.open()
        return cls(target, db, schema)

    def done(self, app_ids):
        """{app_id: content_hash or None} for the `app_ids` whose processing_log status is success."""
        ids = list(app_ids)

        def read(cur):
            out = {}
            for i in range(0, len(ids), self.max_params):
                chunk = ids[i:i + self.max_params]
                cur.execute(f"SELECT app_id, content_hash FROM {self.table} WHERE status = 'success' AND app_id IN "
                            f"({', '.join('?' * len(chunk))})", chunk)
                out.update((int(r[0]), r[1]) for r in cur.fetchall())
            return out
        return self.db.run(read, commit=False)

    def done_ids(self, app_ids):
        """The subset of `app_ids` whose processing_log status is success."""
        return set(self.done(app_ids))

    def done_hashes(self, hashes):
        """{content hash: app_id} of those of `hashes` that a processing_log success row records (resume of file
        sources, asked in batches: the index on content_hash answers). The app_id lets the run still see the
        skipped document as the owner of its app_id (DedupeAppIds)."""
        hs = [h for h in dict.fromkeys(hashes) if h]

        def read(cur):
            out = {}
            for i in range(0, len(hs), self.max_params):
                chunk = hs[i:i + self.max_params]
                cur.execute(f"SELECT content_hash, app_id FROM {self.table} WHERE status = 'success' AND "
                            f"content_hash IN ({', '.join('?' * len(chunk))})", chunk)
                out.update((r[0], int(r[1])) for r in cur.fetchall())
            return out
        return self.db.run(read, commit=False) if hs else {}

    def has_table(self, name):
        """Whether the target holds `name` (processing_log or dead_letter) where this ledger reads it."""
        return self.db.run(lambda cur: self.dialect.introspect_table(self.db.conn, self.schema, name) is not None,
                           commit=False)

    def failed_app_ids(self):
        """The app_ids whose latest processing_log status is failed (--only-failed of a table source)."""
        def read(cur):
            cur.execute(f"SELECT app_id FROM {self.table} WHERE status = 'failed'")
            return sorted({int(r[0]) for r in cur.fetchall()})
        return self.db.run(read, commit=False)

    def failed_sources(self):
        """The source references of the documents dead_letter holds now (one current row per failed document:
        --only-failed of a file source, whose documents have no app_id before they are parsed). Not the losers of
        DedupeAppIds (stage dedupe): they did not fail, another file of their app_id was kept, and read alone
        they would replace it."""
        def read(cur):
            cur.execute(f"SELECT source FROM {self.dead_letter} WHERE stage IS NULL OR stage <> 'dedupe'")
            return sorted({r[0] for r in cur.fetchall()})
        return self.db.run(read, commit=False)

    def close(self):
        self.db.close()


def _committed_rows_sql(d, metas, tiers, done_ids_sql):
    """(table, SELECT COUNT(*) statement) for every written table: its rows that belong to the documents of
    `done_ids_sql` (a sub-select of app_ids). A table without an app_id column is reached through a single-column
    FK to a table that has one (as the sink's clean-up of failed documents does)."""
    out = []
    for tier in tiers:
        for t in tier:
            m, link = metas[t], owner_link(metas, t)
            q = d.qualify(m.name, m.schema)
            if link is None:
                continue
            if link.parent is None:
                out.append((t, f'SELECT COUNT(*) FROM {q} WHERE {d.quote("app_id")} IN ({done_ids_sql})'))
            else:
                pq = d.qualify(link.parent.name, link.parent.schema)
                out.append((t, f'SELECT COUNT(*) FROM {q} WHERE {d.quote(link.column)} IN (SELECT '
                               f'{d.quote(link.parent_column)} FROM {pq} WHERE {d.quote("app_id")} IN '
                               f'({done_ids_sql}))'))
    return out


def committed_by_session(target_url, schema, session_id, metas=None, tiers=(), dialect=None, retry=None):
    """What the documents of one session committed, from the target: ({status: {stage: n}}, rows, rows_by_table).

    processing_log is written after the sink has committed a document's rows, so a document there with this
    session_id is committed (success) or dead-lettered (failed); rows are counted in the written tables for the
    session's success documents. This is what an interrupted run reports: the runner's in-memory metrics of a
    chunk that never finished are gone, the database is the truth."""
    target = parse_target(target_url, dialect=dialect)
    d = target.dialect
    pl = d.qualify('processing_log', schema if d.supports_schema else None)
    done = (f'SELECT {d.quote("app_id")} FROM {pl} WHERE {d.quote("session_id")} = ? AND '
            f"{d.quote('status')} = 'success'")
    plan = _committed_rows_sql(d, metas or {}, tiers, done) if metas else []

    def count(cur):
        cur.execute(f'SELECT {d.quote("status")}, {d.quote("stage")}, COUNT(*) FROM {pl} '
                    f'WHERE {d.quote("session_id")} = ? GROUP BY {d.quote("status")}, {d.quote("stage")}',
                    [session_id])
        by_status = {}
        for status, stage, n in cur.fetchall():
            by_status.setdefault(status, {})[stage or ''] = int(n)
        by_table = {}
        for t, sql in plan:
            cur.execute(sql, [session_id])
            by_table[t] = int(cur.fetchone()[0])
        return by_status, sum(by_table.values()), by_table
    db = target.retrying(what='counting what this run committed', retry=retry)
    try:
        return db.run(count, commit=False)
    finally:
        db.close()
