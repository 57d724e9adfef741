"""Stage 2, parse: a hardened lxml parse and the structural checks that need the tree.

Hardened: no entity resolution, no DTD loading, no network, no huge-tree mode (libxml2 keeps its depth and size
safety limits), comments and processing instructions dropped. The validate stage has already refused any document
with a DOCTYPE or entity declaration.

Every document is checked to be well-formed from its first byte to its last, in both modes, by libxml2 with a
parser target that builds nothing (`_check_wellformed`: about 250 MB/s here, against about 90 MB/s for a tree).

Partial parsing: the compiled contract knows the element after whose end no mapping needs data
(`stop_after_path`, e.g. /Provenir/Request/CustData/application). In `partial` mode only the bytes up to the end
of that element become a tree: Provenir documents carry large bureau blocks after the application data. If the rest
of the document holds another element on the way to the data the contract reads (a second <application>, a second
<Request>, ...), the whole document becomes a tree instead, so partial and full parsing give the same rows and the
same outcome for every document.

Pure core: `parse_document(doc, spec) -> ParsedDoc`, raising `StageError`. Beam wrapper: `ParseFn`.
"""
import logging
import re
import time
from typing import NamedTuple, Optional, Tuple

import apache_beam as beam
from lxml import etree

from transforms.errors import StageError
from transforms.records import Doc
from transforms.stage import run_stage
from transforms.validate import parse_app_id

log = logging.getLogger(__name__)
STAGE = 'parse'
CHUNK = 16 * 1024

PARSER_OPTIONS = dict(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                      huge_tree=False, remove_comments=True, remove_pis=True, collect_ids=False)


def hardened_parser():
    return etree.XMLParser(**PARSER_OPTIONS)


class _NoTree:
    """A parser target that keeps nothing: libxml2 still checks every byte (well-formedness, its safety limits)."""

    def close(self):
        return None


class _Depth(_NoTree):
    """A parser target that only measures nesting (for a --max-depth below libxml2's own 256)."""

    def __init__(self):
        self.depth = self.deepest = 0

    def start(self, tag, attrib):
        self.depth += 1
        if self.depth > self.deepest:
            self.deepest = self.depth

    def end(self, tag):
        self.depth -= 1


class ParseSpec(NamedTuple):
    """What the parse stage needs to know of the contract."""
    root_element: str                       # e.g. Provenir
    application_path: str                   # e.g. /Provenir/Request/CustData/application
    app_id_source: Tuple[str, str]          # (xml_path, attribute) of the app_id, e.g. ('/Provenir/Request', 'ID')
    stop_after_path: Optional[str] = None   # partial parsing stops when this element closes
    mode: str = 'partial'                   # partial | full
    max_depth: int = 256
    max_seconds: float = 20.0               # wall time of one document's decoding + parse, checked per 16 KB
    shard: Optional[Tuple[int, int]] = None  # (count, index): files assigned to shards by app_id (head_app_id)

    @classmethod
    def from_contract(cls, contract, compiled=None, mode='partial', max_depth=256, max_seconds=20.0):
        stop = getattr(compiled, 'stop_after_path', None) if compiled is not None else None
        return cls(root_element=contract.root_element, application_path=contract.application_path,
                   app_id_source=tuple(contract.app_id_source), stop_after_path=stop, mode=mode,
                   max_depth=max_depth, max_seconds=max_seconds)


class ParsedDoc:
    """A parsed document. Fused stages (parse and map always fuse on the runners measured) pass it in memory. When
    an engine does put a stage boundary here, it pickles to the bytes its tree was built from (`head`: in partial
    mode only the part up to the stop element, closed), so the other side re-parses only that part of a document
    already known to be well-formed: cheap and deterministic."""
    __slots__ = ('source', 'app_id', 'root', 'xml', 'original', 'content_hash', 'head')

    def __init__(self, source, app_id, root, xml, original=None, content_hash=None, head=None):
        self.source, self.app_id, self.root, self.xml = source, app_id, root, xml
        self.original = original    # the payload as read, when validation rewrote it (for the dead letter)
        self.content_hash = content_hash
        self.head = head            # the bytes `root` was parsed from (None: all of `xml`)

    def __reduce__(self):
        return (_unpickle_parsed, (self.source, self.app_id, self.xml, self.original, self.content_hash,
                                   self.head))

    def __repr__(self):
        return f'ParsedDoc(source={self.source!r}, app_id={self.app_id!r})'


