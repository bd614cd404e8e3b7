// Who viewed my usage, and the admins' views: audit search,
// reconciliation, mappings, the user and team pickers.

import { actionName, groupReads } from "../lib/audit.js";
import { addDays, addMonths, instant, num } from "../lib/format.js";
import { currency } from "./chart.js";
import { $, auditRows, cell, showAlert, tzName } from "./dom.js";
import { api } from "./session.js";
import { session } from "./state.js";
import { currentView, query, today } from "./view.js";

export async function loadViews() {
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

// Thresholds seen crossed (budget id, window, threshold, crossed at), so a
// new crossing is announced once; the first list only fills it.

export async function loadAudit(ev) {
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

export async function loadReconciliation() {
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

export function fillMapForm(conns, lines) {
  const sel = $("map-connection"), keep = sel.value;
  sel.textContent = "";
  for (const c of conns) sel.add(new Option(c, c, false, c === keep));
  const list = $("map-unmapped");
  list.textContent = "";
  const seen = new Set(lines.filter((l) => !l.target && l.provider_scope != null).map((l) => l.provider_scope || "default"));
  for (const id of seen) list.appendChild(new Option(id));
}

export async function createMapping(ev) {
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

export async function downloadReconciliation(ev) {
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

export async function loadUserPicker() {
  try {
    const r = await api("/api/v1/admin/usage/top-users?" + query({ from: addMonths(today(), -11), to: addDays(today(), 1), limit: 200 }));
    const list = $("user-list"); list.textContent = "";
    const all = document.createElement("option"); all.value = "*"; all.textContent = "All users"; list.appendChild(all);
    for (const u of (await r.json()).users) { const o = document.createElement("option"); o.value = u.user; list.appendChild(o); }
  } catch (_) { /* the picker still takes free text */ }
}

/** What the caller may see and set (the server's access rule), and the
 *  team picker from it: teams the caller manages (admins: every team). */

export async function loadTeams() {
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

export function manyOptions() {
  const many = !!$("team").value || (session.role === "admin" && $("user").value.trim() === "*");
  for (const o of document.querySelectorAll("#group .many-only")) { o.hidden = !many; o.disabled = !many; }
  if (!many && $("group").value === "user") $("group").value = "activity";
}
