"""Reading the completion ledger (processing_log) for resume: which app_ids are already `success`."""
from pipeline.db.targets import parse_target


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

    def done_ids(self, app_ids):
        """The subset of `app_ids` whose processing_log status is success."""
        done = set()
        cur = self.conn.cursor()
        ids = list(app_ids)
        for i in range(0, len(ids), self.max_params):
            chunk = ids[i:i + self.max_params]
            cur.execute(f"SELECT app_id FROM {self.table} WHERE status = 'success' AND app_id IN "
                        f"({', '.join('?' * len(chunk))})", chunk)
            done.update(int(r[0]) for r in cur.fetchall())
        self.conn.rollback()
        return done

    def close(self):
        self.conn.close()
