#!/usr/bin/env bash
# Runs bench_load.py. Locust lives in its own environment (glmtrace with the `bench` extra) so
# gevent never enters the development one; the service and the driver run in the development
# environment (scripts/setup.sh), which has the test helpers that start the real Collector.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${GLMTRACE_CACHE:-$HOME/.cache/glmtrace}"
ENV="$CACHE/bench-load-venv"
[ -x "$ENV/bin/python" ] || python3 -m venv "$ENV"
"$ENV/bin/python" -m pip install -q -c constraints.txt -e ".[bench]"
exec "${PYTHON:-$CACHE/venv/bin/python}" bench/bench_load.py --locust "$ENV/bin/locust" "$@"
