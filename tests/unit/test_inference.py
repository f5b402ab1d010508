"""inference() spans (GenAI conventions) and batch() spans linked both ways."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import glmtrace


def test_inference_span_uses_genai_conventions(traced: Any) -> None:
    """The span is named '<operation> <model>' and carries gen_ai.* attributes."""
    with glmtrace.inference("chatglm3", batch_size=8, max_tokens=256, provider="local") as call:
        call.usage(input_tokens=12, output_tokens=30)
        call.response(model="chatglm3-6b", finish_reasons=["stop"])
    span = traced.one("chat chatglm3")
    attrs = span["attributes"]
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "chatglm3"
    assert attrs["gen_ai.request.max_tokens"] == 256
    assert attrs["gen_ai.provider.name"] == "local"
    assert attrs["glmtrace.batch.size"] == 8
    assert attrs["gen_ai.response.model"] == "chatglm3-6b"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)


def test_one_finish_reason_given_as_a_string(traced: Any) -> None:
    """finish_reasons="stop" is one reason, not the letters of the word."""
    with glmtrace.inference("chatglm3") as call:
        call.response(finish_reasons="stop")
    attrs = traced.one("chat chatglm3")["attributes"]
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)


def test_token_counts_are_not_redacted(traced: Any) -> None:
    """gen_ai.usage.*_tokens are counts, not secrets: the 'token' redaction leaves them."""
    with glmtrace.inference("m", operation="text_completion", input_tokens=5) as call:
        call.usage(output_tokens=7)
    attrs = traced.one("text_completion m")["attributes"]
    assert attrs["gen_ai.usage.input_tokens"] == 5
    assert attrs["gen_ai.usage.output_tokens"] == 7


def test_time_to_first_token(traced: Any) -> None:
    """first_token() records the time to first token once, with an event."""
    with glmtrace.inference("m") as call:
        first = call.first_token()
        assert call.first_token() == first
    span = traced.one("chat m")
    assert span["attributes"]["glmtrace.gen_ai.ttft_ms"] == first
    # measured from the call's start: within the span, not a wall-clock time or a duration in s
    assert first is not None and 0 <= first <= (span["end_ns"] - span["start_ns"]) / 1e6
    assert [e["name"] for e in span["events"]] == ["gen_ai.first_token"]


def test_unknown_keywords_are_namespaced(traced: Any) -> None:
    """Unknown short keywords go under glmtrace.inference.; dotted keys stay as given."""
    with glmtrace.inference("m", priority=2, **{"app.tenant": "a"}):
        pass
    attrs = traced.one("chat m")["attributes"]
    assert attrs["glmtrace.inference.priority"] == 2
    assert attrs["app.tenant"] == "a"


def test_error_is_recorded_and_reraised(traced: Any) -> None:
    """An exception inside inference() marks the span ERROR and propagates untouched."""
    with pytest.raises(RuntimeError, match="oom"), glmtrace.inference("m"):
        raise RuntimeError("oom")
    assert traced.one("chat m")["status"] == "ERROR"


def test_batch_links_both_ways(traced: Any) -> None:
    """The batch links to every request; every open request links back and names the batch."""
    with (
        glmtrace.span("request a"),
        glmtrace.inference("m") as a,
        glmtrace.span("request b"),
        glmtrace.inference("m") as b,
        glmtrace.batch([a], priority=1) as batch,
    ):
        batch.add(b)
    spans = traced.spans()
    batch_span = next(s for s in spans if s["name"] == "batch inference")
    calls = [s for s in spans if s["name"] == "chat m"]
    assert {(link["trace_id"], link["span_id"]) for link in batch_span["links"]} == {
        (c["trace_id"], c["span_id"]) for c in calls
    }
    roles = {link["attributes"]["glmtrace.link.role"] for link in batch_span["links"]}
    assert roles == {"request"}
    for call in calls:
        assert call["links"] == [
            {
                "trace_id": batch_span["trace_id"],
                "span_id": batch_span["span_id"],
                "attributes": {"glmtrace.link.role": "batch"},
            }
        ]
        assert call["attributes"]["glmtrace.batch.span_id"] == batch_span["span_id"]
    assert batch_span["attributes"]["glmtrace.batch.size"] == 2
    assert batch_span["attributes"]["glmtrace.batch.priority"] == 1


def test_batch_links_requests_from_other_processes(traced: Any) -> None:
    """A request known only by its carrier is linked from the batch."""
    with glmtrace.span("remote request"):
        carrier = glmtrace.inject({})
    with glmtrace.batch([carrier]):
        pass
    remote = traced.one("remote request")
    links = traced.one("batch inference")["links"]
    assert [(x["trace_id"], x["span_id"]) for x in links] == [
        (remote["trace_id"], remote["span_id"])
    ]


def test_no_op_before_init() -> None:
    """Before init() inference() and batch() do nothing and never fail."""
    with glmtrace.inference("m") as call, glmtrace.batch([call]) as batch:
        call.first_token()
        call.usage(input_tokens=1)
        assert batch.size == 1


def test_inference_does_not_import_torch() -> None:
    """The inference module works without torch."""
    code = (
        "import sys; sys.modules['torch'] = None; import glmtrace\n"
        "with glmtrace.inference('m') as c: c.first_token()\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_batch_keywords_map_like_inference(traced: Any) -> None:
    """batch() maps keywords as inference() does: one size key, gen_ai.* request keys."""
    with (
        glmtrace.inference("m") as a,
        glmtrace.batch([a], model="m", batch_size=6, max_tokens=64, priority=1),
    ):
        pass
    attrs = traced.one("batch inference")["attributes"]
    assert attrs["glmtrace.batch.size"] == 6
    assert attrs["glmtrace.batch.requests"] == 1
    assert "glmtrace.batch.batch_size" not in attrs
    assert attrs["gen_ai.request.max_tokens"] == 64
    assert "glmtrace.batch.max_tokens" not in attrs
    assert attrs["gen_ai.request.model"] == "m"
    assert attrs["glmtrace.batch.priority"] == 1
