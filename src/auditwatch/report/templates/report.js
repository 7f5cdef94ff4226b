// auditwatch report: draws the page from the JSON in #aw-data.
// Everything is computed in Python; this script only filters, pages and draws.
// (Included by a Jinja2 template: never write two opening braces in a row here.)
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("aw-data").textContent);
  const PAGE = 50; // table rows drawn at a time
  const ALERTS_PAGE = 20;
  const CATS = DATA.categories;
  const EVENTS = DATA.events; // [name, category index, count]
  const RUNS = DATA.runs;
  const state = { process: "", category: "", event: "", search: "" };
  const pages = {}; // table id -> page number
  const PALETTE = ["#c0392b", "#b7950b", "#27ae60", "#16a085", "#2e86c1", "#7d3c98", "#a04000",
    "#d35400", "#6c3483", "#566573", "#1abc9c", "#884ea0", "#7f8c8d"];
  const t0 = performance.now();

  // -- small helpers ---------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const key of Object.keys(attrs)) {
        const value = attrs[key];
        if (value === null || value === undefined || value === false) continue;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = value;
        else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
        else node.setAttribute(key, value === true ? "" : value);
      }
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  const fmt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : n === null || n === undefined ? "" : String(n));
  function rel(ns) {
    if (ns === null || ns === undefined) return "";
    const s = ns / 1e9;
    if (Math.abs(s) < 10) return "+" + s.toFixed(3) + " s";
    if (Math.abs(s) < 600) return "+" + s.toFixed(1) + " s";
    return "+" + (s / 60).toFixed(1) + " min";
  }
  function absolute(ns) {
    if (DATA.meta.firstMs === null || ns === null || ns === undefined) return "";
    return new Date(DATA.meta.firstMs + ns / 1e6).toISOString();
  }
  function basename(p) {
    const s = String(p);
    return s.slice(s.lastIndexOf("/") + 1);
  }
  function runLabel(i) {
    const r = RUNS[i];
    if (!r) return "process #" + i;
    const argv = r.argv.length ? [basename(r.argv[0])].concat(r.argv.slice(1)).join(" ") : "(no start record)";
    return "pid " + r.pid + " " + (argv.length > 80 ? argv.slice(0, 79) + "…" : argv);
  }
  function runLink(i) {
    if (i === null || i === undefined) return el("span", { class: "muted", text: "—" });
    const r = RUNS[i];
    return el("a", {
      class: "run",
      title: r ? r.run + "\n" + r.argv.join(" ") : "",
      onclick: () => setFilter("process", String(i)),
      text: r ? "pid " + r.pid : "#" + i,
    });
  }

  // -- filters ---------------------------------------------------------------
  const fProcess = document.getElementById("f-process");
  const fCategory = document.getElementById("f-category");
  const fEvent = document.getElementById("f-event");
  const fSearch = document.getElementById("f-search");
  RUNS.forEach((r, i) => fProcess.append(el("option", { value: String(i), text: runLabel(i) })));
  const catCounts = CATS.map(() => 0);
  for (const e of EVENTS) catCounts[e[1]] += e[2];
  CATS.forEach((c, i) => {
    if (catCounts[i]) fCategory.append(el("option", { value: String(i), text: c + " (" + fmt(catCounts[i]) + ")" }));
  });
  const names = document.getElementById("event-names");
  EVENTS.slice(0, 2000).forEach((e) => names.append(el("option", { value: e[0] })));
  const eventIndex = new Map(EVENTS.map((e, i) => [e[0], i]));

  function setFilter(key, value) {
    state[key] = value;
    ({ process: fProcess, category: fCategory, event: fEvent, search: fSearch })[key].value = value;
    update();
  }
  fProcess.addEventListener("change", () => { state.process = fProcess.value; update(); });
  fCategory.addEventListener("change", () => { state.category = fCategory.value; update(); });
  let timer = null;
  function later(fn) { clearTimeout(timer); timer = setTimeout(fn, 120); }
  fEvent.addEventListener("input", () => later(() => { state.event = fEvent.value.trim(); update(); }));
  fSearch.addEventListener("input", () => later(() => { state.search = fSearch.value.trim().toLowerCase(); update(); }));
  document.getElementById("f-clear").addEventListener("click", () => {
    for (const key of Object.keys(state)) state[key] = "";
    fProcess.value = fCategory.value = fEvent.value = fSearch.value = "";
    update();
  });

  // Which event names the event and category filters let through (null: all).
  function allowedEvents() {
    if (!state.event && state.category === "") return null;
    const ok = new Set();
    let exact = state.event ? eventIndex.get(state.event) : undefined;
    const needle = state.event.toLowerCase();
    EVENTS.forEach((e, i) => {
      if (state.category !== "" && String(e[1]) !== state.category) return;
      if (state.event) {
        if (exact !== undefined ? i !== exact : !e[0].toLowerCase().includes(needle)) return;
      }
      ok.add(i);
    });
    return ok;
  }
  function runMatches(runs) {
    if (state.process === "") return true;
    const p = Number(state.process);
    if (Array.isArray(runs)) return runs.includes(p);
    return runs !== null && typeof runs === "object" && state.process in runs;
  }
  const searchText = new WeakMap();
  function rowText(row, n) {
    let t = searchText.get(row);
    if (t === undefined) {
      const parts = [];
      for (let i = 0; i < n; i++) {
        const v = row[i];
        if (v !== null && v !== undefined && typeof v !== "object") parts.push(String(v));
      }
      t = parts.join("\u0001").toLowerCase();
      searchText.set(row, t);
    }
    return t;
  }

  // -- overview cards ---------------------------------------------------------
  function drawCards() {
    const m = DATA.meta;
    const missing = RUNS.filter((r) => r.missing).length;
    const cards = [
      ["records", fmt(m.records)],
      ["processes", fmt(m.processes)],
      ["events", fmt(EVENTS.reduce((a, e) => a + e[2], 0))],
      ["alerts", fmt(DATA.alertsTotal), DATA.alertsTotal > 0],
      ["missing exit", fmt(missing), missing > 0],
      ["dropped", fmt(m.dropped), m.dropped > 0],
      ["rejected lines", fmt(m.rejected), m.rejected > 0],
      ["duration", rel(m.span).replace("+", "")],
      ["started", m.firstMs !== null ? new Date(m.firstMs).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—"],
    ];
    const box = document.getElementById("cards");
    box.replaceChildren(...cards.map(([label, value, bad]) =>
      el("div", { class: "card" + (bad ? " bad" : "") }, el("b", { text: value }), el("span", { class: "muted", text: label }))));
  }

  // -- process tree -----------------------------------------------------------
  function drawTree() {
    const kids = RUNS.map(() => []);
    const roots = [];
    RUNS.forEach((r, i) => (r.parent !== null && r.parent !== undefined ? kids[r.parent].push(i) : roots.push(i)));
    function node(i) {
      const r = RUNS[i];
      const badges = [];
      if (r.missing) badges.push(el("span", { class: "badge bad", title: "no exit record: killed, crashed, or the recorder was blinded", text: "missing exit" }));
      else if (r.replaced) badges.push(el("span", { class: "badge", text: "replaced by exec" }));
      else if (r.exit !== null) badges.push(el("span", { class: "badge " + (r.exit === "exit 0" ? "ok" : "warn"), text: r.exit }));
      if (!r.started) badges.push(el("span", { class: "badge warn", text: "no start record" }));
      if (r.fork) badges.push(el("span", { class: "badge", text: "fork" }));
      if (r.installed && r.installed !== "site") badges.push(el("span", { class: "badge" + (r.installed === "late" ? " warn" : ""), text: "hook " + r.installed }));
      if (r.parent === null && r.parentRun) badges.push(el("span", { class: "badge warn", title: r.parentRun, text: "parent not in this run" }));
      if (r.alerts) badges.push(el("span", { class: "badge bad", text: fmt(r.alerts) + (r.alerts === 1 ? " alert" : " alerts") }));
      if (r.dropped) badges.push(el("span", { class: "badge bad", text: fmt(r.dropped) + " dropped" }));
      const label = el("span", {
        class: "proc" + (state.process === String(i) ? " selected" : ""),
        title: "run " + r.run + (r.exe ? "\nexe " + r.exe : "") + (r.cwd ? "\ncwd " + r.cwd : "") + (r.user ? "\nuser " + r.user : "") + (r.python ? "\nPython " + r.python : "") + "\nclick: show only this process",
        onclick: () => setFilter("process", state.process === String(i) ? "" : String(i)),
      },
        el("b", { text: "pid " + r.pid }), " ",
        el("span", { class: "argv", text: r.argv.length ? r.argv.join(" ") : "(argv not recorded)" }), " ",
        el("span", { class: "muted", text: fmt(r.events) + " events, " + rel(r.start) + " … " + rel(r.end) }),
        ...badges);
      const li = el("li", { "data-run": String(i) }, label);
      if (kids[i].length) li.append(el("ul", null, ...kids[i].map(node)));
      return li;
    }
    const box = document.getElementById("tree");
    const parts = [el("ul", { class: "tree" }, ...roots.map(node))];
    if (DATA.meta.processesShown < DATA.meta.processes) {
      parts.push(el("p", { class: "muted", text: fmt(DATA.meta.processes - DATA.meta.processesShown) + " more processes not listed" }));
    }
    box.replaceChildren(...parts);
  }

  // -- timeline ---------------------------------------------------------------
  function drawTimeline() {
    const tl = DATA.timeline;
    const box = document.getElementById("timeline");
    if (!tl.ncols) { box.replaceChildren(el("p", { class: "empty", text: "no events" })); return; }
    let rows = tl.rows; // category index -> counts per column
    let note = "all processes";
    if (state.process !== "") {
      const sparse = tl.byRun[state.process];
      rows = {};
      if (sparse) {
        for (const cat of Object.keys(sparse)) {
          const counts = new Array(tl.ncols).fill(0);
          for (const [col, n] of sparse[cat]) counts[col] = n;
          rows[cat] = counts;
        }
        note = runLabel(Number(state.process));
      } else note = "no timeline kept for this process (too many processes)";
    }
    const cats = Object.keys(rows).map(Number).sort((a, b) => a - b);
    const W = 1100, label = 130, rowH = 22, top = 4, colW = (W - label - 70) / tl.ncols;
    const H = top + cats.length * rowH + 24;
    // One <path> per category, built as text: thousands of separate elements
    // would take longer to make than everything else on the page together.
    const parts = [];
    cats.forEach((cat, r) => {
      const counts = rows[cat];
      const max = Math.max(1, ...counts);
      const total = counts.reduce((a, b) => a + b, 0);
      const y = top + r * rowH;
      const dim = state.category !== "" && String(cat) !== state.category;
      let d = "";
      counts.forEach((n, c) => {
        if (!n) return;
        const h = Math.max(2, (rowH - 4) * Math.sqrt(n / max));
        d += "M" + (label + c * colW).toFixed(1) + " " + (y + rowH - 2 - h).toFixed(1) +
          "h" + Math.max(1, colW - 0.5).toFixed(1) + "v" + h.toFixed(1) + "h-" + Math.max(1, colW - 0.5).toFixed(1) + "z";
      });
      parts.push('<g class="tl-row' + (dim ? " dim" : "") + '"><text x="0" y="' + (y + 15) + '">' + CATS[cat] +
        '</text><text x="' + (W - 66) + '" y="' + (y + 15) + '">' + fmt(total) + '</text><path fill="' + PALETTE[cat % PALETTE.length] + '" d="' + d + '"/></g>');
    });
    const axisY = top + cats.length * rowH + 16;
    parts.push('<text x="' + label + '" y="' + axisY + '">' + rel(Math.max(0, tl.start)) + "</text>");
    parts.push('<text text-anchor="end" x="' + (W - 70) + '" y="' + axisY + '">' + rel(tl.start + tl.ncols * tl.width) + "</text>");
    parts.push('<line id="tl-cursor" x1="-10" x2="-10" y1="0" y2="' + (H - 20) + '" stroke="#1d2330" stroke-width="1"/>');
    const holder = el("div");
    holder.innerHTML = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ' + W + " " + H + '" width="100%" style="max-width:' + W +
      'px" role="img" aria-label="events per category over time">' + parts.join("") + "</svg>";
    const svg = holder.firstChild;
    const caption = el("p", { class: "muted", text: note + "; bar height ∝ √count per row; point at the chart for counts" });
    svg.addEventListener("mousemove", (ev) => {
      const box = svg.getBoundingClientRect();
      const x = (ev.clientX - box.left) * (W / box.width);
      const c = Math.floor((x - label) / colW);
      if (c < 0 || c >= tl.ncols) return;
      svg.getElementById("tl-cursor").setAttribute("x1", label + (c + 0.5) * colW);
      svg.getElementById("tl-cursor").setAttribute("x2", label + (c + 0.5) * colW);
      const counts = cats.filter((cat) => rows[cat][c]).map((cat) => CATS[cat] + " " + fmt(rows[cat][c]));
      caption.textContent = rel(tl.start + c * tl.width) + " … " + rel(tl.start + (c + 1) * tl.width) + ": " + (counts.join(", ") || "no events");
    });
    box.replaceChildren(caption, svg);
  }

  // -- alerts -----------------------------------------------------------------
  function alertMatches(a, allowed) {
    if (state.process !== "" && String(a.run) !== state.process) return false;
    if (allowed) {
      const i = eventIndex.get(a.event);
      if (i === undefined || !allowed.has(i)) return false;
    }
    if (state.search) {
      const t = [a.rule, a.output, a.event, a.tags.join(" ")].concat(a.context.map((c) => c[2] + " " + c[3])).join("\u0001").toLowerCase();
      if (!t.includes(state.search)) return false;
    }
    return true;
  }
  function drawAlerts(allowed) {
    const rules = document.getElementById("alert-rules");
    const box = document.getElementById("alerts");
    if (!DATA.alertsTotal) {
      rules.replaceChildren();
      box.replaceChildren(el("p", { class: "empty", text: "No alerts in this run." }));
      return;
    }
    rules.replaceChildren(el("p", null, fmt(DATA.alertsTotal) + (DATA.alertsTotal === 1 ? " alert" : " alerts") + " from " + DATA.alertRules.length + (DATA.alertRules.length === 1 ? " rule: " : " rules: "),
      ...DATA.alertRules.slice(0, 30).map(([rule, prio, n]) => el("span", { class: "badge", title: prio, text: rule + " × " + fmt(n) }))));
    const shown = DATA.alerts.filter((a) => alertMatches(a, allowed));
    const page = clampPage("alerts", shown.length, ALERTS_PAGE);
    const items = shown.slice(page * ALERTS_PAGE, (page + 1) * ALERTS_PAGE).map((a) => {
      const ctx = el("table", null, el("thead", null, el("tr", null, ...["seq", "time", "event", "details"].map((h) => el("th", { text: h })))),
        el("tbody", null, ...a.context.map((c) => el("tr", { class: c[4] ? "trigger" : null },
          el("td", { class: "num", text: fmt(c[0]) }), el("td", { text: rel(c[1]), title: absolute(c[1]) }),
          el("td", { class: "mono", text: c[2] }), el("td", { class: "mono", text: c[3] })))));
      return el("div", { class: "alert p-" + a.priority },
        el("div", null, el("span", { class: "badge " + (["emergency", "alert", "critical", "error"].includes(a.priority) ? "bad" : "warn"), text: a.priority || "alert" }), " ",
          el("b", { text: a.rule }), " ", a.run !== null ? runLink(a.run) : el("span", { class: "muted", text: "(summary)" }),
          " ", el("span", { class: "muted", text: rel(a.ts) + (a.seq !== null ? " seq " + a.seq : "") + (a.extra ? " · " + a.extra : "") }),
          ...a.tags.map((t) => el("span", { class: "badge", text: t }))),
        el("div", { class: "out mono", text: a.output }),
        a.context.length ? ctx : null);
    });
    const more = DATA.alertsTotal - DATA.alerts.length;
    box.replaceChildren(...items, pager("alerts", shown.length, DATA.alerts.length, page, ALERTS_PAGE,
      more > 0 ? fmt(more) + " more alerts are counted above but not embedded" : ""));
    if (!shown.length) box.prepend(el("p", { class: "empty", text: "No alert matches the filters." }));
  }

  // -- tables -----------------------------------------------------------------
  function clampPage(id, n, size) {
    const last = Math.max(0, Math.ceil(n / size) - 1);
    pages[id] = Math.min(pages[id] || 0, last);
    return pages[id];
  }
  function pager(id, matching, embedded, page, size, note) {
    const go = (p) => () => { pages[id] = p; update(); };
    const from = matching ? page * size + 1 : 0, to = Math.min(matching, (page + 1) * size);
    return el("div", { class: "pager" },
      el("button", { type: "button", disabled: page === 0, onclick: go(page - 1) }, "‹ previous"),
      el("span", { text: fmt(from) + "–" + fmt(to) + " of " + fmt(matching) + (matching !== embedded ? " matching (" + fmt(embedded) + " embedded)" : "") }),
      el("button", { type: "button", disabled: to >= matching, onclick: go(page + 1) }, "next ›"),
      note ? el("span", { text: note }) : null);
  }
  function cell(type, value, row, ncells) {
    switch (type) {
      case "time": return el("td", { text: rel(value), title: absolute(value) });
      case "num": return el("td", { class: "num", text: fmt(value) });
      case "count": {
        const byRun = row[ncells];
        const n = state.process !== "" && byRun && !Array.isArray(byRun) ? byRun[state.process] || 0 : value;
        return el("td", { class: "num", text: fmt(n) });
      }
      case "run": return el("td", null, runLink(value));
      case "code": return el("td", null, value ? el("pre", { text: value }) : el("span", { class: "muted", text: "not recorded" }));
      case "hash": return el("td", { class: "mono", title: value, text: value ? value.slice(0, 12) + "…" : "" });
      case "mono": return el("td", { class: "mono", text: value === null || value === undefined ? "" : String(value) });
      default: return el("td", { text: value === null || value === undefined ? "" : String(value) });
    }
  }
  const tableBoxes = {};
  for (const t of DATA.tables) {
    const section = el("section", { id: "t-" + t.id, class: "data-table" }, el("h2", { text: t.title }));
    const body = el("div");
    section.append(body);
    tableBoxes[t.id] = body;
    document.getElementById("tables").append(section);
  }
  function drawTable(t, allowed) {
    const ncells = t.columns.length;
    const shown = [];
    for (const row of t.rows) {
      if (!runMatches(row[ncells])) continue;
      if (allowed) {
        const evs = row[ncells + 1];
        if (!evs.some((i) => allowed.has(i))) continue;
      }
      if (state.search && !rowText(row, ncells).includes(state.search)) continue;
      shown.push(row);
    }
    const page = clampPage(t.id, shown.length, PAGE);
    const parts = [];
    if (t.total > t.rows.length) {
      parts.push(el("p", { class: "muted", text: "The first " + fmt(t.rows.length) + " of " + fmt(t.total) + " rows are embedded in this report; `auditwatch query` finds the rest." }));
    }
    if (t.note) parts.push(el("p", { class: "muted", text: t.note }));
    if (!t.rows.length) {
      parts.push(el("p", { class: "empty", text: "None in this run." }));
    } else if (!shown.length) {
      parts.push(el("p", { class: "empty", text: "No row matches the filters (" + fmt(t.rows.length) + " rows)." }));
    } else {
      const head = el("tr", null, ...t.columns.map((c) => el("th", { class: c.type === "num" || c.type === "count" ? "num" : null, text: c.name })));
      const rows = shown.slice(page * PAGE, (page + 1) * PAGE).map((row) => el("tr", null, ...t.columns.map((c, i) => cell(c.type, row[i], row, ncells))));
      parts.push(el("table", null, el("thead", null, head), el("tbody", null, ...rows)));
      if (shown.length > PAGE || t.rows.length !== shown.length) parts.push(pager(t.id, shown.length, t.rows.length, page, PAGE, ""));
    }
    tableBoxes[t.id].replaceChildren(...parts);
    return shown.length;
  }

  // -- drawing everything -------------------------------------------------------
  const timings = {}; // milliseconds each part took in the last update, for the curious
  function timed(name, fn) {
    const start = performance.now();
    const result = fn();
    timings[name] = Math.round((performance.now() - start) * 10) / 10;
    return result;
  }
  function update() {
    const allowed = allowedEvents();
    timed("tree", drawTree);
    timed("timeline", drawTimeline);
    timed("alerts", () => drawAlerts(allowed));
    let rows = 0;
    for (const t of DATA.tables) rows += timed(t.id, () => drawTable(t, allowed));
    const active = Object.keys(state).filter((k) => state[k] !== "");
    document.getElementById("f-status").textContent = active.length ? fmt(rows) + " table rows match" : "";
    document.body.dataset.filters = active.join(",");
  }
  drawCards();
  update();
  // Tests and curious users: when the content was drawn, after the first paint.
  window.auditwatchReport = { drawnMs: performance.now(), scriptMs: performance.now() - t0, paintedMs: null, timings: timings, setFilter: setFilter };
  requestAnimationFrame(() => setTimeout(() => {
    window.auditwatchReport.paintedMs = performance.now();
    document.body.dataset.rendered = "1";
  }, 0));
})();
