"""What a run tells people: its snapshot (progress, rate, ETA, units; the `progress` events,
`UPDATE`, `farm status` and the HTTP API show it) and its summary (`FINISHED`, `--json`).

`RunReport` is a mixin of `farm.controller.run.ProjectRun`: it reads the run's counters, never
changes them. `RunLog` is the run's collate logger: a media type's `collate` and `finalize` say
what went wrong without failing the run through ``ctx.log`` (a finalize that removed an earlier
run's outputs, an output file ignored). On a controller those lines go to its log, which the
person who ran `farm submit --controller ...` never sees; so warnings and errors are also kept,
and the summary carries them as ``notes`` (`farm submit` prints them, ``--json`` includes them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import Any

from farm.controller.pace import MovingClock


class RunReport:
    """`elapsed`, `snapshot` and `summary` of a `ProjectRun` (whose attributes they read)."""

    #: the run's controller ends with the command that submitted it (the embedded farm's): nothing
    #: can ask it for a job's log afterwards (`farm logs`), so `logs_at` names what that command prints
    ends_with_submitter = False
    #: how its outputs are served beyond ``download``: its parts, or why not (`finishing.served`)
    served: dict[str, Any] = {}

    def logs_at(self, key: str) -> str:
        """Where a person reads job ``key``'s whole error and its log tail once it failed."""
        if self.ends_with_submitter:
            return "the run's summary; with --json its failures carry each job's log tail"
        return f"the run's summary, farm logs {self.id} {key}"

    def elapsed(self) -> float:
        end = self.finished_mono or time.monotonic()
        return end - self.started_mono

    def moving(self, stalled: str | None) -> float:
        """Seconds of `elapsed` the run could move: not those it spent paused with nothing running,
        stalled, or ended before a retry (`farm.controller.pace`); `stalled` is its state now."""
        clock = self.__dict__.get("_moving_clock")
        if clock is None:  # one, whichever thread takes the first snapshot (setdefault is atomic)
            clock = self.__dict__.setdefault("_moving_clock", MovingClock(self.started_mono))
        idle = self.finished_mono is not None or (
            stalled is not None and not self.leases and not self.collating)
        return self.elapsed() - clock.idle_s(self.finished_mono or time.monotonic(), idle)

    def snapshot(self, stalled: str | None = None) -> dict[str, Any]:
        # a rendered job being collated counts whole, or the bar (and a client's rate) would go back
        # between its agent's last progress and its collate's end; one reused from the job cache
        # (no lease) counts nothing until done: its collate is all its work, and a resubmit hands
        # hundreds at once to the collator, which read as 100 % with one job done
        rendered = {**self.progress, **{key: 1.0 for key, pending in self.collating.items()
                                        if pending.lease is not None}}
        running_fraction = sum(rendered.values())
        elapsed = self.elapsed()
        # a pace from work done (failures are no throughput) over the time it could move, and none
        # while nothing can: the run waits for an agent (or a resume), and an ETA would be a guess
        moving = stalled in (None, "paused")  # paused: its ETA goes, its pace so far stays
        moved_s = self.moving(stalled)
        # the first half second's pace is noise, but a run whose work is over has its final pace
        over = self.exhausted and not self.leases and not self.ready
        rate = ((self.done - self.resumed + running_fraction) / moved_s
                if moving and (moved_s > 0.5 or (over and moved_s > 0)) else None)
        left = None if self.total is None else self.total - self.done - len(self.failures) - running_fraction
        return {
            "id": self.id,
            "project": self.project.name,
            "media_type": self.media.name,
            "state": self.state,
            "paused": self.paused,
            "priority": self.priority,
            "total": self.total if self.total is not None else (self.done + len(self.failures)
                                                                  if self.exhausted else None),
            # adaptive chunks: the job count follows the sizes chosen until the split is over
            # (a chunk the project wrote keeps it exact; that is known once the first job is split)
            "total_estimated": (self.chunks is not None and not self.chunks.fixed and not self.exhausted
                                and self.total is not None),
            "done": self.done,
            "failed": len(self.failures),
            "reused": self.reused,
            "resumed": self.resumed,
            "running": len(self.leases),
            "collating": len(self.collating),  # rendered, outputs being written: not yet done
            "partial": round(running_fraction, 3),
            "retrying": len(self.ready),
            "elapsed_s": round(elapsed + self.elapsed_before, 3),  # the run's wall time, across restarts
            "first_dispatch_s": self.first_dispatch_s,
            "rate": round(rate, 3) if rate else None,
            # nothing left: 0 at once, not only once a rate is known (a run rendered in its first 0.5 s)
            "eta_s": (None if left is None or not self.active or self.paused else 0.0 if left <= 0
                      else round(left / rate, 1) if rate else None),
            "stalled": stalled,
            "error": self.error,
            "code": self.served.get("code"),  # why it stopped, for scripts: controller_disk
            "units": self.units.snapshot(rendered, moved_s, exhausted=self.exhausted,
                                         active=self.active and not self.paused, moving=moving, over=over),
        }

    def summary(self) -> dict[str, Any]:
        snap = self.snapshot()
        return {
            "id": self.id,
            "project": self.project.name,
            "media_type": self.media.name,
            "state": self.state,
            "jobs": {"total": snap["total"] if snap["total"] is not None else self.done + len(self.failures),
                     "done": self.done, "failed": len(self.failures), "reused": self.reused,
                     "resumed": self.resumed},
            "elapsed_s": snap["elapsed_s"],
            "units": snap["units"],
            "outputs": self.outputs,
            "output_dir": str(self.project.output_dir),
            "failures": [{"job": f.key, "error": f.error, "log": f.log, "attempts": f.attempts}
                         for f in self.failures.values()],
            "error": self.error,
            "download": self.download,
            **{k: v for k, v in self.served.items() if k != "download"},
            "notes": self.collate_log.summary(),
        }


def first_line(text: str, rest_at: str) -> str:
    """``text``'s first line, saying how many more there are and where (``rest_at``): a job's
    error may end in its renderer's log tail, which the run's summary shows once already."""
    first, _, rest = text.partition("\n")
    return f"{first} ({rest.count(chr(10)) + 1} more lines: {rest_at})" if rest else first


#: notes a summary keeps (the first ones), and the characters of each
MAX_NOTES = 20
MAX_NOTE_CHARS = 1000


class RunLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """`logger`'s records, each WARNING or above also kept in ``notes`` (formatted, in order; at most
    `MAX_NOTES`, each cut to `MAX_NOTE_CHARS`, and a last one saying how many more there were)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})
        self.notes: list[str] = []
        self._more = 0

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level >= logging.WARNING:
            self._keep(msg, args)
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1  # the record names the plugin's line, not ours
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs  # no `extra` of ours: the record stays the logger's own

    def _keep(self, msg: object, args: tuple[Any, ...]) -> None:
        if len(self.notes) >= MAX_NOTES:
            self._more += 1
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):  # as logging itself would show a bad format: the parts
            text = f"{msg} {args!r}"
        self.notes.append(text if len(text) <= MAX_NOTE_CHARS else text[:MAX_NOTE_CHARS - 1] + "…")

    def summary(self) -> list[str]:
        """The notes for a run's summary."""
        more = [f"... and {self._more} more warnings in the controller's log"] if self._more else []
        return [*self.notes, *more]
