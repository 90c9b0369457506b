"""The versioned artifact store: every stage writes one immutable version per run.

Layout under the store root (a local folder or any fsspec URL)::

    <stage>/<version>/<data files...>
    <stage>/<version>/manifest.json   written last: a version exists iff its manifest does
    <stage>/latest                    the newest version's id, replaced atomically

A version id is a short hash of (stage, parameters, code version, parent versions), so the
same inputs give the same id and writing it again is a no-op. Data files are written under a
temporary name and moved into place before the manifest appears, so a killed write never
leaves a visible version; the next write of that id clears the leftovers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fsspec
from fsspec.core import url_to_fs

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LATEST = "latest"
_HASH_CHUNK = 1 << 20


class StoreError(Exception):
    """A version that cannot be read: missing, incomplete or with a corrupt manifest."""


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
            return cls(
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
            raise StoreError(f"corrupt manifest {where}: {exc!r}") from exc


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


class VersionWriter:
    """Collects a version's files in a temporary folder; `Store.write` publishes them."""

    def __init__(self, fs: fsspec.AbstractFileSystem, tmp_dir: str, ref: VersionRef) -> None:
        self._fs = fs
        self.tmp_dir = tmp_dir
        self.ref = ref
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
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        self._fs.pipe_file(tmp, data)
        self._fs.mv(tmp, path)

    @contextmanager
    def open(self, name: str, mode: str = "wb", rows: int | None = None) -> Iterator[Any]:
        with self._fs.open(self.path(name, rows), mode) as handle:
            yield handle

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._fs

    @staticmethod
    def _check_name(name: str) -> None:
        if not name or name.startswith(("/", ".")) or ".." in name.split("/") or name == MANIFEST:
            raise ValueError(f"invalid file name in a version: {name!r}")


class Store:
    """Immutable, content-addressed stage outputs on any fsspec filesystem."""

    def __init__(self, root: str) -> None:
        self.root_url = root
        self.fs, path = url_to_fs(root)
        self.root = path.rstrip("/") or "/"

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
            raise StoreError(f"corrupt manifest {where}: not UTF-8") from exc
        manifest = Manifest.from_json(text, where)
        if manifest.ref != ref:
            raise StoreError(f"corrupt manifest {where}: it describes {manifest.ref}")
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
        if version == LATEST:
            ref = self.latest(stage)
            if ref is None:
                raise StoreError(f"stage {stage!r} has no versions yet in {self.root_url}")
        else:
            ref = VersionRef(stage, version)
        self.manifest(ref)
        return ref

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

        Callers should check `exists(ref)` first to skip the work of an existing version;
        should two writers race, the first to publish wins and the second is discarded.
        `resumable` keeps the files of a failed or killed write in a staging folder named
        by the version id, where the next write of that version finds them
        (`VersionWriter.exists`) and can skip the work they hold.
        """
        ref = self.ref_for(stage, parameters, code_version, parents)
        stage_dir = f"{self.root}/{stage}"
        if resumable:
            tmp_dir = f"{stage_dir}/.staging-{ref.version}"
        else:
            tmp_dir = f"{stage_dir}/.tmp-{ref.version}-{uuid.uuid4().hex[:8]}"
        self.fs.makedirs(tmp_dir, exist_ok=True)
        writer = VersionWriter(self.fs, tmp_dir, ref)
        published = False
        try:
            yield writer
            if not self.exists(ref):
                self._publish(ref, writer, dict(parameters), code_version, parents)
            published = True
        finally:
            if (published or not resumable) and self.fs.exists(tmp_dir):
                self.fs.rm(tmp_dir, recursive=True)
        self._set_latest(ref)

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
        self.fs.mv(writer.tmp_dir, final_dir, recursive=True)
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
        self._atomic_put(f"{final_dir}/{MANIFEST}", manifest.to_json().encode())

    def _set_latest(self, ref: VersionRef) -> None:
        self._atomic_put(f"{self.root}/{ref.stage}/{LATEST}", f"{ref.version}\n".encode())

    def _atomic_put(self, path: str, data: bytes) -> None:
        # A local rename replaces the target atomically; object stores make a single put atomic.
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, path)

    def _sha256(self, path: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def pull(self, ref: VersionRef, dest: str) -> str:
        """Copy a version to `dest/<stage>/<version>` (any fsspec URL), checking every
        file's sha256 on the way; the copy gets its manifest only if all of them match.
        """
        manifest = self.manifest(ref)
        target = Store(dest)
        folder = target.version_dir(ref)
        for entry in manifest.files:
            self.copy_file(ref, entry, target.fs, f"{folder}/{entry.path}")
        target._atomic_put(f"{folder}/{MANIFEST}", manifest.to_json().encode())
        return target.url(ref)

    def copy_file(
        self, ref: VersionRef, entry: FileEntry, fs: fsspec.AbstractFileSystem, path: str
    ) -> None:
        """Stream one file of a version to `path` on `fs`, hashing it on the way; a copy
        whose sha256 differs from the manifest's raises StoreError naming the file (the
        caller discards what was written)."""
        digest = hashlib.sha256()
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with (
            self.fs.open(f"{self.version_dir(ref)}/{entry.path}", "rb") as reader,
            fs.open(path, "wb") as writer,
        ):
            while chunk := reader.read(_HASH_CHUNK):
                digest.update(chunk)
                writer.write(chunk)
        if digest.hexdigest() != entry.sha256:
            raise StoreError(f"{ref}: {entry.path} does not match its sha256; not pulled")

    def verify(self, ref: VersionRef) -> None:
        """Recompute every file's size and sha256 against the manifest."""
        for entry in self.manifest(ref).files:
            path = f"{self.version_dir(ref)}/{entry.path}"
            if not self.fs.exists(path):
                raise StoreError(f"{ref}: file {entry.path} is missing")
            if self.fs.size(path) != entry.size or self._sha256(path) != entry.sha256:
                raise StoreError(f"{ref}: file {entry.path} does not match its manifest")


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
