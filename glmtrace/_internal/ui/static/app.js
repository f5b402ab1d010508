// glmtrace ui: routing and helpers shared by the pages.
// Trace data is user data: it only ever reaches the DOM as text (textContent, text nodes,
// attribute values), never as HTML.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const SVG = "http://www.w3.org/2000/svg";
export function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  append(node, children);
  return node;
}

export async function api(path) {
  const reply = await fetch(path, { headers: { Accept: "application/json" } });
  let body;
  try {
    body = await reply.json();
  } catch {
    throw new Error(`${path}: HTTP ${reply.status}`);
  }
  if (!reply.ok) {
    const err = new Error(body.error || `HTTP ${reply.status}`);
    err.status = reply.status;
    throw err;
  }
  return body;
}

export function ms(ns) {
  const v = ns / 1e6;
  if (v >= 10000) return `${(v / 1000).toFixed(2)} s`;
  if (v >= 100) return `${v.toFixed(0)} ms`;
  if (v >= 1) return `${v.toFixed(1)} ms`;
  if (v >= 0.001) return `${(v * 1000).toFixed(1)} µs`;
  return `${ns} ns`;
}

export function clock(ns) {
  const d = new Date(ns / 1e6);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function errorBox(message, hint) {
  return h("div", { class: "error-box", role: "alert" },
    h("strong", {}, "Cannot show this"), h("p", {}, message), hint ? h("p", { class: "muted" }, hint) : null);
}

export function mount(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes);
  return main;
}

const routes = [
  [/^\/$/, "traces", () => import("./list.js")],
  [/^\/trace\/([0-9a-fA-F]+)$/, "traces", () => import("./trace.js")],
  [/^\/metrics$/, "metrics", () => import("./metrics.js")],
  [/^\/compare$/, "compare", () => import("./compare.js")],
];

async function start() {
  // A trace page asks for its (possibly large) trace at once, alongside the metadata.
  const early = location.pathname.match(/^\/trace\/([0-9a-fA-F]+)$/);
  if (early) window.glmtraceTrace = api(`/api/trace/${early[1]}`);
  window.glmtraceTrace?.catch(() => {}); // the page reports errors when it awaits this
  let meta;
  try {
    meta = await api("/api/meta");
  } catch (err) {
    mount(errorBox(err.message));
    return;
  }
  document.getElementById("store").textContent = meta.store;
  if (meta.error) {
    mount(errorBox(meta.error,
      "Run a program that calls glmtrace.init() (or `glmtrace run pipeline.yaml`), then reload."));
    document.body.dataset.ready = "1";
    return;
  }
  const path = location.pathname;
  for (const [pattern, nav, load] of routes) {
    const found = path.match(pattern);
    if (!found) continue;
    document.querySelector(`[data-nav="${nav}"]`)?.classList.add("active");
    const page = await load();
    try {
      await page.render(meta, found.slice(1), new URLSearchParams(location.search));
    } catch (err) {
      mount(errorBox(err.message));
    }
    document.body.dataset.readyAt = String(Math.round(performance.now()));
    document.body.dataset.ready = "1";
    return;
  }
  mount(errorBox(`No page ${path}`));
  document.body.dataset.ready = "1";
}

start();
