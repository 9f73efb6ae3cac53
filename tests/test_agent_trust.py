"""A real `farm agent` process against a hand-written, hostile controller (security: rogue-controller,
cache-limit, the agent cache at rest). The agent does only what it advertised, in its own folders."""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_trust_helpers import AgentTmp, RogueController, synthetic_project
from conftest import ROOT
from farm_synthetic import payload

from farm.filesync import Manifest, Store, build_manifest
from farm.filesync import manifestfiles
from farm.filesync.store import CacheFull
from farm.project import load_project

SIZE = 16


@pytest.fixture
def agent_tmp() -> Iterator[AgentTmp]:
    tmp = AgentTmp()
    yield tmp
    tmp.close()


@pytest.fixture
def rogue(tmp_path: Path, agent_tmp: AgentTmp) -> Iterator[RogueController]:
    ctl = RogueController(tmp_path)
    yield ctl
    ctl.close()


@pytest.fixture
def honest(tmp_path: Path, rogue: RogueController, agent_tmp: AgentTmp) -> dict:
    """An agent serving the rogue controller, and an honest synthetic project published to it."""
    project = synthetic_project(tmp_path / "honest", f"jobs = 3\noutput_bytes = {SIZE}")
    (tmp_path / "honest" / "asset.txt").write_text("hello")
    rogue.start_agent("--tag", "evil", env=agent_tmp.env)
    return rogue.publish(project, "honest-tree")


def assert_honest_job_works(rogue: RogueController, description: dict, lease: str = "honest-1") -> None:
    key = "job-0000001"
    rogue.send_jobs([rogue.job(lease, key, "honest-run")], {"honest-run": description})
    result = rogue.result(lease)
    assert result["ok"], result.get("error")
    assert [f[0] for f in result["files"]] == [f"{key}.bin"]
    assert result["payloads"] == [payload(key, SIZE)]


def refused(rogue: RogueController, lease: str) -> str:
    result = rogue.result(lease)
    assert not result["ok"] and not result.get("requeue")
    return result["error"]


def test_only_advertised_media_types_are_rendered(rogue, honest):
    assert "evil" in rogue.hello["caps"]  # a tag: advertised as a capability, not as a media type
    for media_type, lease in (("evil", "x1"), ("no-such-type", "x2")):
        rogue.send_jobs([rogue.job(lease, "job-0000001", f"run-{lease}")],
                        {f"run-{lease}": {**honest, "media_type": media_type}})
        assert f"media type {media_type!r} is not one this agent advertised" in refused(rogue, lease)
    assert_honest_job_works(rogue, honest)


PWNED = f"pwned-{uuid.uuid4().hex[:8]}"  # what a key that escaped would leave, unique to this run
HOSTILE_KEYS = [f"../../../../{PWNED}", f"/tmp/{PWNED}", "..", f"a/../../{PWNED}", "a\x00b", "k" * 2000, "",
                "a//b", f"\u202e{PWNED}", f"{PWNED}/"]


def test_job_keys_that_could_name_a_path_outside_are_refused(rogue, honest, agent_tmp, tmp_path):
    jobs = [rogue.job(f"bad{i}", key, "honest-run") for i, key in enumerate(HOSTILE_KEYS)]
    rogue.send_jobs([*jobs, rogue.job("honest-1", "job-0000001", "honest-run")], {"honest-run": honest})
    for i in range(len(HOSTILE_KEYS)):
        assert "job key" in refused(rogue, f"bad{i}")
    assert rogue.result("honest-1")["ok"]
    deps = rogue.job("bad-dep", "job-0000002", "honest-run", deps={"../../x": {"token": 1}})
    rogue.send_jobs([deps, rogue.job("bad-timeout", "job-0000002", "honest-run", timeout=float("nan"))])
    assert "dependency key '../../x'" in refused(rogue, "bad-dep")
    assert "timeout nan" in refused(rogue, "bad-timeout")
    leaked = [*agent_tmp.dir.glob(f"**/*{PWNED}*"), *tmp_path.glob(f"**/*{PWNED}*"),
              *Path("/tmp").glob(f"*{PWNED}*")]
    assert not leaked


CASE_NAME = "../../escaped/name with spaces é #1"  # tests/cases/name-traversal


@pytest.mark.parametrize("project_id", [f"{CASE_NAME}-0123abcd", f"../{PWNED}", f"/tmp/{PWNED}", "..", ".",
                                        "", "a/b", "x\x00y", "p" * 300, "\uff0e\uff0e"])
