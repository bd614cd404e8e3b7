// The data table, a bucket's breakdown and the CSV download.

import { keyName } from "../lib/chart-model.js";
import { costText, moneyColumn, num } from "../lib/format.js";
import { currency } from "./chart.js";
import { $, cell, keepingPlace, label, showAlert } from "./dom.js";
import { api } from "./session.js";
import { live, session, ui } from "./state.js";
import { currentView, projectName, query } from "./view.js";

export function costCell(row, sums, column) { return cell(row, costText(sums, currency(), column)); }
/** One precision for a column of costs (`rows`' sums). */

export function costColumn(rows) { return moneyColumn(rows.map((r) => r.cost), currency()); }
// The group shown alone (its legend button pressed), if any.

export function table(s) { keepingPlace($("table"), () => drawTable(s)); }

export function drawTable(s) {
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

export function scheduleDetail() { clearTimeout(ui.detailTimer); ui.detailTimer = setTimeout(showDetail, 250); }

export async function showDetail() {
  const s = live.series; if (!s || ui.cursorIdx < 0 || !s.points[ui.cursorIdx]) return;
  const p = s.points[ui.cursorIdx];
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

export async function downloadCsv() {
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
