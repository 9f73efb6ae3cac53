"""Reading a submitted project off the controller's loop, within bounds.

A SUBMIT names a folder; reading it (TOML, the media type's `configure`, listing and
hashing the assets) grows with what the submitter put there. It runs in one worker
thread, so the loop keeps serving agents and other clients, and it is bounded: the size
and nesting of `farm.toml`, the number and total size of the assets, and the time. A
path-based submit (the shared-filesystem form) is refused unless the folder belongs to
the controller's own user, because the controller reads the project and writes its
outputs with its own rights; others upload (`farm submit --controller`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.errors import FarmError, ProjectError
from farm.filesync import HashCache, Manifest, ManifestError, SyncError, build_manifest
from farm.filesync.limits import GiB, Limits, MiB
from farm.linkcheck import refuse_links
from farm.mediatype import MediaType
from farm.paths import unwritable
from farm.plugins import get_media_type
from farm.project import PROJECT_FILE, Project, load_project
from farm.tomltext import MAX_DEPTH, path_key, too_deep_path

log = logging.getLogger(__name__)

NAME_MAX = 255
PATH_MAX = 4096
UPLOAD_HINT = "upload it instead: farm submit --controller URL DIR"


@dataclass(frozen=True)
class IntakeLimits:
    """Bounds on one submitted project, checked before and while it is read."""

    max_toml_bytes: int = 1 * MiB
    max_depth: int = MAX_DEPTH  # nesting of tables and arrays in the settings, as in farm.toml
    max_files: int = 100_000
    max_total_bytes: int = 16 * GiB  # assets, summed before any byte is hashed
    max_seconds: float = 600.0
    max_pending: int = 16  # submits being read at once, all peers together
    max_pending_per_peer: int = 2


DEFAULT_INTAKE_LIMITS = IntakeLimits()


class IntakeError(FarmError):
    """A submitted project was refused before or while it was read."""


@dataclass
class Prepared:
    """A project read and hashed, ready for the loop to start its run."""

    project: Project
    media: MediaType
    manifest: Manifest


@dataclass
class Intake:
    """One submit being read: who asked, and what happens once it is read."""

    identity: bytes
    then: Callable[[Prepared], None]
    result: Prepared | None = None
    error: str | None = None


class IntakeQueue:
    """Reads projects in a worker thread; the loop collects the outcomes with `finished`."""

    def __init__(self, hashes: HashCache, limits: IntakeLimits = DEFAULT_INTAKE_LIMITS) -> None:
        self.hashes = hashes
        self.limits = limits
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="farm-intake")
        self._done: queue.Queue[Intake] = queue.Queue()
        self._pending: dict[bytes, int] = {}

    def busy(self, identity: bytes) -> str | None:
        """Why a new submit from ``identity`` cannot be taken now, or None."""
        if sum(self._pending.values()) >= self.limits.max_pending:
            return "the controller is reading too many projects at once; try again shortly"
        if self._pending.get(identity, 0) >= self.limits.max_pending_per_peer:
            return "your earlier submits are still being read; wait for their answers"
        return None

    def read(self, identity: bytes, root: Any, output: Any, *, uploaded: bool,
             then: Callable[[Prepared], None], facts: Any = None, shown_as: Any = None) -> None:
        """Read the project at ``root`` in the worker; ``then(prepared)`` runs on the loop (via `finished`).

        ``shown_as``: for an upload, the submitter's own project folder (as its SUBMIT named it): an
        error names that instead of ``root``, our upload folder (see `as_submitted`).
        """
        self._pending[identity] = self._pending.get(identity, 0) + 1
        intake = Intake(identity, then)

        def work() -> None:
            try:
                intake.result = prepare(root, output, uploaded=uploaded, hashes=self.hashes,
                                        limits=self.limits, facts=facts)
            except FarmError as exc:  # a farm.toml nested too deeply too (`farm.tomltext`)
                intake.error = as_submitted(str(exc), root, shown_as) if uploaded else str(exc)
            except Exception as exc:  # whatever a hostile folder provokes is an answer, never a crash
                log.warning("reading a submitted project failed: %s: %s", type(exc).__name__, exc)
                error = f"cannot read the project: {type(exc).__name__}: {exc}"
                intake.error = as_submitted(error, root, shown_as) if uploaded else error
            finally:
                self._done.put(intake)

        self._pool.submit(work)

    def reading_for(self) -> set[bytes]:
        """The peers whose submits are being read (each told the outcome once `finished`)."""
        return set(self._pending)

    def finished(self) -> list[Intake]:
        """Submits read since the last call (their `result` or `error` set), on the loop's thread."""
        out = []
        while True:
            try:
                intake = self._done.get_nowait()
            except queue.Empty:
                return out
            left = self._pending.get(intake.identity, 1) - 1
            if left:
                self._pending[intake.identity] = left
            else:
                self._pending.pop(intake.identity, None)
            out.append(intake)

    def close(self) -> None:
        """Stop taking work; a project being hashed finishes on its own (bounded by the limits)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def prepare(root: Any, output: Any, *, uploaded: bool, hashes: HashCache | None,
            limits: IntakeLimits = DEFAULT_INTAKE_LIMITS, facts: Any = None) -> Prepared:
    """Check, load and hash a project; raises `FarmError` with the reason (and place) it was refused.

    ``facts``: the renderer facts the submitter sent (`Project.facts`), checked by the media type.
    """
    deadline = time.monotonic() + limits.max_seconds
    folder = check_path_text(root, "project folder")
    if output is not None:
        check_path_text(output, "output folder")
    if not os.path.isabs(folder):  # relative to what? never to the controller's own working folder
        raise IntakeError(f"the project folder {folder[:200]!r} must be an absolute path")
    check_project_file(folder, limits)
    if not uploaded:
        check_owned(folder)
    if facts is not None:
        check_depth(facts, limits.max_depth, "the renderer facts sent with the project")
    # the renderer checks ran where it was submitted; what they found comes as facts
    project = load_project(folder, output=output, renderer_checks=False, facts=facts)
    if not uploaded:  # an upload's outputs land in our own folder, and are downloaded with the same check
        check_output(project.root, project.output)
        refuse_links(project.root, project.output, "a project's output folder", deadline=deadline)
    check_depth(project.settings, limits.max_depth, f"{project.file}: [{project.media_type}]")
    media = get_media_type(project.media_type)
    assets = []
    for rel in project.assets():
        assets.append(rel)
        if len(assets) > limits.max_files:
            raise IntakeError(f"{project.root} holds more than {limits.max_files} asset files (the limit); "
                              "narrow [assets] include or exclude")
        if time.monotonic() > deadline:
            raise IntakeError(f"{project.root}: listing its assets took over {limits.max_seconds:g}s")
    try:
        manifest = build_manifest(project.root, assets, hash_cache=hashes, deadline=deadline,
                                  limits=Limits(max_files=limits.max_files, max_total_size=limits.max_total_bytes))
    except SyncError as exc:  # a fifo, a link loop or out: which project, and how to leave it out
        if isinstance(exc, ManifestError):  # a limit: it names the project and says what to do
            raise
        raise IntakeError(f"{project.root}: {exc} (leave it out of the assets: farm.toml's [assets] "
                          "exclude)") from None
    return Prepared(project, media, manifest)


def as_submitted(message: str, folder: Any, submitted: Any) -> str:
    """An error about an uploaded project, naming the submitter's folder instead of ours.

    The upload folder is under the controller's state folder: its path means nothing to the
    submitter (who must find line 4 of *their* farm.toml) and is not theirs to know. ``submitted``
    is the root the SUBMIT named, untrusted but only ever shown back to the peer that sent it;
    text that could not be a path is replaced by a neutral name.
    """
    try:
        shown = check_path_text(submitted, "project folder")
    except IntakeError:
        shown = "<your project>"
    return path_replaced(message, folder, shown)


def path_replaced(message: str, folder: Any, shown: str) -> str:
    """``message`` with every spelling of ``folder`` (as given, absolute, symlinks resolved) as ``shown``."""
    ours = {str(folder), os.path.realpath(str(folder)), os.path.abspath(str(folder))}
    for path in sorted(ours, key=len, reverse=True):  # a longer spelling before its prefix
        message = message.replace(path, shown)
    return message


def check_path_text(value: Any, what: str) -> str:
    """A path from the wire as text, refused if it could never name a file (NUL, over-long names)."""
    if not isinstance(value, str) or not value:
        raise IntakeError(f"the {what} must be a non-empty string")
    if "\x00" in value:
        raise IntakeError(f"the {what} {value[:200]!r} contains a NUL byte")
    encoded = os.fsencode(value)
    if len(encoded) > PATH_MAX:
        raise IntakeError(f"the {what} is {len(encoded)} bytes long, more than {PATH_MAX}")
    for part in value.split("/"):
        if len(os.fsencode(part)) > NAME_MAX:
            raise IntakeError(f"the {what} has a component of {len(os.fsencode(part))} bytes, "
                              f"more than {NAME_MAX}: {part[:40]!r}...")
    return value


@dataclass(frozen=True)
class Refusing:
    """Who refuses a folder, in its words: the controller (`check_owned`), or `farm submit` running an
    embedded farm, which makes the project's ``.farm/`` (farm.embedded)."""

    user: str = "the controller's user"
    refuser: str = "the controller"
    hint: str = UPLOAD_HINT


