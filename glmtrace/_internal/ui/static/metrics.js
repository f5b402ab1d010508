// Stage metrics: QPS, P50/P95/P99, error rate per stage and per model, with SVG charts.
// The numbers come from the same computation as `glmtrace stats`.
import { api, clock, h, mount, s } from "./app.js";

const WINDOWS = ["5m", "15m", "1h", "6h", "24h", "7d", "all"];

export async function render(_meta, _args, params) {
  const window = params.get("window") || "1h";
  const data = await api(`/api/metrics?window=${encodeURIComponent(window)}`);
  const picker = h("div", { class: "windows", role: "group", "aria-label": "window" },
    h("span", { class: "muted" }, "Window:"),
    WINDOWS.map((w) => h("a", { href: `/metrics?window=${w}`, class: `button${w === data.window.label ? " active" : ""}` }, w)));
  const w = data.window;
  const sections = [
    h("section", { class: "card" },
      h("div", { class: "title-row" }, h("h1", {}, "Stage metrics"), picker),
      h("p", { class: "muted", id: "window-text" },
        `${clock(w.start_ns)} → ${clock(w.end_ns)} (${w.seconds.toFixed(0)} s, ending at the newest span). ` +
        "Latency percentiles interpolate between ranks; QPS is calls over the window.")),
  ];
  for (const [title, groups, id] of [["Per stage", data.stages, "stages"], ["Per model", data.models, "models"]]) {
    if (!groups.length) {
      sections.push(h("section", { class: "card" }, h("h2", {}, title), h("p", { class: "empty" }, "No calls in this window.")));
      continue;
    }
    sections.push(h("section", { class: "card" }, h("h2", {}, title), metricTable(groups, id, w), percentileChart(groups)));
  }
  mount(...sections);
}

function num(value, digits, cls) {
  return h("td", { class: `num ${cls}`, dataset: { value } }, value.toFixed(digits));
}

function metricTable(groups, id, w) {
  return h("table", { class: "metrics", id },
    h("thead", {}, h("tr", {}, ["Name", "Calls", "QPS", "P50 ms", "P95 ms", "P99 ms", "Max ms", "Errors", "Calls over time", "P95 over time"].map((t) => h("th", {}, t)))),
    h("tbody", {}, groups.map((g) => h("tr", { dataset: { key: g.key } },
      h("td", { class: "key" }, g.key),
      h("td", { class: "num count", dataset: { value: g.count } }, g.count),
      num(g.qps, 3, "qps"), num(g.p50_ms, 2, "p50"), num(g.p95_ms, 2, "p95"), num(g.p99_ms, 2, "p99"), num(g.max_ms, 2, "max"),
      h("td", { class: `num error-rate${g.errors ? " err" : ""}`, dataset: { value: g.error_rate } }, `${(100 * g.error_rate).toFixed(1)}% (${g.errors})`),
      h("td", {}, spark(g.series.map((b) => b.count), "count")),
      h("td", {}, spark(g.series.map((b) => b.p95_ms), "p95"))))));
}

function spark(values, kind) {
  const W = 160, H = 28;
  const known = values.filter((v) => v !== null);
  const top = Math.max(1e-9, ...known);
  const step = W / values.length;
  const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: `spark ${kind}`, role: "img" });
  values.forEach((v, i) => {
    if (v === null || v === 0) return;
    const hgt = Math.max(1, (v / top) * (H - 2));
    svg.append(s("rect", { x: i * step + 0.5, y: H - hgt, width: Math.max(1, step - 1), height: hgt },
      s("title", {}, kind === "count" ? `${v} calls` : `P95 ${v} ms`)));
  });
  return svg;
}

function percentileChart(groups) {
  // Horizontal bars: P50, P95, P99 per group on one shared scale.
  const rowH = 16, gap = 10, left = 170, W = 720;
  const top = Math.max(1e-9, ...groups.map((g) => g.p99_ms));
  const height = groups.length * (3 * rowH + gap) + 24;
  const svg = s("svg", { width: W, height, viewBox: `0 0 ${W} ${height}`, class: "pchart", role: "img", "aria-label": "latency percentiles" });
  groups.forEach((g, gi) => {
    const y0 = gi * (3 * rowH + gap);
    svg.append(s("text", { x: 0, y: y0 + rowH * 1.8, class: "glabel" }, g.key.length > 24 ? `${g.key.slice(0, 23)}…` : g.key));
    [["P50", g.p50_ms, "p50"], ["P95", g.p95_ms, "p95"], ["P99", g.p99_ms, "p99"]].forEach(([label, v, cls], k) => {
      const width = Math.max(1, (v / top) * (W - left - 140)); // room for the longest label
      const y = y0 + k * rowH;
      svg.append(s("rect", { x: left, y: y + 2, width, height: rowH - 4, class: cls }, s("title", {}, `${label} ${v.toFixed(2)} ms`)),
        s("text", { x: left + width + 6, y: y + rowH - 4, class: "vlabel" }, `${label} ${v.toFixed(2)} ms`));
    });
  });
  return h("div", { class: "chart" }, svg);
}