def _unpickle_parsed(source, app_id, xml, original=None, content_hash=None, head=None):
    root = etree.fromstring(head if head is not None else xml, hardened_parser())
    return ParsedDoc(source, app_id, root, xml, original, content_hash, head)


def _rel_steps(path):
    return [s for s in path.strip('/').split('/') if s]


class _Clock:
    """The parse's time budget, checked between chunks (libxml2 cannot be interrupted inside one)."""

    def __init__(self, max_seconds):
        self.max_seconds = max_seconds
        self.deadline = time.monotonic() + max_seconds if max_seconds and max_seconds > 0 else None

    def check(self):
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise StageError(STAGE, f'parsing took longer than {self.max_seconds:g} s (--max-parse-seconds)')


def _feed(parser, data, clock):
    """The whole document into `parser`, in chunks so that the time budget is checked as it goes."""
    if clock is None or clock.deadline is None or len(data) <= CHUNK:
        return etree.fromstring(data, parser)
    view = memoryview(data)
    for off in range(0, len(data), CHUNK):
        parser.feed(bytes(view[off:off + CHUNK]))
        clock.check()
    return parser.close()


def _raise_logged(parser):
    """A parser that builds no tree (or has not been closed) logs some errors without raising them: an undefined
    namespace prefix, for one, which a tree parse refuses. Raised here, so that every way of checking a document
    refuses what a whole tree parse refuses."""
    errors = parser.error_log.filter_from_errors() or parser.feed_error_log.filter_from_errors()
    if errors:
        e = errors[0]
        raise etree.XMLSyntaxError(e.message, e.type, e.line, e.column, None)


def _check_wellformed(data, clock=None, max_depth=256):
    """Raise XMLSyntaxError unless the whole document is well-formed; StageError if it nests deeper than
    max_depth. Builds no tree."""
    target = _NoTree() if max_depth >= 256 else _Depth()
    parser = etree.XMLParser(target=target, **PARSER_OPTIONS)
    _feed(parser, data, clock)
    _raise_logged(parser)
    if isinstance(target, _Depth) and target.deepest > max_depth:
        raise StageError(STAGE, f'document nests deeper than {max_depth} levels (--max-depth)')


def _full_parse(data, clock=None):
    """The whole document as a tree. An error libxml2 logged is raised even when lxml would let it pass (lxml
    raises only when the last message is an error: an undefined namespace prefix followed by a warning got
    through), so that every way of checking a document refuses the same documents."""
    parser = hardened_parser()
    root = _feed(parser, data, clock)
    _raise_logged(parser)
    return root


_HIDDEN = re.compile(rb'<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>', re.S)
_STARTS = {}
_END_REST = re.compile(rb'\s*>')
_OPEN_TAG = re.compile(rb'<[^\s/>!?]+(?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|\'[^\']*\'))*\s*(/?)>')


def _path_starts(steps):
    """A regex of the start tags named like an element of the stop path below the root."""
    key = tuple(steps)
    r = _STARTS.get(key)
    if r is None:
        names = b'|'.join(re.escape(s.encode('utf-8')) for s in dict.fromkeys(steps[1:]))
        r = _STARTS[key] = re.compile(rb'<(' + names + rb')[\s/>]')
    return r


def _end_tag(buf, name, lo, last=False):
    """(start, end) of the first (last=True: the last) end tag of `name` at or after lo, or None."""
    pat = b'</' + name
    p = buf.rfind(pat, lo) if last else buf.find(pat, lo)
    while p >= 0:
        m = _END_REST.match(buf, p + len(pat))
        if m is not None:
            return p, m.end()
        p = -1 if last else buf.find(pat, p + 1)
    return None


