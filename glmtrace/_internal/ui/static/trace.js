// One trace: a virtualised waterfall (only the rows in view exist in the DOM), GPU tracks,
// log marks, a log list, and a details panel loaded per span.
import { api, clock, errorBox, h, mount, ms } from "./app.js";
import { spanDetails } from "./details.js";

const ROW = 24;
const LABEL = 360;
const OVERSCAN = 8;
const AUTO_COLLAPSE = 2000;
const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

export async function render(meta, [traceId], params) {
  let data;
  try {
    data = await (window.glmtraceTrace || api(`/api/trace/${traceId}`));
  } catch (err) {
    mount(errorBox(err.message, err.status === 404 ? "Check the id, or pick a trace from the list." : null));
    return;
  }
  new TraceView(meta, data, params.get("span")).mount();
}

class TraceView {
  constructor(meta, data, selected) {
    this.meta = meta;
    this.data = data;
    // Rows and bars arrive as arrays (half the bytes of objects); name their columns once.
    if (data.row_columns.join() !== "id,n,s,d,k,e,c,dp,l,z,p" || data.bar_columns.join() !== "id,n,s,d,e,p") {
      throw new Error("glmtrace ui: this page does not match the server's data (reload it)");
    }
    this.rows = data.rows.map(([id, n, s, d, k, e, c, dp, l, z, p]) => ({ id, n, s, d, k, e, c, dp, l, z, p }));
    for (const track of data.tracks) {
      track.rows = track.rows.map((line) => line.map(([id, n, s, d, e, p]) => ({ id, n, s, d, e, p })));
    }
    this.byId = new Map();
    this.rows.forEach((r, i) => this.byId.set(r.id, { row: i }));
    data.tracks.forEach((t, ti) => t.rows.forEach((line, li) => line.forEach((b) =>
      this.byId.set(b.id, { track: ti, line: li, bar: b }))));
    this.logsBySpan = new Map();
    data.logs.forEach((log, i) => {
      if (!log.span) return;
      if (!this.logsBySpan.has(log.span)) this.logsBySpan.set(log.span, []);
      this.logsBySpan.get(log.span).push(i);
    });
    // A big trace (a profiled step) opens as an overview: the top two levels and the GPU
    // tracks; deeper subtrees unfold on click, on "Expand", or when a span in them is picked.
    this.collapsed = new Set();
    if (this.rows.length > AUTO_COLLAPSE) this.rows.forEach((r, i) => { if (r.dp >= 1 && r.z > 1) this.collapsed.add(i); });
    this.folded = new Set(data.tracks.map((t, i) => (t.rows.length > 50 ? i : -1)).filter((i) => i >= 0));
    this.view = [0, Math.max(data.duration_ns, 1)];
    this.selected = selected;
    this.items = [];
  }

