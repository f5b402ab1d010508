#!/usr/bin/env bash
# Creates (once) and updates the Python environment glmtrace runs and is tested in.
# The venv lives outside the repository so later runs and CI on this machine reuse it;
# torch alone is several GB, installed once from PyPI and served from the cache after.
# Usage: source scripts/setup.sh   (sets VENV and puts it first on PATH)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${GLMTRACE_CACHE:-$HOME/.cache/glmtrace}"
PYTHON="${PYTHON:-python3}"
VENV="$CACHE/venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  mkdir -p "$CACHE"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
start=$SECONDS
"$VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" -e "$ROOT[dev]"
# The example plugin the plugin tests exercise end to end (tests/unit/test_plugins.py).
"$VENV/bin/python" -m pip install -q --no-deps "$ROOT/examples/plugins/glmtrace-jsonl"
echo "setup: python environment ready in $((SECONDS - start))s ($VENV)" >&2
export VENV
export PATH="$VENV/bin:$PATH"
# The native export pipeline (native/, optional): built when cargo is here, with cargo's caches
# under $CACHE so reruns only relink; without cargo glmtrace runs on its pure-Python path.
if command -v cargo >/dev/null 2>&1; then
  # It links the system's libsqlite3, the copy Python's sqlite3 loads: the -dev package gives
  # the linker its name (installed the way scripts/test.sh installs chromium).
  if ! compgen -G "/usr/lib/*/libsqlite3.so" >/dev/null && command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
      libsqlite3-dev >&2 || echo "setup: libsqlite3-dev not installed" >&2
  fi
  start=$SECONDS
  CARGO_HOME="$CACHE/cargo-home" CARGO_TARGET_DIR="$CACHE/cargo-target" VIRTUAL_ENV="$VENV" \
    "$VENV/bin/maturin" develop --release --quiet -m "$ROOT/native/Cargo.toml" >&2 &&
    echo "setup: native extension built in $((SECONDS - start))s" >&2 ||
    echo "setup: native extension NOT built; glmtrace uses its Python exporter" >&2
fi
