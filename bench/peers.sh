#!/usr/bin/env bash
# Runs bench_peers.py in its own environment, so the peers never enter glmtrace's.
# traceloop-sdk pins dozens of LLM-library instrumentations that this package index cannot
# resolve together; @workflow needs none of them, so it is installed without them.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV="${GLMTRACE_CACHE:-$HOME/.cache/glmtrace}/bench-venv"
[ -x "$ENV/bin/python" ] || python3 -m venv "$ENV"
PIP=("$ENV/bin/python" -m pip install -q)
"${PIP[@]}" logfire -e .
"${PIP[@]}" --no-deps traceloop-sdk==0.62.4
otel=$("$ENV/bin/python" -c 'import importlib.metadata as m; print(m.version("opentelemetry-instrumentation"))')
"${PIP[@]}" httpx "aiohttp<4" "colorama<0.5" "cuid<0.5" deprecated jinja2 pydantic "tenacity<10" \
  "opentelemetry-semantic-conventions-ai<0.6,>=0.5.1" \
  "opentelemetry-instrumentation-logging==$otel" "opentelemetry-instrumentation-requests==$otel" \
  "opentelemetry-instrumentation-urllib3==$otel" "opentelemetry-instrumentation-threading==$otel" \
  "opentelemetry-instrumentation-sqlalchemy==$otel" "opentelemetry-instrumentation-redis==$otel"
exec "$ENV/bin/python" bench/bench_peers.py "$@"
