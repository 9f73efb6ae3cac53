"""``farm submit --watch``: render, then render again whenever what the jobs read changes.

Each round is an ordinary submit: jobs whose inputs did not change are reused from the
controller's job cache, so a round costs only the jobs an edit touched.

A file-system event only wakes the watcher; whether a round starts is decided by content.
`ProjectInputs` digests ``farm.toml`` and every asset (the files the jobs read, by the
project's ``[assets]`` rules); a round starts only when that set of digests differs from the
one the last round started with. So a ``touch``, an editor saving identical bytes, a file
matching ``[assets] exclude``, the run's own writes (outputs, ``.farm/``) and the file this
process's own output goes into (``farm submit --watch . > ./log``, ``| tee log``: never an
asset, see `farm.ownoutput`) start nothing.

Only the folders that can hold an asset are watched: the project folder itself and each folder
`farm.assetrules.AssetRules.folder_left_out` keeps, each with its own non-recursive watch
(`_Folders`). The output folder, ``.farm/`` and folders ``[assets] exclude`` leaves out whole are
never watched, however many folders a run writes there. A folder that cannot be watched (the
inotify watch limit, ``fs.inotify.max_user_watches``) is said once, and from then on the watcher
also checks every `POLL_S` seconds, so an edit there is still found.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
import warnings
from collections.abc import Callable, Hashable
from pathlib import Path

import blake3
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from farm.assetrules import AssetRules
from farm.errors import FarmError
from farm.ownoutput import FileId
from farm.plugins import get_media_type
from farm.project import PROJECT_FILE, STATE_DIR, Project, load_project

log = logging.getLogger(__name__)

DEBOUNCE_S = 0.5
SETTLE_LIMIT_S = 3.0  # a file written without pause (a log) must not hold the check off forever
_CHUNK = 1 << 20
POLL_S = 2.0  # how often a watcher missing some folders' watches checks anyway
_LIMITS = (errno.ENOSPC, errno.EMFILE)  # inotify's watch and instance limits (watchdog's errors)
MAX_JOBS_LOOKED_AT = 1_000_000  # jobs whose inputs are looked at before a change is taken as read


class ProjectInputs:
    """Content digests of what a project's jobs read: its ``farm.toml`` and its assets.

    `fingerprint()` returns a hashable value that changes only when the contents (or the set)
    of those files change, or when the project stops (or starts) loading; `rules` is then the
    loaded project's `AssetRules` (None while it does not load). Files in `skip`
    ((st_dev, st_ino) pairs) are left out. A file's digest is computed again only when its
    size, mtime, ctime or inode changed, so a quiet project costs one ``stat`` per file.
    """

    def __init__(self, project_dir: Path | str, output: str | None = None,
                 skip: set[FileId] | None = None) -> None:
        self.root = Path(project_dir)
        self.output = output
        self.skip = skip or set()
        self._digests: dict[str, tuple[tuple[int, int, int, int], bytes]] = {}
        self.rules: AssetRules | None = None  # the asset rules of the last fingerprint(); None: invalid
        self.project: Project | None = None  # the project the last fingerprint() loaded; None: invalid

    def fingerprint(self) -> Hashable:
        try:
            project = load_project(self.root, output=self.output)
        except FarmError as exc:
            self.rules, self.project = None, None
            return ("invalid", str(exc))
        self.rules, self.project = project.rules, project
        files = {PROJECT_FILE, *project.assets()}
        state = []
        for rel in sorted(files):
            digest = self._digest(rel)
            if digest is not None:
                state.append((rel, digest))
        self._digests = {rel: self._digests[rel] for rel, _ in state if rel in self._digests}
        return ("ok", tuple(state))

    def read_by_jobs(self, changed: set[str]) -> bool:
        """Whether a job of the project the last `fingerprint()` loaded reads one of ``changed``
        (relative paths), by the `Job.inputs` its media type's ``split`` gives. True also for
        ``farm.toml`` (the settings), a project that did not load, a job with ``inputs`` None (it
        reads every asset), a split that fails (the round says why) or has more than
        `MAX_JOBS_LOOKED_AT` jobs (a round is then cheaper to start than the answer)."""
        project = self.project
        if project is None or PROJECT_FILE in changed:
            return True
        # jobs of most media types share one inputs tuple: looked at once. Held, not only its id: a
        # job's own tuple freed after its turn leaves its id to the next job's, which was then skipped
        seen: dict[int, object] = {}
        try:
            for count, job in enumerate(get_media_type(project.media_type).split(project)):
                inputs = job.inputs
                if inputs is None or count >= MAX_JOBS_LOOKED_AT:
                    return True
                if id(inputs) not in seen:
                    seen[id(inputs)] = inputs
                    if not changed.isdisjoint(inputs):
                        return True
        except Exception as exc:  # a plugin's split: the round reports it as a run would
            log.debug("cannot list the jobs' inputs: %s: %s", type(exc).__name__, exc)
            return True
        return False

    def _digest(self, rel: str) -> bytes | None:
        path = self.root / rel
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in self.skip or not stat.S_ISREG(st.st_mode):
                return None
            key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            known = self._digests.get(rel)
            if known is not None and known[0] == key:
                return known[1]
            hasher = blake3.blake3()
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    hasher.update(chunk)
        except OSError as exc:  # vanished or unreadable between listing and reading: that is a state too
            return f"unreadable: {exc.strerror}".encode()
        digest = hasher.digest()
        self._digests[rel] = (key, digest)
        return digest


class _Wake(FileSystemEventHandler):
    """Sets `changed` on any event that may have changed a file outside the run's own folders, and
    collects in `moved` the folders created, removed or renamed (their watches may be stale)."""

    def __init__(self, root: Path, ignore: tuple[str, ...]) -> None:
        self.root = root
        self.ignore = ignore
        self.changed = threading.Event()
        self.moved: set[str] = set()  # absolute paths
        self._lock = threading.Lock()

    def take_moved(self) -> set[str]:
        with self._lock:
            moved, self.moved = self.moved, set()
        return moved

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            path = os.fsdecode(raw)
            if event.is_directory and event.event_type in ("created", "deleted", "moved"):
                with self._lock:
                    self.moved.add(path)
            try:
                rel = Path(path).relative_to(self.root).as_posix()
            except ValueError:
                continue
            if rel.split("/", 1)[0].startswith("."):
                continue
            if any(rel == i or rel.startswith(i + "/") for i in self.ignore):
                continue
            self.changed.set()


class _Folders:
    """Watches on the folders that can hold an asset, kept in step with the tree.

    watchdog's recursive watch of the project would also watch the output folder and ``.farm/``
    (one inotify watch per tile column), and it re-registers a folder it is already watching when
    a tree appears faster than it walks it (a RuntimeWarning per folder, listing every watched one):
    the run's own writes did that. So the project folder, and every folder above one that is left
    out, get a watch of their own, and each largest subtree that holds no left-out folder one
    recursive watch (each watch costs watchdog a thread: one per folder would not do for a big
    asset tree). A watch is scheduled
    once, by `sync`, and again only when its folder was removed, renamed or replaced, or a folder
    inside it is now left out (or no longer).
    """

    def __init__(self, observer: Observer | None, handler: _Wake, root: Path) -> None:
        self.observer, self.handler, self.root = observer, handler, root
        #: path -> its watch, and what it was made for: ((dev, ino), recursive)
        self.watched: dict[str, tuple[ObservedWatch, tuple[tuple[int, int], bool]]] = {}
        self.unwatched = 0  # folders the inotify limits left unwatched at the last sync
        self.said = observer is None

    def wanted(self, rules: AssetRules) -> dict[str, tuple[tuple[int, int], bool]]:
        """The watches the folders that can hold an asset need (as `farm.project.list_assets` walks
        them): path -> ((dev, ino), recursive). The project folder is never watched recursively:
        the run makes its output folder and ``.farm/`` in it."""
        found: dict[str, tuple[int, int]] = {}
        holds_left_out = {str(self.root)}  # folders with a left-out folder somewhere beneath
        for folder, dirs, _ in os.walk(self.root):
            try:
                st = os.stat(folder, follow_symlinks=False)
            except OSError:  # gone: its parent's event says so
                dirs[:] = []
                continue
            found[folder] = (st.st_dev, st.st_ino)
            rel = os.path.relpath(folder, self.root).replace(os.sep, "/")
            rel = "" if rel == "." else rel + "/"
            kept = [d for d in dirs if not rules.folder_left_out(rel + d)]
            on_output_path = bool(rel) and (rules.output + "/").startswith(rel)  # the run makes it
            if len(kept) < len(dirs) or on_output_path:
                above = folder  # it, and every folder above it, must not be watched recursively
                while above not in holds_left_out:
                    holds_left_out.add(above)
                    above = os.path.dirname(above)
            dirs[:] = kept
        return {path: (ino, path not in holds_left_out) for path, ino in found.items()
                if path == str(self.root) or os.path.dirname(path) in holds_left_out}

    def sync(self, rules: AssetRules | None) -> bool:
        """Watch the folders `rules` keep, and no others; True if a folder was newly watched (what
        was written in it before that was seen by no watch). None (a project that does not load)
        changes nothing."""
        if self.observer is None or rules is None:
            return False
        wanted = self.wanted(rules)
        moved = self.handler.take_moved()
        for path, (watch, ino) in list(self.watched.items()):
            renamed = any(path == m or path.startswith(m + os.sep) for m in moved)
            if wanted.get(path) != ino or renamed:  # gone, left out, replaced, changed kind, or moved away
                self.observer.unschedule(watch)
                del self.watched[path]
        added, failed = False, []
        for path, ino in wanted.items():
            if path in self.watched:
                continue
            try:
                self.watched[path] = (self.observer.schedule(self.handler, path, recursive=ino[1]), ino)
                added = True
            except OSError as exc:
                if exc.errno in _LIMITS:
                    failed.append(exc)
                # else gone since the walk (ENOENT): the event of its removal wakes the watcher
        self.unwatched = len(failed)
        if failed and not self.said:
            self.said = True
            log.warning("cannot watch %d of the %d project folders (%s; raise fs.inotify.max_user_watches,"
                        " e.g. sysctl fs.inotify.max_user_watches=524288): edits there are found by a check"
                        " every %g s instead", len(failed), len(wanted), failed[0].strerror, POLL_S)
        return added

    def close(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join()


def _observer(handler: _Wake, root: Path) -> _Folders:
    """The watches' keeper; without inotify (its instance limit) one that watches nothing."""
    try:
        observer = Observer()
        observer.start()
    except OSError as exc:
        if exc.errno not in _LIMITS:
            raise
        log.warning("cannot watch the project (%s; raise fs.inotify.max_user_instances): "
                    "checking every %g s instead", exc.strerror, POLL_S)
        return _Folders(None, handler, root)
    return _Folders(observer, handler, root)


