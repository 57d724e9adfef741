"""A folder or glob of .xml files as the source, one document each (app_id from the document): `FileSource`.
The content hash is the sha256 of the bytes read."""
import glob
import hashlib
import logging
import os
from typing import List

import apache_beam as beam

from transforms.io.sources import SourceError, resumed
from transforms.records import Doc

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
                | 'Paths' >> beam.Create(self.paths)
                | 'Spread' >> beam.Reshuffle()
                | 'ReadFile' >> beam.ParDo(ReadFileFn(self.root)))
        return resumed(docs, self.resume)


class FileSource:
    kind = 'files'

    def __init__(self, pattern, limit=None, chunk_docs=None, _paths=None, _root=None, resume=None):
        self.pattern = pattern
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
                          resume=self.resume)

    def chunks(self):
        n = self.chunk_docs
        if not n or len(self.paths) <= n:
            return [self]
        return [FileSource(self.pattern, _paths=self.paths[i:i + n], _root=self.root, resume=self.resume)
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
