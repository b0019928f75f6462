// The live directory (the index page): every live stream from /api/streams with its
// thumbnail, viewer count and pinned product, linking to its watch page. No build step.
//
// Order: personalised when the audience plugin answers `GET /api/recommendations?kind=stream`
// with 200 for the viewer's token (localStorage "mediacore.token", the one the shop's login
// leaves for the watch page too): the streams it names come first in its order, the rest
// follow by popularity. A guest (no token), or any other answer (404: no such plugin, 401:
// an expired token), gets the popularity order: viewers, most first, then name.
(function () {
  "use strict";
  const POLL_MS = 5000;             // list refresh; thumbnails are decoded at most every [http] thumbnail_interval
  const THUMB_EVERY_MS = 5000;      // a new thumbnail URL this often, so the browser fetches a fresh picture
  const RECS_EVERY_MS = 30000;      // recommendations change slowly; ask again this often
  const list = document.getElementById("streams");
  const empty = document.getElementById("empty");
  const state = window.mediacore = { streams: [], order: [], ranking: "popularity", errors: [], polls: 0 };
  let recs = null, recsAt = -Infinity;

  function token() {
    try { return localStorage.getItem("mediacore.token"); } catch (e) { return null; }
  }

  // Stream names in the recommender's order; null when it gives none (guest, 404, 401, ...).
  async function recommendations() {
    const t = token();
    if (!t) return null;
    if (Date.now() - recsAt < RECS_EVERY_MS) return recs;
    recsAt = Date.now();
    recs = null;
    try {
      const r = await fetch("/api/recommendations?kind=stream&n=50",
                            { headers: { Authorization: `Bearer ${t}` }, cache: "no-store" });
      if (r.status === 200) {
        const body = await r.json();
        const items = Array.isArray(body) ? body : (body.items || body.recommendations || []);
        recs = items.map((i) => (typeof i === "string" ? i : i.id || i.stream || i.name)).filter(Boolean);
      }
    } catch (e) {
      state.errors.push(String(e));
    }
    return recs;
  }

  function rank(streams, preferred) {
    const popular = streams.slice().sort((a, b) => (b.viewers - a.viewers) || a.name.localeCompare(b.name));
    if (!preferred) return popular;
    const at = new Map(preferred.map((name, i) => [name, i]));
    const first = popular.filter((s) => at.has(s.name)).sort((a, b) => at.get(a.name) - at.get(b.name));
    return first.concat(popular.filter((s) => !at.has(s.name)));
  }

  function price(p) {
    if (p.price === null || p.price === undefined) return "";
    if (!p.currency) return String(p.price);
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: p.currency }).format(p.price / 100);
    } catch (e) {
      return `${p.price} ${p.currency}`;
    }
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // One tile per stream, kept across refreshes (the picture does not blink while the next loads).
  const tiles = new Map();

  function tile(s) {
    let t = tiles.get(s.name);
    if (!t) {
      const a = el("a");
      a.href = `/watch/${encodeURIComponent(s.name)}`;
      a.dataset.stream = s.name;
      const thumb = el("div", "thumb");
      const note = el("span", "note");
      const img = el("img");
      img.alt = `${s.name} now`;
      const viewers = el("span", "viewers");
      thumb.append(note, img, el("span", "live", "LIVE"), viewers);
      const product = el("div", "product");
      const info = el("div", "info");
      info.append(el("div", "name", s.name), product);
      a.append(thumb, info);
      const li = el("li");
      li.append(a);
      t = { li, note, img, viewers, product };
      tiles.set(s.name, t);
    }
    // Same-origin path: the API's absolute URLs name the server as it sees itself.
    const src = s.thumbnail && !s.protected
      ? `/live/${encodeURIComponent(s.name)}/thumbnail.jpg?t=${Math.floor(Date.now() / THUMB_EVERY_MS)}` : null;
    if (src && t.img.getAttribute("src") !== src) t.img.src = src;
    t.note.textContent = src ? "" : (s.protected ? "ticketed stream" : "starting…");
    t.viewers.textContent = `${s.viewers} watching`;
    t.product.replaceChildren();
    if (s.product && s.product.title) t.product.append(s.product.title, el("span", "price", price(s.product)));
    return t.li;
  }

  async function refresh() {
    try {
      const r = await fetch("/api/streams", { cache: "no-store" });
      if (!r.ok) throw new Error(`/api/streams: HTTP ${r.status}`);
      const live = (await r.json()).filter((s) => s.state === "live");
      const preferred = await recommendations();
      const ordered = rank(live, preferred);
      state.streams = ordered;
      state.order = ordered.map((s) => s.name);
      state.ranking = preferred ? "personal" : "popularity";
      list.replaceChildren(...ordered.map(tile));
      for (const name of tiles.keys()) if (!state.order.includes(name)) tiles.delete(name);
      empty.hidden = ordered.length > 0;
    } catch (e) {
      state.errors.push(String(e));
    }
    state.polls += 1;
  }

  refresh();
  setInterval(refresh, POLL_MS);
})();
