"""Attribute coercion: tensors, containers, cycles, truncation, redaction."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import glmtrace
from glmtrace._internal.attributes import Limits, coerce, coerce_attributes, jsonable, truncate
from tests.conftest import Traced

LIMITS = Limits(max_length=50)


def test_numpy_array_becomes_summary() -> None:
    """An array becomes {shape, dtype, device}, never its data."""
    value = coerce(np.zeros((2, 3), dtype=np.float32), Limits())
    assert json.loads(str(value)) == {"shape": [2, 3], "dtype": "float32", "device": "cpu"}


def test_torch_tensor_becomes_summary() -> None:
    """A torch tensor becomes {shape, dtype, device}."""
    torch = pytest.importorskip("torch")
    value = coerce({"x": torch.ones(4, 5, dtype=torch.float16)}, Limits())
    assert json.loads(str(value)) == {
        "x": {"shape": [4, 5], "dtype": "torch.float16", "device": "cpu"}
    }


def test_containers_become_bounded_json() -> None:
    """Dicts become JSON; long strings are truncated with a marker."""
    value = coerce({"a": [1, 2], "b": "x" * 200}, Limits(max_length=1000))
    parsed = json.loads(str(value))
    assert parsed["a"] == [1, 2]
    assert parsed["b"].startswith("x" * 100) and "truncated" in parsed["b"]
    assert len(str(coerce("y" * 500, LIMITS))) < 100


def test_homogeneous_lists_stay_lists() -> None:
    """A list of one primitive type stays an OTel sequence attribute."""
    assert coerce([1, 2, 3], LIMITS) == (1, 2, 3)
    assert coerce(["a", "b"], LIMITS) == ("a", "b")


def test_cycles_and_unserialisable_objects() -> None:
    """Cycles become <cycle>; arbitrary objects a short repr; NaN stays finite JSON."""
    loop: list[Any] = [1]
    loop.append(loop)
    assert "<cycle>" in str(coerce(loop, Limits()))

    class Weird:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert "Weird" in str(coerce(Weird(), Limits()))
    parsed = json.loads(str(coerce({"x": math.nan, "y": math.inf}, Limits())))
    assert parsed == {"x": "nan", "y": "inf"}


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db_password",
        "apiKey",
        "API_KEY",
        "Authorization",
        "session_cookie",
        "client_secret",
        "access_token",
        "passwd",
        "x-api-key",
    ],
)
def test_secret_keys_are_redacted(key: str) -> None:
    """Keys that look secret have their values replaced."""
    assert coerce_attributes({key: "hunter2"}, Limits()) == {key: "[REDACTED]"}


@pytest.mark.parametrize(
    "key", ["gen_ai.usage.input_tokens", "tokenizer", "max_tokens", "keyboard"]
)
def test_ordinary_keys_are_kept(key: str) -> None:
    """Token counts and tokenizers are not secrets."""
    assert coerce_attributes({key: 7}, Limits()) == {key: 7}


def _reinit(traced: Traced, **options: Any) -> None:
    traced.exporter = InMemorySpanExporter()
    glmtrace.init(traces="none", logs="none", exporter=traced.exporter, **options)


def test_nested_secrets_and_extra_redact_keys(traced: Traced) -> None:
    """Secrets inside containers are redacted, and redact_keys adds patterns."""
    _reinit(traced, redact_keys=["ssn"])
    with glmtrace.span("s", {"config": {"db": {"password": "p"}, "ssn": "123"}, "user_ssn": "9"}):
        pass
    attrs = traced.one("s")["attributes"]
    assert json.loads(attrs["config"]) == {"db": {"password": "[REDACTED]"}, "ssn": "[REDACTED]"}
    assert attrs["user_ssn"] == "[REDACTED]"


def test_max_attribute_length_is_configurable(traced: Traced) -> None:
    """max_attribute_length bounds every string attribute."""
    _reinit(traced, max_attribute_length=10)
    with glmtrace.span("s", {"text": "z" * 1000}) as s:
        s.set_attribute("later", "q" * 1000)
    attrs = traced.one("s")["attributes"]
    assert attrs["text"].startswith("z" * 10) and len(attrs["text"]) < 50
    assert len(attrs["later"]) < 50


def test_integers_beyond_64_bits_become_strings() -> None:
    """OTLP carries int64: a bigger integer is kept as text instead of being dropped."""
    assert coerce(2**70, Limits()) == str(2**70)
    assert coerce([1, 2**64], Limits()) == '[1, "18446744073709551616"]'  # ES maps "long"
    assert coerce(-(2**63), Limits()) == -(2**63)


def test_api_key_authorization_scheme_is_scrubbed() -> None:
    """Elasticsearch's 'Authorization: ApiKey ...' is scrubbed like a bearer token."""
    from glmtrace._internal.attributes import scrub

    assert scrub(
        "sent Authorization: ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
    ) == ("sent Authorization: ApiKey [REDACTED]")


