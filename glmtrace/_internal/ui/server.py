"""The HTTP side of ``glmtrace ui``: static pages plus a small read-only JSON API.

Safety for a tool that serves a user's traces on their machine:
- GET and HEAD only; every other method is answered 405.
- The Host header must name the address served (a page on another site cannot reach the app
  through DNS rebinding).
- A strict Content-Security-Policy (no inline script, nothing from other origins) and
  ``nosniff``; the pages put every piece of trace data in the DOM as text.
- Errors reach the user as JSON ``{"error": ...}`` with a 4xx/5xx status, never a traceback.
"""

from __future__ import annotations

import json
import logging
import math
import mimetypes
import re
import socket
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from ..cli import perfetto, render
from . import metrics, trace_view
from .queries import NotFound, QueryError, Source, TraceFilter

log = logging.getLogger("glmtrace.ui")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
PAGE_SIZE = 50
_PAGES = re.compile(r"^/(?:|trace/[0-9a-fA-F]{1,32}|metrics|compare)$")
_STATIC = re.compile(r"^/static/([a-z_]+\.(?:js|css|svg))$")


class BadRequest(Exception):
    """Answered 400."""


@dataclass(frozen=True)
class App:
    """What the handler serves: the data source and the links out to other tools."""

    source: Source
    jaeger_url: str | None = None
    kibana_url: str | None = None
    allowed_hosts: frozenset[str] = frozenset()

    def meta(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "store": self.source.label,
            "jaeger_url": self.jaeger_url,
            "kibana_url": self.kibana_url,
        }
        try:
            self.source.check()
        except QueryError as exc:
            info["error"] = str(exc)
        return info

    def traces(self, query: dict[str, str]) -> dict[str, Any]:
        before = None
        if query.get("before"):
            ns, _, tid = query["before"].partition(":")
            before = (_int(ns, "before"), tid)
        filters = TraceFilter(
            service=query.get("service") or None,
            name=query.get("name") or None,
            status=query.get("status") or None,
            session=query.get("session") or None,
            min_ms=_float(query.get("min_ms"), "min_ms"),
            max_ms=_float(query.get("max_ms"), "max_ms"),
            since_ns=_ns(query.get("since"), "since"),
            until_ns=_ns(query.get("until"), "until"),
            trace_id=query.get("trace") or None,
            log_text=query.get("log") or None,
        )
        try:
            page = self.source.traces(filters, PAGE_SIZE + 1, before)
        except NotFound as exc:  # the trace id searched for is not one
            raise BadRequest(str(exc)) from None
        more = len(page) > PAGE_SIZE
        page = page[:PAGE_SIZE]
        cursor = f"{page[-1]['start_ns']}:{page[-1]['trace_id']}" if more else None
        return {"traces": page, "next": cursor}

    def trace(self, text: str) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
        trace_id = self.source.resolve(text)
        return trace_id, self.source.spans(trace_id), self.source.logs(trace_id)

    def waterfall(self, text: str) -> dict[str, Any]:
        trace_id = self.source.resolve(text)
        briefs = [trace_view.Brief(*row) for row in self.source.briefs(trace_id)]
        if not briefs:
            raise NotFound(f"no trace {text}")
        return trace_view.build(trace_id, briefs, self.source.logs(trace_id))

    def span(self, text: str, span_id: str) -> dict[str, Any]:
        span = self.source.span(self.source.resolve(text), span_id)
        span["linked_from"] = self.source.linked_from(span)
        return span


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a whole number") from None


