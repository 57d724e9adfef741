"""One shard process of `run --processes N` (pipeline/orchestrate.py: run_processes): forked from the launcher
(`run_shard`), or a new interpreter started as `python -m pipeline.shard CONFIG.json` with the serialized
configuration (`main`: XMLSQL_SHARD_START=spawn, and platforms without fork)."""
import sys

from pipeline.config import RunConfig
from pipeline.guard import run_guarded, setup_logging
from pipeline.orchestrate import run


def run_shard(cfg: RunConfig) -> int:
    """One shard's run, its exit status (a forked shard calls this directly, a shard interpreter by `main`)."""
    setup_logging(cfg.log_level, cfg)
    return run_guarded(lambda: run(cfg))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    with open(argv[0], encoding='utf-8') as f:
        cfg = RunConfig.from_json(f.read())
    return run_shard(cfg)


if __name__ == '__main__':
    code = main()
    from pipeline.orchestrate import StopOnSignals
    if StopOnSignals.received_any is not None:
        # as pipeline/__main__.py: an interrupted shard leaves at once after its reports (a runner thread cut
        # short by the signal may keep the interpreter waiting at exit, and the launcher with it)
        import logging
        import os
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
