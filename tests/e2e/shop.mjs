// The live-shopping watch page end to end in headless Chromium, two viewers (A and B), each
// in its own browser context (so its own guest token, its own user): prints {"ready": ...}
// once both play and both chat panes are connected (the test pins a card through the API
// meanwhile), then
//   chat:  A types each of `messages` into the chat pane's input and presses Send; both panes
//          must show them (the page records when each line appears and the seq it came with);
//   likes: B taps the like button `likes` times; A's like counter must reach the total;
//   buy:   once A shows the card of `product`, A taps its buy button `taps` times rapidly,
//          and the page must show the outcome;
// then, after `settle` ms more playback, prints a report per page.
// usage: node shop.mjs '{"urls": [A, B], "messages": [...], "likes": 3, "product": "sku",
//                        "taps": 5, "width": 390, "height": 844, "timeout": 60, "settle": 1500,
//                        "tokens": [null, JWT]}'   (tokens: a page's own token, optional)
import { launch, openPage, out, readState, sleep, tap, waitPlaying } from "./pages.mjs";

const cfg = JSON.parse(process.argv[2]);
const report = { pages: [], exception: null };
let browser;
const pages = [];

// Runs in each page before its scripts: records, with the wall clock, every chat line the
// pane puts on screen (MutationObserver on the pane), every chat / likes event the pane
// announces (with the seq), and every message submitted from the pane's form. `token`: the
// page's own token (window.MEDIACORE_TOKEN), if the test gives the page one.
function recorder({ token }) {
  if (token) window.MEDIACORE_TOKEN = token;
  const rec = window.__rec = { shown: [], events: [], likes: [], sent: [] };
  addEventListener("mediacore:chat", (e) => rec.events.push({ id: e.detail.id, seq: e.detail.seq, user: e.detail.user, text: e.detail.text, at: Date.now() }), true);
  addEventListener("mediacore:likes", (e) => rec.likes.push({ total: e.detail.total, at: Date.now() }), true);
  addEventListener("submit", (e) => {
    const input = e.target.querySelector("input");
    if (input) rec.sent.push({ text: input.value, at: Date.now() });
  }, true);
  addEventListener("DOMContentLoaded", () => {
    const pane = document.getElementById("chat");
    new MutationObserver((changes) => {
      const at = Date.now();
      for (const c of changes) {
        for (const n of c.addedNodes) {
          if (n.nodeName !== "LI") continue;
          const text = n.querySelector(".chat-text");
          rec.shown.push({ id: n.dataset.id, user: n.dataset.user, text: text ? text.textContent : null, at });
        }
      }
    }).observe(pane, { childList: true, subtree: true });
  });
}

const chatState = (page) => page.evaluate(() => {
  const c = window.mediacoreChat || {};
  const input = document.querySelector("#chat input");
  const like = document.querySelector("#chat .chat-like");
  return {
    connected: !!c.connected, me: c.me || null, lastSeq: c.lastSeq,
    writable: !!input && !input.disabled, likeText: like ? like.textContent : null,
    status: (document.querySelector("#chat .chat-status") || {}).textContent || "",
    lines: Array.from(document.querySelectorAll("#chat .chat-log li"), (li) => ({
      id: li.dataset.id, user: li.dataset.user, text: li.querySelector(".chat-text").textContent })),
    ...window.__rec,
  };
});

async function until(what, deadline, check) {
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what} did not happen in time`);
    await sleep(50);
  }
}

try {
  browser = await launch();
  for (const [i, url] of cfg.urls.entries()) {
    const initArg = { token: (cfg.tokens || [])[i] || null };
    const opened = await openPage(browser, url, { width: cfg.width, height: cfg.height, init: recorder, initArg });
    pages.push(opened);
    report.pages.push(opened.entry);
  }
  const [A, B] = pages;
  const deadline = Date.now() + cfg.timeout * 1000;
  const ready = await waitPlaying(pages, deadline, async (page) => {
    const c = await chatState(page);
    return c.connected && c.writable;
  });
  out({ ready: ready.map((s) => ({ framePdt: s.framePdt, now: s.now, frames: s.frames })) });

  // Chat: typed into A's pane and sent with its Send button, one after the other.
  const input = A.page.locator("#chat input");
  const send = A.page.locator("#chat").getByRole("button", { name: "Send", exact: true });
  for (const text of cfg.messages) {
    await input.click();
    await A.page.keyboard.type(text);
    await send.click();
    await until(`"${text}" on both pages`, deadline, async () => {
      const [a, b] = await Promise.all(pages.map(({ page }) => chatState(page)));
      return a.shown.some((l) => l.text === text) && b.shown.some((l) => l.text === text);
    });
  }
  // Likes: B's like button; A's counter must reach the total.
  const like = B.page.locator("#chat .chat-like");
  for (let i = 0; i < cfg.likes; i++) await like.click();
  await until("the likes total on A", deadline, async () => (await chatState(A.page)).likeText === `♥ ${cfg.likes}`);

  // Buy: rapid taps on A's buy button while the card is up.
  let tapped = false;
  for (;;) {
    const states = await Promise.all(pages.map(({ page }) => readState(page)));
    if (!tapped && states[0].shown === cfg.product) {
      await tap(A.page, states[0].button, cfg.taps);
      tapped = true;
    }
    const done = tapped && states[0].orders.length > 0 &&
                 states.every((s) => s.cardLog.some((e) => e.productId === cfg.product));
    if (done) break;
    if (Date.now() > deadline) throw new Error(`no card or no order: ${JSON.stringify(states.map((s) => [s.shown, s.cardLog, s.orders]))}`);
    await sleep(50);
  }
  // More playback and chat: a second order or a late chat line would show up meanwhile.
  await sleep(cfg.settle);
  report.done = true;
} catch (e) {
  report.exception = String((e && e.stack) || e);
} finally {
  // Every page's final state, also after a failure (it says what was missing).
  for (const { page, entry } of pages) {
    try {
      entry.end = await readState(page);
      entry.chat = await chatState(page);
    } catch (e) {
      entry.readError = String(e);
    }
  }
  if (browser) await browser.close();
}
out(report);
