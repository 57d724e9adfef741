#!/usr/bin/env bash
# Run the migration on Beam's *portable* runner on this machine: the services a mode needs are started on free
# ports on 127.0.0.1, the job is submitted with --runner=PortableRunner, and everything the script started is
# stopped when it exits (trap), whatever happens (failure, Ctrl-C, TERM).
#
#   deploy/portable_local.sh [MODE] [python -m pipeline run arguments...]
#
#   loopback       (default) Beam's Python job service; --environment_type=LOOPBACK: the SDK worker runs inside
#                  the submitting process.
#   external       Beam's Python job service; --environment_type=EXTERNAL --environment_config=localhost:Q against
#                  `python -m apache_beam.runners.worker.worker_pool_main --service_port=Q`, which starts one SDK
#                  worker *process* per worker the runner asks for (the shape of a Flink/Spark task manager's
#                  worker-pool sidecar).
#   flink          Apache Flink: Beam's Flink job server with its embedded Flink (--flink-master=[local]).
#   flink-cluster  Apache Flink as a session cluster: a JobManager and a TaskManager (separate JVMs, PARALLELISM
#                  task slots), Beam's Flink job server submitting to the JobManager's REST port.
#   spark          Apache Spark: Beam's Spark job server with --spark-master-url=local[PARALLELISM].
#   prism          Beam's Prism runner (Go), as the job service.
# flink, flink-cluster, spark and prism run the SDK harness as an EXTERNAL worker pool (as `external`);
# ENVIRONMENT=loopback runs it in the submitting process instead. They fetch what they need once into
# ${XMLSQL_CACHE:-$HOME/.cache/xmlsql-engines} (scripts/fetch_engines.sh: versions and why there) and need
# Java 17 + Maven (flink, flink-cluster, spark) or Go (prism).
#
# Everything after the mode goes to `python -m pipeline run` unchanged, e.g.
#   deploy/portable_local.sh flink --contract credit_app --source sqlite:///app.db --target sqlite:///app.db \
#       --tables credit_app_tables --create-tables
# Engine modes add --parallelism=PARALLELISM (Flink), --sdk_worker_parallelism=SDK_WORKERS (both default 2) and
# --environment_cache_millis=ENV_CACHE_MS (default 600000) before your arguments, so yours win. Ports are picked free on 127.0.0.1 and readiness is checked there. Binding:
# the Flink cluster and the job servers listen on 127.0.0.1 / localhost; worker_pool_main (and the LOOPBACK
# worker server in the launcher) bind [::] — all interfaces — which Beam 2.77 does not let us change: run this
# on a machine whose firewall you trust.
# Exit status: the pipeline's (0 ok, 2 configuration error, 3 SUMMARY invariant broken), or 4 when a service did
# not come up or a tool it needs (java, mvn, go) is missing. PYTHON (default: the repo's .venv/bin/python) is the
# interpreter for the job, the services and the workers; STARTUP_TIMEOUT (default 60 s, 180 s for the JVM
# services) bounds the wait for a service to listen; KEEP_LOGS=1 keeps the service logs of a successful run.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$here/.venv/bin/python}"
JVM_STARTUP_TIMEOUT="${STARTUP_TIMEOUT:-180}"
STARTUP_TIMEOUT="${STARTUP_TIMEOUT:-60}"
PARALLELISM="${PARALLELISM:-2}"
SDK_WORKERS="${SDK_WORKERS:-2}"
ENVIRONMENT="${ENVIRONMENT:-external}"
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
  flink|flink-cluster|spark|prism) mode=$1; shift ;;
esac

# What the mode needs on this machine, checked before anything starts: one line and exit 4 when it is missing.
need() {   # tool, what for, Debian package
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "portable_local.sh: $mode needs $1 ($2), which is not installed: apt-get install $3" >&2
  exit 4
}
case "$mode" in
  flink|flink-cluster|spark)
    need java "Java 17 runs the $mode job server" openjdk-17-jre-headless
    need mvn "Maven fetches the $mode job server from Maven Central" maven ;;
  prism)
    need go "Go builds Prism from the Go module proxy" golang ;;
esac

logdir="$(mktemp -d "${TMPDIR:-/tmp}/portable_local.XXXXXX")"
pids=()

