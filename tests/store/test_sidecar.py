"""Store format version 5: the header's float arrays and coding tables in a binary sidecar (issue 18)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from featcomp.entropy import EntropyCodec
from featcomp.errors import StoreError
from featcomp.store import StoreWriter, open_store, verify_store
from featcomp.store.format import FORMAT_VERSION, SIDECAR_FORMAT_VERSION
from featcomp.store.sidecar import (
    SIDECAR_MIN_JSON_BYTES,
    decode_sidecar,
    encode_sidecar,
    is_sidecar_name,
    pack_header,
    unpack_header,
)
from featcomp.store.writer import build_header

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "store"


def _sidecar(path: Path) -> Path:
    (p,) = [p for p in path.iterdir() if is_sidecar_name(p.name)]
    return p


def _codec(c: int, seed: int = 0) -> EntropyCodec:
    rng = np.random.default_rng(seed)
    fit = np.rint(rng.laplace(0, 2.0, (2000, c))).astype(np.int32)
    return EntropyCodec.fit(fit, offsets=np.linspace(-0.3, 0.3, c).astype(np.float32))


def _card(c: int, levels: int) -> tuple[dict, np.ndarray]:
    base = np.linspace(0.25, 1.0, c).astype(np.float32)
    ls = np.stack([base * np.float32(1.4**lv) for lv in range(levels)]).astype(np.float32)
    return {"backbone": {"name": "synthetic"}, "head": {"channels": c},
            "dequantization": {"scale": ls[0].tolist(), "level_scale": ls.tolist()}}, ls


def test_golden_sidecar_store_decodes_and_gives_back_the_whole_header():
    """tests/fixtures/make_store_sidecar_golden.py: version 5, the numbers come back from the sidecar."""
    exp = np.load(GOLDEN / "golden_sidecar_expected.npz")
    path = GOLDEN / "golden_sidecar"
    doc = json.loads((path / "zarr.json").read_text())["attributes"]["featcomp"]
    assert doc["format_version"] == SIDECAR_FORMAT_VERSION == 5 and doc["codec"]["tables"] == {"$fcb": 4}
    assert (path / "zarr.json").stat().st_size < 2000  # the bulk is in the sidecar
    st = open_store(path)
    assert st.header["format_version"] == 5 and st.rate_levels == 4
    np.testing.assert_array_equal(st.level_scale, exp["header/level_scale"])
    np.testing.assert_array_equal(np.asarray(st.header["dequantization"]["offsets"], np.float32), exp["header/offsets"])
    # float64 values that are not float32 come back exactly; the card's steps are the header's
    assert st.header["model_card"]["training"]["curve"] == exp["header/curve"].tolist()
    assert st.header["model_card"]["dequantization"]["level_scale"] == st.header["dequantization"]["level_scale"]
    assert st.codec.digest == doc["codec"]["digest"]
    for vid in st:
        v = st[vid]
        np.testing.assert_array_equal(v.latents(), exp[f"latents/{vid}"])
        np.testing.assert_array_equal(v.levels, exp[f"levels/{vid}"])
        np.testing.assert_array_equal(v.timestamps, exp[f"timestamps/{vid}"])
        np.testing.assert_array_equal(v.features(), exp[f"features/{vid}"])
    assert verify_store(path).ok
    assert st.info()["header_bytes"] == (path / "zarr.json").stat().st_size + _sidecar(path).stat().st_size


def test_older_golden_stores_keep_their_versions_and_have_no_sidecar():
    for name, version in (("golden", 1), ("golden_levels", 3), ("golden_int8", 4), ("golden_checksums", 1)):
        st = open_store(GOLDEN / name)
        assert st.header["format_version"] == version and "sidecar" not in st.header
        assert not any(is_sidecar_name(p.name) for p in (GOLDEN / name).iterdir())


def test_small_headers_keep_the_old_layout_byte_for_byte(tmp_path):
    codec = _codec(6)
    card, ls = _card(6, 3)
    h = build_header(codec, card, raw=False, chunk_frames=8, shard_chunks=2, raw_level=3, level_scale=ls)
    assert len(json.dumps(h)) < SIDECAR_MIN_JSON_BYTES and pack_header(h) is None
    with StoreWriter(tmp_path / "s", codec, model_card=card, levels=True, fsync=False, chunk_frames=8,
                     shard_chunks=2) as w:
        w.write("a", np.zeros((3, 6), np.int32), np.arange(3.0), levels=np.zeros(3, np.uint8))
    doc = json.loads((tmp_path / "s" / "zarr.json").read_text())["attributes"]["featcomp"]
    assert doc == h and doc["format_version"] == 3


def test_large_header_roundtrip_through_a_writer_and_a_second_writer(tmp_path):
    c, levels = 300, 5
    codec = _codec(c, 1)
    card, ls = _card(c, levels)
    card["training"] = {"lams": [0.1 * i + 1e-9 for i in range(40)], "ints": list(range(100)),
                        "tables": {"curve": [float(i) for i in range(30)]}, "grid": [[[0.5] * 8] * 3] * 2}
    card["tables"] = [1.25] * 20  # a card key named like the codec's: numbers, not tables
    h = build_header(codec, card, raw=False, chunk_frames=8, shard_chunks=2, raw_level=3, level_scale=ls)
    packed, blob = pack_header(h)
    assert len(json.dumps(packed)) < 2500 and len(blob) < len(json.dumps(h)) / 3
    back = unpack_header(packed, lambda key: blob if key == packed["sidecar"]["file"] else b"", "mem://s")
    tables = back["codec"].pop("tables"), h["codec"].pop("tables")
    assert {k: v for k, v in back.items() if k not in ("format_version", "sidecar")} == \
        {k: v for k, v in h.items() if k != "format_version"}
    from featcomp.store.codec import decode_tables

    assert decode_tables(tables[0], codec.digest) == codec  # the tables come back (checked by digest)
    rng = np.random.default_rng(3)
    k = np.rint(rng.laplace(0, 2, (20, c))).astype(np.int32)
    lv = rng.integers(0, levels, 20).astype(np.uint8)
    for wid in ("w1", "w2"):  # the second writer opens the version-5 store and checks digest and steps
        with StoreWriter(tmp_path / "s", codec, model_card=card, levels=True, writer_id=wid, fsync=False) as w:
            w.write(f"v-{wid}", k, np.arange(20.0), levels=lv)
    st = open_store(tmp_path / "s")
    assert st.header["format_version"] == FORMAT_VERSION == 5 and sorted(st) == ["v-w1", "v-w2"]
    np.testing.assert_array_equal(st["v-w2"].features(), (k + codec.offsets).astype(np.float32) * ls[lv])
    assert [p.name for p in (tmp_path / "s").iterdir() if is_sidecar_name(p.name)] == [packed["sidecar"]["file"]]
    with pytest.raises(StoreError, match="digest mismatch"):
        StoreWriter(tmp_path / "s", _codec(c, 2), model_card=card, levels=True, writer_id="w3", fsync=False)


@pytest.fixture
def golden_copy(tmp_path) -> Path:
    p = tmp_path / "s"
    shutil.copytree(GOLDEN / "golden_sidecar", p)
    return p


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing", "swapped"])
def test_damaged_sidecar_is_a_store_error_naming_it_and_verify_reports_it(golden_copy, damage):
    sc = _sidecar(golden_copy)
    b = bytearray(sc.read_bytes())
    if damage == "flip":
        b[len(b) // 2] ^= 0x10
        sc.write_bytes(bytes(b))
    elif damage == "truncate":
        sc.write_bytes(bytes(b[:-7]))
    elif damage == "missing":
        sc.unlink()
    else:  # another (valid) sidecar under this name
        sc.write_bytes(encode_sidecar([(3, (1, 4, 1), b"abcd")]))
    with pytest.raises(StoreError, match=sc.name) as e:
        open_store(golden_copy)
    assert "damaged" in str(e.value)
    rep = verify_store(golden_copy)
    assert not rep.ok and any(i["file"] == sc.name for i in rep.issues), rep.issues


def test_featcomp_verify_names_a_damaged_sidecar(golden_copy, capsys):
    from featcomp.cli import main as cli_main

    assert cli_main(["verify", str(golden_copy)]) == 0
    sc = _sidecar(golden_copy)
    sc.write_bytes(sc.read_bytes()[:-1] + b"\x00")
    capsys.readouterr()
    assert cli_main(["verify", "--json", str(golden_copy)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [p["file"] for p in out["problems"]] == [sc.name] and "damaged" in out["problems"][0]["problem"]


@pytest.mark.parametrize("change", [
    lambda h: h["dequantization"].__setitem__("level_scale", {"$fcb": 99}),
    lambda h: h["dequantization"].__setitem__("level_scale", {"$fcb": 4}),  # the tables entry, not floats
    lambda h: h["codec"].__setitem__("tables", {"$fcb": 0}),  # a float entry where the tables go
    lambda h: h["dequantization"].__setitem__("offsets", {"$fcb": "1"}),
    lambda h: h["sidecar"].__setitem__("file", "../zarr.json"),
    lambda h: h["sidecar"].__setitem__("bytes", 5),
    lambda h: h.__setitem__("format_version", 4),
    lambda h: h["sidecar"].__setitem__("sha256", "0" * 64),
    lambda h: h["dequantization"].__setitem__("offsets", []),  # found by the store-header-v5 fuzz target
    lambda h: h["dequantization"].__setitem__("offsets", {"$fcb": 0}),  # 20 floats for 256 channels
])
def test_damaged_references_in_zarr_json_are_store_errors(golden_copy, change):
    doc = json.loads((golden_copy / "zarr.json").read_text())
    change(doc["attributes"]["featcomp"])
    (golden_copy / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="damaged|corrupt"):
        open_store(golden_copy)
    assert not verify_store(golden_copy).ok


def test_decode_sidecar_refuses_bad_bytes_with_bounded_work():
    good = encode_sidecar([(1, (1, 4, 1), np.arange(4, dtype="<f4").tobytes()), (3, (1, 6, 1), b"abcdef")])
    out = decode_sidecar(good, "x.fcb")
    assert out[0].tolist() == [0.0, 1.0, 2.0, 3.0] and out[1] == b"abcdef"
    for bad in (b"", good[:10], b"XXXXXX" + good[6:], good[:-1], good[:20] + bytes([good[20] ^ 1]) + good[21:]):
        with pytest.raises(StoreError, match="x.fcb"):
            decode_sidecar(bad, "x.fcb")
    # a valid CRC over a payload that declares 2**31 values in an entry of 16 bytes
    import struct
    import zlib

    from numcodecs.zstd import Zstd

    payload = struct.pack("<I", 1) + struct.pack("<BBBIII", 1, 4, 2, 1 << 16, 1 << 15, 16) + bytes(16)
    comp = bytes(Zstd(3).encode(payload))
    forged = good[:8] + struct.pack("<II", len(payload), zlib.crc32(comp)) + comp
    with pytest.raises(StoreError, match="values in 16 bytes"):
        decode_sidecar(forged, "x.fcb")
    newer = good[:6] + bytes([9]) + good[7:]
    with pytest.raises(StoreError, match="upgrade featcomp"):
        decode_sidecar(newer, "x.fcb")


def test_a_writer_refuses_no_store_over_a_leftover_sidecar(tmp_path):
    """A creator that died after writing the sidecar and before zarr.json leaves a content-named file:
    the next creator is not refused as writing into a foreign directory."""
    c = 300
    codec = _codec(c, 1)
    card, ls = _card(c, 3)
    h = build_header(codec, card, raw=False, chunk_frames=None, shard_chunks=2, raw_level=3, level_scale=ls)
    packed, blob = pack_header(h)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / packed["sidecar"]["file"]).write_bytes(blob)
    (tmp_path / "s" / (packed["sidecar"]["file"] + ".0a1b2c3d4e5f.tmp")).write_bytes(blob[:10])
    with StoreWriter(tmp_path / "s", codec, model_card=card, levels=True, fsync=False) as w:
        w.write("a", np.zeros((2, c), np.int32), np.arange(2.0), levels=np.zeros(2, np.uint8))
    assert open_store(tmp_path / "s").header["format_version"] == 5


@pytest.mark.timeout(120)
def test_version5_store_on_an_s3_api_server(s3_server, s3_bucket, tmp_path):
    """The sidecar is written and read through the object-storage layer like zarr.json (moto, tests/s3.py);
    a second writer on the bucket is not refused by the sidecar it finds, and a damaged sidecar is named."""
    c = 300
    codec = _codec(c, 1)
    card, ls = _card(c, 3)
    url = f"s3://{s3_bucket}/v5.zarr"
    rng = np.random.default_rng(5)
    k = np.rint(rng.laplace(0, 2, (12, c))).astype(np.int32)
    lv = rng.integers(0, 3, 12).astype(np.uint8)
    for wid in ("a", "b"):
        with StoreWriter(url, codec, model_card=card, levels=True, writer_id=wid, chunk_frames=8,
                         storage_options=s3_server.storage_options) as w:
            w.write(f"v-{wid}", k, np.arange(12.0), levels=lv)
    st = open_store(url, storage_options=s3_server.storage_options)
    assert st.header["format_version"] == 5 and sorted(st) == ["v-a", "v-b"]
    np.testing.assert_array_equal(st["v-b"].features(), (k + codec.offsets).astype(np.float32) * ls[lv])
    assert verify_store(url, storage_options=s3_server.storage_options).ok
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **s3_server.storage_options)
    name = st.header["sidecar"]["file"]
    fs.pipe(f"{s3_bucket}/v5.zarr/{name}", fs.cat(f"{s3_bucket}/v5.zarr/{name}")[:-3])
    rep = verify_store(url, storage_options=s3_server.storage_options)
    assert not rep.ok and [i["file"] for i in rep.issues] == [name]
