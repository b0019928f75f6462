// Drives watch pages in headless Chromium (Debian's, through playwright-core) for the card
// and buy tests: opens each URL in its own browser context at a phone-sized viewport, prints
// {"ready": ...} once every page plays, then waits (the test pins cards meanwhile) until every
// page has shown and hidden the card `sync` and shown the card `buy`, taps the buy button of
// the first page rapidly `taps` times while that card is up, and prints a report per page.
// usage: node watch.mjs '{"urls": [...], "sync": "sku-a", "buy": "sku-b", "taps": 5,
//                         "width": 390, "height": 844, "timeout": 90}'
import { launch, openPage, out, readState, sleep, tap, waitPlaying } from "./pages.mjs";

const cfg = JSON.parse(process.argv[2]);
const report = { pages: [], exception: null };
let browser;

try {
  browser = await launch();
  const pages = [];
  for (const url of cfg.urls) {
    const opened = await openPage(browser, url, { width: cfg.width, height: cfg.height });
    pages.push(opened);
    report.pages.push(opened.entry);
  }
  const deadline = Date.now() + cfg.timeout * 1000;
  // Ready: every page is playing and presenting frames mapped to PDT.
  const ready = await waitPlaying(pages, deadline);
  out({ ready: ready.map((s) => ({ framePdt: s.framePdt, now: s.now, lowLatency: s.lowLatency })) });
  let tapped = false;
  for (;;) {
    const states = await Promise.all(pages.map(({ page }) => readState(page)));
    if (!tapped && states[0].shown === cfg.buy) {
      // Rapid repeated taps on the buy button, as real mouse input at its position.
      await tap(pages[0].page, states[0].button, cfg.taps);
      tapped = true;
    }
    const done = states.every((s) => s.hideLog.some((e) => e.productId === cfg.sync) &&
                                     s.cardLog.some((e) => e.productId === cfg.buy)) &&
                 tapped && states[0].orders.length > 0;
    if (done || Date.now() > deadline) {
      // A little more playback, so a second order (if any) would have time to show up.
      await sleep(1500);
      const final = await Promise.all(pages.map(({ page }) => readState(page)));
      pages.forEach(({ entry }, i) => { entry.end = final[i]; });
      report.done = done;
      break;
    }
    await sleep(100);
  }
} catch (e) {
  report.exception = String(e);
} finally {
  if (browser) await browser.close();
}
out(report);
