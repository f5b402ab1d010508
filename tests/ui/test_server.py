"""The ``glmtrace ui`` server over HTTP: headers, read-only, errors as JSON, loopback only."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from glmtrace._internal.ui.queries import LocalSource
from glmtrace._internal.ui.server import CSP, App, make_server

from . import data
from .conftest import Served


def request(
    served: Served, path: str, method: str = "GET", host: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    port = served.server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Host": host} if host else {}
    conn.request(method, path, headers=headers)
    reply = conn.getresponse()
    body = reply.read()
    conn.close()
    return reply.status, {k.lower(): v for k, v in reply.getheaders()}, body


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/traces", "/api/nope"])
def test_every_answer_carries_the_security_headers(served: Served, path: str) -> None:
    """Pages, assets, API answers and errors all send the CSP and nosniff."""
    _, headers, _ = request(served, path)
    assert headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "default-src 'self'" in CSP
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_reads_are_allowed(served: Served, method: str) -> None:
    """Anything but GET/HEAD is refused with 405."""
    status, headers, _ = request(served, "/api/traces", method)
    assert status == 405 and headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        (f"/api/trace/{'f' * 32}", 404, "no trace"),
        ("/api/trace/zz-not-hex", 404, "not a trace id"),
        (f"/api/trace/{data.PIPELINE}/span/ffffffffffffffff", 404, "no span"),
        ("/api/traces?min_ms=fast", 400, "min_ms"),
        ("/api/traces?since=nan", 400, "since"),
        ("/api/traces?before=inf:ab", 400, "before"),
        ("/api/traces?trace=xyz", 400, "not a trace id"),
        ("/api/metrics?window=forever", 400, "window"),
        ("/api/metrics?window=99999999999999d", 400, "window"),
        ("/api/compare?a=" + data.PIPELINE, 400, "two traces"),
        ("/etc/passwd", 404, "no page"),
        ("/static/../server.py", 404, "no page"),
    ],
)
def test_bad_requests_get_json_errors(served: Served, path: str, status: int, words: str) -> None:
    """Unknown ids, bad parameters and odd paths answer JSON with a reason, no traceback."""
    got, headers, body = request(served, path)
    assert got == status
    assert headers["content-type"].startswith("application/json")
    message = json.loads(body)["error"]
    assert words in message and "Traceback" not in message


def test_other_host_names_are_refused(served: Served) -> None:
    """A Host header naming another site (DNS rebinding) is refused."""
    status, _, body = request(served, "/api/traces", host="evil.example:80")
    assert status == 400 and "Host" in json.loads(body)["error"]
    port = served.server.server_address[1]
    assert request(served, "/api/traces", host=f"localhost:{port}")[0] == 200


def test_internal_errors_stay_on_the_server(
    served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug answers 500 with one line; the traceback goes to the server log only."""

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(LocalSource, "traces", broken)
    status, _, body = request(served, "/api/traces")
    assert status == 500
    assert "secret detail" not in body.decode() and "internal error" in body.decode()
    assert "secret detail" in caplog.text


def test_missing_store_is_reported(tmp_path: Path) -> None:
    """Without a store the app says where it looked, and the data API answers 503."""
    served = Served(App(LocalSource(tmp_path / "absent.db")))
    try:
        meta = json.loads(request(served, "/api/meta")[2])
        assert "no glmtrace store at" in meta["error"]
        status, _, body = request(served, "/api/traces")
        assert status == 503 and "absent.db" in json.loads(body)["error"]
    finally:
        served.close()
    assert not (tmp_path / "absent.db").exists()  # read-only: opening never creates it


def test_the_store_is_opened_read_only(served: Served, store_path: Path) -> None:
    """The app's connection refuses writes even if a bug tried one."""
    source = served.server.app.source
    with pytest.raises(Exception, match="readonly"):
        source._conn().execute("DELETE FROM spans")
    assert LocalSource(store_path).spans(data.PIPELINE)


def test_ipv6_loopback(store_path: Path) -> None:
    """--host ::1 serves on IPv6 loopback and accepts its own Host header."""
    server = make_server(App(LocalSource(store_path)), "::1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        conn = http.client.HTTPConnection("::1", port, timeout=10)
        conn.request("GET", "/api/meta", headers={"Host": f"[::1]:{port}"})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
