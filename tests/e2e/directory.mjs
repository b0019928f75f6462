// Opens the live directory (the index page) in headless Chromium (Debian's, through
// playwright-core) at a phone-sized viewport, once per viewer: a viewer may carry a token
// (left in localStorage as the shop's login would). Waits until the page lists `expect`
// streams with every thumbnail loaded, then reports per viewer: the order shown, the ranking
// used, each tile's link, thumbnail size and text, the HTTP status of each link, console
// errors and page errors.
// usage: node directory.mjs '{"url": "...", "viewers": [{"token": null}, {"token": "..."}],
//                            "expect": 2, "width": 390, "height": 844, "timeout": 30}'
import { chromium } from "playwright-core";
import { launchOptions } from "./chromium.mjs";

const cfg = JSON.parse(process.argv[2]);
const report = { viewers: [], exception: null };
let browser;
try {
  browser = await chromium.launch(launchOptions());
  for (const viewer of cfg.viewers) {
    const context = await browser.newContext({ viewport: { width: cfg.width, height: cfg.height },
                                               deviceScaleFactor: 1 });
    if (viewer.token) {
      await context.addInitScript((t) => localStorage.setItem("mediacore.token", t), viewer.token);
    }
    const page = await context.newPage();
    const entry = { token: !!viewer.token, console: [], pageErrors: [], ready: false };
    page.on("console", (msg) => { if (["error", "warning"].includes(msg.type())) entry.console.push(msg.text().slice(0, 300)); });
    page.on("pageerror", (e) => entry.pageErrors.push(String(e).slice(0, 300)));
    await page.goto(cfg.url, { waitUntil: "load" });
    const read = () => page.evaluate(() => ({
      order: (window.mediacore || {}).order || [],
      ranking: (window.mediacore || {}).ranking || null,
      errors: (window.mediacore || {}).errors || [],
      scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
      tiles: [...document.querySelectorAll("#streams a")].map((a) => {
        const img = a.querySelector("img");
        return { stream: a.dataset.stream, href: a.getAttribute("href"), text: a.innerText,
                 src: img.getAttribute("src"), complete: img.complete, naturalWidth: img.naturalWidth,
                 naturalHeight: img.naturalHeight };
      }),
    }));
    const deadline = Date.now() + cfg.timeout * 1000;
    let state = await read();
    while (Date.now() < deadline) {
      if (state.tiles.length >= cfg.expect && state.tiles.every((t) => t.naturalWidth > 0)) { entry.ready = true; break; }
      await page.waitForTimeout(200);
      state = await read();
    }
    Object.assign(entry, state);
    entry.links = [];
    for (const t of state.tiles) {
      const r = await page.request.get(new URL(t.href, cfg.url).toString());
      entry.links.push({ href: t.href, status: r.status(), watchPage: (await r.text()).includes(`<h1>${t.stream}</h1>`) });
    }
    report.viewers.push(entry);
    await context.close();
  }
} catch (e) {
  report.exception = String(e);
} finally {
  if (browser) await browser.close();
}
process.stdout.write(JSON.stringify(report) + "\n");
