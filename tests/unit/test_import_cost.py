"""`import glmtrace` stays cheap: what only a feature in use needs is imported when it is used.

The same holds for init(): the SQLite store is imported only when spans or logs go to it.

Checked by what a fresh interpreter has imported, not by timing, so machine load cannot make
these pass or fail (bench/bench_import.py measures the milliseconds).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import glmtrace

# Each costs 2-12 ms of `import glmtrace` (bench/README.md) and serves one feature.
DEFERRED = (
    "asyncio",  # stage.py: only to recognise a cancelled task
    "importlib.metadata",  # plugins: looked up by init() and doctor
    "sqlite3",  # the local store: opened by init()
    "ssl",  # came with asyncio; only HTTPS clients need it
    "decimal",  # repair: integers past the digits limit
    "glmtrace._internal.store.database",
    "glmtrace._internal.torch.cuda",
    "glmtrace._internal.torch.summaries",
    "glmtrace._internal.torch.kineto",
    "glmtrace._internal.torch.modules",
    "glmtrace._internal.torch.profiler",
)


def _fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.strip()


def test_import_leaves_feature_modules_unimported() -> None:
    # Only what `import glmtrace` adds: site-packages' start-up hooks may import anything.
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import glmtrace\n"
        f"print(sorted(m for m in {DEFERRED!r} if m in set(sys.modules) - before))\n"
    )
    assert _fresh(code) == "[]"


def test_init_imports_the_store_only_when_it_is_a_sink(tmp_path: Path) -> None:
    code = (
        "import sys, glmtrace\n"
        "glmtrace.init(traces='none', logs='none')\n"
        "print('sqlite3' in sys.modules)\n"
        f"glmtrace.init(traces='none', logs='local', store={str(tmp_path / 't.db')!r})\n"
        "print('sqlite3' in sys.modules)\n"
    )
    assert _fresh(code).split() == ["False", "True"]


def test_deferred_public_names_import_on_first_use() -> None:
    """`from glmtrace import X` and `glmtrace.X` reach the torch helpers, the same objects."""
    code = (
        "import sys, glmtrace\n"
        "from glmtrace import CudaSpan, Profile, cuda_span, instrument_torch\n"
        "from glmtrace._internal.torch import cuda, modules, profiler\n"
        "assert cuda_span is cuda.cuda_span and CudaSpan is cuda.CudaSpan\n"
        "assert glmtrace.profile is profiler.profile and Profile is profiler.Profile\n"
        "assert instrument_torch is modules.instrument_torch\n"
        "assert glmtrace.uninstrument_torch is modules.uninstrument_torch\n"
        "print('torch' in sys.modules)\n"
    )
    assert _fresh(code) == "False"  # torch itself still waits for a call


def test_dir_lists_deferred_names_and_unknown_names_still_fail() -> None:
    assert set(glmtrace.__all__) <= set(dir(glmtrace))
    code = (
        "import glmtrace\n"
        "try:\n"
        "    glmtrace.cuda_spam\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    assert _fresh(code) == "module 'glmtrace' has no attribute 'cuda_spam'"
