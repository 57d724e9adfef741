"""Reading the completion ledger (processing_log) for resume: which app_ids are already `success`, and with which
content hash (a document whose hash changed is migrated again)."""
import hashlib

from pipeline.db.targets import parse_target


def doc_key(source) -> str:
    """dead_letter's key of a document: sha1 hex of its `source` reference (a source may be 1,000 characters;
    SQL Server index keys are limited to 900 bytes)."""
    return hashlib.sha1(str(source).encode('utf-8', errors='surrogatepass')).hexdigest()


class Ledger:
    """A connection to the target's processing_log, asked page by page (a page = one keyset page of the source)."""

    def __init__(self, target, conn, schema):
        d = target.dialect
        self.conn = conn
        self.table = d.qualify('processing_log', schema if d.supports_schema else None)
        self.max_params = min(d.max_params, 900)

    @classmethod
    def open(cls, target_url, schema=None):
        target = parse_target(target_url)
        return cls(target, target.connect(), schema)

    def done(self, app_ids):
        """{app_id: content_hash or None} for the `app_ids` whose processing_log status is success."""
        out = {}
        cur = self.conn.cursor()
        ids = list(app_ids)
        for i in range(0, len(ids), self.max_params):
            chunk = ids[i:i + self.max_params]
            cur.execute(f"SELECT app_id, content_hash FROM {self.table} WHERE status = 'success' AND app_id IN "
                        f"({', '.join('?' * len(chunk))})", chunk)
            out.update((int(r[0]), r[1]) for r in cur.fetchall())
        self.conn.rollback()
        return out

    def done_ids(self, app_ids):
        """The subset of `app_ids` whose processing_log status is success."""
        return set(self.done(app_ids))

    def close(self):
        self.conn.close()
