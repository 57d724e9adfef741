"""What every command shares around its work: logs that never carry a value or a password (`setup_logging`,
`ScrubLogs`), and `run_guarded`, which turns every failure into one `error:` line and its exit status."""
import logging
import sys

from pipeline.config import ConfigError
from pipeline.orchestrate import EXIT_CONFIG, EXIT_STOPPED, Interrupted, RunStopped, StopOnSignals

__all__ = ['EXIT_CONFIG', 'ScrubLogs', 'remember_secrets', 'run_guarded', 'setup_logging']


class ScrubLogs(logging.Filter):
    """On the stderr handler. Beam logs the exception of a failing DoFn with its traceback
    (apache_beam.runners.common): such records become one line, scrubbed of row values and passwords, naming
    the exception's type and place; the one an interruption raises is dropped (the clean-stop line says it).
    The product's own loggers never log values and pass unchanged."""

    secrets = set()        # passwords of the targets and sources of this run (transforms.sql.targets)

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, Interrupted) or 'Interrupted: SIG' in str(record.msg):
            return False
        if 'apitools not found' in str(record.msg):      # Beam's import-time note about Google Cloud libraries
            return False
        if not record.name.startswith('apache_beam') and exc is None:
            return True
        from contracts.errors import describe_exception
        from transforms.sql.dialects import scrub_message
        text = scrub_message(record.getMessage(), tuple(self.secrets))
        if exc is not None:
            text += f' [{describe_exception(exc)}]'
        record.msg, record.args, record.exc_info, record.exc_text = text, (), None, None
        return True


def setup_logging(level, cfg=None):
    # force: importing Beam may already have given the root logger a handler (logging.warning on import)
    logging.basicConfig(force=True, level=getattr(logging, level), stream=sys.stderr,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    for h in logging.getLogger().handlers:
        h.addFilter(ScrubLogs())
    # Beam's own loggers stay at WARNING whatever --log-level says: at DEBUG its workers print every element
    # they process (row values, i.e. personal data), and logs must never hold those.
    for noisy in ('apache_beam', 'apache_beam.runners', 'apache_beam.transforms'):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # 'Deleting 1 existing files in target path': our JSONL outputs are meant to be replaced on every run.
    logging.getLogger('apache_beam.io.filebasedsink').setLevel(logging.ERROR)
    if cfg is not None:
        remember_secrets(cfg.target, cfg.source)


def remember_secrets(*urls):
    """Passwords of the given targets, for the log filter (never printed; masked wherever they stand)."""
    from transforms.sql.targets import parse_target
    for url in urls:
        if url and url.startswith('odbc:'):
            try:
                ScrubLogs.secrets.update(parse_target(url)._secrets)
            except Exception:
                pass


def run_guarded(call):
    """`call()`'s exit status; every failure one line on stderr (no traceback, no values, no password)."""
    from transforms.sql.targets import TargetError
    with StopOnSignals():
        try:
            return call()
        except (ConfigError, TargetError) as e:
            print(f'error: {e}', file=sys.stderr)
            return EXIT_CONFIG
        except RunStopped as e:
            print(f'error: {e}', file=sys.stderr)
            return EXIT_STOPPED
        except Interrupted as e:        # before a run started (or a command without a summary)
            print(f'error: interrupted by {e.name}: stopped before any document was migrated', file=sys.stderr)
            return e.exit_code
        except Exception as e:          # anything else: still one line, scrubbed (no traceback with values)
            from transforms.sql.dialects import scrub_message
            print(f'error: the run stopped: {type(e).__name__}: '
                  f'{scrub_message(str(e), tuple(ScrubLogs.secrets))[:400]}', file=sys.stderr)
            return EXIT_STOPPED
