"""Attribute keys glmtrace writes, each defined once (OTel semantic conventions or glmtrace.*)."""

from __future__ import annotations

STAGE = "glmtrace.stage"
MODULE = "glmtrace.module"
FUNCTION = "code.function"
SESSION_ID = "session.id"
# The thread that started the span (OTel semantic conventions).
THREAD_ID = "thread.id"
THREAD_NAME = "thread.name"
CONFIG_PREFIX = "glmtrace.config."
PAYLOAD = "glmtrace.payload"

# W3C baggage key that carries an envelope's session id between stages and processes.
BAGGAGE_SESSION_ID = "session.id"

# Event on a span the program's end (SIGTERM, Ctrl-C) cut short, with the signal's name.
INTERRUPTED = "glmtrace.interrupted"
SIGNAL = "signal"

# OpenTelemetry GenAI semantic conventions (inference(), batch(), red metrics, the UI).
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
# glmtrace additions.
# Not "time_to_first_token": the word "token" is redacted as a secret by default.
TIME_TO_FIRST_TOKEN_MS = "glmtrace.gen_ai.ttft_ms"
FIRST_TOKEN_EVENT = "gen_ai.first_token"
BATCH_SIZE = "glmtrace.batch.size"
BATCH_REQUESTS = "glmtrace.batch.requests"  # how many requests were linked
BATCH_NAME = "glmtrace.batch.name"
BATCH_TRACE_ID = "glmtrace.batch.trace_id"
BATCH_SPAN_ID = "glmtrace.batch.span_id"
LINK_ROLE = "glmtrace.link.role"  # on a link: what the linked span is ("request" | "batch")
EXTRA_PREFIX = "glmtrace.inference."
BATCH_PREFIX = "glmtrace.batch."
