// What the chart draws and says, from a series: pure, so the numbers on
// the chart and in its text alternative are unit-tested.

import { count, num, bucketLabel } from "./format.js";

/** A group key as people read it: the empty project is "no project", the
 *  empty publisher is usage counted before publishers were recorded. */
export function keyName(group, key) {
  if (key !== "") return key;
  return group === "project" ? "(no project)" : group === "source" ? "(publisher not recorded)" : "(none)";
}

/** Bucket `i` of a series (or a group's arrays) in the chosen measure. */
export function metricOf(obj, i, metric) {
  if (metric === "cost") return obj.cost_nanos[i] / 1e9;
  if (metric === "input") return obj.input_tokens[i];
  if (metric === "output") return obj.output_tokens[i];
  return obj.input_tokens[i] + obj.output_tokens[i];
}

/** uPlot data and series definitions for series `s` in `metric`: one line
 *  per group (stacked), input and output side by side, or the total. With
 *  `only` (a group's key), that group alone. Each line keeps its `slot`,
 *  its place among all groups, so its colour and dash do not change. */
export function chartModel(s, metric, only) {
  const xs = s.points.map((p) => Date.parse(p.start) / 1000);
  const lines = [];
  if (s.series.length && metric !== "split") {
    const alone = only != null && s.series.some((g) => g.key === only);
    s.series.forEach((g, slot) => {
      if (alone && g.key !== only) return;
      lines.push({ label: keyName(s.group, g.key), key: g.key, slot, values: s.points.map((_, i) => metricOf(g, i, metric)) });
    });
  } else if (metric === "split") {
    lines.push({ label: "Input", values: s.points.map((p) => p.input_tokens) });
    lines.push({ label: "Output", values: s.points.map((p) => p.output_tokens) });
  } else if (metric === "cost") {
    lines.push({ label: "Cost (" + (s.currency || "USD") + ")", values: s.points.map((p) => p.cost_nanos / 1e9) });
  } else {
    const key = metric === "input" ? "input_tokens" : metric === "output" ? "output_tokens" : "total_tokens";
    lines.push({ label: metric === "total" ? "Tokens" : metric === "input" ? "Input" : "Output", values: s.points.map((p) => p[key]) });
  }
  lines.forEach((l, i) => { if (l.slot == null) l.slot = i; });
  const stacked = s.series.length > 0 && metric !== "split";
  const data = [xs];
  const acc = new Array(xs.length).fill(0);
  for (const l of lines) {
    if (stacked) { for (let i = 0; i < acc.length; i++) acc[i] += l.values[i]; data.push(acc.slice()); } else data.push(l.values);
  }
  return { data, lines, stacked };
}

const GRAIN_NOUN = { minute: "minute", quarter_hour: "quarter hour", hour: "hour", day: "day", week: "week", month: "month" };

/** The chart in words: what it shows ("Cost (USD) per day") and what the
 *  data say (range, total, highest bucket), with dates in zone `tz`. The
 *  keyboard help is the chart's description, said once, not its name. */
export function describeChart(s, model, metric, tz) {
  const what = { cost: "Cost (" + (s.currency || "USD") + ")", input: "Input tokens", output: "Output tokens", split: "Input and output tokens" }[metric] || "Tokens";
  const alone = model.lines.length === 1 && s.series.length > 1 && metric !== "split" ? ", " + model.lines[0].label + " only" : "";
  const title = what + " per " + (GRAIN_NOUN[s.granularity] || s.granularity) + alone;
  const n = s.points.length;
  if (!n) return { title, summary: title + ": no buckets in this range." };
  const at = (i) => bucketLabel(s.points[i].start, s.granularity, tz);
  const totals = s.points.map((p, i) => model.lines.reduce((a, l) => a + (l.values[i] || 0), 0));
  let top = 0; totals.forEach((v, i) => { if (v > totals[top]) top = i; });
  const sum = totals.reduce((a, v) => a + v, 0);
  const amount = metric === "cost"
    ? (v) => new Intl.NumberFormat(undefined, { style: "currency", currency: s.currency || "USD", maximumFractionDigits: 2 }).format(v)
    : (v) => num(v) + " tokens";
  const summary = title + ": " + count(n, GRAIN_NOUN[s.granularity] || "bucket") + " from " + at(0) + " to " + at(n - 1)
    + "; " + amount(sum) + " in all" + (sum > 0 ? "; highest " + amount(totals[top]) + " at " + at(top) : "") + ".";
  return { title, summary };
}
