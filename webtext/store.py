"""The versioned artifact store: every stage writes one immutable version per run.

Layout under the store root (a local folder or any fsspec URL)::

    <stage>/<version>/<data files...>
    <stage>/<version>/manifest.json   written last: a version exists iff its manifest does
    <stage>/latest                    the newest version's id, replaced atomically
    <stage>/.lock-<version>           held by the one writer of that version (`VersionLock`)

A version id is a short hash of (stage, parameters, code version, parent versions), so the
same inputs give the same id and writing it again is a no-op. Data files are written under a
temporary name and moved into place before the manifest appears, so a killed write never
leaves a visible version; the next write of that id clears the leftovers. One writer at a
time writes a version (`VersionLock`); a second one waits for it, then reuses its version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LATEST = "latest"
_HASH_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_VERSION_ID = re.compile(r"[0-9a-f]{12}")  # what `version_id` makes
# A verified read keeps a file this small in memory; a larger one goes to a local temp file.
_SPOOL_IN_MEMORY = 64 << 20


class StoreError(Exception):
    """A version that cannot be read: missing, incomplete or with a corrupt manifest."""


class IntegrityError(StoreError):
    """A version that is not what its stage wrote: a corrupt manifest, or a file missing,
    unreadable or with other bytes than its manifest's sha256 and size."""


@dataclass(frozen=True)
class VersionRef:
    """A pointer to one version of one stage, as recorded in a child's manifest."""

    stage: str
    version: str

    def __str__(self) -> str:
        return f"{self.stage}/{self.version}"


@dataclass(frozen=True)
class StageResult:
    """What a stage run returns: its version, whether it already existed, its stats."""

    ref: VersionRef
    reused: bool
    stats: dict[str, Any]


def file_name_problem(name: object) -> str | None:
    """Why `name` cannot be a file of a version (None when it can): a relative path with
    "/" between non-empty segments that stays inside the version's folder wherever the
    version is copied: no "..", ".", hidden first segment, absolute path, backslash or drive
    letter. Writers and manifest readers apply the same rule."""
    if not isinstance(name, str) or not name:
        return "not a non-empty string"
    if name.startswith("/") or _DRIVE.match(name):
        return "an absolute path"
    if "\\" in name or "\0" in name:
        return "a backslash or NUL in it"
    segments = name.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return "an empty, '.' or '..' segment"
    if name.startswith(".") or name == MANIFEST:
        return "a hidden or reserved name"
    return None


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    rows: int | None
    sha256: str


