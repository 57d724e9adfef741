"""Bring the project's own tables (processing_log, dead_letter) created by an earlier version up to date.

Earlier versions created processing_log without `content_hash` and without a unique key on app_id (two runs at
once could leave two rows for one app_id), and dead_letter with one row per failure per run (no doc_key,
session_id, attempts, last_seen_at). A run refuses such a target with a one-line error naming what is missing
and the command that upgrades it (`create-tables`, or `run --create-tables`); that command, in one transaction:

* adds the missing columns (NULL, or NOT NULL with a constant default);
* processing_log: keeps the latest row per app_id (highest log_id), deletes the others, adds the unique index;
* dead_letter: computes doc_key (sha1 of source) for every row, keeps one row per document (the latest, with
  attempts = the number of rows it had, created_at = the first, last_seen_at = the last), adds the unique index.

Every step is skipped when already done, so running it again changes nothing. Tables that do not exist are left
to CREATE TABLE.
"""
import logging
from typing import Iterable, List, Optional

from transforms.sql.ddl import PROJECT_TABLES, _col_def, ddl_statements, project_index_statements
from transforms.sql.dialects import get_dialect
from transforms.sql.ledger import doc_key
from transforms.sql.meta import ColumnMeta, _column_from_spec

log = logging.getLogger(__name__)


def _spec_columns(table):
    return [_column_from_spec(table, c) for c in PROJECT_TABLES[table]['columns']]


def _unique_keys(table):
    return [list(u) for u in PROJECT_TABLES[table].get('unique_indexes') or []]


def _tables():
    return list(PROJECT_TABLES)


def problems(conn, dialect, schema: Optional[str] = None, metas=None) -> List[str]:
    """What the existing project tables lack (empty when they are up to date or do not exist). `metas`: their
    TableMeta when already introspected."""
    d = get_dialect(dialect)
    out = []
    for table in _tables():
        live = (metas or {}).get(table) or d.introspect_table(conn, schema, table)
        if live is None:
            continue
        for col in _spec_columns(table):
            if live.column(col.name) is None:
                out.append(f'{table}.{col.name}')
        for key in _unique_keys(table):
            if live.column(key[0]) is not None and not d.has_unique_index(conn, schema, table, key[0]):
                out.append(f'a unique index on {table}.{key[0]}')
    return out


def add_column_sql(d, table: str, col: ColumnMeta, schema) -> str:
    return f'ALTER TABLE {d.qualify(table, schema)} ADD {_col_def(d, col, False)}'


def dedupe_processing_log_sql(d, schema) -> str:
    t = d.qualify('processing_log', schema)
    return (f'DELETE FROM {t} WHERE {d.quote("log_id")} NOT IN (SELECT MAX({d.quote("log_id")}) FROM {t} '
            f'GROUP BY {d.quote("app_id")})')


def dead_letter_backfill_sql(d, schema, n_delete: int = 1):
    """(SELECT of every row, UPDATE of the row kept per document, DELETE of `n_delete` repeated rows by id)."""
    t = d.qualify('dead_letter', schema)
    q = d.quote
    return (f'SELECT {q("id")}, {q("source")}, {q("created_at")} FROM {t} ORDER BY {q("id")}',
            f'UPDATE {t} SET {q("doc_key")} = ?, {q("attempts")} = ?, {q("created_at")} = COALESCE(?, '
            f'{q("created_at")}), {q("last_seen_at")} = ? WHERE {q("id")} = ?',
            f'DELETE FROM {t} WHERE {q("id")} IN ({", ".join("?" * n_delete)})')


def _dedupe_dead_letters(cur, d, schema) -> int:
    """doc_key for every row; one row per doc_key (the latest), attempts = rows it had. Returns rows deleted."""
    select, update, _ = dead_letter_backfill_sql(d, schema)
    cur.execute(select)
    groups = {}
    for rid, source, created in cur.fetchall():
        groups.setdefault(doc_key(source), []).append((rid, created))
    updates, deletes = [], []
    for key, items in groups.items():
        times = [c for _, c in items if c is not None]
        updates.append((key, len(items), min(times) if times else None, max(times) if times else None,
                        items[-1][0]))
        deletes.extend(rid for rid, _ in items[:-1])
    if updates:
        cur.executemany(update, updates)
    for i in range(0, len(deletes), 500):
        chunk = deletes[i:i + 500]
        cur.execute(dead_letter_backfill_sql(d, schema, len(chunk))[2], chunk)
    return len(deletes)


def upgrade_project_tables(conn, dialect, schema: Optional[str] = None) -> List[str]:
    """Upgrade processing_log / dead_letter in place on `conn` (the caller commits). Returns (and logs) one line
    per table changed; nothing for tables that are up to date or missing."""
    d = get_dialect(dialect)
    schema = schema if d.supports_schema else None
    lines = []
    cur = conn.cursor()
    for table in _tables():
        live = d.introspect_table(conn, schema, table)
        if live is None:
            continue
        done = []
        added = [c for c in _spec_columns(table) if live.column(c.name) is None]
        for col in added:
            cur.execute(add_column_sql(d, table, col, schema))
        if added:
            done.append('added column(s) ' + ', '.join(c.name for c in added))
        keys = [k for k in _unique_keys(table) if not d.has_unique_index(conn, schema, table, k[0])]
        if keys:
            if table == 'processing_log':
                cur.execute(dedupe_processing_log_sql(d, schema))
                n = max(cur.rowcount or 0, 0)
                if n:
                    done.append(f'removed {n} duplicate row(s), keeping the latest per app_id')
            elif table == 'dead_letter':
                n = _dedupe_dead_letters(cur, d, schema)
                done.append('set doc_key' + (f', merged {n} repeated row(s) into one per document (attempts '
                                             f'counts them)' if n else ''))
            for st in project_index_statements(d, table, schema):
                cur.execute(d.executable(st))
            done.append('unique index on ' + ', '.join(k[0] for k in keys))
        if done:
            lines.append(f'upgraded {table} (created by an earlier version): ' + '; '.join(done))
    for ln in lines:
        log.info('%s', ln)
    return lines


def create_tables(target, spec, schema: Optional[str] = None, include_fks: bool = True,
                  skip_tables: Iterable[str] = (), project_tables: bool = True) -> List[str]:
    """Execute ddl_statements on `target` (a Target or url) in one transaction. Idempotent. Project tables that
    an earlier version created are upgraded first (transforms/sql/upgrade.py: missing columns, duplicate rows,
    unique keys), which the CREATE ... IF NOT EXISTS statements alone would leave as they were."""
    from transforms.sql.targets import parse_target
    if isinstance(target, str):
        target = parse_target(target)
    stmts = ddl_statements(spec, target.dialect_name, schema, include_fks, skip_tables, project_tables)
    conn = target.connect()
    try:
        if project_tables:
            upgrade_project_tables(conn, target.dialect_name, schema)
        cur = conn.cursor()
        for st in stmts:
            cur.execute(target.dialect.executable(st))
        conn.commit()
    except Exception as e:
        try:
            conn.rollback()
        except Exception:
            pass
        raise RuntimeError(f'create_tables on {target.display}: {target.scrub(e)}') from None
    finally:
        conn.close()
    return stmts
