// Unit tests of the audit views for people (web/assets/lib/audit.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { actionName, groupReads } from "../../assets/lib/audit.js";

const at = (s) => new Date(Date.parse("2026-12-07T12:00:00Z") - s * 1000).toISOString();
const row = (action, s, extra) => Object.assign({ action, at: at(s), actor: "alice", ip: "10.0.0.1", outcome: "ok" }, extra);

test("one page view's reads are one group; changes and other people are not folded in", () => {
  const rows = [
    row("usage.summary", 0), row("budgets.list", 1), row("live.subscribe", 3),
    row("budgets.create", 4),
    row("usage.summary", 5), row("auth.me", 6),
    row("usage.summary", 7, { actor: "bob" }),
    row("usage.summary", 30, { actor: "bob" }),
    row("usage.breakdown", 31, { actor: "bob", outcome: "denied" }),
  ];
  const groups = groupReads(rows).map((g) => g.map((r) => r.action + "/" + r.actor));
  assert.deepEqual(groups, [
    ["usage.summary/alice", "budgets.list/alice", "live.subscribe/alice"],
    ["budgets.create/alice"],
    ["usage.summary/alice", "auth.me/alice"],
    ["usage.summary/bob"],
    ["usage.summary/bob"],
    ["usage.breakdown/bob"],
  ]);
  assert.equal(groupReads(rows).flat().length, rows.length, "no entry is lost");
});

test("action codes are named in words, unknown ones shown as they are", () => {
  assert.equal(actionName("usage.series"), "Usage chart");
  assert.equal(actionName("admin.something_new"), "admin.something_new");
});
