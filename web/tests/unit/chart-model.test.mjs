// Unit tests of what the chart draws and says (web/assets/lib/chart-model.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { chartModel, describeChart, keyName } from "../../assets/lib/chart-model.js";

const s = {
  granularity: "day", group: "activity", currency: "EUR",
  points: [
    { start: "2026-12-01T00:00:00Z", input_tokens: 10, output_tokens: 5, total_tokens: 15, cost_nanos: 2_500_000_000 },
    { start: "2026-12-02T00:00:00Z", input_tokens: 30, output_tokens: 10, total_tokens: 40, cost_nanos: 1_000_000_000 },
  ],
  series: [
    { key: "chat", input_tokens: [10, 10], output_tokens: [5, 5], cost_nanos: [2_000_000_000, 500_000_000] },
    { key: "", input_tokens: [0, 20], output_tokens: [0, 5], cost_nanos: [500_000_000, 500_000_000] },
  ],
};

test("groups stack: each drawn line is the sum of those below it", () => {
  const m = chartModel(s, "total");
  assert.equal(m.stacked, true);
  assert.deepEqual(m.lines.map((l) => l.label), ["chat", "(none)"]);
  assert.deepEqual(m.data.slice(1), [[15, 15], [15, 40]]);
  assert.deepEqual(m.data[0], [Date.parse("2026-12-01T00:00:00Z") / 1000, Date.parse("2026-12-02T00:00:00Z") / 1000]);
});

test("cost is charted in currency units, input and output side by side unstacked", () => {
  assert.deepEqual(chartModel(s, "cost").lines.map((l) => l.values), [[2, 0.5], [0.5, 0.5]]);
  const split = chartModel(s, "split");
  assert.equal(split.stacked, false);
  assert.deepEqual(split.data.slice(1), [[10, 30], [5, 10]]);
});

test("the chart says what it shows and what the data say", () => {
  const said = describeChart(s, chartModel(s, "total"), "total", "UTC");
  assert.equal(said.title, "Tokens per day");
  assert.match(said.summary, /^Tokens per day: 2 days from .+ to .+; 55 tokens in all; highest 40 tokens at .+\.$/);
  const cost = describeChart(s, chartModel(s, "cost"), "cost", "UTC");
  assert.equal(cost.title, "Cost (EUR) per day");
  assert.match(cost.summary, /3\.50/, "the cost total: " + cost.summary);
  const empty = describeChart({ ...s, points: [], series: [] }, { lines: [] }, "total", "UTC");
  assert.equal(empty.summary, "Tokens per day: no buckets in this range.");
});

test("empty keys are named for people", () => {
  assert.equal(keyName("project", ""), "(no project)");
  assert.equal(keyName("source", ""), "(publisher not recorded)");
  assert.equal(keyName("model", "gpt-4o"), "gpt-4o");
});

test("one group alone keeps its colour slot and is said to be alone", () => {
  const m = chartModel(s, "total", "");
  assert.deepEqual(m.lines.map((l) => [l.label, l.slot]), [["(none)", 1]]);
  assert.deepEqual(m.data.slice(1), [[0, 25]]);
  assert.match(describeChart(s, m, "total", "UTC").title, /^Tokens per day, \(none\) only$/);
  assert.equal(chartModel(s, "total", "no-such-group").lines.length, 2, "an unknown key shows everything");
});
