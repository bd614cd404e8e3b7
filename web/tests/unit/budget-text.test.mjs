// Unit tests of budgets in words (web/assets/lib/budget-text.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { budgetName, budgetSentence, windowText } from "../../assets/lib/budget-text.js";

const tokens = {
  name: "Monthly tokens", scope: { kind: "user", id: "alice" }, measure: "tokens", amount: 10_000_000, period: "month", zone: "UTC",
  state: { spent: 6_000_000, percent: 60, forecast: 12_400_000, crossed: [{ threshold: 50 }, { threshold: 20, resolved_at: "x" }] },
};

test("a budget reads as one sentence", () => {
  const t = budgetSentence(tokens, "USD");
  assert.equal(t, (6_000_000).toLocaleString() + " of " + (10_000_000).toLocaleString() + " tokens this month (UTC), 60 %; on pace for "
    + (12_400_000).toLocaleString() + " tokens. Crossed: 50 %.");
  assert.equal(budgetSentence({ ...tokens, state: null }, "USD"), "Not evaluated yet.");
});

test("a cost budget is in the currency and says what has no price", () => {
  const b = { ...tokens, measure: "cost", state: { spent_text: "412", amount_text: "500", percent: 82.4, forecast: null, crossed: [], unpriced_tokens: 9 } };
  const t = budgetSentence(b, "USD");
  assert.match(t, /^(US)?\$412\.00 of (US)?\$500\.00 this month \(UTC\), 82\.4 %\. 9 tokens have no price and are not in the cost\.$/);
});

test("windows and whose budget it is are said in words", () => {
  assert.equal(windowText({ period: "day", zone: "Asia/Kathmandu" }), "today (Asia/Kathmandu)");
  assert.equal(windowText({ period: "rolling", rolling_minutes: 1440 }), "in the last 1 day");
  assert.equal(windowText({ period: "rolling", rolling_minutes: 7 * 1440 }), "in the last 7 days");
  assert.equal(windowText({ period: "rolling", rolling_minutes: 90 }), "in the last 90 minutes");
  assert.equal(budgetName(tokens, "alice"), "Monthly tokens");
  assert.equal(budgetName(tokens, "bob"), "Monthly tokens (user alice)");
  assert.equal(budgetName({ ...tokens, scope: { kind: "team", id: "platform" } }, "alice"), "Monthly tokens (team platform)");
});
