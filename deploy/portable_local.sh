#!/usr/bin/env bash
# Run the migration on Beam's *portable* runner without a cluster: a local job service (and, for EXTERNAL, a
# local SDK worker pool) are started on free ports on this machine, the job is submitted with
# --runner=PortableRunner, and both services are stopped when this script exits (trap), whatever happens.
#
#   deploy/portable_local.sh [loopback|external] [python -m pipeline run arguments...]
#
#   loopback  (default) --environment_type=LOOPBACK: the SDK worker runs inside the submitting process.
#   external  --environment_type=EXTERNAL --environment_config=localhost:Q against
#             `python -m apache_beam.runners.worker.worker_pool_main --service_port=Q`, which starts one SDK
#             worker *process* per worker the runner asks for (the same shape as a Flink/Spark task manager's
#             worker-pool sidecar).
#
# Everything after the mode goes to `python -m pipeline run` unchanged, e.g.
#   deploy/portable_local.sh external --contract credit_app --source sqlite:///app.db --target sqlite:///app.db \
#       --tables credit_app_tables --create-tables
# Ports are picked free on 127.0.0.1 and readiness is checked there. Binding is Beam's: the job service listens
# on localhost; worker_pool_main (and the LOOPBACK worker server in the launcher) bind [::] — all interfaces —
# which Beam 2.77 does not let us change: run this on a machine whose firewall you trust.
# Exit status: the pipeline's (0 ok, 2 configuration error, 3 SUMMARY invariant broken), or 4 when a service
# did not come up. PYTHON (default: the repo's .venv/bin/python) is the interpreter for the job, the services
# and the workers; STARTUP_TIMEOUT (default 60 s) bounds the wait for the services to listen.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$here/.venv/bin/python}"
STARTUP_TIMEOUT="${STARTUP_TIMEOUT:-60}"
if [ ! -x "$PYTHON" ]; then
  echo "portable_local.sh: no interpreter at $PYTHON (run ./run_local.sh once, or set PYTHON)" >&2
  exit 4
fi
# worker_pool_main starts its workers as plain `python -c ...` (from PATH), so PATH must lead to the same
# interpreter that has the project installed, or the workers cannot import it.
PATH="$(dirname "$PYTHON"):$PATH"
export PATH

mode=loopback
case "${1:-}" in
  loopback|LOOPBACK) mode=loopback; shift ;;
  external|EXTERNAL) mode=external; shift ;;
esac

logdir="$(mktemp -d "${TMPDIR:-/tmp}/portable_local.XXXXXX")"
pids=()

cleanup() {
  local rc=$?
  for pid in "${pids[@]:-}"; do
    [ -n "$pid" ] || continue
    # each service was started with setsid: its process group holds it and any worker it spawned
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]:-}"; do
    [ -n "$pid" ] || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    echo "portable_local.sh: exit $rc; service logs kept in $logdir" >&2
  else
    rm -rf "$logdir"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_listening() {   # name pid port
  local name=$1 pid=$2 port=$3
  "$PYTHON" - "$pid" "$port" "$STARTUP_TIMEOUT" <<'EOF' || { echo "portable_local.sh: $name did not start listening on 127.0.0.1:$3 (log: $logdir/$1.log):" >&2; tail -20 "$logdir/$1.log" >&2; exit 4; }
import os, socket, sys, time
pid, port, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)                      # the service died
    try:
        socket.create_connection(('127.0.0.1', port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
EOF
}

job_port="$(free_port)"
setsid "$PYTHON" -m apache_beam.runners.portability.local_job_service_main --port "$job_port" \
  --staging_dir "$logdir/staging" >"$logdir/job_service.log" 2>&1 &
pids+=("$!")
echo "portable_local.sh: started job_service pid $! (process group), localhost:$job_port" >&2
wait_listening job_service "$!" "$job_port"
env_args=(--environment_type=LOOPBACK)

if [ "$mode" = external ]; then
  pool_port="$(free_port)"
  setsid "$PYTHON" -m apache_beam.runners.worker.worker_pool_main --service_port "$pool_port" \
    >"$logdir/worker_pool.log" 2>&1 &
  pids+=("$!")
  echo "portable_local.sh: started worker_pool pid $! (process group), localhost:$pool_port" >&2
  wait_listening worker_pool "$!" "$pool_port"
  env_args=(--environment_type=EXTERNAL "--environment_config=localhost:$pool_port")
fi

echo "portable_local.sh: job service on localhost:$job_port, environment ${env_args[*]}" >&2
set +e
"$PYTHON" -m pipeline run "$@" --runner=PortableRunner "--job_endpoint=localhost:$job_port" "${env_args[@]}"
rc=$?
set -e
exit "$rc"
