// What the watch-page browser harnesses (watch.mjs, shop.mjs) share: Debian's headless
// Chromium through playwright-core, one browser context per page (its own storage, so its
// own guest token) at a phone-sized viewport with console errors and page errors recorded,
// the page's state as the tests read it, waiting for every page to play, and taps.
import { chromium } from "playwright-core";
import { launchOptions } from "./chromium.mjs";

export const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function launch() {
  return chromium.launch(launchOptions());
}

// Opens `url` in a new context (en-US); `init(initArg)` runs in the page before its scripts.
// Returns {page, entry}: entry collects console errors / warnings and uncaught page errors.
export async function openPage(browser, url, { width, height, init, initArg } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1, isMobile: false,
                                             locale: "en-US" });
  const page = await context.newPage();
  const entry = { url, console: [], pageErrors: [] };
  page.on("console", (msg) => { if (["error", "warning"].includes(msg.type())) entry.console.push(msg.text().slice(0, 300)); });
  page.on("pageerror", (e) => entry.pageErrors.push(String(e).slice(0, 300)));
  if (init) await page.addInitScript(init, initArg);
  await page.goto(url, { waitUntil: "load" });
  return { page, entry };
}

// The watch page's state (window.mediacore and the DOM) as the tests read it.
export const readState = (page) => page.evaluate(() => {
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
    cardPrice: document.querySelector("#card .price").textContent,
    viewers: s.viewers, latencyText: document.getElementById("latency").textContent,
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    button: { x: btn.x, y: btn.y, width: btn.width, height: btn.height },
    errors: s.errors || [], fatal: s.fatal || (s.recovered || [])[0] || null,  // a recovery counts as fatal here
  };
});

// Waits until every page plays and presents frames mapped to PDT (and `extra(page)`, if
// given, holds for each); stores each page's state in entry.ready and returns the states.
export async function waitPlaying(pages, deadline, extra) {
  for (;;) {
    const states = await Promise.all(pages.map(({ page }) => readState(page)));
    const more = extra ? await Promise.all(pages.map(({ page }) => extra(page))) : states.map(() => true);
    if (states.every((s, i) => s.playing && s.rvfcFrames > 30 && more[i])) {
      pages.forEach(({ entry }, i) => { entry.ready = states[i]; });
      return states;
    }
    if (Date.now() > deadline) {
      throw new Error(`pages did not start: ${JSON.stringify(states.map((s, i) => [s.playing, s.rvfcFrames, more[i], s.errors]))}`);
    }
    await sleep(250);
  }
}

// `taps` rapid taps (real mouse input) at the middle of `rect`, `gap` ms apart.
export async function tap(page, rect, taps, gap = 40) {
  for (let i = 0; i < taps; i++) {
    await page.mouse.click(rect.x + rect.width / 2, rect.y + rect.height / 2);
    await sleep(gap);
  }
}
