"""Sources: where the documents come from, as IO transforms beside the sink. `make_source(--source, ...)`."""
import os

from transforms.errors import StageError
from transforms.io.container import StreamError, StreamFileSource, root_name
from transforms.io.files import FileSource, shard_files
from transforms.io.sources import ReadOptions, SourceError
from transforms.io.tables import TableSource, TableSpec


def folder_shards(paths, contract, opts: ReadOptions):
    """The files of each of opts.shard_count shards, by the app_id at each file's start (files.shard_files)."""
    from transforms.parse import ParseSpec
    return shard_files(paths, ParseSpec.from_contract(contract), opts.shard_count, opts.max_doc_bytes)


def make_source(url_or_path, contract, source_table=None, source_column=None, opts: ReadOptions = ReadOptions(),
                resume_target=None, resume_schema=None, dialect=None, chunk_docs=None, record_element=None):
    """A source from the --source option: sqlite:///PATH, odbc:..., or a folder/glob of .xml files."""
    if url_or_path.startswith(('sqlite:', 'odbc:')):
        table, schema = source_table or contract.source_table, None
        if '.' in table:
            schema, table = table.split('.', 1)
        elif not url_or_path.startswith('sqlite:'):
            schema = contract.target_schema
        spec = TableSpec(url=url_or_path, table=table, column=source_column or contract.source_column,
                         schema=schema, dialect=dialect)
        return TableSource(spec, opts, resume_target if opts.resume else None, resume_schema, chunk_docs=chunk_docs)
    resume = (resume_target, resume_schema, dialect) if opts.resume and resume_target else None
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
            src = StreamFileSource(url_or_path, record_element or contract.root_element, limit=opts.limit,
                                   chunk_docs=chunk_docs, resume=resume)
            return src.only(opts.only_sources) if opts.only_sources is not None else src
    src = FileSource(url_or_path, limit=opts.limit, chunk_docs=chunk_docs, resume=resume)
    if opts.shard_count:
        # By the app_id at each file's start, so that the files of one app_id share a shard (a shard may be
        # left without files: it reads nothing)
        if opts.shard_paths is not None:
            paths = list(opts.shard_paths)            # --processes: the launcher's one scan
        else:
            paths = folder_shards(src.paths, contract, opts)[opts.shard_index]
        src = FileSource(url_or_path, chunk_docs=chunk_docs, _paths=paths, _root=src.root, resume=resume,
                         shard=(opts.shard_count, opts.shard_index))
    return src.only(opts.only_sources) if opts.only_sources is not None else src
