// farm dashboard: the HTTP API and the event stream (see docs/api.md and docs/dashboard.md).
"use strict";

const farm = window.farm = {};

// A token (needed beyond loopback) comes once in the address, as #token=..., and is kept for the tab.
(function takeToken() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("farm.token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

farm.token = () => sessionStorage.getItem("farm.token");

farm.url = (path) => new URL(path.replace(/^\//, ""), document.baseURI).toString();

// One request; JSON in and out. Rejects with an Error whose message is the API's reason.
farm.api = async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = farm.token();
  if (token) headers.Authorization = "Bearer " + token;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(farm.url(path), init);
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const why = data && typeof data === "object" ? (data.detail || data.error || JSON.stringify(data)) : data;
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

// The controller's event stream over Server-Sent Events. EventSource reconnects by itself and
// resumes from the last id it saw (Last-Event-ID), so no event is lost or repeated.
farm.events = function events(onEvent) {
  const live = document.getElementById("live");
  const token = farm.token();
  const source = new EventSource(farm.url("api/v1/events" + (token ? "?token=" + encodeURIComponent(token) : "")));
  let lastSeq = 0;
  const handle = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    const seq = Number(event.seq || message.lastEventId || 0);
    if (seq && seq <= lastSeq) return;  // delivered twice (as a named and as a plain message)
    if (seq) lastSeq = seq;
    onEvent(event);
  };
  source.onmessage = handle;
  for (const type of farm.EVENT_TYPES) source.addEventListener(type, handle);
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
  return source;
};

farm.EVENT_TYPES = ["run.submitted", "run.started", "run.finished", "run.paused", "run.resumed",
  "run.cancelled", "run.priority", "job.started", "job.done", "job.failed", "job.retried", "job.reused",
  "agent.joined", "agent.left", "agent.blocklisted", "agent.broken", "agent.draining", "agent.drained",
  "agent.undrained", "progress"];

farm.fmtDuration = function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
};

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
