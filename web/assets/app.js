// The dashboard: sign in, fetch the series and breakdown for the chosen
// range, draw them, refresh every few seconds. The access token lives only in
// memory and travels only in the Authorization header.
'use strict';

const state = { token: null, user: null, chart: null, timer: null };
const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat();

async function api(path, opts = {}) {
  const headers = Object.assign({ 'content-type': 'application/json' }, opts.headers || {});
  if (state.token) headers.authorization = 'Bearer ' + state.token;
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  const body = await r.json().catch(() => null);
  if (r.status === 401 && state.token) { signOut('Your session has expired; please sign in again.'); }
  if (!r.ok) throw new Error((body && body.error && body.error.message) || ('HTTP ' + r.status));
  return body;
}

function signOut(message) {
  state.token = null;
  clearInterval(state.timer);
  $('dashboard').hidden = true;
  $('who').hidden = true;
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = message || '';
  $('username').focus();
}

async function signIn(ev) {
  ev.preventDefault();
  $('sign-in-error').textContent = '';
  try {
    const r = await api('/api/v1/auth/login', { method: 'POST', body: JSON.stringify({ username: $('username').value, password: $('password').value }) });
    state.token = r.access_token;
    state.user = r.user;
    $('password').value = '';
    $('who-name').textContent = r.user + ' (' + r.role + ')';
    $('who').hidden = false;
    $('sign-in').hidden = true;
    $('dashboard').hidden = false;
    $('dash-title').focus();
    await refresh();
    state.timer = setInterval(refresh, 5000);
  } catch (e) {
    $('sign-in-error').textContent = 'Sign-in failed: ' + e.message;
  }
}

function rangeBounds() {
  const hours = { '24h': 24, '7d': 24 * 7, '30d': 24 * 30 }[$('range').value];
  const to = new Date(Math.ceil(Date.now() / 60000) * 60000 + 60000);
  const from = new Date(to.getTime() - hours * 3600 * 1000);
  return { from: from.toISOString(), to: to.toISOString() };
}

function cell(row, text) { const td = document.createElement('td'); td.textContent = text; row.appendChild(td); }

async function refresh() {
  const { from, to } = rangeBounds();
  const q = 'from=' + encodeURIComponent(from) + '&to=' + encodeURIComponent(to);
  try {
    const [series, breakdown] = await Promise.all([
      api('/api/v1/usage/series?' + q + '&granularity=' + $('granularity').value),
      api('/api/v1/usage/breakdown?' + q),
    ]);
    draw(series);
    const t = series.total;
    $('fig-total').textContent = fmt.format(t.input_tokens + t.output_tokens);
    $('fig-input').textContent = fmt.format(t.input_tokens);
    $('fig-output').textContent = fmt.format(t.output_tokens);
    $('fig-events').textContent = fmt.format(t.events);
    const tbody = $('table').tBodies[0];
    tbody.replaceChildren();
    for (const p of series.points) {
      if (!p.events) continue;
      const tr = document.createElement('tr');
      const th = document.createElement('th'); th.scope = 'row'; th.textContent = p.start.replace('T', ' ').replace(':00Z', ' UTC');
      tr.appendChild(th);
      cell(tr, fmt.format(p.input_tokens)); cell(tr, fmt.format(p.output_tokens)); cell(tr, fmt.format(p.events));
      tbody.appendChild(tr);
    }
    const bbody = $('breakdown').tBodies[0];
    bbody.replaceChildren();
    for (const r of breakdown.rows) {
      const tr = document.createElement('tr');
      cell(tr, r.activity); cell(tr, r.model); cell(tr, fmt.format(r.input_tokens)); cell(tr, fmt.format(r.output_tokens)); cell(tr, fmt.format(r.events));
      bbody.appendChild(tr);
    }
    $('freshness').textContent = 'Updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    $('freshness').textContent = 'Could not load usage: ' + e.message;
  }
}

function draw(series) {
  const xs = series.points.map((p) => Date.parse(p.start) / 1000);
  const data = [xs, series.points.map((p) => p.input_tokens), series.points.map((p) => p.output_tokens)];
  const css = getComputedStyle(document.documentElement);
  if (!window.uPlot) { $('chart').textContent = 'Chart library not loaded; see the data table.'; return; }
  if (state.chart) { state.chart.setData(data); return; }
  const width = Math.max(280, $('chart').clientWidth || 800);
  state.chart = new window.uPlot({
    width, height: 300,
    series: [
      { label: 'Time (UTC)' },
      { label: 'Input tokens', stroke: css.getPropertyValue('--input').trim(), width: 2 },
      { label: 'Output tokens', stroke: css.getPropertyValue('--output').trim(), width: 2, dash: [6, 4] },
    ],
    axes: [{ stroke: css.getPropertyValue('--fg').trim() }, { stroke: css.getPropertyValue('--fg').trim() }],
  }, data, $('chart'));
}

document.addEventListener('DOMContentLoaded', () => {
  $('dash-title').tabIndex = -1;
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', () => signOut('Signed out.'));
  $('range').addEventListener('change', () => { if (state.chart) { state.chart.destroy(); state.chart = null; } refresh(); });
  $('granularity').addEventListener('change', () => { if (state.chart) { state.chart.destroy(); state.chart = null; } refresh(); });
  $('username').focus();
});
