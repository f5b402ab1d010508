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
