#!/usr/bin/env bash
# The main job on the embedded default: a SQLite database (app.db) that this script creates and fills with sample
# documents, the project's sample contract (contracts/samples/credit_app.json), DirectRunner.
#   ./run_local.sh                 # first run: creates .venv, generates app.db, migrates, prints the SUMMARY
#   ./run_local.sh                 # again: resumes; documents already written are skipped, nothing duplicates
#   FRESH=1 DOCS=20000 ./run_local.sh   # new database with 20,000 documents
# Extra arguments go to `python -m pipeline run` (e.g. --processes 2 to use both cores of this machine).
set -euo pipefail
cd "$(dirname "$0")"
. ./scripts/venv.sh
DB="${DB:-app.db}"
DOCS="${DOCS:-2000}"
if [ -n "${FRESH:-}" ]; then rm -f "$DB" "$DB"-*; fi
if [ ! -f "$DB" ]; then
  echo "== generating $DOCS sample documents into $DB (table app_xml)"
  python -m pipeline generate --docs "$DOCS" --sqlite "$DB" --seed 7
else
  echo "== $DB exists: resuming. Documents already written are skipped, failed ones are tried again (FRESH=1 starts over)"
fi
mkdir -p out
echo "== migrating: $DB app_xml -> $DB target tables"
python -m pipeline run \
  --contract credit_app \
  --source "sqlite:///$DB" \
  --target "sqlite:///$DB" \
  --tables credit_app_tables --create-tables \
  --dead-letter out/dead_letters.jsonl \
  --summary-json out/summary.json \
  "$@"
