"""One storage layer for stores, model files and video inputs: local paths or any fsspec URL.

Layer 0 (imports only :mod:`featcomp.errors`; fsspec and zarr are imported when a URL is used).

* Local paths (and ``file://`` URLs) go to the OS directly; nothing here is involved.
* Any other URL (``s3://``, ``gs://``, ``az://``, ``memory://`` ...) opens through fsspec with
  ``storage_options`` (the keyword arguments of the URL's filesystem: ``endpoint_url``, ``key``,
  ``secret``, ``anon``, ``client_kwargs``, ...). Credentials in the environment (``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``GOOGLE_APPLICATION_CREDENTIALS``,
  ...) are read by the filesystem package as usual; options given here only add to them.
* Stores use zarr's own :class:`zarr.storage.FsspecStore` (:func:`zarr_store`), made with
  ``FsspecStore.from_url``, which creates the filesystem asynchronous on zarr's event loop.
* Failures of the storage itself become :class:`~featcomp.errors.StorageError` subclasses that name
  the URL and what to do (:func:`storage_error`): a missing filesystem package (with the pip name),
  credentials refused, a bucket that does not exist.

Object stores keep a listing cache by default; featcomp turns it off (``use_listings_cache=False``)
because other processes add objects (commit records) that a long-lived reader must see.
"""

from __future__ import annotations

import json
import os
from typing import Any

from featcomp.errors import (
    BucketNotFoundError,
    ConfigError,
    StorageAccessError,
    StorageBackendMissing,
    StorageError,
)

__all__ = [
    "BACKEND_PACKAGES",
    "is_url",
    "protocol_of",
    "parse_storage_options",
    "check_storage_options",
    "filesystem",
    "zarr_store",
    "storage_error",
    "read_bytes",
    "copy_to_local",
    "remote_size",
]

#: the pip package that provides an fsspec protocol (for "install X" messages)
BACKEND_PACKAGES: dict[str, str] = {
    "s3": "s3fs", "s3a": "s3fs",
    "gs": "gcsfs", "gcs": "gcsfs",
    "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs", "adl": "adlfs",
    "http": "aiohttp", "https": "aiohttp",
    "hf": "huggingface_hub",
    "sftp": "paramiko", "ssh": "paramiko",
    "oci": "ocifs", "oss": "ossfs",
}
#: protocols whose first path component is a bucket/container
_BUCKETED = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss"}
#: protocols with a listing cache that featcomp disables by default (see the module docstring)
_NO_LISTING_CACHE = _BUCKETED


def is_url(path: Any) -> bool:
    """True for ``scheme://...`` strings other than ``file://`` (local paths are not URLs)."""
    head, sep, _ = str(os.fspath(path) if isinstance(path, os.PathLike) else path).partition("://")
    return bool(sep) and head.isidentifier() and head.lower() != "file" and len(head) > 1


def protocol_of(url: str) -> str:
    """The URL's scheme in lower case (``"s3"``), or ``"file"`` for local paths."""
    return str(url).split("://", 1)[0].lower() if is_url(url) else "file"


