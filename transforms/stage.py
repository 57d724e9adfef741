"""What every stage's DoFn shares: running a pure core so that a failure becomes a dead letter (never an exception
to the runner), the dead letter itself with the original payload as text, and re-reading a payload by
reference for documents that fail after the shuffles."""
import logging

import apache_beam as beam

from contracts.errors import describe_exception
from transforms.errors import StageError
from transforms.records import DEAD_LETTER_TAG, DeadLetter, Doc
from transforms.text import decode_payload

log = logging.getLogger(__name__)

# The signal this process received, set by the launcher's handler (pipeline/orchestrate.py StopOnSignals). The
# handler raises in the main thread, but an exception raised while Python runs a weakref callback or a __del__ is
# only printed ("Exception ignored in ...") and the run went on: the next document validated (and the progress
# counter, when progress is on) stops the bundle instead.
STOP = {'signal': None}


class StopRequested(Exception):
    """Raised in a bundle after a signal the main thread's handler could not stop the run with."""


def raise_if_stop_requested():
    if STOP['signal'] is not None:
        raise StopRequested(f'signal {STOP["signal"]} received')


# App ids go into SQL int columns.
MAX_APP_ID = 2 ** 31 - 1

# A payload bigger than this is not copied into the dead letter (it stays at its source, named by `source`).
MAX_DEAD_LETTER_PAYLOAD = 16 * 1024 * 1024


def payload_text(xml, limit=None):
    """The original payload as text for the dead letter (best effort, never raises). None when it is absent or
    longer than `limit` (an oversized document stays at its source, which the dead letter names)."""
    if xml is None:
        return None
    if limit is not None and len(xml) > limit:
        return None
    if isinstance(xml, str):
        return xml
    data = bytes(xml)
    try:
        return data.decode('utf-8')           # as it is, a byte order mark included
    except UnicodeDecodeError:
        pass
    try:
        return decode_payload(data)           # UTF-16/32, a declared 8-bit encoding
    except StageError:
        # not valid in its encoding (that may be why it is here): the bytes that are not UTF-8 are kept visible
        # as \xNN escapes rather than guessed
        return data.decode('utf-8', errors='backslashreplace')


def clean_app_id(value):
    """Only a valid app_id goes into a dead letter or outcome (an SQL int column); anything else becomes None."""
    return value if type(value) is int and 0 < value <= MAX_APP_ID else None


def dead_letter(doc: Doc, stage, reason, app_id=None):
    return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(
        source=doc.source, app_id=clean_app_id(app_id if app_id is not None else doc.app_id),
        stage=stage, reason=reason,
        payload=payload_text(doc.original if getattr(doc, 'original', None) is not None else doc.xml,
                             MAX_DEAD_LETTER_PAYLOAD),
        content_hash=getattr(doc, 'content_hash', None)))


def run_stage(stage, call, doc, failed_counter, app_id=None):
    """The one way a stage's pure core is run inside its DoFn: `call()` → (result, None), or (None, the
    dead-letter output). A StageError keeps its stage, reason and app_id; any other exception becomes an
    'internal error' reason naming its type and place, never the data. Never raises to the runner."""
    try:
        return call(), None
    except StageError as e:
        # a core may fail a document at another stage than its DoFn's (parse finds a validation fault): count it
        # under the stage the dead letter names, as the summary's dead letters by stage do
        (failed_counter if e.stage == stage else beam.metrics.Metrics.counter('migration', f'{e.stage}_failed')).inc()
        app_id = e.app_id if e.app_id is not None else app_id
        log.debug('dead letter: source=%s app_id=%s stage=%s reason=%s', doc.source, app_id, e.stage, e.reason)
        return None, dead_letter(doc, e.stage, e.reason, app_id=app_id)
    except Exception as e:  # never to the runner
        failed_counter.inc()
        reason = internal_reason(e)
        log.warning('dead letter: source=%s app_id=%s stage=%s reason=%s', doc.source, app_id, stage, reason)
        return None, dead_letter(doc, stage, reason, app_id=app_id)


def refetch_payload(fetch, source_ref):
    """A failed document's original payload, read again from its source by reference (documents that fail
    after the shuffles no longer carry it). None, with a warning, when it cannot be read."""
    try:
        return payload_text(fetch(source_ref)) if fetch is not None else None
    except Exception as e:
        log.warning('cannot re-read the payload of %s: %s', source_ref, type(e).__name__)
        return None


def internal_reason(exc):
    """A reason for an unexpected exception that names its type and place, never the data it saw."""
    return f'internal error {describe_exception(exc)}'