  mount() {
    const d = this.data;
    const links = [];
    if (this.meta.jaeger_url) links.push(h("a", { class: "button", href: `${this.meta.jaeger_url}/trace/${d.trace_id}`, target: "_blank", rel: "noopener", id: "open-jaeger" }, "Open in Jaeger"));
    if (this.meta.kibana_url) {
      const query = `(query:(language:kuery,query:'trace.id:"${d.trace_id}"'))`;
      links.push(h("a", { class: "button", href: `${this.meta.kibana_url}/app/discover#/?_g=(time:(from:now-30d,to:now))&_a=${encodeURIComponent(query)}`, target: "_blank", rel: "noopener", id: "open-kibana" }, "Open in Kibana"));
    }
    const header = h("section", { class: "card trace-head" },
      h("div", { class: "title-row" },
        h("h1", { id: "trace-title" }, d.root_name),
        h("div", { class: "actions" },
          h("a", { class: "button", href: `/api/trace/${d.trace_id}/perfetto`, download: `glmtrace-${d.trace_id}.perfetto.json`, id: "download-perfetto" }, "Download Perfetto"),
          h("a", { class: "button", href: `/compare?a=${d.trace_id}` }, "Compare…"),
          links)),
      h("dl", { class: "facts" },
        fact("Trace", h("span", { class: "mono" }, d.trace_id)),
        fact("Start", clock(d.start_ns)),
        fact("Duration", ms(d.duration_ns)),
        fact("Spans", d.span_count),
        fact("Errors", h("span", { class: d.error_count ? "err" : "" }, d.error_count)),
        fact("Logs", d.logs.length),
        fact("Services", d.services.join(", "))));

    this.scroller = h("div", { class: "scroller", id: "waterfall", tabindex: 0 });
    this.spacer = h("div", { class: "spacer" });
    this.scroller.append(this.spacer);
    this.scroller.addEventListener("scroll", () => this.schedule());
    this.ruler = h("div", { class: "ruler" });
    this.rulerTicks = h("div", { class: "ticks" });
    this.brush = h("div", { class: "brush", hidden: true });
    this.ruler.append(h("div", { class: "ruler-label" }, "drag here to zoom"), this.rulerTicks, this.brush);
    this.zoomBrush();

    const find = h("input", { type: "search", placeholder: "find span (Enter)", id: "find-span" });
    find.addEventListener("keydown", (e) => { if (e.key === "Enter") this.findNext(find.value); });
    const crit = h("input", { type: "checkbox", checked: true, id: "show-critical" });
    crit.addEventListener("change", () => this.scroller.classList.toggle("no-crit", !crit.checked));
    const toolbar = h("div", { class: "toolbar" },
      find,
      h("button", { type: "button", onclick: () => { this.view = [0, Math.max(this.data.duration_ns, 1)]; this.draw(); } }, "Reset zoom"),
      h("button", { type: "button", onclick: () => { this.collapseAll(); } }, "Collapse"),
      h("button", { type: "button", onclick: () => { this.collapsed.clear(); this.rebuild(); } }, "Expand"),
      h("label", { class: "check" }, crit, "critical path"),
      h("span", { class: "legend" }, ["stage", "inference", "module", "op", "span", "gpu"].map((k) =>
        h("span", { class: `lg k-${k}` }, k)), h("span", { class: "lg k-error" }, "error")));

    this.details = h("aside", { class: "card details", id: "details" },
      h("p", { class: "muted" }, "Select a span to see its attributes, events, links and logs."));
    const timeline = h("section", { class: "card timeline" }, toolbar, this.ruler, this.scroller);
    mount(header, h("div", { class: "trace-body" }, h("div", { class: "trace-main" }, timeline, this.logPanel()), this.details));
    window.addEventListener("resize", () => this.draw());
    this.rebuild();
    const first = this.selected || (this.rows[0] && this.rows[0].id);
    if (first) this.select(first, Boolean(this.selected));
  }

  // ------------------------------------------------------------------ rows in view

  rebuild() {
    const items = [];
    let lane = -1;
    for (let i = 0; i < this.rows.length;) {
      const r = this.rows[i];
      if (r.l !== lane) {
        lane = r.l;
        items.push({ type: "lane", label: this.data.lanes[lane].label });
      }
      items.push({ type: "span", index: i });
      i += this.collapsed.has(i) ? r.z : 1;
    }
    this.data.tracks.forEach((track, ti) => {
      items.push({ type: "track", track: ti });
      if (!this.folded.has(ti)) track.rows.forEach((line) => items.push({ type: "gpu", line, track: ti }));
    });
    this.items = items;
    this.spacer.style.height = `${items.length * ROW}px`;
    this.draw();
  }

