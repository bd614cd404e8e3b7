// Publish usage events to tokenusage over HTTP with Node 18+ (built-in fetch).
//
//   TOKENUSAGE_URL=http://127.0.0.1:8080 TOKENUSAGE_KEY=tu_... node publish_http.mjs
//
// 202: every event is in Kafka. 207: some rejected (see results[i].errors).
// 429/503: retry after the Retry-After header; resending the same ids is safe.
import { randomUUID } from 'node:crypto';

const url = (process.env.TOKENUSAGE_URL ?? 'http://127.0.0.1:8080') + '/api/v1/events';
const user = process.env.TOKENUSAGE_USER ?? 'alice';
const now = new Date().toISOString();
const events = [
  { event_id: randomUUID(), user_id: user, occurred_at: now, activity: 'chat', model: 'gpt-4o-mini', input_tokens: 1200, output_tokens: 350 },
  { event_id: randomUUID(), user_id: user, occurred_at: now, activity: 'agent-run', model: 'claude-sonnet-4', input_tokens: 5400, output_tokens: 900 },
];
const res = await fetch(url, {
  method: 'POST',
  headers: { 'content-type': 'application/json', authorization: `Bearer ${process.env.TOKENUSAGE_KEY}` },
  body: JSON.stringify(events),
});
console.log(res.status, JSON.stringify(await res.json()));
process.exit(res.status === 202 ? 0 : 1);
