"""Progress for people, and the end-of-run summary.

A run's UPDATEs (the controller's snapshots, `farm.controller.run.ProjectRun.snapshot`) are
drawn with ``rich.progress`` on a terminal: the media's own units beside jobs ("tiles
1,234/5,461 · jobs 20/85"), the rate and ETA over the last `RATE_WINDOW_S` seconds (measured
afresh after the run was stalled or paused, or its controller silent), failures, reuse, and why
the run waits when it is stalled or paused, or the controller does not answer (no rate or ETA
then; `ProgressBar.waiting`); a finished run's rate is its average over the time it moved, as the
controller measured it). The count and the percent never
say a run is all there before its jobs are done: a job being collated counts whole in the
controller's ``partial``, so a backlog of collates would read as 100 %. While the job count is
an estimate (adaptive chunks: it follows the sizes chosen until the split is over) the jobs are
counted without it ("12 jobs done"), or, where jobs are the only figure, marked ("jobs 3/~10").
Where the stream is not a terminal (a log file, a pipe) the same text goes out as plain lines,
at most one every `PLAIN_EVERY_S` seconds unless the run's state or stall reason changes.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console, RenderableType
from rich.padding import Padding
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column
from rich.text import Text

from farm.client import Summary

ENDED = frozenset({"done", "failed", "cancelled"})

RATE_WINDOW_S = 10.0
CONTROLLER_SILENT = "the controller is not answering"  # the line's stall reason while a follower waits
PLAIN_EVERY_S = 10.0
SEP = " · "
BAR_WIDTH = 28  # the bar's width where the line has room; never narrower than BAR_MIN
BAR_MIN = 12


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_count(value: float | None) -> str:
    """1234 -> "1,234"; 12.25 -> "12.2"; None -> "?"."""
    if value is None:
        return "?"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def format_rate(rate: float) -> str:
    """A rate as every command and the dashboard show it: 12345.67 -> "12,345.7"."""
    return f"{rate:,.1f}"


class RateMeter:
    """Units per second over a sliding window, so the ETA follows the current pace.

    `add` gives None while unknown: under 0.3 s of samples, or just after the done units went
    down (a restarted controller drops its jobs' partial progress): the window starts again
    there, so a rate is never negative; and until some work is done after that start (agents
    rejoining a resumed run: "--", not "0.0 tiles/s"). `restart` starts it again where nothing
    could move (paused, stalled): a window half over a pause read 0.1 items/s at 2 a second.
    """

    def __init__(self, window: float = RATE_WINDOW_S) -> None:
        self.window = window
        self.samples: list[tuple[float, float]] = []
        self.moved = False  # done went up since the samples started

    def restart(self) -> None:
        self.samples.clear()
        self.moved = False

    def add(self, now: float, done: float) -> float | None:
        if self.samples and done < self.samples[-1][1]:
            self.restart()
        self.moved = self.moved or bool(self.samples) and done > self.samples[0][1]
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.pop(0)
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        if t1 - t0 < 0.3 or not self.moved:
            return None
        return (d1 - d0) / (t1 - t0)


class Position:
    """Where a run stands in its units (or in jobs, for a media type that counts none).

    Done and failed are apart, as in the summary: the counts and the bar say what is done
    (with the fraction of the jobs under way), failures are said beside them.
    """

    def __init__(self, update: dict[str, Any]) -> None:
        self.jobs = (update["done"], update.get("total"))
        self.estimated = bool(update.get("total_estimated")) and update.get("total") is not None
        units = update.get("units") or {}
        self.name = units.get("name") or "jobs"
        if units and self.name != "jobs":
            self.done = float(units.get("done", 0))
            self.failed = float(units.get("failed", 0))
            self.value = self.done + float(units.get("partial", 0.0))
            self.total = units.get("total")
            self.shows_jobs = True
        else:  # a job part-way counts its fraction, so long jobs move the bar
            self.done = float(update["done"])
            self.failed = float(update["failed"])
            self.value = self.done + float(update.get("partial", 0.0))
            self.total = update.get("total")
            self.shows_jobs = False
        self.rate = units.get("rate") if self.shows_jobs else update.get("rate")  # the run's average
        # a job not done yet leaves the count short of the total (by at most one unit), whatever
        # its collate adds to `partial`: "items 1,200/1,200" with 1 job of 400 done would say it is over
        left = (self.total or 0) - self.failed - self.done
        self.unfinished = left > 0
        if self.unfinished:
            self.value = min(self.value, self.done + left - min(1.0, left / 2))

    @property
    def fraction(self) -> float | None:
        return min(self.value / self.total, 1.0) if self.total else None

    @property
    def percent(self) -> str:
        """The bar's share done, "" with no total: at most 99% while a job is not done."""
        fraction = self.fraction
        if fraction is None:
            return ""
        return f"{min(round(fraction * 100), 99) if self.unfinished else round(fraction * 100)}%"

    @property
    def remaining(self) -> float | None:
        """Units still to render: neither done nor failed."""
        return max(self.total - self.value - self.failed, 0.0) if self.total else None

    @property
    def jobs_shown(self) -> str:
        """The jobs beside the units: against their total once it is the run's, else counted alone
        (an estimated total moves as chunk sizes are chosen: it would read as a shrinking total)."""
        done, total = self.jobs
        if self.estimated:
            return f"{format_count(done)} job{'' if done == 1 else 's'} done"
        return f"jobs {format_count(done)}/{format_count(total)}"

    @property
    def total_shown(self) -> str:
        return ("~" if self.estimated and not self.shows_jobs else "") + format_count(self.total)

    @property
    def shown(self) -> str:
        """The count beside the total, the parts of jobs under way included (as in the bar's %):
        in whole units while whole units are done ("frames 7/48" at 15%), else to one decimal."""
        value = self.value
        if value != self.done and self.done.is_integer() and (self.total is None or float(self.total).is_integer()):
            value = float(int(value + 1e-9))
        return format_count(value)


def progress_text(update: dict[str, Any], rate: float | None) -> str:
    """The words beside the bar: counts, rate, ETA, failures, reuse, state, stall reason.

    `rate`: units per second over the last few seconds (`RateMeter`), None while unknown; a
    finished run shows its average over the run instead (its last seconds moved nothing).
    """
    pos = Position(update)
    ended = update.get("state") in ENDED
    if ended:
        rate = pos.rate
    parts = [f"{pos.name} {pos.shown}/{pos.total_shown}"]
    if pos.shows_jobs:
        parts.append(pos.jobs_shown)
    remaining = pos.remaining
    if rate is not None and rate < 0 or (update.get("paused") or update.get("stalled")) and not ended:
        rate = None  # a caller's own sample (not RateMeter's); paused or waiting: the last pace is gone
    shown = format_rate(rate) if rate is not None else "--"
    # a rate that shows as 0.0 gives no ETA worth saying (hours from a trickle)
    eta = remaining / rate if rate and shown != "0.0" and remaining is not None else None
    if update.get("paused") or ended:  # no pace to go on: what is left waits on a resume, or never comes
        eta = 0.0 if ended and remaining == 0 and pos.done else None  # none done: no ETA ever was
    parts.append(f"{shown} {pos.name}/s")
    parts.append(f"ETA {format_duration(eta)}")
    if update.get("failed"):
        parts.append(f"{format_count(update['failed'])} failed")
    if update.get("reused"):
        parts.append(f"{format_count(update['reused'])} reused")
    if update.get("state") == "finalizing":
        parts.append("finalizing")
    if update.get("stalled"):
        parts.append(f"waiting: {update['stalled']}")
    elif update.get("skipped"):  # others render it; these agents have another version of its plugin
        parts.append(f"not on: {'; '.join(update['skipped'])}")
    return SEP.join(parts)


class ProgressBar:
    """Draws a run's UPDATEs on `stream`: a rich bar on a terminal, plain lines elsewhere.

    `enabled` False draws nothing (``--json``); None picks by whether `stream` is a
    terminal; True forces the bar (for `console`, a rich Console a test records).
    """

    def __init__(self, stream: TextIO = sys.stderr, enabled: bool | None = None, *,
                 console: Console | None = None, plain_every: float = PLAIN_EVERY_S) -> None:
        self.stream = stream
        self.off = enabled is False
        self.console = console
        self.live = console is not None or (enabled is True) or (enabled is None and stream.isatty())
        self.meter = RateMeter()
        self.plain_every = plain_every
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._plain_last: tuple[float, tuple[Any, ...]] | None = None
        self._last: dict[str, Any] | None = None  # the last update drawn
        self._rerouted: list[tuple[logging.StreamHandler, Any]] = []  # (handler, its own stream)

    def line(self, update: dict[str, Any], now: float | None = None) -> str:
        """The text for this update (and a rate sample taken from it: the window starts again while
        the run cannot move, so the pace after a pause or stall is the pace since)."""
        now = time.monotonic() if now is None else now
        if update.get("paused") or update.get("stalled"):
            self.meter.restart()
        return progress_text(update, self.meter.add(now, Position(update).value))

    def update(self, update: dict[str, Any], now: float | None = None) -> None:
        """Draw one UPDATE (`now`: its monotonic time, for the rate; default: the clock)."""
        if self.off:
            return
        now = time.monotonic() if now is None else now
        self._last = update
        text = self.line(update, now)
        if self.live:
            self._draw(update, text)
        else:
            self._plain(update, text, now)

    def waiting(self, why: str) -> None:
        """The controller stopped answering (`why`; "" once it answers again): until its next
        update the line says so (`CONTROLLER_SILENT`), with no rate or ETA, and the rate is
        measured afresh after it."""
        self.meter.restart()
        if why and self._last is not None and not self.off:
            self.update({**self._last, "stalled": CONTROLLER_SILENT})

    def _draw(self, update: dict[str, Any], text: str) -> None:
        pos = Position(update)
        if self._progress is None:
            console = self.console or Console(file=self.stream, highlight=False)
            self._progress = _RunProgress(console=console)
            stderr = sys.stderr
            self._progress.start()
            self._route_logs(stderr)
            self._task = self._progress.add_task(str(update.get("project", "")), total=None, stats="",
                                                 percent="")
        assert self._task is not None
        self._progress.update(self._task, completed=pos.value, total=pos.total, stats=text,
                              percent=pos.percent, refresh=True)

    def _plain(self, update: dict[str, Any], text: str, now: float) -> None:
        news = (update.get("state"), update.get("stalled"))  # failures are logged on their own
        last = self._plain_last
        if last is not None and last[1] == news and now - last[0] < self.plain_every:
            return
        self._plain_last = (now, news)
        percent = Position(update).percent
        share = f" ({percent})" if percent else ""
        self.stream.write(f"{update.get('project', '')}: {text.replace(SEP, share + SEP, 1)}\n")
        self.stream.flush()

    def _route_logs(self, stderr: Any) -> None:
        """While the bar is live, log lines to stderr go through rich's proxy, which prints them
        above the bar (written straight to the terminal they would run into the bar's line)."""
        proxy = sys.stderr
        if proxy is stderr:  # rich did not redirect (not a terminal)
            return
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler and handler.stream is stderr:
                self._rerouted.append((handler, handler.setStream(proxy)))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.refresh()
            self._progress.stop()
            self._progress = None
        for handler, stream in self._rerouted:
            handler.setStream(stream)
        self._rerouted.clear()


class _RunProgress(Progress):
    """Name, bar, %, elapsed time, and the stats beside them where the line holds them all;
    on a narrow terminal the stats go on a line of their own below (wrapped at words), so the
    bar keeps its width and the name and elapsed time are never cut."""

    def __init__(self, console: Console) -> None:
        self._name = Column(no_wrap=True, overflow="ellipsis")  # shortened, where need be, before the bar
        self._terminal = console
        super().__init__(
            TextColumn("{task.description}", table_column=self._name),
            BarColumn(bar_width=BAR_WIDTH, table_column=Column(min_width=BAR_MIN)),
            # Position.percent, not rich's percentage: that rounds 99.6 % of a run not yet done up to 100%
            TextColumn("{task.fields[percent]}", justify="right",
                       table_column=Column(no_wrap=True, min_width=4)),
            TimeElapsedColumn(table_column=Column(no_wrap=True, min_width=7)),
            console=console, refresh_per_second=5, transient=False)

    def get_renderables(self) -> Iterable[RenderableType]:
        self._name.max_width = max(self._terminal.width - (BAR_MIN + 5 + 8 + 1), 8)
        for task in self.tasks:
            stats = str(task.fields.get("stats", ""))
            # name, bar, " 100%", " 0:00:00", and a space before the stats
            beside = len(task.description) + 1 + BAR_WIDTH + 5 + 8 + 1
            if not stats or beside + len(stats) <= self._terminal.width:
                table = self.make_tasks_table([task])
                table.add_column()  # the stats, in the same row
                table.columns[-1]._cells.append(Text(stats, no_wrap=True))
                yield table
            else:
                yield self.make_tasks_table([task])
                yield Padding(Text(stats), (0, 0, 0, 2))


def _rendered(summary: Summary) -> str:
    """`` (11 rendered, 9 resumed)``: what this sitting rendered, beside the jobs it took as done
    (reused from the job cache; resumed: done before a restart or an interrupted run), or ""."""
    if not (summary.reused or summary.resumed):
        return ""
    taken = [f"{n} {word}" for n, word in ((summary.reused, "reused"), (summary.resumed, "resumed")) if n]
    return f" ({', '.join([f'{summary.done - summary.reused - summary.resumed} rendered', *taken])})"


def summary_text(summary: Summary, *, notes: bool = True, here: bool = True, fetch: str = "") -> str:
    """A run's summary as `farm submit` prints it; `notes`: with its notes as ``warning:`` lines.
    `here`: its output folder is on this machine's disk (False: the controller's, perhaps another
    machine's), so one that is not there is said to be gone rather than to hold its outputs.
    `fetch`: how to get outputs that the controller keeps (its paths mean nothing here), said instead
    of them."""
    lines = [
        f"{summary.project} ({summary.media_type}): {summary.state}: {summary.done}/{summary.total}"
        " jobs done,"
        f" {summary.failed} failed"
        + _rendered(summary)
        + f" in {format_duration(summary.elapsed_s)} ({summary.elapsed_s:.1f}s)",
    ]
    if summary.error:
        lines.append(f"error: {summary.error}")
    for failure in summary.failures:
        lines.append(f"  failed {failure['job']}: {failure['error']}")
    lines += [f"warning: {note}" for note in summary.notes if notes]  # the controller's log has them too
    if fetch and (summary.outputs or summary.output_dir):
        lines.append(f"outputs: on the controller's disk; {fetch}")
    elif summary.outputs:
        lines.append("outputs:")
        lines += [f"  {path}" for path in summary.outputs]
    elif summary.output_dir and here and not Path(summary.output_dir).is_dir():
        lines.append(f"no outputs: the output folder {summary.output_dir} is gone")  # removed, moved away
    elif summary.output_dir and summary.failed:  # the media type finished none (audio encodes nothing)
        lines.append(f"no finished outputs (jobs failed); what was collated is in {summary.output_dir}")
    elif summary.output_dir:
        lines.append(f"outputs in {summary.output_dir}")
    else:  # a remote run that collated nothing: there is no folder of ours to name
        lines.append("no outputs: the controller collated none")
    return "\n".join(lines)
