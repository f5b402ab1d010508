"""Session-scoped fixtures that run the real backends (see backends.py).

``jaeger`` and ``elasticsearch`` start on first use; ``collector`` needs both and installs the log
index template first. A backend that is not provisioned fails the test with the command to run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .backends import (
    Collector,
    Elasticsearch,
    Jaeger,
    start_collector,
    start_elasticsearch,
    start_jaeger,
)


@pytest.fixture(scope="session")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    """Jaeger v2, memory storage: ``.otlp_grpc``, ``.otlp_http``, ``.query_url``, ``.trace()``."""
    with start_jaeger(tmp_path_factory.mktemp("jaeger")) as handle:
        yield handle


@pytest.fixture(scope="session")
def elasticsearch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Elasticsearch]:
    """Single-node Elasticsearch: ``.url``, ``.version``, ``.search()``, ``.count()``."""
    with start_elasticsearch(tmp_path_factory.mktemp("es-base") / "elasticsearch") as handle:
        yield handle


@pytest.fixture(scope="session")
def collector(
    tmp_path_factory: pytest.TempPathFactory, jaeger: Jaeger, elasticsearch: Elasticsearch
) -> Iterator[Collector]:
    """A Collector wired to ``jaeger`` and ``elasticsearch``: ``.otlp_*``, ``.fluent_host/port``."""
    with start_collector(tmp_path_factory.mktemp("collector"), jaeger, elasticsearch) as handle:
        yield handle
