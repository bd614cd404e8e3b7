// Unit tests of applying live deltas (web/assets/lib/delta.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { applyDelta } from "../../assets/lib/delta.js";

const series = () => ({
  points: [
    { start: "2026-12-07T00:00:00Z", input_tokens: 1, output_tokens: 1, total_tokens: 2, events: 1 },
    { start: "2026-12-07T01:00:00Z", input_tokens: 0, output_tokens: 0, total_tokens: 0, events: 0 },
  ],
  series: [{ key: "chat", input_tokens: [1, 0], output_tokens: [1, 0] }],
  total: { total_tokens: 2 },
});

test("a delta replaces its bucket's sums and the total", () => {
  const s = series();
  applyDelta(s, { buckets: [{ index: 1, start: "2026-12-07T01:00:00Z", input_tokens: 5, output_tokens: 3, total_tokens: 8, events: 2 }], total: { total_tokens: 10 } });
  assert.deepEqual(s.points[1], { start: "2026-12-07T01:00:00Z", input_tokens: 5, output_tokens: 3, total_tokens: 8, events: 2 });
  assert.deepEqual(s.points[0].total_tokens, 2, "other buckets are untouched");
  assert.equal(s.total.total_tokens, 10);
});

test("every sum the server sends is kept, even one this page has never heard of", () => {
  const s = series();
  applyDelta(s, { buckets: [{ index: 0, start: "2026-12-07T00:00:00Z", total_tokens: 9, audio_tokens: 4 }], total: {} });
  assert.equal(s.points[0].audio_tokens, 4);
  assert.equal(s.points[0].index, undefined, "placement fields are not sums");
});

test("a bucket of another range is ignored", () => {
  const s = series();
  applyDelta(s, { buckets: [{ index: 0, start: "2026-12-06T00:00:00Z", total_tokens: 99 }], total: s.total });
  assert.equal(s.points[0].total_tokens, 2);
});

test("a new group gets zero-filled arrays of the same fields, in key order", () => {
  const s = series();
  applyDelta(s, { buckets: [{ index: 1, start: "2026-12-07T01:00:00Z", total_tokens: 4, groups: { agent: { input_tokens: 3, output_tokens: 1 }, chat: { input_tokens: 2, output_tokens: 2 } } }], total: {} });
  assert.deepEqual(s.series.map((g) => g.key), ["agent", "chat"]);
  assert.deepEqual(s.series[0], { key: "agent", input_tokens: [0, 3], output_tokens: [0, 1] });
  assert.deepEqual(s.series[1].input_tokens, [1, 2]);
});
