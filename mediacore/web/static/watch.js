// The watch page: hls.js (LL-HLS unless ?ll=0), product cards shown when *playback* reaches
// their START-DATE, a buy button placing idempotent orders, a viewer counter and a latency
// readout. No build step: plain browser JavaScript, served by the origin.
//
// Cards arrive as EXT-X-DATERANGE (CLASS="com.mediacore.product") in the playlists hls.js
// parses. Each presented video frame (requestVideoFrameCallback) is mapped to its
// PROGRAM-DATE-TIME through the fragment that holds it; the card whose START-DATE the frame
// has reached (and whose DURATION it has not passed) is shown. Cue events fire only every
// ~250 ms; this is exact to the frame.
(function () {
  "use strict";
  const PRODUCT_CLASS = "com.mediacore.product";
  const VIEWERS_EVERY_MS = 5000;        // viewer counter poll: a count need not be fresher
  const ORDER_ATTEMPTS = 4;             // tries of one tap (same Idempotency-Key) on network errors / 5xx / in_progress
  const ORDER_BACKOFF_MS = 500;         // first retry delay, doubled each time
  const TOKEN_MARGIN_MS = 30000;        // fetch a new guest token this long before the old one expires
  const CARD_KEEP_MS = 60000;           // forget cards that ended this long before the playing PDT
  const PDT_ROUNDING_MS = 1;            // PROGRAM-DATE-TIME and START-DATE are written to the millisecond
  const MEDIA_RECOVERIES = 3;           // fatal media errors recovered from within MEDIA_RECOVERY_WINDOW_MS ...
  const MEDIA_RECOVERY_WINDOW_MS = 60000; // ... before the page gives up and shows the error

  const stream = window.MEDIACORE_STREAM;
  const params = new URLSearchParams(location.search);
  const lowLatency = params.get("ll") !== "0";
  // A signed playback token (?token=, from `mediacore sign-url`) goes on the playlist URL;
  // the server writes it into every URI of the playlists it answers, hls.js needs no more.
  const token = params.get("token");
  const src = params.get("src") ||
    `/live/${encodeURIComponent(stream)}/${lowLatency ? "ll.m3u8" : "index.m3u8"}` +
    (token ? `?token=${encodeURIComponent(token)}` : "");
  const $ = (id) => document.getElementById(id);
  const video = $("video"), statsEl = $("stats"), errorEl = $("error");
  const cardEl = $("card"), buyBtn = $("buy");
  const cardImg = cardEl.querySelector("img"), cardTitle = cardEl.querySelector(".title");
  const cardPrice = cardEl.querySelector(".price"), cardResult = cardEl.querySelector(".result");

  // Playback facts, read by people (the stats line) and by the browser tests.
  const state = window.mediacore = {
    src, lowLatency, errors: [], fatal: null, recovered: [], stalls: 0, stallLog: [], playing: false, startedAt: null,
    firstFrameMs: null, levels: [], viewers: null,
    cards: {},          // id -> {id, start, end, productId, saleId, title, price, image, knownAtPdt}
    shown: null,        // id of the card on screen
    cardLog: [],        // {id, start, pdt, prevPdt, delta, mediaTime, presentedFrames} when a card appears
    hideLog: [],        // {id, end, pdt, prevPdt} when a card goes
    framePdt: null,     // PDT (ms) of the last presented frame
    frames: 0,          // frames seen by requestVideoFrameCallback
    orders: [],         // {key, status, body, attempts} per tap
  };
  const t0 = performance.now();
  video.addEventListener("playing", () => {
    if (!state.playing && state.firstFrameMs === null) state.firstFrameMs = performance.now() - t0;
    state.playing = true;
  });
  // A stall is waiting for data while playing; waiting for a seek (a catch-up below) is not.
  // Each one is logged with what the player held then, so a stall says why: the buffer ahead
  // of the playhead, the latency hls.js measured and aimed at, and how long the stall lasted.
  const bufferedAhead = () => {
    for (let i = 0; i < video.buffered.length; i++) {
      if (video.buffered.start(i) <= video.currentTime && video.currentTime <= video.buffered.end(i)) {
        return video.buffered.end(i) - video.currentTime;
      }
    }
    return 0;
  };
  const age = (wall) => (wall ? Date.now() / 1000 - wall : null);
  video.addEventListener("waiting", () => {
    if (state.playing && !video.seeking) {
      state.stalls += 1; state.playing = false;
      const hls = state.hls;
      state.stallLog.push({ at: video.currentTime, wall: Date.now() / 1000, ahead: bufferedAhead(),
                            latency: hls ? hls.latency : null, target: hls ? hls.targetLatency : null,
                            lasted: null, mediaAge: age(state.loaded && state.loaded.media),
                            playlistAge: age(state.loaded && state.loaded.playlist),
                            sinceCatchUp: age(state.caughtUpAt) });
    }
  });
  video.addEventListener("playing", () => {
    const last = state.stallLog[state.stallLog.length - 1];
    if (last && last.lasted === null) last.lasted = Date.now() / 1000 - last.wall;
  });

  // --- Viewer counter: /api/streams carries each stream's viewers. ---
  async function pollViewers() {
    try {
      const r = await fetch("/api/streams", { cache: "no-store" });
      if (r.ok) {
        const item = (await r.json()).find((s) => s.name === stream);
        if (item) {
          state.viewers = item.viewers;
          $("viewers").textContent = `${item.viewers} watching`;
          $("live").hidden = item.state !== "live";
        }
      }
    } catch (e) { /* offline for a moment: the next poll tells */ }
  }
  pollViewers();
  setInterval(pollViewers, VIEWERS_EVERY_MS);

  // --- Who the viewer is: the page's own token (window.MEDIACORE_TOKEN, or one the shop's
  // login left in localStorage["mediacore.token"]), else a guest token from POST /api/guest,
  // kept until shortly before it expires. The chat pane asks here too (window.mediacore.bearer),
  // so a viewer chats and buys as one user; callers at the same moment share one request.
  // `renew`: the token was refused, fetch a new guest token. ---
  let guest = null;    // {token, expires} once fetched
  let pending = null;  // the guest request in flight, shared by every caller meanwhile
  function fetchGuest() {
    return fetch("/api/guest", { method: "POST" })
      .then((r) => (r.ok ? r.json() : null))
      .then((body) => (body ? { token: body.token, expires: Date.now() + body.expires_in * 1000 } : null));
  }
  async function bearer(renew) {
    const own = window.MEDIACORE_TOKEN || localStorage.getItem("mediacore.token");
    if (own && !renew) return own;
    if (renew) guest = null;
    if (guest && guest.expires > Date.now() + TOKEN_MARGIN_MS) return guest.token;
    if (!pending) pending = fetchGuest().finally(() => { pending = null; });
    guest = await pending;
    return guest ? guest.token : null;
  }
  state.bearer = bearer;

  // The chat pane is the chat plugin's page script (/static/plugins/chat.js), included by the
  // server only while that plugin runs; it finds its pane as <section id="chat">.

  if (!window.Hls || !Hls.isSupported()) {
    if (video.canPlayType("application/vnd.apple.mpegurl")) { video.src = src; }
    else { errorEl.textContent = "This browser cannot play HLS."; }
    return;
  }
  // In LL mode, let hls.js play up to 1.5x to reach PART-HOLD-BACK behind the live edge
  // after joining at a parent's first (independent) part. After a stall hls.js moves its
  // target latency back by 1 s for the rest of the session (liveSyncOnStallIncrease); a
  // quarter of that left LL players on a loaded machine stalling again and again
  // (docs/performance.md, "After a stall"), so the default stays.
  const hls = new Hls({ lowLatencyMode: lowLatency, maxLiveSyncPlaybackRate: lowLatency ? 1.5 : 1,
                        manifestLoadingMaxRetry: 10,
                        manifestLoadingRetryDelay: 500, levelLoadingMaxRetry: 10 });
  state.hls = hls;
  // When media and playlists last arrived (wall seconds), for the stall log: a stall long after
  // the last part came is a late server or network; one right after it, a player too near live.
  state.loaded = { media: null, playlist: null };
  hls.on(Hls.Events.FRAG_LOADED, () => { state.loaded.media = Date.now() / 1000; });
  hls.on(Hls.Events.LEVEL_LOADED, () => { state.loaded.playlist = Date.now() / 1000; });
  state.pdtLatency = () => (hls.playingDate ? (Date.now() - hls.playingDate.getTime()) / 1000 : null);
  hls.on(Hls.Events.MANIFEST_PARSED, (_, data) => { state.levels = data.levels.map(l => [l.width, l.height]); });
  // A fatal media error stops hls.js: a decoder or media-source failure, or a playhead it could
  // not move past holes in the buffer (fatal bufferSeekOverHole, seen on a stream with frames
  // lost in transit). As hls.js advises, the page recovers with recoverMediaError(): a new media
  // source, loading on from the playhead. A stream that keeps failing gets the error shown
  // (`state.fatal`) once MEDIA_RECOVERIES recoveries fall within MEDIA_RECOVERY_WINDOW_MS.
  // Network errors are not recovered here: hls.js has retried them already.
  let recoveries = [];  // performance.now() of each recovery within the window
  hls.on(Hls.Events.ERROR, (_, data) => {
    state.errors.push({ type: data.type, details: data.details, fatal: data.fatal });
    if (!data.fatal) return;
    const now = performance.now();
    recoveries = recoveries.filter((t) => now - t < MEDIA_RECOVERY_WINDOW_MS);
    if (data.type === Hls.ErrorTypes.MEDIA_ERROR && recoveries.length < MEDIA_RECOVERIES) {
      recoveries.push(now);
      state.recovered.push(data.details);
      hls.recoverMediaError();
      return;
    }
    state.fatal = data.details;
    errorEl.textContent = `playback error: ${data.details}`;
  });

  // --- Cards from the DATERANGEs hls.js parsed. ---
  let details = null;  // the playing level's LevelDetails: fragments with start and PDT
  function readDateRanges(levelDetails) {
    details = levelDetails;
    const ranges = levelDetails.dateRanges || {};
    for (const id in ranges) {
      const dr = ranges[id];
      if (state.cards[id] || dr.class !== PRODUCT_CLASS) continue;
      const start = dr.startDate.getTime();
      if (!Number.isFinite(start)) continue;
      const duration = dr.duration;
      const a = dr.attr;
      state.cards[id] = {
        id, start, end: duration === null ? Infinity : start + duration * 1000,
        productId: a["X-PRODUCT-ID"] || null, saleId: a["X-SALE-ID"] || null,
        title: a["X-TITLE"] || a["X-PRODUCT-ID"] || "", price: formatPrice(a["X-PRICE"], a["X-CURRENCY"]), image: a["X-IMAGE"] || "",
        knownAtPdt: state.framePdt,
      };
    }
  }
  hls.on(Hls.Events.LEVEL_LOADED, (_, data) => readDateRanges(data.details));
  hls.on(Hls.Events.LEVEL_UPDATED, (_, data) => readDateRanges(data.details));

  // Where a fragment's video starts on the media timeline. A segment's PROGRAM-DATE-TIME is
  // the time of its first video frame; hls.js's frag.start is the earliest of its audio and
  // video, up to an AAC frame (21 ms) earlier, so the video's own start is used once parsed
  // (not for a fragment hls.js only partly loaded: then its start is the part's, not the
  // segment's).
  function videoStart(f) {
    const v = f.elementaryStreams && f.elementaryStreams.video;
    return v && !v.partial && Number.isFinite(v.startPTS) && Math.abs(v.startPTS - f.start) < 0.1 ? v.startPTS : f.start;
  }

  // PROGRAM-DATE-TIME (ms since the epoch) of media time `t` (s): the fragment holding it
  // (the newest one starting at or before t; parts belong to their parent, whose start and
  // PDT hls.js keeps, the in-progress parent being details.fragmentHint).
  function pdtOf(t) {
    if (!details) return null;
    const frags = details.fragmentHint ? details.fragments.concat(details.fragmentHint) : details.fragments;
    for (let i = frags.length - 1; i >= 0; i--) {
      const f = frags[i];
      if (f.programDateTime === null || f.programDateTime === undefined || !Number.isFinite(f.start)) continue;
      const start = videoStart(f);
      if (t >= start - 0.0005) return f.programDateTime + (t - start) * 1000;
    }
    return null;
  }

  // A card that names its currency (X-CURRENCY, as the commerce plugin's do) gives X-PRICE in
  // the currency's minor units: 2900 EUR reads "€29.00" (in the viewer's locale). Without
  // X-CURRENCY the price is shown as written.
  function formatPrice(price, currency) {
    if (price === undefined || price === null || price === "") return "";
    const minor = Number(price);
    if (!currency || !Number.isFinite(minor)) return String(price);
    try {
      const format = new Intl.NumberFormat(undefined, { style: "currency", currency });
      return format.format(minor / 10 ** format.resolvedOptions().maximumFractionDigits);
    } catch (e) {
      return `${price} ${currency}`;  // a code this browser does not know
    }
  }

  function render(card) {
    cardTitle.textContent = card.title;
    cardPrice.textContent = card.price;
    if (card.image) cardImg.src = card.image; else cardImg.removeAttribute("src");
    if (!inFlight) cardResult.textContent = bought[card.id] ? "Ordered ✓" : "";
    syncButton();
  }

  function showCardsAt(pdt, meta) {
    let active = null;
    for (const id in state.cards) {
      const c = state.cards[id];
      if (c.end < pdt - CARD_KEEP_MS) { delete state.cards[id]; delete bought[id]; delete keys[id]; continue; }
      // Both dates are written to the millisecond: a frame within that rounding of the
      // START-DATE is the frame that carries it.
      const at = pdt + PDT_ROUNDING_MS;
      if (c.start <= at && at < c.end && (active === null || c.start > active.start)) active = c;
    }
    const activeId = active ? active.id : null;
    if (activeId === state.shown) return;
    if (state.shown !== null) {
      const gone = state.cards[state.shown];
      state.hideLog.push({ id: state.shown, end: gone ? gone.end : null, pdt, prevPdt: state.prevPdt });
    }
    state.shown = activeId;
    if (active) {
      render(active);
      cardEl.hidden = false;
      state.cardLog.push({ id: active.id, start: active.start, pdt, prevPdt: state.prevPdt, delta: pdt - active.start,
                           mediaTime: meta.mediaTime, presentedFrames: meta.presentedFrames,
                           knownAtPdt: active.knownAtPdt });
    } else {
      cardEl.hidden = true;
    }
  }

  // Every presented frame: its PDT decides the card. DOM changes made here show with this frame.
  function onFrame(now, meta) {
    const pdt = pdtOf(meta.mediaTime);
    if (pdt !== null) {
      state.prevPdt = state.framePdt;
      state.framePdt = pdt;
      state.frames += 1;
      showCardsAt(pdt, meta);
    }
    video.requestVideoFrameCallback(onFrame);
  }
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    video.requestVideoFrameCallback(onFrame);
  } else {
    // Without it (older browsers): once per animation frame, from currentTime.
    const tick = () => {
      if (!video.paused) onFrame(0, { mediaTime: video.currentTime, presentedFrames: -1 });
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }

  // --- Buying: the viewer's token (bearer, above), then an order
  // with one Idempotency-Key per tap, reused on every retry of that tap. One order per card:
  // once a card's order is placed its button reads "Ordered" and places nothing more, so
  // repeated taps make one order even when the first completes between two taps. A tap whose
  // outcome is unknown (no answer, 5xx after every retry) keeps its key: the next tap on that
  // card repeats the same request, which the server counts once. ---
  let inFlight = false;
  const bought = {};   // card id -> true once an order from that card was placed (201)
  const keys = {};     // card id -> the Idempotency-Key of its tap with an unknown outcome
  function syncButton() {
    const done = state.shown !== null && !!bought[state.shown];
    buyBtn.disabled = inFlight || done;
    buyBtn.textContent = done ? "Ordered" : "Buy";
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function newKey() {  // a UUID v4; crypto.randomUUID needs a secure context, this does not
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  async function placeOrder(body, key) {
    let renewed = false;
    let attempts = 0;
    for (let i = 0; i < ORDER_ATTEMPTS; i++) {
      attempts += 1;
      let r;
      try {
        const auth = await bearer(renewed && i > 0);
        if (auth === null) return { status: 401, body: { error: "sign_in" }, attempts };
        r = await fetch("/api/orders", {
          method: "POST",
          headers: { "Content-Type": "application/json", "Authorization": `Bearer ${auth}`, "Idempotency-Key": key },
          body: JSON.stringify(body),
        });
      } catch (e) {
        await sleep(ORDER_BACKOFF_MS << i);   // network error: the same tap again, the same key
        continue;
      }
      const answer = await r.json().catch(() => ({}));
      if (r.status === 401 && !renewed) { renewed = true; guest = null; continue; }
      if ((r.status === 409 && answer.error === "in_progress") || r.status >= 500) {
        const wait = Number(r.headers.get("Retry-After"));
        await sleep(Number.isFinite(wait) && wait > 0 ? wait * 1000 : ORDER_BACKOFF_MS << i);
        continue;
      }
      return { status: r.status, body: answer, attempts };
    }
    return { status: 0, body: { error: "network" }, attempts };
  }

  const REFUSALS = { sold_out: "Sold out", limit: "You have reached the limit for this item",
                     not_started: "The sale has not started yet", ended: "The sale has ended",
                     sign_in: "Sign in to buy" };

  async function buy() {
    const card = state.shown && state.cards[state.shown];
    // A tap while an order is in flight, or on a card already bought from, places nothing.
    if (inFlight || !card || bought[card.id]) return;
    inFlight = true;
    syncButton();
    cardResult.textContent = "Ordering…";
    const key = keys[card.id] || (keys[card.id] = newKey());
    const body = card.saleId ? { sale_id: card.saleId } : { product_id: card.productId, quantity: 1 };
    try {
      const outcome = await placeOrder(body, key);
      state.orders.push({ key, card: card.id, ...outcome });
      if (outcome.status !== 0 && outcome.status < 500) delete keys[card.id];  // answered: a new tap is a new request
      if (outcome.status === 201) bought[card.id] = true;
      if (outcome.status === 201) cardResult.textContent = "Ordered ✓";
      else cardResult.textContent = REFUSALS[outcome.body.error] ||
        (outcome.status === 401 || outcome.status === 403 ? REFUSALS.sign_in : "Could not order, please try again");
    } finally {
      inFlight = false;
      syncButton();
    }
  }
  buyBtn.addEventListener("click", buy);

  // --- Catching up with the live edge (LL-HLS). hls.js plays faster towards its target
  // latency (PART-HOLD-BACK) only while more than 1 s is buffered ahead, so a viewer whose
  // start-up took longer than the hold-back stays that much further behind for good (about
  // 0.5 s here). Once playing, when the latency exceeds the target by CATCH_UP_EXCESS_S and
  // the target position is already buffered, the page jumps there: a skip of a few frames,
  // no loading, at most once per CATCH_UP_EVERY_MS. The jump keeps CATCH_UP_KEEP of the
  // target latency buffered ahead of the new position (it stops short of hls.js's sync
  // position if need be): landing a few milliseconds before the buffer's end stalled the
  // player at once, and a stall costs the LL viewer a second for good (docs/performance.md,
  // "A catch-up that stalls").
  const CATCH_UP_EXCESS_S = 0.25;
  const CATCH_UP_EVERY_MS = 10000;
  const CATCH_UP_KEEP = 0.75;
  const CATCH_UP_MIN_JUMP_S = 0.1;  // a shorter jump is not worth the skipped frames
  // No jump in the first seconds of playback, while hls.js is still loading the parts it
  // joined at: the LL players that stalled for seconds behind a cache had jumped then.
  const CATCH_UP_SETTLE_MS = 3000;
  state.catchUps = 0;
  state.caughtUpAt = null;  // wall seconds of the last jump, for the stall log
  let lastCatchUp = -Infinity;
  function catchUp() {
    if (!lowLatency || !state.playing || video.paused || performance.now() - lastCatchUp < CATCH_UP_EVERY_MS) return;
    if (state.firstFrameMs === null || performance.now() - t0 - state.firstFrameMs < CATCH_UP_SETTLE_MS) return;
    const target = hls.targetLatency, sync = hls.liveSyncPosition, latency = hls.latency;
    if (!target || !sync || !latency || latency - target < CATCH_UP_EXCESS_S || sync <= video.currentTime) return;
    const b = video.buffered;
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) <= video.currentTime && video.currentTime <= b.end(i)) {
        const to = Math.min(sync, b.end(i) - CATCH_UP_KEEP * target);
        if (to - video.currentTime < CATCH_UP_MIN_JUMP_S) return;
        lastCatchUp = performance.now();
        state.catchUps += 1;
        state.caughtUpAt = Date.now() / 1000;
        video.currentTime = to;
        return;
      }
    }
  }
  setInterval(catchUp, 1000);

  hls.loadSource(src);
  hls.attachMedia(video);
  video.play().catch(() => {});
  setInterval(() => {
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : {};
    // Latency: how far the presented frame's PDT is behind this clock (the live edge).
    const behind = state.framePdt !== null ? (Date.now() - state.framePdt) / 1000 : hls.latency;
    $("latency").textContent = behind ? `latency ${behind.toFixed(1)} s` : "latency –";
    statsEl.textContent = `${lowLatency ? "LL-HLS" : "HLS"} · ${video.videoWidth}×${video.videoHeight} · ` +
      `t=${video.currentTime.toFixed(1)} s · frames ${q.totalVideoFrames || 0} · stalls ${state.stalls}`;
  }, 500);
})();
