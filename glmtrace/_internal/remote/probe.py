"""Does an endpoint answer, and which version is it (``glmtrace doctor``)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.parse
import urllib.request

from ..config import ElasticsearchOptions, otlp_protocol, otlp_traces_url
from .es_query import es_client
from .http import RemoteError, get_json, reason


def probe(
    kind: str,
    url: str,
    es: ElasticsearchOptions | None = None,
    *,
    protocol: str | None = None,
) -> tuple[bool, str]:
    """Whether the ``kind`` endpoint at ``url`` answers, and its version or the error.

    ``kind`` is one of ``elasticsearch``, ``jaeger`` (query API), ``otlp``/``collector``
    (an OTLP receiver) or ``fluent`` (``tcp://host:port``).
    ``es`` supplies Elasticsearch credentials; ``protocol`` (``grpc`` or ``http/protobuf``)
    says how to talk to an OTLP endpoint (default: HTTP for port 4318, else gRPC).
    Never raises.
    """
    try:
        if kind == "elasticsearch":
            return _probe_es(es if es is not None and es.url == url else ElasticsearchOptions(url))
        if kind == "jaeger":
            services = get_json(f"{url.rstrip('/')}/api/services", "Jaeger")
            count = len((services or {}).get("data") or [])
            return True, f"Jaeger query API ({count} services)"
        if kind in ("otlp", "collector"):
            return _probe_otlp(url, protocol)
        if kind == "fluent":
            parsed = urllib.parse.urlparse(url if "://" in url else f"tcp://{url}")
            with socket.create_connection((parsed.hostname or "", parsed.port or 24224), 3):
                return True, "Fluent forward port accepts connections"
        return False, f"unknown endpoint kind {kind!r}"
    except RemoteError as exc:
        return False, str(exc)
    except Exception as exc:  # doctor reports; it never crashes
        return False, reason(exc)


def _probe_es(es: ElasticsearchOptions) -> tuple[bool, str]:
    from elasticsearch import ApiError

    client = es_client(es)
    try:
        # The integ-test distribution has no `GET /`; node info works on every distribution.
        nodes = client.nodes.info(node_id="_local", filter_path="nodes.*.version")
        version = next(iter(nodes["nodes"].values()))["version"]
        return True, f"Elasticsearch {version}"
    except ApiError as exc:
        return False, f"Elasticsearch answered HTTP {exc.meta.status}"
    finally:
        client.close()


def _is_http(url: str, protocol: str | None) -> bool:
    return (protocol or otlp_protocol(url)) != "grpc"


def _probe_otlp(url: str, protocol: str | None) -> tuple[bool, str]:
    parsed = urllib.parse.urlparse(url)
    if _is_http(url, protocol):
        request = urllib.request.Request(
            otlp_traces_url(url),
            data=b"",
            method="POST",
            headers={"Content-Type": "application/x-protobuf"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return True, f"OTLP/HTTP receiver (HTTP {reply.status})"
        except urllib.error.HTTPError as err:
            err.close()
            return err.code < 500 and err.code != 404, f"OTLP/HTTP answered HTTP {err.code}"
    import grpc  # type: ignore[import-untyped]  # no stubs; the OTLP exporter's dependency

    target = parsed.netloc or url
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=5)
        return True, "OTLP gRPC receiver (channel ready)"
    except grpc.FutureTimeoutError:
        return False, "OTLP gRPC: no connection within 5 s"
    finally:
        channel.close()