job_pid=
stop_job() {   # the job's launcher (a signal reached the script while it ran): TERM, then KILL after 10 s
  [ -n "$job_pid" ] || return 0
  kill -TERM "$job_pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$job_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$job_pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  stop_job
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
  if [ "$rc" -ne 0 ] || [ "${KEEP_LOGS:-0}" = 1 ]; then
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

wait_listening() {   # name pid port [timeout]
  local name=$1 pid=$2 port=$3
  "$PYTHON" - "$pid" "$port" "${4:-$STARTUP_TIMEOUT}" <<'EOF' || { echo "portable_local.sh: $name did not start listening on 127.0.0.1:$3 (log: $logdir/$1.log):" >&2; tail -20 "$logdir/$1.log" >&2; exit 4; }
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

start() {   # name, then the command: started in its own process group (setsid), output to $logdir/name.log
  local name=$1; shift
  setsid "$@" >"$logdir/$name.log" 2>&1 &
  pids+=("$!")
  echo "portable_local.sh: started $name pid $! (process group)" >&2
  last_pid=$!
}

start_worker_pool() {
  pool_port="$(free_port)"
  start worker_pool "$PYTHON" -m apache_beam.runners.worker.worker_pool_main --service_port "$pool_port"
  wait_listening worker_pool "$last_pid" "$pool_port"
  env_args=(--environment_type=EXTERNAL "--environment_config=localhost:$pool_port")
}

fetched() {   # part: runs scripts/fetch_engines.sh PART and exports the KEY=PATH lines it prints
  local line out
  out="$(PYTHON="$PYTHON" "$here/scripts/fetch_engines.sh" "$1")" || exit 4
  while IFS= read -r line; do
    [ -n "$line" ] && export "${line?}"
  done <<<"$out"
}

# Java 17 and Flink/Spark: the modules they reflect into (Flink's and Spark's own launch scripts pass these)
JAVA_OPENS=(--add-exports=java.base/sun.net.util=ALL-UNNAMED --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/java.lang.invoke=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/sun.nio.cs=ALL-UNNAMED --add-opens=java.base/java.text=ALL-UNNAMED
  --add-opens=java.base/java.time=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent=ALL-UNNAMED --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED --add-opens=java.base/sun.security.action=ALL-UNNAMED
  --add-opens=java.base/sun.util.calendar=ALL-UNNAMED)

start_job_server() {   # name, class path dir, main class, then its options
  local name=$1 cp=$2 main=$3; shift 3
  job_port="$(free_port)"
  start "$name" java "${JAVA_OPENS[@]}" -cp "$cp/*" "$main" --job-port="$job_port" --artifact-port=0 \
    --expansion-port=0 "$@"
  wait_listening "$name" "$last_pid" "$job_port" "$JVM_STARTUP_TIMEOUT"
}

# Flink session cluster: one JobManager and one TaskManager (PARALLELISM slots), separate JVMs, everything on
# 127.0.0.1, its configuration, logs and temporary files under $logdir. The JVM memory settings come from
# Flink's own BashJavaUtils, as its start scripts do.
start_flink_cluster() {
  local conf="$logdir/flink-conf" rpc rest
  mkdir -p "$conf" "$logdir/flink-tmp"
  rpc="$(free_port)"; rest="$(free_port)"
  cat >"$conf/config.yaml" <<EOF
jobmanager.rpc.address: 127.0.0.1
jobmanager.bind-host: 127.0.0.1
jobmanager.rpc.port: $rpc
rest.address: 127.0.0.1
rest.bind-address: 127.0.0.1
rest.port: $rest
taskmanager.host: 127.0.0.1
taskmanager.bind-host: 127.0.0.1
taskmanager.numberOfTaskSlots: $PARALLELISM
parallelism.default: $PARALLELISM
jobmanager.memory.process.size: ${FLINK_JM_MEMORY:-1024m}
taskmanager.memory.process.size: ${FLINK_TM_MEMORY:-2048m}
taskmanager.memory.managed.fraction: 0.1
# Beam's batch translation runs every stage of the job at once, and each blocking (sort-shuffle) result
# partition asks for 512 network buffers by default: the job failed with "Insufficient number of network
# buffers: required 512, but only 480 available" (also with 256 MB of network memory)
taskmanager.network.sort-shuffle.min-buffers: 64
taskmanager.memory.network.min: ${FLINK_TM_NETWORK:-256m}
taskmanager.memory.network.max: ${FLINK_TM_NETWORK:-256m}
io.tmp.dirs: $logdir/flink-tmp
blob.storage.directory: $logdir/flink-tmp
web.tmpdir: $logdir/flink-tmp
EOF
  cat >"$conf/log4j.properties" <<'EOF'
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = MainAppender
appender.main.name = MainAppender
appender.main.type = File
appender.main.fileName = ${sys:log.file}
appender.main.layout.type = PatternLayout
appender.main.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
EOF
  local role params jvm dyn
  for role in JM TM; do
    params="$(java -cp "$FLINK_HOME/lib/*:$FLINK_HOME/bin/bash-java-utils.jar" \
      org.apache.flink.runtime.util.bash.BashJavaUtils "GET_${role}_RESOURCE_PARAMS" --configDir "$conf" 2>&1)" \
      || { echo "portable_local.sh: Flink's BashJavaUtils failed:" >&2; echo "$params" | tail -5 >&2; exit 4; }
    jvm="$(echo "$params" | grep '^BASH_JAVA_UTILS_EXEC_RESULT:' | sed -n 1p | cut -d: -f2-)"
    dyn="$(echo "$params" | grep '^BASH_JAVA_UTILS_EXEC_RESULT:' | sed -n 2p | cut -d: -f2-)"
    if [ "$role" = JM ]; then
      # shellcheck disable=SC2086  # jvm/dyn are lists of options
      start flink_jobmanager java $jvm "${JAVA_OPENS[@]}" "-Dlog.file=$logdir/flink_jobmanager.flink.log" \
        "-Dlog4j.configurationFile=file:$conf/log4j.properties" -cp "$FLINK_HOME/lib/*" \
        org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint --configDir "$conf" \
        --executionMode cluster $dyn
      wait_listening flink_jobmanager "$last_pid" "$rest" "$JVM_STARTUP_TIMEOUT"
    else
      # shellcheck disable=SC2086
      start flink_taskmanager java $jvm "${JAVA_OPENS[@]}" "-Dlog.file=$logdir/flink_taskmanager.flink.log" \
        "-Dlog4j.configurationFile=file:$conf/log4j.properties" -cp "$FLINK_HOME/lib/*" \
        org.apache.flink.runtime.taskexecutor.TaskManagerRunner --configDir "$conf" $dyn
    fi
  done
  # ready when the JobManager sees the TaskManager's slots
  "$PYTHON" - "$rest" "$PARALLELISM" "$JVM_STARTUP_TIMEOUT" "$last_pid" <<'EOF' || { echo "portable_local.sh: the Flink TaskManager did not register with the JobManager (logs: $logdir/flink_*.log)" >&2; exit 4; }
import json, os, sys, time, urllib.request
rest, slots, timeout, tm = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    os.kill(tm, 0)                                   # raises (exit 1) if the TaskManager died
    try:
        o = json.load(urllib.request.urlopen(f'http://127.0.0.1:{rest}/overview', timeout=2))
        if o.get('taskmanagers', 0) >= 1 and o.get('slots-total', 0) >= slots:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.3)
sys.exit(1)
EOF
  flink_rest="127.0.0.1:$rest"
  echo "portable_local.sh: Flink $(basename "$FLINK_HOME") session cluster up, REST on $flink_rest, $PARALLELISM slots" >&2
}

env_args=(--environment_type=LOOPBACK)
engine_args=()
# SDK_WORKERS worker processes per task manager, kept for the whole job: without the environment cache Flink and
# Spark start and stop the SDK workers for every stage (7 times per job here, ~3 s of Python start-up each).
sdk_args=(--sdk_worker_parallelism="$SDK_WORKERS" --environment_cache_millis="${ENV_CACHE_MS:-600000}")
case "$mode" in
  loopback|external)
    job_port="$(free_port)"
    start job_service "$PYTHON" -m apache_beam.runners.portability.local_job_service_main --port "$job_port" \
      --staging_dir "$logdir/staging"
    echo "portable_local.sh: job_service listens on localhost:$job_port" >&2
    wait_listening job_service "$last_pid" "$job_port"
    if [ "$mode" = external ]; then start_worker_pool; fi ;;
  flink)
    fetched flink
    start_job_server flink_job_server "$FLINK_JOB_SERVER_CP" org.apache.beam.runners.flink.FlinkJobServerDriver \
      --flink-master='[local]' --artifacts-dir="$logdir/artifacts"
    engine_args=(--parallelism="$PARALLELISM" "${sdk_args[@]}") ;;
  flink-cluster)
    fetched flink-cluster
    start_flink_cluster
    start_job_server flink_job_server "$FLINK_JOB_SERVER_CP" org.apache.beam.runners.flink.FlinkJobServerDriver \
      --flink-master="$flink_rest" --artifacts-dir="$logdir/artifacts"
    engine_args=(--parallelism="$PARALLELISM" "${sdk_args[@]}") ;;
  spark)
    fetched spark
    start_job_server spark_job_server "$SPARK_JOB_SERVER_CP" org.apache.beam.runners.spark.SparkJobServerDriver \
      --spark-master-url="local[$PARALLELISM]" --artifacts-dir="$logdir/artifacts"
    engine_args=("${sdk_args[@]}") ;;
  prism)
    fetched prism
    job_port="$(free_port)"
    start prism "$PRISM_BIN" --job_port "$job_port" --serve_http=false --log_level warn
    wait_listening prism "$last_pid" "$job_port"
    engine_args=("${sdk_args[@]}") ;;
esac
if [ "$mode" != loopback ] && [ "$mode" != external ] && [ "$ENVIRONMENT" != loopback ]; then start_worker_pool; fi

echo "portable_local.sh: job service on localhost:$job_port ($mode), environment ${env_args[*]}" >&2
set +e
# in the background and waited for, so that a signal to this script (Ctrl-C, a supervisor's TERM) is handled at
# once (bash runs traps only between foreground commands): the trap stops the job, then the services
"$PYTHON" -m pipeline run "${engine_args[@]}" "$@" --runner=PortableRunner "--job_endpoint=localhost:$job_port" \
  "${env_args[@]}" &
job_pid=$!
wait "$job_pid"
rc=$?
job_pid=
set -e
exit "$rc"
