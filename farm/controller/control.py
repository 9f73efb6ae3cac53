"""Live control and queries: steer runs and agents while they work, and look into a run.

A mixin of `farm.controller.server.Controller` (the loop thread alone runs it), for the
client messages `CONTROL` (pause, resume, retry, priority, drain, undrain) and `QUERY` (a
run's snapshot, its jobs paged and filtered, one job's log). Every field is checked here;
a refusal is an `ERROR` with a ``code`` (`farm.errors.ControlError`): ``not_found``,
``bad_request`` or ``conflict``. What is steered is journaled, so a restarted controller
keeps a run paused, its priority, and an agent draining (`restore_controls`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from farm.controller import history
from farm.controller.run import ProjectRun
from farm.errors import ProtocolError
from farm.ids import BadIdentifier, check_key, check_name
from farm.journal import ProjectRecord
from farm.preview import RunFacts
from farm.protocol import JOB_STATES, Message, T
from farm.words import counted

log = logging.getLogger(__name__)

MAX_PRIORITY = 1_000_000  # as SUBMIT's, either way
MAX_RETRY_KEYS = 10_000  # keys one retry may name
MAX_PAGE = 1000  # jobs one QUERY returns
MAX_OFFSET = 1_000_000_000
ACTIONS = ("pause", "resume", "retry", "priority", "drain", "undrain")


class Refused(Exception):
    """A request the controller will not carry out; answered as ERROR with `code`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ControlSide:
    """Handlers for CONTROL and QUERY; needs the controller's scheduler, journal, joblog_store, events, assets and _send."""

    def _handle_steering(self, identity: bytes, msg: Message) -> None:
        try:
            if msg.type is T.CONTROL:
                self._send(identity, T.CONTROL_REPLY, self._control(msg.body))
            else:
                self._send(identity, T.QUERY_REPLY, self._query(msg.body))
        except Refused as exc:
            self._send(identity, T.ERROR, {"message": str(exc), "code": exc.code})

    def _refuse_malformed(self, identity: bytes, frames: list[bytes], why: ProtocolError) -> None:
        """A CONTROL or QUERY whose shape is wrong: the asker hears why (others are only dropped)."""
        head = bytes(frames[0]) if frames else b""
        if len(head) == 2 and head[1] in (T.CONTROL, T.QUERY):
            self._send(identity, T.ERROR, {"message": str(why), "code": "bad_request"})

    # -- steering ---------------------------------------------------------------------

    def _control(self, body: dict[str, Any]) -> dict[str, Any]:
        action = body["action"]
        if action not in ACTIONS:
            raise Refused("bad_request", f"unknown action {action[:40]!r} (one of {', '.join(ACTIONS)})")
        if action in ("drain", "undrain"):
            return self._drain_agent(_field(body, "agent", check_name), action == "drain")
        run = self._find_run_or_record(_field(body, "project", check_name))
        if not isinstance(run, ProjectRun):  # only its record was read back from the journal
            what = ("to run its failed jobs again, submit the project again (`farm submit PROJECT_DIR "
                    "--controller URL`): its done jobs are reused, not rendered again, where its media type "
                    "caches results" if action == "retry" else "submit the project again to run it anew")
            raise Refused("conflict", f"project {run.project_id} is {run.status}, and finished before "
                                      f"this controller started: it can no longer be changed; {what}")
        if action == "retry":
            keys = body.get("keys")
            if keys is not None:
                if len(keys) > MAX_RETRY_KEYS:
                    raise Refused("bad_request", f"retry names {len(keys)} keys (at most {MAX_RETRY_KEYS})")
                keys = [_checked(check_key, key) for key in keys]
            return self._retry(run, keys)
        if action == "priority":
            priority = body.get("priority")
            if priority is None or not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
                raise Refused("bad_request",
                              f"priority needs a whole number from {-MAX_PRIORITY} to {MAX_PRIORITY}")
            return self._reprioritize(run, priority)
        return self._pause(run, action == "pause")

    def _pause(self, run: ProjectRun, pause: bool) -> dict[str, Any]:
        if not run.active:
            raise Refused("conflict", f"project {run.id} is {run.state}, not running")
        if run.paused == pause:
            raise Refused("conflict", f"project {run.id} is {'already' if pause else 'not'} paused")
        run.paused = pause
        self.journal.set_control("run", run.id, {"paused": True} if pause else None)
        self.events.publish("run.paused" if pause else "run.resumed", run.id, None, None,
                            {"running": len(run.leases)})
        log.info("%s project %s", "paused" if pause else "resumed", run.id)
        self._status = None  # the next STATUS shows it
        return {"project": run.id, "paused": pause, "running": len(run.leases)}

    def _retry(self, run: ProjectRun, keys: list[str] | None) -> dict[str, Any]:
        if run.state in ("cancelled", "finalizing"):
            raise Refused("conflict", f"project {run.id} is {run.state}")
        if run.error:
            raise Refused("conflict", f"project {run.id} failed as a whole ({run.error}); submit it again")
        for key in keys or ():
            if key not in run.failures:
                known = self._knows(run, key)
                why = "has not failed for good" if known else "is unknown"
                raise Refused("conflict" if known else "not_found", f"job {key!r} of {run.id} {why}")
        retried = run.retry(keys)
        if retried and not run.active:
            run.reopen()
            self.journal.reopen_project(run.id)
            run.output_folder.kept = False  # its identity left the journal as it finished: again at a collate
            run.assets, _ = self.assets.publish_project(run.id, run.project, run.manifest)
            log.info("project %s runs again to retry %s", run.id, counted(len(retried), "job"))
        self._status = None
        return {"project": run.id, "retried": retried, "state": run.state}

    def _reprioritize(self, run: ProjectRun, priority: int) -> dict[str, Any]:
        if not run.active:
            raise Refused("conflict", f"project {run.id} is {run.state}, not running")
        previous, run.priority = run.priority, priority
        self.journal.set_priority(run.id, priority)
        self.events.publish("run.priority", run.id, None, None, {"priority": priority, "previous": previous})
        self._status = None
        return {"project": run.id, "priority": priority, "previous": previous}

    def _drain_agent(self, agent_id: str, drain: bool) -> dict[str, Any]:
        draining = self.registry.draining
        agent = self.registry.by_id(agent_id)
        if agent is None and agent_id not in draining:
            raise Refused("not_found", f"no agent {agent_id!r} is connected")
        if drain == (agent_id in draining):
            raise Refused("conflict", f"agent {agent_id} is {'already' if drain else 'not'} draining")
        if drain:
            draining.add(agent_id)
        else:
            draining.discard(agent_id)
            if agent is not None:
                self.registry.wake(agent)  # may take jobs at the next turn, not the next rescan
        self.registry.version += 1  # who may take jobs changed: eligible counts are stale
        self.journal.set_control("agent", agent_id, {"draining": True} if drain else None)
        holding = len(agent.held) if agent is not None else 0
        self.events.publish("agent.draining" if drain else "agent.undrained", None, None, agent_id,
                            {"holding": holding})
        log.info("agent %s %s", agent_id, "draining" if drain else "takes jobs again")
        self._status = None
        state = self.scheduler.agent_state(agent) if agent is not None else ("draining" if drain else "gone")
        return {"agent": agent_id, "state": state, "holding": holding}

    def restore_controls(self) -> None:
        """After a restart: agents that were draining still are; runs that were paused still are."""
        self.registry.draining.update(ident for ident, value in self.journal.controls("agent").items()
                                      if isinstance(value, dict) and value.get("draining"))
        paused = self.journal.controls("run")
        for run in self.runs.values():
            state = paused.pop(run.id, None)
            run.paused = isinstance(state, dict) and bool(state.get("paused")) and run.active
        for gone in paused:  # runs that finished (or were cancelled) while paused
            self.journal.set_control("run", gone, None)

    # -- queries --------------------------------------------------------------------

    def _query(self, body: dict[str, Any]) -> dict[str, Any]:
        what = body["what"]
        if what not in ("project", "jobs", "log"):
            raise Refused("bad_request", f"unknown query {what[:40]!r} (one of project, jobs, log)")
        run = self._find_run_or_record(_field(body, "project", check_name))
        if not isinstance(run, ProjectRun):
            return self._query_finished(run, what, body)
        if what == "project":
            return self.scheduler.describe(run)
        if what == "log":
            key = _field(body, "key", check_key)
            attempts = run.logs.attempts(key)
            if not attempts and not self._knows(run, key):
                raise Refused("not_found", f"project {run.id} has no job {key!r}")
            return {"project": run.id, "key": key, "attempts": attempts, "evicted": run.logs.evicted}
        return self._jobs_page(run, *_page_args(body))

    def _jobs_page(self, run: ProjectRun, state: str | None, offset: int, limit: int) -> dict[str, Any]:
        """Jobs in memory (running, collating, queued, failed) first, then the journal's done ones, by key."""
        now = time.monotonic()
        listed: list[dict[str, Any]] = []
        if state in (None, "running"):
            listed += [_job(run, key, "running", lease.agent_id, now - lease.started, None)
                       for key, lease in sorted(run.leases.items())]
        if state in (None, "collating"):
            listed += [_collating(run, key, pending) for key, pending in sorted(run.collating.items())]
        if state in (None, "queued"):
            queued = sorted({job.key for job in run.ready} | run.unmet.keys())
            listed += [_job(run, key, "queued", None, None, None) for key in queued]
        if state in (None, "failed"):
            listed += [_job(run, key, "failed", f.agent, None, f.error)
                       for key, f in sorted(run.failures.items())]
        page = listed[offset:offset + limit]
        done_total = 0
        if state in (None, "done", "reused"):
            skip = max(0, offset - len(listed))
            only_reused = {"done": False, "reused": True}.get(state)  # None: both
            done_total, rows = self.journal.done_page(run.id, only_reused, skip, limit - len(page))
            page += [_job(run, key, "reused" if agent is None else "done", agent, None, None)
                     for key, agent in rows]
        total = len(listed) + done_total
        known = (run.done + len(run.failures) + len(run.leases) + len(run.collating) + len(run.ready)
                 + len(run.unmet))
        unlisted = max(0, run.total - known) if run.total is not None and not run.exhausted else 0
        # `ended`: the run is over, so its unlisted jobs (never split off, or queued or running when
        # it was cancelled: no list holds them then) never will be done
        return {"project": run.id, "total": total, "offset": offset, "limit": limit, "unlisted": unlisted,
                "ended": run.state in ("done", "failed", "cancelled"), "jobs": page}

    def finished_before(self) -> history.History:
        """Runs that had finished before this controller started (the journal's; read-only)."""
        found = getattr(self, "_history", None)
        if found is None:
            found = self._history = history.History(self.journal, history.KEEP_FINISHED_RUNS)
        return found

    def finished_facts(self, ref: str) -> RunFacts | None:
        """The facts of a run that finished before this start, from any thread (`Controller.run_facts`):
        only once the loop has read those runs (a query for one makes it), and only while its output
        folder is there (`history.facts`)."""
        found = getattr(self, "_history", None)
        record = found.loaded(ref) if found is not None else None
        return history.facts(record) if record is not None else None

    def _query_finished(self, record: ProjectRecord, what: str, body: dict[str, Any]) -> dict[str, Any]:
        if what == "project":
            return history.snapshot(record)
        if what == "log":
            found = history.job_log(self.journal, self.joblog_store, record, _field(body, "key", check_key))
            if found is None:
                raise Refused("not_found", f"project {record.project_id} has no job {body['key']!r}")
            return found
        return history.jobs_page(self.journal, record, *_page_args(body))

    # -- helpers --------------------------------------------------------------------

    def _find_run(self, ref: str) -> ProjectRun:
        """A run by id, or by project name (its newest run)."""
        run = self.runs.get(ref)
        if run is None:
            named = [r for r in self.runs.values() if r.project.name == ref]
            run = max(named, key=lambda r: r.submitted) if named else None
        if run is None:
            raise Refused("not_found", f"no project {ref!r}")
        return run

    def _find_run_or_record(self, ref: str) -> ProjectRun | ProjectRecord:
        """A run in memory, else the journal's record of one that finished before this start or was
        pruned from memory since."""
        try:
            return self._find_run(ref)
        except Refused:
            record = self._ended_record(ref)  # farm.controller.clients
            if record is None:
                raise
            return record

    def _knows(self, run: ProjectRun, key: str) -> bool:
        """The run has had this job (in flight, collating, queued, failed, done, or in its logs)."""
        return (run.logs.last(key) is not None or key in run.leases or key in run.collating
                or key in run.failures or key in run.unmet
                or any(job.key == key for job in run.ready) or self.journal.is_done(run.id, key))


