"""Records that flow between the stages. Plain, picklable, small."""
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union


class Doc(NamedTuple):
    """One document as read from a source."""
    source: str                       # stable reference: file name, or '<table>:<app_id>'
    app_id: Optional[int]             # known from the source row, else None (taken from the XML)
    xml: Union[str, bytes, None]
    original: Union[str, bytes, None] = None   # the payload as read, kept when validation rewrote `xml`
    time_left: Optional[float] = None          # seconds left of the document's --max-parse-seconds after validation
    content_hash: Optional[str] = None          # sha256 hex of the payload as stored at the source (resume, ledger)


class MappedDoc(NamedTuple):
    """The rows one document maps to: table -> rows, tables in the contract's insertion order."""
    source: str
    app_id: int
    rows: Dict[str, List[Dict[str, Any]]]
    warnings: List[str]
    content_hash: Optional[str] = None       # of the payload as read (the ledger records it for resume)
    changed: bool = False                    # migrated before with another content: its old rows were replaced


class RowGroup(NamedTuple):
    """The rows of one document for one table: the unit batched by GroupIntoBatches."""
    app_id: int
    source: str
    rows: List[Dict[str, Any]]


class DeadLetter(NamedTuple):
    """A document that did not make it, with where and why, and the original payload."""
    source: str
    app_id: Optional[int]
    stage: str                        # read | validation | parse | mapping | dedupe | sink
    reason: str
    payload: Optional[str]
    content_hash: Optional[str] = None


class Outcome(NamedTuple):
    """The final word on one document: 'success' (every row committed) or 'failed'."""
    source: str
    app_id: Optional[int]
    status: str
    stage: Optional[str]
    reason: Optional[str]
    rows: int
    warnings: Tuple[str, ...] = ()    # data-quality warnings of a mapped document (names fields, never values)
    content_hash: Optional[str] = None
    changed: bool = False             # migrated before with another content (its rows were replaced)
    tables: Tuple[Tuple[str, int], ...] = ()     # (table, rows written) of a written document


DEAD_LETTER_TAG = 'dead_letter'
SKIPPED_TAG = 'skipped'        # counts of documents a source skipped (done and unchanged: resume)
SKIPPED_KEYS_TAG = 'skipped_keys'   # (app_id, source) of each document a file source's resume skipped
