// The watch page's recovery from fatal media errors, in headless Chromium: once the page
// plays, a fatal media error is raised on its hls.js instance (as hls.js raises a fatal
// bufferSeekOverHole when it cannot move the playhead past holes); the page must recover and
// decode frames again. Then more fatal errors at once: past the page's recovery budget the
// error must be shown instead. Prints one JSON report.
// usage: node recover.mjs PAGE_URL START_TIMEOUT_S
import { launch, openPage, sleep } from "./pages.mjs";

const [, , url, startTimeoutArg] = process.argv;
const report = { exception: null };
let browser;
const state = (page) => page.evaluate(() => {
  const s = window.mediacore, v = document.querySelector("video");
  return { playing: s.playing, t: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames,
           recovered: [...s.recovered], fatal: s.fatal, error: document.getElementById("error").textContent };
});
const fail = (page) => page.evaluate(() => {
  window.mediacore.hls.trigger(Hls.Events.ERROR, { type: Hls.ErrorTypes.MEDIA_ERROR, details: "bufferSeekOverHole",
                                                   fatal: true, error: new Error("test: playhead stuck at a hole") });
});
try {
  browser = await launch();
  const { page, entry } = await openPage(browser, url, { width: 1280, height: 720 });
  report.entry = entry;
  const deadline = Date.now() + Number(startTimeoutArg) * 1000;
  while (!(await state(page)).playing || (await state(page)).frames < 30) {
    if (Date.now() > deadline) throw new Error("the page did not start");
    await sleep(250);
  }
  report.before = await state(page);
  await fail(page);
  await sleep(6000);
  report.afterOne = await state(page);
  for (let i = 0; i < 3; i++) await fail(page);
  await sleep(500);
  report.afterFour = await state(page);
} catch (e) {
  report.exception = String(e);
} finally {
  if (browser) await browser.close();
}
process.stdout.write(JSON.stringify(report) + "\n");