def test_project_ids_and_names_that_could_name_a_path_are_refused(rogue, honest, agent_tmp, project_id):
    rogue.send_jobs([rogue.job("bad", "job-0000001", project_id)], {project_id: honest})
    assert "project id" in refused(rogue, "bad")
    rogue.send_jobs([rogue.job("bad-name", "job-0000001", "fine-id")],
                    {"fine-id": {**honest, "name": CASE_NAME}})
    assert "project name" in refused(rogue, "bad-name")
    assert_honest_job_works(rogue, honest)
    (scratch,) = agent_tmp.dir.glob("farm-agent-*")
    assert sorted(p.name for p in agent_tmp.dir.iterdir()) == [scratch.name]  # nothing beside the scratch
    assert not list(agent_tmp.dir.glob("**/escaped")) and not list(Path("/tmp").glob(f"*{PWNED}*"))


def test_settings_are_made_by_the_plugins_own_checks_on_the_agent(rogue, honest, tmp_path):
    outside = tmp_path / "outside.log"
    for lease, log in (("abs", str(outside)), ("up", "../../../outside.log")):
        bad = {**honest, "settings": {**honest["settings"], "render_log": log},
               "table": {**honest["table"], "render_log": log}}
        rogue.send_jobs([rogue.job(lease, "job-0000001", f"run-{lease}")], {f"run-{lease}": bad})
        error = refused(rogue, lease)
        assert "[synthetic] render_log" in error and ("leads outside" in error or "absolute" in error), error
    # settings the plugin did not make from the table are the controller's word only: ignored
    forged = {**honest, "settings": {**honest["settings"], "render_log": str(outside)}}
    assert_honest_job_works(rogue, forged, "forged")
    assert not outside.exists()


def test_a_project_without_published_files_is_refused(rogue, honest):
    for lease, assets in (("none", None), ("empty", {}), ("odd", {"tree": 5})):
        rogue.send_jobs([rogue.job(lease, "job-0000001", f"run-{lease}")],
                        {f"run-{lease}": {**honest, "root": "/", "assets": assets}})
        assert "did not publish the project's files" in refused(rogue, lease)
    assert_honest_job_works(rogue, honest)


def test_malformed_project_descriptions_fail_their_jobs(rogue, honest):
    cases = {"not-a-map": 7, "no-settings": {**honest, "settings": None},
             "bad-include": {**honest, "include": [1]}, "bool-attempts": {**honest, "max_attempts": True}}
    for lease, description in cases.items():
        rogue.send_jobs([rogue.job(lease, "job-0000001", f"run-{lease}")], {f"run-{lease}": description})
        assert "refused by the agent" in refused(rogue, lease)
    assert_honest_job_works(rogue, honest)


MiB = 2**20


def cache_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file() and "index.sqlite" not in p.name)


def test_the_cache_limit_holds_against_a_controller_publishing_more(tmp_path, rogue, agent_tmp):
    cache = tmp_path / "agent-cache"
    rogue.start_agent("--cache-size", str(10 / 1024), cache=cache, env=agent_tmp.env)  # 10 MiB
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "huge.bin", "wb") as out:  # 200 MiB, sparse
        out.truncate(200 * MiB)
    description = rogue.publish(synthetic_project(big, "jobs = 1"), "big-tree")
    rogue.send_jobs([rogue.job("big", "job-0000000", "big-run")], {"big-run": description})
    result = rogue.result("big")  # too big for this node: handed back (the node's want), not failed
    assert not result["ok"] and result.get("requeue")
    error = result["error"]
    assert "this node lacks the resources for this run: CacheFull" in error
    assert "200.0 MiB" in error and "limit of 10.0 MiB" in error
    assert cache_bytes(cache) < 10 * MiB
    # projects that fit one at a time take turns: the least recently used makes room
    for i in range(3):
        folder = tmp_path / f"fits{i}"
        folder.mkdir()
        (folder / "data.bin").write_bytes(os.urandom(6 * MiB))
        fits = rogue.publish(synthetic_project(folder, f"jobs = 1\noutput_bytes = {SIZE}"), f"fits-{i}")
        rogue.send_jobs([rogue.job(f"fits{i}", "job-0000000", f"fits-run-{i}")], {f"fits-run-{i}": fits})
        assert rogue.result(f"fits{i}")["ok"]
        assert cache_bytes(cache) <= 10 * MiB


