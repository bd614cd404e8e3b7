// Dashboard benchmarks (not tests): first contentful paint of the page on
// localhost, the time from pressing "Sign in" to the first chart drawn,
// drawing a year of hourly points across 5 series (stacked areas), a year
// of daily bars x 5 and a day of minutes x 5, and a live redraw of each,
// in Debian's Chromium. Needs a running server (and, for the sign-in
// figure, BENCH_USER / BENCH_PASSWORD of a user on it):
//
//   node web/tests/bench.mjs http://127.0.0.1:8080
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");
const url = process.argv[2] || "http://127.0.0.1:8080";
const RUNS = 10;

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const p95 = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.round(s.length * 0.95) - 1)]; };

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"] });
try {
  const fcps = [];
  for (let i = 0; i < RUNS; i++) {
    const ctx = await browser.newContext(); // cold cache each time
    const page = await ctx.newPage();
    await page.goto(url + "/", { waitUntil: "load" });
    fcps.push(await page.evaluate(() => new Promise((resolve) => {
      const e = performance.getEntriesByName("first-contentful-paint")[0];
      if (e) return resolve(e.startTime);
      new PerformanceObserver((l) => resolve(l.getEntries()[0].startTime)).observe({ type: "paint", buffered: true });
    })));
    await ctx.close();
  }
  // Sign-in to the first chart, through the page as a person uses it:
  // from the press of "Sign in" to the chart's canvas drawn with its data
  // (its text alternative names the range).
  const signIns = [];
  if (process.env.BENCH_USER) {
    for (let i = 0; i < RUNS; i++) {
      const sctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const p = await sctx.newPage();
      await p.goto(url + "/", { waitUntil: "load" });
      await p.fill("#username", process.env.BENCH_USER); await p.fill("#password", process.env.BENCH_PASSWORD || "");
      const t0 = await p.evaluate(() => performance.now());
      await p.click("#sign-in-form button[type=submit]");
      await p.waitForFunction(() => document.querySelector("#chart canvas") && / from /.test(document.getElementById("chart").getAttribute("aria-label") || ""), null, { timeout: 30000 });
      signIns.push(await p.evaluate(() => performance.now()) - t0);
      await sctx.close();
    }
  }
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  await page.goto(url + "/", { waitUntil: "load" });
  // The dashboard's own chart code path: uPlot with the same options shape
  // (stacked bands, dashes, time axis in a named zone), 8760 x 5 points.
  const shapes = [
    { name: "year of hourly points x 5 series, stacked areas", n: 8760, step: 3600, bars: false },
    { name: "year of daily bars x 5 series, stacked", n: 365, step: 86400, bars: true },
    { name: "day of minute points x 5 series, stacked areas", n: 1440, step: 60, bars: false },
  ];
  const results = [];
  for (const shape of shapes) results.push([shape.name, await page.evaluate(async ([runs, shape]) => {
    const n = shape.n, k = 5, start = Date.UTC(2025, 0, 1) / 1000;
    const xs = Array.from({ length: n }, (_, i) => start + i * shape.step);
    const make = (bump) => {
      const acc = new Array(n).fill(0); const data = [xs];
      for (let s = 0; s < k; s++) { for (let i = 0; i < n; i++) acc[i] += 100 + ((i * (s + 3) + bump) % 997); data.push(acc.slice()); }
      // Stacked bars are drawn tallest first, as the dashboard does.
      return shape.bars ? [xs, ...data.slice(1).reverse()] : data;
    };
    const el = document.createElement("div"); el.style.width = "1200px"; document.body.appendChild(el);
    const series = [{}]; const dashes = [[], [6, 3], [2, 3], [8, 3, 2, 3], [12, 4]];
    for (let s = 0; s < k; s++) series.push(shape.bars
      ? { label: "s" + s, stroke: "#1a1a1a", width: 1, dash: dashes[s], fill: "#0b5cad", paths: uPlot.paths.bars({ size: [0.7, 64] }), points: { show: false } }
      : { label: "s" + s, stroke: "#0b5cad", width: 2, dash: dashes[s], fill: "#0b5cad33", points: { show: false } });
    const bands = []; if (!shape.bars) for (let s = k; s > 1; s--) bands.push({ series: [s, s - 1] });
    // uPlot commits drawing in a microtask: time until its `draw` hook fires.
    let drawnAt = 0;
    const opts = { width: 1200, height: 320, series, bands, legend: { show: false }, scales: { x: { time: true } },
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Europe/Berlin"), hooks: { draw: [() => { drawnAt = performance.now(); }] } };
    const settle = async () => { for (let i = 0; i < 3; i++) await Promise.resolve(); await new Promise((r) => setTimeout(r, 0)); };
    const draws = [], redraws = [];
    for (let run = 0; run < runs; run++) {
      const data = make(run);
      drawnAt = 0;
      const t0 = performance.now();
      const u = new uPlot(opts, data, el);
      await settle();
      draws.push(drawnAt - t0);
      for (let j = 0; j < 5; j++) {
        const next = make(run * 10 + j + 1);
        drawnAt = 0;
        const t1 = performance.now();
        u.setData(next, false); u.redraw(false, false);
        await settle();
        redraws.push(drawnAt - t1);
      }
      u.destroy();
    }
    el.remove();
    return { draws, redraws };
  }, [RUNS, shape])]);
  console.log(`first contentful paint: median ${median(fcps).toFixed(0)} ms, p95 ${p95(fcps).toFixed(0)} ms (${RUNS} cold loads)`);
  if (signIns.length) console.log(`sign-in to the first chart: median ${median(signIns).toFixed(0)} ms, p95 ${p95(signIns).toFixed(0)} ms (${RUNS} fresh contexts)`);
  for (const [name, r] of results) {
    console.log(`${name}, first draw: median ${median(r.draws).toFixed(1)} ms, p95 ${p95(r.draws).toFixed(1)} ms`);
    console.log(`${name}, live redraw (setData + redraw): median ${median(r.redraws).toFixed(1)} ms, p95 ${p95(r.redraws).toFixed(1)} ms`);
  }
} finally {
  await browser.close();
}
