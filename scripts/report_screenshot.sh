#!/usr/bin/env bash
# Refreshes docs/images/report.png: a real run of generated documents (some broken on purpose) into a temporary
# SQLite target with --report, rendered by headless Chromium (Debian's `chromium`). Run from anywhere:
#   scripts/report_screenshot.sh [OUTPUT.png]
# Needs chromium (apt-get install chromium); nothing leaves the machine (the page is self-contained).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/images/report.png}"
chromium="$(command -v chromium || true)"
[ -n "$chromium" ] || { echo "error: chromium is not installed (apt-get install chromium)" >&2; exit 2; }
. ./scripts/venv.sh
work="$(mktemp -d -t xmlsql-report-XXXX)"
trap 'rm -rf "$work"' EXIT
python -m pipeline generate --docs 1500 --sqlite "$work/src.db" --seed 7 --broken-fraction 0.04 >/dev/null 2>&1
python -m pipeline run --contract credit_app --source "sqlite:///$work/src.db" --target "sqlite:///$work/target.db" \
  --tables credit_app_tables --create-tables --chunk-docs 150 --report "$work/report.html" 2>"$work/run.log" \
  | tail -1
mkdir -p "$(dirname "$out")"
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$work/profile" \
  --screenshot="$work/report.png" --window-size=1280,2400 "file://$work/report.html" 2>>"$work/run.log" >/dev/null
mv "$work/report.png" "$out"
echo "wrote $out ($(wc -c <"$out") bytes)"
