// The chart, its legend, its words and the figures above it.

import { chartModel as modelOf, describeChart as describeIn } from "../lib/chart-model.js";
import { count, glance, instant, money as moneyIn, num } from "../lib/format.js";
import { $, cssVar, DASHES, keepingPlace, label, tzName } from "./dom.js";
import { live, session, ui } from "./state.js";
import { scheduleDetail, showDetail, table } from "./table.js";

// One formatter per currency, not one per axis draw.
const costAxes = new Map();
export function costAxis() {
  const cur = currency();
  if (!costAxes.has(cur)) {
    let f;
    try { f = new Intl.NumberFormat(undefined, { style: "currency", currency: cur, notation: "compact", maximumSignificantDigits: 3 }); }
    catch (e) { f = new Intl.NumberFormat(undefined, { notation: "compact", maximumSignificantDigits: 3 }); }
    costAxes.set(cur, f);
  }
  return costAxes.get(cur);
}

// The pure parts (lib/) with what the page knows: the series' currency,
// the chosen measure, the viewer's zone.
export function currency() { return (live.series && live.series.currency) || "USD"; }

export function money(text) { return moneyIn(text, currency()); }

export function chartModel(s) { return modelOf(s, $("metric").value, ui.isolated); }

export function describeChart(s, model) { return describeIn(s, model, $("metric").value, tzName()); }

export function render(full) {
  const s = live.series; if (!s) return;
  const model = chartModel(s);
  const said = describeChart(s, model);
  $("chart-title").textContent = said.title + ".";
  $("chart").setAttribute("aria-label", said.summary);
  const keys = model.lines.map((l) => l.label).join("|") + "|" + model.stacked + "|" + asBars(s) + "|" + tzName() + "|" + document.documentElement.dataset.theme;
  if (!ui.chart || keys !== ui.chartKeys || full) buildChart(model); else ui.chart.setData(drawn(model), false);
  ui.chartKeys = keys;
  if (ui.chart && !full) ui.chart.redraw(false, false);
  figures(); showFreshness();
  if ($("table-details").open || full) table(s);
  if (ui.cursorIdx >= s.points.length) ui.cursorIdx = s.points.length - 1;
}

// The value axis: compact numbers (89.1M, 1.5T) and a width measured
// from its widest label, so no label is ever cut (a fixed 70 px once cut
// 2,500,000 to ",500,000"). The labels drawn are kept on the chart's
// element, since the canvas holds no text to read back.

export const AXIS_FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";

// Token ticks are figures at a glance (lib/format.js `glance`, tested to 10^12).
export const compact = { format: glance };

export function yLabels(vals) {
  const f = $("metric").value === "cost" ? costAxis() : compact;
  const out = vals.map((v) => f.format(v));
  $("chart").dataset.yLabels = out.join("|");
  return out;
}

export function yAxisWidth(vals) {
  if (!vals || !vals.length) return 50;
  ui.measureCtx = ui.measureCtx || document.createElement("canvas").getContext("2d");
  ui.measureCtx.font = AXIS_FONT;
  const widest = Math.max(...vals.map((v) => ui.measureCtx.measureText(String(v)).width));
  $("chart").dataset.yAxisWidth = String(Math.ceil(widest) + 24);
  $("chart").dataset.yLabelWidth = String(Math.ceil(widest));
  return Math.ceil(widest) + 24;
}

// Daily (and coarser) buckets are bars; hours and minutes stay lines.

export function asBars(s) { return !!s && ["day", "week", "month"].includes(s.granularity) && typeof uPlot !== "undefined" && !!uPlot.paths && !!uPlot.paths.bars; }
/** The columns as drawn: stacked bars in reverse (tallest first). */

export function drawn(model) { return ui.barsDrawn && model.stacked ? [model.data[0], ...model.data.slice(1).reverse()] : model.data; }

export function buildChart(model) {
  const el = $("chart");
  if (ui.chart) { ui.chart.destroy(); ui.chart = null; }
  if (typeof uPlot === "undefined") { el.textContent = "The chart library is missing; the data table below has the numbers."; return; }
  const fg = cssVar("--fg"), rule = cssVar("--rule");
  ui.barsDrawn = asBars(live.series);
  el.dataset.shape = ui.barsDrawn ? "bars" : "lines";
  const series = [{}];
  model.lines.forEach((l) => {
    const i = l.slot;
    const color = cssVar("--s" + (i % 8));
    series.push(ui.barsDrawn
      // Bars keep the series' dash on their outline, so stacked parts
      // differ by more than colour.
      ? { label: l.label, stroke: fg, width: 1, dash: DASHES[i % DASHES.length], fill: color, paths: uPlot.paths.bars({ size: [0.7, 64] }), points: { show: false } }
      : { label: l.label, stroke: color, width: 2, dash: DASHES[i % DASHES.length],
        fill: model.stacked ? color + "33" : undefined, points: { show: model.data[0].length < 60, size: 6 } });
  });
  // Stacked bars are drawn tallest first, each shorter sum over it.
  if (ui.barsDrawn && model.stacked) series.splice(1, series.length - 1, ...series.slice(1).reverse());
  const bands = [];
  if (model.stacked && !ui.barsDrawn) for (let i = model.lines.length; i > 1; i--) bands.push({ series: [i, i - 1] });
  const tz = tzName();
  const xs = model.data[0];
  const pad = xs.length > 1 ? (xs[1] - xs[0]) / 2 : 43200;
  const dayTick = new Intl.DateTimeFormat(undefined, { timeZone: tz, day: "numeric", month: "short" });
  ui.chart = new uPlot({
    width: Math.max(280, el.clientWidth), height: 320, series, bands,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), tz),
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { size: 8 } },
    // Bars: half a bucket of room at each end (no bar cut in half), from 0
    // up, and ticks on whole days at least (no "8am" under a daily bar).
    scales: ui.barsDrawn ? { x: { time: true, range: (u, min, max) => [min - pad, max + pad] }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.05 : 1] } } : { x: { time: true } },
    axes: [
      ui.barsDrawn ? { stroke: fg, grid: { stroke: rule }, ticks: { stroke: rule }, incrs: [86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 91 * 86400, 365 * 86400],
        // Dates in the viewer's locale, as everywhere else on the page.
        values: (u, splits) => splits.map((ts) => dayTick.format(new Date(ts * 1000))) }
        : { stroke: fg, grid: { stroke: rule }, ticks: { stroke: rule } },
      { stroke: fg, grid: { stroke: rule }, ticks: { stroke: rule }, font: AXIS_FONT, values: (u, vals) => yLabels(vals), size: (u, vals) => yAxisWidth(vals) },
    ],
    hooks: { setCursor: [(u) => { if (u.cursor.idx != null && u.cursor.idx !== ui.cursorIdx) { ui.cursorIdx = u.cursor.idx; scheduleDetail(); } }] },
  }, drawn(model), el);
  keepingPlace($("legend"), () => legend(model));
}

