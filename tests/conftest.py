"""The fast subset (`./run_tests.sh -m "not slow"`, to run on every change) leaves out the modules whose tests run
the whole job end to end, each a `python -m pipeline` process or a full CLI run of its own (signals, faults,
resume, shards, engines, runners, benchmarks, the operator's commands): they carry the `slow` mark here, as do
single tests marked in their own modules. The whole suite (`./run_tests.sh`) runs everything."""
import pytest

END_TO_END_MODULES = {
    'test_bench_smoke', 'test_docs_examples', 'test_end_to_end', 'test_engines', 'test_exit_status',
    'test_explain_cli', 'test_faults', 'test_fidelity_end_to_end', 'test_hostile', 'test_integrity',
    'test_interrupted', 'test_operator_cli', 'test_operator_runs', 'test_postgres_pipeline', 'test_processes',
    'test_report_chromium', 'test_runners', 'test_scrub', 'test_signals', 'test_stream_source', 'test_verify_cli',
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit('.', 1)[-1] in END_TO_END_MODULES:
            item.add_marker(pytest.mark.slow)
