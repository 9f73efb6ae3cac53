"""ffmpeg filter options that reach files or sockets (security case ``ffmpeg-files``), as real attacks.

The review's set-up: a root controller checks a submitted ``[audio] filters`` chain by running
ffmpeg on it. ``ametadata file``, ``firequalizer dumpfile`` created root-owned files of the
attacker's choosing; ``asendcmd f`` quoted a root-only file's first line in the error;
``azmq`` opened a listener. Each attack here runs through a real ``farm submit`` (and the
README's four also from the user ``nobody`` against a standalone root controller) with the
real ffmpeg, and asserts: refused at load naming filter and option, no file created
anywhere, the secret's text never in what comes back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import zmq
from conftest import restartable_url
from farm_audio import ffmpeg
from farm_audio.allow import FILE_OPTIONS, REFUSED, SAFE
from hostile_helpers import as_nobody

from farm.errors import ProjectError, RenderError
from farm.project import load_project
from farm.protocol import T, pack, unpack

NOBODY = 65534


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def assert_nothing_written(tmp_path: Path, scene: dict[str, Path | str]) -> None:
    """No file in the root-only folder, and none of the names the attacks write, anywhere."""
    assert list(Path(scene["outside"]).iterdir()) == []
    assert not [p for p in tmp_path.rglob("*") if p.name in ("x", "relative.txt")]


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path | str]:
    """A project with a real input, a root-only folder outside it, and a root-only secret."""
    project = tmp_path / "project"
    project.mkdir()
    ffmpeg.run(["-f", "lavfi", "-i", "sine=f=440:d=1", "-c:a", "pcm_s16le", str(project / "src.wav")])
    outside = tmp_path / "root-only"
    outside.mkdir(mode=0o700)
    secret_text = f"TOPSECRET-{uuid.uuid4().hex}"
    secret = tmp_path / "secret.txt"
    secret.write_text(f"{secret_text}\nsecond line\n")
    secret.chmod(0o600)
    return {"project": project, "outside": outside, "secret": secret, "secret_text": secret_text}


def write_toml(project: Path, chain: str) -> None:
    # JSON string escapes are TOML basic-string escapes
    (project / "farm.toml").write_text(
        f'[project]\nname = "attack"\nmedia_type = "audio"\n\n[audio]\ninput = "src.wav"\n'
        f"filters = {json.dumps(chain)}\nsegment = 0.25\noutputs = [\"wav\"]\n"
    )


# (chain with {outside} and {secret} to fill, words the refusal must hold)
ATTACKS = [
    # the security README's four
    ("ametadata=mode=print:file={outside}/x", "ametadata: option 'file' is not allowed"),
    ("firequalizer=dumpfile={outside}/x", "firequalizer: option 'dumpfile' is not allowed"),
    ("asendcmd=f={secret}", "asendcmd is not allowed: it reads commands from a file"),
    ("azmq", "azmq is not allowed: it opens a network socket"),
    # the same kind, other spellings and other filters
    ("ametadata=print:k:v:same_str:e:{outside}/x", "ametadata: give its options by name"),
    ("volume=0.5,ametadata=mode=print:file=relative.txt", "ametadata: option 'file'"),
    ("ametadata=mode=print\\,x:file={outside}/x", "ametadata: option 'file'"),
    ("ametadata=mode=print:'file'={outside}/x", "ametadata"),
    ("loudnorm=I=-20:stats_file={outside}/x", "loudnorm: option 'stats_file' is not allowed"),
    ("asendcmd=filename={secret},volume", "asendcmd is not allowed"),
    ("sendcmd=f={secret}", "sendcmd is not allowed"),
    ("azmq=bind_address=tcp\\://127.0.0.1\\:5599", "azmq is not allowed"),
    ("amovie={secret}", "amovie is not allowed: it opens another file"),
    ("arnndn=m={secret}", "arnndn is not allowed: it reads a model file"),
    ("ladspa=file=/usr/lib/ladspa/amp.so", "ladspa is not allowed: it loads a native plugin"),
    ("lv2=plugin=http\\://example.org/plugin", "lv2 is not allowed"),
    ("aeval=/exprs={secret}", "loading an option's value from a file"),
    ("volume=/volume={secret}", "loading an option's value from a file"),
    ("volume=1;[x]ametadata=mode=print:file={outside}/x", "one chain of filters"),
    ("volume=1\nametadata=mode=print:file={outside}/x", "control characters"),
    ("arealtime", "arealtime is not allowed: it sleeps"),
]


def fill(chain: str, scene: dict[str, Path | str]) -> str:
    return chain.replace("{outside}", str(scene["outside"])).replace("{secret}", str(scene["secret"]))


@pytest.mark.parametrize(("chain", "words"), ATTACKS)
def test_file_and_socket_filters_are_refused_by_farm_submit(
    tmp_path: Path, scene: dict[str, Path | str], chain: str, words: str
) -> None:
    project = scene["project"]
    assert isinstance(project, Path)
    write_toml(project, fill(chain, scene))
    before = files_under(project)
    done = subprocess.run([sys.executable, "-m", "farm", "submit", str(project), "-n", "1"],
                          capture_output=True, text=True, timeout=120, cwd=project)
    assert done.returncode != 0
    assert words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert scene["secret_text"] not in done.stdout + done.stderr
    assert_nothing_written(tmp_path, scene)
    assert files_under(project) == before


def test_an_input_that_links_to_a_file_outside_the_project_is_refused_unread(
    scene: dict[str, Path | str]
) -> None:
    project, secret = scene["project"], scene["secret"]
    assert isinstance(project, Path) and isinstance(secret, Path)
    (project / "src.wav").unlink()
    (project / "src.wav").symlink_to(secret)
    write_toml(project, "volume=0.5")
    with pytest.raises(ProjectError) as caught:
        load_project(project)
    assert caught.value.key == "[audio] input" and "outside" in caught.value.message
    assert str(scene["secret_text"]) not in str(caught.value)


def test_ffmpeg_sees_exactly_the_options_farm_checked() -> None:
    """farm re-escapes a chain for ffmpeg's two parsing levels: ffmpeg's own log of the options
    it set must equal farm's reading, for quoting and escaping tricks too."""
    from farm_audio.chain import parse_chain

    chains = [
        "volume='if(lt(t,1),1,0.2)':eval=frame",
        "aecho=0.8:0.7:35|70:0.2|0.12",
        "pan=stereo|c0=c1|c1=c0",
        "volume=' 0.5 '",
        "ametadata=mode=print\\,x:key=a\\:b",
        "ametadata='mode'=print",
        "ametadata=mode=print:key='it''s':value=a\\'b",
    ]
    for chain in chains:
        filt = parse_chain(chain)[0]
        try:
            err = ffmpeg.run(["-loglevel", "debug", "-f", "lavfi", "-i", "sine=d=0.05", "-af", filt.text(),
                              "-f", "null", "-"], quiet=False).stderr.decode()
        except ffmpeg.FfmpegFailed as exc:  # a value ffmpeg rejects is still set (and logged) first
            err = exc.stderr
        seen = [line.split("Setting '", 1)[1] for line in err.splitlines()
                if line.startswith("[AVFilterGraph @ ") and "Setting '" in line]
        pairs = [(s.split("' to value '", 1)[0], s.split("' to value '", 1)[1][:-1]) for s in seen]
        pairs = pairs[1:]  # the first is the test source's duration
        assert [v for _, v in pairs][: len(filt.args)] == [v for _, v in filt.args], (chain, pairs, filt.args)


