"""The agent's content-addressed cache: whole files addressed by digest, indexed down to blocks.

Layout under the cache folder (shared by every project, and by agents on one host)::

    files/ab/<digest>      complete, verified files, read-only; job folders hard-link them
    partial/<session>/     files being assembled by one live Store (flock on .lock);
                           a dead session's partials are adopted and resumed
    manifests/<id>         manifests seen, so an unchanged tree re-syncs in one exchange
    index.sqlite           files (size, quick-check stat, last use), blocks -> file, trees

The cache is private to its owner at rest: folders 0700, files owner-only (0400, or 0500
for executables; read-only so a job cannot write through its link), the index 0600.

A stored file is used only while its size, mtime and inode still match what was
recorded when it was verified; otherwise it is dropped and fetched again. Blocks reused
from stored files are hashed again before use (see `farm.filesync.assembly`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from farm.filesync.assembly import Assembly
from farm.filesync.errors import SyncError
from farm.filesync.hashing import block_length, hash_fd
from farm.filesync.limits import GiB
from farm.filesync.manifest import FileEntry, Manifest
from farm.filesync.manifestfiles import ManifestFiles
from farm.filesync.materialize import MaterializeStats, materialize
from farm.filesync.partials import PartialSessions
from farm.filesync.placement import spread_subfolders
from farm.paths import cache_dir
from farm.sqlitewal import immediate, switch_to_wal

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 * GiB
TOUCH_EVERY_S = 60.0  # LRU resolution: enough to tell a tree in use from one that is not

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    digest BLOB PRIMARY KEY, size INTEGER NOT NULL, block_size INTEGER NOT NULL, mode INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ino INTEGER NOT NULL, used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_used ON files(used);
CREATE TABLE IF NOT EXISTS blocks (hash BLOB NOT NULL, digest BLOB NOT NULL, idx INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS blocks_hash ON blocks(hash);
CREATE INDEX IF NOT EXISTS blocks_digest ON blocks(digest);
CREATE TABLE IF NOT EXISTS trees (key TEXT PRIMARY KEY, manifest TEXT NOT NULL);
"""


