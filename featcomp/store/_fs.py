"""Byte-level access to a store's files: local paths (with fsync and atomic rename) or any fsspec URL.

Keys are ``/``-separated paths relative to the store root. Local stores use the OS directly
(append-only logs with ``fsync``; atomic writes via a temporary file and ``os.replace``). Every other
URL goes through one zarr store object, :class:`zarr.storage.FsspecStore` made by
``FsspecStore.from_url(url, storage_options=...)`` (:func:`featcomp.storage.zarr_store`): featcomp's own
reads and writes and zarr's array I/O share it and its asynchronous filesystem, driven on zarr's
event loop. Object writes are whole-object PUTs, which object stores make atomic; there is no
rename and no append (see docs/format.md, "Object storage").

After ``fork`` (DataLoader workers) the zarr store is rebuilt in the child on first use: an
asynchronous filesystem's connections belong to the parent's event loop.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import weakref
from pathlib import Path
from typing import Any

from featcomp.errors import StorageError, StoreError

__all__ = ["StoreFS"]

_LIVE: weakref.WeakSet = weakref.WeakSet()


def _after_fork() -> None:
    for fs in list(_LIVE):
        fs._zstore = None
        fs._pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class StoreFS:
    """A store root.

    Args:
        url: a local path, ``file://`` URL, or any fsspec URL (``memory://``, ``s3://``, ``gs://``, ...).
        storage_options: keyword arguments of the URL's filesystem (``endpoint_url``, ``key``, ``anon``,
            ...); environment credentials apply as usual. Ignored for local paths.
    """

    def __init__(self, url: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> None:
        from featcomp.storage import check_storage_options, is_url

        url = os.fspath(url)
        self.url = url
        self.storage_options = check_storage_options(storage_options)
        path = url[len("file://") :] if url.startswith("file://") else url
        self._zstore = None
        self._pid = os.getpid()
        if is_url(path):
            self.local = False
            self.root = url.rstrip("/")
            self.zstore  # opens the filesystem now: a missing package fails here, with its pip name
            _LIVE.add(self)
        else:
            self.local = True
            self.root = str(Path(path).absolute())

    # -- the zarr store behind remote roots
    @property
    def zstore(self):
        """The zarr store of a remote root (rebuilt after a fork)."""
        if self._zstore is None or self._pid != os.getpid():
            from featcomp.storage import zarr_store

            self._zstore = zarr_store(self.root, self.storage_options, read_only=False)
            self._pid = os.getpid()
        return self._zstore

    def _run(self, what: str, key: str, coro_fn):
        """Run ``coro_fn(store)`` on zarr's loop; storage failures become StorageError."""
        from zarr.core.sync import sync

        from featcomp.storage import storage_error

        try:
            return sync(coro_fn(self.zstore))
        except (StoreError, StorageError):
            raise
        except FileNotFoundError as e:
            err = storage_error(e, self.path(key), what)  # a missing bucket, not a missing key
            if err is not None:
                raise err from None
            raise
        except Exception as e:  # noqa: BLE001 - classified; anything else is an I/O failure of the store
            err = storage_error(e, self.path(key), what)
            if err is not None:
                raise err from None
            raise StoreError(f"{self.path(key)}: cannot {what} it ({type(e).__name__}: {e})") from e

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
        from zarr.core.buffer import default_buffer_prototype

        buf = self._run("read", key, lambda st: st.get(key, default_buffer_prototype()))
        if buf is None:
            raise FileNotFoundError(self.path(key))
        return buf.to_bytes()

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if self.local:
            with open(self.path(key), "rb") as f:
                f.seek(start)
                return f.read(end - start)
        from zarr.abc.store import RangeByteRequest
        from zarr.core.buffer import default_buffer_prototype

        buf = self._run("read", key, lambda st: st.get(key, default_buffer_prototype(), RangeByteRequest(start, end)))
        if buf is None:
            raise FileNotFoundError(self.path(key))
        return buf.to_bytes()

    def stat(self, key: str) -> tuple[int, Any]:
        """``(size, version tag)`` of a file; the tag changes when the file is replaced (local: mtime and
        inode; object stores: the ETag or modification time). FileNotFoundError when missing."""
        if self.local:
            st = os.stat(self.path(key))
            return st.st_size, (st.st_mtime_ns, st.st_ino)
        zs = self.zstore
        fsys = getattr(zs, "fs", None)
        if fsys is None:
            return self.size(key), None
        from zarr.core.sync import sync

        from featcomp.storage import storage_error

        try:
            info = sync(fsys._info(f"{zs.path}/{key}"))
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001
            err = storage_error(e, self.path(key), "read")
            if err is not None:
                raise err from None
            raise StoreError(f"{self.path(key)}: cannot stat it ({type(e).__name__}: {e})") from e
        if info.get("type") == "directory":
            raise FileNotFoundError(self.path(key))
        tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or info.get("created")
        return int(info["size"]), tag

    def exists(self, key: str) -> bool:
        if self.local:
            return os.path.exists(self.path(key))
        return bool(self._run("check", key, lambda st: st.exists(key)))

    def size(self, key: str) -> int:
        if self.local:
            return os.path.getsize(self.path(key))
        return int(self._run("read", key, lambda st: st.getsize(key)))

    def listdir(self, key: str) -> list[str]:
        """Names (not paths) directly under ``key``; [] when it does not exist."""
        if self.local:
            try:
                return sorted(os.listdir(self.path(key)))
            except (FileNotFoundError, NotADirectoryError):
                return []

        async def ls(st):
            return [name async for name in st.list_dir(key)]

        try:
            names = self._run("list", key, ls)
        except FileNotFoundError:
            return []
        return sorted({n.rstrip("/").rsplit("/", 1)[-1] for n in names if n.strip("/")})

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
        zs = self.zstore
        fsys = getattr(zs, "fs", None)
        base = zs.path.rstrip("/")
        if fsys is not None:  # one listing with sizes (a LIST request per 1000 objects on S3)
            async def find(_st):
                try:
                    return await fsys._find(f"{base}/{key}".rstrip("/"), detail=True)
                except FileNotFoundError:
                    return {}

            found = self._run("list", key, find)
            for p, d in found.items():
                p = p.strip("/")
                rel = p[len(base.strip("/")) + 1 :] if p.startswith(base.strip("/") + "/") else p
                if d.get("type") != "directory":
                    out[rel] = int(d.get("size") or 0)
            return out

        async def walk(st):
            return {k: await st.getsize(k) async for k in st.list_prefix(key)}

        return dict(self._run("list", key, walk))

    # -- writing
    def _put(self, key: str, data: bytes) -> None:
        from zarr.core.buffer import default_buffer_prototype

        self._run("write", key, lambda st: st.set(key, default_buffer_prototype().buffer.from_bytes(data)))

    def write_atomic(self, key: str, data: bytes, *, fsync: bool = True) -> None:
        """Write a whole file so that readers see the old or the new content, never a mix."""
        if self.local:
            p = self.path(key)
            os.replace(_write_temporary(p, data, fsync=fsync), p)
            if fsync:
                _fsync_dir(os.path.dirname(p))
            return
        self._put(key, data)  # one PUT: object stores replace whole objects atomically

    def write_new(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data`` unless it exists; True if created.

        Exactly one creator wins: locally with ``link``; on object stores with a conditional PUT
        (``If-None-Match: *``) where the filesystem offers it (s3fs ``mode="create"``), else
        check-then-put (best effort).
        """
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
        zs = self.zstore
        fsys = getattr(zs, "fs", None)
        if fsys is not None and type(fsys).__name__ == "S3FileSystem":
            async def create(_st):
                try:
                    await fsys._pipe_file(f"{zs.path}/{key}", data, mode="create")
                    return True
                except FileExistsError:
                    return False

            return bool(self._run("write", key, create))
        if self.exists(key):
            return False
        self._put(key, data)
        return True

    def delete(self, key: str) -> None:
        """Remove a file (or, on object stores, every object under ``key/``); no error when missing."""
        if self.local:
            try:
                os.unlink(self.path(key))
            except FileNotFoundError:
                pass
            return

        async def rm(st):
            await st.delete(key)
            await st.delete_dir(key)

        try:
            self._run("delete", key, rm)
        except FileNotFoundError:
            pass

    def makedirs(self, key: str) -> None:
        if self.local:
            os.makedirs(self.path(key), exist_ok=True)

    # -- zarr
    def zarr_store(self, *, read_only: bool):
        """A zarr ``Store`` for the same root (remote roots: the same store object featcomp uses)."""
        if self.local:
            from zarr.storage import LocalStore

            return LocalStore(self.root, read_only=read_only)
        zs = self.zstore
        return zs.with_read_only(True) if read_only else zs

    def check_root(self) -> None:
        """Raise BucketNotFoundError when the root's bucket does not exist (object stores)."""
        if self.local:
            return
        from featcomp.errors import BucketNotFoundError
        from featcomp.storage import bucket_exists

        if bucket_exists(self.root, self.storage_options) is False:
            raise BucketNotFoundError(f"{self.url}: the bucket does not exist; create it first or check the URL "
                                      "and the endpoint (storage option endpoint_url / AWS_ENDPOINT_URL)")


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
                self._fd = self._open_locked()
            os.write(self._fd, record)
            if self.fsync:
                os.fsync(self._fd)
            return
        self.fs.write_atomic(f"{self.key}.d/{self._seq:012d}", record)
        self._seq += 1

    def _open_locked(self) -> int:
        """Open the local log for appending, holding the ``flock`` that marks it live for compact_store.

        A new log is created under a hidden temporary name, locked, and only then renamed into place,
        so it is never visible unlocked: a compaction that lists the index while the log is being
        created either does not see it or sees it held (it used to be able to fold the empty new log
        and delete it, and the writer's records then went into an unlinked file).
        """
        import fcntl

        p = self.fs.path(self.key)
        d = os.path.dirname(p)
        os.makedirs(d, exist_ok=True)
        if os.path.exists(p):  # reopening one's own log (same writer id): lock it in place
            fd = os.open(p, os.O_WRONLY | os.O_APPEND)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise StoreError(f"{self.fs.url}/{self.key}: this commit log is held by another live writer") from None
            return fd
        tmp = os.path.join(d, f".{os.path.basename(p)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # nobody else can see this inode yet: never contended
            os.rename(tmp, p)  # the lock belongs to the inode and stays held under the new name
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if self.fsync:
            _fsync_dir(d)
        return fd

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
