"""One retry rule for every database operation of a run.

Transient errors (connection refused or lost, server starting up or shutting down, deadlock, lock timeout,
'database is locked') are retried with bounded exponential backoff and jitter; any other error is raised at once.
`retry_call` is the only retry loop of the product: the sink's transactions (`transforms.sink.Writer.run`) and
every connection a worker opens (`Target.connect_with_retry`: sink, ledger and dead-letter bundles, source
partitions, resume ledger reads, payload re-reads) go through it, so a short outage of the database (a restart
of a fraction of a second to a few seconds) is ridden out wherever it hits.
"""
import logging
import random
import time
from typing import Any, Callable, NamedTuple, Optional

from transforms.sql.dialects import FATAL, TRANSIENT, get_dialect, scrub_message

log = logging.getLogger(__name__)


class RetryPolicy(NamedTuple):
    attempts: int = 6            # total tries of one operation on transient errors
    base_delay: float = 0.25     # seconds before the 2nd try; doubles each retry, +-25% jitter
    max_delay: float = 8.0       # cap of one wait (the defaults wait 0.25+0.5+1+2+4 s, about 8 s in all)

    def delay(self, retry_no: int) -> float:
        """Seconds to wait before retry number `retry_no` (1 = the second attempt), jitter included."""
        return min(self.max_delay, self.base_delay * (2 ** (retry_no - 1))) * random.uniform(0.75, 1.25)


DEFAULT_RETRY = RetryPolicy()


def retry_call(op: Callable[[], Any], classify: Callable[[BaseException], str], *,
               policy: RetryPolicy = DEFAULT_RETRY, sleep: Callable[[float], None] = time.sleep,
               on_transient: Optional[Callable[[BaseException, int, bool], None]] = None,
               give_up: Optional[Callable[[BaseException], BaseException]] = None,
               what: str = 'database operation', scrub: Callable[[BaseException], str] = None,
               log_level=logging.INFO):
    """`op()` until it returns. An exception that `classify` calls TRANSIENT is retried after a backoff;
    `on_transient(exc, attempt, will_retry)` runs after every transient failure (e.g. to drop a broken
    connection). Any other exception is raised at once, unchanged. When the attempts are used up, `give_up(last)`
    is raised if given, else the last exception itself. Each retry is logged at `log_level` (a level, or a
    function of the exception giving one), scrubbed: no values, no password."""
    scrub = scrub or (lambda e: scrub_message(str(e)))
    attempts = max(1, int(policy.attempts))
    for attempt in range(1, attempts + 1):
        try:
            return op()
        except Exception as e:
            if classify(e) != TRANSIENT:
                raise
            will_retry = attempt < attempts
            if on_transient is not None:
                on_transient(e, attempt, will_retry)
            if not will_retry:
                if give_up is not None:
                    raise give_up(e) from None
                raise
            wait = policy.delay(attempt)
            level = log_level(e) if callable(log_level) else log_level
            log.log(level, '%s: transient error (attempt %d of %d), retrying in %.1f s: %s', what, attempt,
                    attempts, wait, _one_line(scrub(e)))
            sleep(wait)


def _one_line(s: str) -> str:
    return ' '.join(str(s).split())[:300]


def connect_error_kind(exc: BaseException) -> str:
    """TRANSIENT or FATAL for an exception raised while opening a connection. `Target.connect` says which
    (`TargetError.transient`: server unreachable, refusing or restarting -> transient; login failed, driver
    missing, database missing -> fatal); any other exception from a connect callable counts as transient."""
    transient = getattr(exc, 'transient', None)
    if transient is None:
        return TRANSIENT
    return TRANSIENT if transient else FATAL


class DatabaseUnavailable(Exception):
    """The database kept failing transiently after every retry (an infrastructure fault: the run stops)."""


class CannotConnect(Exception):
    """A connection could not be opened for a reason retrying cannot cure (login failed, driver missing)."""


