"""``glmtrace stats`` and the metrics computation it shares with the web app."""

from __future__ import annotations

import json
import random
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from glmtrace._internal.cli.main import main
from glmtrace._internal.ui import command, metrics

from .conftest import Served


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_stats_json_is_what_the_page_shows(served: Served, store_path: Path) -> None:
    """The CLI's JSON equals the web API's numbers for the same window."""
    result = run("stats", "--json", "--window", "all", "--store", str(store_path))
    assert result.exit_code == 0, result.output
    cli = json.loads(result.output)
    with urllib.request.urlopen(served.url + "/api/metrics?window=all") as reply:
        web = json.loads(reply.read())
    for group in (*web["stages"], *web["models"]):
        del group["series"]
    assert cli == web
    assert [g["key"] for g in cli["models"]] == ["chatglm3"]


def test_model_percentiles_match_numpy(store_path: Path) -> None:
    """Per-model P50/P95/P99 over the raw rows equal numpy's linear percentiles."""
    cli = json.loads(run("stats", "--json", "--window", "all", "--store", str(store_path)).output)
    with sqlite3.connect(store_path) as db:
        rows = db.execute(
            "SELECT end_ns - start_ns FROM spans"
            " WHERE json_extract(attributes, '$.\"gen_ai.request.model\"') = 'chatglm3'"
        ).fetchall()
    durations = np.array([r[0] / 1e6 for r in rows])
    model = cli["models"][0]
    assert model["count"] == len(durations)
    got = [model["p50_ms"], model["p95_ms"], model["p99_ms"]]
    assert got == pytest.approx(np.percentile(durations, [50, 95, 99]), abs=1e-9)


def test_window_counts_back_from_the_newest_span(store_path: Path) -> None:
    """--window 10s covers the last ten seconds of data, not the last ten seconds of now."""
    cli = json.loads(run("stats", "--json", "--window", "10s", "--store", str(store_path)).output)
    with sqlite3.connect(store_path) as db:
        (newest,), *_ = db.execute("SELECT MAX(start_ns) FROM spans").fetchall()
        (count,), *_ = db.execute(
            "SELECT COUNT(*) FROM spans WHERE start_ns >= ?"
            " AND json_extract(attributes, '$.\"glmtrace.stage\"') = 'infer'",
            (newest - 10 * 10**9,),
        ).fetchall()
    infer = next(g for g in cli["stages"] if g["key"] == "infer")
    assert infer["count"] == count and cli["window"]["end_ns"] == newest
    assert infer["qps"] == pytest.approx(count / 10)


def test_stats_table_and_errors(store_path: Path, tmp_path: Path) -> None:
    """The table names each stage; a bad window and a missing store fail with one line."""
    table = run("stats", "--window", "all", "--store", str(store_path))
    assert table.exit_code == 0 and "preprocess" in table.output and "P95 ms" in table.output
    bad = run("stats", "--window", "soon", "--store", str(store_path))
    assert bad.exit_code == 2 and "--window" in bad.output
    missing = run("stats", "--store", str(tmp_path / "none.db"))
    assert missing.exit_code == 1 and "no glmtrace store at" in missing.output
    assert "Traceback" not in missing.output


def test_huge_window_is_a_usage_error(store_path: Path) -> None:
    """A window past what nanosecond timestamps hold is refused like any bad window."""
    huge = run("stats", "--window", "99999999999999d", "--store", str(store_path))
    assert huge.exit_code == 2 and "--window" in huge.output and "at most" in huge.output


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101])
def test_percentile_is_numpy_linear(n: int) -> None:
    """The shared percentile agrees with numpy's default method."""
    values = sorted(random.Random(n).uniform(0, 100) for _ in range(n))
    for q in (0, 50, 95, 99, 100):
        assert metrics.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_ui_command_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--host other than loopback warns; --jaeger/--es read from the backends, not the store."""
    seen: dict[str, Any] = {}

    class Stub:
        server_address = ("0.0.0.0", 7080)

        def serve_forever(self) -> None:
            raise KeyboardInterrupt

        def server_close(self) -> None:
            seen["closed"] = True

    monkeypatch.setattr(
        command, "make_server", lambda app, host, port: seen.update(app=app) or Stub()
    )
    result = run("ui", "--host", "0.0.0.0", "--store", str(tmp_path / "s.db"))
    assert result.exit_code == 0
    assert "warning: serving on 0.0.0.0" in result.output and seen["closed"]
    quiet = run("ui", "--store", str(tmp_path / "s.db"))
    assert "warning" not in quiet.output and "http://127.0.0.1:7080/" in quiet.output
    remote = run("ui", "--jaeger", "http://127.0.0.1:1/", "--es", "http://127.0.0.1:2")
    assert "Jaeger http://127.0.0.1:1 + Elasticsearch http://127.0.0.1:2" in remote.output
    assert seen["app"].jaeger_url == "http://127.0.0.1:1"