def _job(run: ProjectRun, key: str, state: str, agent: str | None, duration: float | None,
         error: str | None) -> dict[str, Any]:
    last = run.logs.last(key)
    if last is not None and duration is None and state != "queued":
        duration = last["duration_s"]
    if last is not None:
        agent = agent or last["agent"]
        if state == "queued":
            error = last["error"]  # why it waits for another attempt
    # attempts made, numbered as the job's log numbers them (every outcome, retries of failed jobs
    # included): the running one is the next number; without a log (a restarted controller), the
    # attempts counted towards max_attempts
    if state == "reused":
        attempts = 0
    elif last is not None:
        attempts = last["attempt"] + (state == "running")
    elif state == "failed":
        attempts = run.failures[key].attempts
    else:
        attempts = run.attempts.get(key, 0) + (state in ("running", "collating", "done"))
    return {"key": key, "state": state, "attempts": attempts, "agent": agent,
            "duration_s": None if duration is None else round(duration, 3), "error": error}


def _collating(run: ProjectRun, key: str, pending: Any) -> dict[str, Any]:
    """A job whose outputs the collator thread is writing: rendered by its lease's agent, or reused
    from the job cache (no lease: no attempt made)."""
    lease = pending.lease
    row = _job(run, key, "collating", lease.agent_id if lease is not None else None, None, None)
    if lease is None:
        row["attempts"] = 0
    return row


def _page_args(body: dict[str, Any]) -> tuple[str | None, int, int]:
    """A jobs QUERY's (state, offset, limit), checked."""
    state = body.get("state")
    if state is not None and state not in JOB_STATES:
        raise Refused("bad_request", f"unknown job state {state[:40]!r} (one of {', '.join(JOB_STATES)})")
    offset = body["offset"] if body.get("offset") is not None else 0
    limit = body["limit"] if body.get("limit") is not None else 100
    if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= MAX_PAGE:
        raise Refused("bad_request", f"offset must be 0..{MAX_OFFSET} and limit 1..{MAX_PAGE}")
    return state, offset, limit


def _field(body: dict[str, Any], name: str, check: Any) -> str:
    value = body.get(name)
    if value is None:
        raise Refused("bad_request", f"{name} is missing")
    return _checked(check, value, name)


def _checked(check: Any, value: Any, what: str = "job key") -> str:
    try:
        return check(value, what)
    except BadIdentifier as exc:
        raise Refused("bad_request", str(exc)) from None
