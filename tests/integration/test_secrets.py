"""Secrets never reach the backends: what Jaeger and Elasticsearch return holds none of them.

What protects a payload is narrower than for the rest: a stage's payload is recorded only when
its pipeline entry says ``capture_payload: true``, and then secret-looking keys are redacted
at any depth of its containers; a secret in free text of a captured payload is NOT found.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .backends import Elasticsearch, Jaeger

pytestmark = pytest.mark.integration

CONFIG_SECRET = "sk-config-5f1e2d3c4b5a"
EXTRA_SECRET = "extra-hunter2-9a8b7c"
BEARER_SECRET = "eyJhbGciOiJIUzI1NiJ9.bearer.c2lnbmF0dXJl"
PAYLOAD_SECRET = "payload-card-4111111111111111"
NESTED_SECRET = "nested-pw-7d6c5b4a"

STAGES = {
    "fetch.py": f"""
        import logging
        log = logging.getLogger("secret.fetch")

        def invoke(envelope, config):
            log.warning("fetching with credentials", extra={{"password": {EXTRA_SECRET!r}}})
            # The free-text input (with the card number) stays in this uncaptured stage;
            # the next stage, which captures its payload, gets a secret nested in a mapping.
            order = {{"order": 42, "auth": {{"user": "ann", "password": {NESTED_SECRET!r}}}}}
            return {{**envelope, "payload": order}}
    """,
    "call.py": f"""
        import logging
        log = logging.getLogger("secret.call")

        def invoke(envelope, config):
            try:
                raise PermissionError("401, sent Authorization: Bearer {BEARER_SECRET}")
            except PermissionError:
                log.exception("model call failed")
                raise
    """,
}
PIPELINE = f"""
pipeline:
  - stage: fetch
    module: fetch
    config: {{endpoint: "https://models.internal", api_key: "{CONFIG_SECRET}"}}
  - stage: call
    module: call
    capture_payload: true
"""


def test_no_secret_in_jaeger_or_elasticsearch(
    tmp_path: Path, jaeger: Jaeger, elasticsearch: Elasticsearch
) -> None:
    """Stage config, log extra, bearer token in an exception, the payload of a stage that does
    not capture it and a secret key nested in a captured payload: none is stored."""
    for name, code in STAGES.items():
        (tmp_path / name).write_text(textwrap.dedent(code))
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "secrets-it",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{jaeger.otlp_grpc}",
        "GLMTRACE_ES_URL": elasticsearch.url,
        "GLMTRACE_STORE": str(tmp_path / "store.db"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "glmtrace",
            "run",
            str(tmp_path / "pipeline.yaml"),
            "--input",
            f"charge {PAYLOAD_SECRET} please",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # the call stage fails on purpose
    match = re.search(r"trace_id: ([0-9a-f]{32})", done.stdout)
    assert match, done.stdout + done.stderr
    trace_id = match.group(1)

    spans = jaeger.trace(trace_id, min_spans=3)
    docs = elasticsearch.search("logs-glmtrace-*", {"term": {"trace.id": trace_id}}, min_hits=2)
    stored = json.dumps(spans) + json.dumps(docs)
    for secret in (CONFIG_SECRET, EXTRA_SECRET, BEARER_SECRET, PAYLOAD_SECRET, NESTED_SECRET):
        assert secret not in stored

    fetch = next(s for s in spans if s["name"] == "stage fetch")
    assert fetch["attributes"]["glmtrace.config.api_key"] == "[REDACTED]"
    assert fetch["attributes"]["glmtrace.config.endpoint"] == "https://models.internal"
    call = next(s for s in spans if s["name"] == "stage call")
    assert call["status_code"] == "ERROR"
    assert "Bearer [REDACTED]" in json.dumps(call["events"])
    # The captured payload is there, minus the nested secret; the uncaptured one is not.
    assert json.loads(call["attributes"]["glmtrace.payload"]) == {
        "order": 42,
        "auth": {"user": "ann", "password": "[REDACTED]"},
    }
    assert "glmtrace.payload" not in fetch["attributes"]
    warning = next(d for d in docs if d["message"] == "fetching with credentials")
    assert json.dumps(warning).count("[REDACTED]") == 1
