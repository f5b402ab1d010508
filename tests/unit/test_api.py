"""The public surface: a small sorted __all__, no optional imports, no-ops before init()."""

from __future__ import annotations

import subprocess
import sys

import glmtrace


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted and every name in it exists."""
    assert list(glmtrace.__all__) == sorted(glmtrace.__all__)
    for name in glmtrace.__all__:
        assert hasattr(glmtrace, name), name


def test_import_loads_no_optional_dependency() -> None:
    """`import glmtrace` imports none of torch, numpy, elasticsearch, fluent."""
    code = (
        "import sys, glmtrace; "
        "print(','.join(m for m in ('torch','numpy','elasticsearch','fluent') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_api_before_init_is_a_noop() -> None:
    """Before init(), stages run, spans yield a no-op handle, ids are None."""

    @glmtrace.stage
    def double(x: int) -> int:
        return 2 * x

    with glmtrace.span("nothing", {"a": 1}) as span:
        span.set_attribute("b", 2)
        span.add_event("e")
        assert span.trace_id is None
        assert glmtrace.current_trace_id() is None
        assert double(4) == 8
    assert glmtrace.current_span_id() is None
    assert glmtrace.inject({}) == {}


def test_missing_extra_raises_and_leaves_nothing_running(tmp_path: object) -> None:
    """logs='fluent' without msgpack raises MissingDependencyError; no thread stays."""
    code = (
        "import sys, threading; sys.modules['msgpack'] = None\n"
        "import glmtrace\n"
        "try:\n"
        "    glmtrace.init(logs='fluent', traces='none')\n"
        "except glmtrace.MissingDependencyError as exc:\n"
        "    print('raised:', exc)\n"
        "others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]\n"
        "print('threads:', others)\n"
        "import logging; logging.getLogger('x').warning('still logs')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'glmtrace[fluent]'" in out.stdout
    assert "threads: []" in out.stdout
