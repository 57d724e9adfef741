#!/usr/bin/env bash
# Runs the whole test suite in the project's own .venv (created and filled on first use).
# Extra arguments go to pytest, e.g. ./run_tests.sh -k sink -x
set -euo pipefail
cd "$(dirname "$0")"
. ./scripts/venv.sh
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "run_tests.sh: pytest collected no tests (exit 5)" >&2
fi
exit "$rc"
