"""What a run tells people: its snapshot (progress, rate, ETA, units; the `progress` events,
`UPDATE`, `farm status` and the HTTP API show it) and its summary (`FINISHED`, `--json`).

A mixin of `farm.controller.run.ProjectRun`: it reads the run's counters, never changes them.
"""

from __future__ import annotations

import time
from typing import Any


class RunReport:
    """`elapsed`, `snapshot` and `summary` of a `ProjectRun` (whose attributes they read)."""

    def elapsed(self) -> float:
        end = self.finished_mono or time.monotonic()
        return end - self.started_mono

    def snapshot(self, stalled: str | None = None) -> dict[str, Any]:
        # a job being collated is rendered: it counts whole, or the bar (and a client's rate)
        # would go back between its agent's last progress and its collate's end
        rendered = {**self.progress, **dict.fromkeys(self.collating, 1.0)}
        running_fraction = sum(rendered.values())
        elapsed = self.elapsed()
        rate = (self.done - self.resumed + len(self.failures) + running_fraction) / elapsed if elapsed > 0.5 else None
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
            "eta_s": (round(left / rate, 1) if rate and left is not None and self.active and not self.paused
                      else None),
            "stalled": stalled,
            "error": self.error,
            "units": self.units.snapshot(rendered, elapsed, exhausted=self.exhausted, active=self.active),
        }

    def summary(self) -> dict[str, Any]:
        snap = self.snapshot()
        return {
            "id": self.id,
            "project": self.project.name,
            "media_type": self.media.name,
            "state": self.state,
            "jobs": {"total": snap["total"] if snap["total"] is not None else self.done + len(self.failures),
                     "done": self.done, "failed": len(self.failures), "reused": self.reused},
            "elapsed_s": snap["elapsed_s"],
            "units": snap["units"],
            "outputs": self.outputs,
            "output_dir": str(self.project.output_dir),
            "failures": [{"job": f.key, "error": f.error, "log": f.log, "attempts": f.attempts}
                         for f in self.failures.values()],
            "error": self.error,
            "download": self.download,
        }


def first_line(text: str, rest_at: str) -> str:
    """``text``'s first line, saying how many more there are and where (``rest_at``): a job's
    error may end in its renderer's log tail, which the run's summary shows once already."""
    first, _, rest = text.partition("\n")
    return f"{first} ({rest.count(chr(10)) + 1} more lines: {rest_at})" if rest else first
