#!/usr/bin/env bash
# The whole test suite, from a fresh machine: Python environment, real backends (cached),
# lint, type check, unit and integration tests. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# tests/ui drive Debian's chromium through Playwright: no browser download.
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
bash scripts/provision.sh
ruff check glmtrace tests bench examples scripts
ruff format --check glmtrace tests bench examples scripts
mypy
if command -v cargo >/dev/null 2>&1; then
  (cd native && CARGO_HOME="$CACHE/cargo-home" cargo fmt -- --check)
fi
python -m pytest tests "$@"
# With the native extension built, the run above took its path; the whole suite runs again on
# the pure-Python path, the one a machine without cargo gets.
if python -c "import glmtrace_native" 2>/dev/null; then
  GLMTRACE_NATIVE=0 python -m pytest tests "$@"
fi
