// The chat pane of the watch page (no build step). It fills <section id="chat"> when that
// element is on the page: history, sending, likes, gifts, and moderation controls for
// moderators; it reconnects with ?since=LAST_SEQ so nothing is missed.
//
// The room is the section's data-stream attribute, or STREAM of /watch/STREAM. The token is
// the watch page's (window.mediacore.bearer: the page's own token or its guest token, so the
// viewer chats as the user who buys); on a page without watch.js window.MEDIACORE_TOKEN, else
// a guest token from POST /api/guest (kept in sessionStorage); else none (read-only). A token
// the server refuses (close 1008, e.g. expired) is renewed once before the pane goes read-only. Events go out on the section as DOM events:
// "mediacore:viewers" {count}, "mediacore:likes" {total}, "mediacore:chat" {event}.
(function () {
  "use strict";
  var section = document.getElementById("chat");
  if (!section) return;
  var room = section.dataset.stream || decodeURIComponent((location.pathname.match(/^\/watch\/([^/]+)/) || [])[1] || "");
  if (!room) return;

  var MAX_SHOWN = 200; // messages kept on screen
  var GIFTS = [["rose", 1], ["heart", 5], ["rocket", 100]];
  var lastSeq = null;
  var ws = null;
  var retry = 500;
  var token = null;
  var renewed = false; // a refused token was replaced since the last accepted connection
  var role = "guest";
  var me = null;
  var byId = {};

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function emit(name, detail) {
    section.dispatchEvent(new CustomEvent(name, { detail: detail }));
  }

  var style = el("style");
  style.textContent =
    "#chat{display:flex;flex-direction:column;min-height:0;font:14px system-ui,sans-serif}" +
    "#chat .chat-log{flex:1;overflow-y:auto;list-style:none;margin:0;padding:4px;max-height:50vh}" +
    "#chat .chat-log li{padding:2px 0;word-wrap:break-word}#chat .chat-user{font-weight:600;margin-right:4px}" +
    "#chat .chat-gift{color:#b05d00}#chat .chat-pinned{background:#fff6d5;padding:4px;display:none}" +
    "#chat .chat-bar{display:flex;gap:4px;padding:4px;flex-wrap:wrap}#chat input{flex:1;min-width:8em}" +
    "#chat .chat-status{font-size:12px;color:#666;padding:0 4px}#chat .chat-mod button{font-size:11px;margin-left:4px}";
  document.head.appendChild(style);
  var pinned = el("div", "chat-pinned");
  var log = el("ul", "chat-log");
  var status = el("div", "chat-status");
  var form = el("form", "chat-bar");
  var input = el("input");
  input.maxLength = 500;
  input.placeholder = "Say something…";
  input.setAttribute("aria-label", "chat message");
  var send = el("button", null, "Send");
  var like = el("button", "chat-like", "♥ 0");
  like.type = "button";
  form.append(input, send, like);
  var gifts = el("div", "chat-bar");
  GIFTS.forEach(function (g) {
    var b = el("button", "chat-gift-button", g[0] + " (" + g[1] + ")");
    b.type = "button";
    b.onclick = function () { out({ type: "gift", gift: g[0], value: g[1] }); };
    gifts.append(b);
  });
  var mod = el("div", "chat-bar chat-mod");
  mod.style.display = "none";
  var slow = el("select");
  [0, 5, 30, 60].forEach(function (s) { var o = el("option", null, s ? "slow " + s + " s" : "slow off"); o.value = s; slow.append(o); });
  slow.onchange = function () { out({ type: "slow_mode", seconds: Number(slow.value) }); };
  var unpin = el("button", null, "unpin");
  unpin.type = "button";
  unpin.onclick = function () { out({ type: "pin", id: "" }); };
  mod.append(slow, unpin);
  section.append(pinned, log, status, form, gifts, mod);

  function isModerator() { return ["moderator", "host", "admin"].indexOf(role) >= 0; }
  function claims(jwt) {
    try {
      var part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
    } catch (e) { return {}; }
  }
  function out(message) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }
  function setStatus(text) { status.textContent = text; }

  function show(event) {
    if (byId[event.id]) return;
    var li = el("li", event.type === "gift" ? "chat-gift" : "");
    li.dataset.id = event.id;
    li.dataset.user = event.user;
    li.append(el("span", "chat-user", event.user));
    li.append(el("span", "chat-text", event.type === "gift" ? "sent " + event.gift + " (" + event.value + ")" : event.text));
    if (isModerator() && event.user !== me) {
      var controls = el("span", "chat-mod");
      [["delete", function () { out({ type: "delete", id: event.id }); }],
       ["ban", function () { out({ type: "ban", user: event.user, seconds: 600 }); }],
       ["pin", function () { out({ type: "pin", id: event.id }); }]].forEach(function (c) {
        var b = el("button", null, c[0]);
        b.type = "button";
        b.onclick = c[1];
        controls.append(b);
      });
      li.append(controls);
    }
    byId[event.id] = li;
    var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.append(li);
    while (log.children.length > MAX_SHOWN) {
      delete byId[log.firstChild.dataset.id];
      log.removeChild(log.firstChild);
    }
    if (atBottom) log.scrollTop = log.scrollHeight;
  }
  function showPin(id) {
    var li = id && byId[id];
    pinned.style.display = li ? "block" : "none";
    pinned.textContent = li ? "📌 " + li.dataset.user + ": " + li.querySelector(".chat-text").textContent : "";
  }

  function handle(event) {
    if (typeof event.seq === "number") lastSeq = event.seq;
    switch (event.type) {
      case "history":
        log.textContent = "";
        byId = {};
        event.messages.forEach(show);
        event.messages.forEach(function (m) { lastSeq = Math.max(lastSeq || 0, m.seq); });
        break;
      case "reset":
        lastSeq = null;
        break;
      case "chat":
      case "gift":
        show(event);
        emit("mediacore:chat", event);
        break;
      case "delete":
        if (byId[event.id]) { byId[event.id].remove(); delete byId[event.id]; }
        break;
      case "ban":
        setStatus(event.user + " was banned");
        break;
      case "slow_mode":
        setStatus(event.seconds ? "Slow mode: one message every " + event.seconds + " s" : "");
        slow.value = String(event.seconds);
        break;
      case "pin":
        showPin(event.id);
        break;
      case "likes":
        like.textContent = "♥ " + event.total;
        emit("mediacore:likes", { total: event.total });
        break;
      case "viewers":
        emit("mediacore:viewers", { count: event.count });
        break;
      case "error":
        setStatus(event.code.replace(/_/g, " ") + (event.retry_after ? " — wait " + Math.ceil(event.retry_after) + " s" : ""));
        break;
    }
  }

  function connect() {
    var url = new URL("/live/" + encodeURIComponent(room) + "/chat", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (token) url.searchParams.set("access_token", token);
    if (lastSeq !== null) url.searchParams.set("since", String(lastSeq));
    ws = new WebSocket(url.toString());
    ws.onopen = function () { retry = 500; renewed = false; setStatus(""); };
    ws.onmessage = function (m) {
      try { handle(JSON.parse(m.data)); } catch (e) { /* a frame this page does not know */ }
    };
    ws.onclose = function (e) {
      ws = null;
      setStatus("reconnecting…" + (e.reason ? " (" + e.reason + ")" : ""));
      if (e.code === 1008 && token) {
        sessionStorage.removeItem("mediacore-guest");
        var again = !renewed;
        renewed = true;
        setTimeout(function () { (again ? getToken(true) : Promise.resolve(null)).then(start); }, retry);
      } else {
        setTimeout(connect, retry);
      }
      retry = Math.min(retry * 2, 10000);
    };
  }

  form.onsubmit = function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    if (text.length > 500) { setStatus("at most 500 characters"); return; }
    out({ type: "chat", text: text });
    input.value = "";
  };
  like.onclick = function () { out({ type: "like" }); };

  // The token to chat with (a Promise; null: read-only). `renew`: the last one was refused.
  function getToken(renew) {
    var page = window.mediacore;
    if (page && typeof page.bearer === "function") {
      return page.bearer(renew).catch(function () { return null; });
    }
    if (window.MEDIACORE_TOKEN && !renew) return Promise.resolve(window.MEDIACORE_TOKEN);
    var kept = !renew && sessionStorage.getItem("mediacore-guest");
    if (kept && (claims(kept).exp || 0) * 1000 > Date.now() + 60000) return Promise.resolve(kept);
    return fetch("/api/guest", { method: "POST" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        var t = body && (body.token || body.access_token);
        if (t) sessionStorage.setItem("mediacore-guest", t);
        return t || null;
      })
      .catch(function () { return null; });
  }

  function start(t) {
    token = t || null;
    var c = token ? claims(token) : {};
    role = c.role || "guest";
    me = c.sub || null;
    mod.style.display = isModerator() ? "flex" : "none";
    var writes = !!token;
    input.disabled = send.disabled = like.disabled = !writes;
    Array.prototype.forEach.call(gifts.querySelectorAll("button"), function (b) { b.disabled = !writes; });
    input.placeholder = writes ? "Say something…" : "Sign in to chat";
    connect();
  }

  // For the rest of the page (and tests): send, the room, the last seq seen, whether the
  // socket is open, and the user the pane chats as.
  window.mediacoreChat = {
    send: out, room: room,
    get lastSeq() { return lastSeq; },
    get connected() { return !!ws && ws.readyState === WebSocket.OPEN; },
    get me() { return me; },
  };
  getToken(false).then(start);
})();
