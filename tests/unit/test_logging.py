"""Log records carry trace ids inside spans and land in the local store linked to them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import glmtrace
from glmtrace._internal.store.database import Store

log = logging.getLogger("test.app")


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Capture:
    handler = Capture()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield handler
    log.removeHandler(handler)


def test_records_inside_a_span_carry_ecs_and_otel_ids(local_store: Path, captured: Capture) -> None:
    """Inside a span: trace.id/span.id and otelTraceID/otelSpanID; outside: empty strings."""
    with glmtrace.span("work") as span:
        log.info("inside")
    log.info("outside")
    inside, outside = captured.records
    assert inside.__dict__["trace.id"] == inside.otelTraceID == span.trace_id
    assert inside.__dict__["span.id"] == inside.otelSpanID == span.span_id
    for name in ("trace.id", "span.id", "otelTraceID", "otelSpanID"):
        assert outside.__dict__[name] == ""


def test_format_naming_trace_id_works_outside_a_span(local_store: Path, captured: Capture) -> None:
    """'%(trace.id)s' formats inside and outside spans; the stored document omits empty ids."""
    formatter = logging.Formatter("[%(trace.id)s/%(span.id)s] %(message)s")
    with glmtrace.span("work") as span:
        log.info("inside")
    log.info("outside")
    inside, outside = (formatter.format(r) for r in captured.records)
    assert inside == f"[{span.trace_id}/{span.span_id}] inside"
    assert outside == "[/] outside"
    glmtrace.force_flush()
    (document,) = [d for d in Store(local_store).all_logs() if d["message"] == "outside"]
    assert "trace.id" not in document and "span.id" not in document


def test_formatter_can_print_trace_id(local_store: Path, captured: Capture) -> None:
    """A stdlib formatter can reference %(otelTraceID)s."""
    with glmtrace.span("work") as span:
        log.info("hello")
    text = logging.Formatter("%(otelTraceID)s %(message)s").format(captured.records[0])
    assert text == f"{span.trace_id} hello"


def test_logs_land_in_local_store_linked_to_span(local_store: Path) -> None:
    """Log lines are stored with the trace and span that emitted them, extras as labels."""
    with glmtrace.span("work") as span:
        log.warning("disk %s is full", "/data", extra={"device": "sda", "password": "x"})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    log.warning("no trace here")
    glmtrace.force_flush()
    assert span.trace_id is not None
    docs = Store(local_store).logs(span.trace_id)
    assert [d["message"] for d in docs] == ["disk /data is full", "failed"]
    first, second = docs
    assert first["span.id"] == span.span_id
    assert first["log.level"] == "WARNING"
    assert first["labels.device"] == "sda"
    assert first["labels.password"] == "[REDACTED]"
    assert second["error.type"] == "RuntimeError"
    assert "boom" in second["error.stack_trace"]
    orphans = [d for d in Store(local_store).all_logs() if d["message"] == "no trace here"]
    assert len(orphans) == 1 and "trace.id" not in orphans[0]


def test_shutdown_restores_record_factory(tmp_path: Path) -> None:
    """After shutdown() records no longer get trace ids."""
    glmtrace.init(store=tmp_path / "s.db")
    glmtrace.shutdown()
    record = logging.getLogRecordFactory()("x", logging.INFO, "f", 1, "m", (), None)
    assert "trace.id" not in record.__dict__


def test_credentials_in_messages_and_exceptions_are_scrubbed(local_store: Path) -> None:
    """Bearer tokens and key=value credentials never reach the store, in logs or span events."""
    secret = "eyJhbGciOiJIUzI1NiJ9.payload.sig"
    try:
        with glmtrace.span("call"):
            log.warning("retrying with password=%s", "hunter22")
            raise PermissionError(f"401 for Authorization: Bearer {secret}")
    except PermissionError:
        log.exception("request failed")
    glmtrace.force_flush()
    store = Store(local_store)
    everything = repr(store.all_logs()) + repr(store.all_spans())
    assert secret not in everything
    assert "hunter22" not in everything
    assert "Bearer [REDACTED]" in everything


def test_factory_wrapped_by_another_library_keeps_working(tmp_path: Path) -> None:
    """A library that wraps the record factory after init() survives shutdown and re-init."""
    glmtrace.init(store=tmp_path / "a.db")
    inner = logging.getLogRecordFactory()

    def other_library(*args: object, **kwargs: object) -> logging.LogRecord:
        record = inner(*args, **kwargs)
        record.other = True
        return record

    logging.setLogRecordFactory(other_library)
    try:
        glmtrace.shutdown()
        log.warning("after shutdown")  # must not raise
        glmtrace.init(store=tmp_path / "b.db", service_name="again")
        with glmtrace.span("s") as span:
            record = logging.getLogRecordFactory()("x", logging.INFO, "f", 1, "m", (), None)
        assert record.__dict__["trace.id"] == span.trace_id
        assert record.other is True
    finally:
        glmtrace.shutdown()
        logging.setLogRecordFactory(inner)


def test_user_console_output_is_unchanged(tmp_path: Path) -> None:
    """init() captures INFO, yet the user's root handler prints exactly what it did before."""
    root = logging.getLogger()
    console = Capture()
    root.addHandler(console)
    old_level = root.level
    root.setLevel(logging.WARNING)
    try:
        glmtrace.init(store=tmp_path / "c.db")
        logging.getLogger("lib").info("chatty library detail")
        logging.getLogger("lib").warning("real problem")
        glmtrace.force_flush()
        assert [r.getMessage() for r in console.records] == ["real problem"]
        messages = [d["message"] for d in Store(tmp_path / "c.db").all_logs()]
        assert "chatty library detail" in messages  # captured all the same
        glmtrace.shutdown()
        assert root.level == logging.WARNING
        assert console.level == logging.NOTSET
    finally:
        glmtrace.shutdown()
        root.removeHandler(console)
        root.setLevel(old_level)


