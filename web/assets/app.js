// The tokenusage dashboard: plain JavaScript, no build step, no inline code
// (the CSP forbids it). It talks to the API like any other client:
// - the access token lives in memory only; the session is an HttpOnly
//   cookie that /api/v1/auth/refresh turns into a new token (on load and
//   before expiry);
// - the chart is a live subscription (WebSocket, protocol tokenusage.v1,
//   token as a subprotocol, never in a URL): a snapshot, then deltas applied
//   in place; reconnects with backoff;
// - every chart has a data table; the chart itself is keyboard navigable.
// A module (strict by itself); its pure parts are in lib/, unit-tested
// with `node --test` (web/tests/unit/).
import { fmt, num, count, glance, money as moneyIn, moneyColumn, costText, bucketLabel, instant, addDays, addMonths } from "./lib/format.js";
import { applyDelta } from "./lib/delta.js";
import { keyName, chartModel as modelOf, describeChart as describeIn } from "./lib/chart-model.js";
import { budgetName as nameFor, budgetSentence } from "./lib/budget-text.js";
import { actionName, groupReads } from "./lib/audit.js";

(() => {
  const $ = (id) => document.getElementById(id);
  const DASHES = [[], [6, 3], [2, 3], [8, 3, 2, 3], [12, 4], [1, 3], [4, 4], [10, 2, 2, 2]];
  const session = { token: null, user: null, role: null, refreshTimer: null, teams: [], access: null };
  const live = { ws: null, paused: false, retry: 0, retryTimer: null, series: null, freshness: null, wanted: false };
  let chart = null;
  let chartKeys = "";
  let cursorIdx = -1;
  let summaryPrev = null;
  let announcedView = "";
  let detailTimer = null;

  // ---- small helpers -------------------------------------------------
  function showAlert(msg) { const a = $("alert"); a.textContent = msg; a.hidden = !msg; }
  function setConn(state, text) { $("conn").dataset.state = state; $("conn-text").textContent = text; }
  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function cell(row, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; row.appendChild(td); return td; }
  function tzName() { return $("tz").value.trim() || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; }
  function label(iso, gran) { return bucketLabel(iso, gran, tzName()); }

  // ---- API and session -------------------------------------------------
  async function api(path, opts = {}, retried = false) {
    const headers = Object.assign({}, opts.headers || {});
    if (session.token) headers.Authorization = "Bearer " + session.token;
    const r = await fetch(path, Object.assign({}, opts, { headers, credentials: "same-origin" }));
    if (r.status === 401 && session.token && !retried) {
      if (await refresh()) return api(path, opts, true);
      signedOut("Your session has expired. Please sign in again.");
      throw new Error("signed out");
    }
    if (!r.ok) {
      let msg = "The server answered " + r.status + ".";
      try { const b = await r.json(); if (b && b.error) msg = b.error.message; } catch (_) { /* not JSON */ }
      const e = new Error(msg); e.status = r.status; throw e;
    }
    return r;
  }

  function accept(tok) {
    session.token = tok.access_token; session.user = tok.user; session.role = tok.role;
    clearTimeout(session.refreshTimer);
    // Renew a minute before the access token expires (never sooner than 10 s).
    session.refreshTimer = setTimeout(async () => {
      if (await refresh() && live.ws && live.ws.readyState === 1) live.ws.send(JSON.stringify({ type: "auth", token: session.token }));
    }, Math.max(10, tok.expires_in - 60) * 1000);
  }

  async function refresh() {
    try {
      const r = await fetch("/api/v1/auth/refresh", { method: "POST", credentials: "same-origin" });
      if (!r.ok) return false;
      accept(await r.json());
      return true;
    } catch (_) { return false; }
  }

  function signedOut(message) {
    session.token = null; clearTimeout(session.refreshTimer);
    stopLive();
    $("dashboard").hidden = true; $("who").hidden = true; $("sign-in").hidden = false;
    setConn("idle", "Not connected");
    $("sign-in-error").textContent = message || "";
    $("username").focus();
  }

  async function signIn(ev) {
    ev.preventDefault();
    // Errors are announced (the message is a live alert) and focus goes to
    // the field to fix.
    const err = $("sign-in-error"); err.textContent = "";
    for (const f of ["username", "password"]) $(f).removeAttribute("aria-invalid");
    const username = $("username").value.trim(), password = $("password").value;
    const missing = !username ? "username" : !password ? "password" : null;
    if (missing) {
      err.textContent = missing === "username" ? "Enter your user name." : "Enter your password.";
      $(missing).setAttribute("aria-invalid", "true"); $(missing).focus(); return;
    }
    try {
      const r = await fetch("/api/v1/auth/login", { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ username, password }) });
      if (r.status === 429) { err.textContent = "Too many attempts. Wait a minute and try again."; return; }
      if (!r.ok) {
        err.textContent = "Wrong user name or password.";
        $("password").setAttribute("aria-invalid", "true"); $("password").focus(); $("password").select(); return;
      }
      accept(await r.json());
      $("password").value = "";
      showDashboard();
    } catch (_) { err.textContent = "Cannot reach the server. Check your connection and try again."; }
  }

  async function signOut() {
    try { await fetch("/api/v1/auth/logout", { method: "POST", credentials: "same-origin" }); } catch (_) { /* offline */ }
    signedOut("You are signed out.");
  }

  // ---- the view ---------------------------------------------------------
  function today() { return new Intl.DateTimeFormat("en-CA", { timeZone: tzName() }).format(new Date()); }

  /** The view to show, or a message saying what is wrong with the inputs. */
  function currentView() {
    const t = today();
    const v = { granularity: $("granularity").value, tz: tzName(), group: $("group").value };
    switch ($("range").value) {
      case "today": v.from = t; break;
      case "7d": v.from = addDays(t, -6); break;
      case "30d": v.from = addDays(t, -29); break;
      case "month": v.from = t.slice(0, 8) + "01"; break;
      case "12m": v.from = addMonths(t, -11); break;
      default: {
        const f = $("custom-from").value, to = $("custom-to").value;
        if (!f || !to) return { error: "Pick both dates of the custom range." };
        if (to < f) return { error: "The custom range ends before it starts." };
        v.from = f; v.to = addDays(to, 1);
      }
    }
    // "Automatic": hours for a day or two, daily bars for longer ranges (as
    // the providers' own usage pages show them), weeks past ~3 years.
    if (v.granularity === "auto") {
      const days = (Date.parse(v.to || addDays(t, 1)) - Date.parse(v.from)) / 86400000;
      v.granularity = days <= 2 ? "hour" : days <= 1000 ? "day" : "auto";
    }
    const team = $("team").value;
    const user = $("user").value.trim();
    if (team) v.team = team;
    else if (session.role === "admin" && user) v.user = user;
    if ($("project").value) v.project = $("project").value;
    // "Member" stacking needs several people in the view.
    if (v.group === "user" && !v.team && v.user !== "*") v.group = "none";
    return v;
  }

  /** The view in words, above its figures: "Last 7 days (Europe/Berlin): your own usage". */
  function viewSaid(v) {
    const range = $("range").selectedOptions[0] ? $("range").selectedOptions[0].textContent : "";
    const whose = v.team ? "team " + v.team : v.user === "*" ? "everyone" : v.user ? "user " + v.user : "your own usage";
    return range + " (" + v.tz + "): " + whose + (v.project ? ", project " + projectName(v.project) : "") + ".";
  }

  /** Several people in one view: a team, or everyone. */
  function viewsMany(v) { return !!v.team || v.user === "*"; }
  function projectName(p) { return p === "" ? "(no project)" : p; }
  function query(v, extra) {
    const p = new URLSearchParams();
    for (const [k, val] of Object.entries(Object.assign({}, v, extra || {}))) if (val != null && val !== "") p.set(k, val);
    return p.toString();
  }

  // ---- live subscription ------------------------------------------------
  function stopLive() {
    live.wanted = false; clearTimeout(live.retryTimer);
    if (live.ws) { live.ws.onclose = null; live.ws.close(1000); live.ws = null; }
  }

  function startLive() {
    stopLive();
    isolated = null;
    const v = currentView();
    if (v.error) { showAlert(v.error); return; }
    $("view-said").textContent = viewSaid(v);
    showAlert("");
    live.wanted = true;
    if (live.paused) { loadOnce(v); return; }
    connect(v);
  }

  function connect(v) {
    if (!session.token) return;
    setConn("connecting", live.retry ? "Reconnecting…" : "Connecting…");
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(proto + "://" + location.host + "/api/v1/live", ["tokenusage.v1", "bearer." + session.token]);
    live.ws = ws;
    ws.onopen = () => {
      live.retry = 0;
      const view = Object.assign({}, v); if (view.granularity === "auto") delete view.granularity;
      ws.send(JSON.stringify({ type: "subscribe", id: "main", view }));
      ws.send(JSON.stringify({ type: "watch_budgets" }));
      if (session.role === "admin") ws.send(JSON.stringify({ type: "watch_reconciliation" }));
    };
    ws.onmessage = (e) => onMessage(JSON.parse(e.data), v);
    ws.onclose = async (e) => {
      live.ws = null;
      if (!live.wanted) return;
      if (e.code === 4001 && !(await refresh())) { signedOut("Your session has expired. Please sign in again."); return; }
      if (e.code === 4003) { signedOut("Your account has been disabled."); return; }
      const delay = Math.min(30, 2 ** live.retry) * (0.75 + Math.random() / 2);
      live.retry += 1;
      setConn("down", "Connection lost. Reconnecting in " + Math.ceil(delay) + " s");
      live.retryTimer = setTimeout(() => connect(currentView()), delay * 1000);
    };
  }

  function onMessage(m, v) {
    switch (m.type) {
      case "hello": break;
      case "snapshot": {
        // The cursor stays on the same moment if the new buckets hold it
        // (a re-read, a finer granularity), else it starts over: it once
        // sat on an index of the old range and announced "0 tokens".
        const old = live.series && cursorIdx >= 0 ? live.series.points[cursorIdx] : null;
        live.series = m.series; live.freshness = m.freshness;
        setConn("live", m.live ? "Live" : "Up to date");
        render(true);
        cursorIdx = old ? m.series.points.findIndex((p) => p.start === old.start) : -1;
        if (document.activeElement === $("chart")) moveCursor(cursorIdx >= 0 ? cursorIdx : m.series.points.length - 1);
        loadSummary(v); announceView(v); break;
      }
      case "delta":
        // Pushed updates redraw in place and are not announced: the
        // numbers on screen stay current, and a screen reader is not
        // interrupted every few seconds (crossings are announced).
        if (!live.series) return;
        applyDelta(live.series, m); live.freshness = m.freshness;
        render(false); break;
      case "freshness": live.freshness = m.freshness; showFreshness(); break;
      case "error":
        showAlert(m.message);
        if (m.code === "too_many_points") setConn("idle", "Not live");
        break;
      case "budgets": budgetsPushed += 1; renderBudgets(m.budgets); break;
      case "reconciliation":
        if (!m.alerts.length) break;
        // A threshold crossing: said once, and the table re-read.
        $("reconcile-announce").textContent = m.alerts.map((a) => "The " + a.connection + " report for " + a.day
          + " differs from ours by " + num(a.tokens.difference) + " tokens and " + a.cost.difference + " " + a.cost.currency
          + " (alert at " + a.threshold_percent + "%).").join(" ");
        loadReconciliation();
        break;
      case "closing": break;
      default: break;
    }
  }

  async function loadOnce(v) {
    try {
      const to = v.to || addDays(today(), 1);
      const r = await api("/api/v1/usage/series?" + query(v, { to }));
      live.series = await r.json(); live.freshness = null;
      setConn("idle", "Paused");
      render(true); loadSummary(v);
    } catch (e) { if (e.message !== "signed out") showAlert(e.message); }
  }

  /** The overview tables: for a team or everyone, the heaviest members
   * (and teams), projects and models of the range. */
  async function loadOverview(v) {
    const box = $("overview");
    if (!live.series || !viewsMany(v)) { box.hidden = true; return; }
    const q = { from: live.series.from, to: live.series.to, tz: v.tz, limit: 10 };
    if (v.team) q.team = v.team; else q.user = v.user;
    if (v.project) q.project = v.project;
    try {
      const o = await (await api("/api/v1/usage/overview?" + query(q))).json();
      const fill = (id, rows, name) => {
        const tbody = $(id).tBodies[0]; tbody.textContent = "";
        if (!rows.length) { const tr = tbody.insertRow(); cell(tr, "Nothing in this range.", "text").colSpan = 3; return; }
        const column = costColumn(rows.map((r) => r.total));
        for (const r of rows) {
          const tr = tbody.insertRow();
          const th = document.createElement("th"); th.scope = "row"; th.className = "text"; th.textContent = name(r.key); tr.appendChild(th);
          cell(tr, num(r.total.total_tokens)); costCell(tr, r.total, column);
        }
      };
      fill("ov-users", o.users, (k) => k);
      fill("ov-projects", o.projects, projectName);
      fill("ov-models", o.models, (k) => k);
      $("ov-teams-box").hidden = !o.teams.length;
      fill("ov-teams", o.teams, (k) => k);
      $("overview-title").textContent = v.team ? "Team " + v.team + ": overview" : "Everyone: overview";
      box.hidden = false;
    } catch (e) { box.hidden = true; if (e.message !== "signed out") showAlert(e.message); }
  }

  /** The project picker lists the projects of the current view's range. */
  async function loadProjects(v) {
    if (!live.series) return;
    const q = { from: live.series.from, to: live.series.to, tz: v.tz };
    if (v.team) q.team = v.team; else if (v.user) q.user = v.user;
    try {
      const d = await (await api("/api/v1/usage/dimensions?" + query(q))).json();
      const sel = $("project"), keep = sel.value;
      sel.textContent = "";
      const all = document.createElement("option"); all.value = ""; all.textContent = "All projects"; sel.appendChild(all);
      for (const p of d.projects) { const o = document.createElement("option"); o.value = p === "" ? "-" : p; o.textContent = projectName(p); sel.appendChild(o); }
      if (keep && !Array.from(sel.options).some((o) => o.value === keep)) {
        const o = document.createElement("option"); o.value = keep; o.textContent = keep === "-" ? "(no project)" : keep; sel.appendChild(o);
      }
      sel.value = keep;
    } catch (_) { /* the picker keeps its options */ }
  }

  async function loadSummary(v) {
    loadOverview(v); loadProjects(v);
    if (!live.series) return;
    try {
      const r = await api("/api/v1/usage/summary?" + query(v, { to: live.series.to, from: live.series.from }));
      summaryPrev = (await r.json()).previous.total.total_tokens;
    } catch (e) { summaryPrev = null; }
    figures();
  }

  // ---- rendering ----------------------------------------------------------
  // Cost axis ticks carry the currency (US$1.2K); small amounts keep
  // their digits (US$0.0004, not US$0).
  function costAxis() {
    try { return new Intl.NumberFormat(undefined, { style: "currency", currency: currency(), notation: "compact", maximumSignificantDigits: 3 }); }
    catch (e) { return new Intl.NumberFormat(undefined, { notation: "compact", maximumSignificantDigits: 3 }); }
  }
  // The pure parts (lib/) with what the page knows: the series' currency,
  // the chosen measure, the viewer's zone.
  function currency() { return (live.series && live.series.currency) || "USD"; }
  function money(text) { return moneyIn(text, currency()); }
  function costCell(row, sums, column) { return cell(row, costText(sums, currency(), column)); }
  /** One precision for a column of costs (`rows`' sums). */
  function costColumn(rows) { return moneyColumn(rows.map((r) => r.cost), currency()); }
  // The group shown alone (its legend button pressed), if any.
  let isolated = null;
  function chartModel(s) { return modelOf(s, $("metric").value, isolated); }
  function describeChart(s, model) { return describeIn(s, model, $("metric").value, tzName()); }

  function render(full) {
    const s = live.series; if (!s) return;
    const model = chartModel(s);
    const said = describeChart(s, model);
    $("chart-title").textContent = said.title + ".";
    $("chart").setAttribute("aria-label", said.summary);
    const keys = model.lines.map((l) => l.label).join("|") + "|" + model.stacked + "|" + asBars(s) + "|" + tzName() + "|" + document.documentElement.dataset.theme;
    if (!chart || keys !== chartKeys || full) buildChart(model); else chart.setData(drawn(model), false);
    chartKeys = keys;
    if (chart && !full) chart.redraw(false, false);
    figures(); showFreshness();
    if ($("table-details").open || full) table(s);
    if (cursorIdx >= s.points.length) cursorIdx = s.points.length - 1;
  }

  // The value axis: compact numbers (89.1M, 1.5T) and a width measured
  // from its widest label, so no label is ever cut (a fixed 70 px once cut
  // 2,500,000 to ",500,000"). The labels drawn are kept on the chart's
  // element, since the canvas holds no text to read back.
  const AXIS_FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  // Token ticks are figures at a glance (lib/format.js `glance`, tested to 10^12).
  const compact = { format: glance };
  let measureCtx = null;
  function yLabels(vals) {
    const f = $("metric").value === "cost" ? costAxis() : compact;
    const out = vals.map((v) => f.format(v));
    $("chart").dataset.yLabels = out.join("|");
    return out;
  }
  function yAxisWidth(vals) {
    if (!vals || !vals.length) return 50;
    measureCtx = measureCtx || document.createElement("canvas").getContext("2d");
    measureCtx.font = AXIS_FONT;
    const widest = Math.max(...vals.map((v) => measureCtx.measureText(String(v)).width));
    $("chart").dataset.yAxisWidth = String(Math.ceil(widest) + 24);
    $("chart").dataset.yLabelWidth = String(Math.ceil(widest));
    return Math.ceil(widest) + 24;
  }

  // Daily (and coarser) buckets are bars; hours and minutes stay lines.
  let barsDrawn = false;
  function asBars(s) { return !!s && ["day", "week", "month"].includes(s.granularity) && typeof uPlot !== "undefined" && !!uPlot.paths && !!uPlot.paths.bars; }
  /** The columns as drawn: stacked bars in reverse (tallest first). */
  function drawn(model) { return barsDrawn && model.stacked ? [model.data[0], ...model.data.slice(1).reverse()] : model.data; }

  function buildChart(model) {
    const el = $("chart");
    if (chart) { chart.destroy(); chart = null; }
    if (typeof uPlot === "undefined") { el.textContent = "The chart library is missing; the data table below has the numbers."; return; }
    const fg = cssVar("--fg"), rule = cssVar("--rule");
    barsDrawn = asBars(live.series);
    el.dataset.shape = barsDrawn ? "bars" : "lines";
    const series = [{}];
    model.lines.forEach((l) => {
      const i = l.slot;
      const color = cssVar("--s" + (i % 8));
      series.push(barsDrawn
        // Bars keep the series' dash on their outline, so stacked parts
        // differ by more than colour.
        ? { label: l.label, stroke: fg, width: 1, dash: DASHES[i % DASHES.length], fill: color, paths: uPlot.paths.bars({ size: [0.7, 64] }), points: { show: false } }
        : { label: l.label, stroke: color, width: 2, dash: DASHES[i % DASHES.length],
          fill: model.stacked ? color + "33" : undefined, points: { show: model.data[0].length < 60, size: 6 } });
    });
    // Stacked bars are drawn tallest first, each shorter sum over it.
    if (barsDrawn && model.stacked) series.splice(1, series.length - 1, ...series.slice(1).reverse());
    const bands = [];
    if (model.stacked && !barsDrawn) for (let i = model.lines.length; i > 1; i--) bands.push({ series: [i, i - 1] });
    const tz = tzName();
    const xs = model.data[0];
    const pad = xs.length > 1 ? (xs[1] - xs[0]) / 2 : 43200;
    const dayTick = new Intl.DateTimeFormat(undefined, { timeZone: tz, day: "numeric", month: "short" });
    chart = new uPlot({
      width: Math.max(280, el.clientWidth), height: 320, series, bands,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), tz),
      legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { size: 8 } },
      // Bars: half a bucket of room at each end (no bar cut in half), from 0
      // up, and ticks on whole days at least (no "8am" under a daily bar).
      scales: barsDrawn ? { x: { time: true, range: (u, min, max) => [min - pad, max + pad] }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.05 : 1] } } : { x: { time: true } },
      axes: [
        barsDrawn ? { stroke: fg, grid: { stroke: rule }, ticks: { stroke: rule }, incrs: [86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 91 * 86400, 365 * 86400],
          // Dates in the viewer's locale, as everywhere else on the page.
          values: (u, splits) => splits.map((ts) => dayTick.format(new Date(ts * 1000))) }
          : { stroke: fg, grid: { stroke: rule }, ticks: { stroke: rule } },
        { stroke: fg, grid: { stroke: rule }, ticks: { stroke: rule }, font: AXIS_FONT, values: (u, vals) => yLabels(vals), size: (u, vals) => yAxisWidth(vals) },
      ],
      hooks: { setCursor: [(u) => { if (u.cursor.idx != null && u.cursor.idx !== cursorIdx) { cursorIdx = u.cursor.idx; scheduleDetail(); } }] },
    }, drawn(model), el);
    keepingPlace($("legend"), () => legend(model));
  }

  function swatch(i) {
    const svgNS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNS, "svg"); svg.setAttribute("width", "28"); svg.setAttribute("height", "10"); svg.setAttribute("aria-hidden", "true");
    const line = document.createElementNS(svgNS, "line");
    line.setAttribute("x1", "0"); line.setAttribute("y1", "5"); line.setAttribute("x2", "28"); line.setAttribute("y2", "5");
    line.setAttribute("stroke", cssVar("--s" + (i % 8))); line.setAttribute("stroke-width", "3");
    if (DASHES[i % DASHES.length].length) line.setAttribute("stroke-dasharray", DASHES[i % DASHES.length].join(" "));
    svg.appendChild(line);
    return svg;
  }

  /** The legend: every series with its colour and dash; with several
   *  groups, each is a toggle that shows it alone (pressed again: all). */
  function legend(model) {
    const box = $("legend"); box.textContent = "";
    const s = live.series;
    const groups = s && s.series.length > 1 && $("metric").value !== "split";
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", groups ? "Series: press one to show it alone" : "Series");
    const entries = groups ? modelOf(s, $("metric").value).lines : model.lines;
    for (const l of entries) {
      const el = document.createElement(groups ? "button" : "span");
      if (groups) {
        el.type = "button"; el.className = "small series";
        el.setAttribute("aria-pressed", String(isolated === l.key));
        el.dataset.focusKey = "series-" + l.key;
        el.addEventListener("click", () => { isolated = isolated === l.key ? null : l.key; render(true); });
      }
      el.appendChild(swatch(l.slot)); el.appendChild(document.createTextNode(l.label));
      box.appendChild(el);
    }
    if (model.stacked && model.lines.length > 1) box.appendChild(document.createTextNode(" (stacked)"));
    if ($("metric").value === "cost") box.appendChild(document.createTextNode(" · cost in " + ((live.series && live.series.currency) || "USD")));
  }


  /** Unpriced tokens make the cost a lower bound: said, with what to do
   *  (admins: a link to add a price; everyone else: who can). */
  function unpriced(t) {
    const dd = $("fig-unpriced"); dd.textContent = "";
    if (!(t.unpriced_tokens > 0)) { dd.textContent = "none"; return; }
    dd.appendChild(document.createTextNode(num(t.unpriced_tokens) + " "));
    const why = document.createElement("span"); why.className = "exact";
    why.textContent = "No price is known for some models (see the breakdown), so the cost is a lower bound. ";
    if (session.role === "admin") {
      const a = document.createElement("a"); a.href = "/docs/#/admin/set_price"; a.textContent = "Add a price";
      why.appendChild(a);
    } else why.appendChild(document.createTextNode("An admin can add their prices."));
    dd.appendChild(why);
  }

  function figures() {
    const s = live.series; if (!s) return;
    const t = s.total;
    // Each "how much" figure twice: compact at a glance, exact beneath.
    const both = (id, n) => {
      $(id).textContent = num(n);
      const short = n == null ? "" : glance(n);
      $(id + "-glance").textContent = short === num(n) ? "" : short;
    };
    both("fig-total", t.total_tokens);
    $("fig-cost").textContent = (t.unpriced_tokens > 0 && t.cost != null ? "at least " : "") + money(t.cost)
      + (t.supplied_events > 0 ? " (some supplied by publishers)" : "");
    unpriced(t);
    both("fig-input", t.input_tokens);
    both("fig-output", t.output_tokens);
    let peak = -1;
    s.points.forEach((p, i) => { if (p.total_tokens > 0 && (peak < 0 || p.total_tokens > s.points[peak].total_tokens)) peak = i; });
    $("fig-peak").textContent = peak < 0 ? "–" : num(s.points[peak].total_tokens) + " at " + label(s.points[peak].start, s.granularity);
    if (s.points.length) both("fig-avg", Math.round(t.total_tokens / s.points.length)); else { $("fig-avg").textContent = "–"; $("fig-avg-glance").textContent = ""; }
    if (summaryPrev == null) $("fig-change").textContent = "–";
    else if (summaryPrev === 0) $("fig-change").textContent = t.total_tokens ? "new (nothing before)" : "no change";
    else {
      const pct = ((t.total_tokens - summaryPrev) / summaryPrev) * 100;
      $("fig-change").textContent = (pct >= 0 ? "up " : "down ") + Math.abs(pct).toFixed(1) + "%";
    }
  }

  function showFreshness() {
    const f = live.freshness, el = $("freshness");
    if (live.paused) { el.textContent = "Live updates paused."; return; }
    if (!f) { el.textContent = live.series ? "Showing stored history." : "Waiting for data…"; return; }
    const through = f.complete_through ? instant(f.complete_through, tzName(), true) : "not yet known";
    el.textContent = "Complete through " + through + (f.lag_records ? " · " + count(f.lag_records, "event") + " still being counted" : "")
      + (f.lost_records ? " · " + num(f.lost_records) + " published events were lost by the broker before they could be counted, so totals are low (an operator can list them with tokenusage lost)" : "");
  }

  function table(s) { keepingPlace($("table"), () => drawTable(s)); }

  function drawTable(s) {
    const head = $("table").tHead, body = $("table").tBodies[0];
    head.textContent = ""; body.textContent = "";
    const hr = head.insertRow();
    const cols = ["Bucket start (" + s.timezone + ")", "Input", "Output", "Total", "Events", "Cost"].concat(s.series.map((g) => keyName(s.group, g.key) + " (total)"));
    cols.forEach((c, i) => { const th = document.createElement("th"); th.scope = "col"; th.textContent = c; if (i === 0) th.className = "text"; hr.appendChild(th); });
    const column = costColumn(s.points);
    s.points.forEach((p, i) => {
      const tr = body.insertRow();
      const th = document.createElement("th"); th.scope = "row"; th.className = "text"; th.textContent = label(p.start, s.granularity); tr.appendChild(th);
      cell(tr, num(p.input_tokens)); cell(tr, num(p.output_tokens)); cell(tr, num(p.total_tokens)); cell(tr, num(p.events));
      costCell(tr, p, column);
      for (const g of s.series) cell(tr, num(g.input_tokens[i] + g.output_tokens[i]));
    });
  }

  // ---- keyboard navigation, announcements, breakdown ----------------------
  function moveCursor(i) {
    const s = live.series; if (!s || !chart || !s.points.length) return;
    cursorIdx = Math.max(0, Math.min(s.points.length - 1, i));
    const x = chart.valToPos(chart.data[0][cursorIdx], "x");
    const top = chart.valToPos(Math.max(0, ...chart.data.slice(1).map((c) => c[cursorIdx] || 0)), "y");
    chart.setCursor({ left: x, top });
    const p = s.points[cursorIdx];
    $("point-live").textContent = label(p.start, s.granularity) + ": " + num(p.total_tokens) + " tokens, input " + num(p.input_tokens) + ", output " + num(p.output_tokens) + ", " + count(p.events, "event") + ", cost " + money(p.cost) + (p.unpriced_tokens ? ", " + num(p.unpriced_tokens) + " tokens unpriced" : "");
    scheduleDetail();
  }

  function onChartKey(e) {
    const s = live.series; if (!s) return;
    const keys = { ArrowRight: 1, ArrowLeft: -1, ArrowUp: 1, ArrowDown: -1, PageUp: 10, PageDown: -10 };
    if (e.key in keys) { e.preventDefault(); moveCursor((cursorIdx < 0 ? 0 : cursorIdx + keys[e.key])); }
    else if (e.key === "Home") { e.preventDefault(); moveCursor(0); }
    else if (e.key === "End") { e.preventDefault(); moveCursor(s.points.length - 1); }
    else if (e.key === "Enter") { e.preventDefault(); showDetail(); $("detail-table").hidden || $("detail-title").scrollIntoView({ block: "nearest" }); }
  }

  /** Says what a view the person asked for shows, once per view (a
   *  reconnect's fresh snapshot of the same view is not news). */
  function announceView(v) {
    const key = JSON.stringify(v);
    if (key === announcedView || !live.series) return;
    announcedView = key;
    $("live-announce").textContent = "Showing " + num(live.series.total.total_tokens) + " tokens in this view.";
  }

  function scheduleDetail() { clearTimeout(detailTimer); detailTimer = setTimeout(showDetail, 250); }

  async function showDetail() {
    const s = live.series; if (!s || cursorIdx < 0 || !s.points[cursorIdx]) return;
    const p = s.points[cursorIdx];
    const q = { from: p.start, to: p.end, tz: s.timezone };
    if (s.user && s.user.startsWith("team:")) q.team = s.user.slice(5);
    else if (s.user && s.user !== session.user) q.user = s.user;
    if (s.filters && s.filters.project && s.filters.project.length) q.project = s.filters.project.map((x) => (x === "" ? "-" : x)).join(",");
    try {
      const r = await api("/api/v1/usage/breakdown?" + query(q));
      const b = await r.json();
      const tbody = $("detail-table").tBodies[0]; tbody.textContent = "";
      const column = costColumn(b.rows);
      for (const row of b.rows) {
        const tr = tbody.insertRow();
        cell(tr, row.activity, "text"); cell(tr, row.model, "text"); cell(tr, projectName(row.project), "text"); cell(tr, num(row.input_tokens)); cell(tr, num(row.output_tokens)); cell(tr, num(row.events));
        const c = costCell(tr, row, column);
        if (row.unpriced_tokens > 0 && session.role === "admin") c.title = "Add a price: tokenusage prices set " + row.model + " --from … --input … --output …";
      }
      $("detail-caption").textContent = label(p.start, s.granularity) + ": " + num(b.total.total_tokens) + " tokens by activity, model and project";
      $("detail-table").hidden = false;
      $("detail-hint").textContent = b.rows.length ? "" : "No usage in this bucket.";
    } catch (e) { if (e.message !== "signed out") showAlert(e.message); }
  }

  // ---- CSV, admin, views of me ------------------------------------------
  async function downloadCsv() {
    const v = currentView(); if (v.error) { showAlert(v.error); return; }
    const s = live.series; if (!s) return;
    try {
      const q = Object.assign({}, v, { from: s.from, to: s.to });
      const r = await api("/api/v1/usage/export.csv?" + query(q));
      const blob = await r.blob();
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      const m = /filename="([^"]+)"/.exec(r.headers.get("content-disposition") || "");
      a.download = m ? m[1] : "tokenusage.csv";
      document.body.appendChild(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (e) { if (e.message !== "signed out") showAlert("The CSV could not be downloaded: " + e.message); }
  }

  function auditRows(tbody, rows, cols) {
    tbody.textContent = "";
    if (!rows.length) { const tr = tbody.insertRow(); const td = cell(tr, "Nothing yet.", "text"); td.colSpan = cols; return; }
    return rows;
  }

  async function loadViews() {
    try {
      const rows = await (await api("/api/v1/audit/views?limit=20")).json();
      const tbody = $("views-table").tBodies[0];
      if (!auditRows(tbody, rows, 5)) return;
      for (const r of rows) {
        const tr = tbody.insertRow();
        // An admin's all-users view covered this user too; a denied attempt is shown as such.
        const outcome = r.outcome === "denied" ? "Refused"
          : r.subject === "*" ? "Viewed (all users)"
          : r.subject && r.subject.startsWith("team:") ? "Viewed (team " + r.subject.slice(5) + ")" : "Viewed";
        cell(tr, instant(r.at, tzName(), true), "text"); cell(tr, r.actor || "?", "text"); cell(tr, actionName(r.action), "text");
        cell(tr, outcome, "text"); cell(tr, r.ip || "", "text");
      }
    } catch (e) { if (e.message !== "signed out") showAlert(e.message); }
  }

  // ---- budgets ------------------------------------------------------------
  // Thresholds seen crossed (budget id, window, threshold, crossed at), so a
  // new crossing is announced once; the first list only fills it.
  let crossedSeen = null;
  // Pushes counted, so a REST answer that a push overtook is not drawn
  // over the newer list.
  let budgetsPushed = 0;

  function budgetName(b) { return nameFor(b, session.user); }

  // Live updates rebuild parts of the page; a person using them must not
  // lose their place. Whatever had focus inside `container` (found again by
  // its data-focus-key or id) gets it back, and the scroll position of the
  // scrolling region around it is kept.
  function keepingPlace(container, rebuild) {
    const active = document.activeElement;
    const key = active && container.contains(active) ? (active.dataset.focusKey || active.id) : null;
    const region = container.closest(".scroll");
    const scroll = region ? [region.scrollTop, region.scrollLeft] : null;
    rebuild();
    if (region) { region.scrollTop = scroll[0]; region.scrollLeft = scroll[1]; }
    if (!key) return;
    const again = Array.from(container.querySelectorAll("[data-focus-key], [id]")).find((el) => (el.dataset.focusKey || el.id) === key);
    if (again) again.focus({ preventScroll: true });
  }

  function renderBudgets(list) { keepingPlace($("budget-list"), () => drawBudgets(list)); }

  function drawBudgets(list) {
    const ul = $("budget-list"); ul.textContent = "";
    $("budgets-empty").hidden = list.length > 0;
    const seen = new Set(); const fresh = [];
    for (const b of list) {
      const li = document.createElement("li");
      // Focusable by script only: where focus lands after "Set budget".
      li.id = "budget-" + b.id; li.tabIndex = -1;
      const name = document.createElement("span"); name.className = "budget-name"; name.id = "budget-" + b.id + "-name";
      name.textContent = budgetName(b); li.appendChild(name);
      const bar = document.createElement("progress"); bar.max = 100;
      bar.setAttribute("aria-labelledby", name.id); bar.setAttribute("aria-describedby", "budget-" + b.id + "-text");
      const text = document.createElement("span"); text.className = "budget-text"; text.id = "budget-" + b.id + "-text";
      const s = b.state;
      if (!s) {
        bar.removeAttribute("value"); text.textContent = "Not evaluated yet.";
      } else {
        bar.value = Math.min(100, s.percent);
        if (s.over) li.className = "over"; else if (s.crossed.some((c) => !c.resolved_at)) li.className = "warn";
        text.textContent = budgetSentence(b, currency());
        for (const c of s.crossed) {
          if (c.resolved_at) continue;
          const k = b.id + "/" + s.window_start + "/" + c.threshold + "/" + c.crossed_at; seen.add(k);
          if (crossedSeen && !crossedSeen.has(k)) fresh.push("Budget " + budgetName(b) + " crossed " + c.threshold + " %.");
        }
      }
      li.appendChild(bar); li.appendChild(text);
      if (maySet(b.scope)) {
        const rm = document.createElement("button"); rm.type = "button"; rm.className = "small"; rm.textContent = "Remove";
        rm.setAttribute("aria-label", "Remove budget " + budgetName(b)); rm.dataset.focusKey = "remove-" + b.id;
        rm.addEventListener("click", () => removeBudget(b));
        li.appendChild(rm);
      }
      ul.appendChild(li);
    }
    if (fresh.length) $("budget-announce").textContent = fresh.join(" ");
    crossedSeen = seen;
  }

  async function loadBudgets() {
    const pushed = budgetsPushed;
    try {
      const list = await (await api("/api/v1/budgets")).json();
      if (pushed === budgetsPushed) renderBudgets(list);
    }
    catch (e) { if (e.message !== "signed out") showAlert(e.message); }
  }

  async function removeBudget(b) {
    if (!window.confirm("Remove the budget " + b.name + "? Its alerts stop.")) return;
    try { await api("/api/v1/budgets/" + b.id, { method: "DELETE" }); await loadBudgets(); $("budgets-title").focus(); }
    catch (e) { if (e.message !== "signed out") showAlert(e.message); }
  }

  /** Whether the caller may set or remove budgets on a scope: the server's
   *  rule, as /api/v1/me lists it (never worked out here). */
  function maySet(scope) {
    const set = session.access && session.access.set;
    return !!set && (set.everything || set.scopes.some((s) => s.kind === scope.kind && s.id === scope.id));
  }

  /** Whom a budget set here may cover, as the server lists it: the caller,
   *  and the teams they may set budgets on. */
  function budgetScopes() {
    const sel = $("budget-scope"); sel.textContent = "";
    const me = document.createElement("option"); me.value = ""; me.textContent = "Me (" + session.user + ")"; sel.appendChild(me);
    const teams = session.access ? session.access.set.scopes.filter((s) => s.kind === "team") : [];
    for (const t of teams) { const o = document.createElement("option"); o.value = t.id; o.textContent = "Team " + t.id; sel.appendChild(o); }
  }

  async function createBudget(ev) {
    ev.preventDefault();
    const err = $("budget-error"); err.textContent = "";
    for (const id of ["budget-name", "budget-tokens", "budget-thresholds"]) $(id).removeAttribute("aria-invalid");
    const refuse = (id, message) => { err.textContent = message; $(id).setAttribute("aria-invalid", "true"); $(id).focus(); };
    // A name people chose, so two budgets on one scope are told apart.
    const name = $("budget-name").value.trim();
    if (!name) { refuse("budget-name", "Name the budget, like “Monthly API spend”."); return; }
    const cost = $("budget-measure").value === "cost";
    // Tokens: group separators of any locale are dropped ("10,000,000",
    // "10.000.000"). Cost: a lone decimal comma is read as a point ("12,50").
    const typed = $("budget-tokens").value.replace(/\s/g, "");
    const raw = cost ? (/^\d+,\d{1,9}$/.test(typed) ? typed.replace(",", ".") : typed) : typed.replace(/[,._']/g, "");
    // Cost goes as exact decimal text (the server keeps nano-units); tokens as an integer.
    const ok = cost ? /^\d+(\.\d{1,9})?$/.test(raw) && Number(raw) > 0 : /^\d+$/.test(raw) && Number(raw) >= 1;
    if (!ok) {
      refuse("budget-tokens", cost ? "Enter a cost above 0, like 250 or 12.50." : "Enter a whole number of tokens, at least 1."); return;
    }
    // Every part typed is a threshold or an error naming it: nothing is
    // dropped silently ("120%" is 120; "eighty" is refused, not skipped).
    const parts = $("budget-thresholds").value.split(",").map((x) => x.trim()).filter((x) => x !== "");
    const bad = parts.filter((x) => !/^[0-9]{1,4}\s*%?$/.test(x) || +x.replace("%", "") < 1 || +x.replace("%", "") > 1000);
    const thresholds = parts.map((x) => Number(x.replace("%", "").trim()));
    if (!parts.length || bad.length) {
      refuse("budget-thresholds", (bad.length ? "Not a threshold: " + bad.map((x) => "“" + x + "”").join(", ") + ". " : "")
        + "Alert thresholds are whole percentages from 1 to 1000, like 50, 80, 100."); return;
    }
    const team = $("budget-scope").value;
    const body = { name, scope: team ? { kind: "team", id: team } : { kind: "user", id: session.user }, measure: cost ? "cost" : "tokens", amount: cost ? raw : Number(raw), period: $("budget-period").value,
      zone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC", thresholds };
    try {
      const r = await api("/api/v1/budgets", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const made = await r.json();
      $("budget-new").open = false; $("budget-tokens").value = ""; $("budget-name").value = "";
      await loadBudgets();
      // Said, and focus on the new budget in the list (not lost to <body>).
      $("budget-announce").textContent = "Budget set: " + budgetName(made) + ".";
      const item = document.getElementById("budget-" + made.id);
      if (item) item.focus(); else $("budget-new").querySelector("summary").focus();
    } catch (e) {
      if (e.message === "signed out") return;
      // A name taken on this scope is the name field's error.
      if (e.status === 409) refuse("budget-name", e.message); else err.textContent = e.message;
    }
  }

  async function loadAudit(ev) {
    if (ev) ev.preventDefault();
    const q = { actor: $("audit-actor").value.trim(), subject: $("audit-subject").value.trim(), action: $("audit-action").value.trim(), limit: 50 };
    try {
      const rows = await (await api("/api/v1/admin/audit?" + query(q))).json();
      const tbody = $("audit-table").tBodies[0];
      if (!auditRows(tbody, rows, 7)) return;
      // A search for one action lists its entries one by one; otherwise
      // the reads one page view makes are one row, so who looked at what
      // stands out from the dashboard's own traffic.
      for (const g of q.action ? rows.map((r) => [r]) : groupReads(rows)) {
        const r = g[0], tr = tbody.insertRow();
        const subjects = [...new Set(g.map((x) => x.subject).filter(Boolean))];
        const rowsSeen = g.some((x) => x.rows != null) ? g.reduce((a, x) => a + (x.rows || 0), 0) : null;
        const what = g.length === 1 ? r.action
          : "Dashboard, " + g.length + " reads: " + [...new Set(g.map((x) => actionName(x.action)))].join(", ");
        cell(tr, instant(r.at, tzName(), true), "text"); cell(tr, r.actor || "–", "text"); cell(tr, what, "text");
        cell(tr, subjects.join(", ") || "–", "text"); cell(tr, r.outcome, "text"); cell(tr, rowsSeen == null ? "–" : num(rowsSeen)); cell(tr, r.ip || "", "text");
      }
    } catch (e) { if (e.message !== "signed out") showAlert(e.message); }
  }

  /** The reconciliation of the view's days (admins): only lines that differ. */
  async function loadReconciliation() {
    const v = currentView();
    if (v.error) return;
    const from = v.from, last = addDays(v.to || addDays(today(), 1), -1);
    const status = $("reconcile-status"), tbody = $("reconcile-table").tBodies[0];
    // Long ranges are answered a day at a time (a year of lines is
    // hundreds of thousands); a month or less line by line.
    const byDay = (Date.parse(last) - Date.parse(from)) / 86400000 >= 31;
    try {
      const r = await (await api("/api/v1/admin/reconciliation?" + query(byDay ? { from, to: last, by: "day" } : { from, to: last }))).json();
      const rep = r.report;
      const conns = Object.keys(rep.imported_through);
      tbody.textContent = "";
      if (!conns.length) {
        status.textContent = "No provider is connected: an operator connects OpenAI or Anthropic reports with tokenusage providers add (docs/RECONCILIATION.md).";
        auditRows(tbody, [], 9);
        return;
      }
      fillMapForm(conns, rep.lines || []);
      const read = conns.map((c) => c + ": reports read through " + (rep.imported_through[c] ? addDays(rep.imported_through[c], -1) : "nothing yet")).join("; ");
      const rows = byDay ? rep.days : rep.lines;
      const differ = rows.filter((l) => l.reasons.length || l.token_difference !== 0 || (l.cost_difference_nanos || 0) !== 0);
      status.textContent = read + ". " + differ.length + " of " + rows.length + (byDay
        ? " days differ (all models together; choose a month or less for lines by model and scope)."
        : " lines differ.");
      if (!auditRows(tbody, differ, 9)) return;
      const tokens = (x) => x ? num(x.input_tokens + x.output_tokens) : "–";
      const amount = (n, cur) => new Intl.NumberFormat(undefined, { style: "currency", currency: cur, minimumFractionDigits: 2, maximumFractionDigits: 6 }).format(n / 1e9);
      if (byDay) {
        for (const d of differ) {
          const tr = tbody.insertRow();
          cell(tr, d.day, "text"); cell(tr, d.connection, "text"); cell(tr, "(all models)", "text");
          cell(tr, d.unmapped_tokens ? num(d.unmapped_tokens) + " tokens unmapped" : "everything mapped", "text");
          cell(tr, tokens(d.ours)); cell(tr, tokens(d.reported));
          cell(tr, amount(d.ours.cost_nanos, rep.currency)); cell(tr, d.billed_nanos == null ? "–" : amount(d.billed_nanos, rep.currency));
          cell(tr, d.reasons.map((c) => rep.explanations[c] || c).join("; ") || "amounts differ", "text");
        }
        return;
      }
      for (const l of differ) {
        const tr = tbody.insertRow();
        const scope = l.target ? [l.target.source && "source " + l.target.source, l.target.project && "project " + l.target.project].filter(Boolean).join(", ")
          : "unmapped " + (l.provider_scope || "(default)");
        cell(tr, l.day, "text"); cell(tr, l.connection || "–", "text"); cell(tr, l.model || "(no model)", "text"); cell(tr, scope, "text");
        cell(tr, tokens(l.ours)); cell(tr, tokens(l.reported));
        cell(tr, l.ours ? amount(l.ours.cost_nanos, rep.currency) : "–"); cell(tr, l.billed ? amount(l.billed.amount_nanos, l.billed.currency) : "–");
        cell(tr, l.reasons.map((c) => rep.explanations[c] || c).join("; ") || "amounts differ", "text");
      }
    } catch (e) { if (e.message !== "signed out") showAlert(e.message); }
  }

  /** The mapping form's choices: the connections, and the unmapped provider ids of the range. */
  function fillMapForm(conns, lines) {
    const sel = $("map-connection"), keep = sel.value;
    sel.textContent = "";
    for (const c of conns) sel.add(new Option(c, c, false, c === keep));
    const list = $("map-unmapped");
    list.textContent = "";
    const seen = new Set(lines.filter((l) => !l.target && l.provider_scope != null).map((l) => l.provider_scope || "default"));
    for (const id of seen) list.appendChild(new Option(id));
  }

  async function createMapping(ev) {
    ev.preventDefault();
    const err = $("map-error");
    err.textContent = "";
    const conn = $("map-connection").value, external = $("map-external").value.trim();
    const project = $("map-project").value.trim(), source = $("map-source").value.trim();
    const wrong = (field, msg) => { err.textContent = msg; $(field).setAttribute("aria-invalid", "true"); $(field).focus(); };
    for (const f of ["map-external", "map-project", "map-source"]) $(f).removeAttribute("aria-invalid");
    if (!conn) { wrong("map-connection", "Connect a provider first (tokenusage providers add)."); return; }
    if (!external) { wrong("map-external", "Give the provider's id of the project, workspace or key."); return; }
    if (!project && !source) { wrong("map-project", "Give our project, our publisher, or both."); return; }
    const body = { kind: $("map-kind").value, external_id: external, target_project: project || null, target_source: source || null };
    try {
      await api("/api/v1/admin/providers/" + encodeURIComponent(conn) + "/mappings",
        { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      $("map-announce").textContent = "Mapped " + external + " of " + conn + " to " + [project && "project " + project, source && "publisher " + source].filter(Boolean).join(" and ") + ".";
      $("map-external").value = ""; $("map-project").value = ""; $("map-source").value = "";
      $("map-external").focus();
      loadReconciliation();
    } catch (e) {
      if (e.message !== "signed out") wrong("map-external", e.message);
    }
  }

  async function downloadReconciliation(ev) {
    ev.preventDefault();
    const v = currentView();
    if (v.error) { showAlert(v.error); return; }
    try {
      const r = await api("/api/v1/admin/reconciliation.csv?" + query({ from: v.from, to: addDays(v.to || addDays(today(), 1), -1) }));
      const a = document.createElement("a");
      a.href = URL.createObjectURL(await r.blob()); a.download = "tokenusage-reconciliation.csv";
      document.body.appendChild(a); a.click(); a.remove();
    } catch (e) { if (e.message !== "signed out") showAlert(e.message); }
  }

  async function loadUserPicker() {
    try {
      const r = await api("/api/v1/admin/usage/top-users?" + query({ from: addMonths(today(), -11), to: addDays(today(), 1), limit: 200 }));
      const list = $("user-list"); list.textContent = "";
      const all = document.createElement("option"); all.value = "*"; all.textContent = "All users"; list.appendChild(all);
      for (const u of (await r.json()).users) { const o = document.createElement("option"); o.value = u.user; list.appendChild(o); }
    } catch (_) { /* the picker still takes free text */ }
  }

  /** What the caller may see and set (the server's access rule), and the
   *  team picker from it: teams the caller manages (admins: every team). */
  async function loadTeams() {
    try {
      session.access = (await (await api("/api/v1/me")).json()).access;
      session.teams = session.access.see.scopes.filter((s) => s.kind === "team").map((s) => s.id);
    } catch (_) { session.access = null; session.teams = []; }
    const sel = $("team"); sel.textContent = "";
    const none = document.createElement("option"); none.value = "";
    none.textContent = session.role === "admin" ? "None: the user above" : "None: my own usage"; sel.appendChild(none);
    for (const name of session.teams) { const o = document.createElement("option"); o.value = name; o.textContent = name; sel.appendChild(o); }
    $("team-field").hidden = !session.teams.length;
    // A manager starts on their own usage; the team is one choice away.
    sel.value = "";
    manyOptions();
  }

  /** "Member" stacking is offered only when the view holds several people. */
  function manyOptions() {
    const many = !!$("team").value || (session.role === "admin" && $("user").value.trim() === "*");
    for (const o of document.querySelectorAll("#group .many-only")) { o.hidden = !many; o.disabled = !many; }
    if (!many && $("group").value === "user") $("group").value = "activity";
  }

  // ---- wiring ---------------------------------------------------------------
  function showDashboard() {
    $("sign-in").hidden = true; $("dashboard").hidden = false; $("who").hidden = false;
    $("who-name").textContent = session.user + (session.role === "admin" ? " (admin)" : "");
    const admin = session.role === "admin";
    for (const el of document.querySelectorAll(".admin-only")) el.hidden = !admin;
    // An admin comes to see the organisation: start on everyone's usage
    // (their own is one entry of the picker away).
    $("user").value = admin ? "*" : "";
    loadTeams().then(() => { budgetScopes(); startLive(); loadBudgets(); }); loadViews();
    if (admin) { loadAudit(); loadUserPicker(); loadReconciliation(); }
    $("dash-title").focus({ preventScroll: true });
  }

  function applyTheme(theme) {
    document.documentElement.dataset.theme = theme;
    const dark = theme === "dark";
    $("theme").setAttribute("aria-pressed", String(dark));
    if (live.series) render(true);
  }

  // The chart follows its box: a narrower window (or 200 % zoom) once left
  // it at its first width, and the whole page scrolled sideways.
  function followWidth() {
    if (typeof ResizeObserver === "undefined") return;
    new ResizeObserver(() => {
      const w = Math.max(280, $("chart").clientWidth);
      if (chart && Math.abs(w - chart.width) > 1) chart.setSize({ width: w, height: 320 });
    }).observe($("chart"));
  }

  function init() {
    followWidth();
    const stored = localStorage.getItem("tokenusage-theme");
    applyTheme(stored || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
    $("theme").addEventListener("click", () => {
      const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
      localStorage.setItem("tokenusage-theme", next); applyTheme(next);
    });
    const browserTz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    $("tz").value = browserTz;
    const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [browserTz, "UTC"];
    const dl = $("tz-list");
    for (const z of zones) { const o = document.createElement("option"); o.value = z; dl.appendChild(o); }
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", signOut);
    $("controls").addEventListener("submit", (e) => { e.preventDefault(); startLive(); });
    $("range").addEventListener("change", () => {
      const custom = $("range").value === "custom";
      $("custom-from-field").hidden = !custom; $("custom-to-field").hidden = !custom;
      if (custom && !$("custom-from").value) { $("custom-from").value = addDays(today(), -6); $("custom-to").value = today(); }
      startLive();
    });
    for (const id of ["custom-from", "custom-to", "granularity", "group", "project"]) $(id).addEventListener("change", startLive);
    for (const id of ["range", "custom-from", "custom-to"]) $(id).addEventListener("change", () => { if (session.role === "admin") loadReconciliation(); });
    for (const id of ["team", "user"]) $(id).addEventListener("change", () => { manyOptions(); startLive(); });
    $("tz").addEventListener("change", () => {
      if (!zones.includes($("tz").value.trim())) { showAlert("Unknown time zone: pick one from the list (for example Europe/Berlin)."); return; }
      startLive();
    });
    $("metric").addEventListener("change", () => render(true));
    $("pause").addEventListener("click", () => {
      live.paused = !live.paused;
      $("pause").setAttribute("aria-pressed", String(live.paused));
      $("pause").textContent = live.paused ? "Resume live updates" : "Pause live updates";
      startLive();
    });
    $("csv").addEventListener("click", downloadCsv);
    $("chart").addEventListener("keydown", onChartKey);
    $("chart").addEventListener("focus", () => { if (cursorIdx < 0 && live.series) moveCursor(live.series.points.length - 1); });
    $("chart").addEventListener("click", showDetail);
    $("table-details").addEventListener("toggle", () => { if ($("table-details").open && live.series) table(live.series); });
    $("audit-form").addEventListener("submit", loadAudit);
    $("reconcile-csv").addEventListener("click", downloadReconciliation);
    $("map-form").addEventListener("submit", createMapping);
    $("budget-form").addEventListener("submit", createBudget);
    $("budget-measure").addEventListener("change", () => {
      const cost = $("budget-measure").value === "cost";
      $("budget-amount-label").textContent = cost ? "Cost in " + ((live.series && live.series.currency) || "USD") : "Tokens";
      $("budget-tokens").inputMode = cost ? "decimal" : "numeric";
    });
    $("dash-title").tabIndex = -1;
    $("budgets-title").tabIndex = -1;
    new ResizeObserver(() => { if (chart) chart.setSize({ width: Math.max(280, $("chart").clientWidth), height: 320 }); }).observe($("chart"));
    refresh().then((ok) => (ok ? showDashboard() : signedOut("")));
  }

  document.addEventListener("DOMContentLoaded", init);
})();
