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
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
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
    tls = Options(endpoint="https://127.0.0.1:9", protocol="grpc")
    assert native_export.describe(tls).startswith("Python OTLP exporter (")


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


def _send(
    options: Options, spans: int, max_queue: int, flush_ms: int
) -> tuple[bool, dict[str, int]]:
    """``spans`` spans through a fresh native processor: whether the flush finished, and the
    counts after shutdown (no span may be left pending)."""
    STATS.reset()
    processor = native_export.NativeSpanProcessor(
        options, max_queue=max_queue, max_request_bytes=1 << 20
    )
    for i in range(spans):
        processor.on_end(ReadableSpan(name=f"s{i}", context=SpanContext(1, i + 1, False)))
    flushed = processor.force_flush(flush_ms)
    processor.shutdown()
    assert processor.pending() == 0
    return flushed, STATS.snapshot()["otlp"]


def _fill_and_shut_down(endpoint: str, protocol: str) -> None:
    """2,000 spans into a 50-span queue towards ``endpoint``: all dropped, counted, none left."""
    options = Options(endpoint=endpoint, protocol=protocol, shutdown_timeout=0.5)
    flushed, counts = _send(options, 2000, max_queue=50, flush_ms=200)
    assert not flushed
    assert (counts.get("exported", 0), counts["dropped"]) == (0, 2000)


@needs_native
def test_black_holed_endpoint_drops_are_counted_and_shutdown_bounded(
    black_hole: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full queue drops (counted) instead of blocking; shutdown counts what it left behind."""
    monkeypatch.setenv("GLMTRACE_STRICT", "0")  # the drop warning is the point here
    _fill_and_shut_down(black_hole, "http/protobuf")


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


# ---------------------------------------------------------------- OTLP/gRPC


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps the span names it decoded and each call's metadata. A ``refuse`` key in the
    metadata makes it answer PERMISSION_DENIED; ``flaky`` makes its first answer UNAVAILABLE."""

    def __init__(self, names: list[str], metadata: list[dict[str, str]]) -> None:
        self.names, self.metadata = names, metadata

    def Export(self, request: Any, context: Any) -> Any:
        sent = {str(k): str(v) for k, v in context.invocation_metadata()}
        self.metadata.append(sent)
        if "refuse" in sent:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "refused")
        if "flaky" in sent and len(self.metadata) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "starting")
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                self.names.extend(span.name for span in ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def _grpc_server(address: str, names: list[str], metadata: list[dict[str, str]]) -> tuple[Any, int]:
    """A started grpcio OTLP/gRPC receiver on ``address`` (port 0: any), and its port."""
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
        _TraceService(names, metadata), server
    )
    port = server.add_insecure_port(address)
    server.start()
    return server, port


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[str, list[str], list[dict[str, str]]]]:
    """An OTLP/gRPC receiver: its endpoint, the span names it decoded, each call's metadata."""
    names: list[str] = []
    metadata: list[dict[str, str]] = []
    server, port = _grpc_server("127.0.0.1:0", names, metadata)
    yield f"http://127.0.0.1:{port}", names, metadata
    server.stop(None).wait()


def test_plain_text_grpc_takes_the_native_path_tls_and_compression_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gRPC to an http:// endpoint is native; https:// or a compression setting keep OTel's."""
    if not native_export.available() or FORCED_OFF:
        pytest.skip("native path not built or forced off")
    assert native_export.wanted(Options(endpoint="http://127.0.0.1:4317", protocol="grpc"))
    assert not native_export.wanted(Options(endpoint="https://127.0.0.1:4317", protocol="grpc"))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    assert not native_export.wanted(Options(endpoint="http://127.0.0.1:4317", protocol="grpc"))


@needs_native
def test_grpc_spans_arrive_with_their_metadata_and_are_counted(
    grpc_receiver: tuple[str, list[str], list[dict[str, str]]], tmp_path: Any
) -> None:
    """Over OTLP/gRPC every span arrives and is counted exported; headers travel as metadata."""
    endpoint, names, metadata = grpc_receiver
    STATS.reset()
    glmtrace.init(
        service_name="native-grpc",
        traces="otlp",
        endpoint=endpoint,
        protocol="grpc",
        headers={"X-Api-Key": "k1"},
        logs="none",
        store=tmp_path / "g.db",
    )
    try:
        for i in range(1500):
            with glmtrace.span(f"s{i}"):
                pass
        assert glmtrace.force_flush(5)
        assert sorted(names) == sorted(f"s{i}" for i in range(1500))
        otlp = glmtrace.stats()["otlp"]
        assert (otlp.get("native"), otlp["exported"], otlp.get("dropped", 0)) == (1, 1500, 0)
        assert metadata and all(m.get("x-api-key") == "k1" for m in metadata)
    finally:
        glmtrace.shutdown()