@dataclass(frozen=True)
class Manifest:
    stage: str
    version: str
    parents: tuple[VersionRef, ...]
    parameters: dict[str, Any]
    code_version: str
    created_at: str
    files: tuple[FileEntry, ...]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> VersionRef:
        return VersionRef(self.stage, self.version)

    def to_json(self) -> str:
        return json.dumps(
            {
                "stage": self.stage,
                "version": self.version,
                "parents": [{"stage": p.stage, "version": p.version} for p in self.parents],
                "parameters": self.parameters,
                "code_version": self.code_version,
                "created_at": self.created_at,
                "files": [vars(f) for f in self.files],
                "stats": self.stats,
            },
            indent=2,  # keys keep their order: stats list counts in pipeline order
        )

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            raw = json.loads(text)
            manifest = cls(
                stage=raw["stage"],
                version=raw["version"],
                parents=tuple(VersionRef(p["stage"], p["version"]) for p in raw["parents"]),
                parameters=raw["parameters"],
                code_version=raw["code_version"],
                created_at=raw["created_at"],
                files=tuple(FileEntry(**f) for f in raw["files"]),
                stats=raw.get("stats", {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"corrupt manifest {where}: {exc!r}") from exc
        for entry in manifest.files:  # a path must never lead a reader or a pull elsewhere
            if problem := file_name_problem(entry.path):
                raise IntegrityError(
                    f"corrupt manifest {where}: file path {entry.path!r}: {problem}"
                )
        return manifest


def version_id(
    stage: str, parameters: Mapping[str, Any], code_version: str, parents: tuple[VersionRef, ...]
) -> str:
    """The content address of a version: 12 hex digits of sha256 over its canonical inputs."""
    key = json.dumps(
        {
            "stage": stage,
            "parameters": parameters,
            "code_version": code_version,
            "parents": sorted(str(p) for p in parents),
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class LockSettings:
    """How the writers of one version exclude one another (`VersionLock`)."""

    heartbeat_s: float = 10.0  # how often a holder refreshes its lock
    stale_after_s: float = 120.0  # a lock not refreshed this long is a dead writer's
    wait_s: float = 3600.0  # how long a second writer waits before giving up
    poll_s: float = 1.0  # how often a waiting writer looks at the lock again
    settle_s: float = 2.0  # after replacing a stale lock, re-read it this much later


@dataclass(frozen=True)
class LockOwner:
    """Who holds a version's lock, as its lock file says."""

    host: str
    pid: int
    token: str  # one per lock taken: tells apart two writers of one process
    heartbeat: float  # time.time() of the holder's last refresh

    def __str__(self) -> str:
        if not self.token:
            return "an unknown writer (its lock file is unreadable)"
        return f"{self.host} pid {self.pid}"


class VersionLock:
    """The exclusive right to write one version: the file `<stage>/.lock-<version>`.

    Created exclusively (`open(..., "xb")`: O_EXCL on a local filesystem, a conditional
    put on object stores whose fsspec driver implements it), holding its owner (host, pid,
    token) and a heartbeat that a thread refreshes while the writer runs. A second writer
    waits for the lock (up to `wait_s`); it takes over a stale lock, one whose heartbeat is
    older than `stale_after_s` or whose owner was a process of this host that is gone, by
    replacing it with its own and reading it back `settle_s` later: of two writers taking
    over at once, the one whose lock is still there holds it. A holder whose heartbeat finds
    the lock is no longer its own (it was judged dead) publishes nothing.
    """

    def __init__(
        self, fs: fsspec.AbstractFileSystem, path: str, ref: VersionRef, settings: LockSettings
    ) -> None:
        self._fs = fs
        self.path = path
        self.ref = ref
        self.settings = settings
        self.token = uuid.uuid4().hex
        self.lost_to: str | None = None  # whom the lock went to, once it was taken over
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._unreadable_since: float | None = None

    def __enter__(self) -> VersionLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Hold the lock, waiting for a live writer (bounded) or taking over a dead one's."""
        deadline = time.monotonic() + self.settings.wait_s
        waiting = False
        while not self._create():
            owner = self._read()
            if owner is None:  # released meanwhile: try again at once
                continue
            if why := self._stale(owner):
                log.warning("%s: taking over the lock of %s (%s)", self.ref, owner, why)
                if self._take_over():
                    break
                continue
            if time.monotonic() > deadline:
                raise StoreError(
                    f"{self.ref} is being written by {owner} (heartbeat "
                    f"{time.time() - owner.heartbeat:.0f} s ago); gave up after waiting "
                    f"{self.settings.wait_s:.0f} s: run again when it has finished"
                )
            if not waiting and owner.token:  # (an unreadable lock is mostly one being created)
                log.warning(
                    "%s is being written by %s; waiting up to %.0f s for it to finish",
                    self.ref,
                    owner,
                    self.settings.wait_s,
                )
                waiting = True
            time.sleep(self.settings.poll_s)
        self._heartbeat = threading.Thread(target=self._beat, name=f"lock {self.ref}", daemon=True)
        self._heartbeat.start()

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, if it is still this writer's."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        owner = self._read()
        if owner is not None and owner.token == self.token:
            self._fs.rm(self.path)

    def check_held(self) -> None:
        """Raise unless this writer still holds the lock: call before publishing."""
        if not self._still_held():
            raise StoreError(
                f"{self.ref}: this writer lost its lock (judged dead) to {self.lost_to}; "
                "not published, its files are left to that writer"
            )

    def _still_held(self) -> bool:
        owner = self._read()
        if owner is None or owner.token != self.token:
            self.lost_to = str(owner) if owner else "nobody (the lock was removed)"
        return self.lost_to is None

    def _owner(self) -> bytes:
        owner = LockOwner(socket.gethostname(), os.getpid(), self.token, time.time())
        return json.dumps(vars(owner)).encode()

    def _create(self) -> bool:
        try:
            with self._fs.open(self.path, "xb") as handle:
                handle.write(self._owner())
            return True
        except FileExistsError:
            return False

    def _read(self) -> LockOwner | None:
        """The lock's owner; None when there is no lock. A lock being created reads as
        empty: it counts as live until it has stayed unreadable for `stale_after_s`."""
        try:
            raw = self._fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        try:
            owner = LockOwner(**json.loads(raw))
            self._unreadable_since = None
            return owner
        except (ValueError, TypeError):
            if self._unreadable_since is None:
                self._unreadable_since = time.time()
            return LockOwner("", 0, "", self._unreadable_since)

    def _stale(self, owner: LockOwner) -> str | None:
        """Why `owner` is dead, or None while it may be alive."""
        age = time.time() - owner.heartbeat
        if age > self.settings.stale_after_s:
            return f"no heartbeat for {age:.0f} s"
        if owner.host == socket.gethostname() and owner.pid and not _process_alive(owner.pid):
            return f"process {owner.pid} is gone"
        return None

    def _take_over(self) -> bool:
        put_atomic(self._fs, self.path, self._owner())
        time.sleep(self.settings.settle_s)  # another taker may have replaced it meanwhile
        owner = self._read()
        return owner is not None and owner.token == self.token

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                if not self._still_held():
                    log.error("%s: lost its lock to %s; will not publish", self.ref, self.lost_to)
                    return
                put_atomic(self._fs, self.path, self._owner())
            except OSError as exc:  # a storage hiccup: the next beat tries again
                log.warning("%s: could not refresh the lock: %r", self.ref, exc)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether `fs` is the local filesystem, where a rename is atomic and folders are real."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def put_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Replace `path` whole, so a reader sees the old bytes or the new, never a part: a
    temp file renamed over it on a local folder; one put elsewhere (an object store's
    single PUT is atomic, where a rename would be a copy and a delete)."""
    if not is_local(fs):
        fs.pipe_file(path, data)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    fs.pipe_file(tmp, data)
    fs.mv(tmp, path)


def move_folder(fs: fsspec.AbstractFileSystem, src: str, dest: str) -> None:
    """Move the folder `src` to `dest` (which must not exist): one rename on a local
    folder; file by file elsewhere. An object store has no folders, only keys with a
    common prefix, and fsspec's recursive `mv` would try to copy the prefixes too."""
    if is_local(fs):
        fs.mv(src, dest, recursive=True)
        return
    src = src.rstrip("/")
    files = fs.find(src)
    if files:
        fs.copy(files, [f"{dest}/{name[len(src) + 1 :]}" for name in files])
    fs.rm(src, recursive=True)


class VersionWriter:
    """Collects a version's files in a temporary folder; `Store.write` publishes them."""

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        tmp_dir: str,
        ref: VersionRef,
        existing: Manifest | None = None,
    ) -> None:
        self._fs = fs
        self.tmp_dir = tmp_dir
        self.ref = ref
        # The version, when another writer had published it by the time this one held its
        # lock: nothing is to be written (what is written is discarded).
        self.existing = existing
        self._rows: dict[str, int | None] = {}
        self.stats: dict[str, Any] = {}

    def path(self, name: str, rows: int | None = None) -> str:
        """The fsspec path to write file `name` to; register its row count now or later."""
        self._check_name(name)
        self._rows.setdefault(name, rows)
        path = f"{self.tmp_dir}/{name}"
        self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        return path

    def set_rows(self, name: str, rows: int) -> None:
        self._check_name(name)
        self._rows[name] = rows

    def exists(self, name: str) -> bool:
        """Whether `name` was written, here or by an earlier try of a resumable write."""
        self._check_name(name)
        return self._fs.exists(f"{self.tmp_dir}/{name}")

    def put(self, name: str, data: bytes, rows: int | None = None) -> None:
        """Write a whole file at once; it appears complete or not at all (temp + rename)."""
        self._check_name(name)
        path = self.path(name, rows)
        put_atomic(self._fs, path, data)

    @contextmanager
    def open(self, name: str, mode: str = "wb", rows: int | None = None) -> Iterator[Any]:
        with self._fs.open(self.path(name, rows), mode) as handle:
            yield handle

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._fs

    @staticmethod
    def _check_name(name: str) -> None:
        if problem := file_name_problem(name):
            raise ValueError(f"invalid file name in a version: {name!r}: {problem}")


class Store:
    """Immutable, content-addressed stage outputs on any fsspec filesystem."""

    def __init__(self, root: str, locking: LockSettings = LockSettings()) -> None:
        self.root_url = root
        # No listing cache: another process (a worker, another machine) adds files and
        # versions, and s3fs would answer `exists` from a listing made before they did.
        self.fs, path = url_to_fs(root, use_listings_cache=False)
        self.root = path.rstrip("/") or "/"
        self.locking = locking

    def __repr__(self) -> str:
        return f"Store({self.root_url!r})"

    def version_dir(self, ref: VersionRef) -> str:
        return f"{self.root}/{ref.stage}/{ref.version}"

    def url(self, ref: VersionRef, name: str = "") -> str:
        """A URL any fsspec-aware reader (pyarrow, DuckDB, polars) can open."""
        path = f"{self.version_dir(ref)}/{name}".rstrip("/")
        return self.fs.unstrip_protocol(path)

    @staticmethod
    def ref_for(
        stage: str,
        parameters: Mapping[str, Any],
        code_version: str,
        parents: tuple[VersionRef, ...] = (),
    ) -> VersionRef:
        return VersionRef(stage, version_id(stage, parameters, code_version, parents))

    def exists(self, ref: VersionRef) -> bool:
        return self.fs.exists(f"{self.version_dir(ref)}/{MANIFEST}")

    def manifest(self, ref: VersionRef) -> Manifest:
        where = f"{self.version_dir(ref)}/{MANIFEST}"
        try:
            text = self.fs.cat_file(where).decode()
        except FileNotFoundError as exc:
            if self.fs.exists(self.version_dir(ref)):
                raise StoreError(f"version {ref} is incomplete: no {MANIFEST} in it") from exc
            raise StoreError(f"no version {ref} in {self.root_url}") from exc
        except UnicodeDecodeError as exc:
            raise IntegrityError(f"corrupt manifest {where}: not UTF-8") from exc
        manifest = Manifest.from_json(text, where)
        if manifest.ref != ref:
            raise IntegrityError(f"corrupt manifest {where}: it describes {manifest.ref}")
        return manifest

    def latest(self, stage: str) -> VersionRef | None:
        pointer = f"{self.root}/{stage}/{LATEST}"
        try:
            version = self.fs.cat_file(pointer).decode().strip()
        except FileNotFoundError:
            return None
        return VersionRef(stage, version)

    def resolve(self, stage: str, version: str = LATEST) -> VersionRef:
        """`latest` or a version id to a checked reference; a clear error when absent."""
        ref = self.named_version(stage, version)
        self.manifest(ref)
        return ref

    def named_version(self, stage: str, version: str = LATEST) -> VersionRef:
        """`latest` or a version id (as a user typed it) to a reference, unchecked."""
        if version == LATEST:
            ref = self.latest(stage)
            if ref is None:
                raise StoreError(f"stage {stage!r} has no versions yet in {self.root_url}")
            return ref
        if not _VERSION_ID.fullmatch(version):
            raise StoreError(f"{version!r} is no {stage} version id (12 hex digits) nor {LATEST}")
        return VersionRef(stage, version)

    def versions(self, stage: str) -> list[Manifest]:
        """Every complete version of a stage, oldest first."""
        stage_dir = f"{self.root}/{stage}"
        if not self.fs.isdir(stage_dir):
            return []
        found = []
        for entry in self.fs.ls(stage_dir, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name == LATEST or name.startswith("."):
                continue
            try:
                found.append(self.manifest(VersionRef(stage, name)))
            except StoreError as exc:  # incomplete or corrupt: not a version, and not fatal
                log.warning("skipping %s/%s: %s", stage, name, exc)
        return sorted(found, key=lambda m: m.created_at)

    @contextmanager
    def write(
        self,
        stage: str,
        parameters: Mapping[str, Any],
        code_version: str,
        parents: tuple[VersionRef, ...] = (),
        resumable: bool = False,
    ) -> Iterator[VersionWriter]:
        """Write a new version; the files appear, with their manifest, only on success.

        One writer at a time writes a version: this one first holds its lock
        (`VersionLock`), waiting for another live writer of it. When the version exists by
        then, `writer.existing` is its manifest and nothing is published (callers should
        check it, or `exists(ref)` first, to skip the work). `resumable` keeps the files of
        a failed or killed write in a staging folder named by the version id, where the
        next write of that version finds them (`VersionWriter.exists`) and can skip the
        work they hold; otherwise the temporary folders a killed writer of this version
        left are removed.
        """
        ref = self.ref_for(stage, parameters, code_version, parents)
        stage_dir = f"{self.root}/{stage}"
        self._check_bucket()
        self.fs.makedirs(stage_dir, exist_ok=True)
        with VersionLock(self.fs, f"{stage_dir}/.lock-{ref.version}", ref, self.locking) as lock:
            existing = self.manifest(ref) if self.exists(ref) else None
            if resumable:
                tmp_dir = f"{stage_dir}/.staging-{ref.version}"
            else:  # holding the lock, no other writer of this version uses these
                for abandoned in self.fs.glob(f"{stage_dir}/.tmp-{ref.version}-*"):
                    self.fs.rm(abandoned, recursive=True)
                tmp_dir = f"{stage_dir}/.tmp-{ref.version}-{uuid.uuid4().hex[:8]}"
            self.fs.makedirs(tmp_dir, exist_ok=True)
            writer = VersionWriter(self.fs, tmp_dir, ref, existing)
            published = False
            try:
                yield writer
                if existing is None:
                    lock.check_held()
                    self._publish(ref, writer, dict(parameters), code_version, parents)
                published = True
            finally:
                if (published or not resumable) and self.fs.exists(tmp_dir):
                    self.fs.rm(tmp_dir, recursive=True)
            self._set_latest(ref)

    def _check_bucket(self) -> None:
        """On an object store, the bucket (container) must exist: s3fs's `makedirs` would
        create one of a mistyped name."""
        bucket = self.root.split("/", 1)[0]
        if not is_local(self.fs) and bucket and not self.fs.exists(bucket):
            raise StoreError(
                f"no bucket {bucket!r} for the store {self.root_url}: create it first "
                "(the store does not create buckets)"
            )

    def _publish(
        self,
        ref: VersionRef,
        writer: VersionWriter,
        parameters: dict[str, Any],
        code_version: str,
        parents: tuple[VersionRef, ...],
    ) -> None:
        files = []
        for name, rows in sorted(writer._rows.items()):
            tmp_path = f"{writer.tmp_dir}/{name}"
            if not self.fs.exists(tmp_path):
                raise StoreError(f"{ref}: file {name!r} was registered but never written")
            files.append(FileEntry(name, self.fs.size(tmp_path), rows, self._sha256(tmp_path)))
        for leftover in self.fs.find(writer.tmp_dir):  # temp files of a killed earlier try
            name = leftover[len(writer.tmp_dir) + 1 :]
            if name not in writer._rows:
                self.fs.rm(leftover)
        final_dir = self.version_dir(ref)
        if self.fs.exists(final_dir):  # leftovers of a killed publish: never visible
            self.fs.rm(final_dir, recursive=True)
        move_folder(self.fs, writer.tmp_dir, final_dir)
        manifest = Manifest(
            stage=ref.stage,
            version=ref.version,
            parents=parents,
            parameters=parameters,
            code_version=code_version,
            created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            files=tuple(files),
            stats=writer.stats,
        )
        put_atomic(self.fs, f"{final_dir}/{MANIFEST}", manifest.to_json().encode())

    def _set_latest(self, ref: VersionRef) -> None:
        put_atomic(self.fs, f"{self.root}/{ref.stage}/{LATEST}", f"{ref.version}\n".encode())

    def _sha256(self, path: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def pull(self, ref: VersionRef, dest: str) -> str:
        """Copy a version to `dest/<stage>/<version>` (any fsspec URL), checking every
        file's sha256 on the way. The copy is made beside that folder and renamed into
        place whole, replacing what it held; never into a file, nor this store."""
        manifest = self.manifest(ref)
        target = Store(dest)
        folder = target.version_dir(ref)
        if problem := self.unfit_destination(target.fs, folder):
            raise StoreError(f"cannot pull into {dest}: {problem}")
        tmp = f"{target.root}/{ref.stage}/.{ref.version}.pull-{uuid.uuid4().hex[:8]}"
        try:
            for entry in manifest.files:
                self.copy_file(ref, entry, target.fs, f"{tmp}/{entry.path}")
            target.fs.pipe_file(f"{tmp}/{MANIFEST}", manifest.to_json().encode())
            replace_folder(target.fs, tmp, folder)
        except BaseException:
            if target.fs.exists(tmp):
                target.fs.rm(tmp, recursive=True)
            raise
        return target.url(ref)

    def unfit_destination(self, fs: fsspec.AbstractFileSystem, path: str) -> str | None:
        """Why a copy out of this store cannot be written to the folder `path` on `fs`
        (None when it can): a file is in the way, or the folder is this store, lies inside
        it, or holds it."""
        probe = path
        while not fs.exists(probe) and fs._parent(probe) not in ("", probe):
            probe = fs._parent(probe)
        if fs.isfile(probe):
            return f"{probe} is a file, not a folder"
        if not _same_filesystem(self.fs, fs):
            return None
        here, root = _real_path(fs, path), _real_path(self.fs, self.root)
        if _within(here, root):
            return f"{path} is inside the store {self.root_url}"
        if _within(root, here):
            return f"the store {self.root_url} is inside {path}"
        return None

    def copy_file(
        self, ref: VersionRef, entry: FileEntry, fs: fsspec.AbstractFileSystem, path: str
    ) -> None:
        """Stream one file of a version to `path` on `fs`, hashing it on the way; a copy
        whose sha256 differs from the manifest's raises StoreError naming the file (the
        caller discards what was written)."""
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(path, "wb") as writer:
            self._stream_checked(ref, entry, writer.write)

    def verify(self, ref: VersionRef, *, deep: bool = True) -> Manifest:
        """Check a version against its manifest: every file present with its size and,
        `deep`, its sha256 (each file read once). Raises IntegrityError naming every file
        that differs; returns the manifest when all match."""
        manifest = self.manifest(ref)
        problems = []
        for entry in manifest.files:
            path = f"{self.version_dir(ref)}/{entry.path}"
            try:
                size = self.fs.size(path)
                if size != entry.size:
                    problems.append(
                        f"{entry.path} has {size} bytes, its manifest says {entry.size}"
                    )
                elif deep:
                    self._stream_checked(ref, entry, lambda chunk: None)
            except FileNotFoundError:
                problems.append(f"{entry.path} is missing")
            except StoreError as exc:
                problems.append(str(exc).removeprefix(f"{ref}: "))
        if problems:
            raise IntegrityError(f"{ref}: " + "; ".join(problems))
        return manifest

    def version_ids(self, stage: str) -> list[str]:
        """The names of a stage's version folders, sorted: complete, incomplete (no
        manifest yet: a write in progress or killed) and corrupt ones alike (not staging
        folders, locks nor `latest`)."""
        stage_dir = f"{self.root}/{stage}"
        if not self.fs.isdir(stage_dir):
            return []
        folders = (
            e["name"] for e in self.fs.ls(stage_dir, detail=True) if e["type"] == "directory"
        )
        names = (folder.rstrip("/").rsplit("/", 1)[-1] for folder in folders)
        return sorted(name for name in names if not name.startswith("."))

    def checked_versions(self, stage: str, skip: Collection[str] = ()) -> list[Manifest]:
        """Every complete version of a stage, oldest first, for a run that must see all of
        them (an incremental one): a corrupt manifest raises IntegrityError naming its path,
        unless its id is in `skip` (the operator's explicit choice). Folders without a
        manifest are no version (`versions` logs and skips corrupt ones too)."""
        ids = self.version_ids(stage)
        if unknown := sorted(set(skip) - set(ids)):
            raise ValueError(f"no {stage} version {', '.join(unknown)} to skip in {self.root_url}")
        found = []
        for version in ids:
            ref = VersionRef(stage, version)
            if version in skip or not self.exists(ref):
                continue
            try:
                found.append(self.manifest(ref))
            except StoreError as exc:  # its manifest is there: corrupt
                raise IntegrityError(
                    f"{exc}; an incremental run needs every earlier {stage} version: repair "
                    f"it, or leave it out explicitly with --skip-version {version}"
                ) from exc
        return sorted(found, key=lambda m: m.created_at)

    @contextmanager
    def open_verified(self, ref: VersionRef, file: FileEntry | str) -> Iterator[IO[bytes]]:
        """A version's file for reading, seekable, its bytes checked against the manifest's
        sha256: streamed once from the store into memory (a local temp file when large),
        hashed on the way. A parent's file a stage reads comes through here, so a missing,
        unreadable or altered file stops the stage with an IntegrityError naming it."""
        entry = file if isinstance(file, FileEntry) else self.file_entry(ref, file)
        with tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY, prefix="webtext-verified-") as copy:
            self._stream_checked(ref, entry, copy.write)
            copy.seek(0)
            yield copy

    def read_verified(self, ref: VersionRef, file: FileEntry | str) -> bytes:
        """A small file of a version, whole, checked as `open_verified` checks it."""
        with self.open_verified(ref, file) as handle:
            return handle.read()

    def file_entry(self, ref: VersionRef, name: str) -> FileEntry:
        """The manifest's entry for file `name` of a version."""
        for entry in self.manifest(ref).files:
            if entry.path == name:
                return entry
        raise StoreError(f"{ref} has no file {name!r} in its manifest")

    def _stream_checked(
        self, ref: VersionRef, entry: FileEntry, sink: Callable[[bytes], object]
    ) -> None:
        """Read one file of a version in chunks, handing each to `sink` and hashing it;
        a missing or unreadable file, or a sha256 other than the manifest's, raises
        IntegrityError naming the file (and both hashes)."""
        path = f"{self.version_dir(ref)}/{entry.path}"
        digest = hashlib.sha256()
        try:
            with self.fs.open(path, "rb") as reader:
                while chunk := reader.read(_HASH_CHUNK):
                    digest.update(chunk)
                    sink(chunk)
        except FileNotFoundError as exc:
            raise IntegrityError(
                f"{ref}: {entry.path} is missing ({self.fs.unstrip_protocol(path)})"
            ) from exc
        except OSError as exc:
            raise IntegrityError(f"{ref}: cannot read {entry.path}: {exc}") from exc
        if digest.hexdigest() != entry.sha256:
            raise IntegrityError(
                f"{ref}: {entry.path} does not match its sha256: read {digest.hexdigest()}, "
                f"manifest {entry.sha256} ({self.fs.unstrip_protocol(path)})"
            )


def replace_folder(fs: fsspec.AbstractFileSystem, tmp: str, path: str) -> None:
    """Rename the finished folder `tmp` to `path`; what `path` held is moved aside first,
    put back if the rename fails, and deleted once the new folder is in place."""
    if fs.isdir(path) and not fs.ls(path, detail=False):
        fs.rmdir(path)  # an empty folder: moving onto it would move `tmp` inside it
    if not fs.exists(path):
        move_folder(fs, tmp, path)
        return
    old = f"{fs._parent(path)}/.{path.rstrip('/').rsplit('/', 1)[-1]}.old-{uuid.uuid4().hex[:8]}"
    move_folder(fs, path, old)
    try:
        move_folder(fs, tmp, path)
    except BaseException:
        move_folder(fs, old, path)
        raise
    fs.rm(old, recursive=True)


def _same_filesystem(a: fsspec.AbstractFileSystem, b: fsspec.AbstractFileSystem) -> bool:
    protocols = [p.protocol if isinstance(p.protocol, tuple) else (p.protocol,) for p in (a, b)]
    return bool(set(protocols[0]) & set(protocols[1]))


def _real_path(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return os.path.realpath(path) if is_local(fs) else path.rstrip("/")


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def input_fingerprint(path: str) -> dict[str, Any]:
    """Identify an input file (a dump, a WARC) by path, size and a hash of its ends.

    Hashing a whole 30 GB monthly dump on every run would cost minutes; the first and
    last MiB catch a replaced or regenerated file of the same name.
    """
    fs, fs_path = url_to_fs(path)
    try:
        size = fs.size(fs_path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"input not found: {path}") from exc
    digest = hashlib.sha256()
    with fs.open(fs_path, "rb") as handle:
        digest.update(handle.read(_HASH_CHUNK))
        if size > 2 * _HASH_CHUNK:
            handle.seek(size - _HASH_CHUNK)
            digest.update(handle.read())
    return {"path": path, "size": size, "sha256_ends": digest.hexdigest()[:16]}
