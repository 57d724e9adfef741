#!/bin/bash
# One whole migration of a benchmark corpus, for timing old and new code in alternating pairs:
#
#   python bench/corpus.py --docs 5000 --out /tmp/c5k
#   git worktree add /tmp/old <older commit>
#   farm-bench -n 3 --vs 'bench/ab_run.sh /tmp/old /tmp/c5k' -- bench/ab_run.sh . /tmp/c5k [--processes 2]
#
# REPO: the checkout whose code runs (its pipeline package; this repo's .venv). CORPUS: a folder built by
# bench/corpus.py (CC corpus: source.db and cc_tables_no_refs.json). Further arguments go to `pipeline run`.
# A fresh SQLite target each run, removed afterwards.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
REPO="$(cd "$1" && pwd)"; CORPUS="$(cd "$2" && pwd)"; shift 2
PY="$HERE/.venv/bin/python"
CONTRACT="$HERE/../shared/seed-corpus/cc/contract.json"
T="$(mktemp -d)/target.db"
trap 'rm -rf "$(dirname "$T")"' EXIT
cd "$REPO"
"$PY" -m pipeline create-tables --tables "$CORPUS/cc_tables_no_refs.json" --target "sqlite:///$T" >/dev/null 2>&1
"$PY" -m pipeline run --contract "$CONTRACT" --source "sqlite:///$CORPUS/source.db" --source-table app_xml \
  --source-column xml --target "sqlite:///$T" --progress-seconds 0 --log-level WARNING "$@"
