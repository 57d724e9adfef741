# Sourced by run_local.sh and run_tests.sh: make sure .venv exists and holds the project (editable) with its
# test extra, then activate it. Re-installs only when setup.py changed since the last install.
VENV_DIR="${VENV_DIR:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV_DIR/bin/python" ]; then
  echo "== creating $VENV_DIR with $($PY --version 2>&1)"
  "$PY" -m venv "$VENV_DIR"
fi
stamp="$VENV_DIR/.installed-$(cksum setup.py | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
  echo "== installing the project and its dependencies into $VENV_DIR (first run takes a few minutes)"
  log="$VENV_DIR/install.log"
  if ! { "$VENV_DIR/bin/python" -m pip install --disable-pip-version-check --upgrade pip \
         && "$VENV_DIR/bin/python" -m pip install --disable-pip-version-check -e '.[test]'; } >"$log" 2>&1; then
    tail -30 "$log" >&2
    echo "== installing failed; the whole log is in $log" >&2
    exit 1
  fi
  rm -f "$VENV_DIR"/.installed-* && touch "$stamp"
fi
# shellcheck disable=SC1091
. "$VENV_DIR/bin/activate"
