// The audit trail for people: action codes in words, and the reads one
// page view makes folded into one row. Pure, unit-tested.

/** What a view of someone's usage was, in words (the audit trail keeps
 *  the stable code; people read this). Unknown codes are shown as they
 *  are rather than hidden. */
export const ACTION_NAMES = {
  "usage.series": "Usage chart", "usage.summary": "Usage totals", "usage.breakdown": "Breakdown of one period",
  "usage.dimensions": "Activities, models and projects used", "usage.export_csv": "CSV download",
  "usage.overview": "Team overview", "live.subscribe": "Live usage view", "live.watch_budgets": "Budgets, live",
  "budgets.list": "Budgets", "budgets.get": "One budget", "budgets.check": "Budget check", "admin.top_users": "List of top users",
  "audit.views_of_me": "Who viewed my usage", "audit.search": "Audit search", "teams.mine": "My teams", "auth.me": "Who am I",
  "auth.refresh": "Session renewed", "live.connect": "Live connection", "live.auth": "Live sign-in", "live.unsubscribe": "Live view closed",
  "live.watch_reconciliation": "Reconciliation alerts", "live.reauthorize": "Live access re-checked", "live.message": "Live message",
  "admin.reconciliation": "Reconciliation", "admin.providers.list": "Provider connections", "admin.teams.list": "Teams",
  "admin.prices.list": "Price book", "admin.keys.list": "Publisher keys", "admin.webhooks.list": "Webhook endpoints",
  "admin.webhooks.deliveries": "Webhook deliveries",
};
export function actionName(code) { return ACTION_NAMES[code] || code; }

// What the dashboard reads by itself when a page is opened or a view
// chosen; changes (budgets set, keys made, sign-ins, downloads) are never
// folded into a group.
export const PAGE_READ = /^(usage\.(series|summary|breakdown|dimensions|overview)|budgets\.(list|get)|audit\.(views_of_me|search)|teams\.mine|auth\.(me|refresh)|live\.(connect|auth|subscribe|unsubscribe|watch_budgets|watch_reconciliation|reauthorize|message)|admin\.(top_users|reconciliation|providers\.list|teams\.list|prices\.list|keys\.list|webhooks\.(list|deliveries)))$/;
export const PAGE_VIEW_GAP_MS = 10000;
/** Audit rows (newest first) in groups: successful page reads by one
 *  person from one address, each within 10 s of the next, are one group. */
export function groupReads(rows) {
  const groups = [];
  for (const r of rows) {
    const g = groups[groups.length - 1], last = g && g[g.length - 1];
    const read = (x) => x.outcome === "ok" && PAGE_READ.test(x.action);
    if (last && read(r) && read(last) && r.actor === last.actor && r.ip === last.ip
        && Math.abs(Date.parse(last.at) - Date.parse(r.at)) <= PAGE_VIEW_GAP_MS) g.push(r);
    else groups.push([r]);
  }
  return groups;
}
