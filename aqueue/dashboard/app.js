// aqueue's dashboard: one page, hash routes (#/, #/jobs, #/jobs/<id>, #/schedules,
// #/workers), reading and acting through the JSON API. No library, no build step.
//
// Safe rendering: API data only ever reaches the page as text (textContent, text nodes,
// attribute values set one by one); nothing here parses HTML. The page's CSP allows no
// inline script on top of that.
//
// Live: the current page refreshes itself every POLL_MS while the tab is visible (short
// polling; see the README for why not server-sent events).
"use strict";

(() => {
  const POLL_MS = 5000;
  const STATUSES = ["PENDING", "RUNNING", "RETRY", "COMPLETED", "DEAD", "CANCELLED"];
  const FINAL = new Set(["COMPLETED", "DEAD", "CANCELLED"]);
  const PAGE_SIZES = [10, 20, 50, 100, 200];
  const CHART_MINUTES = 60;
  const SVG_NS = "http://www.w3.org/2000/svg";

  // --- building the page: elements and text, never markup --------------------------------

  function setProps(el, props) {
    if (!props) return;
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.setAttribute("class", value);
      else if (key === "text") el.textContent = String(value);
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(el.dataset, value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    setProps(el, props);
    return append(el, children);
  }

  function s(tag, props, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setProps(el, props);
    return append(el, children);
  }

  // Replaces el's children (null, undefined and false are left out, as in h()).
  function fill(el, ...children) {
    el.replaceChildren();
    return append(el, children);
  }

  const $ = (selector, root = document) => root.querySelector(selector);

  // --- the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // The server's clock minus ours (from the Date header, to the second): relative times
  // ("5 s ago") are the server's, whatever this machine's clock says.
  let skewMs = 0;

  function noteServerClock(response) {
    const date = Date.parse(response.headers.get("date") || "");
    if (Number.isNaN(date)) return;
    const skew = date - Date.now();
    // the header has whole seconds: a difference under two is its rounding
    skewMs = Math.abs(skew) < 2000 ? 0 : skew;
  }

  const serverNow = () => Date.now() + skewMs;

  // A cookie of this page's site, by name ("" when there is none).
  function cookie(name) {
    for (const part of document.cookie.split(";")) {
      const [key, ...rest] = part.trim().split("=");
      if (key === name) return decodeURIComponent(rest.join("="));
    }
    return "";
  }

  // Paths are relative: the page works as well behind a proxy that serves it under a prefix.
  // Signed in, the browser sends the token's HTTP-only cookie by itself; a request that
  // changes something repeats the session's CSRF token, which only this site can read.
  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, cache: "no-store" };
    const csrf = method === "GET" ? "" : cookie("aqueue_csrf");
    if (csrf) init.headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, `the server did not answer (${error.message})`);
    }
    noteServerClock(response);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (error) {
      data = null;
    }
    if (!response.ok) {
      const said = data && typeof data.error === "string" ? data.error : response.statusText;
      throw new ApiError(response.status, `${response.status}: ${said || "error"}`);
    }
    return data;
  }

  const get = (path) => api("GET", path);
  const post = (path, body) => api("POST", path, body === undefined ? {} : body);

  // --- formatting -------------------------------------------------------------------------

  const numberFormat = new Intl.NumberFormat();
  const fmtNumber = (n) => numberFormat.format(n);
  const pad = (n, width = 2) => String(n).padStart(width, "0");

  function fmtTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    );
  }

  function fmtClock(ms) {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    const abs = Math.abs(seconds);
    if (abs < 1) return `${Math.round(abs * 1000)} ms`;
    if (abs < 60) return `${abs < 10 && !Number.isInteger(abs) ? abs.toFixed(1) : Math.round(abs)} s`;
    const minutes = Math.floor(abs / 60);
    if (minutes < 60) return `${minutes} min ${Math.floor(abs % 60)} s`;
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return `${hours} h ${minutes % 60} min`;
    return `${Math.floor(hours / 24)} d ${hours % 24} h`;
  }

  function relative(iso) {
    const at = Date.parse(iso);
    if (Number.isNaN(at)) return "";
    const seconds = (at - serverNow()) / 1000;
    if (Math.abs(seconds) < 1) return "now";
    const span = fmtDuration(Math.round(Math.abs(seconds)));
    return seconds < 0 ? `${span} ago` : `in ${span}`;
  }

  // A time: local and absolute, with a relative part the clock below keeps current.
  function timeEl(iso, { showRelative = true } = {}) {
    if (!iso) return h("span", { class: "muted", text: "—" });
    return h(
      "time",
      { datetime: iso, title: iso },
      h("span", { class: "when", text: fmtTime(iso) }),
      showRelative ? h("span", { class: "rel", dataset: { rel: iso }, text: relative(iso) }) : null,
    );
  }

  function tickRelativeTimes() {
    for (const el of document.querySelectorAll("[data-rel]")) {
      const text = relative(el.dataset.rel);
      if (el.textContent !== text) el.textContent = text;
    }
  }

  function badge(status) {
    const known = STATUSES.includes(status) ? status : "OTHER";
    return h("span", { class: `badge status-${known}`, text: status });
  }

  function shortId(id) {
    return String(id).slice(-12);
  }

  // The line that says most: a traceback's last (the exception and its message).
  function summaryLine(text, max = 140) {
    if (!text) return "";
    const line = String(text).trim().split("\n").pop().trim() || String(text).trim();
    return line.length > max ? `${line.slice(0, max - 1)}…` : line;
  }

  function jsonText(value, max = 200000) {
    const text = JSON.stringify(value, null, 2);
    if (text === undefined) return "null";
    return text.length > max ? `${text.slice(0, max)}\n… (${fmtNumber(text.length)} characters in all)` : text;
  }

  function jobsLink(params, label) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) if (value) query.set(key, value);
    const q = query.toString();
    return h("a", { href: `#/jobs${q ? `?${q}` : ""}` }, label);
  }

  // --- notices: what an action did, or why it failed ---------------------------------------

  function notify(message, kind = "error") {
    const box = $("#notices");
    const close = h("button", { type: "button", class: "small ghost", "aria-label": "Dismiss", text: "×" });
    const note = h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" },
      h("span", { class: "notice-text", text: message }), close);
    close.addEventListener("click", () => note.remove());
    box.append(note);
    while (box.children.length > 4) box.firstElementChild.remove();
    if (kind !== "error") setTimeout(() => note.remove(), 5000);
    return note;
  }

  // Runs an action from a button: the button waits, the outcome is told, the page refreshes.
  async function act(button, label, action, done) {
    button.disabled = true;
    try {
      const result = await action();
      if (done) notify(done(result), "ok");
      return result;
    } catch (error) {
      if (error.status === 401) showSignIn();
      else notify(`${label} failed: ${error.message}`);
      return undefined;
    } finally {
      button.disabled = false;
      refreshNow();
    }
  }

  function actionButton(text, props, onClick) {
    const button = h("button", { type: "button", ...props, text });
    button.addEventListener("click", () => onClick(button));
    return button;
  }

  // --- charts: bars per minute, drawn in SVG ------------------------------------------------

  // The per-minute series of /stats, merged across polls: the first asks for the whole
  // window, later ones only for the minutes since (the current minute included), so a
  // poll reads a minute or two of job_events, not an hour.
  class Series {
    constructor(minutes) {
      this.minutes = minutes;
      this.buckets = new Map(); // queue -> Map(minute start ms -> [completed, failed])
      this.lastMinute = null; // start (ms) of the latest minute fetched
    }

    want() {
      if (this.lastMinute === null) return this.minutes;
      const behind = Math.ceil((serverNow() - this.lastMinute) / 60000);
      return Math.min(this.minutes, Math.max(2, behind + 1));
    }

    async fetch() {
      const stats = await get(`stats?minutes=${this.want()}`);
      const start = Date.parse(stats.start);
      const seen = new Set();
      for (const q of stats.queues) {
        seen.add(q.name);
        if (!this.buckets.has(q.name)) this.buckets.set(q.name, new Map());
        const buckets = this.buckets.get(q.name);
        for (let i = 0; i < stats.minutes; i += 1) {
          buckets.set(start + i * 60000, [q.completed[i], q.failed[i]]);
        }
      }
      // a queue absent from the answer finished nothing in the window it covers
      for (const [name, buckets] of this.buckets) {
        if (seen.has(name)) continue;
        for (let i = 0; i < stats.minutes; i += 1) buckets.delete(start + i * 60000);
      }
      this.lastMinute = start + (stats.minutes - 1) * 60000;
      const oldest = this.lastMinute - (this.minutes - 1) * 60000;
      for (const buckets of this.buckets.values()) {
        for (const minute of buckets.keys()) if (minute < oldest) buckets.delete(minute);
      }
    }

    // [completed[], failed[]] over the window, oldest first; null: every queue
    values(queue) {
      const completed = new Array(this.minutes).fill(0);
      const failed = new Array(this.minutes).fill(0);
      if (this.lastMinute === null) return { completed, failed, first: serverNow() };
      const first = this.lastMinute - (this.minutes - 1) * 60000;
      const names = queue === null ? [...this.buckets.keys()] : [queue];
      for (const name of names) {
        const buckets = this.buckets.get(name);
        if (!buckets) continue;
        for (const [minute, [c, f]] of buckets) {
          const i = Math.round((minute - first) / 60000);
          if (i < 0 || i >= this.minutes) continue;
          completed[i] += c;
          failed[i] += f;
        }
      }
      return { completed, failed, first };
    }
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  // Bars per minute, the newest on the right, scaled to the series' own maximum.
  function barChart({ values, first, kind, label, width, height = 110 }) {
    const left = 34;
    const right = 6;
    const top = 8;
    const bottom = 20;
    const plotW = Math.max(60, width - left - right);
    const plotH = height - top - bottom;
    const max = niceMax(Math.max(...values));
    const slot = plotW / values.length;
    const total = values.reduce((a, b) => a + b, 0);
    const chart = s("svg", {
      class: `chart chart-${kind}`,
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `${label}: ${fmtNumber(total)} in the last ${values.length} minutes`,
    });
    // counts: no half a job on the axis
    for (const fraction of max % 2 === 0 ? [0, 0.5, 1] : [0, 1]) {
      const y = top + plotH - fraction * plotH;
      chart.append(
        s("line", { class: "grid", x1: left, x2: left + plotW, y1: y, y2: y }),
        s("text", { class: "axis", x: left - 4, y: y + 3, "text-anchor": "end" }, fmtNumber(fraction * max)),
      );
    }
    values.forEach((value, i) => {
      const x = left + i * slot;
      const minute = first + i * 60000;
      const tip = s("title", null, `${fmtClock(minute)}: ${fmtNumber(value)} ${label}`);
      if (value > 0) {
        const barH = Math.max(1, (value / max) * plotH);
        chart.append(
          s("rect", {
            class: "bar",
            x: x + slot * 0.1,
            y: top + plotH - barH,
            width: Math.max(1, slot * 0.8),
            height: barH,
          }),
        );
      }
      // the whole column answers the hover, not only the bar
      chart.append(s("rect", { class: "hover", x, y: top, width: slot, height: plotH }, tip));
    });
    const ticks = [[0, `−${values.length} min`], [Math.floor(values.length / 2), `−${Math.ceil(values.length / 2)} min`], [values.length - 1, "now"]];
    for (const [i, text] of ticks) {
      const anchor = i === 0 ? "start" : i === values.length - 1 ? "end" : "middle";
      const x = i === values.length - 1 ? left + plotW : left + i * slot;
      chart.append(s("text", { class: "axis", x, y: height - 5, "text-anchor": anchor }, text));
    }
    return chart;
  }

  // Two charts (completed, failed) in `box`, redrawn when their numbers or width change.
  function drawCharts(box, series, queue) {
    const { completed, failed, first } = series.values(queue);
    const width = Math.floor(box.clientWidth || 300);
    const signature = JSON.stringify([completed, failed, width, first]);
    if (box.dataset.signature === signature) return;
    box.dataset.signature = signature;
    const sum = (list) => list.reduce((a, b) => a + b, 0);
    const each = width >= 560 ? Math.floor((width - 16) / 2) : width;
    fill(box,
      h("figure", { class: "chart-box" },
        h("figcaption", null, h("span", { class: "key key-completed" }), "completed / min ",
          h("span", { class: "muted", text: `(${fmtNumber(sum(completed))} in the last hour)` })),
        barChart({ values: completed, first, kind: "completed", label: "completed", width: each })),
      h("figure", { class: "chart-box" },
        h("figcaption", null, h("span", { class: "key key-failed" }), "failed / min ",
          h("span", { class: "muted", text: `(${fmtNumber(sum(failed))} in the last hour)` })),
        barChart({ values: failed, first, kind: "failed", label: "failed", width: each })),
    );
  }

  // --- pages ------------------------------------------------------------------------------
  // Each page builds its frame once and returns { refresh() }, called at once and on every
  // poll; refresh() updates the parts that change.

  function heading(title, ...extra) {
    document.title = `${title} · aqueue`;
    return h("div", { class: "page-head" }, h("h1", { text: title }), ...extra);
  }

  const DEPTH = [
    ["pending", "PENDING", "due now"],
    ["scheduled", "PENDING", "delayed"],
    ["waiting", "PENDING", "on dependencies"],
    ["retry", "RETRY", "waiting to retry"],
    ["running", "RUNNING", "running"],
    ["dead", "DEAD", "dead"],
    ["cancelled", "CANCELLED", "cancelled"],
  ];

  const BACKLOG = new Set(["pending", "scheduled", "waiting", "retry", "running"]);

  function limitsText(limits) {
    const parts = [];
    if (limits.rate_limit) parts.push(`rate ${limits.rate_limit}`);
    if (limits.key_concurrency) parts.push(`${limits.key_concurrency} per key`);
    for (const [key, cap] of Object.entries(limits.key_limits || {})) parts.push(`${key}: ${cap}`);
    const weights = Object.entries(limits.fair_weights || {});
    if (weights.length) parts.push(`weights ${weights.map(([k, w]) => `${k}=${w}`).join(", ")}`);
    return parts.length ? parts.join(" · ") : "none";
  }

  function overviewPage(main) {
    const series = new Series(CHART_MINUTES);
    const totals = h("div", { class: "totals" });
    const allCharts = h("div", { class: "charts" });
    const grid = h("div", { class: "queues" });
    const empty = h("p", { class: "muted empty", hidden: true },
      "No queues yet: a queue appears with its first job (POST /jobs).");
    main.append(
      heading("Overview"),
      totals,
      h("section", { class: "card" }, h("h2", { text: "All queues, last hour" }), allCharts),
      empty,
      grid,
    );
    const cards = new Map();

    function queueCard(name) {
      let queue = null;
      const title = h("h2", null, jobsLink({ queue: name }, name));
      const flags = h("span", { class: "flags" });
      const bar = h("div", { class: "depth-bar", "aria-hidden": "true" });
      const counts = h("dl", { class: "depth" });
      const facts = h("dl", { class: "facts" });
      const charts = h("div", { class: "charts" });
      const pause = actionButton("Pause", { class: "small", dataset: { action: "pause" } }, (button) => {
        if (queue.paused) {
          act(button, `Resume ${name}`, () => post(`queues/${encodeURIComponent(name)}/resume`),
            () => `Queue ${name} resumed`);
          return;
        }
        if (!window.confirm(`Pause queue "${name}"? No worker claims its jobs until it is resumed; running jobs finish.`)) return;
        act(button, `Pause ${name}`, () => post(`queues/${encodeURIComponent(name)}/pause`),
          () => `Queue ${name} paused`);
      });
      const retryDead = actionButton("Retry dead", { class: "small", dataset: { action: "retry-dead" } }, (button) => {
        const dead = queue.depth.dead;
        if (!window.confirm(`Retry all ${fmtNumber(dead)} dead job(s) of queue "${name}"? Each runs again with a fresh attempt budget.`)) return;
        act(button, `Retry dead of ${name}`, () => post(`queues/${encodeURIComponent(name)}/retry-dead`),
          (result) => `${fmtNumber(result.retried)} dead job(s) of ${name} retried`);
      });
      const root = h("section", { class: "card queue", dataset: { queue: name } },
        h("div", { class: "card-head" }, title, flags, h("div", { class: "actions" }, pause, retryDead)),
        bar, counts, facts, charts);

      function update(q) {
        queue = q;
        root.classList.toggle("is-paused", q.paused);
        fill(flags,
          q.paused ? h("span", { class: "badge paused", text: "paused" }) : h("span", { class: "badge active", text: "active" }),
          q.fair ? h("span", { class: "badge", text: "fair" }) : null,
        );
        pause.textContent = q.paused ? "Resume" : "Pause";
        pause.dataset.action = q.paused ? "resume" : "pause";
        retryDead.textContent = `Retry dead (${fmtNumber(q.depth.dead)})`;
        retryDead.disabled = q.depth.dead === 0;
        // the bar is the backlog (what is still to run); dead and cancelled are history
        const backlog = DEPTH.filter(([key]) => BACKLOG.has(key) && q.depth[key] > 0);
        const total = backlog.reduce((sum, [key]) => sum + q.depth[key], 0);
        bar.title = `${fmtNumber(total)} job(s) not finished`;
        fill(bar, ...backlog.map(([key]) => {
          const part = h("span", { class: `seg seg-${key}`, title: `${key}: ${q.depth[key]}` });
          part.style.flexGrow = String(q.depth[key] / total);
          return part;
        }));
        fill(counts, ...DEPTH.map(([key, status, meaning]) =>
          h("div", { class: `count count-${key}`, title: meaning },
            h("dt", null, h("span", { class: `dot seg-${key}` }), key),
            h("dd", null, jobsLink({ queue: name, status }, fmtNumber(q.depth[key]))))));
        fill(facts,
          h("div", null, h("dt", { text: "oldest pending" }),
            h("dd", { class: q.oldest_pending_seconds > 60 ? "warn" : "", text: q.oldest_pending_seconds === null ? "—" : fmtDuration(q.oldest_pending_seconds) })),
          h("div", null, h("dt", { text: "last minute" }),
            h("dd", null, `${fmtNumber(q.completed_last_minute)} done · `,
              h("span", { class: q.failed_last_minute ? "bad" : "", text: `${fmtNumber(q.failed_last_minute)} failed` }))),
          h("div", null, h("dt", { text: "workers" }),
            h("dd", null, h("a", { href: "#/workers", text: `${q.workers.length} live` }))),
          h("div", null, h("dt", { text: "limits" }), h("dd", { text: limitsText(q.limits) })),
        );
      }
      return { root, update, charts };
    }

    async function refresh() {
      const [data] = await Promise.all([get("queues"), series.fetch()]);
      const queues = data.queues;
      empty.hidden = queues.length > 0;
      const sum = (key) => queues.reduce((total, q) => total + q.depth[key], 0);
      fill(totals,
        ...[["pending", "PENDING"], ["running", "RUNNING"], ["retry", "RETRY"], ["dead", "DEAD"]].map(([key, status]) =>
          h("div", { class: `total total-${key}` }, h("span", { class: "total-label", text: key }),
            jobsLink({ status }, fmtNumber(sum(key))))),
        h("div", { class: "total" }, h("span", { class: "total-label", text: "done / last min" }),
          h("span", { text: fmtNumber(queues.reduce((t, q) => t + q.completed_last_minute, 0)) })),
        h("div", { class: "total total-failed" }, h("span", { class: "total-label", text: "failed / last min" }),
          h("span", { text: fmtNumber(queues.reduce((t, q) => t + q.failed_last_minute, 0)) })),
      );
      const names = new Set(queues.map((q) => q.name));
      for (const [name, card] of cards) {
        if (!names.has(name)) {
          card.root.remove();
          cards.delete(name);
        }
      }
      queues.forEach((q, i) => {
        if (!cards.has(q.name)) cards.set(q.name, queueCard(q.name));
        const card = cards.get(q.name);
        card.update(q);
        if (grid.children[i] !== card.root) grid.insertBefore(card.root, grid.children[i] || null);
      });
      redraw();
    }

    function redraw() {
      drawCharts(allCharts, series, null);
      for (const [name, card] of cards) drawCharts(card.charts, series, name);
    }

    return { refresh, resize: redraw };
  }

  function jobsPage(main, params) {
    const filters = {
      status: params.get("status") || "",
      queue: params.get("queue") || "",
      type: params.get("type") || "",
      limit: PAGE_SIZES.includes(Number(params.get("limit"))) ? params.get("limit") : "50",
    };
    const cursor = params.get("cursor");
    const status = h("select", { name: "status", id: "f-status" },
      h("option", { value: "", text: "any status" }),
      STATUSES.map((st) => h("option", { value: st, text: st, selected: st === filters.status })));
    const queueList = h("datalist", { id: "queue-names" });
    const queue = h("input", { name: "queue", id: "f-queue", list: "queue-names", value: filters.queue, placeholder: "any queue", autocomplete: "off", spellcheck: "false" });
    const type = h("input", { name: "type", id: "f-type", value: filters.type, placeholder: "any type", autocomplete: "off", spellcheck: "false" });
    const limit = h("select", { name: "limit", id: "f-limit" },
      PAGE_SIZES.map((n) => h("option", { value: n, text: `${n} per page`, selected: String(n) === filters.limit })));
    const form = h("form", { class: "filters", role: "search" },
      h("label", null, h("span", { text: "Status" }), status),
      h("label", null, h("span", { text: "Queue" }), queue, queueList),
      h("label", null, h("span", { text: "Type" }), type),
      h("label", null, h("span", { text: "Page size" }), limit),
      h("div", { class: "filter-buttons" },
        h("button", { type: "submit", class: "primary", text: "Filter" }),
        h("a", { href: "#/jobs", class: "button ghost", text: "Clear" })));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const next = { status: status.value, queue: queue.value.trim(), type: type.value.trim(), limit: limit.value === "50" ? "" : limit.value };
      navigate("/jobs", next);
    });
    const body = h("tbody");
    const table = h("table", { class: "jobs-table" },
      h("thead", null, h("tr", null,
        ["Job", "Type", "Queue", "Status", "Attempts", "Created", "Finished", "Last error", ""].map((t) => h("th", { text: t })))),
      body);
    const pager = h("div", { class: "pager" });
    const note = h("p", { class: "muted", hidden: true });
    main.append(heading("Jobs"), form, h("div", { class: "table-wrap" }, table), note, pager);

    const base = { status: filters.status, queue: filters.queue, type: filters.type, limit: filters.limit === "50" ? "" : filters.limit };
    followTrail(JSON.stringify(base), cursor);
    let lastSignature = "";
    let queueNames = null;

    function row(job) {
      const actions = [];
      if (!FINAL.has(job.status)) {
        actions.push(actionButton("Cancel", { class: "small danger", dataset: { action: "cancel" } }, (button) =>
          act(button, `Cancel ${shortId(job.id)}`, () => post(`jobs/${job.id}/cancel`), (j) => `Job ${shortId(j.id)} is ${j.status}`)));
      }
      if (job.status === "DEAD" || job.status === "CANCELLED") {
        actions.push(actionButton("Retry", { class: "small", dataset: { action: "retry" } }, (button) =>
          act(button, `Retry ${shortId(job.id)}`, () => post(`jobs/${job.id}/retry`), (j) => `Job ${shortId(j.id)} is ${j.status} again`)));
      }
      const cell = (label, ...content) => h("td", { "data-label": label }, ...content);
      return h("tr", { dataset: { job: job.id, status: job.status } },
        cell("Job", h("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, class: "mono", title: job.id, text: shortId(job.id) })),
        cell("Type", h("span", { class: "mono", text: job.type })),
        cell("Queue", job.queue),
        cell("Status", badge(job.status)),
        cell("Attempts", `${job.attempts} / ${job.max_attempts}`),
        cell("Created", timeEl(job.created_at)),
        cell("Finished", timeEl(job.finished_at)),
        job.last_error
          ? cell("Last error", h("span", { class: "error-line", title: job.last_error, text: summaryLine(job.last_error) }))
          : h("td", { "data-label": "Last error", class: "is-empty" }),
        h("td", { class: "row-actions" }, actions));
    }

    async function refresh() {
      const query = new URLSearchParams();
      for (const key of ["status", "queue", "type"]) if (filters[key]) query.set(key, filters[key]);
      query.set("limit", filters.limit);
      if (cursor) query.set("cursor", cursor);
      const page = await get(`jobs?${query}`);
      if (!queueNames) {
        // the queue field's suggestions, once per visit (no error if they cannot be had)
        queueNames = get("queues").then(
          (data) => fill(queueList, ...data.queues.map((q) => h("option", { value: q.name }))),
          () => null,
        );
      }
      const signature = JSON.stringify(page);
      if (signature === lastSignature) return;
      lastSignature = signature;
      fill(body, ...page.jobs.map(row));
      note.hidden = page.jobs.length > 0;
      note.textContent = page.next_cursor
        ? "No matching job on this page (a filtered page examines a bounded number of jobs): the next page may have more."
        : "No matching job.";
      const buttons = [];
      if (cursor) buttons.push(h("a", { class: "button", href: hashFor("/jobs", base), text: "« First page" }));
      if (trail.length) {
        buttons.push(actionButton("‹ Previous", { dataset: { action: "previous" } }, () => {
          navigate("/jobs", { ...base, cursor: trail.pop().from });
        }));
      }
      if (page.next_cursor) {
        buttons.push(actionButton("Next page ›", { class: "primary", dataset: { action: "next" } }, () => {
          trail.push({ from: cursor || "", to: page.next_cursor });
          navigate("/jobs", { ...base, cursor: page.next_cursor });
        }));
      }
      fill(pager,
        h("span", { class: "muted", text: `${page.jobs.length} job${page.jobs.length === 1 ? "" : "s"} on this page${cursor ? "" : " (newest first)"}` }),
        ...buttons);
    }
    return { refresh };
  }

  // The pages walked through with "Next" ({from, to} cursors), for "Previous": the API
  // pages forward only. Kept while the filters stay and the page shown is the last `to`
  // (browser back and forward trim it); anything else starts it afresh.
  const trail = [];

  function followTrail(key, cursor) {
    if (!cursor || trail.key !== key) {
      trail.length = 0;
      trail.key = key;
      return;
    }
    while (trail.length && trail[trail.length - 1].to !== cursor) trail.pop();
  }

  // Attempts from a job's events: a RUNNING event opens one, the next event of the same
  // attempt number closes it (a retried job counts its attempts from 1 again).
  function attemptsOf(events) {
    const attempts = [];
    let open = null;
    for (const event of events) {
      if (event.status === "RUNNING") {
        open = { attempt: event.attempt, started: event.at, worker: event.worker, end: null };
        attempts.push(open);
      } else if (open && event.attempt === open.attempt && event.status !== "PENDING") {
        open.end = event;
        open.worker = open.worker || event.worker;
        open = null;
      } else if (open && event.attempt === open.attempt) {
        open.end = event; // released back to the queue at shutdown
        open = null;
      }
    }
    return attempts;
  }

  function jobPage(main, params, match) {
    const id = match[1];
    const frame = h("div", { class: "job" });
    main.append(h("p", { class: "back" }, h("a", { href: "#/jobs", text: "‹ Jobs" })), frame);
    let lastSignature = "";
    const openErrors = new Set();

    function render(job) {
      const actions = [];
      if (!FINAL.has(job.status)) {
        actions.push(actionButton("Cancel", { class: "danger", dataset: { action: "cancel" } }, (button) =>
          act(button, "Cancel", () => post(`jobs/${encodeURIComponent(id)}/cancel`), (j) => `Job ${shortId(j.id)} is ${j.status}`)));
      }
      if (job.status === "DEAD" || job.status === "CANCELLED") {
        actions.push(actionButton("Retry", { class: "primary", dataset: { action: "retry" } }, (button) =>
          act(button, "Retry", () => post(`jobs/${encodeURIComponent(id)}/retry`), (j) => `Job ${shortId(j.id)} is ${j.status} again`)));
      }
      const fact = (label, ...value) => h("div", null, h("dt", { text: label }), h("dd", null, ...value));
      const attempts = attemptsOf(job.events);
      const attemptRows = attempts.map((a, i) => {
        const end = a.end;
        const duration = end ? (Date.parse(end.at) - Date.parse(a.started)) / 1000 : (serverNow() - Date.parse(a.started)) / 1000;
        const key = `${i}:${a.started}`;
        let error = null;
        if (end && end.error) {
          error = h("details", { class: "traceback", open: openErrors.has(key) },
            h("summary", { text: summaryLine(end.error, 200) }), h("pre", { text: end.error }));
          error.addEventListener("toggle", () => (error.open ? openErrors.add(key) : openErrors.delete(key)));
        }
        return h("tr", { dataset: { attempt: i + 1 } },
          h("td", { "data-label": "#", text: `${i + 1}` }),
          h("td", { "data-label": "Attempt", text: `${a.attempt}` }),
          h("td", { "data-label": "Outcome" }, end ? badge(end.status) : badge("RUNNING")),
          h("td", { "data-label": "Started" }, timeEl(a.started, { showRelative: false })),
          h("td", { "data-label": "Ended" }, end ? timeEl(end.at, { showRelative: false }) : h("span", { class: "muted", text: "running" })),
          h("td", { "data-label": "Took", text: fmtDuration(duration) }),
          h("td", { "data-label": "Worker", class: "mono", text: a.worker || "—" }),
          h("td", { "data-label": "Error", class: "error-cell" }, error || h("span", { class: "muted", text: "—" })));
      });
      const historyRows = job.events.map((e) =>
        h("tr", null,
          h("td", { "data-label": "At" }, timeEl(e.at, { showRelative: false })),
          h("td", { "data-label": "Status" }, badge(e.status)),
          h("td", { "data-label": "Attempt", text: `${e.attempt}` }),
          h("td", { "data-label": "Worker", class: "mono", text: e.worker || "—" }),
          h("td", { "data-label": "Note", class: "error-line", title: e.error || "", text: summaryLine(e.error) || "" })));
      fill(frame,
        heading(job.type, badge(job.status), h("div", { class: "actions" }, actions)),
        h("p", { class: "mono muted job-id", text: job.id }),
        h("dl", { class: "facts job-facts" },
          fact("queue", jobsLink({ queue: job.queue }, job.queue)),
          fact("attempts", `${job.attempts} of ${job.max_attempts}`),
          fact("priority", String(job.priority)),
          fact("created", timeEl(job.created_at)),
          fact("due", timeEl(job.run_after)),
          fact("started", timeEl(job.started_at)),
          fact("finished", timeEl(job.finished_at)),
          fact("updated", timeEl(job.updated_at)),
          fact("worker", job.locked_by ? h("span", { class: "mono", text: job.locked_by }) : "—"),
          fact("time limit", job.timeout_seconds ? fmtDuration(job.timeout_seconds) : "—"),
          fact("concurrency key", job.concurrency_key === null ? "—" : h("span", { class: "mono", text: job.concurrency_key })),
          fact("fair key", job.fair_key === null ? "—" : h("span", { class: "mono", text: job.fair_key })),
          fact("idempotency key", job.idempotency_key === null ? "—" : h("span", { class: "mono", text: job.idempotency_key })),
          fact("waiting for", job.waiting_for ? `${job.waiting_for} job(s)` : "—"),
          fact("depends on", job.depends_on.length ? job.depends_on.map((d) => h("a", { href: `#/jobs/${encodeURIComponent(d)}`, class: "mono dep", text: shortId(d) })) : "—")),
        h("section", { class: "card" }, h("h2", { text: "Payload" }), h("pre", { class: "json", text: jsonText(job.payload) })),
        job.result !== null || job.status === "COMPLETED"
          ? h("section", { class: "card" }, h("h2", { text: "Result" }), h("pre", { class: "json", text: jsonText(job.result) }))
          : null,
        job.last_error
          ? h("section", { class: "card" }, h("h2", { text: "Last error" }), h("pre", { class: "error-text", text: job.last_error }))
          : null,
        h("section", { class: "card" }, h("h2", { text: `Attempts (${attempts.length})` }),
          attempts.length
            ? h("div", { class: "table-wrap" }, h("table", { class: "attempts-table" },
                h("thead", null, h("tr", null, ["#", "Attempt", "Outcome", "Started", "Ended", "Took", "Worker", "Error"].map((t) => h("th", { text: t })))),
                h("tbody", null, attemptRows)))
            : h("p", { class: "muted", text: "Not run yet." })),
        h("section", { class: "card" }, h("h2", { text: "History" }),
          h("div", { class: "table-wrap" }, h("table", { class: "history-table" },
            h("thead", null, h("tr", null, ["At", "Status", "Attempt", "Worker", "Note"].map((t) => h("th", { text: t })))),
            h("tbody", null, historyRows)))),
      );
    }

    let missing = false; // asked again, it would be missing again
    async function refresh() {
      if (missing) return;
      let job;
      try {
        job = await get(`jobs/${encodeURIComponent(id)}`);
      } catch (error) {
        if (error.status === 404 || error.status === 400) {
          missing = true;
          document.title = "No such job · aqueue";
          fill(frame, h("h1", { text: "No such job" }), h("p", { class: "muted", text: error.message }));
          return;
        }
        throw error;
      }
      const signature = JSON.stringify(job);
      if (signature === lastSignature) return;
      lastSignature = signature;
      render(job);
    }
    return { refresh };
  }

  function schedulesPage(main) {
    const body = h("tbody");
    const empty = h("p", { class: "muted", hidden: true },
      "No schedules. Create one with POST /schedules, `aqueue schedules add` or registry.schedule().");
    main.append(
      heading("Schedules"),
      h("div", { class: "table-wrap" }, h("table", { class: "schedules-table" },
        h("thead", null, h("tr", null, ["Name", "Cron", "Job", "State", "Next run", "Last run", "Source", ""].map((t) => h("th", { text: t })))),
        body)),
      empty);
    let lastSignature = "";

    function row(sc) {
      const toggle = actionButton(sc.enabled ? "Disable" : "Enable", { class: "small", dataset: { action: sc.enabled ? "disable" : "enable" } }, (button) =>
        act(button, `${sc.enabled ? "Disable" : "Enable"} ${sc.name}`,
          () => api("PATCH", `schedules/${encodeURIComponent(sc.id)}`, { enabled: !sc.enabled }),
          (result) => `Schedule ${result.name} ${result.enabled ? "enabled" : "disabled"}`));
      const cell = (label, ...content) => h("td", { "data-label": label }, ...content);
      return h("tr", { dataset: { schedule: sc.id, name: sc.name }, class: sc.enabled ? "" : "is-disabled" },
        cell("Name", h("strong", { text: sc.name })),
        cell("Cron", h("span", { class: "mono", text: sc.cron }), " ", h("span", { class: "muted", text: sc.timezone })),
        cell("Job", jobsLink({ type: sc.type, queue: sc.queue }, h("span", { class: "mono", text: sc.type })), h("span", { class: "muted", text: ` on ${sc.queue}` })),
        cell("State", h("span", { class: `badge ${sc.enabled ? "enabled" : "disabled"}`, text: sc.enabled ? "enabled" : "disabled" })),
        cell("Next run", sc.enabled ? timeEl(sc.next_run_at) : h("span", { class: "muted", text: "— (disabled)" })),
        cell("Last run", timeEl(sc.last_run_at)),
        cell("Source", sc.source),
        h("td", { class: "row-actions" }, toggle));
    }

    async function refresh() {
      const data = await get("schedules");
      const signature = JSON.stringify(data);
      if (signature === lastSignature) return;
      lastSignature = signature;
      empty.hidden = data.schedules.length > 0;
      fill(body, ...data.schedules.map(row));
    }
    return { refresh };
  }

  function workersPage(main) {
    const summary = h("div", { class: "totals" });
    const body = h("tbody");
    const empty = h("p", { class: "muted", hidden: true }, "No aqueue process has reported in the last day.");
    main.append(
      heading("Workers"),
      summary,
      h("div", { class: "table-wrap" }, h("table", { class: "workers-table" },
        h("thead", null, h("tr", null, ["Process", "State", "Host", "PID", "Version", "Roles", "Queues", "Running", "Started", "Last heartbeat"].map((t) => h("th", { text: t })))),
        body)),
      empty);
    let lastSignature = "";

    async function refresh() {
      const data = await get("workers");
      const signature = JSON.stringify(data);
      if (signature === lastSignature) return;
      lastSignature = signature;
      const workers = data.workers;
      const count = (state) => workers.filter((w) => w.state === state).length;
      const running = workers.filter((w) => w.state === "alive").reduce((t, w) => t + w.running, 0);
      fill(summary,
        ...["alive", "lost", "stopped"].map((state) =>
          h("div", { class: `total total-${state}` }, h("span", { class: "total-label", text: state }), h("span", { text: fmtNumber(count(state)) }))),
        h("div", { class: "total" }, h("span", { class: "total-label", text: "running jobs" }), jobsLink({ status: "RUNNING" }, fmtNumber(running))),
      );
      empty.hidden = workers.length > 0;
      const order = { alive: 0, lost: 1, stopped: 2 };
      const sorted = [...workers].sort((a, b) => (order[a.state] ?? 3) - (order[b.state] ?? 3));
      fill(body, ...sorted.map((w) => {
        const cell = (label, ...content) => h("td", { "data-label": label }, ...content);
        const queues = Object.entries(w.queues || {}).map(([q, n]) => `${q}:${n}`).join(", ");
        return h("tr", { dataset: { worker: w.id, state: w.state }, class: `state-${w.state === "alive" || w.state === "lost" || w.state === "stopped" ? w.state : "other"}` },
          cell("Process", h("span", { class: "mono nowrap", text: w.id })),
          cell("State", h("span", { class: `badge worker-${w.state === "alive" || w.state === "lost" || w.state === "stopped" ? w.state : "other"}`, text: w.state })),
          cell("Host", h("span", { class: "nowrap", text: w.host })),
          cell("PID", String(w.pid)),
          cell("Version", h("span", { class: "nowrap", text: w.version })),
          cell("Roles", (w.roles || []).join(", ")),
          cell("Queues", queues || "—"),
          cell("Running", String(w.running)),
          cell("Started", timeEl(w.started_at)),
          cell("Last heartbeat", w.stopped_at ? h("span", null, "stopped ", timeEl(w.stopped_at)) : timeEl(w.last_heartbeat)));
      }));
    }
    return { refresh };
  }

  // --- routing and the refresh loop --------------------------------------------------------

  const ROUTES = [
    [/^\/?$/, "overview", overviewPage],
    [/^\/jobs\/([^/?]+)$/, "jobs", jobPage],
    [/^\/jobs$/, "jobs", jobsPage],
    [/^\/schedules$/, "schedules", schedulesPage],
    [/^\/workers$/, "workers", workersPage],
  ];

  function hashFor(path, params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params || {})) if (value) query.set(key, value);
    const q = query.toString();
    return `#${path}${q ? `?${q}` : ""}`;
  }

  function navigate(path, params) {
    const hash = hashFor(path, params);
    // Loading from the click on, not from the hashchange event a moment later: whatever
    // waits for the page to be ready (a test, a screen reader) never takes the old one.
    $("#main").dataset.state = "loading";
    if (location.hash === hash) route();
    else location.hash = hash;
  }

  let current = null; // { name, page, generation }
  let generation = 0;
  let timer = null;
  let live = true;
  let refreshing = false;
  let again = false;
  let lastOk = null;

  // --- signing in: with authentication on, any 401 shows the form --------------------------

  let signingIn = false;

  function setSession(session) {
    const box = $("#session");
    const signedIn = Boolean(session && session.auth);
    box.hidden = !signedIn;
    $("#session-name").textContent = signedIn ? `${session.name} (${session.scopes.join(", ")})` : "";
  }

  function showSignIn() {
    if (signingIn) return;
    signingIn = true;
    clearTimeout(timer);
    current = null;
    generation += 1;
    setSession(null);
    setLiveState("signed out", true);
    document.title = "Sign in · aqueue";
    const main = $("#main");
    main.dataset.page = "sign-in";
    main.dataset.state = "ready";
    for (const link of document.querySelectorAll("[data-nav]")) link.classList.remove("current");
    const input = h("input", {
      id: "token", name: "token", type: "password", autocomplete: "off", spellcheck: "false", required: true,
    });
    const problem = h("p", { class: "notice notice-error sign-in-error", role: "alert", hidden: true });
    const button = h("button", { type: "submit", class: "primary", text: "Sign in" });
    const form = h("form", { class: "sign-in card" },
      h("h1", { text: "Sign in" }),
      h("p", { class: "muted", text: "This server asks for an API token (aqueue tokens create NAME --scopes read,admin). " +
        "It is kept in an HTTP-only cookie of this site, never in an address." }),
      h("label", { for: "token", text: "API token" }), input, problem, button);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      try {
        const session = await api("POST", "session", { token: input.value.trim() });
        input.value = "";
        signingIn = false;
        setSession(session);
        route();
      } catch (error) {
        problem.hidden = false;
        problem.textContent = error.status === 401 ? "That token is unknown, revoked or expired." : error.message;
      } finally {
        button.disabled = false;
      }
    });
    fill(main, form);
    input.focus();
  }

  function route() {
    signingIn = false;
    const raw = location.hash.replace(/^#/, "") || "/";
    const [path, query = ""] = raw.split("?");
    const params = new URLSearchParams(query);
    const main = $("#main");
    generation += 1;
    fill(main);
    main.dataset.state = "loading";
    for (const [pattern, name, build] of ROUTES) {
      const match = path.match(pattern);
      if (!match) continue;
      main.dataset.page = match.length > 1 ? "job" : name;
      for (const link of document.querySelectorAll("[data-nav]")) {
        link.classList.toggle("current", link.dataset.nav === name);
      }
      current = { name, page: build(main, params, match), generation };
      refreshNow();
      return;
    }
    main.dataset.page = "missing";
    current = null;
    document.title = "Not found · aqueue";
    main.append(h("h1", { text: "Not found" }), h("p", null, "No such page: ", h("a", { href: "#/", text: "go to the overview" })));
    main.dataset.state = "ready";
  }

  function setLiveState(text, bad = false) {
    const state = $("#live-state");
    state.textContent = text;
    state.classList.toggle("bad", bad);
  }

  // A failure the next poll may not see (the server or the network): not a 4xx, which
  // says the request itself is wrong and would be refused again.
  const transient = (error) => !(error.status >= 400 && error.status < 500) || error.status === 429;

  async function refreshNow() {
    clearTimeout(timer);
    if (refreshing) {
      again = true;
      return;
    }
    const target = current;
    if (!target) return;
    const main = $("#main");
    let retry = true;
    refreshing = true;
    try {
      await target.page.refresh();
      if (target.generation === generation) {
        main.dataset.state = "ready";
        const failed = $(".load-error", main);
        if (failed) failed.remove();
        lastOk = Date.now();
        setLiveState(`${live ? "live" : "paused"} · updated ${fmtTime(new Date().toISOString()).slice(11)}`);
      }
    } catch (error) {
      if (error.status === 401) {
        retry = false;
        showSignIn();
      } else if (target.generation === generation) {
        retry = transient(error);
        if (retry) {
          const when = lastOk ? `; last update ${fmtTime(new Date(lastOk).toISOString()).slice(11)}` : "";
          setLiveState(`update failed (${error.message})${when}; retrying`, true);
        }
        if (main.dataset.state !== "ready") {
          main.dataset.state = "error";
          let box = $(".load-error", main);
          if (!box) {
            box = h("p", { class: "notice notice-error load-error", role: "alert" });
            main.append(box);
          }
          box.textContent = `Could not load this page: ${error.message}${retry ? ". Retrying…" : ""}`;
        }
      }
    } finally {
      refreshing = false;
      if (again) {
        again = false;
        refreshNow();
      } else if (retry || target.generation !== generation) {
        schedule();
      }
    }
  }

  function schedule() {
    clearTimeout(timer);
    if (live && !document.hidden) timer = setTimeout(refreshNow, POLL_MS);
  }

  // No polling while the tab is hidden; a tab shown again is brought up to date at once.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(timer);
    else if (live) refreshNow();
  });

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => current && current.page.resize && current.page.resize(), 150);
  });

  function start() {
    const toggle = $("#live-toggle");
    toggle.addEventListener("click", () => {
      live = !live;
      toggle.textContent = live ? "Pause updates" : "Resume updates";
      toggle.setAttribute("aria-pressed", String(live));
      if (live) refreshNow();
      else {
        clearTimeout(timer);
        setLiveState("paused");
      }
    });
    $("#sign-out").addEventListener("click", async () => {
      try {
        await api("DELETE", "session");
      } finally {
        showSignIn();
      }
    });
    window.addEventListener("hashchange", route);
    setInterval(tickRelativeTimes, 1000);
    // who is signed in, for the header; a 401 here is left to the page's own request
    api("GET", "session").then(setSession, () => setSession(null));
    route();
  }

  start();
})();
