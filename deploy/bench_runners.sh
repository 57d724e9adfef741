#!/usr/bin/env bash
# docs/min of one generated corpus on three runners: DirectRunner in_memory, DirectRunner multi_processing
# (2 workers), the pipeline's own --processes 2 (two in_memory shard processes) and the portable runner (local
# job service, LOOPBACK). Each run gets a fresh copy of the corpus
# (source and target in one SQLite file), so every run writes everything. Prints one line per run.
#   deploy/bench_runners.sh [DOCS=2000] [REPEAT=2]      (EXTERNAL=1 adds the EXTERNAL worker-pool runs)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$here/.venv/bin/python}"
DOCS="${1:-2000}"; REPEAT="${2:-2}"
work="$(mktemp -d "${TMPDIR:-/tmp}/bench_runners.XXXXXX")"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pipeline generate --docs "$DOCS" --sqlite "$work/corpus.db" --seed 7 >/dev/null
common=(--contract credit_app --tables credit_app_tables --create-tables --log-level WARNING)
run() {   # label, then how to start it
  local label=$1; shift
  cp "$work/corpus.db" "$work/run.db"
  local t0 t1 line
  t0=$(date +%s.%N)
  line=$("$@" --source "sqlite:///$work/run.db" --target "sqlite:///$work/run.db" "${common[@]}" 2>"$work/err" \
         | grep '^SUMMARY') || { echo "$label FAILED"; tail -20 "$work/err"; return 1; }
  t1=$(date +%s.%N)
  printf '%-26s %s wall_s=%.1f\n' "$label" "$line" "$(echo "$t1 - $t0" | bc)"
}
for i in $(seq 1 "$REPEAT"); do
  run "in_memory#$i" "$PYTHON" -m pipeline run
  run "multi_processing(2)#$i" "$PYTHON" -m pipeline run --direct_running_mode=multi_processing --direct_num_workers=2
  run "processes(2)#$i" "$PYTHON" -m pipeline run --processes 2
  run "portable_loopback#$i" "$here/deploy/portable_local.sh" loopback
  if [ "${EXTERNAL:-0}" = 1 ]; then run "portable_external#$i" "$here/deploy/portable_local.sh" external; fi
done
