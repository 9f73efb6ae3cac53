"""An audio run stopped while it finalizes (Ctrl-C, or killed) resumes: the next `farm submit`
exits 0 with the outputs of an uninterrupted run, byte for byte.

Real processes and real ffmpeg. The stop is placed, not timed: the submitting process runs a
launcher that patches the controller's finalize to stop itself at one point (`STOPPER`).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from audio_helpers import render_jobs
from farm_audio import ffmpeg

from farm.errors import RenderError
from farm.mediatype import CollateContext
from farm.plugins import get_plugins
from farm.project import load_project
from farm.testing import run_local

FARM = [sys.executable, "-m", "farm"]
SIGNAL = (  # test_audio's: swells and gaps, so loudnorm measures a loudness range
    "0.5*sin(2*PI*220*t)*(0.6+0.4*sin(2*PI*1.7*t))*gt(mod(t,0.9),0.25)+0.02*sin(2*PI*3170*t*t)"
    "|0.4*sin(2*PI*330*t)*gt(mod(t,1.3),0.4)+0.05*sin(2*PI*90*t)"
)
JOBS = 8  # the loudness analysis and 7 segments of 0.5 s
TABLE = """\
input = "source.flac"
filters = "highpass=f=80,acompressor=threshold=0.1:ratio=3,aecho=0.8:0.6:40:0.3,loudnorm=I=-20:TP=-1:LRA=15"
segment = 0.5
outputs = ["flac", "mp3"]
name = "mix"
"""

# Runs `farm submit ARGS` in this process, its controller's finalize patched to stop at $STOP_AT
# (touching $STOP_REACHED first): "ctrl-c" sends SIGINT to the process group as a terminal does
# (agents and encoder included) at the last encode, and lets it go on once the controller is
# stopping; "kill-encoding" / "kill-recorded" / "kill-finalized" SIGKILL the process at the last
# encode / once the outputs are recorded, before the joins go / once finalize returned.
STOPPER = textwrap.dedent("""\
    import os, signal, sys, threading
    from pathlib import Path
    from farm.controller.server import Controller
    from farm_audio import stream
    from farm_audio.media import AudioSegments

    mode = os.environ["STOP_AT"]
    stopping = threading.Event()

    def stop_here():
        Path(os.environ["STOP_REACHED"]).touch()
        if mode == "ctrl-c":
            os.killpg(0, signal.SIGINT)
            assert stopping.wait(60)
        else:
            os.kill(os.getpid(), signal.SIGKILL)

    def patch(cls, name, when):
        original = getattr(cls, name)
        def patched(self, *args, **kwargs):
            if when == "before":
                stop_here()
            result = original(self, *args, **kwargs)
            if when == "after":
                stop_here()
            return result
        setattr(cls, name, patched)

    stop = Controller.stop
    Controller.stop = lambda self, *a, **k: (stopping.set(), stop(self, *a, **k))[1]
    if mode in ("ctrl-c", "kill-encoding"):
        patch(stream.Encoders, "finish", "before")
    elif mode == "kill-recorded":
        patch(AudioSegments, "_end", "before")
    else:
        patch(AudioSegments, "finalize", "after")
    sys.argv = ["farm", *sys.argv[1:]]
    from farm.cli import main
    main()
""")
MODES = ["ctrl-c", "kill-encoding", "kill-recorded", "kill-finalized"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """(the project's input, the outputs of an uninterrupted run: name -> bytes)."""
    folder = tmp_path_factory.mktemp("reference")
    source = folder / "source.flac"
    ffmpeg.run(["-f", "lavfi", "-i", f"aevalsrc=exprs='{SIGNAL}':s=44100:c=stereo:d=3.3", "-c:a", "flac",
                str(source)])
    run = run_local(make_project(folder / "project", source))
    return source, {p.name: p.read_bytes() for p in run.outputs}


def make_project(root: Path, source: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy(source, root / "source.flac")
    (root / "farm.toml").write_text(f'[project]\nname = "mix"\nmedia_type = "audio"\n\n[audio]\n{TABLE}')
    return root


def stopped_submit(root: Path, mode: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`farm submit ROOT` stopped in its finalize at ``mode``; fails unless it got there."""
    launcher, reached = tmp_path / "stopper.py", tmp_path / f"reached-{mode}"
    launcher.write_text(STOPPER)
    env = {**os.environ, "STOP_AT": mode, "STOP_REACHED": str(reached)}
    proc = subprocess.Popen([sys.executable, str(launcher), "submit", str(root), "--agents", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    kill_group(proc.pid)
    assert reached.exists(), f"the run never got to {mode}:\n{err}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_group(group: int) -> None:
    """A SIGKILLed submitter's agents would leave on their own (they watch its pid): no waiting for that."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow  # two runs on real agents: a few seconds each
@pytest.mark.parametrize("mode", MODES)
def test_a_run_stopped_while_it_finalizes_resumes_to_the_same_outputs(
    tmp_path: Path, reference: tuple[Path, dict[str, bytes]], mode: str
) -> None:
    source, expected = reference
    root = make_project(tmp_path / "project", source)
    first = stopped_submit(root, mode, tmp_path)
    if mode == "ctrl-c":
        assert first.returncode == 128 + signal.SIGINT, first.stderr
        assert "interrupted: " in first.stderr and "Traceback" not in first.stderr, first.stderr
        assert "finalize failed" not in first.stderr, first.stderr  # its encoder was not hit by the Ctrl-C
    else:
        assert first.returncode == -signal.SIGKILL, first.stderr

    again = subprocess.run([*FARM, "submit", str(root), "--agents", "2", "--json"], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["state"] == "done" and summary["jobs"]["done"] == JOBS, summary
    assert sorted(Path(p).name for p in summary["outputs"]) == sorted(expected)
    for name, data in expected.items():
        assert (root / "output" / name).read_bytes() == data, name
    assert not list((root / "output").glob(".*"))  # no join, range record or finished record left


def test_finalize_run_again_after_it_ended_returns_the_outputs_it_wrote(
    tmp_path: Path, reference: tuple[Path, dict[str, bytes]]
) -> None:
    """A controller that dies after finalize removed the joins and before it journaled the run's
    end resumes the run with every job done (nothing collated): finalize returns the recorded outputs."""
    source, expected = reference
    project = load_project(make_project(tmp_path / "project", source))
    media = get_plugins().get("audio")
    rendered = render_jobs(project, tmp_path / "scratch")
    ctx = CollateContext(project, project.output_dir, {})
    for job, result, files in rendered.values():
        media.collate(job, result, files, ctx)
    outputs = media.finalize(ctx)
    written = {p: p.stat().st_mtime_ns for p in outputs}

    def resumed() -> list[Path]:
        return media.finalize(CollateContext(project, project.output_dir, {}, done=frozenset(rendered)))

    assert resumed() == outputs
    assert {p: p.stat().st_mtime_ns for p in outputs} == written  # not encoded again
    assert {p.name: p.read_bytes() for p in outputs} == expected
    (project.output_dir / "mix.flac").write_bytes(b"changed since")  # then the record does not apply
    with pytest.raises(RenderError, match="never arrived"):
        resumed()
    del ctx  # the run's end is journaled: its record goes
    gc.collect()
    assert not list(project.output_dir.glob(".*"))
