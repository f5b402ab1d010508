"""The native export path: same bytes as OpenTelemetry's encoder, bounded, counted, fork-safe.

Run with ``GLMTRACE_NATIVE=0`` the suite takes the Python path; these tests then check only
that the fallback is the one in use.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceState

import glmtrace
from glmtrace._internal import native_export
from glmtrace._internal.config import Options
from glmtrace._internal.stats import STATS

FORCED_OFF = native_export.forced_off()
needs_native = pytest.mark.skipif(
    not native_export.available() or FORCED_OFF, reason="native path not built or forced off"
)

# ---------------------------------------------------------------- random spans

_text = st.text(max_size=12)
_int64 = st.integers(-(2**63), 2**63 - 1)
_float = st.floats(allow_nan=False)  # NaN != NaN would make equal messages compare unequal
_scalar = st.one_of(_text, st.booleans(), _int64, _float, st.binary(max_size=8))
_array = st.one_of(*(st.lists(s, max_size=4).map(tuple) for s in (_text, st.booleans(), _int64)))
_attributes = st.dictionaries(_text, st.one_of(_scalar, _array), max_size=5)
_ids = st.integers(1, 2**64 - 1), st.integers(1, 2**128 - 1)


@st.composite
def _context(draw: st.DrawFn) -> SpanContext:
    state = draw(st.sampled_from([TraceState(), TraceState([("vendor", "v1"), ("k", "x")])]))
    return SpanContext(
        draw(_ids[1]), draw(_ids[0]), is_remote=draw(st.booleans()), trace_state=state
    )


_resources = [
    Resource({"service.name": "a", "n": 1}),
    Resource({"service.name": "b", "tags": ("x", "y")}, "https://schema/1"),
]
_scopes = [
    None,
    InstrumentationScope("glmtrace"),
    InstrumentationScope("lib", "1.2", "https://schema/2", {"scope.attr": True}),
]


@st.composite
def _spans(draw: st.DrawFn) -> ReadableSpan:
    start = draw(st.integers(0, 2**63))
    status = draw(
        st.sampled_from([Status(), Status(StatusCode.OK), Status(StatusCode.ERROR, "boom \u00e9")])
    )
    return ReadableSpan(
        name=draw(_text),
        context=draw(_context()),
        parent=draw(st.none() | _context()),
        resource=draw(st.sampled_from(_resources)),
        attributes=draw(_attributes),
        events=[
            Event(draw(_text), draw(_attributes), draw(st.integers(0, 2**63)))
            for _ in range(draw(st.integers(0, 3)))
        ],
        links=[Link(draw(_context()), draw(_attributes)) for _ in range(draw(st.integers(0, 2)))],
        kind=draw(st.sampled_from(list(SpanKind))),
        status=status,
        start_time=start,
        end_time=start + draw(st.integers(0, 10**9)),
        instrumentation_scope=draw(st.sampled_from(_scopes)),
    )


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_spans(), min_size=1, max_size=6))
def test_native_encoding_equals_the_reference_encoder(spans: list[ReadableSpan]) -> None:
    """Every field, grouped by resource then scope, as opentelemetry's encode_spans has it."""
    native = ExportTraceServiceRequest.FromString(native_export.encode_request(spans))
    reference = ExportTraceServiceRequest.FromString(encode_spans(spans).SerializeToString())
    assert native == reference


@needs_native
def test_lone_surrogates_and_wide_integers_are_repaired_not_lost() -> None:
    """What the Python path repairs (span_export._repaired) the native encoder repairs too."""
    span = ReadableSpan(
        name="train-\udcff",
        context=SpanContext(1, 2, False),
        attributes={"big": 2**70, "path": "a\udcffb"},
    )
    request = ExportTraceServiceRequest.FromString(native_export.encode_request([span]))
    (encoded,) = request.resource_spans[0].scope_spans[0].spans
    assert encoded.name == "train-\ufffd"
    values = {a.key: a.value for a in encoded.attributes}
    assert values["big"].string_value == str(2**70)
    assert values["path"].string_value == "a\ufffdb"


