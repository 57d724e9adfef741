"""Wall time per fused stage of a pipeline run on the FnApiRunner (which runs stages one bundle at a time).

    python bench/stage_times.py [--top 25] -- <arguments of `python -m pipeline run`>

Wraps FnApiRunner._execute_bundle, runs the CLI in this process, and prints the seconds spent in each stage
(stage names are Beam's fused transform names, shortened), most expensive first.
"""
import collections
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv):
    top = 25
    if argv[:1] == ['--top']:
        top, argv = int(argv[1]), argv[2:]
    if argv[:1] == ['--']:
        argv = argv[1:]
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    spent, bundles = collections.Counter(), collections.Counter()
    orig = fn_runner.FnApiRunner._execute_bundle

    def timed(self, ctx, bcm, bundle_input):
        t0 = time.perf_counter()
        try:
            return orig(self, ctx, bcm, bundle_input)
        finally:
            name = bcm.stage.name
            spent[name] += time.perf_counter() - t0
            bundles[name] += 1
    fn_runner.FnApiRunner._execute_bundle = timed
    from pipeline.cli import main as cli_main
    t0 = time.perf_counter()
    rc = cli_main(['run'] + argv)
    total = time.perf_counter() - t0
    staged = sum(spent.values())
    print(f'\nwall {total:.2f} s, in stages {staged:.2f} s')
    for name, s in spent.most_common(top):
        short = re.sub(r'ref_AppliedPTransform_', '', name)
        short = re.sub(r'_\d+', '', short)
        print(f'{s:8.2f} s {100 * s / total:5.1f}%  {bundles[name]:4d} bundles  {short[:160]}')
    return rc


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
