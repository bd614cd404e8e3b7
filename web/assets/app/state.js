// What the page's parts share: the session, the live subscription and
// the chart's and lists' mutable state (one object, since an imported
// binding cannot be assigned).

export const session = { token: null, user: null, role: null, refreshTimer: null, teams: [], access: null };
export const live = { ws: null, paused: false, retry: 0, retryTimer: null, series: null, freshness: null, wanted: false };
export const ui = {
  chart: null,
  chartKeys: "",
  cursorIdx: -1,
  summaryPrev: null,
  announcedView: "",
  detailTimer: null,
  isolated: null,
  barsDrawn: false,
  measureCtx: null,
  crossedSeen: null,
  // Pushes counted, so a REST answer that a push overtook is not drawn
  // over the newer list.
  budgetsPushed: 0,
};
