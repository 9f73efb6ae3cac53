"""Adaptive chunks without sockets: measured times in, chunk sizes out (farm.controller.chunking).

A small discrete-event simulation of N slots runs the advisor as the controller does: it asks
for each job's size when a slot frees up and learns only from jobs finished by then.
"""

from __future__ import annotations

import heapq
import textwrap
from pathlib import Path

import pytest
from farm_frames.framerange import FrameIndex, chunk_runs, iter_frames, parse_frames
from farm_frames.media import Frames
from hypothesis import given
from hypothesis import strategies as st

from farm.controller.chunking import AdaptiveChunks, UnitTimes, chunk_size, ladder_down, ladder_up
from farm.controller.registry import AgentState
from farm.controller.run import ProjectRun
from farm.errors import ProjectError
from farm.journal import Journal
from farm.mediatype import ChunkAdvisor, Job
from farm.project import DEFAULT_TARGET_S, load_project


def unit_job(start: int, units: int) -> Job:
    return Job(f"u-{start:06d}-{start + units - 1:06d}", {"start": start, "units": units})


def simulate(advisor: ChunkAdvisor, *, units: int, slots: int, unit_s, startup_s: float,
             default: int) -> tuple[list[float], list[int]]:
    """Run ``units`` on ``slots`` identical slots; returns each slot's finish time and the job sizes.

    ``unit_s(i)``: seconds unit i takes. The advisor hears of a job when it finishes.
    """
    free = [(0.0, slot) for slot in range(slots)]  # (time the slot frees up, slot)
    finishing: list[tuple[float, int, float, int]] = []  # (end, units, seconds, slot) not yet heard of
    finish = [0.0] * slots
    sizes = []
    done = 0
    while done < units:
        now, slot = heapq.heappop(free)
        while finishing and finishing[0][0] <= now:
            _, n, seconds, done_on = heapq.heappop(finishing)
            if isinstance(advisor, AdaptiveChunks):
                advisor.record(f"agent{done_on}", n, seconds)
        if isinstance(advisor, AdaptiveChunks):
            advisor.saw(f"agent{slot}", 1, slots)
        start = done
        job = advisor.next_job(units - done, default, lambda n, s=start: unit_job(s, n))
        seconds = startup_s + sum(unit_s(i) for i in range(start, start + job.units))
        sizes.append(job.units)
        done += job.units
        heapq.heappush(finishing, (now + seconds, job.units, seconds, slot))
        heapq.heappush(free, (now + seconds, slot))
        finish[slot] = now + seconds
    return finish, sizes


# -- the arithmetic ----------------------------------------------------------------------


def test_chunk_aims_at_the_target_from_per_unit_time_and_startup():
    # (60 s - 3 s start-up) / 2 s a frame = 28.5 frames: the ladder's 24
    assert chunk_size(10_000, 10, slots=4, target_s=60, per_unit_s=2.0, startup_s=3.0) == 24
    # a shorter target, shorter jobs
    assert chunk_size(10_000, 10, slots=4, target_s=20, per_unit_s=2.0, startup_s=0.0) == 8
    # a fast unit: many per job
    assert chunk_size(10_000, 10, slots=4, target_s=60, per_unit_s=0.05, startup_s=1.0) == 1024
    # nothing measured yet: the type's default
    assert chunk_size(10_000, 10, slots=4, target_s=60, per_unit_s=None) == 10
    # never more than what is left
    assert chunk_size(3, 10, slots=1, target_s=60, per_unit_s=0.1) == 3


def test_startup_is_never_more_than_a_quarter_of_a_job():
    # 10 s start-up, 1 s a unit, target 12 s: the target would give 2 units, start-up 83 % of the job
    size = chunk_size(10_000, 4, slots=2, target_s=12, per_unit_s=1.0, startup_s=10.0)
    assert size == 32 and 10.0 / (10.0 + size) <= 0.25
    # the floor holds in the tail too
    assert chunk_size(40, 4, slots=8, target_s=12, per_unit_s=1.0, startup_s=10.0) == 32