def test_one_record_reaches_every_sink(tmp_path: Path, refused_port: int) -> None:
    """With two log sinks, each record is built once and handed to both."""
    port = refused_port  # nothing listens: the fluent sink counts its drop

    def fluent_seen() -> int:
        counts = glmtrace.stats().get("logs-fluent", {})
        return counts.get("exported", 0) + counts.get("dropped", 0)

    before = fluent_seen()
    glmtrace.init(store=tmp_path / "two.db", logs=["local", "fluent"], fluent_port=port)
    try:
        logging.getLogger("both").warning("fan out %d", 1)
        glmtrace.shutdown(timeout=3)
        assert [d["message"] for d in Store(tmp_path / "two.db").all_logs()] == ["fan out 1"]
        assert fluent_seen() - before == 1
    finally:
        glmtrace.shutdown()


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


def _log_unprintable_argument() -> None:
    log.warning("value %s", _Unprintable())


def _log_int_key_in_extra() -> None:
    log.warning("numbered", extra={1: "one"})


def _log_unprintable_exception() -> None:
    try:
        raise _UnprintableError
    except _UnprintableError:
        log.exception("failed")


@pytest.mark.parametrize(
    ("emit", "expected"),
    [
        (_log_unprintable_argument, {"message": "'value %s' % (<_Unprintable instance at 0x"}),
        (_log_int_key_in_extra, {"message": "numbered", "labels.1": "one"}),
        (
            _log_unprintable_exception,
            {
                "error.type": "_UnprintableError",
                "error.message": "<_UnprintableError object: str() failed>",
            },
        ),
    ],
    ids=["argument-str-raises", "int-key-in-extra", "exception-str-raises"],
)
def test_hostile_record_is_repaired_not_lost(
    local_store: Path, emit: Any, expected: dict[str, str]
) -> None:
    """A record with a bad part is stored with that part repaired, not dropped (the
    expected values are prefixes)."""
    root = logging.getLogger()
    pytest_handlers = root.handlers[:]  # pytest's capture handlers raise on such records
    for handler in pytest_handlers:
        root.removeHandler(handler)
    try:
        emit()
    finally:
        for handler in pytest_handlers:
            root.addHandler(handler)
    glmtrace.force_flush()
    (document,) = Store(local_store).all_logs()
    for key, start in expected.items():
        assert str(document.get(key)).startswith(start), (key, document.get(key))
    assert "dropped" not in glmtrace.stats().get("logs-local", {})


def test_url_passwords_are_scrubbed_from_logs_errors_and_attributes(local_store: Path) -> None:
    """postgres://bob:hunter2@... never reaches the store: message, exception, attribute."""
    try:
        with glmtrace.span("query", {"dsn": "postgres://bob:hunter2@db:5432/x"}):
            log.warning("connecting to %s", "postgres://bob:hunter2@db:5432/x")
            raise ConnectionError("https://user:hunter2@host/ refused")
    except ConnectionError:
        log.exception("gave up on https://user:hunter2@host/")
    glmtrace.force_flush()
    store = Store(local_store)
    everything = repr(store.all_logs()) + repr(store.all_spans())
    assert "hunter2" not in everything
    assert "postgres://[REDACTED]@db:5432/x" in everything


def test_root_level_set_after_init_is_the_programs(tmp_path: Path) -> None:
    """basicConfig(level=INFO) after init() makes the program's root handlers print INFO."""
    root = logging.getLogger()
    console = Capture()
    root.addHandler(console)
    old_level = root.level
    root.setLevel(logging.WARNING)
    try:
        glmtrace.init(store=tmp_path / "l.db")
        logging.getLogger("lib").info("hidden")
        root.setLevel(logging.INFO)  # what logging.basicConfig(level=logging.INFO) does
        logging.getLogger("lib").info("shown")
        assert [r.getMessage() for r in console.records] == ["shown"]
        glmtrace.shutdown()
        assert root.level == logging.INFO  # the program's choice stays
    finally:
        glmtrace.shutdown()
        root.removeHandler(console)
        root.setLevel(old_level)


def test_a_diversion_keeps_a_bounded_number_of_documents(local_store: Path) -> None:
    """Past MAX_DIVERTED, lines logged under a diversion are shipped at once: none lost."""
    from glmtrace._internal.logs.handler import MAX_DIVERTED, diverted, submit_documents

    log = logging.getLogger("diverted")
    with diverted() as kept:
        for i in range(MAX_DIVERTED + 5):
            log.warning("line %d", i)
    assert len(kept) == MAX_DIVERTED
    submit_documents(kept)
    glmtrace.shutdown()
    messages = {doc["message"] for doc in Store(local_store).all_logs()}
    assert messages == {f"line {i}" for i in range(MAX_DIVERTED + 5)}
