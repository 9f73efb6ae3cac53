// farm dashboard: projects, jobs, logs, agents and their controls, kept live by the event stream.
"use strict";

(function dashboard() {
  const { api, el, throttle, showError, fmtDuration, fmtCount, fmtRate } = farm;
  const projects = new Map();  // run id -> { snapshot, card }
  const JOBS_PAGE = 50;
  let selected = null;
  let jobsOffset = 0;
  let jobsTotal = null;
  const $ = (id) => document.getElementById(id);
  const path = (id) => "api/v1/projects/" + encodeURIComponent(id);
  const keyPath = (key) => key.split("/").map(encodeURIComponent).join("/");

  // -- projects ------------------------------------------------------------------------

  async function loadProjects() {
    const list = farm.list(await api("GET", "api/v1/projects"), "projects");
    const seen = new Set();
    for (const snapshot of list) {
      seen.add(snapshot.id);
      showProject(snapshot);
    }
    for (const id of [...projects.keys()]) if (!seen.has(id)) dropProject(id);
    $("projects").querySelector(".empty")?.toggleAttribute("hidden", projects.size > 0);
    if (!selected && list.length) select(list[list.length - 1].id);
  }

  async function loadProject(id) {
    try {
      showProject(await api("GET", path(id)));
    } catch (error) {
      if (/: 404 /.test(error.message)) dropProject(id); else throw error;
    }
  }

  function dropProject(id) {
    const entry = projects.get(id);
    if (entry) entry.card.remove();
    projects.delete(id);
    if (selected === id) { selected = null; $("detail").hidden = true; farm.preview.show(null); }
  }

  function showProject(p) {
    let entry = projects.get(p.id);
    if (!entry) {
      entry = { card: projectCard(p) };
      projects.set(p.id, entry);
      $("projects").prepend(entry.card);
      $("projects").querySelector(".empty")?.setAttribute("hidden", "");
    }
    entry.snapshot = p;
    fillCard(entry.card, p);
    if (p.id === selected) $("detail-title").textContent = `${p.project} (${p.id})`;
  }

  function projectCard(p) {
    const act = (action, body) => (event) => {
      event.stopPropagation();
      control(p.id, action, body).catch(showError);
    };
    const priority = el("input", { class: "priority", type: "number", step: "1", title: "priority (higher runs first)",
      "aria-label": "priority", onclick: (e) => e.stopPropagation() });
    const card = el("article", { class: "project", "data-id": p.id, onclick: () => select(p.id) },
      el("div", { class: "top" },
        el("span", { class: "name" }), el("span", { class: "media" }), el("span", { class: "state" }),
        // runs of one project look alike but for their id (and a submit again is a new run)
        el("span", { class: "run", title: "run id (farm status, farm jobs RUN)" })),
      el("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" },
        el("div", { class: "done" }), el("div", { class: "partial" }), el("div", { class: "failed" })),
      el("div", { class: "facts" }),
      el("div", { class: "controls" },
        el("button", { type: "button", "data-action": "pause", onclick: act("pause"), text: "Pause" }),
        el("button", { type: "button", "data-action": "resume", onclick: act("resume"), text: "Resume" }),
        el("button", { type: "button", "data-action": "cancel", text: "Cancel", onclick: (e) => {
          e.stopPropagation();
          if (confirm(`Cancel ${p.project}? Jobs in flight are stopped.`)) control(p.id, "cancel").catch(showError);
        } }),
        el("button", { type: "button", "data-action": "retry", onclick: act("retry", {}), text: "Retry failed" }),
        priority,
        el("button", { type: "button", "data-action": "priority", text: "Set priority", onclick: (e) => {
          e.stopPropagation();
          const value = Number(priority.value);
          if (!Number.isInteger(value)) { showError("priority must be a whole number"); return; }
          control(p.id, "priority", { priority: value }).catch(showError);
        } })));
    return card;
  }

  function fillCard(card, p) {
    card.classList.toggle("selected", p.id === selected);
    card.querySelector(".name").textContent = p.project;
    card.querySelector(".media").textContent = p.media_type;
    card.querySelector(".run").textContent = p.id;
    const shown = p.paused && (p.state === "running" || p.state === "finalizing") ? "paused" : p.state;
    const state = card.querySelector(".state");
    state.textContent = shown;
    state.className = "state " + shown;
    // the bar in the media's own units (frames, tiles, seconds) where it counts them, as `farm submit`
    // does: jobs of unequal size, or a job total that moves while adaptive chunks are chosen, would
    // draw it wrong (a 10-frame job failed of 13 frames is not a quarter of the run)
    const u = p.units || (p.progress && p.progress.units);
    const part = u && u.name && u.name !== "jobs" && u.total ? u : p;
    const total = part.total || 0;
    const pct = (n) => (total ? Math.min(100, (100 * n) / total) : 0) + "%";
    card.querySelector(".bar .done").style.width = pct(part.done);
    card.querySelector(".bar .partial").style.width = pct(part.partial || 0);
    card.querySelector(".bar .failed").style.width = pct(part.failed || 0);
    card.querySelector(".bar").setAttribute("aria-valuenow", total ? Math.round((100 * part.done) / total) : 0);
    // adaptive chunks: the job count follows the sizes chosen until the split is over
    const facts = [`${fmtCount(p.done)} / ${p.total_estimated ? "~" : ""}${fmtCount(p.total)} jobs`];
    const units = unitsText(p);
    if (units) facts.push(units);
    if (p.failed) facts.push(`${fmtCount(p.failed)} failed`);
    if (p.running) facts.push(`${fmtCount(p.running)} running`);
    // one rate: in the media's units where the snapshot counts them (a second, in jobs, said it twice)
    if (p.rate && !(u && typeof u === "object" && u.rate)) facts.push(`${fmtRate(p.rate)} jobs/s`);
    if (p.eta_s !== null && p.eta_s !== undefined) facts.push(`ETA ${fmtDuration(p.eta_s)}`);
    facts.push(`elapsed ${fmtDuration(p.elapsed_s)}`);
    if (p.stalled && p.stalled !== "paused") facts.push(`stalled: ${p.stalled}`);
    if (p.error) facts.push(`error: ${p.error}`);
    card.querySelector(".facts").textContent = facts.join(" · ");
    const live = p.state === "running" || p.state === "finalizing";
    const button = (a) => card.querySelector(`[data-action="${a}"]`);
    button("pause").disabled = p.state !== "running" || p.paused;
    button("resume").disabled = !p.paused;
    button("cancel").disabled = p.state !== "running";  // a finalizing run is refused (409): it ends by itself
    button("retry").disabled = !p.failed;
    button("priority").disabled = !live;  // the controller refuses (409) to change a finished run
    const input = card.querySelector("input.priority");
    input.disabled = !live;
    if (document.activeElement !== input) input.value = p.priority ?? 0;
  }

  // Media units (tiles, frames, seconds of audio) when the snapshot carries them.
  function unitsText(p) {
    const u = p.units || (p.progress && p.progress.units);
    if (!u || typeof u !== "object") return "";
    const name = u.unit || u.name || "units";
    const rate = u.rate ? ` · ${fmtRate(u.rate)} ${name}/s` : "";
    return `${fmtCount(u.done)} / ${fmtCount(u.total)} ${name}${rate}`;
  }

  async function control(id, action, body) {
    if (action === "priority") await api("PATCH", path(id), body);
    else await api("POST", `${path(id)}/${action}`, body || {});
    await loadProject(id);
    if (id === selected) await loadJobs();
  }

  function select(id) {
    if (selected === id) return;
    selected = id;
    jobsOffset = 0;
    for (const [other, entry] of projects) entry.card.classList.toggle("selected", other === id);
    $("detail").hidden = false;
    const p = projects.get(id)?.snapshot;
    $("detail-title").textContent = p ? `${p.project} (${id})` : id;
    $("log").hidden = true;
    farm.preview.show(id, $("preview"));
    loadJobs().catch(showError);
  }

  // -- jobs and logs -----------------------------------------------------------------------

  async function loadJobs() {
    if (!selected) return;
    const state = $("job-filter").value;
    const query = new URLSearchParams({ offset: jobsOffset, limit: JOBS_PAGE });
    if (state) query.set("state", state);
    const data = await api("GET", `${path(selected)}/jobs?${query}`);
    const jobs = farm.list(data, "jobs");
    jobsTotal = typeof data.total === "number" ? data.total : null;
    // jobs the media type has not split off yet are queued, without a key: counted, not listed
    const unlisted = (state === "" || state === "queued") && data.unlisted ? data.unlisted : 0;
    // an ended run's never will be done: not split off, or queued or running when it was cancelled
    const more = !unlisted ? "" : data.ended ? `${fmtCount(unlisted)} more not done: the run ended`
      : `${fmtCount(unlisted)} more not yet split`;
    const body = $("jobs");
    body.replaceChildren(...jobs.map(jobRow));
    if (!jobs.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "empty", text: more || "No jobs here." })));
    else if (more && jobsOffset + jobs.length >= (jobsTotal ?? 0)) {
      body.append(el("tr", { class: "unlisted" }, el("td", { colspan: 7, class: "empty", text: `… and ${more}` })));
    }
    const last = jobsOffset + jobs.length;
    const of = jobsTotal !== null ? ` of ${fmtCount(jobsTotal + unlisted)}` : "";
    $("jobs-page").textContent = jobs.length ? `${fmtCount(jobsOffset + 1)}–${fmtCount(last)}${of}` : "";
    $("jobs-prev").disabled = jobsOffset === 0;
    $("jobs-next").disabled = jobsTotal !== null ? last >= jobsTotal : jobs.length < JOBS_PAGE;
  }

  function jobRow(job) {
    const duration = job.duration_s ?? job.duration;
    return el("tr", { class: job.state, "data-key": job.key },
      el("td", { text: job.key }),
      el("td", { text: job.state }),
      el("td", { text: job.attempts ?? "" }),
      el("td", { text: job.agent ?? "" }),
      el("td", { text: duration === null || duration === undefined ? "" : `${Number(duration).toFixed(2)} s` }),
      el("td", { class: "error-text", text: job.error ?? "", title: job.error ?? "" }),
      el("td", {}, el("button", { type: "button", class: "show-log", text: "log",
        onclick: () => showLog(job.key).catch(showError) })));
  }

  async function showLog(key) {
    const data = await api("GET", `${path(selected)}/jobs/${keyPath(key)}/log`);
    $("log-title").textContent = `Log of ${key}`;
    $("log-text").textContent = logText(data) || "(empty)";
    $("log").hidden = false;
    $("log").scrollIntoView({ block: "nearest" });
  }

  function logText(data) {
    if (typeof data === "string") return data;
    if (Array.isArray(data.attempts)) {
      return data.attempts.map((a, i) => `--- attempt ${a.attempt ?? i + 1}${a.agent ? " on " + a.agent : ""}`
        + `${a.error ? ": " + a.error : ""}\n${a.log ?? a.text ?? ""}`).join("\n");
    }
    if (typeof data.log === "string") return data.log;
    return JSON.stringify(data, null, 2);
  }

  // -- agents ----------------------------------------------------------------------------------

  async function loadAgents() {
    const agents = farm.list(await api("GET", "api/v1/agents"), "agents");
    const rows = agents.map((a) => {
      const running = Array.isArray(a.running) ? a.running : Array.isArray(a.current) ? a.current : [];
      const draining = a.state === "draining" || a.draining === true;
      const heartbeat = a.last_heartbeat_s ?? a.heartbeat_age_s ?? a.last_heartbeat;
      return el("tr", { "data-id": a.id, class: a.state },
        el("td", { text: a.id }),
        el("td", { text: a.host ?? "" }),
        el("td", { text: a.state ?? "" }),
        el("td", { text: a.slots ?? "" }),
        el("td", { text: running.length ? running.map((r) => (typeof r === "string" ? r : r.job || r.key)).join(", ")
          : (typeof a.running === "number" ? String(a.running) : "–") }),
        el("td", { text: fmtCount(a.done ?? 0) }),  // as farm status: over the controller's life
        el("td", { text: fmtCount(a.failed ?? 0) }),
        el("td", { text: a.load === undefined || a.load === null ? "" : String(a.load) }),
        el("td", { text: heartbeatText(heartbeat) }),
        el("td", {}, el("button", { type: "button", "data-action": draining ? "undrain" : "drain",
          text: draining ? "Undrain" : "Drain", onclick: () => agentControl(a.id, draining ? "undrain" : "drain") })));
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 10, class: "empty", text: "No agents connected." })));
    $("agents").replaceChildren(...rows);
  }

  function heartbeatText(value) {
    if (typeof value !== "number") return value ?? "";
    const age = value > 1e9 ? Date.now() / 1000 - value : value;  // an epoch time or an age
    return `${Math.max(0, age).toFixed(1)} s ago`;
  }

  function agentControl(id, action) {
    api("POST", `api/v1/agents/${encodeURIComponent(id)}/${action}`, {}).then(loadAgents).catch(showError);
  }

  // -- live updates -------------------------------------------------------------------------------

  function onEvent(event) {
    const type = event.type || "";
    const run = event.run;
    if (run) {
      if (projects.has(run)) throttle("project:" + run, () => loadProject(run));
      else throttle("projects", loadProjects);
      if (run === selected && type.startsWith("job.")) throttle("jobs", loadJobs);
      if (run === selected && (type === "job.done" || type === "run.finished")) throttle("preview", farm.preview.refresh);
    }
    if (type.startsWith("agent.") || type === "job.started" || type === "job.done" || type === "run.finished") {
      throttle("agents", loadAgents);
    }
  }

  $("job-filter").addEventListener("change", () => { jobsOffset = 0; loadJobs().catch(showError); });
  $("jobs-prev").addEventListener("click", () => { jobsOffset = Math.max(0, jobsOffset - JOBS_PAGE); loadJobs().catch(showError); });
  $("jobs-next").addEventListener("click", () => { jobsOffset += JOBS_PAGE; loadJobs().catch(showError); });
  $("log-close").addEventListener("click", () => { $("log").hidden = true; });

  farm.ready.then(() => {
    Promise.all([loadProjects(), loadAgents()]).catch(showError);
    farm.events(onEvent, onGap);
  });

  function onGap() {  // events were missed: load everything again
    throttle("projects", loadProjects);
    throttle("agents", loadAgents);
    throttle("jobs", loadJobs);
    throttle("preview", farm.preview.refresh);
  }
  farm.dashboard = { select, loadProjects, loadAgents, loadJobs, projects, get selected() { return selected; } };
})();