def _stat_if_content(path: str, entry: FileEntry) -> os.stat_result | None:
    """The stat of ``path`` if it holds exactly ``entry``'s content (hashed in full), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_size == entry.size and hash_fd(fd, entry.size, entry.block_size) == entry.hashes:
            return st
    except OSError:
        pass
    finally:
        os.close(fd)
    return None


class CacheFull(SyncError):
    """What a sync needs cannot fit under the cache's size limit."""


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/farm``, else ``~/.cache/farm`` (`farm.paths.cache_dir`)."""
    return cache_dir()


class Store(PartialSessions):
    """A content-addressed file cache with a size limit and least-recently-used eviction.

    Safe to share between threads (one SQLite connection each) and between processes
    on one host (SQLite locking; files are renamed into place atomically).
    """

    def __init__(self, root: Path | str | None = None, *, max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.max_bytes = max_bytes
        self.files_dir = self.root / "files"
        self.partial_root = self.root / "partial"
        self.manifests_dir = self.root / "manifests"
        if not self.root.exists() or (self.root / "index.sqlite").exists():  # never tighten a folder not ours
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)  # also when an older farm made it 0755
        for folder in (self.files_dir, self.partial_root, self.manifests_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        # partial files are made in a session folder under partial/, the fan-out folders
        # under files/: spread both away from the crowded block groups of a busy parent
        spread_subfolders(self.partial_root)
        spread_subfolders(self.files_dir)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.RLock()
        self._pending: list[tuple[FileEntry, os.stat_result]] = []
        self._pins: Counter[bytes] = Counter()
        self._session: Path | None = None
        self._session_fd: int | None = None
        self._fanout: set[str] = set()  # files/ab/ folders known to exist
        self.manifests = ManifestFiles(self.manifests_dir)
        self._touched: dict[bytes, float] = {}  # digest -> when this Store last marked it used
        self._open_index()

    # -- database -------------------------------------------------------------------

    def _open_index(self) -> None:
        """Create the index's tables. An index that is no database any more (a crash or a disk
        fault mid-write) is a cache's to lose: it is set aside with the files it indexed, said
        in the log, and the cache starts empty; anything else wrong with it raises."""
        try:
            self._db().executescript(_SCHEMA)
            return
        except sqlite3.OperationalError:
            raise  # locked, read-only, I/O: not the index's content
        except sqlite3.DatabaseError:
            pass
        self._close_connections()
        time.sleep(0.5)  # another agent may be creating it this moment: damaged only if it stays so
        try:
            self._db().executescript(_SCHEMA)
            return
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            damaged = exc
        self._close_connections()
        aside = self.root / f"index.sqlite.damaged-{int(time.time())}"
        os.replace(self.root / "index.sqlite", aside)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / f"index.sqlite{suffix}")
        for folder in (self.files_dir, self.manifests_dir):  # partial/ holds live sessions: flock-guarded
            shutil.rmtree(folder, ignore_errors=True)  # unindexed now: never found, never evicted
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        log.warning("the file cache's index %s was damaged (%s): set aside as %s; the cache starts empty",
                    self.root / "index.sqlite", damaged, aside.name)
        self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # one connection per thread; check_same_thread=False only so close() works from any thread
            # Never open and close the database file ourselves once it exists: closing any
            # descriptor of it drops every POSIX lock this process holds on it, the locks of
            # other threads' SQLite connections too (then a WAL's -shm can be removed under
            # them: "disk I/O error"). Create it private if missing; chmod by path otherwise.
            index = self.root / "index.sqlite"
            try:
                os.close(os.open(index, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            except FileExistsError:
                os.chmod(index, 0o600)  # also one an older farm made 0644
            conn = sqlite3.connect(index, timeout=60, isolation_level=None, check_same_thread=False)
            switch_to_wal(conn, index)  # agents on one host open it at once
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _txn(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db())

    # -- files ----------------------------------------------------------------------

    def file_path(self, digest: bytes) -> Path:
        return Path(self._file(digest))

    def _file(self, digest: bytes) -> str:  # plain strings: this runs per file of every sync
        name = digest.hex()
        return f"{self.files_dir}/{name[:2]}/{name}"

    def check(self, digests: Iterable[bytes], *, touch: bool = True) -> dict[bytes, Path]:
        """The stored files among ``digests`` that pass the quick check, by digest.

        A file whose size, mtime or inode moved since it was verified (a job wrote
        through its hard link, someone edited the cache) is dropped, so it is fetched again.
        """
        return {digest: Path(path) for digest, (path, _) in self.check_stat(digests, touch=touch).items()}

    def check_stat(
        self, digests: Iterable[bytes], *, touch: bool = True
    ) -> dict[bytes, tuple[str, os.stat_result]]:
        """`check`, with the stat of each good file (taken for the check anyway)."""
        self.flush()
        wanted = list(dict.fromkeys(digests))
        rows = []
        db = self._db()
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            marks = ",".join("?" * len(part))
            rows += db.execute(
                f"SELECT digest, size, mtime_ns, ino FROM files WHERE digest IN ({marks})", part
            ).fetchall()
        good: dict[bytes, tuple[str, os.stat_result]] = {}
        for digest, size, mtime_ns, ino in rows:
            path = self._file(digest)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is not None and (st.st_size, st.st_mtime_ns, st.st_ino) == (size, mtime_ns, ino):
                good[bytes(digest)] = (path, st)
            else:
                log.info("cache file %s was modified or removed; it will be fetched again", path)
                self._drop(bytes(digest))
        if touch and good:
            self.touch(good)
        return good

    @staticmethod
    def file_mode(entry: FileEntry) -> int:
        """The mode of a stored file: read-only, so a job cannot write through its link."""
        return 0o500 if entry.executable else 0o400

    def assembly(self, files: Iterable[FileEntry]) -> Assembly:
        """An `Assembly` of ``files`` for this cache: in its session folder, reusing the blocks
        it holds, each file finished read-only with its mtime, ready for `add`."""
        return Assembly(files, self.session_dir(), [self], mode_for=self.file_mode)

    def add(self, entry: FileEntry, partial: Path | str, st: os.stat_result) -> str:
        """Move a fully verified partial file, finished by `assembly` (``st`` is its stat),
        into the cache; returns its cache path."""
        target = self._file(entry.digest)
        fanout = os.path.dirname(target)
        if fanout not in self._fanout:
            os.makedirs(fanout, mode=0o700, exist_ok=True)
            self._fanout.add(fanout)
        kept = None
        if os.path.exists(target):  # another agent on this host stored it meanwhile: keep its file
            if entry.digest in self.check([entry.digest], touch=False):
                os.unlink(partial)
                return target
            kept = _stat_if_content(target, entry)  # stored but not yet recorded by its owner
        if kept is not None:
            os.unlink(partial)
            st = kept
        else:
            os.replace(partial, target)  # keeps the inode, size and mtime that ``st`` recorded
        with self._lock:
            self._pending.append((entry, st))
            flush = len(self._pending) >= 256
        if flush:
            self.flush()
        return target

    def flush(self) -> None:
        """Write recorded additions to the index (batched: one transaction for many files)."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        pending = list({e.digest: (e, st) for e, st in pending}.values())  # one row set per file
        now = time.time()
        with self._txn() as db:  # three statements for the whole batch, not three per file
            db.executemany("DELETE FROM blocks WHERE digest = ?", ((e.digest,) for e, _ in pending))
            db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (e.digest, e.size, e.block_size, st.st_mode & 0o777, st.st_mtime_ns, st.st_ino, now)
                    for e, st in pending
                ),
            )
            db.executemany(
                "INSERT INTO blocks VALUES (?, ?, ?)",
                ((h, e.digest, i) for e, _ in pending for i, h, _, _ in e.blocks()),
            )

    def find_blocks(self, hashes: Sequence[bytes]) -> dict[bytes, list[tuple[str, int, int]]]:
        """Where blocks with these hashes may be read: (file, offset, length); callers verify."""
        self.flush()
        found: dict[bytes, list[tuple[str, int, int]]] = {}
        db = self._db()
        for start in range(0, len(hashes), 500):
            part = hashes[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = db.execute(
                "SELECT b.hash, f.digest, b.idx, f.size, f.block_size FROM blocks b "
                f"JOIN files f ON f.digest = b.digest WHERE b.hash IN ({marks})",
                part,
            ).fetchall()
            for h, d, idx, size, bs in rows:
                places = found.setdefault(bytes(h), [])
                if len(places) < 4:
                    places.append((self._file(bytes(d)), idx * bs, block_length(size, bs, idx)))
        return found

    def touch(self, digests: Iterable[bytes]) -> None:
        """Mark files used now (for LRU eviction); a file touched in the last minute is skipped,
        so an unchanged re-sync writes nothing to the index."""
        now = time.time()
        with self._lock:
            stale = [d for d in digests if now - self._touched.get(d, 0.0) > TOUCH_EVERY_S]
            for d in stale:
                self._touched[d] = now
        if stale:
            with self._txn() as db:
                db.executemany("UPDATE files SET used = ? WHERE digest = ?", ((now, d) for d in stale))

    def size(self) -> int:
        self.flush()
        return int(self._db().execute("SELECT COALESCE(SUM(size), 0) FROM files").fetchone()[0])

    def __contains__(self, digest: bytes) -> bool:
        return bool(self.check([digest], touch=False))

    def _drop(self, digest: bytes) -> None:
        with self._txn() as db:
            db.execute("DELETE FROM files WHERE digest = ?", (digest,))
            db.execute("DELETE FROM blocks WHERE digest = ?", (digest,))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.file_path(digest))

    def verify(self, digest: bytes) -> bool:
        """Hash a stored file in full; drop it if it no longer matches. For scrubs after a crash."""
        self.flush()
        row = self._db().execute("SELECT size, block_size FROM files WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            return False
        blocks = (
            self._db().execute("SELECT hash FROM blocks WHERE digest = ? ORDER BY idx", (digest,)).fetchall()
        )
        expected = b"".join(bytes(h) for (h,) in blocks)
        try:
            fd = os.open(self.file_path(digest), os.O_RDONLY | os.O_CLOEXEC)
            try:
                ok = hash_fd(fd, row[0], row[1]) == expected
            finally:
                os.close(fd)
        except OSError:
            ok = False
        if not ok:
            log.info("cache file %s failed verification; dropped", self.file_path(digest))
            self._drop(digest)
        return ok

    # -- eviction -------------------------------------------------------------------

    def reserve(self, files: Sequence[FileEntry], new_bytes: int) -> None:
        """Make room for ``new_bytes`` more of ``files`` (a tree's unique files), evicting the least
        recently used others; raises `CacheFull` when the tree, or it beside the files in use, cannot
        fit under ``max_bytes``. Called before a fetch, so the limit holds while it runs.
        """
        if self.max_bytes is None:
            return
        whole = sum(e.size for e in files)
        if whole > self.max_bytes:
            raise CacheFull(f"the files need {_mib(whole)}, more than this cache's limit of "
                            f"{_mib(self.max_bytes)} ({self.root})")
        keep = {e.digest for e in files}
        self.evict(keep=keep, room=new_bytes)
        used = self.size() + new_bytes
        if used > self.max_bytes:
            raise CacheFull(f"{_mib(new_bytes)} more would not fit under this cache's limit of "
                            f"{_mib(self.max_bytes)} beside the files in use ({self.root})")
        if used + self._partial_bytes() > self.max_bytes:
            # other trees' partial files left by dead sessions only save a resume: over the limit, they go
            self._clean_stale_partials(older_than=0, keep={d.hex() + ".part" for d in keep})

    @contextlib.contextmanager
    def pinned(self, digests: Iterable[bytes]) -> Iterator[None]:
        """Keep these files from eviction (by this Store object) while the block runs."""
        held = list(digests)
        with self._lock:
            self._pins.update(held)
        try:
            yield
        finally:
            with self._lock:
                self._pins.subtract(held)
                self._pins += Counter()  # drop zero counts

    def evict(self, keep: Iterable[bytes] = (), *, room: int = 0) -> int:
        """Remove least recently used files until the cache fits ``max_bytes`` with ``room`` bytes to
        spare; returns bytes freed."""
        self._clean_stale_partials()
        if self.max_bytes is None:
            return 0
        limit = self.max_bytes - room
        total = self.size()
        if total <= limit:
            return 0
        with self._lock:
            protected = set(keep) | set(self._pins)
        freed = 0
        rows = self._db().execute("SELECT digest, size FROM files ORDER BY used ASC").fetchall()
        for digest, size in rows:
            if total <= limit:
                break
            if bytes(digest) in protected:
                continue
            self._drop(bytes(digest))
            total -= size
            freed += size
        if total > self.max_bytes:  # (short of room only: the caller says so)
            log.warning(
                "cache %s holds %d bytes, over its limit of %d: the files in use need that much",
                self.root,
                total,
                self.max_bytes,
            )
        return freed

    # -- manifests ------------------------------------------------------------------

    def save_manifest(self, manifest: Manifest) -> None:
        self.manifests.save(manifest)

    def load_manifest(self, manifest_id: str) -> Manifest | None:
        return self.manifests.load(manifest_id)

    def remember_tree(self, key: str, manifest: Manifest) -> None:
        self.save_manifest(manifest)
        with self._txn() as db:
            db.execute("INSERT OR REPLACE INTO trees VALUES (?, ?)", (key, manifest.id))

    def tree_manifest(self, key: str) -> Manifest | None:
        row = self._db().execute("SELECT manifest FROM trees WHERE key = ?", (key,)).fetchone()
        return self.load_manifest(row[0]) if row else None

    # -- job folders ----------------------------------------------------------------

    def materialize(self, manifest: Manifest, dest: Path | str, **options: bool) -> MaterializeStats:
        """Give ``dest`` the manifest's files from the cache (see `farm.filesync.materialize`)."""
        return materialize(self, manifest, Path(dest), **options)

    # -- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._session is not None and self._session_fd is not None:
                if not any(n.endswith(".part") for n in os.listdir(self._session)):
                    shutil.rmtree(self._session, ignore_errors=True)
                os.close(self._session_fd)
                self._session = self._session_fd = None
        self._close_connections()

    def _close_connections(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
