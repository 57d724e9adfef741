#!/usr/bin/env bash
# Fetch (once) and cache what deploy/portable_local.sh needs to run the job on a real engine:
#
#   scripts/fetch_engines.sh flink|flink-cluster|spark|prism|all     prints KEY=PATH lines for what it fetched
#
#   flink          Beam's Flink job server (FlinkJobServerDriver) as a class path, resolved with Maven
#   flink-cluster  the above + a Flink distribution (flink-dist and log4j jars, from PyPI's
#                  apache-flink-libraries sdist, fetched with pip) to run a JobManager and a TaskManager
#   spark          Beam's Spark job server (SparkJobServerDriver) as a class path, resolved with Maven
#   prism          Beam's Prism runner, built with `go install` from the Go module proxy
#
# The cache is ${XMLSQL_CACHE:-$HOME/.cache/xmlsql-engines} (nothing inside the repository); each part is
# fetched once and reused (a part is complete when its .ok stamp exists). Maven keeps its own downloads in
# ~/.m2 as usual.
#
# Versions (environment, defaults measured here):
#   XMLSQL_BEAM_JAVA=2.62.0   Beam Java runner artifacts. Not 2.77.0: the -job-server uber jars of 2.77.0 are not
#                             served by the Maven Central this project's machines reach (nor any -job-server
#                             jar, nor beam-runners-flink-1.20/2.x); 2.62.0 is the newest Beam version whose
#                             beam-runners-flink-1.19 / beam-runners-spark-3 *and* their dependencies
#                             (beam-runners-java-job-service) resolve here. The Python SDK stays 2.77.0: the
#                             job server only translates the portable pipeline; the SDK harness is Python 2.77.
#   XMLSQL_FLINK=1.19         Flink minor version of the runner (one of Beam 2.77's --flink_version choices with
#                             a served runner artifact); the runner pulls Flink 1.19.0 jars.
#   XMLSQL_FLINK_DIST=1.19.3  Flink distribution for the session cluster (same minor as the runner).
#   XMLSQL_SPARK=3.5.0        Spark for the Spark 3 runner (Beam declares Spark as `provided`).
#   XMLSQL_PRISM=v2.77.0      Prism version (same as the Python SDK).
# Exit status: 0 fetched (or cached), 4 a tool is missing (java, mvn, go, python) or a fetch failed.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$here/.venv/bin/python}"
CACHE="${XMLSQL_CACHE:-$HOME/.cache/xmlsql-engines}"
BEAM_JAVA="${XMLSQL_BEAM_JAVA:-2.62.0}"
FLINK="${XMLSQL_FLINK:-1.19}"
FLINK_DIST="${XMLSQL_FLINK_DIST:-1.19.3}"
SPARK="${XMLSQL_SPARK:-3.5.0}"
PRISM="${XMLSQL_PRISM:-v2.77.0}"