def test_the_tail_is_split_evenly_over_the_slots():
    # 24 units a job by time; 40 left on 4 slots: 10 each, rounded up the ladder to 12
    assert chunk_size(40, 10, slots=4, target_s=60, per_unit_s=2.0, startup_s=3.0) == 12
    assert chunk_size(8, 10, slots=4, target_s=60, per_unit_s=2.0, startup_s=0.5) == 2
    # but not below the start-up floor: 3 s start-up at 2 s a unit needs 4.5 units (the ladder's 6)
    assert chunk_size(8, 10, slots=4, target_s=60, per_unit_s=2.0, startup_s=3.0) == 6
    # slots unknown: no tail split
    assert chunk_size(40, 10, slots=0, target_s=60, per_unit_s=2.0, startup_s=3.0) == 24


@given(st.floats(0.5, 1e6))
def test_ladder_rounds_to_neighbouring_steps(value):
    low, high = ladder_down(value), ladder_up(value)
    assert low <= max(value, 1) and (high >= value or high == ChunkAdvisor.LADDER[-1])
    assert high <= 2 * max(low, 1)


def test_unit_times_separate_startup_from_per_unit_time():
    times = UnitTimes()
    assert times.estimate() is None
    for units in (10, 10, 24, 16, 4):
        times.record(units, 3.0 + 2.0 * units)
    per_unit, startup = times.estimate()
    assert per_unit == pytest.approx(2.0) and startup == pytest.approx(3.0)
    one_size = UnitTimes()
    for _ in range(3):
        one_size.record(10, 23.0)
    assert one_size.estimate() == (pytest.approx(2.3), 0.0)  # start-up folded into the unit time
    noisy = UnitTimes()
    noisy.record(1, 5.0)
    noisy.record(10, 4.0)  # a negative slope: noise, no fit
    assert noisy.estimate()[0] > 0
    for bad in (float("nan"), float("inf"), -1.0):
        noisy.record(3, bad)  # ignored
    assert len(noisy.samples) == 2


def test_each_slots_first_job_counts_only_until_others_are_in():
    """A slot's first job pays Blender's launch and the scene's load: 4 s on top of 0.5 s a frame."""
    advisor = AdaptiveChunks(target_s=10.0)
    advisor.saw("a", 2, 1)
    advisor.record("a", 4, 6.0)
    assert advisor.estimate() == (1.5, 0.0)  # all there is: cold jobs
    assert advisor.size(1000, 4) == 6  # first jobs may make chunks larger than the default 4
    slow_start = AdaptiveChunks(target_s=10.0)
    slow_start.record("b", 4, 20.0)  # a 16 s launch in it: 5 s a frame by this job alone
    assert slow_start.size(1000, 4) == 4  # but never smaller
    advisor.record("a", 4, 6.0)  # the second slot's first job: cold too
    for units in (4, 8, 4, 8):
        advisor.record("a", units, 0.1 + 0.5 * units)
    per_unit, startup = advisor.estimate()
    assert per_unit == pytest.approx(0.5) and startup == pytest.approx(0.1)
    assert advisor.size(1000, 4) == 16  # (10 - 0.1) / 0.5 = 19.8


# -- a farm of slots, simulated -----------------------------------------------------------


def test_adaptive_chunks_make_agents_finish_together():
    """900 units of 1 s on 4 slots, 2 s start-up, a 60 s target: fixed chunks of 40 (23 jobs)
    leave three slots idle for a whole job at the end; adaptive ones shrink near the end and
    the slots finish within a few seconds of each other."""
    kwargs = {"units": 900, "slots": 4, "unit_s": lambda i: 1.0, "startup_s": 2.0, "default": 40}
    fixed_finish, fixed_sizes = simulate(ChunkAdvisor(), **kwargs)
    finish, sizes = simulate(AdaptiveChunks(target_s=60.0), **kwargs)
    assert fixed_sizes == [40] * 22 + [20]
    assert sum(sizes) == 900
    assert sizes[:4] == [40] * 4  # nothing measured yet: the default
    assert max(sizes[4:]) == 48  # (60 - 2) / 1 = 58: the ladder's 48
    assert sizes[-4:] == [6] * 4  # shrinking at the end, to the floor: 2 s start-up <= 25 %
    assert sizes[4:] == sorted(sizes[4:], reverse=True)  # never growing again
    assert max(fixed_finish) - min(fixed_finish) == 42.0  # one slot runs a sixth 40-unit job
    assert max(finish) - min(finish) <= 8.0
    assert max(finish) < max(fixed_finish)
    assert max(finish) <= 900 / 4 * 1.1


