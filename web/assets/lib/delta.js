// Applying a live delta to a series in place (docs/LIVE.md): pure, so the
// arithmetic live views depend on is unit-tested.

/** What a delta's bucket carries besides its sums. */
export const BUCKET_PLACE = new Set(["index", "start", "end", "groups"]);

/** The per-bucket arrays of a grouped series, as the server sent them. */
export function seriesFields(ser) { return Object.keys(ser).filter((k) => Array.isArray(ser[k])); }

/** Writes delta `m`'s buckets into series `s` (a bucket whose index and
 *  start do not match is ignored: it belongs to another range). Every sum
 *  the server sends is copied: the measures are defined once, on the
 *  server, and nothing here lists them. */
export function applyDelta(s, m) {
  for (const b of m.buckets) {
    const p = s.points[b.index];
    if (!p || p.start !== b.start) continue;
    for (const [k, v] of Object.entries(b)) if (!BUCKET_PLACE.has(k)) p[k] = v;
    for (const [key, g] of Object.entries(b.groups || {})) {
      let ser = s.series.find((x) => x.key === key);
      if (!ser) {
        // A new group: the arrays the other series carry (any, if none).
        const n = s.points.length;
        const fields = s.series.length ? seriesFields(s.series[0]) : Object.keys(g).filter((k) => typeof g[k] === "number");
        ser = { key };
        for (const k of fields) ser[k] = new Array(n).fill(0);
        s.series.push(ser); s.series.sort((a, b2) => (a.key < b2.key ? -1 : 1));
      }
      for (const k of seriesFields(ser)) ser[k][b.index] = g[k];
    }
  }
  s.total = m.total;
}
