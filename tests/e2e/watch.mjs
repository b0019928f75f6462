// Drives watch pages in headless Chromium (Debian's, through playwright-core) for the card
// and buy tests: opens each URL in its own browser context at a phone-sized viewport, prints
// {"ready": ...} once every page plays, then waits (the test pins cards meanwhile) until every
// page has shown and hidden the card `sync` and shown the card `buy`, taps the buy button of
// the first page rapidly `taps` times while that card is up, and prints a report per page.
// usage: node watch.mjs '{"urls": [...], "sync": "sku-a", "buy": "sku-b", "taps": 5,
//                         "width": 390, "height": 844, "timeout": 90}'
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const report = { pages: [], exception: null };
let browser;

const readState = (page) => page.evaluate(() => {
  const s = window.mediacore || {};
  const v = document.querySelector("video");
  const q = v.getVideoPlaybackQuality();
  const cards = Object.values(s.cards || {});
  const product = (id) => (cards.find((c) => c.id === id) || {}).productId || null;
  const btn = document.getElementById("buy").getBoundingClientRect();
  return {
    playing: !!s.playing, t: v.currentTime, frames: q.totalVideoFrames, dropped: q.droppedVideoFrames,
    rvfcFrames: s.frames || 0, framePdt: s.framePdt, now: Date.now(), lowLatency: s.lowLatency,
    cardLog: (s.cardLog || []).map((e) => ({ ...e, productId: product(e.id) })),
    hideLog: (s.hideLog || []).map((e) => ({ ...e, productId: product(e.id) })),
    orders: s.orders || [], result: document.querySelector("#card .result").textContent,
    shown: s.shown ? product(s.shown) : null, cardHidden: document.getElementById("card").hidden,
    viewers: s.viewers, latencyText: document.getElementById("latency").textContent,
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    button: { x: btn.x, y: btn.y, width: btn.width, height: btn.height },
    errors: s.errors || [], fatal: s.fatal || null,
  };
});

try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--autoplay-policy=no-user-gesture-required"],
  });
  const pages = [];
  for (const url of cfg.urls) {
    const context = await browser.newContext({ viewport: { width: cfg.width, height: cfg.height },
                                               deviceScaleFactor: 1, isMobile: false });
    const page = await context.newPage();
    const entry = { url, console: [], pageErrors: [] };
    page.on("console", (msg) => { if (["error", "warning"].includes(msg.type())) entry.console.push(msg.text().slice(0, 300)); });
    page.on("pageerror", (e) => entry.pageErrors.push(String(e).slice(0, 300)));
    await page.goto(url, { waitUntil: "load" });
    pages.push({ page, entry });
    report.pages.push(entry);
  }
  const deadline = Date.now() + cfg.timeout * 1000;
  // Ready: every page is playing and presenting frames mapped to PDT.
  for (;;) {
    const states = await Promise.all(pages.map(({ page }) => readState(page)));
    if (states.every((s) => s.playing && s.rvfcFrames > 30)) {
      pages.forEach(({ entry }, i) => { entry.ready = states[i]; });
      out({ ready: states.map((s) => ({ framePdt: s.framePdt, now: s.now, lowLatency: s.lowLatency })) });
      break;
    }
    if (Date.now() > deadline) throw new Error(`pages did not start: ${JSON.stringify(states.map(s => [s.playing, s.rvfcFrames, s.errors]))}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  let tapped = false;
  for (;;) {
    const states = await Promise.all(pages.map(({ page }) => readState(page)));
    if (!tapped && states[0].shown === cfg.buy) {
      // Rapid repeated taps on the buy button, as real mouse input at its position.
      const b = states[0].button;
      for (let i = 0; i < cfg.taps; i++) {
        await pages[0].page.mouse.click(b.x + b.width / 2, b.y + b.height / 2);
        await new Promise((r) => setTimeout(r, 40));
      }
      tapped = true;
    }
    const done = states.every((s) => s.hideLog.some((e) => e.productId === cfg.sync) &&
                                     s.cardLog.some((e) => e.productId === cfg.buy)) &&
                 tapped && states[0].orders.length > 0;
    if (done || Date.now() > deadline) {
      // A little more playback, so a second order (if any) would have time to show up.
      await new Promise((r) => setTimeout(r, 1500));
      const final = await Promise.all(pages.map(({ page }) => readState(page)));
      pages.forEach(({ entry }, i) => { entry.end = final[i]; });
      report.done = done;
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
} catch (e) {
  report.exception = String(e);
} finally {
  if (browser) await browser.close();
}
out(report);
