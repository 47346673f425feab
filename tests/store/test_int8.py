"""int8 raw stores (issue 17): symmetric per-video per-channel quantization with float32 scales kept with
each video (commit record ``sc``, index columns ``scales_len``/``scales``, ``videos/<writer>/scale``),
store format version 4; readers dequantize to float32 transparently. The golden store comes from
tests/fixtures/make_store_int8_golden.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from featcomp.errors import StoreError
from featcomp.store import StoreWriter, open_store, verify_store
from featcomp.store.format import (
    IndexTable,
    decode_index_file,
    decode_log,
    dequantize_int8,
    encode_index_file,
    encode_record,
    quantize_int8,
    record_check,
)

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "store"
# |x - q * scale| <= scale / 2, plus the float32 rounding of the product q * scale (|q| <= 127)
BOUND = 0.5 + 127 * 2.0**-23


def _within_bound(x: np.ndarray, deq: np.ndarray, scale: np.ndarray) -> bool:
    axes = (0,) + tuple(range(2, x.ndim))
    err = np.abs(x.astype(np.float64) - deq.astype(np.float64)).max(axis=axes)
    return bool(np.all(err <= scale.astype(np.float64) * BOUND))


@pytest.mark.parametrize("shape", [(40, 16), (9, 3, 4, 5), (1, 7)])
def test_round_trip_error_is_at_most_half_a_step_per_channel(tmp_path, shape):
    rng = np.random.default_rng(sum(shape))
    c = shape[1]
    gains = np.logspace(-4, 6, c)  # channels from 1e-4 to 1e6: beyond float16's range, too
    x = rng.normal(size=shape) * gains.reshape((1, c) + (1,) * (len(shape) - 2))
    x[:, 0] = 0.0  # an all-zero channel: scale 0, stored exactly
    x = x.astype(np.float32)
    with StoreWriter(tmp_path / "s", raw=True, raw_dtype="int8", chunk_frames=4, writer_id="w") as w:
        rec = w.write("v", x, np.arange(shape[0]) / 5.0)
        w.write("other", rng.normal(size=(6, *shape[1:])), np.arange(6) / 5.0)  # ordinary values, same store
    assert rec.codec == "zstd"
    st = open_store(tmp_path / "s")
    assert st.mode == "raw" and st.raw_dtype == "int8" and st.header["format_version"] == 4
    assert st.header["dtype"] == "int8" and "q * scale" in st.header["dequantization"]["formula"]
    v = st["v"]
    q, scale = v.stored(), v.scale
    assert q.dtype == np.int8 and q.shape == shape and scale.dtype == np.float32 and scale.shape == (c,)
    assert q.min() >= -127 and q.max() <= 127
    assert scale[0] == 0 and np.all(q[:, 0] == 0)
    axes = (0,) + tuple(range(2, len(shape)))
    assert np.all(np.abs(q[:, 1:]).max(axis=axes) == 127)  # the full range is used in every other channel
    f = v.features()
    assert f.dtype == np.float32 and f.shape == shape
    assert _within_bound(x, f, scale)
    # scale is max|x| / 127 rounded up to float32, so nothing is clipped
    amax = np.abs(x.astype(np.float64)).max(axis=axes)
    assert np.all(scale.astype(np.float64) * 127 >= amax) and np.allclose(scale * 127, amax, rtol=1e-6)
    if shape[0] > 4:  # windows dequantize with the video's scales
        np.testing.assert_array_equal(v.window(2, shape[0] - 1).features(), f[2 : shape[0] - 1])
    assert verify_store(tmp_path / "s").ok
    # float16 input (what the extraction job's actors send) quantizes the same way
    x16 = (x / 1e3).astype(np.float16)  # inside float16's range
    q16, s16 = quantize_int8(x16)
    assert _within_bound(x16.astype(np.float32), dequantize_int8(q16, s16), s16)


def test_int8_halves_the_stored_bytes_of_float16(tmp_path):
    rng = np.random.default_rng(0)
    x = {f"v{i}": np.maximum(rng.normal(size=(200, 256)), 0).astype(np.float32) for i in range(3)}
    for dt in ("float16", "int8"):
        with StoreWriter(tmp_path / dt, raw=True, raw_dtype=dt) as w:
            for vid, a in x.items():
                w.write(vid, a, np.arange(len(a)) / 5.0)
    i16, i8 = open_store(tmp_path / "float16").info(), open_store(tmp_path / "int8").info()
    assert i8["raw_dtype"] == "int8" and i16["raw_dtype"] == "float16"
    assert i8["data_bytes"] < 0.6 * i16["data_bytes"], (i8["data_bytes"], i16["data_bytes"])


def test_golden_int8_store_decodes_to_committed_arrays():
    exp = np.load(GOLDEN / "golden_int8_expected.npz")
    path = GOLDEN / "golden_int8"
    st = open_store(path)
    assert st.header["format_version"] == 4 and st.mode == "raw" and st.raw_dtype == "int8" and not st.damaged
    assert (path / "index" / "golden.fcidx").read_bytes()[6] == 5  # scales columns (+ times_crc)
    assert sorted(st) == [f"video-{i}" for i in range(5)]
    for vid in st:
        v = st[vid]
        np.testing.assert_array_equal(v.stored(), exp[f"q/{vid}"])
        np.testing.assert_array_equal(v.scale, exp[f"scale/{vid}"])
        np.testing.assert_array_equal(v.timestamps, exp[f"timestamps/{vid}"])
        np.testing.assert_allclose(v.features(), exp[f"features/{vid}"], rtol=1e-6, atol=0)
        np.testing.assert_allclose(v.window(1, 4).features(), exp[f"features/{vid}"][1:4], rtol=1e-6, atol=0)
        assert _within_bound(exp[f"input/{vid}"], v.features(), v.scale)
        assert v.metadata == {"i": int(vid[-1])}
    assert exp["scale/video-2"][3] == 0  # the all-zero channel
    assert verify_store(path).ok
    # the encoder still maps the generator's input to the stored integers and scales (quantization uses
    # only correctly rounded operations: abs, max, one division, rint)
    for vid in st:
        q, scale = quantize_int8(exp[f"input/{vid}"])
        np.testing.assert_array_equal(q, exp[f"q/{vid}"])
        np.testing.assert_array_equal(scale, exp[f"scale/{vid}"])
    # the crashed writer's log lines (records with "sc" and "ck") re-encode byte for byte
    raw = (path / "index" / "crashed.log").read_bytes()
    recs = decode_log(raw, "crashed.log")
    again = b"".join(encode_record(r["id"], r["start"], r["length"], r["crc"], r["written"], r["ts"], r.get("meta"),
                                   scale=np.asarray(r["sc"], np.float32)) for r in recs)
    assert again == raw
    # the index file's table survives a re-encode
    tab = decode_index_file((path / "index" / "golden.fcidx").read_bytes(), "golden.fcidx")
    back = decode_index_file(encode_index_file(tab), "x")
    assert back.ids == tab.ids and all(np.array_equal(a, b) for a, b in zip(back.scales, tab.scales))


def test_golden_int8_store_reads_with_plain_zarr_and_the_documented_formula():
    """docs/format.md: features = parts/<writer>[start : start + frames] * videos/<writer>/scale[j]."""
    exp = np.load(GOLDEN / "golden_int8_expected.npz")
    root = zarr.open_group(str(GOLDEN / "golden_int8"), mode="r")
    assert root.attrs["featcomp"]["dtype"] == "int8"
    part = root["parts/golden"]
    table = root[part.attrs["featcomp"]["videos"]]
    assert table.attrs["featcomp"]["scale"] == "videos/golden/scale"
    ids, span, scale = table["id"][:], table["span"][:], table["scale"][:]
    assert list(ids) == ["video-0", "video-1", "video-2"]
    for j, vid in enumerate(ids):
        s, n = span[j]
        q = part[s : s + n]
        assert q.dtype == np.int8
        x = q.astype(np.float32) * scale[j][None, :]
        np.testing.assert_allclose(x, exp[f"features/{vid}"], rtol=1e-6, atol=0)


def test_an_older_reader_refuses_an_int8_store_and_float16_stores_are_unchanged(tmp_path, monkeypatch):
    import featcomp.store.format as fmt
    import featcomp.store.index as index

    # float16 raw stores: version 1, no int8 keys anywhere, index files of version 5 (the names layout every
    # store writes) without the scales columns
    rng = np.random.default_rng(1)
    with StoreWriter(tmp_path / "f16", raw=True, writer_id="w") as w:
        w.write("v", rng.normal(size=(5, 4)), np.arange(5) / 5.0)
    st = open_store(tmp_path / "f16")
    assert st.header["format_version"] == 1 and st.header["dtype"] == "float16" and st.raw_dtype == "float16"
    assert "dequantization" not in st.header and st["v"].scale is None
    fcidx = (tmp_path / "f16" / "index" / "w.fcidx").read_bytes()
    assert fcidx[6] == 5 and b'"scales' not in fcidx  # the header JSON lists no scales column
    assert fmt.decode_index_file(fcidx, "w.fcidx").scales == [None]
    assert "scale" not in json.loads((tmp_path / "f16" / "videos" / "w" / "zarr.json").read_text())["attributes"]["featcomp"]
    assert not (tmp_path / "f16" / "videos" / "w" / "scale").exists()

    # a reader that knows versions up to 3 (every featcomp before int8 stores) refuses, in one line
    monkeypatch.setattr(index, "FORMAT_VERSION", 3)
    with pytest.raises(StoreError, match=r"format version 4 is newer than this featcomp supports \(3\); upgrade featcomp"):
        open_store(GOLDEN / "golden_int8")
    for old in ("golden", "golden_levels", "golden_checksums"):  # the older golden stores are still read
        assert len(open_store(GOLDEN / old)) >= 3
    monkeypatch.setattr(fmt, "_WRITTEN_UNIT_NS", {k: v for k, v in fmt._WRITTEN_UNIT_NS.items() if k != 5})
    with pytest.raises(StoreError, match="index file version 5 is not supported"):
        decode_index_file((GOLDEN / "golden_int8" / "index" / "golden.fcidx").read_bytes(), "golden.fcidx")


def _rewrite_log_scale(log: Path, vid: str, factor: float, *, recheck: bool) -> None:
    lines = []
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec["id"] == vid:
            rec["sc"][1] = float(np.float32(rec["sc"][1] * factor))
            if recheck:  # a record that looks valid: only the video's CRC can tell
                rec["ck"] = record_check(rec)
        lines.append(json.dumps(rec, sort_keys=True, separators=(",", ":")))
    log.write_text("\n".join(lines) + "\n")


def test_a_damaged_scale_is_detected(tmp_path):
    path = tmp_path / "s"
    shutil.copytree(GOLDEN / "golden_int8", path)
    # 1. a scale changed in a log record whose line checksum was recomputed: the video CRC covers the scales
    _rewrite_log_scale(path / "index" / "crashed.log", "video-3", 1.01, recheck=True)
    st = open_store(path)
    assert not st.damaged and "video-3" in st
    with pytest.raises(StoreError, match=r"'video-3'.*does not match its index CRC"):
        st["video-3"].features()
    with pytest.raises(StoreError, match="CRC"):
        st["video-3"].window(0, 2).features()  # windows of raw stores are served once the video is proven
    st["video-4"].features()  # the others read
    rep = verify_store(path)
    assert {i["video"] for i in rep.issues} == {"video-3"}, rep.problems

    # 2. the same without recomputing the line checksum: the record itself is damaged
    shutil.rmtree(path)
    shutil.copytree(GOLDEN / "golden_int8", path)
    _rewrite_log_scale(path / "index" / "crashed.log", "video-4", 2.0, recheck=False)
    st = open_store(path)
    assert list(st.damaged) == ["index/crashed.log line 2"] and "video-4" not in st

    # 3. a scale changed inside the index file (re-encoded, so its payload CRC is valid)
    shutil.rmtree(path)
    shutil.copytree(GOLDEN / "golden_int8", path)
    idx = path / "index" / "golden.fcidx"
    tab = decode_index_file(idx.read_bytes(), str(idx))
    tab.scales[tab.ids.index("video-1")] = tab.scales[tab.ids.index("video-1")] * np.float32(0.5)
    idx.write_bytes(encode_index_file(tab))
    with pytest.raises(StoreError, match=r"'video-1'.*CRC"):
        open_store(path)["video-1"].features()
    assert {i["video"] for i in verify_store(path).issues} == {"video-1"}

    # 4. the plain-zarr mirror videos/<writer>/scale damaged: featcomp reads the index, verify reports it
    shutil.rmtree(path)
    shutil.copytree(GOLDEN / "golden_int8", path)
    arr = zarr.open_array(str(path / "videos" / "golden" / "scale"), mode="r+")
    arr[2, 0] = arr[2, 0] * 3
    exp = np.load(GOLDEN / "golden_int8_expected.npz")
    np.testing.assert_allclose(open_store(path)["video-2"].features(), exp["features/video-2"], rtol=1e-6, atol=0)
    rep = verify_store(path)
    assert [(i["video"], i["file"]) for i in rep.issues] == [("video-2", "videos/golden/scale")], rep.problems

    # 5. a record of an int8 store without scales, or with the wrong count, is refused by name
    t = IndexTable.from_records(["golden"], [])
    assert t.scales == []
    shutil.rmtree(path)
    shutil.copytree(GOLDEN / "golden_int8", path)
    tab = decode_index_file(idx.read_bytes(), str(idx))
    tab.scales[0] = tab.scales[0][:4]
    idx.write_bytes(encode_index_file(tab))
    with pytest.raises(StoreError, match=r"'video-0'.*4 int8 scales for 6 channels"):
        open_store(path)["video-0"].features()
    assert not verify_store(path).ok


def test_writer_mistakes_are_store_errors(tmp_path, codec):
    rng = np.random.default_rng(2)
    with pytest.raises(StoreError, match="raw_dtype must be one of float16, int8"):
        StoreWriter(tmp_path / "a", raw=True, raw_dtype="int4")
    with pytest.raises(StoreError, match="is for raw stores"):
        StoreWriter(tmp_path / "b", codec, raw_dtype="int8")
    with StoreWriter(tmp_path / "c", raw=True, raw_dtype="int8") as w:
        with pytest.raises(StoreError, match=r"'bad'.*not finite"):
            w.write("bad", np.array([[1.0, np.nan]]), [0.0])
        w.write("ok", rng.normal(size=(3, 2)), np.arange(3) / 5.0)
    with pytest.raises(StoreError, match=r"raw int8 store; this writer would write float16"):
        StoreWriter(tmp_path / "c", raw=True)
    with StoreWriter(tmp_path / "d", raw=True) as w:
        w.write("ok", rng.normal(size=(3, 2)), np.arange(3) / 5.0)
    with pytest.raises(StoreError, match=r"raw float16 store; this writer would write int8"):
        StoreWriter(tmp_path / "d", raw=True, raw_dtype="int8")


def test_feature_dataset_reads_int8_stores_as_float32(tmp_path):
    torch = pytest.importorskip("torch")
    from featcomp.data import FeatureDataset, collate_features

    rng = np.random.default_rng(3)
    x = {f"v{i}": rng.normal(size=(n, 8)).astype(np.float32) * 4 for i, n in enumerate([5, 23, 17])}
    with StoreWriter(tmp_path / "s", raw=True, raw_dtype="int8", chunk_frames=4) as w:
        for vid, a in x.items():
            w.write(vid, a, 1.0 + np.arange(len(a)) / 5.0)
    st = open_store(tmp_path / "s")
    ds = FeatureDataset(tmp_path / "s", window=6, stride=6)
    assert len(ds) == 1 + 3 + 2  # a short video is one item; longer ones full windows only
    for i in range(len(ds)):
        it = ds[i]
        vid, s, n = it["video_id"], it["start"], it["length"]
        assert it["features"].dtype == torch.float32
        np.testing.assert_array_equal(it["features"].numpy(), st[vid].features()[s : s + n])
        assert _within_bound(x[vid][s : s + n], it["features"].numpy(), st[vid].scale)
        np.testing.assert_allclose(it["timestamps"].numpy(), 1.0 + np.arange(s, s + n) / 5.0)
    batch = collate_features([ds[i] for i in range(3)])
    assert batch["features"].dtype == torch.float32 and batch["features"].shape == (3, 6, 8)


@pytest.mark.timeout(240)
def test_import_int8_then_transcode_and_train_read_dequantized_features(tmp_path):
    pytest.importorskip("torch")
    import featcomp
    from featcomp.store.importer import import_features
    from tests.test_cli import _one_line_error, run_cli

    rng = np.random.default_rng(4)
    src = tmp_path / "vf"
    src.mkdir()
    arrays = {f"v{i}": (rng.normal(size=(n, 24)) * np.linspace(0.2, 3, 24)).astype(np.float32)
              for i, n in enumerate([20, 9, 33])}
    for v, a in arrays.items():
        np.save(src / f"{v}.npy", a)
    r = run_cli("import", src, "-o", tmp_path / "raw8.zarr", "--fps", "5", "--raw-dtype", "int8", "--json", "-q")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["videos"] == 3
    raw = featcomp.open_store(tmp_path / "raw8.zarr")
    assert raw.raw_dtype == "int8"
    for v, a in arrays.items():
        assert _within_bound(a, raw[v].features(), raw[v].scale)
    info = run_cli("info", tmp_path / "raw8.zarr")
    assert info.returncode == 0 and "raw int8 + zstd" in info.stdout and "v4" in info.stdout
    # a float16 import into the int8 store is refused in one line
    _one_line_error(run_cli("import", src, "-o", tmp_path / "raw8.zarr", "--fps", "5", "-q"),
                    "raw int8 store", "--raw-dtype int8")

    # featcomp train fits a head on the int8 store; transcode codes it from the dequantized features
    r = run_cli("train", tmp_path / "raw8.zarr", "-o", tmp_path / "m.safetensors", "--objective", "reconstruct",
                "--latent", "4", "--epochs", "2", "--val", "0")
    assert r.returncode == 0, r.stderr
    m = featcomp.load_model(tmp_path / "m.safetensors")
    assert m.head.config.in_channels == 24
    from featcomp.collection import transcode_store

    res = transcode_store(tmp_path / "raw8.zarr", m, tmp_path / "coded.zarr")
    assert res["videos"] == 3 and res["frames"] == 62
    coded = featcomp.open_store(tmp_path / "coded.zarr")
    for v in arrays:
        np.testing.assert_array_equal(coded[v].latents(), m.head.encode(raw[v].features()))
        np.testing.assert_array_equal(coded[v].timestamps, raw[v].timestamps)
        assert coded[v].metadata["transcoded_from"] == raw.url
    assert featcomp.verify_store(tmp_path / "coded.zarr").ok
