"""Reading a store's header and index: the metadata layer both the reader and the writer stand on.

``read_header`` parses the featcomp header in the root ``zarr.json``; ``load_index`` merges every
compacted index file and every commit log into one :class:`~featcomp.store.format.IndexTable`. They
lived in ``writer.py`` and ``reader.py``, which then imported each other (issue 15); here they import
only the byte formats (:mod:`featcomp.store.format`) and the filesystem layer
(:mod:`featcomp.store._fs`).
"""

from __future__ import annotations

import json

from featcomp.errors import DamagedIndexError, StoreError
from featcomp.store._fs import StoreFS, read_logs
from featcomp.store.format import FORMAT_VERSION, IndexTable, decode_index_file, decode_log
from featcomp.store.headers import StoreHeader

__all__ = ["read_header", "read_store_header", "load_index"]


def read_header(fs: StoreFS) -> dict:
    """The store header as recorded (a dict), or StoreError when ``fs`` is not a featcomp store (or of a
    newer version). Only identity and version are checked, so ``verify`` and ``repair`` can still look
    at a store whose other fields are damaged; :func:`read_store_header` checks every field."""
    try:
        doc = json.loads(fs.read("zarr.json"))
    except FileNotFoundError:
        raise StoreError(
            f"{fs.url} is not a featcomp store (no zarr.json); create one with featcomp.StoreWriter"
        ) from None
    except (ValueError, RecursionError) as e:
        raise StoreError(f"{fs.url}: zarr.json is not valid JSON ({e})") from None
    attrs = doc.get("attributes", {}) if isinstance(doc, dict) else None
    h = attrs.get("featcomp") if isinstance(attrs, dict) else None
    StoreHeader.check_identity(h, fs.url, FORMAT_VERSION)  # the full checks: StoreHeader.from_dict (read_store_header)
    return h


def read_store_header(fs: StoreFS) -> tuple[dict, StoreHeader]:
    """The store header (whole: a version-5 header's sidecar file read, checked and put back in) and the
    checked :class:`~featcomp.store.headers.StoreHeader`.

    Raises:
        StoreError: not a featcomp store, a newer version, or a damaged field (naming the store).
    """
    from featcomp.store.sidecar import unpack_header

    h = unpack_header(read_header(fs), fs.read, fs.url)  # format version 5: the bulk is in a sidecar file
    return h, StoreHeader.from_dict(h, fs.url, FORMAT_VERSION)


def load_index(fs: StoreFS, *, retries: int = 8, live_parts: set | None = None,
               damaged: dict[str, str] | None = None,
               named: dict[str, tuple[list[str], list[str]]] | None = None) -> IndexTable:
    """Merge every ``index/*.fcidx`` file and every commit log into one table (newest wins).

    Retries when a file vanishes between listing and reading (a writer or ``verify --compact``
    replaced it).

    Args:
        live_parts: filled with the names of the parts that still have a commit log (a writer that
            is open, or crashed). Every other part belongs to a closed writer and never changes again.
        damaged: when given, an index file that cannot be read, or a commit-log line that is not a
            valid record, is left out and recorded here (``{"index/<name>": reason}``, a log line as
            ``"index/<name>.log line <n>"``) instead of raising: the store keeps serving every video
            whose record is intact (``FeatureStore.damaged``; ``featcomp verify`` reports them). The
            videos of a damaged file are not served; a re-run of the job writes them again.
        named: with ``damaged``: filled with what each damaged entry still names, ``{where: (parts,
            video ids)}``: a version-5 index file keeps its part names and video ids in a separately
            checked block; a damaged commit-log line names the id it spells (when it still parses as a
            JSON object with a string ``id``) and its log's part.
    """
    last: Exception | None = None
    for _ in range(retries):
        try:
            tables = []
            if live_parts is not None:
                live_parts.clear()
            bad: dict[str, str] = {}
            names: dict[str, tuple[list[str], list[str]]] = {}
            for name in fs.listdir("index"):
                if name.endswith(".fcidx"):
                    try:
                        tables.append(decode_index_file(fs.read(f"index/{name}"), f"{fs.url}/index/{name}"))
                    except StoreError as e:
                        if damaged is None:
                            raise
                        bad[f"index/{name}"] = str(e)
                        if isinstance(e, DamagedIndexError) and e.video_ids is not None:
                            names[f"index/{name}"] = (list(e.parts or []), list(e.video_ids))
            logs = read_logs(fs, "index", ".log")
            if live_parts is not None:
                live_parts.update(logs)
            for part, data in sorted(logs.items()):
                where = f"{fs.url}/index/{part}.log"
                try:
                    recs = decode_log(data, where)
                except StoreError:
                    if damaged is None:
                        raise
                    recs = []
                    for no, line in enumerate(data.split(b"\n")[:-1], 1):  # the valid lines, one by one
                        try:
                            recs += decode_log(line + b"\n", where)
                        except StoreError as e:
                            bad[f"index/{part}.log line {no}"] = str(e).replace("line 1 ", f"line {no} ", 1)
                            vid = _id_of_line(line)
                            if vid is not None:
                                names[f"index/{part}.log line {no}"] = ([part], [vid])
                if recs:
                    tables.append(IndexTable.from_records([part], [(0, r) for r in recs]))
            if damaged is not None:
                damaged.clear()
                damaged.update(bad)
            if named is not None:
                named.clear()
                named.update(names)
            return IndexTable.concat(tables)
        except FileNotFoundError as e:
            last = e
            continue
    raise StoreError(f"{fs.url}: the index kept changing while being read ({last}); retry")


def _id_of_line(line: bytes) -> str | None:
    """The video id a damaged commit-log line spells, if it still parses as a JSON object with a
    string ``id`` (a valid id: non-empty, no NUL/newline); else None."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    vid = rec.get("id") if isinstance(rec, dict) else None
    if isinstance(vid, str) and vid and "\x00" not in vid and "\n" not in vid:
        return vid
    return None
