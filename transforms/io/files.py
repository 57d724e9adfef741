"""A folder or glob of .xml files as the source, one document each (app_id from the document): `FileSource`.
The content hash is the sha256 of the bytes read."""
import glob
import hashlib
import logging
import os
import time
from typing import List, Optional, Sequence, Tuple

import apache_beam as beam

from transforms.errors import StageError
from transforms.io.sources import SourceError, resumed, shard_of
from transforms.parse import head_app_id
from transforms.records import Doc
from transforms.validate import decoded

log = logging.getLogger(__name__)


def list_xml_files(pattern) -> List[str]:
    """A folder (its *.xml files, sorted) or a glob pattern."""
    if os.path.isdir(pattern):
        paths = sorted(glob.glob(os.path.join(pattern, '*.xml')))
    else:
        paths = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    return paths


def _common_root(paths):
    if not paths:
        return ''
    return os.path.dirname(paths[0]) if len(paths) == 1 else os.path.commonpath([os.path.dirname(p) for p in paths])


_HEAD_BLOCK = 16 * 1024     # read at a time
_HEAD_PIECE = 1024          # parsed at a time: the app_id's element usually starts within the first KB


def _pieces(blocks):
    for block in blocks:
        for i in range(0, len(block), _HEAD_PIECE):
            yield block[i:i + _HEAD_PIECE]


def file_app_id(path, spec, max_bytes=None) -> Optional[int]:
    """The app_id the parse stage will find in the file, read from its start (`transforms.parse.head_app_id`);
    a file that does not parse as it is read (leading blanks before its declaration, say) is decoded as
    validation decodes it and scanned again. None: the file gives none (it will be dead-lettered), or it is over
    `max_bytes` (validation refuses it for its size before any parser sees it)."""
    try:
        if max_bytes is not None and os.path.getsize(path) > max_bytes:
            return None
        with open(path, 'rb') as f:
            found = head_app_id(_pieces(iter(lambda: f.read(_HEAD_BLOCK), b'')), spec)
            if found is not None:
                return found
            f.seek(0)
            data = f.read()
    except OSError:
        return None
    try:
        data = decoded(data)
    except StageError:
        return None
    return head_app_id(_pieces([data]), spec)


def shard_files(paths: Sequence[str], spec, count: int, max_bytes=None) -> List[List[str]]:
    """The files of each of `count` shards: a file goes to the shard of its app_id (the hash table sources
    shard by), so that all files of one app_id are in one shard and its DedupeAppIds keeps one of them, as one
    process does; a file without an app_id at its start (it will be dead-lettered) goes by its position.
    --processes scans once in the launcher and hands each shard its list (ReadOptions.shard_paths); a run
    given --shard-count/--shard-index scans the folder itself (the files must not change between the shards'
    runs: a file whose app_id changed in between could be read by two shards or by none)."""
    t0 = time.monotonic()
    if len(paths) >= 1000:         # about 60 us a file here: say what the launcher is doing before the shards start
        log.info('reading the start of %d files for their app_ids, to assign them to %d shards', len(paths), count)
    got, by_position = [[] for _ in range(count)], 0
    for i, path in enumerate(paths):
        a = file_app_id(path, spec, max_bytes)
        if a is None:
            by_position += 1
        got[i % count if a is None else shard_of(a, count)].append(path)
    log.info('%d files assigned to %d shards by the app_id at the start of each (%.1f s)%s', len(paths), count,
             time.monotonic() - t0, f'; {by_position} without one, by position' if by_position else '')
    return got


class ReadFileFn(beam.DoFn):
    def __init__(self, root):
        self.root = root

    def process(self, path):
        name = os.path.relpath(path, self.root) if self.root else path
        try:
            with open(path, 'rb') as f:
                data = f.read()
        except OSError as e:
            # The file vanished or is unreadable: still one document read, dead-lettered by validation.
            log.warning('cannot read %s: %s', name, e.strerror)
            data = None
        yield Doc(source=name, app_id=None, xml=data,
                  content_hash=None if data is None else hashlib.sha256(data).hexdigest())


class ReadFiles(beam.PTransform):
    """PBegin -> ReadResult(docs, skipped): the files spread over the workers, each read as one document;
    with `resume` (target url, schema, dialect) the ones migrated as they are now are skipped."""

    def __init__(self, paths, root, resume=None):
        super().__init__()
        self.paths, self.root, self.resume = paths, root, resume

    def expand(self, pbegin):
        docs = (pbegin
                | 'Paths' >> beam.Create(self.paths, reshuffle=False)    # spread just below
                | 'Spread' >> beam.Reshuffle()
                | 'ReadFile' >> beam.ParDo(ReadFileFn(self.root)))
        return resumed(docs, self.resume)


class FileSource:
    kind = 'files'

    def __init__(self, pattern, limit=None, chunk_docs=None, _paths=None, _root=None, resume=None,
                 shard: Optional[Tuple[int, int]] = None):
        self.pattern = pattern
        self.shard = shard            # (count, index): this shard's files, assigned by app_id (shard_files)
        self.paths = _paths if _paths is not None else list_xml_files(pattern)
        if limit is not None:
            self.paths = self.paths[:limit]
        self.root = _root if _root is not None else _common_root(self.paths)
        self.chunk_docs = chunk_docs
        self.resume = resume          # (target url, schema, dialect): skip documents done in this version
        if not self.paths and _paths is None:
            raise SourceError(f'no .xml files found at {pattern!r}')

    def only(self, sources):
        """This source restricted to the documents whose source reference is in `sources` (--only-failed)."""
        want = set(sources)
        paths = [p for p in self.paths if (os.path.relpath(p, self.root) if self.root else p) in want]
        log.info('%d of the %d files of the source are listed to be read (the dead_letter ones for --only-failed)',
                 len(paths), len(self.paths))
        # none failed: a run that reads nothing (as a table source's --only-failed with no failed app_id)
        return FileSource(self.pattern, chunk_docs=self.chunk_docs, _paths=paths, _root=self.root,
                          resume=self.resume, shard=self.shard)

    def chunks(self):
        n = self.chunk_docs
        if not n or len(self.paths) <= n:
            return [self]
        return [FileSource(self.pattern, _paths=self.paths[i:i + n], _root=self.root, resume=self.resume,
                           shard=self.shard)
                for i in range(0, len(self.paths), n)]

    def fetcher(self):
        return _FileFetcher(self.root)

    @property
    def expected(self):
        return len(self.paths)

    def read(self):
        return ReadFiles(self.paths, self.root, self.resume)

    def describe(self):
        return f'{len(self.paths)} files under {self.root or "."}'


class _FileFetcher:
    def __init__(self, root):
        self.root = root

    def __call__(self, source_ref):
        with open(os.path.join(self.root, source_ref), 'rb') as f:
            return f.read()
