#!/usr/bin/env bash
# The main job, from a fresh machine: install glmtrace and run the instrumented example
# pipeline on the embedded local store, then list and show its trace.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export GLMTRACE_STORE="${GLMTRACE_STORE:-.glmtrace/glmtrace.db}"
glmtrace run examples/autoglm/pipeline.yaml \
  --input '<p>Summarise <b>GLM</b> routing for   the on-call engineer.</p>' --session demo
glmtrace ls --limit 3
