"""A single large XML file holding many documents (e.g. an export `<Export><Provenir>…</Provenir>…</Export>`),
streamed record by record with lxml `iterparse` in constant memory: each record element is serialised as one
document and then cleared, together with the siblings before it, so the tree never grows.

The container is parsed with the same hardened options as documents (no entities, no DTD, no network); a
container with a DOCTYPE is refused before any data moves. A syntax error inside the container ends the stream
at that point: the unreadable rest becomes one dead letter that says from which record on it was lost.
"""
import hashlib
import logging
import os

import apache_beam as beam
from lxml import etree

from transforms.errors import StageError
from transforms.io.sources import SourceError, resumed
from transforms.parse import error_name_and_place
from transforms.records import DeadLetter, Doc

log = logging.getLogger(__name__)
PEEK = 64 * 1024
ITERPARSE_OPTIONS = dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                         remove_comments=True, remove_pis=True)


class StreamError(Exception):
    pass


def root_name(path):
    """The root element's local name of an XML file (from its first bytes), or None; refuses a DOCTYPE."""
    with open(path, 'rb') as f:
        head = f.read(PEEK)
    from transforms.text import decode_payload, prolog_end
    text = None
    for cut in range(4):          # the peek may end inside a multi-byte character
        try:
            text = decode_payload(head[:len(head) - cut]).lstrip('\ufeff \t\r\n')
            break
        except StageError:
            if cut == 3 or len(head) < PEEK:
                raise
    start = prolog_end(text)
    start = start[0] if isinstance(start, tuple) else start
    if start < 0:
        return None
    if text.startswith('<!', start):
        raise StreamError(f'{path}: DOCTYPE / entity declarations are not allowed in a source file')
    name = text[start + 1:].split(None, 1)[0].split('>', 1)[0].rstrip('/')
    return name.split(':')[-1] or None


def _iter_records(path, tag):
    ctx = etree.iterparse(path, events=('end',), tag=tag, **ITERPARSE_OPTIONS)
    for _, el in ctx:
        yield el
        # Constant memory: drop this record and everything before it.
        el.clear(keep_tail=False)
        parent = el.getparent()
        if parent is not None:
            while el.getprevious() is not None:
                del parent[0]


def count_records(path, tag):
    n = 0
    try:
        for _ in _iter_records(path, tag):
            n += 1
    except etree.XMLSyntaxError:
        pass       # the stream ends there; the reader dead-letters the rest
    return n


def syntax_error_where(e, path=None) -> str:
    """What went wrong in the container at `path`, as libxml2's error name and position: the first error it logged
    for that file (iterparse raises the last one, often a misleading 'Start tag expected' at line 1, column 1; its
    log is the thread's, so it also holds the errors of files parsed before), never its message, which may quote
    fragments of values (an undefined entity's name is text of the document)."""
    for x in (getattr(e, 'error_log', None) or ()):
        if x.level_name in ('ERROR', 'FATAL') and (path is None or x.filename == path):
            return error_name_and_place(x.type, x.line, x.column)
    line, col = (getattr(e, 'position', None) or (None, None))[:2]
    return error_name_and_place(getattr(e, 'code', None), line, col)


class StreamRecordsFn(beam.DoFn):
    """path → Doc per record in [start, stop) (record indexes), or a DeadLetter for an unreadable rest."""

    def __init__(self, tag, name, start=0, stop=None):
        self.tag, self.name, self.start, self.stop = tag, name, start, stop

    def process(self, path):
        i = 0
        try:
            for el in _iter_records(path, self.tag):
                if self.stop is not None and i >= self.stop:
                    return
                if i >= self.start:
                    xml = etree.tostring(el, encoding='utf-8', with_tail=False)
                    yield Doc(source=f'{self.name}#{i}', app_id=None, xml=xml,
                              content_hash=hashlib.sha256(xml).hexdigest())
                i += 1
        except etree.XMLSyntaxError as e:
            if self.stop is None or i < self.stop:
                msg = syntax_error_where(e, path)
                log.warning('%s: the container is not well-formed from record %d on: %s', self.name, i, msg)
                yield DeadLetter(source=f'{self.name}#{max(i, self.start)}..', app_id=None, stage='read',
                                 reason=f'container file is not well-formed from record {max(i, self.start)} '
                                        f'on ({msg}); the records after it cannot be read', payload=None)


class _StreamFetcher:
    def __init__(self, path, tag):
        self.path, self.tag = path, tag

    def __call__(self, source_ref):
        want = int(source_ref.rsplit('#', 1)[1])
        for i, el in enumerate(_iter_records(self.path, self.tag)):
            if i == want:
                return etree.tostring(el, encoding='utf-8', with_tail=False)
        return None


ONLY_FAILED_REFUSED = ('--only-failed reads the failed documents again; one file of many documents is read whole: '
                       'run it again without --only-failed (resume skips the done ones)')


def is_container(path, root_element) -> bool:
    """Whether `path` is one file of many documents (its root is not the contract's root element); False where
    its start cannot be read (make_source reports that)."""
    try:
        root = root_name(path)
    except (StreamError, StageError):
        return False
    return bool(root) and root != root_element


class StreamFileSource:
    """--source FILE.xml whose root is not the contract's root element: its record elements are the documents."""
    kind = 'stream'

    def __init__(self, path, tag, limit=None, chunk_docs=None, _range=None, _count=None, resume=None):
        self.path, self.tag, self.chunk_docs, self.resume = path, tag, chunk_docs, resume
        self.name = os.path.basename(path)
        self.total = _count if _count is not None else count_records(path, tag)   # readable records
        end = self.total if limit is None else min(self.total, limit)
        self.range = _range or (0, end)
        self.count = self.range[1] - self.range[0]

    @property
    def expected(self):
        return self.count

    def read(self):
        start, stop = self.range
        # The chunk that ends with the last readable record reads on to the end of the file, so that an
        # unreadable rest reaches the dead letter.
        path, fn = self.path, StreamRecordsFn(self.tag, self.name, start, None if stop >= self.total else stop)
        resume = self.resume

        class _Read(beam.PTransform):
            def expand(self, pbegin):
                return resumed(pbegin | 'File' >> beam.Create([path]) | 'Records' >> beam.ParDo(fn), resume)
        return _Read()

    def only(self, sources):
        raise SourceError(ONLY_FAILED_REFUSED)

    def chunks(self):
        n = self.chunk_docs
        a, b = self.range
        if not n or self.count <= n:
            return [self]
        return [StreamFileSource(self.path, self.tag, _range=(i, min(i + n, b)), _count=self.total,
                                 resume=self.resume) for i in range(a, b, n)]

    def fetcher(self):
        return _StreamFetcher(self.path, self.tag)

    def describe(self):
        return f'{self.count} <{self.tag}> records streamed from {self.name}'