def check_owned(root: str, who: Refusing = Refusing()) -> None:
    """Refuse a project folder the controller's user does not own, or that others could change under it.

    Its real path must lead through folders owned by this user or root that nobody else
    may write to (sticky ones like /tmp excepted), and it must be this user's own.
    """
    uid = os.geteuid()
    real = os.path.realpath(root)
    try:
        st = os.lstat(real)
    except OSError as exc:
        raise IntakeError(f"project folder {root} cannot be read: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise IntakeError(f"project folder {root} is not a folder")
    parent = os.path.dirname(real)
    while True:
        _check_trusted(parent, os.lstat(parent), uid, root, sticky_ok=True, who=who)
        if parent == "/":
            break
        parent = os.path.dirname(parent)
    _check_trusted(real, st, uid, root, sticky_ok=False, mine=True, who=who)


def check_output(root: Path, output: str, who: Refusing = Refusing()) -> None:
    """Refuse an output folder (relative to ``root``) of which an existing part is a symlink or not
    ours, or which cannot be written; ``who`` refuses, and says what to do instead."""
    uid = os.geteuid()
    current = str(root)
    for part in output.split("/"):
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):  # to be made (`unwritable` says if it can be)
            break
        if stat.S_ISLNK(st.st_mode):
            raise IntakeError(f"the output folder {current} is a symlink: {who.refuser} will not write "
                              f"through it; {who.hint}")
        _check_trusted(current, st, uid, str(root), sticky_ok=False, mine=True, who=who)
    why = unwritable(root, output)  # found now, not when the first job's outputs are collated
    if why is not None:
        raise IntakeError(why)


