"""`python -m pipeline.shard CONFIG.json`: one shard process of `run --processes N`, given its serialized
configuration by the launcher (pipeline/orchestrate.py: run_processes)."""
import sys

from pipeline.config import RunConfig
from pipeline.guard import run_guarded, setup_logging
from pipeline.orchestrate import run


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    with open(argv[0], encoding='utf-8') as f:
        cfg = RunConfig.from_json(f.read())
    setup_logging(cfg.log_level, cfg)
    return run_guarded(lambda: run(cfg))


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
