"""What every source shares: `SourceError`, the reading options, and `make_source` (the --source option to a
source). Sources are IO transforms beside the sink: `tables.TableSource` (a table in a database),
`files.FileSource` (a folder or glob of .xml files), `container.StreamFileSource` (one XML file holding many
documents). Each reads `Doc` records, can fetch one document again by its `source` reference (for the dead
letter's payload) and splits itself into chunks (successive runs of bounded size).
"""
import os
from typing import NamedTuple, Optional

from transforms.errors import StageError


class SourceError(Exception):
    """A source that cannot be read at all (before any data moves): clear message, no password."""


class ReadOptions(NamedTuple):
    app_id_start: Optional[int] = None
    app_id_end: Optional[int] = None
    limit: Optional[int] = None
    partitions: int = 8
    shard_count: Optional[int] = None
    shard_index: Optional[int] = None
    fetch_size: int = 100
    resume: bool = True


def make_source(url_or_path, contract, source_table=None, source_column=None, opts: ReadOptions = ReadOptions(),
                resume_target=None, resume_schema=None, dialect=None, chunk_docs=None, record_element=None):
    """A source from the --source option: sqlite:///PATH, odbc:..., or a folder/glob of .xml files."""
    from transforms.io.container import StreamError, StreamFileSource, root_name
    from transforms.io.files import FileSource
    from transforms.io.tables import TableSource, TableSpec
    if url_or_path.startswith(('sqlite:', 'odbc:')):
        table, schema = source_table or contract.source_table, None
        if '.' in table:
            schema, table = table.split('.', 1)
        elif not url_or_path.startswith('sqlite:'):
            schema = contract.target_schema
        spec = TableSpec(url=url_or_path, table=table, column=source_column or contract.source_column,
                         schema=schema, dialect=dialect)
        return TableSource(spec, opts, resume_target if opts.resume else None, resume_schema, chunk_docs=chunk_docs)
    if os.path.isfile(url_or_path):
        # One file: a document, or a container of many (its root is not the contract's root element).
        try:
            root = root_name(url_or_path)
        except (StreamError, StageError) as e:
            raise SourceError(str(e)) from None
        if root and root != contract.root_element:
            if opts.shard_count:
                raise SourceError('one container file cannot be sharded (--shard-count/--processes): every shard '
                                  'would parse the whole file; split it, or run one process')
            return StreamFileSource(url_or_path, record_element or contract.root_element, limit=opts.limit,
                                    chunk_docs=chunk_docs)
    src = FileSource(url_or_path, limit=opts.limit, chunk_docs=chunk_docs)
    if opts.shard_count:
        # Files have no app_id before parsing: shard them by position in the sorted listing.
        paths = src.paths[opts.shard_index::opts.shard_count]
        if not paths:
            raise SourceError(f'shard {opts.shard_index} of {opts.shard_count} has no files at {url_or_path!r}')
        src = FileSource(url_or_path, chunk_docs=chunk_docs, _paths=paths, _root=src.root)
    return src
