#!/usr/bin/env bash
# The whole test suite, from a fresh machine: Python environment, real backends (cached),
# lint, type check, unit and integration tests. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
bash scripts/provision.sh
ruff check glmtrace tests bench examples scripts
ruff format --check glmtrace tests bench examples scripts
mypy
python -m pytest tests "$@"
