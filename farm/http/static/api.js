// farm dashboard: the HTTP API and the event stream (see docs/api.md and docs/dashboard.md).
"use strict";

const farm = window.farm = {};

farm.url = (path) => new URL(path.replace(/^\//, ""), document.baseURI).toString();

// A token (needed beyond loopback, and for `farm submit --ui`) arrives once in the page's
// address as ?access_token=...: the server took it with the page and, when valid, set it as an
// HttpOnly cookie that every later request (fetch, EventSource, images) carries. Here it only
// leaves the address bar (and screenshots). `farm.hadToken`: one was given (a refusal then
// means it is wrong, not missing).
farm.hadToken = false;
farm.ready = (function takeToken() {
  const clean = new URL(location.href);
  if (!clean.searchParams.has("access_token")) return Promise.resolve();
  farm.hadToken = true;
  clean.searchParams.delete("access_token");
  history.replaceState(null, "", clean.pathname + clean.search + clean.hash);
  return Promise.resolve();
})();

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
    + "`farm submit --ui` prints its own address).";
  box.hidden = false;
  const live = document.getElementById("live");
  live.textContent = "no access";
  live.className = "live off";
  if (farm.source) farm.source.close();
};

// One request; JSON in and out. Rejects with an Error whose message is the API's reason.
farm.api = async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, cache: "no-store" };
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
// data = the event as JSON). EventSource reconnects by itself and resumes from the last id it
// saw (Last-Event-ID), so nothing is lost or repeated; `onGap` runs when events were missed
// (older than the controller's buffer), after a reconnection, and on `reset` (the controller
// restarted: its seqs count from 1 again), so the page can reload.
farm.events = function events(onEvent, onGap) {
  const live = document.getElementById("live");
  if (farm.isDenied) return null;
  const source = farm.source = new EventSource(farm.url("api/v1/events"));
  let broken = false;
  source.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    onEvent(event);
  };
  source.addEventListener("missed", onGap);
  source.addEventListener("reset", onGap);  // the controller restarted: what the page shows is stale
  source.onopen = () => {
    live.textContent = "live";
    live.className = "live on";
    if (broken) onGap();
    broken = false;
  };
  source.onerror = () => {
    if (farm.isDenied) return;
    broken = true;
    live.textContent = "reconnecting…";
    live.className = "live off";
  };
  return source;
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
