"""A batch serving three requests, each request its own trace, run as a script by the CLI tests.

Configured from the environment (GLMTRACE_STORE, or OTEL_EXPORTER_OTLP_ENDPOINT for Jaeger).
Besides the links it records an error, NaN/Infinity attributes and a long sentence attribute:
what ``show``, ``export`` and ``ls`` must render completely. Prints the batch's trace id.
"""

from __future__ import annotations

import logging

import glmtrace

SENTENCE = "The quick brown fox jumps over the lazy dog and keeps running far beyond the horizon"


def main() -> None:
    glmtrace.init(service_name="batcher")
    carriers = []
    for i in range(3):
        with glmtrace.span(f"request {i}"), glmtrace.inference("chatglm3", max_tokens=8):
            carriers.append(glmtrace.inject({}))
    attributes = {"prompt": SENTENCE, "loss": float("nan"), "best": float("inf")}
    with glmtrace.span("serve", attributes):
        print(glmtrace.current_trace_id())
        with glmtrace.batch(carriers, name="decode"):
            pass
        try:
            with glmtrace.span("fail"):
                raise ValueError("bad value")
        except ValueError:
            logging.getLogger("app").exception("serving failed")
    glmtrace.shutdown()


if __name__ == "__main__":
    main()