def test_the_allowlist_holds_no_filter_with_a_file_or_socket_option() -> None:
    """Every allowed filter in this ffmpeg: its string options are none of the known file/socket ones,
    except those FILE_OPTIONS refuses by name."""
    risky = {"file", "filename", "f", "dumpfile", "stats_file", "model", "m", "bind_address", "b", "sofa",
             "plugin", "destination", "vad_model"}
    known = ffmpeg.audio_filters()
    for name in sorted((SAFE | set(FILE_OPTIONS)) & known):
        text = ffmpeg.run(["-h", f"filter={name}"]).stdout.decode()
        strings = {line.split()[0] for line in text.splitlines() if "<string>" in line}
        assert not (strings & risky) - set(FILE_OPTIONS.get(name, ((), 0))[0]), name
    assert not (SAFE & set(REFUSED))


def _attack_as_nobody(url: str, project: Path, out: Path) -> None:
    """In a child process that has become the user nobody: send each SUBMIT by hand, note the answers."""
    answers = []
    ctx = zmq.Context()
    try:
        for toml in sorted(project.parent.glob("attack-*.toml")):
            shutil.copy(toml, project / "farm.toml")
            sock = ctx.socket(zmq.DEALER)
            sock.connect(url)
            wire = {"root": str(project), "name": "attack", "media_type": "audio", "settings": {},
                    "include": [], "exclude": [], "output": None, "timeout": None, "max_attempts": 1}
            sock.send_multipart(pack(T.SUBMIT, {"project": wire, "priority": 0, "upload": False}))
            if sock.poll(60_000):
                msg = unpack(sock.recv_multipart())
                answers.append({"type": msg.type.name, "body": repr(msg.body)})
            else:
                answers.append({"type": "none", "body": ""})
            sock.close(linger=0)
    finally:
        ctx.term()
    out.write_text(json.dumps(answers))


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the controller as root and the attacker as nobody")
def test_readme_attacks_from_nobody_against_a_root_controller(
    tmp_path: Path, scene: dict[str, Path | str]
) -> None:
    # the attacker's own folder (pytest's temporary folders are root-only)
    home = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(home, 0o755)
        project = home / "project"
        shutil.copytree(scene["project"], project)
        for i, (chain, _) in enumerate(ATTACKS[:4]):
            write_toml(project, fill(chain, scene))
            shutil.copy(project / "farm.toml", home / f"attack-{i}.toml")
        for path in [home, *home.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        url = restartable_url()  # its port + 1 (the file service) free too
        state = tmp_path / "state"
        controller = subprocess.Popen(
            [sys.executable, "-m", "farm", "controller", "--bind", url, "--state-dir", str(state),
             "--insecure"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            as_nobody(_attack_as_nobody, url, project, home / "answers.json")
        finally:
            controller.terminate()
            log = controller.communicate(timeout=60)[0]
        answers = json.loads((home / "answers.json").read_text())
        assert len(answers) == 4
        for answer in answers:
            assert answer["type"] == "ERROR", answer  # refused, whatever the reason
            assert scene["secret_text"] not in answer["body"]
        assert scene["secret_text"] not in log
        assert_nothing_written(tmp_path, scene)
        assert not [p for p in home.rglob("*") if p.name in ("x", "relative.txt")]
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("filters", "ametadata=mode=print:file={outside}/x", "ametadata: option 'file'"),
        ("filters", "asendcmd=f={secret}", "asendcmd is not allowed"),
        ("convert", "aformat=sample_fmts=dbl,ametadata=mode=print:file={outside}/x",
         "is not a format conversion"),
        ("input", "../secret.txt", "leads outside"),
        ("layout", "mono -f null /x", "is not a channel layout"),
        ("pcm", "wav", "unknown PCM format"),
    ],
)
def test_a_render_node_refuses_settings_no_farm_toml_could_give(
    tmp_path: Path, scene: dict[str, Path | str], key: str, value: str, words: str
) -> None:
    """A rogue controller's job: the agent checks the settings with the same rules before ffmpeg runs."""
    from farm.mediatype import RenderContext
    from farm.plugins import get_media_type

    project = scene["project"]
    assert isinstance(project, Path)
    write_toml(project, "volume=0.5")
    loaded = load_project(project)
    settings = {**loaded.settings, key: fill(value, scene)}
    media = get_media_type("audio")
    job = next(iter(media.split(loaded)))
    work = tmp_path / "agent"
    (work / "out").mkdir(parents=True)
    (work / "work").mkdir()
    before = files_under(project)
    ctx = RenderContext(project_dir=project, output_dir=work / "out", work_dir=work / "work",
                        settings=settings, threads=1, cache={}, deps={})
    with pytest.raises(RenderError) as caught:
        media.render(job, ctx)
    assert words in str(caught.value)
    assert scene["secret_text"] not in str(caught.value)
    assert_nothing_written(tmp_path, scene)
    assert files_under(project) == before and list((work / "out").iterdir()) == []
