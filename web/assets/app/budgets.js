// Budgets: the list (kept in place under live pushes) and the form.

import { budgetName as nameFor, budgetSentence } from "../lib/budget-text.js";
import { currency } from "./chart.js";
import { $, keepingPlace, showAlert } from "./dom.js";
import { api } from "./session.js";
import { session, ui } from "./state.js";

export function budgetName(b) { return nameFor(b, session.user); }

// Live updates rebuild parts of the page; a person using them must not
// lose their place. Whatever had focus inside `container` (found again by
// its data-focus-key or id) gets it back, and the scroll position of the
// scrolling region around it is kept.

export function renderBudgets(list) { keepingPlace($("budget-list"), () => drawBudgets(list)); }

export function drawBudgets(list) {
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
        if (ui.crossedSeen && !ui.crossedSeen.has(k)) fresh.push("Budget " + budgetName(b) + " crossed " + c.threshold + " %.");
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
  ui.crossedSeen = seen;
}

export async function loadBudgets() {
  const pushed = ui.budgetsPushed;
  try {
    const list = await (await api("/api/v1/budgets")).json();
    if (pushed === ui.budgetsPushed) renderBudgets(list);
  }
  catch (e) { if (e.message !== "signed out") showAlert(e.message); }
}

export async function removeBudget(b) {
  if (!window.confirm("Remove the budget " + b.name + "? Its alerts stop.")) return;
  try { await api("/api/v1/budgets/" + b.id, { method: "DELETE" }); await loadBudgets(); $("budgets-title").focus(); }
  catch (e) { if (e.message !== "signed out") showAlert(e.message); }
}

/** Whether the caller may set or remove budgets on a scope: the server's
 *  rule, as /api/v1/me lists it (never worked out here). */

export function maySet(scope) {
  const set = session.access && session.access.set;
  return !!set && (set.everything || set.scopes.some((s) => s.kind === scope.kind && s.id === scope.id));
}

/** Whom a budget set here may cover, as the server lists it: the caller,
 *  and the teams they may set budgets on. */

export function budgetScopes() {
  const sel = $("budget-scope"); sel.textContent = "";
  const me = document.createElement("option"); me.value = ""; me.textContent = "Me (" + session.user + ")"; sel.appendChild(me);
  const teams = session.access ? session.access.set.scopes.filter((s) => s.kind === "team") : [];
  for (const t of teams) { const o = document.createElement("option"); o.value = t.id; o.textContent = "Team " + t.id; sel.appendChild(o); }
}

export async function createBudget(ev) {
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
