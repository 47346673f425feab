"""The typed store and part headers (featcomp/store/headers.py): every stored version parses, and
``from_dict(d).to_dict()`` gives back exactly what featcomp writes, byte for byte in ``zarr.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from featcomp import StoreWriter, open_store
from featcomp.errors import StoreError
from featcomp.store.format import FORMAT_NAME, PACKAGE_HINT, format_version_for, group_doc
from featcomp.store.headers import Dequantization, PartHeader, StoreHeader

from .conftest import C, FakeModel, laplace_latents
from .test_kinds import ar_latents, temporal_codec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "store"
GOLDEN = ["golden", "golden_levels", "golden_checksums", "golden_names", "golden_int8"]


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_headers_parse_and_give_back_their_json_byte_for_byte(name):
    raw = (FIXTURES / name / "zarr.json").read_bytes()
    d = json.loads(raw)["attributes"]["featcomp"]
    h = StoreHeader.from_dict(d, name)
    assert h.to_dict() == d
    assert group_doc({"featcomp": h.to_dict()}) == raw  # the root zarr.json, byte for byte
    assert StoreHeader.from_dict(h.to_dict(), name) == h
    parts = sorted((FIXTURES / name / "parts").glob("*/zarr.json"))
    assert parts
    for f in parts:
        a = json.loads(f.read_bytes())["attributes"]["featcomp"]
        ph = PartHeader.from_dict(a, str(f))
        assert ph.to_dict() == a and list(ph.to_dict()) == list(a)  # same keys in the same order
        assert ph.part == f.parent.name and ph.format_version == h.format_version


def test_golden_headers_carry_their_versions_and_steps():
    lv = StoreHeader.from_dict(json.loads((FIXTURES / "golden_levels" / "zarr.json").read_bytes())
                               ["attributes"]["featcomp"], "golden_levels")
    assert (lv.format_version, lv.mode, lv.kind, lv.rate_levels) == (3, "coded", "factorized", 3)
    assert lv.dequantization.level_scale_array.shape == (3, lv.channels)
    assert lv.dequantization.level_scale_array.dtype == np.float32
    st = open_store(FIXTURES / "golden_levels")
    np.testing.assert_array_equal(st.level_scale, lv.dequantization.level_scale_array)
    np.testing.assert_array_equal(st._scale, lv.dequantization.scale_array)
    i8 = StoreHeader.from_dict(json.loads((FIXTURES / "golden_int8" / "zarr.json").read_bytes())
                               ["attributes"]["featcomp"], "golden_int8")
    assert (i8.format_version, i8.raw_dtype, i8.kind, i8.digest) == (4, "int8", None, None)
    assert i8.dequantization.per == "video" and i8.dequantization.scale_array is None


# -- the headers main wrote before the typed layer, built the old way (a frozen reference of versions 1-4)
def _reference_header(codec, card, *, raw, chunk_frames, shard_chunks, raw_level, level_scale=None,
                      raw_dtype="float16", kind=None):
    from featcomp import __version__
    from featcomp.store.codec import CODEC_NAME, encode_tables
    from featcomp.store.writer import INT8_FORMULA

    int8 = raw and raw_dtype == "int8"
    h = {
        "format": FORMAT_NAME,
        "format_version": format_version_for(kind or "factorized", levels=level_scale is not None,
                                             raw_dtype="int8" if int8 else None),
        "package": "featcomp", "package_hint": PACKAGE_HINT, "featcomp_version": __version__,
        "mode": "raw" if raw else "coded",
        "dtype": ("int8" if int8 else "float16") if raw else "int32",
        "chunk_frames": chunk_frames, "shard_chunks": int(shard_chunks), "model_card": card,
    }
    if raw:
        h["codec"] = {"name": "zstd", "level": int(raw_level), "via": "numcodecs"}
        if int8:
            h["dequantization"] = {
                "formula": INT8_FORMULA, "per": "video",
                "scale": "commit record 'sc' / index column 'scales'; videos/<writer>/scale[row] for plain zarr",
            }
        return h
    h["codec"] = {"name": CODEC_NAME, "digest": codec.digest, "channels": int(codec.channels),
                  "precision": int(getattr(codec, "precision", getattr(getattr(codec, "family", None), "precision", 0))),
                  "tables": encode_tables(codec)}
    if kind not in (None, "factorized"):
        h["codec"]["kind"] = kind
    h["channels"] = int(codec.channels)
    deq = card.get("dequantization", {})
    h["dequantization"] = {
        "formula": "features = (k + offsets) * scale  (per channel, float32)",
        "offsets": [float(x) for x in np.asarray(deq.get("offsets", codec.offsets), np.float32).reshape(-1)],
        "scale": [float(x) for x in np.asarray(deq.get("scale", [1.0] * codec.channels), np.float32).reshape(-1)],
    }
    if level_scale is not None:
        h["rate_levels"] = int(level_scale.shape[0])
        h["dequantization"]["formula"] = (
            "features = (k + offsets) * scale  (per channel, float32); "
            "a video with levels: frame t uses level_scale[levels[t]] for scale"
        )
        h["dequantization"]["level_scale"] = [[float(x) for x in row] for row in level_scale]
    return h


class _LevelModel(FakeModel):
    def model_card(self) -> dict:
        d = super().model_card()
        d["dequantization"]["level_scale"] = [[0.5 + 0.25 * lv] * C for lv in range(3)]
        return d


@pytest.mark.parametrize("kind", ["factorized", "temporal", "levels", "raw16", "raw8"])
def test_new_stores_write_the_same_header_bytes_as_before(tmp_path, codec, kind):
    rng = np.random.default_rng(3)
    x = laplace_latents(rng, 20)
    kw: dict = {}
    extra: dict = {}
    ref_kw: dict = dict(raw=False, chunk_frames=8, shard_chunks=2, raw_level=3)
    if kind == "factorized":
        kw = dict(codec_or_model=codec)
        ref_args = (codec, {})
    elif kind == "temporal":
        tc = temporal_codec(0)
        kw, x = dict(codec_or_model=tc), ar_latents(rng, 20)
        ref_args, ref_kw["kind"] = (tc, {}), "temporal"
    elif kind == "levels":
        m = _LevelModel(codec, np.full(C, 0.5, np.float32))
        kw, extra = dict(codec_or_model=m, levels=True), {"levels": np.arange(20) % 3}
        ref_args = (codec, m.model_card())
        ref_kw["level_scale"] = np.asarray(m.model_card()["dequantization"]["level_scale"], np.float32)
    else:
        kw = dict(raw=True, raw_dtype="int8" if kind == "raw8" else "float16")
        x = x.astype(np.float32)
        ref_args = (None, {})
        ref_kw.update(raw=True, raw_dtype=kw["raw_dtype"])
    path = tmp_path / kind
    with StoreWriter(path, writer_id="w", chunk_frames=8, shard_chunks=2, **kw) as w:
        w.write("v", x, np.arange(20) / 5.0, **extra)
    ref = _reference_header(*ref_args, **ref_kw)
    assert (path / "zarr.json").read_bytes() == group_doc({"featcomp": ref})
    got = json.loads((path / "zarr.json").read_bytes())["attributes"]["featcomp"]
    assert StoreHeader.from_dict(got, str(path)).to_dict() == ref
    part = json.loads((path / "parts" / "w" / "zarr.json").read_bytes())["attributes"]["featcomp"]
    assert list(part.items()) == [("part", "w"), ("format_version", ref["format_version"]), ("videos", "videos/w")]
    assert open_store(path).store_header.format_version == {"factorized": 1, "temporal": 2, "levels": 3,
                                                             "raw16": 1, "raw8": 4}[kind]


def _golden_header() -> dict:
    return json.loads((FIXTURES / "golden_levels" / "zarr.json").read_bytes())["attributes"]["featcomp"]


@pytest.mark.parametrize("field, value, match", [
    ("mode", "cooked", "corrupt store header in zarr.json .mode 'cooked'"),
    ("format_version", "3", "corrupt store header .format_version '3'"),
    ("format_version", 99, "format version 99 is newer than this featcomp supports .5.; upgrade featcomp"),
    ("format", "other", "not a featcomp store"),
    ("rate_levels", 300, "rate_levels 300"),
    ("rate_levels", 2, r"level_scale has shape \(3, 6\), expected \(2, 6\)"),
    ("codec", [1, 2], "codec is list"),
    ("model_card", "x", "model_card is str"),
])
def test_damaged_store_headers_raise_store_errors_naming_the_store(field, value, match):
    d = _golden_header()
    d[field] = value
    with pytest.raises(StoreError, match=match) as e:
        StoreHeader.from_dict(d, "s3://bucket/feats.zarr")
    assert "s3://bucket/feats.zarr" in str(e.value)


def test_damaged_dequantization_sections_raise_store_errors():
    d = _golden_header()
    del d["dequantization"]["level_scale"]
    with pytest.raises(StoreError, match="3 rate levels but no readable dequantization.level_scale"):
        StoreHeader.from_dict(d, "feats.zarr")
    d = _golden_header()
    del d["dequantization"]["offsets"]
    with pytest.raises(StoreError, match="corrupt dequantization"):
        StoreHeader.from_dict(d, "feats.zarr")
    d = _golden_header()
    d["dequantization"]["scale"] = ["a", "b"]
    with pytest.raises(StoreError, match="feats.zarr: corrupt dequantization"):
        StoreHeader.from_dict(d, "feats.zarr")
    with pytest.raises(StoreError, match="feats.zarr"):
        Dequantization.from_dict("x", "feats.zarr", coded=True)


@pytest.mark.parametrize("attrs", [None, [], {"part": 3, "format_version": 1}, {"part": "w", "format_version": True},
                                   {"part": "w", "format_version": 9}, {"part": "w", "format_version": 1, "videos": 5}])
def test_damaged_part_headers_raise_store_errors_naming_the_file(attrs):
    with pytest.raises(StoreError, match="parts/w/zarr.json"):
        PartHeader.from_dict(attrs, "feats.zarr/parts/w/zarr.json")


def test_headers_are_frozen(codec):
    h = StoreHeader.from_dict(_golden_header(), "g")
    with pytest.raises(AttributeError):
        h.rate_levels = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        h.dequantization.scale = ()  # type: ignore[misc]


def _store_imports(module: str) -> set[str]:
    """The featcomp.store modules ``module`` imports (at module level or inside functions)."""
    import ast

    src = (Path(__file__).resolve().parents[2] / "featcomp" / "store" / f"{module}.py").read_text()
    out = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("featcomp.store."):
            out.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[2] for a in node.names if a.name.startswith("featcomp.store.")}
    return out


def test_store_imports_go_one_way_and_the_reader_needs_no_head():
    assert _store_imports("headers") == {"format"}
    assert _store_imports("index") <= {"_fs", "format", "headers", "sidecar"}
    assert _store_imports("sidecar") == {"format"}  # the version-5 header sidecar: bytes only
    assert "writer" not in _store_imports("reader") and "reader" not in _store_imports("writer")
    assert not {"verify", "repair", "dataset"} & (_store_imports("reader") | _store_imports("writer"))
    root = Path(__file__).resolve().parents[2] / "featcomp" / "store"
    for name in ("headers", "index", "reader", "format", "sidecar"):
        src = (root / f"{name}.py").read_text()
        assert "import torch" not in src and ".scale_at(" not in src, name  # steps come from the header


def _index_json(data: bytes) -> bytes:
    import struct

    if data[6] >= 5:  # the names block comes first
        (m,) = struct.unpack("<I", data[8:12])
        pos = 20 + m
        (hlen,) = struct.unpack("<I", data[pos : pos + 4])
        return data[pos + 8 : pos + 8 + hlen]
    (hlen,) = struct.unpack("<I", data[8:12])
    return data[12 : 12 + hlen]


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_index_file_headers_parse_and_give_back_their_bytes(name):
    from featcomp.store.format import decode_index_file, encode_index_file
    from featcomp.store.headers import IndexFileHeader

    files = sorted((FIXTURES / name / "index").glob("*.fcidx"))
    assert files
    for f in files:
        data = f.read_bytes()
        raw = _index_json(data)
        ih = IndexFileHeader.from_dict(json.loads(raw), data[6], names_block=data[6] >= 5)
        assert ih.to_json() == raw
        assert (ih.parts is None) == (data[6] >= 5)
        assert ih.n == len(decode_index_file(data, str(f)))
        assert encode_index_file(decode_index_file(data, str(f)), version=data[6]) == data


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(n=-1), "row count -1"),
    (lambda d: d.update(n=True), "row count True"),
    (lambda d: d.update(columns=[["start", "<i8", 0]]), "malformed column table"),
    (lambda d: d.update(columns=[["start", "object", 0, 8]]), "malformed column table"),
    (lambda d: d.update(parts=[1]), "malformed part names"),
    (lambda d: d.pop("parts"), "parts"),
])
def test_damaged_index_file_headers_are_refused(edit, match):
    from featcomp.store.headers import IndexFileHeader

    data = (FIXTURES / "golden" / "index" / "golden.fcidx").read_bytes()
    d = json.loads(_index_json(data))
    edit(d)
    with pytest.raises((ValueError, TypeError, KeyError), match=match):
        IndexFileHeader.from_dict(d, data[6], names_block=False)
