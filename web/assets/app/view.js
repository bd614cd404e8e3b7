// The view the controls describe: range, zone, grouping, whose usage.

import { addDays, addMonths } from "../lib/format.js";
import { $, tzName } from "./dom.js";
import { session } from "./state.js";

export function today() { return new Intl.DateTimeFormat("en-CA", { timeZone: tzName() }).format(new Date()); }

/** The view to show, or a message saying what is wrong with the inputs. */

export function currentView() {
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

export function viewSaid(v) {
  const range = $("range").selectedOptions[0] ? $("range").selectedOptions[0].textContent : "";
  const whose = v.team ? "team " + v.team : v.user === "*" ? "everyone" : v.user ? "user " + v.user : "your own usage";
  return range + " (" + v.tz + "): " + whose + (v.project ? ", project " + projectName(v.project) : "") + ".";
}

/** Several people in one view: a team, or everyone. */

export function viewsMany(v) { return !!v.team || v.user === "*"; }

export function projectName(p) { return p === "" ? "(no project)" : p; }

export function query(v, extra) {
  const p = new URLSearchParams();
  for (const [k, val] of Object.entries(Object.assign({}, v, extra || {}))) if (val != null && val !== "") p.set(k, val);
  return p.toString();
}
