"""Input discovery for the extraction job: files, directories, globs, manifests and fsspec URLs.

Every input resolves to :class:`VideoInput` records ``(video_id, path)``. Ids are deterministic, so a
re-run of the same job maps every video to the same key in the store and skips finished work:

=====================  =================================================  ==========================
input                  what it yields                                     video id
=====================  =================================================  ==========================
a video file           that file                                          its file name
a directory            video files under it, recursively, by extension,   path relative to the dir
                       and frames folders (below) as one video each       (a frames folder given
                                                                          as the input: its name)
a glob (``*``, ``?``)  matching video files                               path relative to the
                                                                          glob's fixed prefix dir
a manifest             one video per row (CSV/TSV, Parquet, text)         the ``video_id`` column
                                                                          when given, else the path
                                                                          as written in the manifest
=====================  =================================================  ==========================

A *frames folder* is a directory holding at least :data:`FRAMES_MIN_IMAGES` image files
(``.jpg .jpeg .png .bmp .webp``, any case, not hidden) and no video file (``extensions``): it is one
video (decoded by featcomp's ``frames`` backend at ``decode.frames_fps``), and its subdirectories are
not searched. A directory with videos and a few stray images stays a directory of videos (its
images are ignored); one with a single image is not a video. The same rule holds for URL
directories (an ``s3://bucket/videos/`` prefix with ``clipA/0001.jpg ...`` beside ``b.mp4``: the
video ids are ``clipA`` and ``b.mp4``, as for a local copy of it); the decode task then stages the
folder's images locally (:func:`featcomp.storage.stage_to_local`). Globs list video files only; a
manifest row may name a frames folder (local or URL).

Ids use ``/`` as the separator on every platform and never start with ``/`` or ``./``.

Ids of discovered files (directories, globs, single files) are the file's relative path with
``%XX`` escapes (:func:`name_to_id`, reversed by :func:`id_to_name`): a byte that is not UTF-8 (a
non-UTF-8 file name), a newline or carriage return, and a ``%`` that is followed by two hex digits
in the name itself. Every other character is kept, so any name a file system allows becomes a
valid, deterministic, reversible id. A directory reached twice (a symlink to a parent or to a
directory already walked) is walked once, under the first path found in sorted order.
URLs (``s3://``, ``gs://``, ``https://``, ``memory://`` ...) go through fsspec; local paths through
``os``. This module imports neither ray nor torch: discovery is tested without a runtime.
"""

from __future__ import annotations

import csv
import glob as _glob
import io
import os
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from featcomp.errors import PipelineError
from featcomp.video.frames_backend import IMAGE_EXTENSIONS, is_image_name

__all__ = [
    "VIDEO_EXTENSIONS",
    "MANIFEST_EXTENSIONS",
    "FRAMES_MIN_IMAGES",
    "is_frames_folder",
    "VideoInput",
    "discover",
    "read_manifest",
    "is_url",
    "name_to_id",
    "id_to_name",
    "transport_path",
    "local_path",
]

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp",
)
MANIFEST_EXTENSIONS: tuple[str, ...] = (".csv", ".tsv", ".parquet", ".pq", ".txt", ".lst", ".list")
# a directory with at least this many image files and no video file is a frames folder: one video
FRAMES_MIN_IMAGES = 2

# column names accepted in manifests, first match wins
_PATH_COLUMNS = ("path", "video_path", "file", "filename", "url", "uri", "video")
_ID_COLUMNS = ("video_id", "id", "key", "name")


@dataclass(frozen=True, order=True)
class VideoInput:
    """One video to extract: its deterministic store key and where to read it (path or URL)."""

    video_id: str
    path: str


def is_url(path: str) -> bool:
    """True for ``scheme://...`` strings other than ``file://`` (:func:`featcomp.storage.is_url`)."""
    from featcomp.storage import is_url as _is_url

    return _is_url(path)


