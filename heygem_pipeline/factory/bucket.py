"""The bucket: an fsspec location where every write is atomic, and local staging for the engine."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from fsspec.config import conf as fsspec_conf
from fsspec.implementations.local import LocalFileSystem

from heygem_pipeline.engine.media.files import atomic_output

log = logging.getLogger(__name__)

# s3fs downloads a file over 50 MiB as up to 10 ranges of 50 MiB held in memory at once (and uploads 10 parts at
# once): one at a time streams downloads to scratch. FSSPEC_S3='{"max_concurrency": 10}' trades memory for speed.
fsspec_conf.setdefault("s3", {}).setdefault("max_concurrency", 1)


@dataclass(frozen=True)
class BucketEntry:
    """One file in the bucket, as a listing reports it."""

    rel: str  # path relative to the bucket root, '/'-separated
    size: int
    version: str  # modification time or ETag: changes whenever the content is replaced
    # Epoch seconds of the last change, when the store says: on S3 `version` is the ETag, not a time.
    modified: float | None = None

    @property
    def name(self) -> str:
        return PurePosixPath(self.rel).name

    @property
    def fingerprint(self) -> str:
        return f"{self.size}:{self.version}"


def _version(info: Mapping[str, Any]) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is not None:
            return str(value).strip('"')
    return ""


def _modified(info: Mapping[str, Any]) -> float | None:
    """When the file last changed (epoch seconds): local ``mtime``, S3's ``LastModified`` (a datetime), …"""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if value is not None:
            with contextlib.suppress(TypeError, ValueError):
                return float(value)
    return None


