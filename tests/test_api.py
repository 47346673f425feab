"""The public one-call API (featcomp.api): compress/decompress a clip, store_info, and its re-exports."""

from __future__ import annotations

import numpy as np
import pytest

import featcomp
from featcomp import api
from featcomp.errors import CodecError
from featcomp.model import Extractor
from tests.test_model import tiny_model  # noqa: F401  (module-scoped fixture: a saved tiny model + clip)

pytestmark = [pytest.mark.video, pytest.mark.timeout(300)]


def test_top_level_names_are_the_api_objects():
    for name in ("compress", "decompress", "store_info", "extract_features", "open_store", "fit_head",
                 "save_model", "load_model", "Extractor", "StoreWriter", "verify_store"):
        assert getattr(featcomp, name) is getattr(api, name), name


def test_compress_then_decompress_gives_the_heads_latents(tiny_model, tmp_path):  # noqa: F811
    path, bb, clip_path, frames, feats, head = tiny_model
    ex = Extractor(path, backbone=bb)
    clip = featcomp.compress(clip_path, ex)
    k = featcomp.decompress(clip.to_bytes(), ex, latents=True)
    assert k.dtype == np.int32
    np.testing.assert_array_equal(k, head.freeze().encode(feats))
    x = featcomp.decompress(clip, ex)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, ex.model.head.decode(k))
    # the same clip through a model path (the Extractor is built from the file's backbone spec)
    k2 = featcomp.decompress(clip, path, latents=True)
    np.testing.assert_array_equal(k2, k)
    # and a clip whose codec is another model's is refused, naming the mismatch
    other = featcomp.fit_head(np.random.default_rng(1).normal(size=(200, feats.shape[1])).astype(np.float32),
                              objective="reconstruct", latent_channels=16, epochs=1, progress=False)
    other_path = featcomp.save_model(tmp_path / "other.safetensors", other, backbone=ex.model.backbone,
                                     sampling=ex.model.sampling)
    with pytest.raises(CodecError, match="codec"):
        featcomp.decompress(clip, other_path)


def test_store_info_counts_what_was_written(tiny_model, tmp_path):  # noqa: F811
    path, bb, clip_path, frames, feats, head = tiny_model
    ex = Extractor(path, backbone=bb)
    k = ex.encode_frames(frames)
    with featcomp.StoreWriter(tmp_path / "s.zarr", ex.model) as w:
        w.write("a", k, np.arange(len(k)) / 25.0)
        w.write("b", k[:50], np.arange(50) / 25.0)
    info = featcomp.store_info(tmp_path / "s.zarr")
    assert info["videos"] == 2 and info["frames"] == len(k) + 50
    assert info["backbone_float16_bytes"] == (len(k) + 50) * feats.shape[1] * 2
    assert featcomp.verify_store(tmp_path / "s.zarr").ok