NAMED = 3  # changed files a line names; the rest are counted


def changed_files(before: Hashable, after: Hashable) -> list[str] | None:
    """The files (relative paths, sorted) whose digests differ between two `ProjectInputs.fingerprint`
    values; None when either is not a loaded project's (or of another shape)."""
    try:
        (was_kind, was), (now_kind, now) = before, after  # type: ignore[misc]
        if was_kind != "ok" or now_kind != "ok":
            return None
        was, now = dict(was), dict(now)
    except (TypeError, ValueError):
        return None
    return sorted(rel for rel in was.keys() | now.keys() if was.get(rel) != now.get(rel))


def what_changed(before: Hashable, after: Hashable) -> str:
    """What starts a round, in a person's words: ``change in world.xml``, ``changes in a.png (new),
    b.png, c.png and 4 more files``, for two `ProjectInputs.fingerprint` values; a project that
    stopped (or started) loading, or fingerprints of another shape, are said without files."""
    changed = changed_files(before, after)
    if changed is None:  # not both loaded: says whether it loads now
        loads = isinstance(after, tuple) and after[:1] == ("ok",) and isinstance(before, tuple)
        return "the project loads again" if loads else "the project changed"
    if not changed:
        return "the project changed"
    listed = _listed(changed, dict(before[1]), dict(after[1]))  # type: ignore[index]
    return f"change{'s' if len(changed) > 1 else ''} in {listed}"


