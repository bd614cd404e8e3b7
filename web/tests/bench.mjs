// Dashboard benchmarks (not tests): first contentful paint of the page on
// localhost, drawing a year of hourly points across 5 series, and a live
// redraw, in Debian's Chromium. Needs a running server:
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
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  await page.goto(url + "/", { waitUntil: "load" });
  // The dashboard's own chart code path: uPlot with the same options shape
  // (stacked bands, dashes, time axis in a named zone), 8760 x 5 points.
  const r = await page.evaluate(async (runs) => {
    const n = 8760, k = 5, start = Date.UTC(2025, 0, 1) / 1000;
    const xs = Array.from({ length: n }, (_, i) => start + i * 3600);
    const make = (bump) => {
      const acc = new Array(n).fill(0); const data = [xs];
      for (let s = 0; s < k; s++) { for (let i = 0; i < n; i++) acc[i] += 100 + ((i * (s + 3) + bump) % 997); data.push(acc.slice()); }
      return data;
    };
    const el = document.createElement("div"); el.style.width = "1200px"; document.body.appendChild(el);
    const series = [{}]; const dashes = [[], [6, 3], [2, 3], [8, 3, 2, 3], [12, 4]];
    for (let s = 0; s < k; s++) series.push({ label: "s" + s, stroke: "#0b5cad", width: 2, dash: dashes[s], fill: "#0b5cad33", points: { show: false } });
    const bands = []; for (let s = k; s > 1; s--) bands.push({ series: [s, s - 1] });
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
    return { draws, redraws };
  }, RUNS);
  console.log(`first contentful paint: median ${median(fcps).toFixed(0)} ms, p95 ${p95(fcps).toFixed(0)} ms (${RUNS} cold loads)`);
  console.log(`year of hourly points x 5 series, first draw: median ${median(r.draws).toFixed(1)} ms, p95 ${p95(r.draws).toFixed(1)} ms`);
  console.log(`live redraw (setData + redraw): median ${median(r.redraws).toFixed(1)} ms, p95 ${p95(r.redraws).toFixed(1)} ms`);
} finally {
  await browser.close();
}
