#!/usr/bin/env bash
# Runs bench_peers.py in its own environment, so the peers never enter glmtrace's.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV="${GLMTRACE_CACHE:-$HOME/.cache/glmtrace}/bench-venv"
[ -x "$ENV/bin/python" ] || python3 -m venv "$ENV"
"$ENV/bin/python" -m pip install -q logfire traceloop-sdk -e .
exec "$ENV/bin/python" bench/bench_peers.py "$@"
