// Browser end-to-end tests: Debian's Chromium driven by playwright-core,
// against a real `tokenusage serve` (real PostgreSQL, real broker). Run by
// scripts/test.sh, which provides DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS and
// a fresh topic. Screenshots go to target/e2e-artifacts/.
//
//   node web/tests/e2e.mjs
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
// The second engine: HTML_CodeSniffer, the build pa11y 9 runs (pa11y itself
// would bring puppeteer and a second browser driver; we run its engine in
// our own page the way pa11y's htmlcs runner does).
const htmlcsSource = readFileSync(require.resolve("@pa11y/html_codesniffer/build/HTMLCS.js"), "utf8");

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bin = process.env.TOKENUSAGE_BIN || join(root, "target", "debug", "tokenusage");
const artifacts = join(root, "target", "e2e-artifacts");
mkdirSync(artifacts, { recursive: true });
const TZ = "Europe/Berlin";
const PASSWORD = "e2e-password-123";

function run(args, input) {
  const r = spawnSync(bin, args, { input, env: { ...process.env, TOKENUSAGE_NEW_PASSWORD: PASSWORD, RUST_LOG: "warn" }, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`tokenusage ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

let seq = 0;
function event(user, minutesAgo, activity, input, output, project) {
  seq += 1;
  return JSON.stringify({ event_id: `e2e-${Date.now()}-${seq}`, user_id: user, occurred_at: new Date(Date.now() - minutesAgo * 60000).toISOString(),
    activity, model: "gpt-4o-mini", input_tokens: input, output_tokens: output, ...(project ? { project } : {}) });
}

async function startServer() {
  const child = spawn(bin, ["serve", "--listen", "127.0.0.1:0"], { env: { ...process.env, RUST_LOG: "warn" }, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stderr.on("data", (d) => { log += d; });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("serve did not start: " + log)), 60000);
    child.stdout.on("data", (d) => {
      const m = /running at (http:\/\/[^\s]+)\//.exec(String(d));
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on("exit", (c) => reject(new Error(`serve exited (${c}): ${log}`)));
  });
  return { child, url };
}

async function apiLogin(url, user) {
  const r = await fetch(url + "/api/v1/auth/login", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username: user, password: PASSWORD }) });
  if (!r.ok) throw new Error("login failed " + r.status);
  return (await r.json()).access_token;
}

function berlinDate(offsetDays) {
  const d = new Intl.DateTimeFormat("en-CA", { timeZone: TZ }).format(new Date());
  const t = new Date(d + "T00:00:00Z"); t.setUTCDate(t.getUTCDate() + offsetDays);
  return t.toISOString().slice(0, 10);
}

async function apiTotal(url, token, user, extra) {
  const q = new URLSearchParams({ from: berlinDate(-6), to: berlinDate(2), tz: TZ, group: "activity", ...(user ? { user } : {}), ...(extra || {}) });
  const r = await fetch(url + "/api/v1/usage/series?" + q, { headers: { authorization: "Bearer " + token } });
  return (await r.json()).total.total_tokens;
}

const results = [];
async function test(name, fn) {
  const started = Date.now();
  try { await fn(); results.push([name, true]); console.log(`ok   ${name} (${Date.now() - started} ms)`); }
  catch (e) { results.push([name, false]); console.log(`FAIL ${name}: ${e.stack || e}`); }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }
const digits = (s) => Number(String(s).replace(/[^0-9]/g, ""));

// Both engines on the page as it is now; any finding fails. HTML_CodeSniffer
// is judged as pa11y judges it by default: errors (type 1) count, its
// warnings and notices are advice for a human reviewer.
async function a11y(page, label) {
  await page.addScriptTag({ content: axeSource });
  const r = await page.evaluate(async () => await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }));
  await page.screenshot({ path: join(artifacts, `a11y-${label}.png`), fullPage: true });
  const v = r.violations.map((x) => `axe ${x.id} (${x.impact}): ${x.nodes.map((n) => n.target.join(" ")).slice(0, 3).join(", ")}`);
  await page.addScriptTag({ content: htmlcsSource });
  const sniffed = await page.evaluate(() => new Promise((resolve, reject) => {
    const describe = (el) => !el || !el.tagName ? String(el) : el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.className && typeof el.className === "string" ? "." + el.className.trim().split(/\s+/).join(".") : "");
    window.HTMLCS.process("WCAG2AA", document, () => {
      resolve(window.HTMLCS.getMessages().filter((m) => m.type === 1).map((m) => `HTML_CodeSniffer ${m.code}: ${describe(m.element)}: ${m.msg}`));
    }, (e) => reject(new Error("HTML_CodeSniffer failed: " + e)), "en");
  }));
  v.push(...sniffed);
  assert(v.length === 0, `${v.length} accessibility finding(s) on ${label}:\n  ${v.join("\n  ")}`);
}

async function signIn(page, user) {
  await page.fill("#username", user);
  await page.fill("#password", PASSWORD);
  await page.click("#sign-in-form button[type=submit]");
  await page.waitForSelector("#dashboard:not([hidden])");
  await page.waitForFunction(() => document.getElementById("conn").dataset.state === "live", null, { timeout: 20000 });
}

/** A stand-in for OpenAI's organisation Usage and Costs APIs (their
 * documented shapes): `days` of usage for project proj_e2e that nothing of
 * ours was published for. */
async function providerStub(days) {
  const { createServer } = await import("node:http");
  const server = createServer((req, res) => {
    const u = new URL(req.url, "http://stub");
    const from = Number(u.searchParams.get("start_time")), to = Number(u.searchParams.get("end_time"));
    const costs = u.pathname === "/v1/organization/costs";
    const data = [];
    for (let t = from; t < to; t += 86400) {
      const day = new Date(t * 1000).toISOString().slice(0, 10);
      const results = !days.includes(day) ? [] : costs
        ? [{ object: "organization.costs.result", amount: { value: 0.5, currency: "usd" }, line_item: "gpt-4o-mini, input", project_id: "proj_e2e" }]
        : [{ object: "organization.usage.completions.result", input_tokens: 100000, output_tokens: 5000, input_cached_tokens: 0,
            num_model_requests: 10, project_id: "proj_e2e", api_key_id: "key_e2e", model: "gpt-4o-mini", batch: false },
          { object: "organization.usage.completions.result", input_tokens: 40, output_tokens: 4, input_cached_tokens: 0,
            num_model_requests: 1, project_id: "proj_new", api_key_id: "key_new", model: "gpt-4o-mini", batch: false }];
      data.push({ object: "bucket", start_time: t, end_time: t + 86400, results });
    }
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ object: "page", data, has_more: false, next_page: null }));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

/** `run`, without blocking this process's event loop (the stub answers meanwhile). */
function runAsync(args) {
  return new Promise((resolve, reject) => {
    const c = spawn(bin, args, { env: { ...process.env, RUST_LOG: "warn" } });
    let err = "";
    c.stderr.on("data", (d) => { err += d; });
    c.on("exit", (code) => code === 0 ? resolve() : reject(new Error(`tokenusage ${args.join(" ")} failed: ${err}`)));
  });
}

async function main() {
  run(["users", "add", "alice", "--role", "viewer"]);
  run(["users", "add", "root", "--role", "admin"]);
  // Alice manages a team with Bob in it.
  run(["teams", "create", "e2e-team"]);
  run(["teams", "add", "e2e-team", "alice", "--role", "manager"]);
  run(["teams", "add", "e2e-team", "bob"]);
  const lines = [event("alice", 60, "chat", 1200, 300, "search"), event("alice", 60 * 26, "embedding", 5000, 0), event("alice", 60 * 50, "chat", 700, 70),
    event("bob", 30, "chat", 99999, 1)].join("\n");
  run(["publish", "-", "--source", "e2e"], lines);
  // A heavy user nobody else sees: 10^12 tokens in one hour puts the
  // admin's value axis at the scale where labels were once cut.
  run(["publish", "-", "--source", "e2e"], Array.from({ length: 1000 }, () => event("whale", 120, "batch", 1000000000, 0)).join("\n"));
  // A provider's report of the last three days, for the admin's reconciliation.
  const day = (n) => new Date(Date.now() - n * 86400000).toISOString().slice(0, 10);
  const stub = await providerStub([day(2), day(1), day(0)]);
  run(["providers", "add", "e2e-openai", "--provider", "openai", "--base-url", stub.url, "--import-from", day(3)], "sk-admin-e2e\n");
  run(["providers", "map", "e2e-openai", "--scope", "proj_e2e", "--to-project", "e2e-proj"]);
  await runAsync(["providers", "import", "e2e-openai", "--from", day(3), "--outbound-allow", "127.0.0.0/8"]);
  stub.server.close();
  const { child, url } = await startServer();
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"] });
  const token = await apiLogin(url, "alice");
  // Wait until the projector has counted the published events.
  for (let i = 0; i < 100 && (await apiTotal(url, token)) !== 7270; i++) await new Promise((r) => setTimeout(r, 200));
  const rootToken = await apiLogin(url, "root");
  for (let i = 0; i < 150 && (await apiTotal(url, rootToken, "*")) !== 1000000107270; i++) await new Promise((r) => setTimeout(r, 200));
  try {
    // A strict context: the page's own CSP applies; any violation fails.
    const ctx = await browser.newContext({ timezoneId: TZ, locale: "en-GB", viewport: { width: 1280, height: 900 } });
    const page = await ctx.newPage();
    const cspViolations = [];
    page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
    page.on("pageerror", (e) => cspViolations.push("page error: " + e.message));
    await page.goto(url + "/");

    await test("sign in and see the chart with exactly the API's numbers", async () => {
      await signIn(page, "alice");
      const want = await apiTotal(url, token);
      assert(want === 7270, "the API total is the published events' (got " + want + ")");
      await page.waitForFunction((w) => document.getElementById("fig-total").textContent.replace(/[^0-9]/g, "") === String(w), want, { timeout: 10000 });
      assert(await page.locator("#chart canvas").count() > 0, "the chart is drawn");
      // A week reads as seven daily bars, as the providers' usage pages show it.
      const shape = await page.evaluate(() => ({ shape: document.getElementById("chart").dataset.shape, name: document.getElementById("chart").getAttribute("aria-label") }));
      assert(shape.shape === "bars" && /^Tokens per day: 7 days from /.test(shape.name), "a week is daily bars: " + JSON.stringify(shape));
      // The value axis: compact labels, and room for the widest of them
      // (a fixed 70 px once cut 2,500,000 to ",500,000").
      const axis = await page.evaluate(() => ({ ...document.getElementById("chart").dataset }));
      const labels = (axis.yLabels || "").split("|").filter(Boolean);
      assert(labels.length > 1 && labels.every((l) => /^[0-9][0-9.,]*\s?[KMBT]?$/i.test(l)), "compact axis labels: " + axis.yLabels);
      assert(Number(axis.yAxisWidth) >= Number(axis.yLabelWidth) + 20, "the axis is wider than its widest label: " + JSON.stringify(axis));
      await page.screenshot({ path: join(artifacts, "dashboard.png"), fullPage: true });
    });

    await test("cost: priced with the shipped catalogue, shown in the viewer's locale, and charted on request", async () => {
      // gpt-4o-mini at $0.15 / $0.60 per million: 6900 input and 370 output tokens = $0.001257.
      const q = new URLSearchParams({ from: berlinDate(-6), to: berlinDate(2), tz: TZ });
      const api = await (await fetch(url + "/api/v1/usage/series?" + q, { headers: { authorization: "Bearer " + token } })).json();
      assert(api.total.cost === "0.001257", "the API prices the events exactly (got " + JSON.stringify(api.total) + ")");
      await page.waitForFunction(() => /0\.001257/.test(document.getElementById("fig-cost").textContent), null, { timeout: 10000 });
      assert(/US\$|\$/.test(await page.textContent("#fig-cost")), "the cost is formatted as a currency: " + await page.textContent("#fig-cost"));
      assert((await page.textContent("#fig-unpriced")).trim() === "none", "every token had a price");
      await page.selectOption("#metric", "cost");
      await page.waitForFunction(() => /cost in USD/.test(document.getElementById("legend").textContent), null, { timeout: 5000 });
      assert(await page.locator("#chart canvas").count() > 0, "the cost chart is drawn");
      const ticks = (await page.getAttribute("#chart", "data-y-labels") || "").split("|").filter(Boolean);
      assert(ticks.length > 1 && ticks.every((t) => /\$/.test(t)), "the cost axis carries its currency: " + ticks.join(", "));
      await page.selectOption("#metric", "total");
    });

    await test("publish an event and watch the chart and totals change without a reload", async () => {
      await page.evaluate(() => { window.__sameDocument = true; });
      run(["publish", "-", "--source", "e2e"], event("alice", 5, "agent-run", 40, 2));
      await page.waitForFunction(() => document.getElementById("fig-total").textContent.replace(/[^0-9]/g, "") === "7312", null, { timeout: 20000 });
      assert(await page.evaluate(() => window.__sameDocument === true), "the page was not reloaded");
      assert(digits(await page.textContent("#fig-total")) === await apiTotal(url, token), "the page equals the API after the change");
      // The projector's freshness probe reports within seconds.
      await page.waitForFunction(() => /Complete through \d/.test(document.getElementById("freshness").textContent.replace(/[^\w ]/g, " ")) ||
        /Complete through [A-Z0-9]/.test(document.getElementById("freshness").textContent), null, { timeout: 15000 });
      assert(cspViolations.length === 0, "CSP violations: " + cspViolations.join("; "));
    });

    await test("20 live pushes leave focus, the chart's cursor and the open data table where they were", async () => {
      if (!await page.evaluate(() => document.getElementById("table-details").open)) await page.click("#table-details summary");
      await page.focus("#chart"); await page.keyboard.press("End"); await page.keyboard.press("ArrowLeft");
      const before = await page.textContent("#point-live");
      const total = digits(await page.textContent("#fig-total"));
      run(["publish", "-", "--source", "e2e"], Array.from({ length: 20 }, (_, i) => event("alice", 1 + (i % 3), "chat", 10, 1)).join("\n"));
      await page.waitForFunction((t) => Number(document.getElementById("fig-total").textContent.replace(/[^0-9]/g, "")) === t, total + 220, { timeout: 20000 });
      const kept = await page.evaluate(() => ({ focus: document.activeElement.id, open: document.getElementById("table-details").open }));
      assert(kept.focus === "chart" && kept.open, "focus and the open table survive the pushes: " + JSON.stringify(kept));
      assert(await page.textContent("#point-live") === before, "the pushes are not announced over the cursor");
      // The cursor is still one before the last bucket: one step right is the last.
      await page.keyboard.press("ArrowRight");
      const last = await page.evaluate(() => { const rows = document.querySelectorAll("#table tbody tr"); return rows[rows.length - 1].cells[0].textContent; });
      await page.waitForFunction((l) => document.getElementById("point-live").textContent.startsWith(l + ":"), last, { timeout: 5000 });
      await page.click("#table-details summary");
    });

    await test("drive the whole page with the keyboard alone", async () => {
      const kctx = await browser.newContext({ timezoneId: TZ, locale: "en-GB" });
      const k = await kctx.newPage();
      await k.goto(url + "/");
      await k.waitForSelector("#sign-in:not([hidden])");
      // Tab from the top: skip link, theme toggle, then the form.
      let guard = 0;
      while ((await k.evaluate(() => document.activeElement && document.activeElement.id)) !== "username" && guard++ < 10) await k.keyboard.press("Tab");
      assert(guard < 10, "the user field is reachable with Tab");
      await k.keyboard.type("alice"); await k.keyboard.press("Tab"); await k.keyboard.type(PASSWORD); await k.keyboard.press("Enter");
      await k.waitForFunction(() => document.getElementById("conn").dataset.state === "live", null, { timeout: 20000 });
      guard = 0;
      while ((await k.evaluate(() => document.activeElement && document.activeElement.id)) !== "chart" && guard++ < 40) await k.keyboard.press("Tab");
      assert(guard < 40, "the chart is reachable with Tab");
      const outline = await k.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
      assert(outline !== "none", "focus is visible on the chart");
      await k.keyboard.press("End"); await k.keyboard.press("ArrowLeft");
      await k.waitForFunction(() => /tokens/.test(document.getElementById("point-live").textContent));
      await k.keyboard.press("Enter");
      await k.waitForSelector("#detail-table:not([hidden])", { timeout: 10000 });
      // Open the data table and change the granularity, keyboard only.
      await k.focus("#table-details summary"); await k.keyboard.press("Enter");
      assert(await k.evaluate(() => document.getElementById("table-details").open), "the data table opens with Enter");
      await k.focus("#granularity"); await k.keyboard.press("ArrowDown");
      await k.waitForFunction(() => document.getElementById("conn").dataset.state === "live");
      await k.screenshot({ path: join(artifacts, "keyboard.png"), fullPage: true });
      // A reload keeps the session (HttpOnly cookie, no token in storage).
      await k.reload();
      await k.waitForSelector("#dashboard:not([hidden])", { timeout: 10000 });
      assert(await k.evaluate(() => localStorage.length === 0 || Object.keys(localStorage).every((x) => x === "tokenusage-theme")), "no token in storage");
      await kctx.close();
    });

    await test("after a range change the chart's cursor is on a bucket of the new range", async () => {
      await page.focus("#chart"); await page.keyboard.press("Home");
      const first = await page.textContent("#point-live");
      const week = await page.getAttribute("#chart", "aria-label");
      await page.focus("#range"); await page.selectOption("#range", "today");
      await page.waitForFunction((before) => document.getElementById("chart").getAttribute("aria-label") !== before, week, { timeout: 10000 });
      await page.focus("#chart");
      await page.waitForFunction((before) => document.getElementById("point-live").textContent !== before, first, { timeout: 5000 });
      const said = await page.textContent("#point-live");
      const today = new Intl.DateTimeFormat("en-GB", { timeZone: TZ, day: "numeric", month: "short", year: "numeric" }).format(new Date());
      assert(said.startsWith(today), "the cursor announces a bucket of today (" + today + "), not of the old range: " + said + " (was: " + first + ")");
      await page.focus("#range"); await page.selectOption("#range", "7d");
      await page.waitForFunction(() => document.getElementById("conn").dataset.state === "live");
    });

    await test("the legend shows one series alone, and all again, keeping focus", async () => {
      const legend = () => page.$$eval("#legend button", (bs) => bs.map((b) => [b.textContent, b.getAttribute("aria-pressed")]));
      const before = await legend();
      assert(before.length >= 2 && before.every(([, p]) => p === "false"), "one toggle per group: " + JSON.stringify(before));
      const all = await page.getAttribute("#chart", "aria-label");
      const [name] = before[0];
      await page.focus("#legend button"); await page.keyboard.press("Enter");
      await page.waitForFunction((n) => (document.getElementById("chart").getAttribute("aria-label") || "").includes(n + " only"), name, { timeout: 5000 });
      const after = await legend();
      assert(after.find(([n]) => n === name)[1] === "true" && after.filter(([, p]) => p === "true").length === 1, "pressed alone: " + JSON.stringify(after));
      assert(await page.evaluate(() => document.activeElement.closest("#legend") !== null && document.activeElement.getAttribute("aria-pressed") === "true"), "focus stays on the toggle");
      const alone = digits((/; ([\d,]+) tokens in all/.exec(await page.getAttribute("#chart", "aria-label")) || [, ""])[1]);
      const whole = digits((/; ([\d,]+) tokens in all/.exec(all) || [, ""])[1]);
      assert(alone > 0 && alone < whole, "the chart sums that series alone: " + alone + " of " + whole);
      await page.keyboard.press("Enter");
      await page.waitForFunction((a) => document.getElementById("chart").getAttribute("aria-label") === a, all, { timeout: 5000 });
    });

    await test("every task by keyboard alone, the focused control named at each step (sign-in, range, cost, team, budget, sign-out)", async () => {
      const wctx = await browser.newContext({ timezoneId: TZ, locale: "en-GB" });
      const w = await wctx.newPage();
      await w.goto(url + "/");
      await w.waitForSelector("#sign-in:not([hidden])");
      // The focused element's accessible name, as the page gives it.
      const focused = () => w.evaluate(() => {
        const el = document.activeElement; if (!el || el === document.body) return "";
        const by = (el.getAttribute("aria-labelledby") || "").split(" ").filter(Boolean).map((id) => document.getElementById(id).textContent).join(" ");
        return (by || el.getAttribute("aria-label") || (el.labels && el.labels[0] && el.labels[0].textContent) || el.textContent || "").trim().replace(/\s+/g, " ");
      });
      const steps = [];
      const tabTo = async (name) => {
        for (let i = 0; i < 80; i++) {
          const now = await focused();
          if (now === name || (name instanceof RegExp && name.test(now))) { steps.push(now); return; }
          await w.keyboard.press("Tab");
        }
        throw new Error("Tab never reached " + name + " (steps so far: " + steps.join(" → ") + ")");
      };
      await tabTo("User"); await w.keyboard.type("alice");
      await w.keyboard.press("Tab"); assert(await focused() === "Password", "Tab from User is Password: " + await focused());
      await w.keyboard.type(PASSWORD); await w.keyboard.press("Enter");
      await w.waitForFunction(() => document.getElementById("conn").dataset.state === "live", null, { timeout: 20000 });
      await tabTo("Range"); await w.keyboard.type("Last 30");
      await w.waitForFunction(() => /^Last 30 days/.test(document.getElementById("view-said").textContent) && /: 30 days from /.test(document.getElementById("chart").getAttribute("aria-label") || ""), null, { timeout: 10000 });
      await tabTo("Measure"); await w.keyboard.type("Cost");
      await w.waitForFunction(() => /^Cost \(USD\) per day/.test(document.getElementById("chart-title").textContent), null, { timeout: 10000 });
      await tabTo("Team"); await w.keyboard.type("e2e");
      await w.waitForSelector("#overview:not([hidden])", { timeout: 10000 });
      assert(/team e2e-team/.test(await w.textContent("#view-said")), "the view says whose: " + await w.textContent("#view-said"));
      await tabTo("Set a budget"); await w.keyboard.press("Enter");
      await tabTo("Name"); await w.keyboard.type("Walked by keyboard");
      await tabTo("Tokens"); await w.keyboard.type("5000000"); await w.keyboard.press("Enter");
      await w.waitForFunction(() => /^Budget set: Walked by keyboard/.test(document.getElementById("budget-announce").textContent), null, { timeout: 10000 });
      const landed = await focused();
      steps.push(landed);
      assert(/^Walked by keyboard/.test(landed), "focus lands on the new budget: " + landed);
      await tabTo("Sign out"); await w.keyboard.press("Enter");
      await w.waitForSelector("#sign-in:not([hidden])");
      steps.push(await focused());
      assert(steps[steps.length - 1] === "User", "after signing out focus is on the user field: " + steps.join(" → "));
      await wctx.close();
    });

    await test("at 200 % zoom the first figures are on the first screen, and nothing scrolls sideways", async () => {
      // 1280 x 900 at 200 % is 640 x 450 CSS pixels.
      await page.setViewportSize({ width: 640, height: 450 });
      await page.evaluate(() => window.scrollTo(0, 0));
      // The chart follows its box on the next frame.
      await page.waitForFunction(() => document.documentElement.scrollWidth <= innerWidth, null, { timeout: 3000 }).catch(() => {});
      const seen = await page.evaluate(() => {
        const r = (id) => document.getElementById(id).getBoundingClientRect();
        const wider = [...document.querySelectorAll("body *")].filter((el) => el.getBoundingClientRect().right > innerWidth + 1 && !el.closest(".scroll") && !el.closest("[hidden]"))
          .slice(0, 5).map((el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + "." + el.className);
        return { total: r("fig-total").bottom, cost: r("fig-cost").bottom, height: innerHeight, wide: document.documentElement.scrollWidth, width: innerWidth, wider };
      });
      assert(seen.total <= seen.height && seen.cost <= seen.height, "total and cost on the first screen: " + JSON.stringify(seen));
      assert(seen.wide <= seen.width, "no sideways scrolling: " + JSON.stringify(seen));
      await page.screenshot({ path: join(artifacts, "zoom-200.png") });
      await page.setViewportSize({ width: 1280, height: 900 });
    });

    await test("a manager picks their team and a project: the members' sum, an overview of members", async () => {
      const tctx = await browser.newContext({ timezoneId: TZ, locale: "en-GB" });
      const p = await tctx.newPage();
      await p.goto(url + "/");
      await signIn(p, "alice");
      await p.waitForSelector("#team-field:not([hidden])");
      const tok = await apiLogin(url, "alice");
      const want = await apiTotal(url, tok, null, { team: "e2e-team" });
      const own = await apiTotal(url, tok);
      assert(want === own + 100000, "the team is alice (" + own + ") + bob (100,000), got " + want);
      // Keyboard only: focus the team picker and choose the team.
      await p.focus("#team"); await p.keyboard.press("ArrowDown");
      await p.waitForFunction((w) => document.getElementById("fig-total").textContent.replace(/[^0-9]/g, "") === String(w), want, { timeout: 10000 });
      await p.waitForSelector("#overview:not([hidden])");
      assert(/bob/.test(await p.textContent("#ov-users")) && /alice/.test(await p.textContent("#ov-users")), "the members are ranked");
      assert(/search/.test(await p.textContent("#ov-projects")), "the projects are ranked");
      // The project picker lists the range's projects; picking one filters the chart.
      await p.waitForFunction(() => Array.from(document.getElementById("project").options).some((o) => o.value === "search"), null, { timeout: 10000 });
      await p.selectOption("#project", "search");
      await p.waitForFunction(() => document.getElementById("fig-total").textContent.replace(/[^0-9]/g, "") === "1500", null, { timeout: 10000 });
      await tctx.close();
    });

    await test("an admin's first view is the organisation's usage, not their own", async () => {
      const actxAdmin = await browser.newContext({ timezoneId: TZ, locale: "en-GB" });
      const p = await actxAdmin.newPage();
      await p.goto(url + "/");
      await signIn(p, "root");
      assert(await p.inputValue("#user") === "*", "the user field starts at * (all users)");
      const want = await apiTotal(url, await apiLogin(url, "root"), "*");
      assert(want > 100000, "everyone's total includes bob's and alice's events (got " + want + ")");
      await p.waitForFunction((w) => document.getElementById("fig-total").textContent.replace(/[^0-9]/g, "") === String(w), want, { timeout: 10000 });
      // 10^12 tokens in one hour: every value label is compact and fits.
      const axis = await p.evaluate(() => ({ ...document.getElementById("chart").dataset }));
      const labels = (axis.yLabels || "").split("|").filter(Boolean);
      assert(labels.some((l) => /[0-9]\s?(bn|B|T|tn)$/i.test(l)), "the axis reaches billions or trillions: " + axis.yLabels);
      assert(labels.every((l) => l.length <= 6), "compact labels: " + axis.yLabels);
      assert(Number(axis.yAxisWidth) >= Number(axis.yLabelWidth) + 20, "the axis is wider than its widest label: " + JSON.stringify(axis));
      await actxAdmin.close();
    });

    await test("set a personal budget with the keyboard; its crossing is pushed live and announced", async () => {
      await page.focus("#budget-new summary"); await page.keyboard.press("Enter");
      await page.focus("#budget-name"); await page.keyboard.type("Monthly tokens");
      await page.focus("#budget-tokens"); await page.keyboard.type("10000000");
      await page.fill("#budget-thresholds", "50");
      await page.focus("#budget-form button[type=submit]"); await page.keyboard.press("Enter");
      await page.waitForFunction(() => /[\d,]+ of 10,000,000 tokens this month \(Europe\/Berlin\), [\d.]+ %/.test(document.getElementById("budget-list").textContent), null, { timeout: 20000 });
      // Creation is said, and focus lands on the new budget, not <body>.
      await page.waitForFunction(() => /^Budget set: /.test(document.getElementById("budget-announce").textContent), null, { timeout: 5000 });
      const landed = await page.evaluate(() => ({ tag: document.activeElement.tagName, id: document.activeElement.id, inList: document.getElementById("budget-list").contains(document.activeElement) }));
      assert(landed.inList && /^budget-\d+$/.test(landed.id), "focus is on the new budget: " + JSON.stringify(landed));
      assert(!/crossed/.test(await page.textContent("#budget-announce")), "nothing crossed yet");
      run(["publish", "-", "--source", "e2e"], event("alice", 0, "chat", 6000000, 0));
      await page.waitForFunction(() => /Budget .* crossed 50 %/.test(document.getElementById("budget-announce").textContent), null, { timeout: 30000 });
      const value = await page.evaluate(() => document.querySelector("#budget-list progress").value);
      assert(value >= 60 && value <= 100, "the bar shows the spend: " + value);
      assert(/Crossed: 50 %/.test(await page.textContent("#budget-list")), "the text says what was crossed");
      // A cost budget, typed with a decimal comma.
      await page.focus("#budget-new summary"); await page.keyboard.press("Enter");
      await page.selectOption("#budget-measure", "cost");
      assert(/Cost in/.test(await page.textContent("#budget-amount-label")), "the amount's label names the currency");
      await page.fill("#budget-name", "Monthly spend");
      await page.fill("#budget-tokens", "0,50");
      await page.focus("#budget-form button[type=submit]"); await page.keyboard.press("Enter");
      await page.waitForFunction(() => document.querySelectorAll("#budget-list li").length === 2, null, { timeout: 20000 });
      await page.waitForFunction(() => / of (US)?\$0\.50 this month \(Europe\/Berlin\), [\d.]+ %/.test(document.getElementById("budget-list").textContent), null, { timeout: 20000 });
      await page.screenshot({ path: join(artifacts, "budgets.png"), fullPage: true });
    });

    await test("budget thresholds are never dropped silently: 120% is 120, a word is an error", async () => {
      const count = () => page.evaluate(() => document.querySelectorAll("#budget-list li").length);
      const before = await count();
      await page.focus("#budget-new summary"); await page.keyboard.press("Enter");
      await page.selectOption("#budget-measure", "tokens");
      await page.fill("#budget-tokens", "123456789");
      // A name is required, and one already used for this scope is refused
      // next to the field, with focus on it.
      await page.fill("#budget-name", "  ");
      await page.focus("#budget-form button[type=submit]"); await page.keyboard.press("Enter");
      await page.waitForFunction(() => /Name the budget/.test(document.getElementById("budget-error").textContent), null, { timeout: 5000 });
      assert(await page.evaluate(() => document.activeElement.id === "budget-name" && document.activeElement.getAttribute("aria-invalid") === "true"), "focus on the empty name");
      await page.fill("#budget-name", "monthly TOKENS");
      await page.focus("#budget-form button[type=submit]"); await page.keyboard.press("Enter");
      await page.waitForFunction(() => /already exists/.test(document.getElementById("budget-error").textContent), null, { timeout: 5000 });
      assert(await page.evaluate(() => document.activeElement.id) === "budget-name", "focus on the taken name");
      assert(await count() === before, "nothing was created under a taken name");
      await page.fill("#budget-name", "Big one");
      await page.fill("#budget-thresholds", "50, eighty, 120%");
      await page.focus("#budget-form button[type=submit]"); await page.keyboard.press("Enter");
      await page.waitForFunction(() => /Not a threshold: “eighty”/.test(document.getElementById("budget-error").textContent), null, { timeout: 5000 });
      assert(await page.evaluate(() => document.activeElement.id) === "budget-thresholds", "focus moves to the field in error");
      assert(await count() === before, "nothing was created");
      await page.fill("#budget-thresholds", "50, 80, 120%");
      await page.focus("#budget-form button[type=submit]"); await page.keyboard.press("Enter");
      await page.waitForFunction((n) => document.querySelectorAll("#budget-list li").length === n + 1, before, { timeout: 20000 });
      const r = await fetch(url + "/api/v1/budgets", { headers: { authorization: "Bearer " + token } });
      const made = (await r.json()).find((b) => b.amount === 123456789);
      assert(made && JSON.stringify(made.thresholds) === "[50,80,120]", "all three thresholds were set: " + JSON.stringify(made && made.thresholds));
    });

    await test("live budget updates keep keyboard focus where it was", async () => {
      await page.focus("#budget-list li button");
      const label = await page.evaluate(() => document.activeElement.getAttribute("aria-label"));
      assert(/^Remove budget /.test(label || ""), "a Remove button has focus: " + label);
      const said = await page.textContent("#live-announce");
      for (let i = 1; i <= 5; i++) {
        const before = await page.textContent("#budget-list");
        run(["publish", "-", "--source", "e2e"], event("alice", 0, "chat", 1000 * i, 0));
        // The pushed update redraws the list (its numbers change)...
        await page.waitForFunction((b) => document.getElementById("budget-list").textContent !== b, before, { timeout: 30000 });
        // ...and focus is still on the same control.
        const now = await page.evaluate(() => document.activeElement && document.activeElement.getAttribute("aria-label"));
        assert(now === label, `after push ${i} focus moved from "${label}" to "${now}"`);
      }
      // Pushes are not announced: the live region still says what the
      // view showed when it was chosen.
      assert(/^Showing [0-9,.]+ tokens in this view\.$/.test(said), "the chosen view was announced: " + said);
      const after = await page.textContent("#live-announce");
      assert(after === said, `pushes were announced: "${said}" became "${after}"`);
    });

    await test("warning and over-budget budgets differ without colour (forced colours)", async () => {
      await page.emulateMedia({ forcedColors: "active" });
      const lis = await page.evaluate(() => [...document.querySelectorAll("#budget-list li")]
        .map((li) => ({ cls: li.className, style: getComputedStyle(li).borderLeftStyle })));
      await page.screenshot({ path: join(artifacts, "budgets-forced-colours.png"), fullPage: true });
      await page.emulateMedia({ forcedColors: "none" });
      const flagged = lis.filter((l) => l.cls === "warn" || l.cls === "over");
      assert(flagged.length > 0, "a budget past a threshold is listed: " + JSON.stringify(lis));
      for (const l of lis) {
        const want = l.cls === "over" ? "double" : l.cls === "warn" ? "dashed" : "solid";
        assert(l.style === want, `a ${l.cls || "plain"} budget's border is ${l.style}, not ${want}`);
      }
    });

    await test("'Who viewed my usage' names what was viewed in words, not codes", async () => {
      const what = await page.evaluate(() => [...document.querySelectorAll("#views-table tbody tr")]
        .map((tr) => tr.cells.length > 2 ? tr.cells[2].textContent : ""));
      assert(what.length > 0 && what.some((w) => w === "Usage chart"), "the admin's view of everyone is listed: " + JSON.stringify(what));
      for (const w of what) assert(!/^[a-z_]+\.[a-z_]+$/.test(w), "an action code is shown: " + w);
    });

    // Two accessibility engines on every screen and state, in a context that
    // may inject them.
    const actx = await browser.newContext({ timezoneId: TZ, locale: "en-GB", bypassCSP: true });
    const a = await actx.newPage();
    await test("a11y: sign-in screen", async () => {
      await a.goto(url + "/"); await a.waitForSelector("#sign-in:not([hidden])"); await a11y(a, "sign-in");
    });
    await test("sign-in errors are announced and focus the field to fix", async () => {
      const state = () => a.evaluate(() => ({
        said: document.getElementById("sign-in-error").textContent,
        role: document.getElementById("sign-in-error").getAttribute("role"),
        focus: document.activeElement && document.activeElement.id,
        invalid: document.activeElement && document.activeElement.getAttribute("aria-invalid"),
      }));
      await a.click("#sign-in-form button[type=submit]");
      let s = await state();
      assert(s.role === "alert" && s.said === "Enter your user name." && s.focus === "username" && s.invalid === "true",
        "empty form: " + JSON.stringify(s));
      await a.fill("#username", "nobody-" + Date.now());
      await a.click("#sign-in-form button[type=submit]");
      s = await state();
      assert(s.said === "Enter your password." && s.focus === "password", "no password: " + JSON.stringify(s));
      await a.fill("#password", "not-the-password");
      await a.click("#sign-in-form button[type=submit]");
      await a.waitForFunction(() => /Wrong/.test(document.getElementById("sign-in-error").textContent), null, { timeout: 5000 });
      s = await state();
      assert(s.focus === "password" && s.invalid === "true", "wrong password: " + JSON.stringify(s));
      await a.fill("#username", ""); await a.fill("#password", "");
    });
    await test("a11y: dashboard", async () => { await signIn(a, "alice"); await a11y(a, "dashboard"); });
    await test("a11y: the cost view", async () => {
      await a.selectOption("#metric", "cost");
      await a.waitForFunction(() => /cost in/.test(document.getElementById("legend").textContent), null, { timeout: 5000 });
      await a11y(a, "cost"); await a.selectOption("#metric", "total");
    });
    await test("the chart's text alternative says what it shows and what the data say, and the keys once", async () => {
      const read = () => a.evaluate(() => {
        const c = document.getElementById("chart");
        const text = (ids) => (ids || "").split(" ").filter(Boolean).map((id) => document.getElementById(id).textContent).join(" ");
        return { name: c.getAttribute("aria-label"), description: text(c.getAttribute("aria-describedby")),
          figure: text(c.closest("figure").getAttribute("aria-labelledby")) };
      });
      let r = await read();
      assert(/^Tokens per (hour|day): \d+ (hours|days) from .+ to .+; [\d,]+ tokens in all; highest [\d,]+ tokens at .+\.$/.test(r.name), "the chart's name summarises the data: " + r.name);
      assert(!/arrow/i.test(r.name) && !/arrow/i.test(r.figure), "instructions are not in the names: " + JSON.stringify(r));
      assert(/Arrow keys/.test(r.description), "instructions are the description: " + r.description);
      const total = digits(await a.textContent("#fig-total"));
      assert(r.name.includes(total.toLocaleString("en-GB") + " tokens in all"), "the summary's total is the figure's: " + total + " vs " + r.name);
      await a.selectOption("#metric", "cost");
      await a.waitForFunction(() => /^Cost \(USD\) per/.test(document.getElementById("chart").getAttribute("aria-label")), null, { timeout: 5000 });
      r = await read();
      assert(/^Cost \(USD\) per (hour|day): .*US\$[\d.,]+ in all/.test(r.name) && /^Cost \(USD\) per/.test(r.figure), "the cost view says so, with its currency: " + JSON.stringify(r));
      await a.selectOption("#metric", "total");
    });
    await test("a11y: data table open and a bucket's breakdown", async () => {
      await a.click("#table-details summary"); await a.focus("#chart"); await a.keyboard.press("Enter");
      await a.waitForSelector("#detail-table:not([hidden])"); await a11y(a, "table-open");
    });
    await test("a11y: a manager's team view with its overview", async () => {
      await a.selectOption("#team", "e2e-team");
      await a.waitForSelector("#overview:not([hidden])");
      await a.waitForSelector("#ov-users tbody th");
      await a11y(a, "team"); await a.selectOption("#team", "");
    });
    await test("a11y: dark theme", async () => { await a.click("#theme"); await a11y(a, "dark"); await a.click("#theme"); });
    await test("a11y: 200 % zoom (640 x 450)", async () => { await a.setViewportSize({ width: 640, height: 450 }); await a11y(a, "zoom-200"); await a.setViewportSize({ width: 1280, height: 900 }); });
    await test("a11y: narrow screen (320 px)", async () => { await a.setViewportSize({ width: 320, height: 800 }); await a11y(a, "narrow"); await a.setViewportSize({ width: 1280, height: 900 }); });
    await test("unpriced tokens make the cost a lower bound, with what to do: a link for admins, who can for everyone else", async () => {
      const unknown = JSON.parse(event("bob", 4, "chat", 1000, 10)); unknown.model = "e2e-model-without-a-price";
      run(["publish", "-", "--source", "e2e"], JSON.stringify(unknown));
      const seen = async (p) => {
        await p.waitForFunction(() => /^[\d,]+ /.test(document.getElementById("fig-unpriced").textContent), null, { timeout: 20000 });
        return p.evaluate(() => ({ text: document.getElementById("fig-unpriced").textContent, link: (document.querySelector("#fig-unpriced a") || {}).href || null,
          cost: document.getElementById("fig-cost").textContent }));
      };
      // Bob's manager sees the team's cost (bob's unpriced event in it).
      await a.selectOption("#team", "e2e-team");
      const viewer = await seen(a);
      assert(/lower bound/.test(viewer.text) && /An admin can add/.test(viewer.text) && viewer.link === null, "a manager is told who can price it: " + JSON.stringify(viewer));
      assert(/^at least /.test(viewer.cost), "the cost says it is a lower bound: " + viewer.cost);
      await a.selectOption("#team", "");
    });
    await test("a11y: admin views (user picker, all users, audit log)", async () => {
      await a.click("#sign-out"); await a.waitForSelector("#sign-in:not([hidden])");
      await signIn(a, "root");
      await a.waitForSelector("#admin:not([hidden])");
      await a.waitForFunction(() => document.getElementById("conn").dataset.state === "live");
      await a.waitForSelector("#audit-table tbody tr");
      // Everyone's usage holds bob's unpriced event: an admin gets a link to price it.
      await a.waitForFunction(() => !!document.querySelector("#fig-unpriced a"), null, { timeout: 20000 });
      assert((await a.getAttribute("#fig-unpriced a", "href")) === "/docs/#/admin/set_price", "the admin's link goes to adding a price");
      // The dashboard's own reads of one page view are one row, naming
      // what was read; an admin's search for one action lists each entry.
      const audit = await a.$$eval("#audit-table tbody tr", (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
      const grouped = audit.filter((c) => /^Dashboard, \d+ reads: /.test(c[2] || ""));
      assert(grouped.length > 0 && grouped.some((c) => /Usage totals/.test(c[2])), "page reads are grouped: " + audit.map((c) => c[2]).join(" | "));
      await a.fill("#audit-action", "usage.series"); await a.press("#audit-action", "Enter");
      await a.waitForFunction(() => [...document.querySelectorAll("#audit-table tbody tr")].every((r) => r.cells[2] && r.cells[2].textContent === "usage.series"));
      await a.fill("#audit-action", ""); await a.press("#audit-action", "Enter");
      await a.waitForFunction(() => [...document.querySelectorAll("#audit-table tbody tr")].some((r) => /^Dashboard, /.test(r.cells[2] ? r.cells[2].textContent : "")));
      // The reconciliation: the provider's usage that nothing of ours was
      // published for, with the reason in words.
      await a.waitForSelector("#reconcile-table tbody tr td:nth-child(9)");
      const why = await a.$$eval("#reconcile-table tbody tr", (rows) => rows.map((r) => r.textContent));
      assert(why.some((t) => t.includes("gpt-4o-mini") && t.includes("events were not published")), "reconciliation rows: " + why.join(" | "));
      assert(/lines differ/.test(await a.textContent("#reconcile-status")), "reconciliation status");
      assert(why.some((t) => t.includes("unmapped proj_new")), "the unmapped project is shown: " + why.join(" | "));
      // Mapping it from the dashboard, by keyboard: a missing target is an
      // error next to the fields, with focus on the first one to fix.
      await a.click("#map-new summary");
      const offered = await a.$$eval("#map-unmapped option", (os) => os.map((o) => o.value));
      assert(offered.includes("proj_new"), "unmapped ids are suggested: " + offered.join(", "));
      await a.fill("#map-external", "proj_new");
      await a.press("#map-external", "Enter");
      assert((await a.textContent("#map-error")).includes("our project, our publisher, or both"), "a missing target is named");
      assert(await a.evaluate(() => document.activeElement.id) === "map-project", "focus moves to the field to fix");
      await a.keyboard.type("e2e-new");
      await a.keyboard.press("Enter");
      await a.waitForFunction(() => document.getElementById("map-announce").textContent.includes("Mapped proj_new"));
      assert(await a.evaluate(() => document.activeElement.id) === "map-external", "focus returns to the form's first field");
      await a.waitForFunction(() => [...document.querySelectorAll("#reconcile-table tbody tr")].some((r) => r.textContent.includes("project e2e-new")));
      // A year is answered a day at a time.
      await a.selectOption("#range", "12m");
      await a.waitForFunction(() => /days differ/.test(document.getElementById("reconcile-status").textContent));
      const dayRows = await a.$$eval("#reconcile-table tbody tr", (rows) => rows.map((r) => r.textContent));
      assert(dayRows.length === 3 && dayRows.every((t) => t.includes("(all models)") && t.includes("e2e-openai")), "day rows: " + dayRows.join(" | "));
      await a.selectOption("#range", "7d");
      await a.waitForFunction(() => /lines differ/.test(document.getElementById("reconcile-status").textContent));
      // Every landmark and every control has a name of its own (two
      // regions once shared "Bucket breakdown", two controls "Show").
      const names = await a.evaluate(() => {
        const named = (el) => (el.getAttribute("aria-labelledby") || "").split(" ").filter(Boolean)
          .map((id) => (document.getElementById(id) || {}).textContent || "").join(" ").trim() || el.getAttribute("aria-label") || "";
        const visible = (el) => !el.closest("[hidden]");
        const regions = [...document.querySelectorAll("section[aria-labelledby], section[aria-label], [role=region]")].filter(visible).map(named);
        const labels = [...document.querySelectorAll("label[for]")].filter(visible).map((l) => l.textContent.trim());
        const buttons = [...document.querySelectorAll("button")].filter(visible).map((b) => b.textContent.trim());
        return { regions, controls: labels.concat(buttons) };
      });
      const twice = (xs) => xs.filter((x, i) => x && xs.indexOf(x) !== i);
      assert(twice(names.regions).length === 0, "landmarks named twice: " + twice(names.regions).join(", "));
      assert(!twice(names.controls).includes("Show"), "one control named Show: " + names.controls.join(", "));
      // Every column's header sits on the same side as its cells (the
      // audit log's text headers were right-aligned over left-aligned text).
      if (!await a.evaluate(() => document.getElementById("table-details").open)) await a.click("#table-details summary");
      await a.waitForSelector("#table tbody tr");
      const skewed = await a.evaluate(() => {
        const out = []; let checked = 0;
        for (const t of document.querySelectorAll("table")) {
          if (t.closest("[hidden]") || !t.tHead) continue;
          const heads = t.tHead.rows[0].cells;
          const row = [...t.tBodies[0].rows].find((r) => r.cells.length === heads.length);
          if (!row) continue;
          for (let i = 0; i < heads.length; i++) {
            checked++;
            const h = getComputedStyle(heads[i]).textAlign, c = getComputedStyle(row.cells[i]).textAlign;
            if (h !== c) out.push(t.id + ": " + heads[i].textContent + " " + h + " over " + c);
          }
        }
        return { out, checked };
      });
      assert(skewed.checked > 30, "columns were checked: " + skewed.checked);
      assert(skewed.out.length === 0, "headers not aligned with their columns: " + skewed.out.join("; "));
      await a.screenshot({ path: join(artifacts, "admin-tables.png"), fullPage: true });
      await a11y(a, "admin");
      await a.click("#theme"); await a11y(a, "admin-dark");
    });
    await actx.close();
    await ctx.close();
  } finally {
    await browser.close();
    child.kill("SIGTERM");
  }
  const failed = results.filter(([, ok]) => !ok).length;
  console.log(`e2e: ${results.length - failed} passed, ${failed} failed (screenshots in ${artifacts})`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(1); });