def test_the_agent_cache_is_private_at_rest(tmp_path, rogue, agent_tmp):
    cache = tmp_path / "agent-cache"
    rogue.start_agent(cache=cache, env=agent_tmp.env)
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "tool.sh").write_text("#!/bin/sh\n")
    (folder / "tool.sh").chmod(0o755)
    (folder / "data.txt").write_text("data")
    description = rogue.publish(synthetic_project(folder, f"jobs = 1\noutput_bytes = {SIZE}"), "p-tree")
    rogue.send_jobs([rogue.job("p", "job-0000000", "p-run")], {"p-run": description})
    assert rogue.result("p")["ok"]
    seen = {"dirs": 0, "files": 0}
    for path in [cache, *cache.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert not mode & 0o077, f"{path} is {oct(mode)}"
        seen["dirs" if path.is_dir() else "files"] += 1
    assert seen["files"] >= 4  # index, manifest, and the three assets
    modes = sorted(stat.S_IMODE(p.stat().st_mode) for p in (cache / "files").rglob("*") if p.is_file())
    assert modes == [0o400, 0o400, 0o500]


def test_a_project_withdrawn_while_its_files_arrive_leaves_the_agent_up(rogue, honest):
    rogue.send_jobs([rogue.job("first", "job-0000001", "flip")], {"flip": honest})
    rogue.send_jobs([rogue.job("second", "job-0000002", "flip")], {"flip": {**honest, "media_type": "evil"}})
    assert "not one this agent advertised" in refused(rogue, "second")
    first = rogue.result("first")
    assert first["ok"] or "advertised" in first["error"] or "withdrew" in first["error"]
    assert_honest_job_works(rogue, honest)


def test_a_ready_project_described_again_as_unacceptable_fails_its_queued_jobs(rogue, honest):
    slow = {**honest, "table": {**honest["table"], "sleep": 0.5}}
    rogue.send_jobs([rogue.job("warm", "job-0000000", "slow")], {"slow": slow})
    assert rogue.result("warm")["ok"]  # its files are here now; slow jobs go to the worker one by one
    rogue.send_jobs([rogue.job(f"q{i}", f"job-000000{i}", "slow") for i in range(4)])
    rogue.send_jobs([], {"slow": {**honest, "media_type": "evil"}})
    results = [rogue.result(f"q{i}") for i in range(4)]
    assert any("not one this agent advertised" in (r.get("error") or "") for r in results)
    assert_honest_job_works(rogue, honest, "after")


@pytest.mark.parametrize("style", ["/etc/hostname", "../../../etc/hostname"])
def test_a_map_style_outside_the_project_is_refused_by_the_maptiles_checks_on_the_agent(
        tmp_path, rogue, agent_tmp, style):
    pytest.importorskip("mapnik")
    folder = tmp_path / "world_map"
    shutil.copytree(ROOT / "sample_projects" / "world_map", folder,
                    ignore=shutil.ignore_patterns("output", ".farm"))
    rogue.start_agent(env=agent_tmp.env)
    if "maptiles" not in rogue.hello["caps"]:
        pytest.skip("this node cannot render maptiles")
    description = rogue.publish(load_project(folder), "map-tree")
    forged = {**description, "table": {**description["table"], "style": style}}
    rogue.send_jobs([rogue.job("map", "0/0/0", "map-run", params={"z": 0, "x": 0, "y": 0, "size": 1})],
                    {"map-run": forged})
    error = refused(rogue, "map")
    assert "[maptiles] style" in error and ("absolute" in error or "leads outside" in error), error


def test_synthetic_inputs_outside_the_project_are_refused_so_no_private_file_returns(rogue, honest, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "job-0000001.txt").write_text("private")
    for lease, inputs in (("abs", str(secret)), ("up", "../../../../../../../" + str(secret))):
        forged = {**honest, "table": {**honest["table"], "inputs": inputs}}
        rogue.send_jobs([rogue.job(lease, "job-0000001", f"run-{lease}")], {f"run-{lease}": forged})
        error = refused(rogue, lease)
        assert "[synthetic] inputs" in error, error
    assert all(b"private" not in p for r in rogue.results.values() for p in r.get("payloads", []))


# -- the cache limit, at the store ----------------------------------------------------------


def random_tree(folder: Path, sizes: dict[str, int]) -> Manifest:
    folder.mkdir(parents=True)
    for name, size in sizes.items():
        (folder / name).write_bytes(os.urandom(size))
    return build_manifest(folder)


def test_a_tree_over_the_limit_fetches_nothing(tmp_path):
    manifest = random_tree(tmp_path / "t", {"a": 3 * MiB, "b": 3 * MiB})
    with Store(tmp_path / "cache", max_bytes=5 * MiB) as store:
        with pytest.raises(CacheFull, match=r"need 6.0 MiB, more than this cache's limit of 5.0 MiB"):
            store.reserve(manifest.unique_files(), 6 * MiB)
        assert store.size() == 0


def test_over_the_limit_dead_sessions_partials_go_but_this_trees_stay(tmp_path):
    manifest = random_tree(tmp_path / "t", {"a": 4 * MiB})
    [entry] = manifest.unique_files()
    with Store(tmp_path / "cache", max_bytes=10 * MiB) as dead:
        session = dead.session_dir()
        (session / ("ab" * 32 + ".part")).write_bytes(os.urandom(8 * MiB))  # another tree's, abandoned
        (session / f"{entry.digest.hex()}.part").write_bytes(os.urandom(MiB))  # this tree's: resumable
    with Store(tmp_path / "cache", max_bytes=10 * MiB) as store:
        store.reserve([entry], entry.size)
        left = sorted(p.name for p in (tmp_path / "cache" / "partial").rglob("*.part"))
        assert left == [f"{entry.digest.hex()}.part"]


def test_a_store_keeps_a_bounded_number_of_manifests(tmp_path, monkeypatch):
    monkeypatch.setattr(manifestfiles, "MAX_MANIFESTS", 3)
    with Store(tmp_path / "cache") as store:
        for i in range(6):
            store.save_manifest(random_tree(tmp_path / f"t{i}", {"f": 10 + i}))
        assert len(list((tmp_path / "cache" / "manifests").iterdir())) == 3


def test_a_damaged_index_is_set_aside_with_its_files_and_the_cache_starts_empty(tmp_path, caplog):
    """A cache is there to lose: an index that is no database any more must not stop an agent."""
    root = tmp_path / "cache"
    with Store(root) as store:
        store.save_manifest(random_tree(tmp_path / "t", {"f": 10}))
    (root / "files" / "ab").mkdir(exist_ok=True)
    (root / "files" / "ab" / "stale").write_bytes(b"x")
    (root / "index.sqlite").write_bytes(b"not a database at all" * 100)
    with caplog.at_level("WARNING", logger="farm.filesync.store"), Store(root) as store:
        assert store.tree_manifest("anything") is None  # the index works again
    assert any("damaged" in r.getMessage() for r in caplog.records)
    assert [p.name.startswith("index.sqlite.damaged-") for p in root.iterdir()].count(True) == 1
    assert not (root / "files" / "ab" / "stale").exists() and not list((root / "manifests").iterdir())


def test_pruning_manifests_leaves_another_processs_write_in_flight_alone(tmp_path, monkeypatch):
    """Agents share one cache: a sibling's half-written manifest is not a manifest to prune."""
    monkeypatch.setattr(manifestfiles, "MAX_MANIFESTS", 2)
    with Store(tmp_path / "cache") as store:
        in_flight = tmp_path / "cache" / "manifests" / ".abc.999-0000.tmp"
        in_flight.write_bytes(b"half a manifest")
        os.utime(in_flight, ns=(0, 0))  # the oldest entry of all
        for i in range(4):
            store.save_manifest(random_tree(tmp_path / f"t{i}", {"f": 10 + i}))
        names = sorted(p.name for p in (tmp_path / "cache" / "manifests").iterdir())
        assert in_flight.name in names and len(names) == 3


def test_a_cache_an_older_farm_left_open_is_made_private_and_a_foreign_folder_is_not_touched(tmp_path):
    old = tmp_path / "old-cache"
    Store(old).close()
    for path in (old, old / "files", old / "manifests"):
        path.chmod(0o755)
    (old / "index.sqlite").chmod(0o644)
    Store(old).close()
    assert {stat.S_IMODE(p.stat().st_mode) for p in (old, old / "files", old / "manifests")} == {0o700}
    assert stat.S_IMODE((old / "index.sqlite").stat().st_mode) == 0o600
    foreign = tmp_path / "home"
    foreign.mkdir(mode=0o755)
    foreign.chmod(0o755)
    Store(foreign).close()
    assert stat.S_IMODE(foreign.stat().st_mode) == 0o755
    assert stat.S_IMODE((foreign / "files").stat().st_mode) == 0o700