def _parse_value(text: str) -> Any:
    """``true``/``false``/``null``, numbers and JSON objects/lists as such; anything else a string."""
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("null", "none"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_storage_options(items: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` (the CLI's repeatable ``--storage-option``) -> a storage_options dict.

    Values are parsed as booleans, null, numbers or JSON when they look like one, strings otherwise.
    A dotted key nests: ``client_kwargs.region_name=eu-west-1`` gives
    ``{"client_kwargs": {"region_name": "eu-west-1"}}``.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--storage-option {item!r}: expected KEY=VALUE (e.g. endpoint_url=http://host:9000)")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--storage-option {item!r}: {p!r} is given both as a value and as a group")
        node[leaf] = _parse_value(value)
    return out


def check_storage_options(options: Any, where: str = "storage_options") -> dict[str, Any]:
    """``options`` as a fresh dict (None -> {}); ConfigError unless a mapping with string keys."""
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"{where} must be a mapping of option names to values, got {type(options).__name__}")
    return dict(options)


def _options_for(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    opts = check_storage_options(storage_options)
    if protocol_of(url) in _NO_LISTING_CACHE:
        opts.setdefault("use_listings_cache", False)
    return opts


def storage_error(e: BaseException, url: str, what: str = "access") -> StorageError | None:
    """The :class:`StorageError` that ``e`` (raised while trying to ``what`` ``url``) stands for, or None
    when ``e`` is not a storage failure (a missing object, bad data: the caller handles those).

    Recognised: ImportError of the URL's filesystem package; PermissionError and botocore's
    missing-credentials errors (credentials refused or absent); FileNotFoundError whose text says
    the bucket/container does not exist.
    """
    if isinstance(e, StorageError):
        return e
    proto = protocol_of(url)
    pkg = BACKEND_PACKAGES.get(proto)
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, ImportError) or (isinstance(e, ValueError) and "Protocol not known" in str(e)):
        hint = f"pip install {pkg}" if pkg else "install the fsspec implementation of this protocol"
        return StorageBackendMissing(f"{url}: cannot {what} {proto}:// URLs: {hint} ({text})")
    name = type(e).__name__
    if isinstance(e, PermissionError) or name in ("NoCredentialsError", "PartialCredentialsError",
                                                   "CredentialRetrievalError", "InvalidAccessKeyId"):
        return StorageAccessError(
            f"{url}: credentials refused or missing while trying to {what} it ({text}); set the provider's "
            "environment credentials (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL) or "
            "pass them as storage options (--storage-option key=... secret=... endpoint_url=...)"
        )
    if isinstance(e, FileNotFoundError) and proto in _BUCKETED:
        low = str(e).lower()
        if ("bucket" in low or "container" in low) and ("not exist" in low or "nosuch" in low or "not found" in low):
            return BucketNotFoundError(f"{url}: the bucket does not exist ({text}); create it first "
                                       "or check the URL and the endpoint")
    return None


def filesystem(url: str, storage_options: dict[str, Any] | None = None):
    """-> ``(fs, path)``: a synchronous fsspec filesystem for ``url`` and the path inside it.

    Raises:
        StorageError: the URL's filesystem package is missing (names the pip package).
    """
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(str(url), **_options_for(url, storage_options))
    except (ImportError, ValueError) as e:
        err = storage_error(e, str(url), "open")
        if err is None:
            raise StorageError(f"{url}: cannot open it ({type(e).__name__}: {e})") from None
        raise err from None


def zarr_store(url: str, storage_options: dict[str, Any] | None = None, *, read_only: bool):
    """A zarr :class:`~zarr.storage.FsspecStore` for ``url`` (created asynchronous by zarr itself).

    Raises:
        StorageError: the URL's filesystem package is missing (names the pip package).
    """
    from zarr.storage import FsspecStore

    try:
        return FsspecStore.from_url(str(url), storage_options=_options_for(url, storage_options), read_only=read_only)
    except (ImportError, ValueError) as e:
        err = storage_error(e, str(url), "open")
        if err is None:
            raise StorageError(f"{url}: cannot open it ({type(e).__name__}: {e})") from None
        raise err from None


def bucket_exists(url: str, storage_options: dict[str, Any] | None = None) -> bool | None:
    """Whether the URL's bucket exists (None: the protocol has no buckets, or it cannot be told)."""
    if protocol_of(url) not in _BUCKETED:
        return None
    fs, path = filesystem(url, storage_options)
    bucket = path.strip("/").split("/", 1)[0]
    try:
        return bool(fs.exists(bucket))
    except Exception as e:  # noqa: BLE001 - classified below
        err = storage_error(e, url, "list")
        if err is not None:
            raise err from None
        return None


def read_bytes(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """The whole object at ``url``.

    Raises:
        FileNotFoundError: no such object. StorageError: see :func:`storage_error`.
    """
    fs, path = filesystem(url, storage_options)
    try:
        return fs.cat_file(path)
    except Exception as e:  # noqa: BLE001 - classified below
        err = storage_error(e, url, "read")
        if err is not None:
            raise err from None
        raise


def remote_size(url: str, storage_options: dict[str, Any] | None = None) -> int:
    """Bytes of the object at ``url`` (FileNotFoundError when missing, StorageError as above)."""
    fs, path = filesystem(url, storage_options)
    try:
        return int(fs.size(path))
    except Exception as e:  # noqa: BLE001
        err = storage_error(e, url, "read")
        if err is not None:
            raise err from None
        raise


def copy_to_local(url: str, dest: str, storage_options: dict[str, Any] | None = None, *,
                  max_bytes: int | None = None, block: int = 8 << 20, size: int | None = None) -> str:
    """Stream the object at ``url`` into the local file ``dest`` (in blocks of ``block`` bytes).

    Args:
        max_bytes: refuse objects larger than this (checked before copying, and again while
            copying in case the object grew), so a scratch directory stays bounded.
        size: the object's size when already known (saves a request).

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError: no such object. StorageError: too large for ``max_bytes`` or a storage
        failure (see :func:`storage_error`).
    """
    fs, path = filesystem(url, storage_options)
    try:
        size = int(fs.size(path)) if size is None else int(size)
        if max_bytes is not None and size > max_bytes:
            raise StorageError(f"{url}: {size:,} bytes exceed the decode scratch limit of {max_bytes:,} bytes "
                               "(decode.scratch_mb); raise it or shorten the video")
        copied = 0
        with fs.open(path, "rb", block_size=block) as src, open(dest, "wb") as dst:
            while True:
                buf = src.read(block)
                if not buf:
                    break
                copied += len(buf)
                if max_bytes is not None and copied > max_bytes:
                    raise StorageError(f"{url}: more than {max_bytes:,} bytes (decode.scratch_mb) while copying")
                dst.write(buf)
        return dest
    except StorageError:
        _unlink(dest)
        raise
    except Exception as e:  # noqa: BLE001
        _unlink(dest)
        err = storage_error(e, url, "read")
        if err is not None:
            raise err from None
        raise


def stage_to_local(url: str, dest: str, storage_options: dict[str, Any] | None = None, *,
                   max_bytes: int | None = None) -> str:
    """Copy what ``url`` names into the local path ``dest``: one object (:func:`copy_to_local`), or a
    *frames folder* (a prefix/directory whose image files are the frames of one video) as a local
    directory ``dest`` holding its image files (direct children only, names kept, so their order is kept).

    Args:
        max_bytes: refuse more than this many bytes in all (the object, or the folder's images).

    Returns:
        ``dest`` (a file or a directory).

    Raises:
        FileNotFoundError: nothing at ``url``. StorageError: over ``max_bytes``, a folder with no image
        files, or a storage failure (see :func:`storage_error`).
    """
    fs, path = filesystem(url, storage_options)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001
        err = storage_error(e, url, "read")
        if err is not None:
            raise err from None
        raise
    if info.get("type") != "directory":
        known = info.get("size")
        return copy_to_local(url, dest, storage_options, max_bytes=max_bytes,
                             size=int(known) if isinstance(known, int) else None)
    return _copy_frames_folder(fs, path, url, dest, max_bytes)


def _copy_frames_folder(fs: Any, path: str, url: str, dest: str, max_bytes: int | None) -> str:
    import posixpath
    import shutil

    from featcomp.video.frames_backend import IMAGE_EXTENSIONS, is_image_name

    try:
        entries = fs.ls(path.rstrip("/"), detail=True)
        images = sorted((e for e in entries if e.get("type") == "file" and is_image_name(posixpath.basename(e["name"]))),
                        key=lambda e: e["name"])
        if not images:
            raise StorageError(f"{url}: a folder with no image files ({', '.join(IMAGE_EXTENSIONS)}); a frames folder "
                               "holds the frames of one video as JPEG/PNG/BMP/WebP files")
        total = sum(int(e.get("size") or 0) for e in images)
        if max_bytes is not None and total > max_bytes:
            raise StorageError(f"{url}: its {len(images)} frames take {total:,} bytes, over the decode scratch limit "
                               f"of {max_bytes:,} bytes (decode.scratch_mb); raise it or split the folder")
        os.makedirs(dest, exist_ok=True)
        fs.get([e["name"] for e in images], [os.path.join(dest, posixpath.basename(e["name"])) for e in images])
        return dest
    except StorageError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except Exception as e:  # noqa: BLE001
        shutil.rmtree(dest, ignore_errors=True)
        err = storage_error(e, url, "read")
        if err is not None:
            raise err from None
        raise


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def add_storage_option_argument(parser: Any) -> None:
    """``--storage-option KEY=VALUE`` (repeatable) on an argparse parser; read it back with
    :func:`storage_options_from_args`."""
    parser.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE", dest="storage_option",
        help="an option of the URLs' filesystem, repeatable (e.g. endpoint_url=http://host:9000, anon=true, "
             "client_kwargs.region_name=eu-west-1); environment credentials (AWS_ACCESS_KEY_ID, ...) apply as usual",
    )


def storage_options_from_args(args: Any) -> dict[str, Any]:
    """The storage_options dict of parsed arguments (``--storage-option``; {} when none)."""
    return parse_storage_options(getattr(args, "storage_option", None) or [])