def test_adaptive_chunks_follow_uneven_units():
    """Units that get 5x slower halfway through: jobs shrink to keep near the target."""
    finish, sizes = simulate(AdaptiveChunks(target_s=20.0), units=600, slots=3,
                             unit_s=lambda i: 0.2 if i < 300 else 1.0, startup_s=0.5, default=10)
    assert sum(sizes) == 600
    assert max(sizes) >= 64  # fast units: large chunks
    assert max(sizes[-6:]) <= 24 and sizes[-1] <= 4  # slow ones and the end: small
    assert max(finish) - min(finish) <= 5.0


def test_the_fixed_advisor_is_the_types_chunk():
    advisor = ChunkAdvisor()
    job = advisor.next_job(25, 10, lambda n: unit_job(0, n))
    assert job.units == 10 and job.key == "u-000000-000009"
    assert advisor.next_job(5, 10, lambda n: unit_job(20, n)).units == 5


def test_work_done_at_other_sizes_is_found_again():
    """A re-run finds the jobs a run with other timing made: every size it picked is probed."""
    first = AdaptiveChunks(target_s=30.0)
    _, sizes = simulate(first, units=300, slots=3, unit_s=lambda i: 1.0, startup_s=1.0, default=7)
    made, start = set(), 0
    for n in sizes:
        made.add(unit_job(start, n).key)
        start += n
    # the re-run measures a slower farm, so it would choose other sizes
    rerun = AdaptiveChunks(target_s=30.0, known=lambda job: job.key in made)
    for _ in range(4):
        rerun.record("a", 4, 40.0)
    rerun.saw("a", 1, 1)
    again, start = [], 0
    while start < 300:
        job = rerun.next_job(300 - start, 7, lambda n, s=start: unit_job(s, n))
        again.append(job.key)
        start += job.units
    assert set(again) == made
    # nothing known: its own sizes (10 s a unit, 30 s target: 3 units)
    fresh = AdaptiveChunks(target_s=30.0, known=lambda job: False)
    fresh.record("a", 4, 40.0)  # the slot's first job
    fresh.record("a", 4, 40.0)
    assert fresh.next_job(300, 7, lambda n: unit_job(0, n)).units == 3


# -- frames: the split, explicit chunks, the target key ----------------------------------


def frames_project(tmp_path: Path, frames_table: str, jobs_table: str = "") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "scene.py").write_text("import bpy\n")
    (tmp_path / "farm.toml").write_text(textwrap.dedent(f"""\
        [project]
        name = "chunks"
        media_type = "frames"
        {jobs_table}
        [frames]
        scene = "scene.py"
        {frames_table}
        """))
    return tmp_path


def test_an_explicit_chunk_wins_over_the_advisor(tmp_path):
    project = load_project(frames_project(tmp_path, 'frames = "1-50"\nchunk = 5'))
    advisor = AdaptiveChunks(target_s=60.0)
    advisor.record("a", 5, 1.0)  # would ask for 256 frames a job
    jobs = list(Frames().split(project, advisor))
    assert [j.units for j in jobs] == [5] * 10
    assert jobs[0].key == "frames-000001-000005"