def _inside_a_new_element(buf, lo, p):
    """True when the tag before offset p (after lo) is a start tag that is not self-closing: what starts at p is
    inside an element opened after lo. False when that cannot be told this way."""
    q = buf.rfind(b'<', lo, p)
    if q < 0:
        return False
    m = _OPEN_TAG.match(buf, q, p)
    return m is not None and not m.group(1)


def _tail_needs_tree(data, at, steps):
    """True when the bytes after `at` (just after the stop element's end tag) may hold an element on the stop
    path: a second stop element in its parent, a second parent in the grandparent, ... (a second <application>
    under <CustData>, a second <CustData> under <Request>, a second <Request>): data the contract reads. An element
    of such a name further down (an <application> quoted inside a bureau block) is off the path: no tree needed.

    The rest stands inside the stop element's ancestors; their end tags cut it into levels (the content of the
    parent, then of the grandparent, ...). An element is on the path only if it stands at the top of a level and is
    named like the path's element there. With comments, CDATA and processing instructions blanked, every '<' is a
    tag (the rest is checked well-formed anyway, and refused if it is not, whatever the tree). An element is proved
    off the path when the tag right before it opens an element, or when start tags - end tags - '/>' counted from
    the level's start is above zero ('/>' in a text or a value only lowers the count). Anything else takes the
    tree."""
    starts = _path_starts(steps)
    found = [(m.start(), m.group(1)) for m in starts.finditer(data, at)]
    if not found:
        return False
    rest = data[at:]
    if (b'!' in rest and b'<!' in rest) or (b'?' in rest and b'<?' in rest):    # memchr first: '<' is everywhere
        rest = _HIDDEN.sub(lambda h: b' ' * (h.end() - h.start()), rest)
        found = [(m.start(), m.group(1)) for m in starts.finditer(rest)]
    else:
        found = [(p - at, name) for p, name in found]
    raw = [s.encode('utf-8') for s in steps]
    last = len(raw) - 2                     # level k: the content of ancestor raw[last - k]; k = last: the root's
    k, lo, hi, depth, pos = 0, 0, None, 0, 0
    for p, name in found:
        while hi is None or p > hi[0]:      # the level this start tag stands in, and where that level ends
            if hi is not None:
                k, lo = k + 1, hi[1]
                depth, pos = 0, lo
            if k > last:
                return True                 # after the root's end tag: not well-formed, whatever the tree
            hi = _end_tag(rest, raw[last - k], lo, last=(k == last))   # the root's end tag is the document's last
            if hi is None:
                return True
        j = last - k
        if name == raw[j] and j:
            return True                     # named like the ancestor: which end tag is whose?
        if name != raw[j + 1]:
            continue                        # named like another level's element: never on the path
        if _inside_a_new_element(rest, lo, p):
            continue
        depth += rest.count(b'<', pos, p) - 2 * rest.count(b'</', pos, p) - rest.count(b'/>', pos, p)
        pos = p
        if depth <= 0:
            return True
    return False


def _partial_parse(data, stop_path, clock=None):
    """(the tree of the bytes up to the end of the first element at `stop_path`, those bytes closed, the offset
    where the rest of the document starts, the stop element), or (None, None, None, None) when the whole document
    must be a tree: the element is absent (or never closed by a plain end tag), or the rest of the document holds
    an element that could carry data the contract reads. Only the head is parsed here: the caller checks the
    rest (`_check_tail`)."""
    steps = _rel_steps(stop_path)
    if len(steps) < 2:
        return None, None, None, None       # the stop element is the root: its head is the whole document
    tag = steps[-1]
    parser = etree.XMLPullParser(events=('end',), tag=tag, **PARSER_OPTIONS)
    end_tag = re.compile(rb'</' + re.escape(tag.encode('utf-8')) + rb'\s*>')
    pos = 0
    for m in end_tag.finditer(data):
        # feed up to (and including) this end tag; the element ends here unless the end tag was inside a comment,
        # CDATA, or closed a nested element of the same name
        for off in range(pos, m.end(), CHUNK):
            parser.feed(data[off:min(off + CHUNK, m.end())])
            if clock is not None:
                clock.check()
        pos = m.end()
        for _, el in parser.read_events():
            anc, node = [], el
            while node is not None:
                anc.append(node.tag)
                node = node.getparent()
            if anc[::-1] == steps:
                if _tail_needs_tree(data, pos, steps):
                    return None, None, None, None
                root = el
                while root.getparent() is not None:
                    root = root.getparent()
                # The head closed: the end tags of the stop element's open ancestors, innermost first. They must
                # close the head exactly: the split point then stands in the content of those ancestors, not in a
                # comment, CDATA or a nested element (a self-closing stop element reports its end only when the
                # parser is fed up to a later '</tag>', which may be inside a comment): else the whole tree.
                closers = ''.join(f'</{t}>' for t in reversed(steps[:-1])).encode('utf-8')
                try:
                    parser.feed(closers)
                    parser.close()
                except etree.XMLSyntaxError:
                    return None, None, None, None
                _raise_logged(parser)
                return root, data[:pos] + closers, pos, el
    return None, None, None, None


