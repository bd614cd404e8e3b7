// The tokenusage dashboard: plain JavaScript modules, no build step, no
// inline code (the CSP forbids it). It talks to the API like any other
// client:
// - the access token lives in memory only; the session is an HttpOnly
//   cookie that /api/v1/auth/refresh turns into a new token (on load and
//   before expiry);
// - the chart is a live subscription (WebSocket, protocol tokenusage.v1,
//   token as a subprotocol, never in a URL): a snapshot, then deltas applied
//   in place; reconnects with backoff;
// - every chart has a data table; the chart itself is keyboard navigable.
//
// This file wires the page; the parts, by concern, are in app/: `session`
// (sign-in and the API), `view` (what the controls describe), `live` (the
// subscription), `chart` (the chart, its legend, words and figures),
// `table` (the data table, breakdown, CSV), `budgets`, `admin` (audit,
// reconciliation, pickers), with `state` (what they share) and `dom`. Their
// pure logic is in lib/, unit-tested with `node --test` (web/tests/unit/).
import { createMapping, downloadReconciliation, loadAudit, loadReconciliation, loadTeams, loadUserPicker, loadViews, manyOptions } from "./app/admin.js";
import { budgetScopes, createBudget, loadBudgets } from "./app/budgets.js";
import { moveCursor, onChartKey, render } from "./app/chart.js";
import { $, showAlert } from "./app/dom.js";
import { startLive } from "./app/live.js";
import { refresh, signedOut, signIn, signOut, whenSignedIn } from "./app/session.js";
import { live, session, ui } from "./app/state.js";
import { downloadCsv, showDetail, table } from "./app/table.js";
import { today } from "./app/view.js";
import { addDays } from "./lib/format.js";

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

function init() {
  whenSignedIn(showDashboard);
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
  $("chart").addEventListener("focus", () => { if (ui.cursorIdx < 0 && live.series) moveCursor(live.series.points.length - 1); });
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
  new ResizeObserver(() => { if (ui.chart) ui.chart.setSize({ width: Math.max(280, $("chart").clientWidth), height: 320 }); }).observe($("chart"));
  refresh().then((ok) => (ok ? showDashboard() : signedOut("")));
}

document.addEventListener("DOMContentLoaded", init);
