// The details panel of one span: status, exceptions, logs, links both ways, attributes.
import { api, errorBox, h, ms } from "./app.js";

const BATCH_TRACE = "glmtrace.batch.trace_id";
const BATCH_SPAN = "glmtrace.batch.span_id";
const ROLE = "glmtrace.link.role";

let latest = 0;

export async function spanDetails(view, id) {
  const ticket = ++latest;
  const traceId = view.data.trace_id;
  let span;
  try {
    span = await api(`/api/trace/${traceId}/span/${id}`);
  } catch (err) {
    if (ticket === latest) view.details.replaceChildren(errorBox(err.message));
    return;
  }
  if (ticket !== latest) return; // a newer selection won
  const start = span.start_ns - view.data.start_ns;
  const parts = [
    h("h2", { class: "span-name" }, span.name),
    h("div", { class: "badges" },
      h("span", { class: `badge ${span.status === "ERROR" ? "b-error" : "b-ok"}` }, span.status),
      h("span", { class: "badge" }, span.kind || ""),
      h("span", { class: "badge" }, span.service_name || "")),
    span.status_message ? h("p", { class: "err status-message" }, span.status_message) : null,
    table([["duration", ms(span.end_ns - span.start_ns)], ["starts at", `+${ms(start)}`],
      ["span id", span.span_id],
      ["parent", span.parent_span_id ? spanLink(view, traceId, span.parent_span_id, span.parent_span_id) : "—"]]),
  ];
  const exceptions = span.events.filter((e) => e.name === "exception");
  if (exceptions.length) {
    parts.push(h("h3", {}, "Exception"));
    for (const e of exceptions) {
      const a = e.attributes;
      parts.push(h("p", { class: "err" }, `${a["exception.type"] || ""}: ${a["exception.message"] || ""}`),
        a["exception.stacktrace"] ? h("pre", { class: "stack" }, a["exception.stacktrace"]) : null);
    }
  }
  const logs = view.logsBySpan.get(id) || [];
  if (logs.length) {
    parts.push(h("h3", {}, `Logs (${logs.length})`),
      h("ol", { class: "log-list compact", id: "span-logs" }, logs.map((i) => {
        const log = view.data.logs[i];
        return h("li", { class: `log lvl-${log.level}` }, h("span", { class: `level lvl-${log.level}` }, log.level), h("span", { class: "msg" }, log.msg));
      })));
  }
  const links = span.links.map((link) => [link.attributes[ROLE] || "linked", link.trace_id, link.span_id]);
  const attrs = span.attributes;
  if (attrs[BATCH_TRACE] && attrs[BATCH_SPAN] && !links.some((l) => l[2] === attrs[BATCH_SPAN])) {
    links.push(["batch", attrs[BATCH_TRACE], attrs[BATCH_SPAN]]);
  }
  // A request that a batch linked back to is already listed; show "linked from" only for
  // spans that link here without a link back (e.g. a batch in another process).
  const from = span.linked_from.filter((l) => !links.some(([, tid, sid]) => tid === l.trace_id && sid === l.span_id));
  if (links.length || from.length) {
    parts.push(h("h3", {}, "Links"), h("ul", { class: "links", id: "span-links" },
      links.map(([role, tid, sid]) => h("li", {}, h("span", { class: "badge" }, role),
        spanLink(view, tid, sid, `${tid === traceId ? "this trace" : tid.slice(0, 12)} · ${sid}`))),
      from.map((l) => h("li", {}, h("span", { class: "badge" }, "linked from"),
        spanLink(view, l.trace_id, l.span_id, `${l.name} (${l.trace_id.slice(0, 12)})`)))));
  }
  const events = span.events.filter((e) => e.name !== "exception");
  if (events.length) {
    parts.push(h("h3", {}, "Events"), table(events.map((e) => [
      `+${ms(e.timestamp_ns - view.data.start_ns)}`,
      `${e.name} ${Object.keys(e.attributes).length ? JSON.stringify(e.attributes) : ""}`])));
  }
  parts.push(h("h3", {}, "Attributes"), table(Object.entries(attrs).sort().map(([k, v]) => [k, show(v)]), "attributes"));
  parts.push(h("details", {}, h("summary", {}, "Resource"), table(Object.entries(span.resource).sort().map(([k, v]) => [k, show(v)]))));
  view.details.replaceChildren(...parts.filter(Boolean));
}

function show(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function table(rows, id) {
  return h("table", { class: "kv", id }, h("tbody", {}, rows.map(([k, v]) =>
    h("tr", {}, h("th", {}, k), h("td", {}, v)))));
}

function spanLink(view, traceId, spanId, text) {
  const here = traceId === view.data.trace_id;
  return h("a", {
    href: `/trace/${traceId}?span=${spanId}`,
    class: "span-link",
    dataset: { spanId },
    onclick: (e) => {
      if (here && view.byId.has(spanId)) { e.preventDefault(); view.select(spanId); }
    },
  }, text);
}