class _ConnectFailed(Exception):
    """Opening the connection failed inside `RetryingConnection.run` (wraps the error, so that it is
    classified as a connection error, not as a statement error)."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


class RetryingConnection:
    """One DB-API connection, opened lazily, whose transactions are retried on transient errors.

    `run(fn)` runs fn(cursor) in one transaction: a transient error of a statement or of opening the connection
    drops the connection, backs off and runs fn again on a new one (`retry_call`); other errors are rolled back
    and re-raised as they are. The sink's `Writer` is one; sources and the resume ledger use it for reads.

    connect: () -> DB-API connection (autocommit off), e.g. `Target.connect`. scrub: exception -> message
    without values or passwords (default: the dialect's sanitizer)."""

    Unavailable = DatabaseUnavailable
    CannotConnect = CannotConnect

    def __init__(self, connect: Callable[[], Any], dialect, conn=None, retry: RetryPolicy = DEFAULT_RETRY,
                 scrub: Optional[Callable[[BaseException], str]] = None, sleep=time.sleep, what='database'):
        self._connect = connect
        self.dialect = get_dialect(dialect)
        self.conn = conn
        self.retry = retry
        self.scrub = scrub or (lambda e: self.dialect.sanitize(e))
        self.sleep = sleep
        self.what = what
        self.connections_opened = 0
        self.reconnects = 0
        self.transient_errors = 0

    # ---- connection
    def ensure(self):
        """The connection, opened now if there is none (no retry: `open` and `run` retry)."""
        if self.conn is None:
            self.conn = self._connect()
            self.connections_opened += 1
        return self.conn

    def open(self):
        """Open the connection now, with the transient-error retry: a server that is restarting at this moment
        is waited for; a login failure raises CannotConnect at once."""
        if self.conn is None:
            self.run(lambda cur: None, commit=False)
        return self.conn

    def close(self):
        if self.conn is not None:
            try:
                self.conn.rollback()
            except Exception:
                pass
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def _drop(self):
        try:
            if self.conn is not None:
                self.conn.close()
        except Exception:
            pass
        self.conn = None

    def run(self, fn: Callable[[Any], Any], commit: bool = True):
        """fn(cursor) in one transaction (committed, or rolled back with commit=False), retried on transient
        errors; see the class docstring."""
        def attempt():
            try:
                conn = self.ensure()
            except Exception as e:
                raise _ConnectFailed(e) from e
            cur = None
            try:
                cur = conn.cursor()
                out = fn(cur)
                if commit:
                    conn.commit()
                else:
                    conn.rollback()
                return out
            except Exception as e:
                if self.dialect.classify(e) == TRANSIENT:
                    self._drop()
                else:
                    try:
                        conn.rollback()
                    except Exception:
                        self._drop()
                raise
            finally:
                if cur is not None:
                    try:
                        cur.close()
                    except Exception:
                        pass

        def classify(e):
            if isinstance(e, _ConnectFailed):
                return connect_error_kind(e.error)
            return self.dialect.classify(e)

        def on_transient(e, attempt_no, will_retry):
            self._drop()
            self.transient_errors += 1
            if will_retry:
                self.reconnects += 1

        def give_up(last):
            return self.Unavailable(f'{self.what}: still failing after {self.retry.attempts} attempts: '
                                    f'{self._message(last)}')
        try:
            return retry_call(attempt, classify, policy=self.retry, sleep=self.sleep, on_transient=on_transient,
                              give_up=give_up, what=self.what, scrub=self._message,
                              log_level=lambda e: logging.WARNING if isinstance(e, _ConnectFailed) else logging.INFO)
        except _ConnectFailed as e:          # not transient: login failed, driver or database missing
            raise self.CannotConnect(f'{self.what}: cannot connect: {self._message(e)}') from None

    def _message(self, e) -> str:
        if isinstance(e, _ConnectFailed):
            e = e.error
            if getattr(e, 'transient', None) is not None:      # a TargetError: scrubbed already
                return str(e)
        return self.scrub(e) if isinstance(e, BaseException) else str(e)