def _check_trusted(path: str, st: os.stat_result, uid: int, root: str, *, sticky_ok: bool,
                   mine: bool = False, who: Refusing = Refusing()) -> None:
    owners = (uid,) if mine else (uid, 0)
    if st.st_uid not in owners:
        raise IntakeError(f"{path} belongs to user {st.st_uid}, not to {who.user} ({uid}), so {who.refuser} "
                          f"will not read {root} or write its outputs with its own rights; {who.hint}")
    writable = st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != os.getegid())
    if writable and not (sticky_ok and st.st_mode & stat.S_ISVTX):
        raise IntakeError(f"{path} may be changed by other users (mode {stat.S_IMODE(st.st_mode):o}), so "
                          f"{who.refuser} will not read {root} or write its outputs there; {who.hint}")


def check_project_file(root: str, limits: IntakeLimits) -> None:
    """Refuse a `farm.toml` that is not a plain file or is over the size limit, before parsing it."""
    path = os.path.join(os.path.realpath(root), PROJECT_FILE)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return  # load_project says what is missing, with its place
    except OSError as exc:
        raise ProjectError(f"cannot read it: {exc.strerror}", file=path) from None
    if not stat.S_ISREG(st.st_mode):
        raise ProjectError("not a regular file", file=path)
    if st.st_size > limits.max_toml_bytes:
        raise ProjectError(f"{st.st_size} bytes is over the limit of {limits.max_toml_bytes} for a project file",
                           file=path)


def check_depth(value: Any, limit: int, where: str) -> None:
    """Refuse data nested deeper than ``limit`` (it must travel as msgpack and be read back);
    `farm.tomltext.too_deep_path` walks it, as it walks every farm.toml."""
    path = too_deep_path(value, limit)
    if path is not None:
        key = path_key(path)
        at = f" (at {key})" if key else ""
        raise ProjectError(f"{where}: settings nest more than {limit} levels deep{at}")
