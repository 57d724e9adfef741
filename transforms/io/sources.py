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
    """What a source's `read()` transform gives: the documents, and counts of those resume skipped."""
    docs: Any
    skipped: Any


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


def resumed(docs, resume):
    """ReadResult of a source's documents; with `resume` (target url, schema, dialect), those done and unchanged
    are skipped (transforms/io/resume.py) and counted."""
    import apache_beam as beam
    if not resume:
        return ReadResult(docs, docs.pipeline | 'NoneSkipped' >> beam.Create([]))
    from transforms.io.resume import SkipUnchanged
    kept, skipped = docs | 'SkipUnchanged' >> SkipUnchanged(*resume)
    return ReadResult(kept, skipped)
