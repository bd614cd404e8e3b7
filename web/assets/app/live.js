// The live subscription: a snapshot, then deltas applied in place;
// reconnects with backoff; the overview, projects and summary beside it.

import { applyDelta } from "../lib/delta.js";
import { addDays, num } from "../lib/format.js";
import { loadReconciliation } from "./admin.js";
import { renderBudgets } from "./budgets.js";
import { announceView, figures, moveCursor, render, showFreshness } from "./chart.js";
import { $, cell, setConn, showAlert } from "./dom.js";
import { api, refresh, signedOut } from "./session.js";
import { live, session, ui } from "./state.js";
import { costCell, costColumn } from "./table.js";
import { currentView, projectName, query, today, viewSaid, viewsMany } from "./view.js";

export function stopLive() {
  live.wanted = false; clearTimeout(live.retryTimer);
  if (live.ws) { live.ws.onclose = null; live.ws.close(1000); live.ws = null; }
}

export function startLive() {
  stopLive();
  ui.isolated = null;
  const v = currentView();
  if (v.error) { showAlert(v.error); return; }
  $("view-said").textContent = viewSaid(v);
  showAlert("");
  live.wanted = true;
  if (live.paused) { loadOnce(v); return; }
  connect(v);
}

export function connect(v) {
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

export function onMessage(m, v) {
  switch (m.type) {
    case "hello": break;
    case "snapshot": {
      // The cursor stays on the same moment if the new buckets hold it
      // (a re-read, a finer granularity), else it starts over: it once
      // sat on an index of the old range and announced "0 tokens".
      const old = live.series && ui.cursorIdx >= 0 ? live.series.points[ui.cursorIdx] : null;
      live.series = m.series; live.freshness = m.freshness;
      setConn("live", m.live ? "Live" : "Up to date");
      render(true);
      ui.cursorIdx = old ? m.series.points.findIndex((p) => p.start === old.start) : -1;
      if (document.activeElement === $("chart")) moveCursor(ui.cursorIdx >= 0 ? ui.cursorIdx : m.series.points.length - 1);
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
    case "budgets": ui.budgetsPushed += 1; renderBudgets(m.budgets); break;
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

export async function loadOnce(v) {
  try {
    const to = v.to || addDays(today(), 1);
    const r = await api("/api/v1/usage/series?" + query(v, { to }));
    live.series = await r.json(); live.freshness = live.series.freshness || null;
    setConn("idle", "Paused");
    render(true); loadSummary(v);
  } catch (e) { if (e.message !== "signed out") showAlert(e.message); }
}

/** The overview tables: for a team or everyone, the heaviest members
 * (and teams), projects and models of the range. */

export async function loadOverview(v) {
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

export async function loadProjects(v) {
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

export async function loadSummary(v) {
  loadOverview(v); loadProjects(v);
  if (!live.series) return;
  try {
    const r = await api("/api/v1/usage/summary?" + query(v, { to: live.series.to, from: live.series.from }));
    ui.summaryPrev = (await r.json()).previous.total.total_tokens;
  } catch (e) { ui.summaryPrev = null; }
  figures();
}

// Cost axis ticks carry the currency (US$1.2K); small amounts keep
// their digits (US$0.0004, not US$0).