# ---------------------------------------------------------------- the pipeline, end to end


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver keeping the names of the spans it decoded."""

    names: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    cut = any(a.key == "glmtrace.truncated" for a in span.attributes)
                    self.names.append(f"{span.name} (truncated)" if cut else span.name)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[str]]]:
    names: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Receiver,), {"names": names}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", names
    server.shutdown()
    server.server_close()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/traces"
    sock.close()


def _init(endpoint: str, tmp_path: Any) -> None:
    glmtrace.init(
        service_name="native-test",
        traces="otlp",
        endpoint=endpoint,
        protocol="http/protobuf",
        logs="none",
        store=tmp_path / "g.db",
    )


def test_the_active_path_is_reported(receiver: tuple[str, list[str]], tmp_path: Any) -> None:
    """stats()["otlp"]["native"] is 1 exactly when the native path carries the spans."""
    STATS.reset()
    _init(receiver[0], tmp_path)
    try:
        with glmtrace.span("one"):
            pass
        assert glmtrace.force_flush(5)
    finally:
        glmtrace.shutdown()
    otlp = glmtrace.stats()["otlp"]
    assert otlp.get("native", 0) == (0 if FORCED_OFF else int(native_export.available()))
    assert otlp["exported"] == 1
    assert receiver[1] == ["one"]


def test_doctor_says_which_export_path_spans_take(tmp_path: Path) -> None:
    """``glmtrace doctor`` names the path OTLP spans take, and why the Python one."""
    env = {
        **os.environ,
        "GLMTRACE_STORE": str(tmp_path / "g.db"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",  # nothing listens: probe says down
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "COLUMNS": "200",
    }
    out = subprocess.run(
        [sys.executable, "-m", "glmtrace", "doctor"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    if native_export.available() and not FORCED_OFF:
        assert "span export: native pipeline" in out.stdout
    else:
        assert "span export: Python OTLP exporter (" in out.stdout
    grpc = Options(endpoint="http://127.0.0.1:9", protocol="grpc")
    assert native_export.describe(grpc).startswith("Python OTLP exporter (")


def test_the_extension_is_built_where_cargo_is() -> None:
    """setup.sh builds the extension when cargo is present; a silent fallback would hide it."""
    if shutil.which("cargo") is None or FORCED_OFF:
        pytest.skip("no cargo here, or GLMTRACE_NATIVE=0: the Python path is the expected one")
    assert native_export.available()


@needs_native
def test_spans_arrive_and_are_counted(receiver: tuple[str, list[str]], tmp_path: Any) -> None:
    """Every span reaches the receiver through the native pipeline and is counted exported."""
    STATS.reset()
    _init(receiver[0], tmp_path)
    try:
        for i in range(1500):
            with glmtrace.span(f"s{i}"):
                pass
        assert glmtrace.force_flush(5)
        assert sorted(receiver[1]) == sorted(f"s{i}" for i in range(1500))
        assert glmtrace.stats()["otlp"]["exported"] == 1500
    finally:
        glmtrace.shutdown()


@needs_native
def test_glmtrace_spans_go_to_the_native_queue_as_tuples(
    receiver: tuple[str, list[str]], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ReadableSpan on the calling thread: glmtrace's spans are handed over as the tuple the
    extension reads; spans of other OpenTelemetry code still go through on_end."""
    ended: list[str] = []
    on_end = native_export.NativeSpanProcessor.on_end

    def watched(self: Any, span: ReadableSpan) -> None:
        ended.append(span.name)
        on_end(self, span)

    monkeypatch.setattr(native_export.NativeSpanProcessor, "on_end", watched)
    STATS.reset()
    _init(receiver[0], tmp_path)
    try:

        @glmtrace.stage
        def work() -> None:
            with trace.get_tracer("other").start_as_current_span("sdk child"):
                pass

        with glmtrace.span("outer"), glmtrace.inference("m"):
            work()
        assert glmtrace.force_flush(5)
    finally:
        glmtrace.shutdown()
    assert ended == ["sdk child"]
    assert sorted(receiver[1]) == ["chat m", "outer", "sdk child", "stage work"]
    assert glmtrace.stats()["otlp"]["exported"] == 4


