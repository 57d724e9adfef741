import logging
import os
import sys

from pipeline.cli import main

code = main()
stopper = getattr(sys.modules.get('pipeline.orchestrate'), 'StopOnSignals', None)
if stopper is not None and stopper.received_any is not None:
    # An interrupted run has reported what was committed; a runner thread of the bundle the signal cut short may
    # still wait for work that will never come (seen once in ~15 stops: the interpreter waited for it forever at
    # exit). Leave at once: uncommitted transactions are rolled back by the database, as on any stop.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