export function swatch(i) {
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

export function legend(model) {
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
      el.setAttribute("aria-pressed", String(ui.isolated === l.key));
      el.dataset.focusKey = "series-" + l.key;
      el.addEventListener("click", () => { ui.isolated = ui.isolated === l.key ? null : l.key; render(true); });
    }
    el.appendChild(swatch(l.slot)); el.appendChild(document.createTextNode(l.label));
    box.appendChild(el);
  }
  if (model.stacked && model.lines.length > 1) box.appendChild(document.createTextNode(" (stacked)"));
  if ($("metric").value === "cost") box.appendChild(document.createTextNode(" · cost in " + ((live.series && live.series.currency) || "USD")));
}


/** Unpriced tokens make the cost a lower bound: said, with what to do
 *  (admins: a link to add a price; everyone else: who can). */

export function unpriced(t) {
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

export function figures() {
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
  if (ui.summaryPrev == null) $("fig-change").textContent = "–";
  else if (ui.summaryPrev === 0) $("fig-change").textContent = t.total_tokens ? "new (nothing before)" : "no change";
  else {
    const pct = ((t.total_tokens - ui.summaryPrev) / ui.summaryPrev) * 100;
    $("fig-change").textContent = (pct >= 0 ? "up " : "down ") + Math.abs(pct).toFixed(1) + "%";
  }
}

export function showFreshness() {
  const f = live.freshness, el = $("freshness");
  if (live.paused) { el.textContent = "Live updates paused."; return; }
  if (!f) { el.textContent = live.series ? "Showing stored history." : "Waiting for data…"; return; }
  const through = f.complete_through ? instant(f.complete_through, tzName(), true) : "not yet known";
  el.textContent = "Complete through " + through + (f.lag_records ? " · " + count(f.lag_records, "event") + " still being counted" : "")
    + (f.lost_records ? " · " + num(f.lost_records) + " published events were lost by the broker before they could be counted, so totals are low (an operator can list them with tokenusage lost)" : "");
}

export function moveCursor(i) {
  const s = live.series; if (!s || !ui.chart || !s.points.length) return;
  ui.cursorIdx = Math.max(0, Math.min(s.points.length - 1, i));
  const x = ui.chart.valToPos(ui.chart.data[0][ui.cursorIdx], "x");
  const top = ui.chart.valToPos(Math.max(0, ...ui.chart.data.slice(1).map((c) => c[ui.cursorIdx] || 0)), "y");
  ui.chart.setCursor({ left: x, top });
  const p = s.points[ui.cursorIdx];
  $("point-live").textContent = label(p.start, s.granularity) + ": " + num(p.total_tokens) + " tokens, input " + num(p.input_tokens) + ", output " + num(p.output_tokens) + ", " + count(p.events, "event") + ", cost " + money(p.cost) + (p.unpriced_tokens ? ", " + num(p.unpriced_tokens) + " tokens unpriced" : "");
  scheduleDetail();
}

export function onChartKey(e) {
  const s = live.series; if (!s) return;
  const keys = { ArrowRight: 1, ArrowLeft: -1, ArrowUp: 1, ArrowDown: -1, PageUp: 10, PageDown: -10 };
  if (e.key in keys) { e.preventDefault(); moveCursor((ui.cursorIdx < 0 ? 0 : ui.cursorIdx + keys[e.key])); }
  else if (e.key === "Home") { e.preventDefault(); moveCursor(0); }
  else if (e.key === "End") { e.preventDefault(); moveCursor(s.points.length - 1); }
  else if (e.key === "Enter") { e.preventDefault(); showDetail(); $("detail-table").hidden || $("detail-title").scrollIntoView({ block: "nearest" }); }
}

/** Says what a view the person asked for shows, once per view (a
 *  reconnect's fresh snapshot of the same view is not news). */

export function announceView(v) {
  const key = JSON.stringify(v);
  if (key === ui.announcedView || !live.series) return;
  ui.announcedView = key;
  $("live-announce").textContent = "Showing " + num(live.series.total.total_tokens) + " tokens in this view.";
}