@needs_native
def test_black_holed_endpoint_drops_are_counted_and_shutdown_bounded(
    black_hole: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full queue drops (counted) instead of blocking; shutdown counts what it left behind."""
    monkeypatch.setenv("GLMTRACE_STRICT", "0")  # the drop warning is the point here
    STATS.reset()
    options = Options(endpoint=black_hole, protocol="http/protobuf", shutdown_timeout=0.5)
    processor = native_export.NativeSpanProcessor(options, max_queue=50, max_request_bytes=1 << 20)
    for i in range(2000):
        processor.on_end(ReadableSpan(name=f"s{i}", context=SpanContext(1, i + 1, False)))
    assert not processor.force_flush(200)
    processor.shutdown()
    counts = STATS.snapshot()["otlp"]
    assert counts.get("exported", 0) == 0
    assert counts["dropped"] == 2000
    assert processor.pending() == 0


@needs_native
def test_a_span_too_big_for_one_request_is_truncated_not_lost(
    receiver: tuple[str, list[str]],
) -> None:
    """As the Python path's SizeBoundedExporter: cut, marked, counted; its neighbours intact."""
    STATS.reset()
    options = Options(endpoint=receiver[0], protocol="http/protobuf")
    processor = native_export.NativeSpanProcessor(options, max_queue=100, max_request_bytes=65536)
    big = {"rows": tuple("x" * 100 for _ in range(10_000)), "text": "y" * 100_000}
    for i, attributes in enumerate([{}, big, {}]):
        processor.on_end(
            ReadableSpan(name=f"s{i}", context=SpanContext(1, i + 1, False), attributes=attributes)
        )
    assert processor.force_flush(5000)
    processor.shutdown()
    assert sorted(receiver[1]) == ["s0", "s1 (truncated)", "s2"]
    counts = STATS.snapshot()["otlp"]
    assert (counts["exported"], counts["truncated"], counts.get("dropped", 0)) == (3, 1, 0)


@needs_native
def test_forked_child_exports_through_its_own_thread(
    receiver: tuple[str, list[str]], tmp_path: Any
) -> None:
    """The child gets a fresh queue and thread: its spans arrive, the parent's are not resent."""
    script = f"""
import os, glmtrace
glmtrace.init(service_name="fork", traces="otlp", endpoint={receiver[0]!r},
              protocol="http/protobuf", logs="none", store={str(tmp_path / "g.db")!r})
with glmtrace.span("parent-before"):
    pass
pid = os.fork()
if pid == 0:
    with glmtrace.span("child"):
        pass
    ok = glmtrace.force_flush(5)
    os._exit(0 if ok and glmtrace.stats()["otlp"]["exported"] == 1 else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
with glmtrace.span("parent-after"):
    pass
assert glmtrace.force_flush(5)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert sorted(receiver[1]) == ["child", "parent-after", "parent-before"]


def test_an_abi3_wheel_builds(tmp_path: Any) -> None:
    """``maturin build`` makes one abi3 wheel (CPython >= 3.10) with the module and its types."""
    maturin = shutil.which("maturin", path=str(Path(sys.executable).parent)) or shutil.which(
        "maturin"
    )
    if shutil.which("cargo") is None or maturin is None:
        pytest.skip("no cargo or maturin here")
    root = Path(__file__).resolve().parents[2]
    cache = Path(os.environ.get("GLMTRACE_CACHE", Path.home() / ".cache" / "glmtrace"))
    env = {
        **os.environ,
        "CARGO_HOME": str(cache / "cargo-home"),  # scripts/setup.sh's caches: a warm build
        "CARGO_TARGET_DIR": str(cache / "cargo-target"),
    }
    subprocess.run(
        [
            maturin,
            "build",
            "--release",
            "--quiet",
            "-m",
            str(root / "native" / "Cargo.toml"),
            "-o",
            str(tmp_path),
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("*.whl")
    assert "-cp310-abi3-" in wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "glmtrace_native/glmtrace_native.abi3.so" in names
    assert "glmtrace_native/__init__.pyi" in names