def _xml_attr(value):
    return value.replace('&', '&amp;').replace('<', '&lt;').replace('"', '&quot;')


def _check_tail(data, at, stop_el, clock, max_depth):
    """Raise XMLSyntaxError unless the rest of the document, from `at` (just after the stop element's end tag),
    is well-formed where it stands: inside the stop element's ancestors, with the namespaces in scope there. Fed
    to a parser that builds nothing, after start tags that re-open those ancestors (their names are the stop
    path's, plain: a namespaced document never takes the partial path) and declare the namespaces in scope. The
    head was checked by the parser that built its tree, so head and rest together are the whole document, each byte
    checked once."""
    ancestors, node = [], stop_el.getparent()
    while node is not None:
        ancestors.append(node)
        node = node.getparent()
    ancestors.reverse()
    opening, outer = [], {}
    for node in ancestors:
        scope = node.nsmap
        # the declarations this ancestor makes itself: what is in scope on it and differs from its parent's scope
        own = ''.join((f' xmlns:{p}="{_xml_attr(u)}"' if p else f' xmlns="{_xml_attr(u)}"')
                      for p, u in scope.items() if outer.get(p) != u)
        if None in outer and None not in scope:
            own += ' xmlns=""'
        opening.append(f'<{node.tag}{own}>')
        outer = scope
    _check_wellformed(''.join(opening).encode('utf-8') + data[at:], clock, max_depth)


def _find(root, path):
    """Element at an absolute path (first match), or None. `path` starts with the root's name."""
    steps = _rel_steps(path)
    if not steps or root.tag != steps[0]:
        return None
    node = root
    for s in steps[1:]:
        node = node.find(s)
        if node is None:
            return None
    return node


# libxml2's resource-limit messages, turned into reasons that name the option a user can change.
_LIBXML_LIMITS = (
    ('excessive depth', 'document nests deeper than 256 levels (--max-depth; libxml2\'s limit)'),
    ('buffer size limit', 'a single tag, name or text is over libxml2\'s 10 MB limit'),
    ('huge input lookup', 'a single tag, name or text is over libxml2\'s 10 MB limit'),
    ('xml_parse_huge', 'the document exceeds a libxml2 safety limit (size of a node or nesting)'),
    ('amplification', 'entity amplification detected'),
)


def _precise_error(e, data):
    """libxml2's push parser sometimes loses the first error (an undefined entity, for one) and reports only 'no
    element found' at close(). A one-shot parse of the (already size-limited) bytes names the real error."""
    msg = str(getattr(e, 'msg', None) or e)
    if 'no element found' not in msg.lower():
        return e
    try:
        etree.fromstring(data, etree.XMLParser(target=_NoTree(), **PARSER_OPTIONS))
    except etree.XMLSyntaxError as precise:
        return precise
    return e


def _syntax_reason(e):
    msg = str(e.msg if getattr(e, 'msg', None) else e)
    low = msg.lower()
    for needle, reason in _LIBXML_LIMITS:
        if needle in low:
            return reason
    # libxml2's message may quote names that, in a broken document, are fragments of values: the reason carries
    # the error's name and position instead (it is logged and must never contain row values).
    line, col = (getattr(e, 'position', None) or (None, None))[:2]
    return f'not well-formed XML: {error_name_and_place(getattr(e, "code", None), line, col)}'