def _strip_file_scheme(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def _norm_id(text: str, where: str) -> str:
    vid = text.replace("\\", "/").strip()
    while vid.startswith("./"):
        vid = vid[2:]
    vid = posixpath.normpath(vid).lstrip("/") if vid else vid
    if not vid or vid == "." or vid.startswith("../") or vid == "..":
        raise PipelineError(f"{where}: cannot derive a video id from {text!r}; give the video an explicit id")
    return vid


_HEX = frozenset("0123456789abcdefABCDEF")
_FS_BYTES = "fsbytes:"  # transport_path's prefix for a local path that is not valid UTF-8


def name_to_id(rel: str) -> str:
    """The video id of a relative file path (``os`` separators, possibly non-UTF-8, as ``os`` gives it).

    Separators become ``/``; each byte of a non-UTF-8 name (a lone surrogate of Python's
    ``surrogateescape``), ``\\n``, ``\\r``, and a ``%`` followed by two hex digits become ``%XX``.
    Deterministic and reversible (:func:`id_to_name`); the id is valid UTF-8 without newlines.
    """
    if os.sep != "/":
        rel = rel.replace(os.sep, "/")
    if os.altsep and os.altsep != "/":
        rel = rel.replace(os.altsep, "/")
    out = []
    for i, ch in enumerate(rel):
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte
            out.append(f"%{o - 0xDC00:02X}")
        elif ch in "\n\r":
            out.append(f"%{o:02X}")
        elif ch == "%" and rel[i + 1 : i + 2] in _HEX and rel[i + 2 : i + 3] in _HEX:
            out.append("%25")
        else:
            out.append(ch)
    return "".join(out)


def id_to_name(vid: str) -> str:
    """Inverse of :func:`name_to_id`: the relative path (``/`` separators, ``surrogateescape`` str)."""
    out = bytearray()
    i = 0
    while i < len(vid):
        if vid[i] == "%" and vid[i + 1 : i + 2] in _HEX and vid[i + 2 : i + 3] in _HEX:
            out.append(int(vid[i + 1 : i + 3], 16))
            i += 3
        else:
            out += vid[i].encode("utf-8", "surrogateescape")
            i += 1
    return out.decode("utf-8", "surrogateescape")


def transport_path(path: str) -> str:
    """A local path as a valid UTF-8 string (it travels through Arrow in Ray Data): the path itself,
    or for a non-UTF-8 path ``fsbytes:`` and its bytes ``%``-escaped. :func:`local_path` undoes it."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        from urllib.parse import quote_from_bytes

        return _FS_BYTES + quote_from_bytes(os.fsencode(path), safe="/")


def local_path(path: str) -> str:
    """Inverse of :func:`transport_path` (other strings are returned as they are)."""
    if path.startswith(_FS_BYTES):
        from urllib.parse import unquote_to_bytes

        return os.fsdecode(unquote_to_bytes(path[len(_FS_BYTES):]))
    return path


def _has_ext(name: str, extensions: Sequence[str]) -> bool:
    return name.lower().endswith(tuple(e.lower() for e in extensions))


# --------------------------------------------------------------------------------------- manifests
def _rows_to_inputs(rows: Iterable[tuple[str, str | None]], base: str, where: str) -> list[VideoInput]:
    out = []
    for lineno, (path, vid) in enumerate(rows, start=1):
        path = (path or "").strip()
        if not path:
            continue
        resolved = path
        if not is_url(path) and not os.path.isabs(_strip_file_scheme(path)):
            resolved = posixpath.join(base, path) if is_url(base) else os.path.normpath(os.path.join(base, path))
        vid = (vid or "").strip() or None
        if vid is None and is_url(path):
            vid = path.split("://", 1)[1]  # the URL's bucket/key, without the scheme
        out.append(VideoInput(_norm_id(vid or path, f"{where} row {lineno}"), resolved))
    return out


def _pick(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower = {c.lower().strip(): c for c in columns}
    for name in candidates:
        if name in lower:
            return lower[name]
    return None


def read_manifest(source: str, *, text: bytes | None = None, storage_options: dict | None = None) -> list[VideoInput]:
    """Read a manifest (CSV/TSV with header, Parquet, or plain text) into video inputs.

    CSV/TSV: a header naming a path column (``path``, ``video_path``, ``file``, ``url``, ...) and
    optionally an id column (``video_id``, ``id``, ``key``, ``name``); without a recognizable header
    the first column is the path and the second, when present, the id. Text: one path per line, an
    optional id after a tab or comma; blank lines and ``#`` comments are skipped. Parquet: the same
    column names as CSV. Relative paths are resolved against the manifest's directory.

    Args:
        source: Path or URL of the manifest.
        text: The manifest's bytes, when already read (tests, URLs).
        storage_options: Options of a URL's filesystem (:mod:`featcomp.storage`).

    Raises:
        PipelineError: unreadable manifest, or no path column.
    """
    where = f"manifest {source}"
    ext = os.path.splitext(source.split("?")[0])[1].lower()
    base = posixpath.dirname(source) if is_url(source) else os.path.dirname(os.path.abspath(_strip_file_scheme(source)))
    if text is None:
        try:
            if is_url(source):
                from featcomp.storage import read_bytes

                text = read_bytes(source, storage_options)
            else:
                text = Path(_strip_file_scheme(source)).read_bytes()
        except OSError as e:
            raise PipelineError(f"{where}: cannot read it ({e})") from None
    if ext in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(text))
        except Exception as e:  # pyarrow raises several types for bad files
            raise PipelineError(f"{where}: not a readable Parquet file ({e})") from None
        pcol = _pick(table.column_names, _PATH_COLUMNS)
        if pcol is None:
            raise PipelineError(
                f"{where}: no path column; name one of {', '.join(_PATH_COLUMNS)} (columns: {table.column_names})"
            )
        icol = _pick(table.column_names, _ID_COLUMNS)
        paths = [str(p) if p is not None else "" for p in table.column(pcol).to_pylist()]
        ids = [None if i is None else str(i) for i in table.column(icol).to_pylist()] if icol else [None] * len(paths)
        return _rows_to_inputs(zip(paths, ids), base, where)
    try:
        decoded = text.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PipelineError(f"{where}: not UTF-8 text ({e})") from None
    if ext in (".csv", ".tsv"):
        reader = csv.reader(io.StringIO(decoded), delimiter="\t" if ext == ".tsv" else ",")
        rows = [r for r in reader if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
        if not rows:
            return []
        header = [c.strip() for c in rows[0]]
        pcol = _pick(header, _PATH_COLUMNS)
        if pcol is not None:
            pi = header.index(pcol)
            icol = _pick(header, _ID_COLUMNS)
            ii = header.index(icol) if icol is not None else None
            body = rows[1:]
        else:
            pi, ii, body = 0, (1 if len(rows[0]) > 1 else None), rows
        pairs = [(r[pi] if pi < len(r) else "", r[ii] if ii is not None and ii < len(r) else None) for r in body]
        return _rows_to_inputs(pairs, base, where)
    # plain text
    pairs = []
    for line in decoded.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for sep in ("\t", ","):
            if sep in line:
                p, _, i = line.partition(sep)
                pairs.append((p, i))
                break
        else:
            pairs.append((line, None))
    return _rows_to_inputs(pairs, base, where)


# --------------------------------------------------------------------------------------- discovery
def _glob_root(pattern: str) -> str:
    """The longest leading directory of ``pattern`` without glob magic."""
    parts = pattern.replace("\\", "/").split("/")
    fixed = []
    for p in parts:
        if _glob.has_magic(p):
            break
        fixed.append(p)
    return "/".join(fixed[:-1] if len(fixed) == len(parts) else fixed) or "."


def _local(inp: str, extensions: Sequence[str]) -> list[VideoInput]:
    path = _strip_file_scheme(inp)
    if _glob.has_magic(path):
        root = _glob_root(path)
        if "**" in path.replace("\\", "/").split("/"):  # recursive: walk each real directory once
            matches = _recursive_glob(path, root)
        else:
            matches = sorted(m for m in _glob.glob(path) if not os.path.isdir(m))
        vids = [m for m in matches if _has_ext(m, extensions)]
        if not vids:
            raise PipelineError(f"input {inp!r}: the glob matched no video files ({', '.join(extensions)})")
        return [_file_input(os.path.relpath(m, root), m) for m in vids]
    if os.path.isdir(path):
        out = []
        for full in _walk(path, extensions, frames=True):
            rel = os.path.relpath(full, path)
            if rel == ".":  # the input directory is itself a frames folder: named like a file input
                rel = os.path.basename(os.path.abspath(path))
                if not rel:
                    raise PipelineError(f"input {inp!r}: cannot derive a video id for a frames folder at the root")
            out.append(_file_input(rel, full))
        if not out:
            raise PipelineError(f"input {inp!r}: the directory holds no video files ({', '.join(extensions)}) and "
                                f"no frames folder (>= {FRAMES_MIN_IMAGES} images of {', '.join(IMAGE_EXTENSIONS)})")
        return out
    if not os.path.lexists(path):
        raise PipelineError(f"input {inp!r}: no such file or directory")
    if _has_ext(path, MANIFEST_EXTENSIONS):
        return read_manifest(path)
    return [_file_input(os.path.basename(path), path)]


def _recursive_glob(pattern: str, root: str) -> list[str]:
    """Files matching a ``**`` glob, found by :func:`_walk` (links to a parent do not loop, unlike
    ``glob.glob(recursive=True)``). Same rules as glob: ``**`` spans zero or more directories, ``*`` and
    ``?`` stay inside one name, and names starting with ``.`` match only a pattern that starts so."""
    import fnmatch

    pats = [p for p in pattern.replace("\\", "/").split("/")[len(root.split("/")) if root != "." else 0 :] if p]

    def match(parts: list[str], i: int, j: int) -> bool:
        if j == len(pats):
            return i == len(parts)
        if pats[j] == "**":
            return any(match(parts, k, j + 1) for k in range(i, len(parts) + 1)
                       if all(not q.startswith(".") for q in parts[i:k]))
        if i == len(parts) or (parts[i].startswith(".") and not pats[j].startswith(".")):
            return False
        return fnmatch.fnmatchcase(parts[i], pats[j]) and match(parts, i + 1, j + 1)

    return [f for f in _walk(root, ("",)) if match(os.path.relpath(f, root).split(os.sep), 0, 0)]


def _file_input(rel: str, full: str) -> VideoInput:
    return VideoInput(name_to_id(rel), transport_path(os.path.abspath(full)))


def is_frames_folder(filenames: Iterable[str], extensions: Sequence[str] = VIDEO_EXTENSIONS) -> bool:
    """The frames-folder rule on a directory's file names (not its subdirectories'): at least
    :data:`FRAMES_MIN_IMAGES` image files (:data:`~featcomp.video.IMAGE_EXTENSIONS`, not hidden) and
    no video file (``extensions``). Hidden names (``.*``) do not count."""
    images = 0
    for name in filenames:
        if name.startswith("."):
            continue
        if _has_ext(name, extensions):
            return False
        if is_image_name(name):
            images += 1
    return images >= FRAMES_MIN_IMAGES


def _walk(root: str, extensions: Sequence[str], *, frames: bool = False) -> list[str]:
    """Video files under ``root`` (symlinks followed), each real directory visited once.

    With ``frames``, a directory that :func:`is_frames_folder` accepts (``root`` included) is listed
    itself, as one video, and its subdirectories are not walked."""
    def key(p: str):
        st = os.stat(p)
        return st.st_dev, st.st_ino

    seen = {key(root)}
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        if frames and is_frames_folder(filenames, extensions):
            out.append(dirpath)
            dirnames[:] = []
            continue
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            try:
                k = key(os.path.join(dirpath, d))
            except OSError:  # a broken link or a directory that vanished
                continue
            if k not in seen:  # a link to a parent or to a directory already walked: once only
                seen.add(k)
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if not name.startswith(".") and _has_ext(name, extensions):
                out.append(os.path.join(dirpath, name))
    return out


def _remote(inp: str, extensions: Sequence[str], storage_options: dict | None = None) -> list[VideoInput]:
    import fsspec

    from featcomp.storage import filesystem, storage_error

    fs, fspath = filesystem(inp, storage_options)  # StorageError (pip package named) when the backend is missing
    protocol = inp.split("://", 1)[0]

    def unstrip(p: str) -> str:
        return fsspec.utils.stringify_path(fs.unstrip_protocol(p)) if hasattr(fs, "unstrip_protocol") else f"{protocol}://{p}"

    try:
        if _glob.has_magic(fspath):
            root = _glob_root(fspath)
            matches = sorted(m for m in fs.glob(fspath) if _has_ext(m, extensions))
            if not matches:
                raise PipelineError(f"input {inp!r}: the glob matched no video files")
            return [VideoInput(_norm_id(posixpath.relpath(m, root), f"input {inp}"), unstrip(m)) for m in matches]
        if _has_ext(fspath, MANIFEST_EXTENSIONS):
            return read_manifest(inp, storage_options=storage_options)
        if _has_ext(fspath, extensions):
            return [VideoInput(_norm_id(posixpath.basename(fspath), f"input {inp}"), inp)]
        if fs.isdir(fspath):
            root = fspath.rstrip("/")
            found = _remote_walk(fs.find(root), root, extensions)
            if not found:
                raise PipelineError(f"input {inp!r}: the directory holds no video files ({', '.join(extensions)}) "
                                    f"and no frames folder (>= {FRAMES_MIN_IMAGES} images of {', '.join(IMAGE_EXTENSIONS)})")
            out = []
            for m in found:
                rel = posixpath.relpath(m, root) if m != root else posixpath.basename(root)
                if not rel:
                    raise PipelineError(f"input {inp!r}: cannot derive a video id for a frames folder at the root")
                out.append(VideoInput(_norm_id(rel, f"input {inp}"), unstrip(m)))
            return out
    except PipelineError:
        raise
    except Exception as e:  # network and permission errors of any backend
        err = storage_error(e, inp, "list")
        if err is not None:
            raise err from None
        raise PipelineError(f"input {inp!r}: cannot list it ({type(e).__name__}: {e})") from None
    # an extension-less object: treat it as one video
    return [VideoInput(_norm_id(posixpath.basename(fspath.rstrip("/")), f"input {inp}"), inp)]


def _remote_walk(files: Iterable[str], root: str, extensions: Sequence[str]) -> list[str]:
    """The videos under ``root`` of a listing (every object's path, as ``fs.find`` gives it): video files
    by extension, and frames folders (:func:`is_frames_folder` on a directory's own objects, ``root``
    included; hidden directories are not) as one video each, whose subdirectories are not searched,
    exactly as :func:`_walk` does on a local directory. Returns paths sorted (a folder by its path)."""
    by_dir: dict[str, list[str]] = {}
    for f in files:
        by_dir.setdefault(posixpath.dirname(f), []).append(posixpath.basename(f))
    folders = sorted(d for d, names in by_dir.items()
                     if (d == root or d.startswith(root + "/"))
                     and not any(p.startswith(".") for p in posixpath.relpath(d, root).split("/") if p != ".")
                     and is_frames_folder(names, extensions))
    kept: list[str] = []
    for d in folders:  # sorted: a folder comes before its subdirectories
        if not any(d == k or d.startswith(k + "/") for k in kept):
            kept.append(d)
    out = list(kept)
    for d, names in by_dir.items():
        if any(d == k or d.startswith(k + "/") for k in kept):
            continue  # inside a frames folder: not searched
        out += [posixpath.join(d, n) for n in names if _has_ext(n, extensions)]
    return sorted(out)


def discover(inputs: Sequence[str], *, extensions: Sequence[str] = VIDEO_EXTENSIONS,
             storage_options: dict | None = None) -> list[VideoInput]:
    """Resolve job inputs to a sorted, de-duplicated list of videos with deterministic ids.

    Args:
        inputs: Files, directories (searched recursively for ``extensions``), globs, manifests
            (``.csv``/``.tsv``/``.parquet``/``.txt``/``.lst``), and fsspec URLs of any of these.
        extensions: Video file extensions, case-insensitive, with the dot.
        storage_options: Options of the URLs' filesystem (``endpoint_url``, ``key``, ...;
            :mod:`featcomp.storage`); environment credentials apply as usual.

    Returns:
        Videos sorted by id. The same path listed twice is kept once.

    Raises:
        PipelineError: no inputs, an input that does not exist or matches nothing, or one id that
            names two different paths (give explicit ids in a manifest to resolve it).
    """
    if not inputs:
        raise PipelineError("no inputs: give video files, directories, globs, manifests or URLs")
    by_id: dict[str, VideoInput] = {}
    for inp in inputs:
        inp = str(inp)
        found = _remote(inp, extensions, storage_options) if is_url(inp) else _local(inp, extensions)
        for v in found:
            prev = by_id.get(v.video_id)
            if prev is not None and prev.path != v.path:
                raise PipelineError(
                    f"video id {v.video_id!r} names two files: {prev.path} and {v.path}; "
                    "give one input root per job or explicit ids in a manifest"
                )
            by_id[v.video_id] = v
    if not by_id:
        raise PipelineError(f"no videos found in {list(inputs)}")
    return sorted(by_id.values())