@needs_native
def test_a_grpc_status_other_than_ok_counts_the_spans_dropped(
    grpc_receiver: tuple[str, list[str], list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PERMISSION_DENIED is not retried (one call) and the batch is counted dropped."""
    monkeypatch.setenv("GLMTRACE_STRICT", "0")  # the drop warning is the point here
    endpoint, names, metadata = grpc_receiver
    options = Options(endpoint=endpoint, protocol="grpc", headers={"refuse": "1"})
    flushed, counts = _send(options, 10, max_queue=100, flush_ms=5000)
    assert flushed
    assert (counts.get("exported", 0), counts["dropped"]) == (0, 10)
    assert (names, len(metadata)) == ([], 1)


@needs_native
def test_an_unavailable_grpc_collector_is_retried(
    grpc_receiver: tuple[str, list[str], list[dict[str, str]]],
) -> None:
    """UNAVAILABLE is transient (as HTTP 503): the batch is sent again and arrives, once."""
    endpoint, names, metadata = grpc_receiver
    options = Options(endpoint=endpoint, protocol="grpc", headers={"flaky": "1"})
    flushed, counts = _send(options, 10, max_queue=100, flush_ms=5000)
    assert flushed
    assert (counts["exported"], counts.get("dropped", 0)) == (10, 0)
    assert (sorted(names), len(metadata)) == (sorted(f"s{i}" for i in range(10)), 2)


@pytest.fixture
def grpc_black_hole() -> Iterator[tuple[str, list[bytes]]]:
    """An endpoint that accepts connections, keeps what the client sent first, never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    first: list[bytes] = []
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:  # closed: the test is over
                return
            held.append(conn)
            preface = b""
            while len(preface) < 24 and (more := conn.recv(24 - len(preface))):
                preface += more
            first.append(preface)

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", first
    sock.close()
    for conn in held:
        conn.close()


@needs_native
def test_black_holed_grpc_endpoint_drops_are_counted_and_shutdown_bounded(
    grpc_black_hole: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collector that accepts and never answers: the full queue drops (counted) instead of
    blocking, and shutdown counts what it left behind."""
    monkeypatch.setenv("GLMTRACE_STRICT", "0")
    endpoint, first = grpc_black_hole
    _fill_and_shut_down(endpoint, "grpc")
    assert first[0] == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # it was spoken to in HTTP/2


@needs_native
def test_forked_child_exports_over_grpc_through_its_own_pipeline(
    grpc_receiver: tuple[str, list[str], list[dict[str, str]]], tmp_path: Any
) -> None:
    """The parent has a live gRPC connection when it forks; the child exports through its own
    runtime and connection, and the parent's keeps working after."""
    endpoint, names, _ = grpc_receiver
    script = f"""
import os, glmtrace
glmtrace.init(service_name="fork", traces="otlp", endpoint={endpoint!r},
              protocol="grpc", logs="none", store={str(tmp_path / "g.db")!r})
with glmtrace.span("parent-before"):
    pass
assert glmtrace.force_flush(5)
pid = os.fork()
if pid == 0:
    with glmtrace.span("child"):
        pass
    ok = glmtrace.force_flush(5)
    otlp = glmtrace.stats()["otlp"]
    os._exit(0 if ok and otlp["exported"] == 1 and otlp["native"] == 1 else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
with glmtrace.span("parent-after"):
    pass
assert glmtrace.force_flush(5)
assert glmtrace.stats()["otlp"]["exported"] == 2
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert sorted(names) == ["child", "parent-after", "parent-before"]


@needs_native
def test_grpc_url_credentials_travel_as_an_authorization_header(
    grpc_receiver: tuple[str, list[str], list[dict[str, str]]],
) -> None:
    """``http://user:password@host`` sends Basic authorization metadata, as the Python path."""
    endpoint, names, metadata = grpc_receiver
    with_password = endpoint.replace("http://", "http://trainer:s%40cret@")
    options = Options(endpoint=with_password, protocol="grpc")
    processor = native_export.NativeSpanProcessor(options, max_queue=100, max_request_bytes=1 << 20)
    processor.on_end(ReadableSpan(name="s", context=SpanContext(1, 2, False)))
    assert processor.force_flush(5000)
    processor.shutdown()
    assert names == ["s"]
    assert metadata[0]["authorization"] == "Basic dHJhaW5lcjpzQGNyZXQ="  # trainer:s@cret


@needs_native
def test_a_restarted_grpc_collector_is_reached_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The channel reconnects: a span sent while the collector is down is counted dropped, the
    next one, once it is back on the same port, arrives."""
    monkeypatch.setenv("GLMTRACE_STRICT", "0")
    names: list[str] = []
    server, port = _grpc_server("127.0.0.1:0", names, [])
    address = f"127.0.0.1:{port}"
    STATS.reset()
    options = Options(endpoint=f"http://{address}", protocol="grpc", shutdown_timeout=0.5)
    processor = native_export.NativeSpanProcessor(options, max_queue=100, max_request_bytes=1 << 20)
    try:
        for span_id, name in enumerate(["before", "while-down", "after"], 1):
            if name == "while-down":
                server.stop(None).wait()
            elif name == "after":
                server, _ = _grpc_server(address, names, [])
            processor.on_end(ReadableSpan(name=name, context=SpanContext(1, span_id, False)))
            assert processor.force_flush(10_000)
        processor.shutdown()
    finally:
        server.stop(None).wait()
    counts = STATS.snapshot()["otlp"]
    assert (names, counts["exported"], counts["dropped"]) == (["before", "after"], 2, 1)
