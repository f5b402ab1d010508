"""``glmtrace ui`` in headless Chromium: what a person sees and clicks, against the store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import expect

from glmtrace._internal.cli import perfetto
from glmtrace._internal.store.database import Store
from glmtrace._internal.ui.queries import LocalSource
from glmtrace._internal.ui.server import App

from . import data
from .conftest import Served, open_page, shot


def _spans(store: Path, trace_id: str) -> dict[str, dict[str, Any]]:
    return {s["span_id"]: s for s in Store(store).spans(trace_id)}


def test_list_newest_first_with_paging(page: Any, served: Served) -> None:
    """The list opens newest first, 50 a page, and 'Older' shows the rest."""
    open_page(page, served.url + "/")
    ids = page.locator("#trace-table tbody tr").evaluate_all("rs => rs.map(r => r.dataset.traceId)")
    assert ids[:2] == [data.BATCH, data.PIPELINE]
    assert len(ids) == 50
    shot(page, "list")
    page.click("#older")
    page.wait_for_selector("body[data-ready='1']")
    more = page.locator("#trace-table tbody tr").evaluate_all(
        "rs => rs.map(r => r.dataset.traceId)"
    )
    assert len(ids) + len(more) == 62 and not set(ids) & set(more)
    assert more[-1] == f"{1:032x}"  # the oldest


def test_filters_narrow_the_list(page: Any, served: Served, store_path: Path) -> None:
    """Status, service, session.id, name and log-text filters keep exactly the matching traces."""
    open_page(page, served.url + "/")
    page.select_option("select[name=status]", "error")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**/?status=error")
    page.wait_for_selector("body[data-ready='1']")
    shown = set(
        page.locator("#trace-table tbody tr").evaluate_all("rs => rs.map(r => r.dataset.traceId)")
    )
    with sqlite3.connect(store_path) as db:
        failed = {
            r[0] for r in db.execute("SELECT DISTINCT trace_id FROM spans WHERE status='ERROR'")
        }
    assert shown == failed
    open_page(page, served.url + "/")
    page.wait_for_selector("#services option >> nth=2", state="attached")
    suggested = page.locator("#services option").evaluate_all("os => os.map(o => o.value)")
    assert suggested == ["autoglm", "autoglm-batch", "glm-server"]
    page.fill("input[name=service]", "glm-server")
    page.press("input[name=service]", "Enter")
    page.wait_for_url("**/?service=glm-server")
    page.wait_for_selector("body[data-ready='1']")
    rows = page.locator("#trace-table tbody tr")
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.traceId)") == [data.BATCH]
    for query in ("session=sess-demo", "log=prompt+has+17", "name=postprocess&service=autoglm"):
        open_page(page, f"{served.url}/?{query}")
        rows = page.locator("#trace-table tbody tr")
        assert rows.evaluate_all("rs => rs.map(r => r.dataset.traceId)") == [data.PIPELINE], query


def test_time_and_duration_filters(page: Any, served: Served, store_path: Path) -> None:
    """From/To (the browser's local time) and Min/Max ms select by root start and length."""
    since_ms, until_ms = (data.BASE_NS - 10 * 10**9) // 10**6, (data.BASE_NS - 5 * 10**9) // 10**6
    local = page.evaluate(
        "ms => ms.map(t => { const d = new Date(t);"
        " d.setMinutes(d.getMinutes() - d.getTimezoneOffset());"
        " return d.toISOString().slice(0, 19); })",
        [since_ms, until_ms],
    )
    open_page(page, f"{served.url}/?since={local[0]}&until={local[1]}&min_ms=100&max_ms=200")
    shown = page.locator("#trace-table tbody tr").evaluate_all(
        "rs => rs.map(r => r.dataset.traceId)"
    )
    with sqlite3.connect(store_path) as db:
        expected = [
            r[0]
            for r in db.execute(
                "SELECT trace_id FROM spans GROUP BY trace_id"
                " HAVING MIN(start_ns) BETWEEN ? AND ?"
                " AND MAX(end_ns) - MIN(start_ns) BETWEEN 100e6 AND 200e6"
                " ORDER BY MIN(start_ns) DESC",
                (since_ms * 10**6, until_ms * 10**6),
            )
        ]
    assert 0 < len(expected) < 6 and shown == expected  # 6 traces start in the range


def test_bars_are_to_scale_and_nested(page: Any, served: Served, store_path: Path) -> None:
    """Every span's bar starts and ends where its times say, on one scale; children indent."""
    open_page(page, f"{served.url}/trace/{data.PIPELINE}")
    shot(page, "trace")
    spans = _spans(store_path, data.PIPELINE)
    t0 = min(s["start_ns"] for s in spans.values())
    boxes = page.locator(".span-row .bar, .gpu-row .bar").evaluate_all(
        "bs => bs.map(b => [b.dataset.spanId, b.getBoundingClientRect().left,"
        " b.getBoundingClientRect().width])"
    )
    assert {b[0] for b in boxes} == set(spans)  # every span has a bar, GPU ones included
    root = next(b for b in boxes if b[0] == data.sid(1))
    scale = root[2] / (spans[data.sid(1)]["end_ns"] - spans[data.sid(1)]["start_ns"])
    for span_id, left, width in boxes:
        s = spans[span_id]
        assert width == pytest.approx((s["end_ns"] - s["start_ns"]) * scale, abs=1.0), s["name"]
        assert left - root[1] == pytest.approx((s["start_ns"] - t0) * scale, abs=1.0), s["name"]
    indent = page.locator(".span-row").evaluate_all(
        "rs => Object.fromEntries(rs.map(r => [r.dataset.spanId,"
        " parseFloat(r.querySelector('.label').style.paddingLeft)]))"
    )
    for span_id, pad in indent.items():
        parent = spans[span_id]["parent_span_id"]
        if parent in indent and spans[parent]["resource"] == spans[span_id]["resource"]:
            assert pad > indent[parent]


def test_gpu_tracks_errors_and_critical_path(page: Any, served: Served) -> None:
    """Kernels sit on one track per device/stream; the failure, its stack, the critical path,
    a kernel's and an event's details show."""
    open_page(page, f"{served.url}/trace/{data.PIPELINE}")
    labels = page.locator(".track-row .lane-label").all_text_contents()
    assert labels == ["GPU cuda:0 · stream 13", "GPU cuda:0 · stream 7"]
    lanes = page.locator(".lane-row .lane-label").all_text_contents()
    assert lanes == ["autoglm · pid 4242", "rank 1 · autoglm"]
    row = page.locator(f".span-row[data-span-id='{data.sid(10)}']")
    assert "error" in row.get_attribute("class")
    crit = set(page.locator(".span-row.crit").evaluate_all("rs => rs.map(r => r.dataset.spanId)"))
    assert {data.sid(1), data.sid(4), data.sid(5), data.sid(9), data.sid(10)} <= crit
    assert data.sid(11) not in crit  # the cache lookup overlapped the call the stage waited on
    row.click()
    page.wait_for_selector("#details .stack")
    assert "ValueError: empty answer" in page.locator("#details .stack").inner_text()
    kernel = page.locator(f".gpu-row .bar[data-span-id='{data.sid(20)}']")
    kernel.click()
    page.wait_for_selector("#details .span-name >> text='cuda.kernel gemm_0'")
    assert "glmtrace.gpu.stream" in page.locator("#attributes").inner_text()
    page.locator(f".span-row[data-span-id='{data.sid(5)}']").click()
    page.wait_for_selector("#details .span-name >> text='chat chatglm3'")
    assert "+45.0 ms" in page.locator("#details").inner_text()  # the first-token event
    assert "gen_ai.first_token" in page.locator("#details").inner_text()


def test_every_log_line_sits_under_its_span(page: Any, served: Served, store_path: Path) -> None:
    """Each stored log line is listed with its span, marked on that span's row, and jumps to it."""
    open_page(page, f"{served.url}/trace/{data.PIPELINE}")
    with sqlite3.connect(store_path) as db:
        logs = db.execute(
            "SELECT span_id, level, message FROM logs WHERE trace_id = ?", (data.PIPELINE,)
        ).fetchall()
    listed = page.locator("#log-list li").evaluate_all(
        "ls => ls.map(l => [l.dataset.spanId, l.querySelector('.level').textContent,"
        " l.querySelector('.msg').textContent])"
    )
    assert sorted(map(tuple, listed)) == sorted(logs)
    for span_id in {s for s, _, _ in logs}:
        marks = page.locator(f".span-row[data-span-id='{span_id}'] .log-mark").count()
        assert marks == sum(1 for s, _, _ in logs if s == span_id)
    page.select_option("#log-level", "WARNING")
    assert page.locator("#log-list li .level").all_text_contents() == ["WARNING", "ERROR"]
    page.locator("#log-list li", has_text="empty answer").locator(".jump").click()
    page.wait_for_selector(f".span-row.selected[data-span-id='{data.sid(10)}']")
    # The details panel redraws after the row is selected: wait for its text, not its node.
    expect(page.locator("#span-logs")).to_contain_text("postprocess failed")


def test_batch_and_request_links_go_both_ways(page: Any, served: Served) -> None:
    """From the request span to its batch in another trace, and back again."""
    open_page(page, f"{served.url}/trace/{data.PIPELINE}?span={data.sid(5)}")
    link = page.locator(f"#span-links a[data-span-id='{data.sid(100)}']")
    link.first.click()
    page.wait_for_url(f"**/trace/{data.BATCH}?span={data.sid(100)}")
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("#details .span-name")
    assert page.locator("#details .span-name").inner_text() == "batch inference"
    shot(page, "batch")
    page.locator(f"#span-links a[data-span-id='{data.sid(5)}']").first.click()
    page.wait_for_url(f"**/trace/{data.PIPELINE}?span={data.sid(5)}")
    page.wait_for_selector(f".span-row.selected[data-span-id='{data.sid(5)}']")
    # A request span that never linked back still finds the batch that linked to it.
    open_page(page, f"{served.url}/trace/{data.LONE_REQUEST}?span={data.sid(3)}")
    back = page.locator("#span-links li", has_text="linked from")
    assert "batch inference" in back.inner_text()
    back.locator("a").click()
    page.wait_for_url(f"**/trace/{data.BATCH}?span={data.sid(100)}")


def test_metrics_page_equals_an_independent_computation(
    page: Any, served: Served, store_path: Path
) -> None:
    """P50/P95/P99, QPS and error rate per stage equal numpy's over the raw rows."""
    open_page(page, served.url + "/metrics?window=all")
    shot(page, "metrics")
    with sqlite3.connect(store_path) as db:
        rows = db.execute("SELECT start_ns, end_ns, status, attributes FROM spans").fetchall()
        (lo, hi), *_ = db.execute("SELECT MIN(start_ns), MAX(start_ns) FROM spans").fetchall()
    by_stage: dict[str, list[tuple[float, bool]]] = {}
    for start, end, status, attrs in rows:
        stage = json.loads(attrs).get("glmtrace.stage")
        if stage:
            by_stage.setdefault(stage, []).append(((end - start) / 1e6, status == "ERROR"))
    shown = page.locator("#stages tbody tr").evaluate_all(
        "rs => rs.map(r => [r.dataset.key, ...['count','qps','p50','p95','p99','error-rate']"
        ".map(c => parseFloat(r.querySelector('td.' + c).dataset.value))])"
    )
    assert sorted(s[0] for s in shown) == sorted(by_stage)
    for key, count, qps, p50, p95, p99, error_rate in shown:
        durations = np.array([d for d, _ in by_stage[key]])
        assert count == len(durations)
        assert qps == pytest.approx(len(durations) / ((hi - lo) / 1e9))
        assert error_rate == pytest.approx(sum(e for _, e in by_stage[key]) / len(durations))
        assert [p50, p95, p99] == pytest.approx(np.percentile(durations, [50, 95, 99]), abs=1e-9)
    text = page.locator("#stages tr[data-key=infer] td.p95").inner_text()
    assert text == f"{np.percentile([d for d, _ in by_stage['infer']], 95):.2f}"


def test_hostile_strings_render_as_text(page: Any, served: Served) -> None:
    """A span named like an <img> tag and a log line holding <script> show as text, run nothing."""
    open_page(page, f"{served.url}/trace/{data.PIPELINE}?span={data.sid(3)}")
    name = page.locator(f".span-row[data-span-id='{data.sid(3)}'] .name")
    assert name.text_content() == data.XSS_NAME
    assert page.locator("#details .span-name").text_content() == data.XSS_NAME
    assert data.XSS_LOG in page.locator("#log-list").text_content()
    assert page.locator("main img, main script, main b").count() == 0
    assert page.problems == []  # no alert() dialog, no script error


def test_compare_two_traces(page: Any, served: Served, store_path: Path) -> None:
    """Ticking two traces in the list opens their per-stage durations side by side."""
    other = f"{60:032x}"
    open_page(page, served.url + "/")
    for trace_id in (data.PIPELINE, other):
        page.locator(f"tr[data-trace-id='{trace_id}'] input[type=checkbox]").check()
    page.click("#compare-selected")
    page.wait_for_url("**/compare?**")
    page.wait_for_selector("#compare-table")
    shot(page, "compare")
    shown = page.locator("#compare-table tbody tr[data-stage]").evaluate_all(
        "rs => rs.map(r => [r.dataset.stage, +r.querySelector('.a').dataset.ns,"
        " +r.querySelector('.b').dataset.ns])"
    )
    a, b = _spans(store_path, data.PIPELINE), _spans(store_path, other)

    def stage_ns(spans: dict[str, dict[str, Any]], stage: str) -> int:
        return sum(
            s["end_ns"] - s["start_ns"]
            for s in spans.values()
            if s["attributes"].get("glmtrace.stage") == stage
        )

    assert shown == [
        [stage, stage_ns(a, stage), stage_ns(b, stage)]
        for stage in ("preprocess", "infer", "postprocess")
    ]


def test_perfetto_download_is_the_cli_export(page: Any, served: Served, store_path: Path) -> None:
    """The download button serves what ``glmtrace export --format perfetto`` writes."""
    open_page(page, f"{served.url}/trace/{data.PIPELINE}")
    with page.expect_download() as info:
        page.click("#download-perfetto")
    got = json.loads(Path(info.value.path()).read_text())
    store = Store(store_path)
    assert got == perfetto.trace_events(store.spans(data.PIPELINE), store.logs(data.PIPELINE))
    jaeger = page.locator("#open-jaeger").get_attribute("href")
    assert jaeger == f"http://jaeger.invalid:16686/trace/{data.PIPELINE}"
    assert data.PIPELINE in (page.locator("#open-kibana").get_attribute("href") or "")


def test_unknown_trace_and_missing_store_pages(page: Any, served: Served, tmp_path: Path) -> None:
    """A bad id and a store that does not exist both give a readable message, not a crash."""
    open_page(page, f"{served.url}/trace/{'f' * 32}")
    assert "no trace" in page.locator(".error-box").inner_text()
    missing = Served(App(LocalSource(tmp_path / "nothing-here.db")))
    try:
        open_page(page, missing.url + "/")
        text = page.locator(".error-box").inner_text()
        assert "no glmtrace store at" in text and "nothing-here.db" in text
        shot(page, "missing-store")
    finally:
        missing.close()


def test_large_trace_renders_only_visible_rows(page: Any, tmp_path: Path) -> None:
    """A 5,051-span trace opens folded to its top levels, keeps few rows in the DOM, and
    unfolds to show a span found by name."""
    trace_id = "c3" * 16
    spans = [data.span(trace_id, data.sid(1), None, "step", 0, 5000)]
    for g in range(50):
        group = data.sid(10_000 + g)
        spans.append(data.span(trace_id, group, data.sid(1), f"group {g}", g * 100, g * 100 + 99))
        spans += [
            data.span(
                trace_id,
                data.sid(g * 100 + i),
                group,
                f"op {g * 100 + i}",
                g * 100 + i,
                g * 100 + i + 0.5,
            )
            for i in range(100)
        ]
    Store(tmp_path / "big.db").write_spans(spans)
    big = Served(App(LocalSource(tmp_path / "big.db")))
    try:
        open_page(page, f"{big.url}/trace/{trace_id}")
        assert page.locator(".span-row").count() < 100
        names = page.locator(".span-row .name").all_text_contents()
        assert names[:3] == ["step", "group 0", "group 1"]  # ops folded away
        page.locator("#waterfall").evaluate("w => { w.scrollTop = w.scrollHeight; }")
        page.wait_for_selector(".span-row .name >> text='group 49'")
        page.fill("#find-span", "op 2542")
        page.press("#find-span", "Enter")
        page.wait_for_selector(f".span-row.selected[data-span-id='{data.sid(2542)}']")
        assert page.locator(".span-row").count() < 100
    finally:
        big.close()
