// edgeshard inspector: plain JavaScript, no build step, no dependency.
//
// Pages are fragments of one page: #/ (bindings), #/b/{binding} (charts and
// active shards), #/b/{binding}/s/{shard} (storage and log tail). Every
// value that comes from a shard (keys, values, log lines) is untrusted: it
// is only ever written as text (textContent), never as markup.
"use strict";

(function () {
  const view = document.getElementById("view");
  const crumbs = document.getElementById("crumbs");
  const status = document.getElementById("status");
  let timers = [];      // intervals of the current page
  let generation = 0;   // bumped on navigation: stale answers are dropped

  // ---- DOM helpers -------------------------------------------------------

  // el builds an element: attrs are properties or data-*/aria-* attributes;
  // children are nodes or strings (as text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("data-") || k.startsWith("aria-") || k === "for" || k === "role") e.setAttribute(k, v);
      else if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e[k] = v;
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const text = (s) => document.createTextNode(s);

  function setStatus(msg, isError) {
    status.textContent = msg;
    status.className = isError ? "error" : "";
  }

  // ---- API ---------------------------------------------------------------

  async function api(path, opts) {
    opts = opts || {};
    const headers = { "Accept": "application/json" };
    if (opts.method && opts.method !== "GET") {
      headers["X-Edgeshard-Inspector"] = "1";
      headers["Content-Type"] = "application/json";
    }
    const resp = await fetch(path, { method: opts.method || "GET", headers, body: opts.body, credentials: "same-origin", cache: "no-store" });
    if (resp.status === 401) {
      window.location.assign("/login");
      throw new Error("logged out");
    }
    const body = resp.status === 204 ? null : await resp.json().catch(() => null);
    if (!resp.ok) {
      const msg = body && body.error ? body.error.message + " (" + body.error.code + ")" : resp.status + " " + resp.statusText;
      throw new Error(msg);
    }
    return body;
  }

  const enc = encodeURIComponent;
  const bindingPath = (b) => "/admin/bindings/" + enc(b);
  const shardPath = (b, s) => bindingPath(b) + "/shards/" + enc(s);

  // ---- formatting --------------------------------------------------------

  function short(sha) { return sha && sha.length > 12 ? sha.slice(0, 12) : (sha || "—"); }
  function bytes(n) {
    if (n === undefined || n === null) return "—";
    const u = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + u[i];
  }
  function pad(n, w) { return String(n).padStart(w || 2, "0"); }
  function clock(d) { return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()); }
  function dateTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + clock(d);
  }
  function ago(iso) {
    if (!iso) return "—";
    let s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    const future = s < 0;
    s = Math.abs(s);
    let t;
    if (s < 60) t = s + "s";
    else if (s < 3600) t = Math.floor(s / 60) + "m " + (s % 60) + "s";
    else if (s < 86400) t = Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    else t = Math.floor(s / 86400) + "d";
    return future ? "in " + t : t + " ago";
  }
  function timeCell(iso) {
    return el("td", { title: iso ? dateTime(iso) : "" }, ago(iso));
  }
  function num(n, digits) {
    if (n === null || n === undefined) return "—";
    if (digits === undefined) digits = n >= 100 ? 0 : n >= 10 ? 1 : 2;
    return n.toLocaleString(undefined, { maximumFractionDigits: digits });
  }
  function b64ToBytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function hexDump(u8) {
    const lines = [];
    for (let off = 0; off < u8.length; off += 16) {
      const row = u8.subarray(off, off + 16);
      let hex = "", ascii = "";
      for (let i = 0; i < 16; i++) {
        if (i < row.length) {
          hex += row[i].toString(16).padStart(2, "0") + " ";
          ascii += row[i] >= 0x20 && row[i] < 0x7f ? String.fromCharCode(row[i]) : ".";
        } else hex += "   ";
        if (i === 7) hex += " ";
      }
      lines.push(off.toString(16).padStart(8, "0") + "  " + hex + " |" + ascii + "|");
    }
    return lines.join("\n") || "(empty)";
  }

  // ---- charts ------------------------------------------------------------

  const chartDefs = [
    { key: "rps", label: "Requests/s", color: "#2f6fdb" },
    { key: "p99_ms", label: "p99 (ms)", color: "#8a4fd8" },
    { key: "flushes", label: "Flushes/s", color: "#1f8a4c" },
    { key: "fallbacks", label: "Fallbacks/s", color: "#b26b00" },
    { key: "errors", label: "Errors/s", color: "#b4232c" },
  ];

  // niceMax is the y axis' top: a round number whose quarters are round.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 4, 6, 8, 10]) if (v <= m * p * 1.0001) return m * p;
    return 10 * p;
  }

  function spanLabel(ms) {
    const s = Math.round(ms / 1000);
    if (s < 120) return s + "s";
    const m = s / 60;
    return (Math.round(m * 10) / 10) + "m";
  }

  // drawChart draws values (null: a gap) against times t (unix ms) ending
  // now, with a zero-based y axis. The x axis spans the samples there are
  // (at least ten intervals), up to the whole window.
  function drawChart(canvas, t, values, color, windowMs, intervalMs, opts) {
    opts = opts || {};
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 300, h = canvas.clientHeight || 120;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    const g = canvas.getContext("2d");
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, h);
    const left = opts.spark ? 1 : 38, right = opts.spark ? 1 : 6, top = opts.spark ? 2 : 6, bottom = opts.spark ? 2 : 18;
    const pw = w - left - right, ph = h - top - bottom;
    const now = t.length ? Math.max(Date.now(), t[t.length - 1]) : Date.now();
    const span = t.length ? Math.min(windowMs, Math.max(now - t[0] + intervalMs, 10 * intervalMs)) : windowMs;
    const t0 = now - span;
    let vmax = 0, points = 0;
    values.forEach((v) => { if (v !== null && v !== undefined) { vmax = Math.max(vmax, v); points++; } });
    const ymax = niceMax(vmax);
    const x = (ts) => left + ((ts - t0) / span) * pw;
    const y = (v) => top + ph - (v / ymax) * ph;
    if (!opts.spark) {
      g.strokeStyle = "#e6eaf0";
      g.fillStyle = "#7a8796";
      g.lineWidth = 1;
      g.font = "10px system-ui, sans-serif";
      g.textAlign = "right";
      g.textBaseline = "middle";
      for (let i = 0; i <= 4; i++) {
        const v = (ymax * i) / 4, yy = Math.round(y(v)) + 0.5;
        g.beginPath(); g.moveTo(left, yy); g.lineTo(w - right, yy); g.stroke();
        g.fillText(num(v, ymax < 4 ? 2 : ymax < 40 ? 1 : 0), left - 4, yy);
      }
      g.textAlign = "center";
      g.textBaseline = "top";
      for (let i = 0; i <= 4; i++) {
        const ts = t0 + (span * i) / 4;
        const label = i === 4 ? "now" : "-" + spanLabel((span * (4 - i)) / 4);
        g.fillText(label, Math.min(Math.max(x(ts), left + 10), w - right - 12), top + ph + 4);
      }
    }
    g.strokeStyle = color;
    g.lineWidth = opts.spark ? 1.2 : 1.6;
    g.lineJoin = "round";
    g.beginPath();
    let pen = false;
    for (let i = 0; i < t.length; i++) {
      const v = values[i];
      if (v === null || v === undefined || t[i] < t0) { pen = false; continue; }
      if (!pen) { g.moveTo(x(t[i]), y(v)); pen = true; } else g.lineTo(x(t[i]), y(v));
    }
    g.stroke();
    if (!points && !opts.spark) {
      g.fillStyle = "#9aa6b4"; g.textAlign = "center"; g.textBaseline = "middle";
      g.fillText("no data yet", left + pw / 2, top + ph / 2);
    }
    canvas.dataset.points = String(points);
  }

  function chartCards(series) {
    return chartDefs.map((d) => {
      const canvas = el("canvas", { class: "chart", "data-series": d.key, "data-points": "0", "aria-label": d.label });
      const value = el("span", { class: "value" });
      return { def: d, canvas, value, node: el("div", { class: "chart-card" }, el("div", { class: "title" }, d.label, value), canvas) };
    });
  }

  function lastValue(vals) {
    for (let i = vals.length - 1; i >= 0; i--) if (vals[i] !== null) return vals[i];
    return null;
  }

  function updateCharts(cards, se, windowMs, intervalMs) {
    for (const c of cards) {
      const vals = se ? se[c.def.key] : [];
      const t = se ? se.t : [];
      drawChart(c.canvas, t, vals, c.def.color, windowMs, intervalMs);
      const last = lastValue(vals);
      c.value.textContent = last === null ? "—" : num(last);
    }
  }

  // ---- navigation --------------------------------------------------------

  function every(ms, fn) {
    const gen = generation;
    const tick = () => { if (gen === generation) fn(); };
    timers.push(setInterval(tick, ms));
  }

  function setCrumbs(parts) {
    const nodes = [];
    parts.forEach((p, i) => {
      if (i) nodes.push(el("span", { class: "sep" }, "/"));
      nodes.push(p.href ? el("a", { href: p.href }, p.label) : el("span", {}, p.label));
    });
    crumbs.replaceChildren(...nodes);
  }

  function route() {
    timers.forEach(clearInterval);
    timers = [];
    generation++;
    const parts = (window.location.hash.replace(/^#\/?/, "") || "").split("/").map(decodeURIComponent);
    setStatus("");
    if (parts[0] === "b" && parts[1] && parts[2] === "s" && parts.length >= 4) {
      shardPage(parts[1], parts.slice(3).join("/"));
    } else if (parts[0] === "b" && parts[1]) {
      bindingPage(parts[1]);
    } else {
      overviewPage();
    }
  }

  function guard(gen, fn) {
    return (...args) => { if (gen === generation) return fn(...args); };
  }

  function failed(err) {
    setStatus(err.message, true);
  }

  // ---- page: bindings ----------------------------------------------------

  function historyTable(rows, withBinding) {
    const body = el("tbody");
    if (!rows.length) body.append(el("tr", {}, el("td", { class: "empty", colSpan: withBinding ? 7 : 6 }, "No swap or rollback since the host started.")));
    for (const r of rows) {
      body.append(el("tr", {},
        el("td", { class: "nowrap", title: r.time }, dateTime(r.time)),
        withBinding ? el("td", {}, el("a", { href: "#/b/" + enc(r.binding) }, r.binding)) : null,
        el("td", {}, r.action),
        el("td", {}, el("span", { class: "pill " + r.outcome }, r.outcome.replace("_", " "))),
        el("td", { class: "mono", title: (r.from || "") + " → " + (r.to || "") }, short(r.from) + " → " + (r.to ? short(r.to) : "—")),
        el("td", { class: "mono" }, r.source),
        el("td", {}, r.error || "")));
    }
    return el("table", { class: "history" },
      el("thead", {}, el("tr", {}, el("th", {}, "Time"), withBinding ? el("th", {}, "Binding") : null, el("th", {}, "Action"), el("th", {}, "Outcome"),
        el("th", {}, "From → to"), el("th", {}, "Source"), el("th", {}, "Error"))),
      body);
  }

  function overviewPage() {
    setCrumbs([{ label: "Bindings" }]);
    const gen = generation;
    const tbody = el("tbody");
    const history = el("div");
    const sparks = new Map();
    view.replaceChildren(
      el("h2", {}, "Bindings", el("span", { class: "sub" }, "module versions, shards and load; click a binding for its charts and shards")),
      el("table", { id: "bindings" },
        el("thead", {}, el("tr", {},
          el("th", {}, "Binding"), el("th", {}, "Module"), el("th", { class: "num" }, "Size"), el("th", {}, "ABI"), el("th", {}, "Source"),
          el("th", {}, "Loaded"), el("th", {}, "Shards"), el("th", { class: "num" }, "Active"), el("th", { class: "num" }, "Live"),
          el("th", { class: "num" }, "Queued"), el("th", { class: "num" }, "Alarms"), el("th", {}, "Previous"), el("th", {}, "Requests/s"))),
        tbody),
      el("h2", {}, "Swap history", el("span", { class: "sub" }, "pushes, reloads and rollbacks since the host started")),
      history);

    const load = guard(gen, async () => {
      try {
        const list = await api("/admin/bindings");
        if (gen !== generation) return;
        const rows = [];
        const all = [];
        for (const b of list.bindings) {
          let spark = sparks.get(b.name);
          if (!spark) {
            spark = { canvas: el("canvas", { class: "spark", "data-binding": b.name }), value: el("span", { class: "spark-value" }, "—") };
            sparks.set(b.name, spark);
          }
          rows.push(el("tr", { "data-binding": b.name, class: "clickable", onclick: () => { window.location.hash = "#/b/" + enc(b.name); } },
            el("td", {}, el("a", { href: "#/b/" + enc(b.name), class: "binding-link" }, b.name)),
            el("td", { class: "mono", title: b.module.sha256 }, short(b.module.sha256)),
            el("td", { class: "num" }, bytes(b.module.size)),
            el("td", {}, "v" + b.module.abi_version),
            el("td", { class: "mono" }, b.module.source),
            el("td", { class: "nowrap", title: dateTime(b.module.loaded_at) }, ago(b.module.loaded_at)),
            el("td", { class: "nowrap" }, b.shard_count ? String(b.shard_count) : "per-name"),
            el("td", { class: "num" }, num(b.active_shards, 0)),
            el("td", { class: "num" }, num(b.live_instances, 0)),
            el("td", { class: "num" }, num(b.queued_events, 0)),
            el("td", { class: "num" }, num(b.alarms_pending, 0)),
            el("td", { class: "mono", title: b.previous ? b.previous.sha256 : "" }, b.previous ? short(b.previous.sha256) : "—"),
            el("td", { class: "spark-cell" }, spark.canvas, spark.value)));
          for (const h of b.history) all.push(Object.assign({ binding: b.name }, h));
        }
        if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colSpan: 13 }, "No binding is configured.")));
        tbody.replaceChildren(...rows);
        all.sort((a, b) => (a.time < b.time ? 1 : -1));
        history.replaceChildren(historyTable(all, true));
        setStatus("updated " + clock(new Date()));
      } catch (err) { failed(err); }
      try {
        const s = await api("/admin/series");
        if (gen !== generation) return;
        for (const se of s.bindings) {
          const c = sparks.get(se.binding);
          if (!c) continue;
          drawChart(c.canvas, se.t, se.rps, "#2f6fdb", s.window_ms, s.interval_ms, { spark: true });
          const last = lastValue(se.rps);
          c.value.textContent = last === null ? "—" : num(last) + "/s";
        }
      } catch (err) { failed(err); }
    });
    load();
    every(5000, load);
  }

  // ---- page: one binding -------------------------------------------------

  function bindingPage(name) {
    setCrumbs([{ label: "Bindings", href: "#/" }, { label: name }]);
    const gen = generation;
    const facts = el("dl", { class: "facts" });
    const cards = chartCards();
    const historyBox = el("div");
    const search = el("input", { type: "search", id: "shard-search", placeholder: "Shard name prefix", "aria-label": "Search shards by name prefix" });
    const count = el("span", { class: "count", id: "shard-count" });
    const first = el("button", { class: "btn", type: "button", id: "shards-first" }, "« First");
    const next = el("button", { class: "btn", type: "button", id: "shards-next" }, "Next »");
    const tbody = el("tbody");
    view.replaceChildren(
      el("div", { class: "card" }, el("h2", {}, name, el("span", { class: "sub", id: "binding-kind" })), facts),
      el("h2", {}, "Live charts", el("span", { class: "sub", id: "chart-window" }, "last 10 minutes")),
      el("div", { class: "charts", id: "charts" }, cards.map((c) => c.node)),
      el("h2", {}, "Active shards", el("span", { class: "sub" }, "paged on the host: search by name prefix")),
      el("div", { class: "toolbar" }, search, first, next, count),
      el("table", { id: "shards" },
        el("thead", {}, el("tr", {}, el("th", {}, "Shard"), el("th", {}, "Instance"), el("th", { class: "num" }, "Queue"),
          el("th", { class: "num" }, "Memory"), el("th", {}, "Last event"), el("th", {}, "Alarm"), el("th", {}, "Trace"))),
        tbody),
      el("h2", {}, "Swap history"),
      historyBox);

    // Paging state: after is the cursor of the page shown ("" first page).
    let after = "", prefix = "", pageSize = 50, lastPage = null;

    const loadBinding = guard(gen, async () => {
      try {
        const list = await api("/admin/bindings");
        const b = list.bindings.find((x) => x.name === name);
        if (!b) throw new Error("no binding named " + name);
        if (gen !== generation) return;
        document.getElementById("binding-kind").textContent = b.shard_count ? b.shard_count + " shards" : "one object per name";
        const m = b.module;
        facts.replaceChildren(
          el("dt", {}, "Module"), el("dd", { class: "mono", id: "module-sha" }, m.sha256),
          el("dt", {}, "Size / ABI"), el("dd", {}, bytes(m.size) + " · ABI v" + m.abi_version),
          el("dt", {}, "Source"), el("dd", { class: "mono" }, m.source),
          el("dt", {}, "Loaded"), el("dd", {}, dateTime(m.loaded_at) + " (" + ago(m.loaded_at) + ")"),
          el("dt", {}, "Previous"), el("dd", { class: "mono" }, b.previous ? b.previous.sha256 + " (" + b.previous.source + ")" : "— (nothing to roll back to)"),
          el("dt", {}, "Grants"), el("dd", {}, b.grants.join(", ")),
          el("dt", {}, "Shards"), el("dd", {}, num(b.active_shards, 0) + " active · " + num(b.live_instances, 0) + " live instances · " +
            num(b.queued_events, 0) + " queued · " + num(b.alarms_pending, 0) + " alarms pending"));
        historyBox.replaceChildren(historyTable(b.history, false));
      } catch (err) { failed(err); }
    });

    const loadShards = guard(gen, async () => {
      const q = new URLSearchParams({ limit: String(pageSize) });
      if (prefix) q.set("prefix", prefix);
      if (after) q.set("after", after);
      try {
        const p = await api(bindingPath(name) + "/shards?" + q.toString());
        if (gen !== generation || p.prefix !== prefix || p.after !== after) return;
        lastPage = p;
        const rows = p.shards.map((s) => el("tr", { "data-shard": s.shard, class: "clickable", onclick: () => { window.location.hash = "#/b/" + enc(name) + "/s/" + enc(s.shard); } },
          el("td", {}, el("a", { href: "#/b/" + enc(name) + "/s/" + enc(s.shard), class: "mono shard-link" }, s.shard)),
          el("td", {}, el("span", { class: "pill " + s.instance }, s.instance)),
          el("td", { class: "num" }, num(s.queue_depth, 0)),
          el("td", { class: "num" }, s.memory_bytes ? bytes(s.memory_bytes) : "—"),
          timeCell(s.last_event),
          timeCell(s.alarm),
          el("td", {}, s.tracing ? el("span", { class: "pill on" }, "on") : "")));
        if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colSpan: 7 }, prefix ? "No active shard starts with “" + prefix + "”." : "No active shard.")));
        tbody.replaceChildren(...rows);
        const shown = p.shards.length;
        count.textContent = (shown ? shown + " shown" : "none shown") + " · " + num(p.matching, 0) + (prefix ? " matching" : "") + " of " + num(p.active, 0) + " active";
        first.disabled = !after;
        next.disabled = !p.more;
      } catch (err) { failed(err); }
    });

    const loadCharts = guard(gen, async () => {
      try {
        const s = await api("/admin/series?binding=" + enc(name));
        if (gen !== generation) return;
        document.getElementById("chart-window").textContent = "up to the last " + (s.window_ms >= 120000 ? num(s.window_ms / 60000, 1) + " minutes" : num(s.window_ms / 1000, 0) + " seconds") + ", a point every " + num(s.interval_ms / 1000, 1) + " s";
        updateCharts(cards, s.bindings[0], s.window_ms, s.interval_ms);
      } catch (err) { failed(err); }
    });

    let debounce = null;
    search.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { prefix = search.value; after = ""; loadShards(); }, 200);
    });
    next.addEventListener("click", () => {
      if (lastPage && lastPage.more && lastPage.shards.length) { after = lastPage.shards[lastPage.shards.length - 1].shard; loadShards(); }
    });
    first.addEventListener("click", () => { after = ""; loadShards(); });

    loadBinding(); loadShards(); loadCharts();
    every(5000, loadBinding);
    every(3000, loadShards);
    every(2000, loadCharts);
  }

  // ---- page: one shard ---------------------------------------------------

  function shardPage(binding, shard) {
    setCrumbs([{ label: "Bindings", href: "#/" }, { label: binding, href: "#/b/" + enc(binding) }, { label: shard }]);
    const gen = generation;
    const facts = el("div", { class: "stats", id: "shard-facts" });
    const traceFact = el("span", {}, "…");
    const prefixInput = el("input", { type: "text", id: "storage-prefix", placeholder: "Key prefix", "aria-label": "Key prefix" });
    const limitSel = el("select", { id: "storage-limit", "aria-label": "Keys per page" }, [25, 100, 500].map((n) => el("option", { value: String(n), selected: n === 100 }, n + " per page")));
    const prev = el("button", { class: "btn", type: "button", id: "storage-prev" }, "« Previous");
    const next = el("button", { class: "btn", type: "button", id: "storage-next" }, "Next »");
    const reload = el("button", { class: "btn", type: "button", id: "storage-reload" }, "Reload");
    const count = el("p", { class: "muted", id: "storage-count" });
    const tbody = el("tbody");
    const valueBox = el("div", { class: "value-view card", id: "value-view", hidden: true });
    const traceBtn = el("button", { class: "btn", type: "button", id: "trace-toggle" }, "Trace: …");
    const follow = el("input", { type: "checkbox", id: "log-follow", checked: true });
    const clear = el("button", { class: "btn", type: "button", id: "log-clear" }, "Clear");
    const log = el("ol", { class: "log", id: "log" }, el("li", { class: "placeholder" }, "Waiting for log lines: the shard's own log records, and its host calls while tracing is on."));

    view.replaceChildren(
      el("div", { class: "card" }, el("h2", {}, binding + " / " + shard), facts),
      el("div", { class: "grid2" },
        el("section", {},
          el("h2", {}, "Storage", el("span", { class: "sub" }, "read-only, as the shard's next event sees it")),
          el("div", { class: "toolbar" }, prefixInput, limitSel, prev, next, reload),
          el("table", { id: "entries" }, el("thead", {}, el("tr", {}, el("th", {}, "Key"), el("th", { class: "num" }, "Size"), el("th", {}, "Value (preview)"))), tbody),
          count,
          valueBox),
        el("section", {},
          el("h2", {}, "Log tail", el("span", { class: "sub" }, "the shard's log records and traced host calls")),
          el("div", { class: "toolbar" }, traceBtn, el("label", { for: "log-follow" }, follow, " follow"), clear),
          log)));

    // Storage paging: page is the URL of the page shown (null: the first,
    // built from the prefix and limit), pages the stack of those before it.
    // A next page's URL comes from the host (next), which escapes any key.
    let pages = [], page = null, lastListing = null, selectedKey = null;

    function stat(label, value, title) {
      return el("div", { class: "stat", title: title || "" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
    }
    function renderFacts(l) {
      facts.replaceChildren(
        stat("Instance", el("span", { class: "pill " + l.instance }, l.instance)),
        stat("Queue depth", num(l.queue_depth, 0)),
        stat("Memory", l.memory_bytes ? bytes(l.memory_bytes) : "—"),
        stat("Last event", ago(l.last_event), l.last_event ? dateTime(l.last_event) : ""),
        stat("Alarm", l.alarm ? ago(l.alarm) : "none", l.alarm ? dateTime(l.alarm) : ""),
        stat("Tracing", traceFact));
      setTrace(l.tracing);
    }

    const loadStorage = guard(gen, async () => {
      const q = new URLSearchParams({ limit: limitSel.value });
      if (prefixInput.value) q.set("prefix", prefixInput.value);
      const url = page !== null ? page : shardPath(binding, shard) + "?" + q.toString();
      try {
        const l = await api(url);
        if (gen !== generation || url !== (page !== null ? page : shardPath(binding, shard) + "?" + q.toString())) return;
        lastListing = l;
        renderFacts(l);
        const rows = l.entries.map((e) => {
          const tr = el("tr", { class: "clickable" + (e.key === selectedKey ? " selected" : ""), "data-key": e.key, onclick: () => showValue(e, tr) },
            el("td", {}, el("span", { class: "key" }, e.key), e.key_encoding === "base64" ? el("span", { class: "pill warn", title: "not UTF-8: shown as base64" }, " b64") : null),
            el("td", { class: "num" }, bytes(e.size)),
            el("td", {}, el("span", { class: "preview" }, preview(e))));
          return tr;
        });
        if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colSpan: 3 }, prefixInput.value ? "No key starts with “" + prefixInput.value + "”." : "This shard stores nothing.")));
        tbody.replaceChildren(...rows);
        count.textContent = l.entries.length + " keys on this page" + (l.more ? ", more follow" : "");
        prev.disabled = page === null;
        next.disabled = !l.more;
      } catch (err) { failed(err); }
    });

    function preview(e) {
      let v = e.value_encoding === "base64" ? "(binary) " + hexDump(b64ToBytes(e.value).subarray(0, 16)).slice(10, 58).trim() : e.value;
      if (v.length > 120) v = v.slice(0, 120) + "…";
      else if (e.truncated) v += "…";
      return v;
    }

    async function showValue(e, tr) {
      selectedKey = e.key;
      tbody.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
      tr.classList.add("selected");
      const q = e.key_encoding === "base64" ? "key_b64=" + enc(e.key) : "key=" + enc(e.key);
      valueBox.hidden = false;
      valueBox.replaceChildren(el("p", { class: "muted" }, "Loading…"));
      let v;
      try {
        v = await api(shardPath(binding, shard) + "/value?" + q);
      } catch (err) {
        valueBox.replaceChildren(el("div", { class: "error-box" }, err.message));
        return;
      }
      if (gen !== generation) return;
      const raw = b64ToBytes(v.value);
      let textValue = null, jsonValue = null;
      try { textValue = new TextDecoder("utf-8", { fatal: true }).decode(raw); } catch (_) { textValue = null; }
      if (textValue !== null) {
        try { jsonValue = JSON.stringify(JSON.parse(textValue), null, 2); } catch (_) { jsonValue = null; }
      }
      const pre = el("pre", { class: "value", id: "value-content" });
      const tabs = el("div", { class: "tabs", role: "tablist" });
      const views = {
        text: () => textValue !== null ? textValue : "(not UTF-8 text: see hex)",
        json: () => jsonValue !== null ? jsonValue : "(not JSON" + (textValue === null ? ": not UTF-8 text" : "") + ")",
        hex: () => hexDump(raw),
      };
      function show(kind) {
        pre.textContent = views[kind]();
        pre.dataset.view = kind;
        tabs.querySelectorAll("button").forEach((b) => b.classList.toggle("active", b.dataset.view === kind));
      }
      for (const kind of ["text", "json", "hex"]) {
        tabs.append(el("button", { type: "button", "data-view": kind, onclick: () => show(kind) }, kind === "json" ? "JSON" : kind[0].toUpperCase() + kind.slice(1)));
      }
      valueBox.replaceChildren(
        el("div", { class: "title" }, el("strong", {}, "Key "), el("span", { class: "key mono", id: "value-key" }, v.key), el("span", { class: "muted" }, " · " + bytes(v.size))),
        tabs, pre);
      show(jsonValue !== null ? "json" : textValue !== null ? "text" : "hex");
    }

    // Log tail: poll the tap for lines after the last seen.
    let lastSeq = 0, tracing = false, lines = 0;
    const maxLines = 500;
    function setTrace(on) {
      tracing = on;
      traceBtn.textContent = on ? "Tracing host calls: on" : "Tracing host calls: off";
      traceBtn.classList.toggle("on", on);
      traceBtn.dataset.on = on ? "true" : "false";
      traceFact.textContent = on ? "on" : "off";
    }
    function logLine(l) {
      const li = el("li", { class: "log-line " + l.source, "data-source": l.source, "data-seq": String(l.seq) },
        el("span", { class: "t" }, clock(new Date(l.time)) + " "),
        el("span", { class: "lvl " + l.level }, l.level.toUpperCase()),
        el("span", { class: "src" }, "[" + l.source + "] "),
        l.message,
        l.fields.map((f) => el("span", { class: "f" }, " " + f.name + "=" + f.value)));
      return li;
    }
    const pollLog = guard(gen, async () => {
      try {
        const r = await api(shardPath(binding, shard) + "/log?after=" + lastSeq);
        if (gen !== generation) return;
        setTrace(r.tracing);
        if (r.lines.length) {
          if (!lines) log.replaceChildren();
          const stick = follow.checked;
          for (const l of r.lines) { log.append(logLine(l)); lines++; }
          while (lines > maxLines) { log.firstChild.remove(); lines--; }
          if (stick) log.scrollTop = log.scrollHeight;
        }
        lastSeq = r.last;
      } catch (err) { failed(err); }
    });
    traceBtn.addEventListener("click", async () => {
      try {
        const r = await api(shardPath(binding, shard) + "/trace", { method: "PUT", body: JSON.stringify({ on: !tracing }) });
        setTrace(r.on);
        setStatus("tracing " + (r.on ? "on" : "off") + " for " + binding + "/" + shard);
      } catch (err) { failed(err); }
    });
    clear.addEventListener("click", () => { log.replaceChildren(); lines = 0; });

    prefixInput.addEventListener("change", () => { pages = []; page = null; loadStorage(); });
    limitSel.addEventListener("change", () => { pages = []; page = null; loadStorage(); });
    next.addEventListener("click", () => {
      if (!lastListing || !lastListing.next) return;
      pages.push(page);
      page = lastListing.next;
      loadStorage();
    });
    prev.addEventListener("click", () => { page = pages.length ? pages.pop() : null; loadStorage(); });
    reload.addEventListener("click", () => loadStorage());

    loadStorage(); pollLog();
    every(1000, pollLog);
    every(5000, loadStorage);
  }

  // ---- start -------------------------------------------------------------

  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("/logout", { method: "POST" }); } catch (_) { /* logged out anyway */ }
    window.location.assign("/login");
  });
  window.addEventListener("hashchange", route);
  route();
})();