def _listed(changed: list[str], was: dict[str, bytes], now: dict[str, bytes]) -> str:
    """``a.png (new), b.png, c.png and 4 more files``: a few of ``changed`` named, the rest counted."""
    named = [rel + (" (new)" if rel not in was else " (removed)" if rel not in now else "")
             for rel in changed[:NAMED]]
    if len(changed) == 1:
        return named[0]
    rest = len(changed) - len(named)
    return ", ".join(named[:-1]) + (f", {named[-1]} and {rest} more files" if rest else f" and {named[-1]}")


def unread_change(before: Hashable, after: Hashable, read_by_jobs: Callable[[set[str]], bool]) -> str | None:
    """``notes.txt changed; no job reads it: nothing to render`` when every file that changed between
    two fingerprints is one no job reads (``read_by_jobs``: `ProjectInputs.read_by_jobs`); else None."""
    changed = changed_files(before, after)
    if not changed or read_by_jobs(set(changed)):
        return None
    listed = _listed(changed, dict(before[1]), dict(after[1]))  # type: ignore[index]
    return f"{listed} changed; no job reads {'it' if len(changed) == 1 else 'them'}: nothing to render"


def watch(root: Path, output: str, run_round: Callable[[], None], *, fingerprint: Callable[[], Hashable],
          rules: Callable[[], AssetRules | None] | None = None, stop: threading.Event | None = None,
          debounce: float = DEBOUNCE_S, settle_limit: float = SETTLE_LIMIT_S,
          say: Callable[[str], None] | None = None,
          read_by_jobs: Callable[[set[str]], bool] | None = None) -> int:
    """Call `run_round` now, then again whenever `fingerprint()` changes, until `stop` is set.

    File-system events in the folders that can hold an asset (the project folder and those that
    `rules()` keeps, called after each `fingerprint()`: the `AssetRules` of the project it loaded,
    None if it did not load; by default every folder outside `output` and dot-folders such as
    ``.farm``) wake the watcher; after they settle for `debounce` seconds it compares
    `fingerprint()` with the value taken before the last round (waiting at most `settle_limit`
    seconds for a file that is written without pause) and starts a round only if they differ.
    Folders that cannot be watched (inotify's limits) are logged once as a warning and checked
    every `POLL_S` seconds instead. Before each round after the first, `say` (default: the log, at
    info) gets a line naming what changed (`what_changed`): ``change in world.xml: rendering again``.
    With `read_by_jobs` (`ProjectInputs.read_by_jobs`), a change only to files no job reads starts
    no round (it would render nothing) and is said so (`unread_change`).
    Returns the number of rounds run.
    """
    stop = stop or threading.Event()
    rules = rules or (lambda: AssetRules(output=output.strip("/")))
    wake = _Wake(root.resolve(), (output.strip("/"), STATE_DIR))
    with warnings.catch_warnings():
        # watchdog's recursive watch registers a folder twice when a tree inside it is made faster
        # than it walks it (`mkdir -p a/b/c`) and warns, listing the whole watch group: the same
        # callback replaces itself, nothing is lost (the run's own trees are not watched at all)
        warnings.filterwarnings("ignore", r"Callback with id .* already exists", RuntimeWarning)
        return _watch(root, wake, run_round, fingerprint, rules, stop, debounce, settle_limit,
                      say or log.info, read_by_jobs or (lambda changed: True))


