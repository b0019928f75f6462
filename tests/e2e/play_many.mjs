// Plays several watch pages at once in one headless Chromium (one page each) and reports,
// per page, whether hls.js started and how many video frames the page decoded while it was
// watched (getVideoPlaybackQuality), as JSON.
// usage: node play_many.mjs SECONDS START_TIMEOUT_S PAGE_URL...
import { chromium } from "playwright-core";
import { launchOptions } from "./chromium.mjs";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [, , secondsArg, startTimeoutArg, ...urls] = process.argv;
const seconds = Number(secondsArg);
const startTimeout = Number(startTimeoutArg);
const userDataDir = mkdtempSync(join(tmpdir(), "mediacore-chromium-"));
const results = urls.map((url) => ({ url, started: false, console: [] }));
let context;
const read = (page) => page.evaluate(() => {
  const v = document.querySelector("video");
  const s = window.mediacore || {};
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
  return { t: v.currentTime, playing: !!s.playing, fatal: s.fatal || (s.recovered || [])[0] || null, errors: s.errors || [],
           frames: q.totalVideoFrames || 0, width: v.videoWidth, height: v.videoHeight };
});
try {
  // Several pages in one window: none may be throttled as a background page.
  context = await chromium.launchPersistentContext(userDataDir, launchOptions([
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows"]));
  const pages = [];
  for (const [i, url] of urls.entries()) {
    const page = i === 0 && context.pages()[0] ? context.pages()[0] : await context.newPage();
    page.on("console", (msg) => { if (msg.type() === "error") results[i].console.push(msg.text().slice(0, 300)); });
    pages.push(page);
  }
  await Promise.all(pages.map((page, i) => page.goto(urls[i], { waitUntil: "load" })));
  const deadline = Date.now() + startTimeout * 1000;
  let first = await Promise.all(pages.map(read));
  while (first.some((s) => !(s.playing && s.t > 0) && !s.fatal) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    first = await Promise.all(pages.map(read));
  }
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const last = await Promise.all(pages.map(read));
  for (const [i, r] of results.entries()) {
    r.started = first[i].playing && first[i].t > 0;
    r.start = first[i];
    r.end = last[i];
    r.advanced = last[i].t - first[i].t;
    r.framesDecoded = last[i].frames - first[i].frames;
    r.fatal = last[i].fatal;
  }
} catch (e) {
  results.push({ exception: String(e) });
} finally {
  if (context) await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(results) + "\n");