def test_frames_split_asks_the_advisor_and_covers_every_frame_once(tmp_path):
    project = load_project(frames_project(tmp_path / "a", 'frames = "1-30, 41, 50-99"'))
    assert not project.settings["chunk_fixed"]
    advisor = AdaptiveChunks(target_s=60.0)
    jobs = []
    for job in Frames().split(project, advisor):
        jobs.append(job)
        advisor.record("a", job.units, 1.0 * job.units)  # 1 s a frame: 48 frames a job
        advisor.saw("a", 1, 2)
    frames = [f for job in jobs for f in iter_frames(job.params["runs"])]
    assert frames == list(iter_frames(project.settings["frames"]))
    assert jobs[0].units == project.settings["chunk"] == 10  # the default, before a time is known
    assert jobs[1].units == 48 or jobs[1].units < 48  # then the target (or the tail)
    assert len(jobs) < len(list(chunk_runs(project.settings["frames"], 10)))
    # without an advisor (farm.testing, a caller of its own): the fixed chunk, same keys as before
    plain = list(Frames().split(project))
    assert [j.key for j in plain] == [f"frames-{r[0][0]:06d}-{r[-1][1]:06d}"
                                     for r in chunk_runs(project.settings["frames"], 10)]


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), min_size=1, max_size=6), st.data())
def test_frame_index_slices_match_the_expanded_list(gaps, data):
    runs, frame = [], 0
    for gap, length in gaps:
        frame += gap + 1
        runs.append([frame, frame + length])
        frame += length + 1
    runs = parse_frames(", ".join(f"{a}-{b}" for a, b in runs))
    frames = list(iter_frames(runs))
    index = FrameIndex(runs)
    start = data.draw(st.integers(0, len(frames) - 1))
    count = data.draw(st.integers(1, len(frames) - start))
    assert list(iter_frames(index.slice(start, count))) == frames[start:start + count]
    with pytest.raises(ValueError):
        index.slice(start, len(frames) - start + 1)


def test_jobs_target_is_read_and_checked_with_its_line(tmp_path):
    assert load_project(frames_project(tmp_path / "ok", 'frames = "1-3"')).target == DEFAULT_TARGET_S
    project = load_project(frames_project(tmp_path / "set", 'frames = "1-3"', "[jobs]\ntarget = 90"))
    assert project.target == 90.0
    assert type(project).from_wire(project.to_wire()).target == 90.0
    for i, bad in enumerate(("0", "-5", '"1m"', "nan", "true", "100000")):
        root = frames_project(tmp_path / f"bad{i}", 'frames = "1-3"', f"[jobs]\ntarget = {bad}")
        with pytest.raises(ProjectError) as caught:
            load_project(root)
        assert caught.value.key is not None and "target" in caught.value.key
        assert caught.value.line == 5, (bad, caught.value)


def test_a_resumed_run_skips_done_jobs_whatever_their_size(tmp_path):
    """A controller restarted mid-run: the new run's advisor finds the done jobs (cut at sizes
    the old timing chose) in the journal and renders only the frames between them."""
    project = load_project(frames_project(tmp_path / "p", 'frames = "1-40"'))
    agent = AgentState(identity=b"a", id="a", host="h", slots=1, prefetch=0, caps={"frames", "blender"},
                       missing={})
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.add_project("run", project.to_wire(), 0, 0.0)
        for first, last in ((1, 8), (9, 20), (21, 26)):  # the old run's jobs: 8, 12 and 6 frames
            journal.job_done("run", f"frames-{first:06d}-{last:06d}", {"frames": last - first + 1})
        journal.flush()
        resumed = ProjectRun("run", project, Frames(), journal)
        assert resumed.chunks is not None and resumed.done == 3
        resumed.chunks.record("a", 4, 40.0)  # slow now: 10 s a frame, 6-frame jobs by time
        resumed.chunks.record("a", 4, 40.0)
        leases = []
        while not resumed.exhausted:
            taken = resumed.take(agent, 1, 1, 0.0)
            for lease in taken:
                del resumed.leases[lease.job.key]  # as if done: pull on
            leases += taken
        rendered = [f for lease in leases for f in iter_frames(lease.job.params["runs"])]
        assert rendered == list(range(27, 41))
        assert [lease.job.units for lease in leases] == [6, 6, 2]
