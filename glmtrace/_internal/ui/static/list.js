// The trace list: filters in the URL, newest first, keyset paging.
import { api, clock, h, mount, ms } from "./app.js";

const FIELDS = ["trace", "log", "service", "name", "status", "session", "min_ms", "max_ms", "since", "until"];

function toEpochMs(local) {
  const t = Date.parse(local);
  return Number.isNaN(t) ? "" : String(t);
}

function filterForm(params) {
  const input = (name, label, extra = {}) =>
    h("label", {}, label, h("input", { name, value: params.get(name) || "", ...extra }));
  const service = h("input", { name: "service", list: "services", value: params.get("service") || "", placeholder: "any service" });
  const known = h("datalist", { id: "services" });
  api("/api/services").then((got) => known.replaceChildren(...got.services.map((name) => h("option", { value: name }))), () => {});
  const status = h("select", { name: "status" },
    [["", "any status"], ["error", "with errors"], ["ok", "without errors"]].map(([v, label]) =>
      h("option", { value: v, selected: (params.get("status") || "") === v }, label)));
  const form = h("form", { class: "filters", method: "get", action: "/", id: "filters" },
    input("trace", "Trace id", { placeholder: "8+ hex chars", size: 14 }),
    input("log", "Log text", { placeholder: "words in a log line" }),
    h("label", {}, "Service", service, known),
    input("name", "Span / stage", { placeholder: "e.g. preprocess" }),
    h("label", {}, "Status", status),
    input("session", "session.id", { size: 12 }),
    input("min_ms", "Min ms", { type: "number", min: 0, step: "any", size: 6 }),
    input("max_ms", "Max ms", { type: "number", min: 0, step: "any", size: 6 }),
    input("since", "From", { type: "datetime-local", step: 1 }),
    input("until", "To", { type: "datetime-local", step: 1 }),
    h("div", { class: "buttons" },
      h("button", { type: "submit", class: "primary" }, "Filter"),
      h("a", { href: "/", class: "button" }, "Clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) query.set(key, value);
    location.assign(`/?${query}`);
  });
  return form;
}

function row(t, longest, picked, onPick) {
  const width = Math.max(1, (100 * t.duration_ns) / longest);
  const box = h("input", { type: "checkbox", title: "select to compare", "aria-label": "compare" });
  box.addEventListener("change", () => onPick(t.trace_id, box.checked));
  return h("tr", { class: t.error_count ? "has-error" : "", dataset: { traceId: t.trace_id } },
    h("td", {}, box),
    h("td", { class: "mono nowrap" }, clock(t.start_ns)),
    h("td", {}, h("a", { href: `/trace/${t.trace_id}`, class: "trace-link" }, t.root_name)),
    h("td", {}, t.services.join(", ")),
    h("td", { class: "duration" },
      h("div", { class: "dur-bar" }, h("span", { style: { width: `${width}%` } })),
      h("span", { class: "num" }, ms(t.duration_ns))),
    h("td", { class: "num" }, t.span_count),
    h("td", { class: t.error_count ? "num err" : "num" }, t.error_count),
    h("td", { class: "num" }, t.log_count),
    h("td", { class: "mono" }, t.session_id ?? ""),
    h("td", { class: "mono muted" }, t.trace_id.slice(0, 12)));
}

export async function render(_meta, _args, params) {
  const query = new URLSearchParams();
  for (const key of FIELDS) {
    const value = params.get(key);
    if (!value) continue;
    query.set(key, key === "since" || key === "until" ? toEpochMs(value) : value);
  }
  if (params.get("before")) query.set("before", params.get("before"));
  const page = await api(`/api/traces?${query}`);
  const picked = new Set();
  const compare = h("a", { class: "button", id: "compare-selected", "aria-disabled": "true" }, "Compare 2 selected");
  const onPick = (id, on) => {
    if (on) picked.add(id); else picked.delete(id);
    const ids = [...picked];
    if (ids.length === 2) {
      compare.setAttribute("href", `/compare?a=${ids[0]}&b=${ids[1]}`);
      compare.removeAttribute("aria-disabled");
    } else {
      compare.removeAttribute("href");
      compare.setAttribute("aria-disabled", "true");
    }
  };
  const longest = Math.max(1, ...page.traces.map((t) => t.duration_ns));
  const older = new URLSearchParams(params);
  if (page.next) older.set("before", page.next);
  const table = page.traces.length
    ? h("table", { class: "traces", id: "trace-table" },
      h("thead", {}, h("tr", {}, ["", "Start", "Root", "Services", "Duration", "Spans", "Errors", "Logs", "session.id", "Trace id"]
        .map((title) => h("th", {}, title)))),
      h("tbody", {}, page.traces.map((t) => row(t, longest, picked, onPick))))
    : h("p", { class: "empty" }, "No trace matches these filters.");
  const paging = h("div", { class: "paging" },
    params.get("before") ? h("a", { href: `/?${new URLSearchParams([...params].filter(([k]) => k !== "before"))}`, class: "button" }, "⟵ Newest") : null,
    page.next ? h("a", { href: `/?${older}`, class: "button", id: "older" }, "Older ⟶") : null,
    compare);
  mount(h("section", { class: "card" }, filterForm(params)),
    h("section", { class: "card" }, h("h1", {}, "Traces", h("span", { class: "muted small" }, " newest first")), table, paging));
}