def error_name_and_place(code, line, col) -> str:
    """A libxml2 error as its name and position ('ERR_UNDECLARED_ENTITY at line 846, column 155'), never its
    message: the words of a reason that is logged and kept with the dead letter."""
    try:
        name = etree.ErrorTypes._getName(code) if code is not None else None
    except Exception:
        name = None
    where = f' at line {line}, column {col}' if line else ''
    return f'{name or f"libxml2 error {code}"}{where}'


def _tree(data, spec, clock):
    """(root, head): the tree the contract's mapping reads, every byte of the document checked well-formed once.
    partial: the head as a tree, the rest checked by a parser that builds nothing (`_check_tail`); full (or a
    document whose rest may hold data the contract reads): the whole document as a tree."""
    if spec.mode == 'partial' and spec.stop_after_path:
        root, head, at, stop_el = _partial_parse(data, spec.stop_after_path, clock)
        if root is not None:
            _check_tail(data, at, stop_el, clock, spec.max_depth)
            if spec.max_depth < 256:
                _check_wellformed(head, None, spec.max_depth)
            return root, head
    if spec.max_depth < 256:
        _check_wellformed(data, clock, spec.max_depth)
    return _full_parse(data, clock), None


def parse_document(doc: Doc, spec: ParseSpec) -> ParsedDoc:
    data = doc.xml if isinstance(doc.xml, bytes) else str(doc.xml).encode('utf-8')
    budget = spec.max_seconds
    if budget and getattr(doc, 'time_left', None) is not None:
        budget = max(min(budget, doc.time_left), 1e-6)     # decoding (validation) already spent the rest
    clock = _Clock(budget)
    try:
        root, head = _tree(data, spec, clock)
    except etree.XMLSyntaxError as e:
        # One reason for one document whatever the mode and wherever the path failed: the error of a plain
        # check of the whole document (every failing document pays it; a document that passes it but failed a
        # part check is a defect of the part checks, and takes the whole tree instead of being refused).
        try:
            _check_wellformed(data, None, spec.max_depth)
        except etree.XMLSyntaxError as whole:
            raise StageError(STAGE, _syntax_reason(_precise_error(whole, data)))
        log.warning('partial well-formedness check refused a document the whole check accepts (%s): parsed '
                    'whole', _syntax_reason(e))
        try:
            root, head = _full_parse(data, clock), None
        except etree.XMLSyntaxError as again:
            raise StageError(STAGE, _syntax_reason(_precise_error(again, data)))
    if root is None:
        raise StageError(STAGE, 'not well-formed XML: no root element')
    if not isinstance(root.tag, str) or root.tag != spec.root_element:
        raise StageError('validation', f'wrong root element <{str(root.tag)[:50]}>, expected <{spec.root_element}>')
    # app_id: from the document, checked against the source's when the source had one.
    id_path, id_attr = spec.app_id_source
    holder = _find(root, id_path)
    raw = None if holder is None else (holder.get(id_attr) or holder.get(id_attr.lower()))
    app_id = parse_app_id(raw, where=f'{id_path}/@{id_attr}')
    if doc.app_id is not None and doc.app_id != app_id:
        raise StageError('validation', f'source app_id {doc.app_id} differs from the document\'s {app_id}',
                         app_id=doc.app_id)
    if spec.shard is not None:
        _check_shard(app_id, spec.shard)
    # The application element of this product line must be there.
    if _find(root, spec.application_path) is None:
        steps = _rel_steps(spec.application_path)
        parent = _find(root, '/' + '/'.join(steps[:-1]))
        suffix = steps[-1].rsplit('_', 1)[-1].lower()     # IL_application and application are siblings
        others = [c.tag for c in parent if isinstance(c.tag, str) and c.tag.lower().endswith(suffix)] \
            if parent is not None else []
        if others:
            raise StageError('validation', f'wrong product line: found <{others[0]}>, '
                                           f'the contract expects <{steps[-1]}>', app_id=app_id)
        raise StageError('validation', f'missing required application element {spec.application_path}',
                         app_id=app_id)
    return ParsedDoc(doc.source, app_id, root, data, doc.original, doc.content_hash, head)


