// Numbers, money, counts and dates as people read them: pure functions
// (no DOM), unit-tested with `node --test` (web/tests/unit/).

export const fmt = new Intl.NumberFormat();

/** A whole number in the viewer's locale; "–" for none. */
export function num(n) { return n == null ? "–" : fmt.format(n); }

const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
/** A number at a glance: 89.1M, 7.3K, 370. */
export function glance(n) { return compact.format(n); }

/** "1 event", "2 events": a count with its noun agreeing. */
export function count(n, one, many) { return num(n) + " " + (n === 1 ? one : many || one + "s"); }

/** A cost (exact decimal text from the server, or null when nothing had a
 *  price) in the viewer's locale and the book's currency: two decimals, or
 *  up to six below one unit (0.000412 is not 0.00). */
export function money(text, currency) {
  if (text == null) return "unknown";
  const cur = currency || "USD";
  const n = Number(text);
  const digits = n !== 0 && Math.abs(n) < 1 ? 6 : 2;
  try { return new Intl.NumberFormat(undefined, { style: "currency", currency: cur, minimumFractionDigits: 2, maximumFractionDigits: digits }).format(n); }
  catch (e) { return text + " " + cur; }
}

/** The decimals a cost text needs to be shown exactly: 2 to 6. */
function decimalsOf(text) {
  const m = /\.(\d*?)0*$/.exec(String(text));
  return Math.min(6, Math.max(2, m ? m[1].length : 0));
}

/** A formatter for a column of costs: one precision for every row, the
 *  finest any of them needs (a column once mixed US$0.00 and US$0.000147). */
export function moneyColumn(texts, currency) {
  const digits = Math.max(2, ...texts.filter((t) => t != null).map(decimalsOf));
  const cur = currency || "USD";
  let f = null;
  try { f = new Intl.NumberFormat(undefined, { style: "currency", currency: cur, minimumFractionDigits: digits, maximumFractionDigits: digits }); } catch (e) { f = null; }
  return (text) => (text == null ? "unknown" : f ? f.format(Number(text)) : text + " " + cur);
}

/** A row's cost in words: unpriced tokens make it a lower bound, said so.
 *  `format` is the column's (`moneyColumn`), or `money`'s rule alone. */
export function costText(sums, currency, format) {
  let t = format ? format(sums.cost) : money(sums.cost, currency);
  if (sums.unpriced_tokens > 0) {
    t = sums.cost == null ? "unknown (" + num(sums.unpriced_tokens) + " tokens unpriced)"
      : "at least " + t + " (" + num(sums.unpriced_tokens) + " tokens unpriced)";
  }
  if (sums.supplied_events > 0) t += " (includes cost supplied by the publisher)";
  return t;
}

/** A bucket's start in zone `tz`: the date, with the time for hours and
 *  minutes, without the day for months. */
export function bucketLabel(iso, gran, tz) {
  const opts = { timeZone: tz, year: "numeric", month: "short", day: "numeric" };
  if (gran === "hour" || gran === "minute") { opts.hour = "2-digit"; opts.minute = "2-digit"; }
  if (gran === "month") { delete opts.day; }
  return new Intl.DateTimeFormat(undefined, opts).format(new Date(iso));
}

/** An instant in zone `tz`, in the one date style the page uses
 *  ("8 Dec 2026, 01:14" in en-GB), with seconds where they matter. */
export function instant(iso, tz, seconds) {
  const opts = { timeZone: tz, year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
  if (seconds) opts.second = "2-digit";
  return new Intl.DateTimeFormat(undefined, opts).format(new Date(iso));
}

/** Calendar arithmetic on `YYYY-MM-DD` dates. */
export function addDays(ymd, n) { const d = new Date(ymd + "T00:00:00Z"); d.setUTCDate(d.getUTCDate() + n); return d.toISOString().slice(0, 10); }
export function addMonths(ymd, n) { const d = new Date(ymd.slice(0, 8) + "01T00:00:00Z"); d.setUTCMonth(d.getUTCMonth() + n); return d.toISOString().slice(0, 10); }
