"""What every source shares: `SourceError`, the reading options, what a source's read gives (`ReadResult`) and the
resume step of sources without app_ids (`resumed`). `transforms.io.make_source` turns --source into a source. Sources are IO transforms beside the sink: `tables.TableSource` (a table in a database),
`files.FileSource` (a folder or glob of .xml files), `container.StreamFileSource` (one XML file holding many
documents). Each reads `Doc` records, can fetch one document again by its `source` reference (for the dead
letter's payload) and splits itself into chunks (successive runs of bounded size).
"""
from typing import Any, NamedTuple, Optional, Tuple



class SourceError(Exception):
    """A source that cannot be read at all (before any data moves): clear message, no password."""


class ReadResult(NamedTuple):
    """What a source's `read()` transform gives: the documents, counts of those resume skipped and, for sources
    that learn app_ids from the XML, the (app_id, source) of each skipped document (None: no such keys)."""
    docs: Any
    skipped: Any
    skipped_keys: Any = None


# Table sources: which shard an app_id belongs to. A multiplicative hash modulo the prime 2^31 - 1 (Fishman and
# Moore's multiplier: large, so that even the smallest ids wrap and their parity is mixed), not `app_id % count`:
# app_ids that step by the shard count (every 2nd, every 10th, ids handed out in blocks) would all land in one
# shard, and the bench corpus's replicated ids left one of two shards with 54 % of the bytes. Exact integer
# arithmetic below 2^61 in every dialect (the residue first, then the product), negative ids included.
SHARD_PRIME, SHARD_MULTIPLIER = 2147483647, 742938285


def shard_of(app_id: int, count: int) -> int:
    """The shard (0 .. count-1) of an app_id: the same arithmetic as `shard_sql`."""
    return (app_id % SHARD_PRIME) * SHARD_MULTIPLIER % SHARD_PRIME % count


def shard_sql(id_sql: str) -> str:
    """SQL for the shard of the integer column `id_sql`, to compare with a shard index: `<this> % ? = ?` binds the
    shard count and index. SQL's % keeps the dividend's sign (Python's does not): the residue is made non-negative."""
    return (f'((CAST({id_sql} AS BIGINT) % {SHARD_PRIME} + {SHARD_PRIME}) % {SHARD_PRIME}) * {SHARD_MULTIPLIER} '
            f'% {SHARD_PRIME}')


class ReadOptions(NamedTuple):
    app_id_start: Optional[int] = None
    app_id_end: Optional[int] = None
    limit: Optional[int] = None
    partitions: int = 8
    shard_count: Optional[int] = None
    shard_index: Optional[int] = None
    fetch_size: int = 100
    resume: bool = True
    app_ids: Optional[Tuple[int, ...]] = None       # read only these (--app-ids, --only-failed on a table source)
    only_sources: Optional[Tuple[str, ...]] = None  # files: read only these source references (--only-failed)
    shard_paths: Optional[Tuple[str, ...]] = None   # files: this shard's files, as the launcher assigned them
    max_doc_bytes: Optional[int] = None             # files over it are not scanned for an app_id (too large anyway)


def resumed(docs, resume):
    """ReadResult of a source's documents; with `resume` (target url, schema, dialect), those done and unchanged
    are skipped (transforms/io/resume.py) and counted."""
    import apache_beam as beam
    if not resume:
        return ReadResult(docs, docs.pipeline | 'NoneSkipped' >> beam.Create([]))
    from transforms.io.resume import SkipUnchanged
    kept, skipped, keys = docs | 'SkipUnchanged' >> SkipUnchanged(*resume)
    return ReadResult(kept, skipped, keys)