  schedule() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => { this.pending = 0; this.draw(); });
  }

  width() {
    return Math.max(100, this.scroller.clientWidth - LABEL - 12);
  }

  x(t) {
    return ((t - this.view[0]) / (this.view[1] - this.view[0])) * this.width();
  }

  draw() {
    this.drawRuler();
    const top = this.scroller.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = Math.min(this.items.length, Math.ceil((top + this.scroller.clientHeight) / ROW) + OVERSCAN);
    const nodes = [this.spacer];
    for (let i = first; i < last; i++) {
      const node = this.item(this.items[i]);
      node.style.top = `${i * ROW}px`;
      nodes.push(node);
    }
    this.scroller.replaceChildren(...nodes);
  }

  item(it) {
    if (it.type === "lane") return h("div", { class: "row lane-row" }, h("span", { class: "lane-label" }, it.label));
    if (it.type === "track") {
      const t = this.data.tracks[it.track];
      const folded = this.folded.has(it.track);
      return h("div", { class: "row track-row" },
        h("button", { type: "button", class: "toggle", "aria-label": folded ? "expand" : "collapse", onclick: () => { if (folded) this.folded.delete(it.track); else this.folded.add(it.track); this.rebuild(); } }, folded ? "▸" : "▾"),
        h("span", { class: "lane-label" }, t.label), h("span", { class: "muted small" }, ` ${t.count} spans on ${t.rows.length} row(s)`));
    }
    if (it.type === "gpu") return this.gpuRow(it.line);
    return this.spanRow(it.index);
  }

  spanRow(index) {
    const r = this.rows[index];
    const classes = ["row", "span-row", `k-${r.k}`];
    if (r.e) classes.push("error");
    if (r.c) classes.push("crit");
    if (r.id === this.selected) classes.push("selected");
    const toggle = r.z > 1
      ? h("button", { type: "button", class: "toggle", "aria-label": "collapse", onclick: (e) => { e.stopPropagation(); this.toggle(index); } }, this.collapsed.has(index) ? "▸" : "▾")
      : h("span", { class: "toggle" });
    const label = h("div", { class: "label", style: { paddingLeft: `${6 + r.dp * 14}px` } },
      toggle, r.e ? h("span", { class: "err-icon", title: "error" }, "!") : null,
      h("span", { class: "name" }, r.n), h("span", { class: "dur" }, ms(r.d)));
    const area = h("div", { class: "area" }, this.bar(r, "bar"));
    for (const li of this.logsBySpan.get(r.id) || []) {
      const log = this.data.logs[li];
      area.append(h("span", {
        class: `log-mark lvl-${log.level}`, style: { left: `${this.x(log.t)}px` },
        title: `${log.level} ${log.msg}`, dataset: { log: li },
      }));
    }
    const node = h("div", { class: classes.join(" "), dataset: { spanId: r.id }, onclick: () => this.select(r.id) }, label, area);
    node.addEventListener("dblclick", () => { this.view = [r.s, r.s + Math.max(r.d, 1)]; this.draw(); });
    return node;
  }

  bar(r, cls) {
    const left = this.x(r.s);
    const width = Math.max(1, this.x(r.s + r.d) - left);
    return h("div", { class: `${cls}${r.e ? " error" : ""}`, style: { left: `${left}px`, width: `${width}px` }, dataset: { spanId: r.id } });
  }

  gpuRow(line) {
    // Bars sorted by start and not overlapping: find the first in view by binary search,
    // and merge runs of sub-pixel kernels into one block so the DOM stays small.
    const area = h("div", { class: "area" });
    let lo = 0, hi = line.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (line[mid].s + line[mid].d < this.view[0]) lo = mid + 1; else hi = mid;
    }
    const width = this.width();
    let run = null;
    for (let i = lo; i < line.length && line[i].s <= this.view[1]; i++) {
      const b = line[i];
      const x0 = this.x(b.s), x1 = this.x(b.s + b.d);
      if (x1 - x0 >= 3) {
        run = null;
        const node = this.bar(b, "bar gpu");
        if (b.id === this.selected) node.classList.add("selected");
        node.title = `${b.n} ${ms(b.d)}`;
        node.addEventListener("click", () => this.select(b.id));
        area.append(node);
      } else if (run && x0 - run.x1 < 1.5) {
        run.x1 = Math.max(run.x1, x1);
        run.count += 1;
        run.node.style.width = `${Math.max(1, run.x1 - run.x0)}px`;
        run.node.title = `${run.count} kernels (zoom in to see them)`;
      } else if (x1 >= 0 && x0 <= width) {
        run = { x0, x1, count: 1, node: h("div", { class: "bar gpu cluster", style: { left: `${x0}px`, width: `${Math.max(1, x1 - x0)}px` }, title: `${b.n} ${ms(b.d)}` }) };
        area.append(run.node);
      }
    }
    return h("div", { class: "row gpu-row" }, h("div", { class: "label" }), area);
  }

  drawRuler() {
    const span = this.view[1] - this.view[0];
    const raw = span / 8;
    const pow = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * pow).find((v) => v >= raw);
    const ticks = [];
    for (let t = Math.ceil(this.view[0] / step) * step; t <= this.view[1]; t += step) {
      const x = this.x(t);
      ticks.push(h("span", { class: x > this.width() - 60 ? "tick end" : "tick", style: { left: `${LABEL + x}px` } }, ms(t)));
    }
    this.rulerTicks.replaceChildren(...ticks);
  }

  zoomBrush() {
    let start = null;
    const at = (e) => Math.min(Math.max(e.clientX - this.ruler.getBoundingClientRect().left - LABEL, 0), this.width());
    this.ruler.addEventListener("mousedown", (e) => { start = at(e); this.brush.hidden = false; });
    window.addEventListener("mousemove", (e) => {
      if (start === null) return;
      const now = at(e);
      Object.assign(this.brush.style, { left: `${LABEL + Math.min(start, now)}px`, width: `${Math.abs(now - start)}px` });
    });
    window.addEventListener("mouseup", (e) => {
      if (start === null) return;
      const end = at(e);
      this.brush.hidden = true;
      if (Math.abs(end - start) > 4) {
        const t = (px) => this.view[0] + (px / this.width()) * (this.view[1] - this.view[0]);
        this.view = [t(Math.min(start, end)), t(Math.max(start, end))];
        this.draw();
      }
      start = null;
    });
  }

  // ------------------------------------------------------------------ navigation

  toggle(index) {
    if (this.collapsed.has(index)) this.collapsed.delete(index); else this.collapsed.add(index);
    this.rebuild();
  }

  collapseAll() {
    this.rows.forEach((r, i) => { if (r.dp === 0 && r.z > 1) this.collapsed.add(i); });
    this.rebuild();
  }

  reveal(id) {
    // Unfold every collapsed ancestor (or the GPU track) so the span has a row, then scroll.
    const where = this.byId.get(id);
    if (!where) return;
    if (where.track !== undefined) {
      if (this.folded.delete(where.track)) this.rebuild();
    } else {
      let changed = false;
      let parent = this.rows[where.row].p;
      while (parent && this.byId.has(parent) && this.byId.get(parent).row !== undefined) {
        const pi = this.byId.get(parent).row;
        if (this.collapsed.delete(pi)) changed = true;
        parent = this.rows[pi].p;
      }
      if (changed) this.rebuild();
    }
    const at = this.items.findIndex((it) =>
      (it.type === "span" && it.index === where.row) ||
      (it.type === "gpu" && where.track !== undefined && it.line === this.data.tracks[where.track].rows[where.line]));
    if (at < 0) return;
    const top = at * ROW;
    if (top < this.scroller.scrollTop || top > this.scroller.scrollTop + this.scroller.clientHeight - ROW) {
      this.scroller.scrollTop = Math.max(0, top - this.scroller.clientHeight / 3);
    }
  }

  select(id, reveal = true) {
    if (!this.byId.has(id)) return;
    this.selected = id;
    if (reveal) this.reveal(id);
    this.draw();
    const url = new URL(location.href);
    url.searchParams.set("span", id);
    history.replaceState(null, "", url);
    spanDetails(this, id);
  }

  findNext(text) {
    if (!text) return;
    const needle = text.toLowerCase();
    const from = this.byId.get(this.selected)?.row ?? -1;
    for (let k = 1; k <= this.rows.length; k++) {
      const r = this.rows[(from + k) % this.rows.length];
      if (r.n.toLowerCase().includes(needle)) { this.select(r.id); return; }
    }
  }

  // ------------------------------------------------------------------ logs

  logPanel() {
    const list = h("ol", { class: "log-list", id: "log-list" });
    const level = h("select", { id: "log-level", "aria-label": "minimum level" },
      h("option", { value: "" }, "all levels"), LEVELS.map((l) => h("option", { value: l }, `${l}+`)));
    const text = h("input", { type: "search", placeholder: "filter log text", id: "log-filter" });
    const fill = () => {
      const min = LEVELS.indexOf(level.value);
      const needle = text.value.toLowerCase();
      const shown = [];
      for (let i = 0; i < this.data.logs.length && shown.length < 5000; i++) {
        const log = this.data.logs[i];
        if (min > 0 && LEVELS.indexOf(log.level) < min) continue;
        if (needle && !log.msg.toLowerCase().includes(needle)) continue;
        shown.push(this.logLine(log, i));
      }
      list.replaceChildren(...(shown.length ? shown : [h("li", { class: "muted" }, "no log lines")]));
    };
    level.addEventListener("change", fill);
    text.addEventListener("input", fill);
    fill();
    return h("section", { class: "card logs" },
      h("div", { class: "toolbar" }, h("h2", {}, `Logs (${this.data.logs.length})`), level, text), list);
  }

  logLine(log, i) {
    const span = log.span ? this.byId.get(log.span) : null;
    const name = span ? (span.row !== undefined ? this.rows[span.row].n : span.bar.n) : null;
    return h("li", { class: `log lvl-${log.level}`, dataset: { log: i, spanId: log.span || "" } },
      h("span", { class: "mono muted" }, `+${ms(log.t)}`),
      h("span", { class: `level lvl-${log.level}` }, log.level),
      h("span", { class: "muted" }, log.logger),
      h("span", { class: "msg" }, log.msg),
      span ? h("button", { type: "button", class: "jump", onclick: () => this.select(log.span) }, `→ ${name}`) : null);
  }
}

function fact(term, value) {
  return h("div", {}, h("dt", {}, term), h("dd", {}, value));
}