def _float(text: str | None, name: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadRequest(f"{name}={text!r} is not a number")
    return value


def _ns(text: str | None, name: str) -> int | None:
    """Epoch milliseconds (what the page's date inputs give) to nanoseconds."""
    value = _float(text, name)
    return None if value is None else int(value * 1e6)


class Handler(BaseHTTPRequestHandler):
    """Routes one request; ``server.app`` holds the :class:`App`."""

    server_version = "glmtrace-ui"
    sys_version = ""

    @property
    def app(self) -> App:
        return self.server.app  # type: ignore[attr-defined, no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        try:
            self._route()
        except ConnectionError:  # the browser went away (navigated, closed): nobody to tell
            return
        except NotFound as exc:
            self._json({"error": str(exc)}, 404)
        except BadRequest as exc:
            self._json({"error": str(exc)}, 400)
        except QueryError as exc:
            self._json({"error": str(exc)}, 503)
        except Exception:  # the user sees one line; the detail goes to the server's log
            log.exception("glmtrace ui: %s failed", self.path)
            self._json({"error": "internal error (details in the glmtrace ui console)"}, 500)

    def _refuse(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self._common_headers()
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _route(self) -> None:
        host = (self.headers.get("Host") or "").lower()
        if self.app.allowed_hosts and host not in self.app.allowed_hosts:
            raise BadRequest(f"unexpected Host header {host!r}")
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        path = url.path
        if _PAGES.match(path):
            self._static("index.html")
            return
        static = _STATIC.match(path)
        if static:
            self._static(static.group(1))
            return
        parts = path.strip("/").split("/")
        if parts[0] != "api" or len(parts) < 2:
            raise NotFound(f"no page {path}")
        self._api(parts[1:], query)

    def _api(self, parts: list[str], query: dict[str, str]) -> None:
        app = self.app
        match parts:
            case ["meta"]:
                self._json(app.meta())
            case ["traces"]:
                self._json(app.traces(query))
            case ["services"]:
                self._json({"services": app.source.services()})
            case ["trace", text]:
                self._json(app.waterfall(text))
            case ["trace", text, "perfetto"]:
                trace_id, spans, logs = app.trace(text)
                body = render.dumps(perfetto.trace_events(spans, logs)).encode()
                name = f"glmtrace-{trace_id}.perfetto.json"
                self._send(
                    body,
                    "application/json",
                    200,
                    {"Content-Disposition": f'attachment; filename="{name}"'},
                )
            case ["trace", text, "span", span_id]:
                self._json(app.span(text, span_id))
            case ["metrics"]:
                try:
                    result = metrics.stage_metrics(app.source, query.get("window", "1h"))
                except ValueError as exc:
                    raise BadRequest(str(exc)) from None
                self._json(result)
            case ["compare"]:
                if not query.get("a") or not query.get("b"):
                    raise BadRequest("give two traces: ?a=TRACE_ID&b=TRACE_ID")
                a, b = app.trace(query["a"]), app.trace(query["b"])
                self._json(trace_view.compare((a[0], a[1]), (b[0], b[1])))
            case _:
                raise NotFound(f"no API /api/{'/'.join(parts)}")

    # ------------------------------------------------------------------ responses

    def _common_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")

    def _send(
        self, body: bytes, content_type: str, status: int = 200, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self._common_headers()
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: Any, status: int = 200) -> None:
        body = json.dumps(payload, default=str, allow_nan=False).encode()
        self._send(body, "application/json; charset=utf-8", status)

    def _static(self, name: str) -> None:
        asset = resources.files(__package__) / "static" / name
        if not asset.is_file():
            raise NotFound(f"no asset {name}")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith("javascript"):
            kind += "; charset=utf-8"
        self._send(asset.read_bytes(), kind)


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(app: App, host: str, port: int) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0: a free one); call ``serve_forever``."""
    server = (_Server6 if ":" in host else ThreadingHTTPServer)((host, port), Handler)
    server.daemon_threads = True
    bound = server.server_address[1]
    names = (
        {"localhost", "127.0.0.1", "[::1]"} if host in ("127.0.0.1", "localhost", "::1") else set()
    )
    allowed = frozenset(f"{n}:{bound}" for n in names)
    server.app = App(app.source, app.jaeger_url, app.kibana_url, allowed)  # type: ignore[attr-defined]
    return server