def test_integer_too_long_for_str_is_kept_in_string_form() -> None:
    """A 5000-digit integer (past CPython's str() limit) becomes its decimal text, not an error."""
    huge = 10**5000
    assert coerce(huge, Limits()) == truncate("1" + "0" * 5000, Limits().max_length)
    assert jsonable({"n": huge}, Limits())["n"].startswith("1000")  # log extras, JSON


def test_url_userinfo_is_scrubbed_from_free_text_and_string_attributes() -> None:
    """Passwords and tokens inside URLs never survive: free text and string attribute values."""
    from glmtrace._internal.attributes import scrub

    text = "connect postgres://bob:hunter2@db:5432/x then https://user:tok@en@host/p?q=1"
    assert scrub(text) == (
        "connect postgres://[REDACTED]@db:5432/x then https://[REDACTED]@host/p?q=1"
    )
    assert scrub("clone https://ghp_abcdef@github.com/o/r") == (
        "clone https://[REDACTED]@github.com/o/r"
    )
    assert scrub("http://host/path@v2 and mail a@b.c") == "http://host/path@v2 and mail a@b.c"
    coerced = coerce_attributes(
        {
            "db": "postgres://bob:hunter2@db/x",
            "urls": ["https://u:pw@h/"],
            "nested": {"u": "s3://k:pw@b"},
        },
        Limits(),
    )
    assert "hunter2" not in repr(coerced) and "pw@" not in repr(coerced)
    assert coerced["db"] == "postgres://[REDACTED]@db/x"


class _Counting(dict[str, Any]):
    """A dict that counts how often coercion walks it."""

    walks = 0

    def items(self) -> Any:
        _Counting.walks += 1
        return super().items()


def test_shared_references_bound_total_coercion_work() -> None:
    """One object referenced 16 times at each of 5 levels (65,536 paths) is walked boundedly."""
    node = _Counting(leaf=1)
    for _ in range(5):
        node = _Counting({f"k{i}": node for i in range(16)})
    _Counting.walks = 0
    text = coerce(node, Limits())
    assert isinstance(text, str) and text.startswith('{"k0": {"k0"')
    assert _Counting.walks <= 2048


def test_long_span_names_and_attribute_keys_are_bounded(traced: Traced) -> None:
    """Names are cut at 1024 characters and keys at 256, on every path that makes spans."""
    from glmtrace._internal.runtime import DEFAULT

    with glmtrace.span("root"):
        with glmtrace.span("N" * 100_000, {"k" * 100_000: "v"}) as handle:
            handle.set_attribute("j" * 100_000, 1)
            handle.add_event("E" * 100_000)
        with glmtrace.inference("M" * 100_000):
            pass
        fast = DEFAULT.start_span("F" * 100_000)
        assert fast is not None
        fast.end()
    spans = [s for s in traced.spans() if s["name"] != "root"]
    assert len(spans) == 3
    for span in spans:
        assert len(span["name"]) < 1100
        assert span["name"].endswith("...[truncated 98976 chars]") or "chat M" in span["name"]
        assert all(len(key) < 300 for key in span["attributes"])
    named = traced.one("N" * 1024 + "...[truncated 98976 chars]")
    assert named["attributes"]["k" * 256 + "...[truncated 99744 chars]"] == "v"
    assert len(named["events"][0]["name"]) < 1100


def test_attribute_count_is_capped_and_the_rest_counted(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    """Over the SDK's 128: the span keeps glmtrace's own attributes and counts the dropped."""
    with glmtrace.span("many", {f"a{i}": i for i in range(1000)}) as handle:
        handle.set_attributes({f"b{i}": i for i in range(50)})
        handle.set_attribute("c", 1)
    attrs = traced.one("many")["attributes"]
    assert len(attrs) <= 128
    assert "thread.id" in attrs and "thread.name" in attrs
    kept = sum(1 for key in attrs if key[0] in "abc")
    assert attrs["glmtrace.attributes.dropped"] == 1051 - kept
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]


def test_sdk_attribute_warnings_are_rate_limited(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    """A span made through the OpenTelemetry API past the limit logs once, not per attribute."""
    from opentelemetry import trace

    span = trace.get_tracer("raw").start_span("raw")
    for i in range(300):
        span.set_attribute(f"a{i}", i)
    span.end()
    assert len([r for r in caplog.records if r.name == "opentelemetry.attributes"]) <= 1


def test_attribute_count_follows_the_sdk_limit(
    traced: Traced, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT sets the count spans keep, as it does for the SDK."""
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "20")
    _reinit(traced, store=traced.store)
    with glmtrace.span("many", {f"a{i}": i for i in range(50)}):
        pass
    attrs = traced.one("many")["attributes"]
    assert len(attrs) <= 20
    assert "thread.id" in attrs
    assert attrs["glmtrace.attributes.dropped"] == 50 - sum(1 for k in attrs if k[0] == "a")
