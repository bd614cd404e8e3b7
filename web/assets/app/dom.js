// Small DOM helpers every part of the page uses.

import { bucketLabel } from "../lib/format.js";

export const $ = (id) => document.getElementById(id);

export const DASHES = [[], [6, 3], [2, 3], [8, 3, 2, 3], [12, 4], [1, 3], [4, 4], [10, 2, 2, 2]];

export function showAlert(msg) { const a = $("alert"); a.textContent = msg; a.hidden = !msg; }

export function setConn(state, text) { $("conn").dataset.state = state; $("conn-text").textContent = text; }

export function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

export function cell(row, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; row.appendChild(td); return td; }

export function tzName() { return $("tz").value.trim() || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; }

export function label(iso, gran) { return bucketLabel(iso, gran, tzName()); }

export function auditRows(tbody, rows, cols) {
  tbody.textContent = "";
  if (!rows.length) { const tr = tbody.insertRow(); const td = cell(tr, "Nothing yet.", "text"); td.colSpan = cols; return; }
  return rows;
}

export function keepingPlace(container, rebuild) {
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
