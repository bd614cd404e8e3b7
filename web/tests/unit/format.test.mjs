// Unit tests of the dashboard's pure formatting (web/assets/lib/format.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { count, glance, money, moneyColumn, costText, addDays, addMonths, bucketLabel } from "../../assets/lib/format.js";

test("a count agrees with its noun", () => {
  assert.equal(count(1, "event"), "1 event");
  assert.equal(count(0, "event"), "0 events");
  assert.equal(count(2500, "event"), (2500).toLocaleString() + " events");
  assert.equal(count(3, "day", "days"), "3 days");
});

test("money keeps its digits below one unit, and says when nothing had a price", () => {
  const usd = (n, d) => new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: d }).format(n);
  assert.equal(money("165.75", "USD"), usd(165.75, 2));
  assert.equal(money("0.000412", "USD"), usd(0.000412, 6));
  assert.notEqual(money("0.000412", "USD"), usd(0, 2), "a small cost is not rounded to nothing");
  assert.equal(money(null, "USD"), "unknown");
  assert.equal(money("12.5", "NOT-A-CURRENCY"), "12.5 NOT-A-CURRENCY", "an unknown currency code is shown as text, not thrown");
});

test("a cost with unpriced tokens is a lower bound, in words", () => {
  assert.match(costText({ cost: "10", unpriced_tokens: 5 }, "USD"), /^at least .*10\.00 \(5 tokens unpriced\)$/);
  assert.equal(costText({ cost: null, unpriced_tokens: 7 }, "USD"), "unknown (7 tokens unpriced)");
  assert.match(costText({ cost: "1", unpriced_tokens: 0, supplied_events: 2 }, "USD"), /includes cost supplied by the publisher/);
});

test("calendar arithmetic crosses months, years and leap days", () => {
  assert.equal(addDays("2026-12-31", 1), "2027-01-01");
  assert.equal(addDays("2028-03-01", -1), "2028-02-29");
  assert.equal(addMonths("2026-01-31", 1), "2026-02-01", "months count from the first of the month");
  assert.equal(addMonths("2026-12-15", -12), "2025-12-01");
});

test("bucket labels are in the viewer's zone", () => {
  // 23:30 UTC on 31 Dec is already 1 Jan in Berlin.
  const berlin = bucketLabel("2026-12-31T23:30:00Z", "day", "Europe/Berlin");
  const utc = bucketLabel("2026-12-31T23:30:00Z", "day", "UTC");
  assert.notEqual(berlin, utc);
  assert.match(berlin, /2027/);
  assert.doesNotMatch(bucketLabel("2026-05-01T00:00:00Z", "month", "UTC"), /\b1\b.*May|May.*\b1,/, "months carry no day");
});

test("a column of costs has one precision, the finest any row needs", () => {
  const col = moneyColumn(["0", "0.000147", "0.00075", "0.917618", null], "USD");
  const shown = ["0", "0.000147", "0.00075", "0.917618"].map(col);
  const decimals = shown.map((t) => (/[.,](\d+)\D*$/.exec(t) || [, ""])[1].length);
  assert.deepEqual(decimals, [6, 6, 6, 6], shown.join(" | "));
  assert.equal(col(null), "unknown");
  const whole = moneyColumn(["12", "3.5"], "USD");
  assert.match(whole("12"), /12[.,]00/, "two decimals when none needs more");
  assert.match(costText({ cost: "0.00075", unpriced_tokens: 0 }, "USD", col), /0[.,]000750/);
});

test("a number at a glance is compact", () => {
  assert.equal(glance(89_100_000), new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 }).format(89_100_000));
  assert.equal(glance(370), "370");
});

test("axis labels at a glance keep every leading digit, up to 10^12", () => {
  const values = [0, 250_000, 1_500_000, 2_500_000, 12_000_000, 999_000_000, 1_000_000_000, 250_000_000_000, 1_000_000_000_000];
  const labels = values.map(glance);
  assert.equal(new Set(labels).size, values.length, "distinct values read distinctly: " + labels.join(", "));
  for (const [v, l] of values.map((v, i) => [v, labels[i]])) {
    // The label's own digits are the value's leading digits (",500,000" once lost the 2).
    const shown = l.replace(/[^0-9.]/g, "");
    assert.ok(v === 0 ? shown === "0" : String(v).startsWith(shown.replace(".", "").replace(/0+$/, "") || "x"), v + " read as " + l);
    assert.ok(l.length <= 6, "short enough for the axis: " + l);
  }
});
