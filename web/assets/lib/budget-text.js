// A budget in words: its name as shown and its state as one plain
// sentence. Pure (the viewer and the currency are arguments).

import { count, fmt, money, num } from "./format.js";

/** The name people gave it and, unless it is `me`'s own, whose it is. */
export function budgetName(b, me) {
  const s = b.scope;
  if (s.kind === "user" && s.id === me) return b.name;
  return b.name + " (" + (s.kind === "user" ? "user " : s.kind === "team" ? "team " : "project ") + s.id + ")";
}

/** Its window: "this month (Europe/Berlin)", "today (UTC)", "in the last 7 days". */
export function windowText(b) {
  if (b.period === "rolling") {
    const m = b.rolling_minutes;
    return "in the last " + (m % 1440 === 0 ? count(m / 1440, "day") : m % 60 === 0 ? count(m / 60, "hour") : count(m, "minute"));
  }
  return (b.period === "day" ? "today" : "this " + b.period) + " (" + b.zone + ")";
}

/** An amount in the budget's measure. */
export function budgetAmount(b, n, currency) {
  return b.measure === "cost" ? money(n, currency) : num(n) + " tokens";
}

/** Its state as one sentence: "$412 of $500 this month (UTC), 82 %; on
 *  pace for $530." then what is crossed and what the cost leaves out. */
export function budgetSentence(b, currency) {
  const s = b.state;
  if (!s) return "Not evaluated yet.";
  const cost = b.measure === "cost";
  const spent = cost ? s.spent_text : s.spent, amount = cost ? s.amount_text : b.amount;
  const of = cost ? money(spent, currency) + " of " + money(amount, currency) : num(spent) + " of " + num(amount) + " tokens";
  let t = of + " " + windowText(b) + ", " + fmt.format(s.percent) + " %";
  if (s.forecast != null) t += "; on pace for " + budgetAmount(b, cost ? s.forecast_text : s.forecast, currency);
  t += ".";
  const active = s.crossed.filter((c) => !c.resolved_at).map((c) => c.threshold + " %");
  if (active.length) t += " Crossed: " + active.join(", ") + ".";
  if (cost && s.unpriced_tokens > 0) t += " " + num(s.unpriced_tokens) + " tokens have no price and are not in the cost.";
  return t;
}
