// farm dashboard: the HTTP API and the event stream (see docs/api.md and docs/dashboard.md).
"use strict";

const farm = window.farm = {};

farm.url = (path) => new URL(path.replace(/^\//, ""), document.baseURI).toString();

// Every API request needs a token. It arrives once in the page's address as ?access_token=...;
// the page keeps it in sessionStorage (this tab, this origin: scheme, host *and port*) and sends
// it as 'Authorization: Bearer', and takes it out of the address bar (and screenshots). Never a
// cookie: a browser sends the cookies of 127.0.0.1 to every port of it, another user's server
// included. `farm.hadToken`: one was given (a refusal then means it is wrong, not missing).
const TOKEN_KEY = "farm.token";
farm.hadToken = false;
farm.ready = (function takeToken() {
  const clean = new URL(location.href);
  const given = clean.searchParams.get("access_token");
  if (given !== null) {
    clean.searchParams.delete("access_token");
    history.replaceState(null, "", clean.pathname + clean.search + clean.hash);
    if (given) sessionStorage.setItem(TOKEN_KEY, given);
  }
  farm.hadToken = Boolean(sessionStorage.getItem(TOKEN_KEY));
  return Promise.resolve();
})();

// Request headers with the token, when there is one.
farm.headers = function headers(extra) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
};

// The API refused the page (401): say why and how to get in, instead of empty lists and a
// stream that reconnects for ever.
farm.denied = function denied(reason) {
  if (farm.isDenied) return;
  farm.isDenied = true;
  document.body.classList.add("denied");
  const base = location.origin + location.pathname;
  const box = document.getElementById("auth");
  box.textContent = (farm.hadToken || /invalid token/.test(reason)
    ? "The token this dashboard was opened with is invalid (unknown or revoked). "
    : "This dashboard needs a valid token. ")
    + `Open it as ${base}?access_token=TOKEN (make one with \`farm keys api-token new NAME\`; `
    + "`farm controller --http` on loopback and `farm submit --ui` print their own address; "
    + "a restarted controller has a new one).";
  box.hidden = false;
  const live = document.getElementById("live");
  live.textContent = "no access";
  live.className = "live off";
  if (farm.source) farm.source.close();
};

// One request; JSON in and out. Rejects with an Error whose message is the API's reason.
farm.api = async function api(method, path, body) {
  const headers = farm.headers({ Accept: "application/json" });
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(farm.url(path), init);
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (response.status === 401) farm.denied(data && data.error ? data.error : "");
  if (!response.ok) {
    const why = data && typeof data === "object" ? (data.error || data.detail || JSON.stringify(data)) : data;
    throw new Error(`${method} ${path}: ${response.status} ${typeof why === "string" ? why : JSON.stringify(why)}`);
  }
  return data;
};

// A list from a response that is either a list or an object holding one under `key`.
farm.list = (data, key) => (Array.isArray(data) ? data : (data && (data[key] || data.items)) || []);

// Calls fn(...) at most once per `ms` per key, the last call winning: live updates stay cheap
// however fast events come, and never poll.
const pending = new Map();
farm.throttle = function throttle(key, fn, ms = 1000) {
  const slot = pending.get(key) || { last: 0, timer: null, fn };
  slot.fn = fn;
  pending.set(key, slot);
  if (slot.timer) return;
  const wait = Math.max(0, slot.last + ms - Date.now());
  slot.timer = setTimeout(() => {
    slot.timer = null;
    slot.last = Date.now();
    Promise.resolve().then(slot.fn).catch(farm.showError);
  }, wait);
};

farm.showError = function showError(error) {
  const box = document.getElementById("error");
  box.textContent = String(error && error.message ? error.message : error);
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 8000);
};

// The controller's event stream over Server-Sent Events: one message per event (id = EPOCH:SEQ,
// data = the event as JSON). Read with fetch (EventSource cannot send the token's header), and,
// as EventSource would, reconnected after `retry` ms, resuming from the last id seen
// (Last-Event-ID), so nothing is lost or repeated; `onGap` runs when events were missed (older
// than the controller's buffer), after a reconnection, and on `reset` (the controller restarted:
// its seqs count from 1 again), so the page can reload. Returns { close() }.
farm.events = function events(onEvent, onGap) {
  const live = document.getElementById("live");
  if (farm.isDenied) return null;
  let lastId = null, retry = 2000, broken = false, aborter = null;
  const stream = farm.source = {
    closed: false,
    close() { this.closed = true; if (aborter) aborter.abort(); },
  };
  const dispatch = (message) => {
    if (message.id !== null) lastId = message.id;
    if (!message.data.length) return;
    const data = message.data.join("\n");
    if (message.event === "missed" || message.event === "reset") { onGap(); return; }
    if (message.event !== "message") return;
    let event;
    try { event = JSON.parse(data); } catch (e) { return; }
    onEvent(event);
  };
  async function connect() {
    aborter = new AbortController();
    const headers = farm.headers({ Accept: "text/event-stream" });
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const response = await fetch(farm.url("api/v1/events"),
      { headers, cache: "no-store", credentials: "omit", signal: aborter.signal });
    if (response.status === 401) {
      const data = await response.json().catch(() => ({}));
      farm.denied(data.error || "");
      return;
    }
    if (!response.ok || !response.body) throw new Error(`the event stream: ${response.status}`);
    live.textContent = "live";
    live.className = "live on";
    if (broken) onGap();
    broken = false;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let message = { id: null, event: "message", data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          dispatch(message);
          message = { id: null, event: "message", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "data") message.data.push(text);
        else if (name === "id") message.id = text;
        else if (name === "event") message.event = text;
        else if (name === "retry" && /^\d+$/.test(text)) retry = Number(text);
      }
    }
  }
  (async function run() {
    while (!stream.closed && !farm.isDenied) {
      try { await connect(); } catch (e) { /* a network error: reconnect below, as EventSource does */ }
      if (stream.closed || farm.isDenied) return;
      broken = true;
      live.textContent = "reconnecting…";
      live.className = "live off";
      await new Promise((resolve) => setTimeout(resolve, retry));
    }
  })();
  return stream;
};

farm.fmtDuration = function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
};

// Numbers as the CLI prints them: thousands separated by commas, rates with one decimal.
farm.fmtCount = (n) => (typeof n === "number" && isFinite(n) ? n.toLocaleString("en-US") : "?");
farm.fmtRate = (n) => (typeof n === "number" && isFinite(n)
  ? n.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 }) : "?");

farm.el = function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
};
