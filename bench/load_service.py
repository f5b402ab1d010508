"""A tiny traced inference HTTP service for bench_load.py: a seeded numpy MLP behind stdlib HTTP.

``GET /infer?n=N`` builds an input from N, runs two traced stages (preprocess, forward) inside
``glmtrace.inference`` and answers the predicted class as JSON. ``--traces off`` leaves glmtrace
uninitialised (the decorators stay: what a user gets with tracing turned off); ``local`` and
``otlp`` initialise it. Prints the port it listens on, then serves until SIGTERM.

    python bench/load_service.py --traces local --store /tmp/x/glmtrace.db
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

import glmtrace

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((256, 512)).astype(np.float32) / 16
W2 = RNG.standard_normal((512, 10)).astype(np.float32) / 16
BASE = np.arange(32 * 256, dtype=np.float32).reshape(32, 256)


@glmtrace.stage("preprocess")
def preprocess(n: int) -> Any:
    return np.sin(BASE + n)


@glmtrace.stage("forward")
def forward(x: Any) -> Any:
    return np.maximum(x @ W1, 0.0) @ W2


def infer(n: int) -> int:
    with glmtrace.inference("mlp-256-512-10", operation="predict", batch_size=32) as call:
        logits = forward(preprocess(n))
        label = int(logits.sum(axis=0).argmax())
        call.set_attribute("prediction", label)
        return label


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Locust reuses its connections
    # Headers and body leave in two writes: with Nagle on, the body waits for the client's
    # delayed ACK (40 ms on Linux) and every request measures that instead of the service.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path != "/infer":
            self.send_error(404)
            return
        n = int(parse_qs(url.query).get("n", ["0"])[0])
        body = json.dumps({"label": infer(n)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would measure the terminal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", choices=["off", "local", "otlp"], default="off")
    parser.add_argument("--endpoint")
    parser.add_argument("--store")
    args = parser.parse_args()
    if args.traces != "off":
        glmtrace.init(
            service_name="bench-load",
            traces=args.traces,
            endpoint=args.endpoint,
            store=args.store,
            logs="none",
            capture_logs=False,
        )
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    finally:
        glmtrace.shutdown()
        print(json.dumps(glmtrace.stats()), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
