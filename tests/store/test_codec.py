"""The featcomp.ans codec through real zarr arrays (v3, with and without sharding; v2) and numcodecs."""

from __future__ import annotations

import json
import subprocess
import sys

import numcodecs
import numpy as np
import pytest
import zarr

from featcomp.errors import CodecError
from featcomp.store import FeatcompANSCodec, FeatcompANSNumcodec, StoreWriter
from featcomp.store.codec import decode_chunk, encode_chunk

from .conftest import C, laplace_latents


@pytest.mark.parametrize("sharded", [False, True])
def test_zarr_v3_array(tmp_path, codec, rng, sharded):
    k = laplace_latents(rng, 203)
    k[150:] = 0  # trailing zero frames are not coded but decode back
    kw = {"shards": (64, C)} if sharded else {}
    a = zarr.create_array(str(tmp_path / "a"), shape=k.shape, chunks=(16, C), dtype="int32",
                          serializer=FeatcompANSCodec.from_codec(codec), compressors=None, fill_value=0, **kw)
    a[:] = k
    b = zarr.open_array(str(tmp_path / "a"), mode="r")
    assert np.array_equal(b[:], k) and np.array_equal(b[37:101], k[37:101])
    meta = json.loads((tmp_path / "a" / "zarr.json").read_text())
    names = json.dumps(meta["codecs"])
    assert "featcomp.ans" in names and codec.digest in names


def test_codec_config_roundtrip_and_digest_check(codec):
    zc = FeatcompANSCodec.from_codec(codec)
    again = FeatcompANSCodec.from_dict(zc.to_dict())
    assert again == zc and again.codec.digest == codec.digest
    bad = FeatcompANSCodec(tables=zc.tables, digest="0" * 64)
    with pytest.raises(CodecError, match="digest mismatch"):
        bad.codec


def test_numcodecs_codec(codec, rng):
    k = laplace_latents(rng, 50)
    nc = numcodecs.get_codec(FeatcompANSNumcodec.from_codec(codec).get_config())
    assert isinstance(nc, FeatcompANSNumcodec)
    assert np.array_equal(nc.decode(nc.encode(k)), k)
    out = np.empty_like(k)
    nc.decode(nc.encode(k), out=out)
    assert np.array_equal(out, k)


def test_zarr_v2_array_with_numcodecs_filter(tmp_path, codec, rng):
    k = laplace_latents(rng, 100)
    a = zarr.create_array(str(tmp_path / "v2"), shape=k.shape, chunks=(32, C), dtype="int32", zarr_format=2,
                          filters=[FeatcompANSNumcodec.from_codec(codec)], compressors=None, fill_value=0)
    a[:] = k
    assert np.array_equal(zarr.open_array(str(tmp_path / "v2"), mode="r")[:], k)


def test_chunk_corruption_is_codec_error(codec, rng):
    k = laplace_latents(rng, 40)
    data = bytearray(encode_chunk(k, codec))
    assert np.array_equal(decode_chunk(bytes(data), codec, (C,)), k)
    with pytest.raises(CodecError):
        decode_chunk(bytes(data[: len(data) // 2]), codec, (C,))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(CodecError):
        decode_chunk(bytes(data), codec, (C,))
    z = encode_chunk(np.zeros((8, C), np.int32), codec)
    assert len(z) <= 5 and np.array_equal(decode_chunk(z, codec, (C,)), np.zeros((8, C)))


def test_plain_zarr_without_featcomp_names_the_package(tmp_path, codec, rng):
    """Without featcomp's codec registered, zarr fails on the part array; the store's own
    metadata (root attributes) says which package provides the codec."""
    with StoreWriter(tmp_path / "s", codec) as w:
        w.write("a", laplace_latents(rng, 10), np.arange(10.0))
    code = f"""
import warnings; warnings.simplefilter("ignore")
import importlib.metadata as md
_orig = md.entry_points
def _filtered(**kw):
    eps = _orig(**kw)
    eps = [e for g in eps.values() for e in g] if isinstance(eps, dict) else list(eps)
    return md.EntryPoints([e for e in eps if not e.value.startswith("featcomp")])
md.entry_points = _filtered
import sys, zarr
g = zarr.open_group({str(tmp_path / 's')!r}, mode="r")
attrs = g.attrs["featcomp"]
assert attrs["package"] == "featcomp" and "pip install featcomp" in attrs["package_hint"], attrs
part = [k for k in __import__("os").listdir({str(tmp_path / 's' / 'parts')!r}) if k != "zarr.json"][0]
try:
    zarr.open_array({str(tmp_path / 's')!r}, path="parts/" + part, mode="r")[:]
except Exception as e:
    print("ZARR-ERROR", type(e).__name__, e)
    assert "featcomp" not in sys.modules
    sys.exit(0)
sys.exit("zarr decoded without the featcomp codec")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "featcomp.ans" in r.stdout  # zarr names the unknown codec


def test_chunk_cut_inside_its_header_names_the_chunk_header(codec, rng):
    from featcomp.store.codec import decode_chunk, encode_chunk

    from .conftest import laplace_latents

    data = encode_chunk(laplace_latents(rng, 300), codec)
    assert np.array_equal(decode_chunk(data, codec), decode_chunk(bytes(data), codec))
    with pytest.raises(CodecError, match=r"chunk truncated \(2 bytes\)"):
        decode_chunk(data[:2], codec)
    # layout byte + the 2-byte frame count (300), then the coded-frame count is cut off
    with pytest.raises(CodecError, match="truncated featcomp.ans chunk header"):
        decode_chunk(data[:3], codec)
    with pytest.raises(CodecError, match="longer than 10 bytes"):
        decode_chunk(data[:1] + b"\xff" * 12, codec)