def _watch(root: Path, wake: _Wake, run_round: Callable[[], None], fingerprint: Callable[[], Hashable],
           rules: Callable[[], AssetRules | None], stop: threading.Event, debounce: float,
           settle_limit: float, say: Callable[[str], None], read_by_jobs: Callable[[set[str]], bool]) -> int:
    folders = _observer(wake, root.resolve())

    def check() -> Hashable:
        # a folder watched only now may hold writes no event reported: check again, at most twice
        now = fingerprint()
        for _ in range(2):
            if not folders.sync(rules()):
                return now
            now = fingerprint()
        wake.changed.set()  # folders still appearing: look again once they settle
        return now

    rounds = 0
    try:
        last = check()
        while not stop.is_set():
            rounds += 1
            run_round()
            while not stop.is_set():
                poll_at = time.monotonic() + POLL_S
                while not stop.is_set() and not wake.changed.wait(0.2):
                    if (folders.unwatched or folders.observer is None) and time.monotonic() >= poll_at:
                        break
                settle_until = time.monotonic() + max(settle_limit, debounce)
                while wake.changed.wait(debounce) and time.monotonic() < settle_until:  # let edits settle
                    wake.changed.clear()
                wake.changed.clear()
                if stop.is_set():
                    break
                now = check()
                if now != last:
                    unread = unread_change(last, now, read_by_jobs)
                    say(unread or f"{what_changed(last, now)}: rendering again")
                    last = now
                    if unread is None:
                        break
                    continue
                log.debug("files changed, but nothing a job reads: no round")
    finally:
        folders.close()
    return rounds