class Bucket:
    """An fsspec location with the factory's layout; every write is atomic (temp name, then move/rename)."""

    def __init__(self, url: str, work_prefix: str = "work") -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/") or "/"
        self.work_prefix = work_prefix.strip("/") or "work"

    def __repr__(self) -> str:
        return f"Bucket({self.url!r})"

    @property
    def is_local(self) -> bool:
        """Plain local files (a path or file://): the engine can work on them in place."""
        return isinstance(self.fs, LocalFileSystem) and "file" in _protocols(self.fs)

    @property
    def is_process_local(self) -> bool:
        """True for ``memory://``: other processes cannot see its files, so runs must stay in this process."""
        return "memory" in _protocols(self.fs)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}".rstrip("/") if rel else self.root

    def uri(self, rel: str) -> str:
        """A full address for metadata and messages: a local path, or protocol://…"""
        return self.path(rel) if self.is_local else self.fs.unstrip_protocol(self.path(rel))

    def local_path(self, rel: str) -> Path:
        if not self.is_local:
            raise ValueError(f"{self.url} is not a local bucket")
        return Path(self.path(rel))

    def work(self, *parts: str) -> str:
        return "/".join((self.work_prefix, *parts))

    # -- listing and reading

    def _uncached(self, path: str) -> str:
        # fsspec shares one filesystem per URL in a process, and s3fs keeps its listings for ever: files other
        # processes wrote since (a user's upload seen by the sensor, a worker's render) would stay invisible.
        self.fs.invalidate_cache(path)
        return path

    def list_files(self, prefix: str) -> list[BucketEntry]:
        """Files directly under ``prefix`` (not recursive), sorted by path; an absent folder lists empty."""
        try:
            infos = self.fs.ls(self._uncached(self.path(prefix)), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        entries = []
        base = self.root.rstrip("/") + "/"
        for info in infos:
            if info.get("type") != "file":
                continue
            name = str(info["name"])
            rel = name[len(base):] if name.startswith(base) else f"{prefix}/{PurePosixPath(name).name}"
            entries.append(BucketEntry(rel=rel, size=int(info.get("size") or 0), version=_version(info),
                                       modified=_modified(info)))
        return sorted(entries, key=lambda e: e.rel)

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self._uncached(self.path(rel))))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def read_json(self, rel: str) -> dict | None:
        """The JSON object at ``rel``, or None when it does not exist or is not readable JSON."""
        try:
            data = json.loads(self.read_bytes(rel))
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def size(self, rel: str) -> int:
        return int(self.fs.size(self._uncached(self.path(rel))))

    # -- atomic writes

    def _temp_rel(self, rel: str) -> str:
        parent, name = rel.rpartition("/")[0], rel.rpartition("/")[2]
        temp = f".{name}.{uuid.uuid4().hex[:8]}.tmp"  # hidden: scans skip it, readers never open it
        return f"{parent}/{temp}" if parent else temp

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.is_local:
            with atomic_output(self.local_path(rel)) as tmp:
                tmp.write_bytes(data)
            return
        tmp_rel = self._temp_rel(rel)
        self.fs.pipe_file(self.path(tmp_rel), data)
        self.fs.mv(self.path(tmp_rel), self.path(rel))

    def write_json(self, rel: str, data: Mapping[str, Any]) -> None:
        self.write_bytes(rel, json.dumps(data, indent=2, sort_keys=True, default=str).encode())

    def upload(self, local: str | os.PathLike[str], rel: str) -> None:
        """Copy a local file to ``rel`` atomically (for a local bucket, a copy beside it then a rename)."""
        local = Path(local)
        if self.is_local:
            dest = self.local_path(rel)
            if dest.resolve() == local.resolve():
                return
            with atomic_output(dest) as tmp:
                shutil.copyfile(local, tmp)
            return
        tmp_rel = self._temp_rel(rel)
        self.fs.put_file(str(local), self.path(tmp_rel))
        self.fs.mv(self.path(tmp_rel), self.path(rel))

    def download(self, rel: str, local: str | os.PathLike[str]) -> Path:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        self.fs.get_file(self.path(rel), str(local))
        return local

    def copy(self, src_rel: str, dest_rel: str) -> None:
        """Copy inside the bucket, atomically (a hard link when local: no second copy of a video on disk)."""
        if self.is_local:
            src, dest = self.local_path(src_rel), self.local_path(dest_rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(PurePosixPath(self._temp_rel(dest_rel)).name)
            try:
                try:
                    os.link(src, tmp)
                except OSError:  # another file system, or links not allowed: copy the bytes
                    self.upload(src, dest_rel)
                    return
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            return
        tmp_rel = self._temp_rel(dest_rel)
        self.fs.copy(self.path(src_rel), self.path(tmp_rel))
        self.fs.mv(self.path(tmp_rel), self.path(dest_rel))

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(rel))

    # -- local staging for the engine, which works on local folders

    @contextlib.contextmanager
    def local_file(self, rel: str) -> Iterator[Path]:
        """A local path holding ``rel``: the file itself when local, else a temporary copy with the same name."""
        if self.is_local:
            yield self.local_path(rel)
            return
        with tempfile.TemporaryDirectory(prefix="heygem-") as tmp:
            yield self.download(rel, Path(tmp) / PurePosixPath(rel).name)

    @contextlib.contextmanager
    def local_folder(self, rel_dir: str, inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> Iterator[Path]:
        """A local folder standing for bucket folder ``rel_dir``.

        Local bucket: the folder itself (the engine's stages write atomically). Otherwise a temporary folder with
        ``inputs`` downloaded, whose ``outputs`` are uploaded (each atomically) when the block succeeds; an output
        the block did not leave (a stage that has nothing to write, such as captions without a text) is removed
        from the bucket, so the folder holds what the stage wrote, as a local one would.
        """
        if self.is_local:
            folder = self.local_path(rel_dir)
            folder.mkdir(parents=True, exist_ok=True)
            yield folder
            return
        with tempfile.TemporaryDirectory(prefix="heygem-") as tmp:
            folder = Path(tmp)
            for name in inputs:
                self.download(f"{rel_dir}/{name}", folder / name)
            yield folder
            for name in outputs:
                if (folder / name).exists():
                    self.upload(folder / name, f"{rel_dir}/{name}")
                else:
                    self.remove(f"{rel_dir}/{name}")


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
