// Plays a URL in headless Chromium (Debian's, driven by playwright-core) and reports what a
// viewer saw as JSON: picture size, playback progress, stalls after start, hls.js errors.
// usage: node play.mjs PAGE_URL SECONDS [START_TIMEOUT_S] [allow-recovery]
// A fatal media error the watch page recovered from counts as fatal (`fatal` in the report)
// unless `allow-recovery` is given; the recoveries are reported either way (`recovered`).
import { chromium } from "playwright-core";
import { launchOptions } from "./chromium.mjs";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [, , pageUrl, secondsArg, startTimeoutArg, recoveryArg] = process.argv;
const allowRecovery = recoveryArg === "allow-recovery";
const seconds = Number(secondsArg || 20);
const startTimeout = Number(startTimeoutArg || 30);
const userDataDir = mkdtempSync(join(tmpdir(), "mediacore-chromium-"));
const result = { url: pageUrl, started: false, samples: [], console: [] };
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, launchOptions());
  const page = context.pages()[0] || await context.newPage();
  page.on("console", (msg) => { if (["error", "warning"].includes(msg.type())) result.console.push(msg.text().slice(0, 300)); });
  await page.goto(pageUrl, { waitUntil: "load" });
  const read = () => page.evaluate((allowRecovery) => {
    const v = document.querySelector("video");
    const s = window.mediacore || {};
    const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
    return { t: v.currentTime, width: v.videoWidth, height: v.videoHeight, paused: v.paused,
             playing: !!s.playing, stalls: s.stalls || 0, stallLog: s.stallLog || [], recovered: s.recovered || [],
             fatal: s.fatal || (allowRecovery ? null : (s.recovered || [])[0]) || null,
             errors: s.errors || [], frames: q.totalVideoFrames || 0, dropped: q.droppedVideoFrames || 0,
             latency: s.hls && s.hls.latency ? s.hls.latency : null, wall: Date.now() / 1000,
             // what hls.js's stream controllers are doing: "main IDLE", "audio FRAG_LOADING sn 41"
             loading: s.hls ? Object.entries(s.hls.inFlightFragments).map(([kind, f]) =>
               `${kind} ${f.state}${f.frag ? ` sn ${f.frag.sn}` : ""}`).join(", ") : null,
             pdtLatency: s.pdtLatency ? s.pdtLatency() : null, catchUps: s.catchUps || 0,
             buffered: Array.from({ length: v.buffered.length }, (_, i) => [v.buffered.start(i), v.buffered.end(i)]),
             mediaError: v.error ? `${v.error.code}: ${v.error.message}` : null };
  }, allowRecovery);
  const deadline = Date.now() + startTimeout * 1000;
  let first = await read();
  while (!(first.playing && first.t > 0) && Date.now() < deadline && !first.fatal) {
    await page.waitForTimeout(250);
    first = await read();
  }
  result.started = first.playing && first.t > 0;
  result.start = first;
  if (result.started) {
    const end = Date.now() + seconds * 1000;
    while (Date.now() < end) {
      await page.waitForTimeout(1000);
      const s = await read();
      result.samples.push(s);
      if (s.fatal) break;
    }
  }
  result.end = await read();
  result.advanced = result.end.t - first.t;
  result.stallsAfterStart = result.end.stalls - first.stalls;
  result.fatal = result.end.fatal;
  result.errors = result.end.errors;
  result.recovered = result.end.recovered;
  result.stallLog = result.end.stallLog.filter((stall) => stall.wall >= first.wall);
} catch (e) {
  result.exception = String(e);
} finally {
  if (context) await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(result) + "\n");
