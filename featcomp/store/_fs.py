"""Byte-level access to a store's files: local paths (with fsync and atomic rename) or fsspec URLs.

Keys are ``/``-separated paths relative to the store root. Local stores use the OS directly
(append-only logs with ``fsync``; atomic writes via a temporary file and ``os.replace``); other URLs
go through fsspec (whole-object writes, which object stores make atomic).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["StoreFS"]


class StoreFS:
    """A store root.

    Args:
        url: a local path, ``file://`` URL, or any fsspec URL (``memory://``, ``s3://``, ...).
    """

    def __init__(self, url: str | os.PathLike) -> None:
        url = os.fspath(url)
        self.url = url
        if url.startswith("file://"):
            url = url[len("file://") :]
        if "://" in url:
            import fsspec

            self.local = False
            self.fs, root = fsspec.core.url_to_fs(url)
            self.root = root.rstrip("/")
        else:
            self.local = True
            self.fs = None
            self.root = str(Path(url).absolute())

    # -- paths
    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def __repr__(self) -> str:
        return f"StoreFS({self.url!r})"

    # -- reading
    def read(self, key: str) -> bytes:
        """Whole file; raises FileNotFoundError when missing."""
        if self.local:
            with open(self.path(key), "rb") as f:
                return f.read()
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            raise
        except KeyError:  # some fsspec backends
            raise FileNotFoundError(self.path(key)) from None

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if self.local:
            with open(self.path(key), "rb") as f:
                f.seek(start)
                return f.read(end - start)
        return self.fs.cat_file(self.path(key), start=start, end=end)

    def exists(self, key: str) -> bool:
        if self.local:
            return os.path.exists(self.path(key))
        return self.fs.exists(self.path(key))

    def size(self, key: str) -> int:
        if self.local:
            return os.path.getsize(self.path(key))
        return int(self.fs.size(self.path(key)))

    def listdir(self, key: str) -> list[str]:
        """Names (not paths) directly under ``key``; [] when it does not exist."""
        if self.local:
            try:
                return sorted(os.listdir(self.path(key)))
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            entries = self.fs.ls(self.path(key), detail=False)
        except FileNotFoundError:
            return []
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries})

    def walk_sizes(self, key: str = "") -> dict[str, int]:
        """Every file under ``key`` -> its size in bytes (keys relative to the root)."""
        out: dict[str, int] = {}
        if self.local:
            base = self.path(key)
            for dirpath, _dirs, files in os.walk(base):
                for f in files:
                    p = os.path.join(dirpath, f)
                    try:
                        out[os.path.relpath(p, self.root).replace(os.sep, "/")] = os.path.getsize(p)
                    except FileNotFoundError:
                        pass
            return out
        try:
            found = self.fs.find(self.path(key), detail=True)
        except FileNotFoundError:
            return out
        prefix = self.root.rstrip("/") + "/"
        for p, d in found.items():
            p = p.lstrip("/") if not prefix.startswith("/") else p
            rel = p[len(prefix) :] if p.startswith(prefix) else p.split(self.root.strip("/") + "/", 1)[-1]
            out[rel] = int(d.get("size") or 0)
        return out

    # -- writing
    def write_atomic(self, key: str, data: bytes, *, fsync: bool = True) -> None:
        """Write a whole file so that readers see the old or the new content, never a mix."""
        if self.local:
            p = self.path(key)
            os.replace(_write_temporary(p, data, fsync=fsync), p)
            if fsync:
                _fsync_dir(os.path.dirname(p))
            return
        self.fs.pipe_file(self.path(key), data)

    def write_new(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data`` unless it exists (best effort on object stores); True if created."""
        if self.local:
            p = self.path(key)
            tmp = _write_temporary(p, data, fsync=True)
            try:
                os.link(tmp, p)  # fails if p exists: exactly one creator wins
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        if self.fs.exists(self.path(key)):
            return False
        self.fs.pipe_file(self.path(key), data)
        return True

    def delete(self, key: str) -> None:
        try:
            if self.local:
                os.unlink(self.path(key))
            else:
                self.fs.rm(self.path(key), recursive=True)
        except FileNotFoundError:
            pass

    def makedirs(self, key: str) -> None:
        if self.local:
            os.makedirs(self.path(key), exist_ok=True)

    # -- zarr
    def zarr_store(self, *, read_only: bool):
        """A zarr ``Store`` for the same root."""
        if self.local:
            from zarr.storage import LocalStore

            return LocalStore(self.root, read_only=read_only)
        from zarr.storage import FsspecStore

        fs = self.fs
        if not getattr(fs, "async_impl", False):
            from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

            fs = AsyncFileSystemWrapper(fs, asynchronous=True)
        return FsspecStore(fs, path=self.root, read_only=read_only)


def _write_temporary(p: str, data: bytes, *, fsync: bool) -> str:
    """Write ``data`` to a new uniquely named file beside ``p`` (its directory created) and return its
    path; with ``fsync`` the bytes are on disk before the caller publishes the file under ``p``."""
    os.makedirs(os.path.dirname(p), exist_ok=True)
    tmp = f"{p}.{secrets.token_hex(6)}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return tmp


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AppendLog:
    """An append-only record log owned by one writer.

    Local stores: one file, each record appended with ``write`` + ``fsync`` (a record is committed
    once its trailing newline is durable). Other stores: one object per record under ``<key>.d/``,
    named by a zero-padded sequence number.
    """

    def __init__(self, fs: StoreFS, key: str, *, fsync: bool = True) -> None:
        self.fs = fs
        self.key = key
        self.fsync = fsync
        self._seq = 0
        self._fd: int | None = None

    def append(self, record: bytes) -> None:
        if self.fs.local:
            if self._fd is None:
                p = self.fs.path(self.key)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                self._fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                import fcntl

                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # marks the log live for compact_store
                if self.fsync:
                    _fsync_dir(os.path.dirname(p))
            os.write(self._fd, record)
            if self.fsync:
                os.fsync(self._fd)
            return
        self.fs.fs.pipe_file(self.fs.path(f"{self.key}.d/{self._seq:012d}"), record)
        self._seq += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.close()
        if self.fs.local:
            self.fs.delete(self.key)
        else:
            self.fs.delete(self.key + ".d")


def read_logs(fs: StoreFS, directory: str, suffix: str) -> dict[str, bytes]:
    """All logs ``<directory>/<name><suffix>`` (files or ``.d`` object folders) -> concatenated bytes.

    Raises:
        FileNotFoundError: a listed log vanished while reading (the caller retries).
    """
    out: dict[str, bytes] = {}
    for name in fs.listdir(directory):
        if name.endswith(suffix):
            out[name[: -len(suffix)]] = fs.read(f"{directory}/{name}")
        elif name.endswith(suffix + ".d"):
            base = name[: -len(suffix) - 2]
            segs = fs.listdir(f"{directory}/{name}")
            out[base] = out.get(base, b"") + b"".join(fs.read(f"{directory}/{name}/{s}") for s in segs)
    return out