def _check_shard(app_id, shard):
    """A file assigned to shard `index` of `count` by the app_id `head_app_id` read at its start must carry an
    app_id of that shard: another shard may hold a file of the same app_id, and only one shard's DedupeAppIds
    sees both when both are in it. Never met when the scan and the parse agree, as they are built to."""
    from transforms.io.sources import shard_of
    count, index = shard
    if shard_of(app_id, count) != index:
        # app_id None on purpose (as dedupe's losers): processing_log keeps one row per app_id, which belongs to
        # the document of that app_id in its own shard; a 'failed' row here would overwrite it, and a ledger that
        # saw 'success' of another session would delete that document's rows as a failed re-migration's
        raise StageError('validation', f'app_id {app_id} was not found at the start of the file when the files '
                                       f'were assigned to {count} shards; migrate this file without '
                                       '--processes/--shard-count')


def head_app_id(chunks, spec: ParseSpec) -> Optional[int]:
    """The app_id `parse_document` finds in a document, from its start only: `chunks` (an iterable of bytes, the
    document as read, or as validation hands it over) is parsed, by the same hardened parser, only until the
    element holding the app_id has started. None when the document gives none there (not well-formed before it,
    another root, no such element, not an integer): such a document is dead-lettered by the pipeline, which finds
    the same nothing (the elements before the holder are all that `_find` looks at, and a tree built further
    cannot change its first matches). Used to put all files of one app_id into one shard (transforms.io)."""
    id_path, id_attr = spec.app_id_source
    steps = _rel_steps(id_path)
    if not steps or steps[0] != spec.root_element:
        return None
    # chosen[k]: the element _find takes at depth k, the first child named steps[k] of chosen[k - 1]; it is the
    # first start event of that name whose parent is chosen[k - 1] (children start after their parent). Each event
    # is looked at once (calling _find after every piece walked all the root's children each time: quadratic in a
    # document of many siblings), and the finished part of the tree below the deepest chosen element is dropped
    # now and then (the tree of a large file without the app_id's element is never built whole).
    parser = etree.XMLPullParser(events=('start',), **PARSER_OPTIONS)
    chosen, seen = [], 0
    try:
        for chunk in chunks:
            parser.feed(chunk)
            for _, el in parser.read_events():
                if not chosen:
                    if el.tag != spec.root_element:
                        return None
                elif el.tag == steps[len(chosen)] and el.getparent() is chosen[-1]:
                    pass
                else:
                    if len(chosen) > 1:
                        parent = el.getparent()
                        if any(parent is c for c in chosen[:-1]):
                            return None     # chosen[-1] has ended without the next step: _find gives None
                    seen += 1
                    continue
                chosen.append(el)
                if len(chosen) == len(steps):
                    try:
                        return parse_app_id(el.get(id_attr) or el.get(id_attr.lower()))
                    except StageError:
                        return None
            if seen >= 4096:            # between pieces: never under an event not yet looked at
                seen = 0
                _drop_finished(chosen[-1])
    except etree.XMLSyntaxError:
        return None
    return None


def _drop_finished(node):
    """The children of `node` but its last (the one the parser may still be in), and so on down the last children:
    the iterparse idiom (an element whose later sibling has started is finished, its tail too)."""
    while node is not None and len(node):
        del node[:-1]
        node = node[-1]


class ParseFn(beam.DoFn):
    """Doc (clean bytes) → ParsedDoc, or a DeadLetter on the 'dead_letter' tag."""

    def __init__(self, spec: ParseSpec):
        self.spec = spec
        self.failed = beam.metrics.Metrics.counter('migration', 'parse_failed')

    def process(self, doc: Doc):
        out, dead = run_stage(STAGE, lambda: parse_document(doc, self.spec), doc, self.failed)
        yield out if dead is None else dead