die() { echo "fetch_engines.sh: $*" >&2; exit 4; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed (needed for $2); install it (e.g. apt-get install $3) and retry"; }

# A throw-away POM whose dependencies are the job server's class path; `mvn dependency:copy-dependencies`
# resolves them from Maven Central into lib/.
maven_classpath() {   # dir, then groupId:artifactId:version ...
  local dir=$1; shift
  [ -f "$dir/.ok" ] && return 0
  need java "the $(basename "$dir") job server" openjdk-17-jre-headless
  need mvn "fetching the $(basename "$dir") job server" maven
  rm -rf "$dir"; mkdir -p "$dir"
  {
    echo '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
    echo '<groupId>local.xmlsql</groupId><artifactId>engine-classpath</artifactId><version>1</version>'
    echo '<packaging>pom</packaging><dependencies>'
    local gav g a v
    for gav in "$@"; do
      IFS=: read -r g a v <<<"$gav"
      echo "<dependency><groupId>$g</groupId><artifactId>$a</artifactId><version>$v</version></dependency>"
    done
    echo '</dependencies></project>'
  } >"$dir/pom.xml"
  echo "fetch_engines.sh: resolving $* with Maven (first time only)" >&2
  if ! (cd "$dir" && mvn -B -q dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime \
          >"$dir/mvn.log" 2>&1); then
    grep -m1 'ERROR' "$dir/mvn.log" >&2 || tail -5 "$dir/mvn.log" >&2
    die "Maven could not resolve the $(basename "$dir") class path (log: $dir/mvn.log)"
  fi
  touch "$dir/.ok"
}

fetch_flink() {
  local dir="$CACHE/flink-job-server-$FLINK-beam-$BEAM_JAVA"
  maven_classpath "$dir" "org.apache.beam:beam-runners-flink-$FLINK:$BEAM_JAVA"
  echo "FLINK_JOB_SERVER_CP=$dir/lib"
}

fetch_flink_dist() {
  local dir="$CACHE/flink-$FLINK_DIST"
  if [ ! -f "$dir/.ok" ]; then
    need java "the Flink session cluster" openjdk-17-jre-headless
    [ -x "$PYTHON" ] || die "no interpreter at $PYTHON (run ./run_local.sh once, or set PYTHON)"
    rm -rf "$dir"; mkdir -p "$dir/lib" "$dir/bin" "$dir/dl"
    echo "fetch_engines.sh: downloading apache-flink-libraries==$FLINK_DIST from PyPI (~230 MB, first time only)" >&2
    "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps -d "$dir/dl" \
        "apache-flink-libraries==$FLINK_DIST" >"$dir/pip.log" 2>&1 \
      || { tail -3 "$dir/pip.log" >&2; die "pip could not download apache-flink-libraries==$FLINK_DIST"; }
    local sdist top
    sdist="$(ls "$dir"/dl/apache-flink-libraries-*.tar.gz)"
    top="apache-flink-libraries-$FLINK_DIST/deps"
    # only the runtime (flink-dist), its logging and the helper that computes the JVM's memory settings
    tar xzf "$sdist" -C "$dir" --strip-components=2 "$top/lib/flink-dist-$FLINK_DIST.jar" \
        "$top/lib/log4j-api-2.17.1.jar" "$top/lib/log4j-core-2.17.1.jar" "$top/lib/log4j-slf4j-impl-2.17.1.jar" \
        "$top/lib/log4j-1.2-api-2.17.1.jar" "$top/bin/bash-java-utils.jar" \
      || die "unexpected layout in $sdist"
    rm -rf "$dir/dl"
    touch "$dir/.ok"
  fi
  echo "FLINK_HOME=$dir"
}

fetch_spark() {
  local dir="$CACHE/spark-job-server-3-beam-$BEAM_JAVA-spark-$SPARK"
  maven_classpath "$dir" "org.apache.beam:beam-runners-spark-3:$BEAM_JAVA" \
    "org.apache.spark:spark-core_2.12:$SPARK" "org.apache.spark:spark-streaming_2.12:$SPARK"
  echo "SPARK_JOB_SERVER_CP=$dir/lib"
}

fetch_prism() {
  local dir="$CACHE/prism-$PRISM"
  if [ ! -f "$dir/.ok" ]; then
    need go "building Prism" golang
    rm -rf "$dir"; mkdir -p "$dir"
    echo "fetch_engines.sh: building prism@$PRISM with go install (first time only, ~3 min)" >&2
    GOBIN="$dir" GOFLAGS="${GOFLAGS:--buildvcs=false}" go install "github.com/apache/beam/sdks/v2/go/cmd/prism@$PRISM" \
        >"$dir/go.log" 2>&1 || { tail -5 "$dir/go.log" >&2; die "go install of prism@$PRISM failed (log: $dir/go.log)"; }
    touch "$dir/.ok"
  fi
  echo "PRISM_BIN=$dir/prism"
}

case "${1:-}" in
  flink) fetch_flink ;;
  flink-cluster) fetch_flink; fetch_flink_dist ;;
  spark) fetch_spark ;;
  prism) fetch_prism ;;
  all) fetch_flink; fetch_flink_dist; fetch_spark; fetch_prism ;;
  *) echo "usage: scripts/fetch_engines.sh flink|flink-cluster|spark|prism|all" >&2; exit 2 ;;
esac
