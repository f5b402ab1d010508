// Two traces of one pipeline, per stage, side by side.
import { api, h, mount, ms } from "./app.js";

export async function render(_meta, _args, params) {
  const a = params.get("a") || "", b = params.get("b") || "";
  const form = h("form", { class: "filters", method: "get", action: "/compare" },
    h("label", {}, "Trace A", h("input", { name: "a", value: a, size: 34, placeholder: "trace id" })),
    h("label", {}, "Trace B", h("input", { name: "b", value: b, size: 34, placeholder: "trace id" })),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Compare")));
  const head = h("section", { class: "card" }, h("h1", {}, "Compare two traces"), form);
  if (!a || !b) {
    mount(head, h("section", { class: "card" }, h("p", { class: "muted" }, "Give two trace ids, or tick two traces in the list.")));
    return;
  }
  const data = await api(`/api/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
  const longest = Math.max(1, ...data.stages.flatMap((st) => [st.a_ns, st.b_ns]));
  const bar = (ns, cls) => h("div", { class: `cmp-bar ${cls}` }, h("span", { style: { width: `${(100 * ns) / longest}%` } }));
  const delta = (st) => {
    if (!st.a_ns || !st.b_ns) return "—";
    const pct = (100 * (st.b_ns - st.a_ns)) / st.a_ns;
    return `${pct >= 0 ? "+" : ""}${pct.toFixed(1)}%`;
  };
  const table = h("table", { class: "compare", id: "compare-table" },
    h("thead", {}, h("tr", {}, h("th", {}, "Stage"),
      h("th", {}, "A ", h("a", { href: `/trace/${data.a.trace_id}` }, data.a.trace_id.slice(0, 12))),
      h("th", {}, "B ", h("a", { href: `/trace/${data.b.trace_id}` }, data.b.trace_id.slice(0, 12))),
      h("th", {}, "B vs A"), h("th", { class: "wide" }, ""))),
    h("tbody", {},
      h("tr", { class: "total" }, h("td", {}, "whole trace"), h("td", { class: "num" }, ms(data.a.duration_ns)),
        h("td", { class: "num" }, ms(data.b.duration_ns)), h("td", { class: "num" }, delta({ a_ns: data.a.duration_ns, b_ns: data.b.duration_ns })), h("td", {})),
      data.stages.map((st) => h("tr", { dataset: { stage: st.stage } },
        h("td", { class: "key" }, st.stage),
        h("td", { class: "num a", dataset: { ns: st.a_ns } }, st.a_count ? `${ms(st.a_ns)}${st.a_count > 1 ? ` ×${st.a_count}` : ""}` : "—"),
        h("td", { class: "num b", dataset: { ns: st.b_ns } }, st.b_count ? `${ms(st.b_ns)}${st.b_count > 1 ? ` ×${st.b_count}` : ""}` : "—"),
        h("td", { class: `num${st.b_ns > st.a_ns * 1.1 && st.a_ns ? " err" : ""}` }, delta(st)),
        h("td", { class: "wide" }, bar(st.a_ns, "a"), bar(st.b_ns, "b"))))));
  mount(head, h("section", { class: "card" }, table));
}
