"""Cost of the launcher's folder scan (transforms/io/files.py: file_app_id) on hostile shapes, against the
pipeline's own validation: python bench/scan_cost.py. Speed is measured here, never asserted in tests."""
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from contracts import compile_contract, load_contract  # noqa: E402
from pipeline.config import resolve_sample  # noqa: E402
from transforms.errors import StageError  # noqa: E402
from transforms.io.files import file_app_id  # noqa: E402
from transforms.parse import ParseSpec  # noqa: E402
from transforms.records import Doc  # noqa: E402
from transforms.validate import Limits, validate_document  # noqa: E402

C = load_contract(resolve_sample('credit_app'))
SPEC = ParseSpec.from_contract(C, compile_contract(C))
CASES = {
    '400k siblings before <Request>': b'<Provenir>' + b'<P/>' * 400_000 + b'<Request ID="5"/></Provenir>',
    '600k siblings, no <Request>': b'<Provenir>' + b'<P/>' * 600_000 + b'</Provenir>',
    '100 MB, no <Request>': b'<Provenir><Big>' + b'<x a="1">some text here</x>' * (100 * 2 ** 20 // 27)
                            + b'</Big></Provenir>',
}
d = tempfile.mkdtemp()
for name in (sys.argv[1:] or CASES):
    data = CASES[name]
    p = os.path.join(d, 'x.xml')
    with open(p, 'wb') as f:
        f.write(data)
    t = time.perf_counter()
    got = file_app_id(p, SPEC, Limits().max_doc_bytes)     # as a run does (--max-doc-mb)
    ts = time.perf_counter() - t
    try:
        validate_document(Doc(source='x', app_id=None, xml=data), Limits(), 'Provenir')
        v = 'accepted by validation'
    except StageError as e:
        v = 'validation: ' + e.reason
    print(f'{name} ({len(data) / 1e6:.1f} MB): scan {ts:.2f} s -> {got}; {v}; peak RSS so far '
          f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB', flush=True)
    os.unlink(p)
