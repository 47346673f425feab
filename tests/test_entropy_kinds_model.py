"""Heads trained with each entropy model kind: model files, compressed clips and stores (issue 7)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import featcomp
from featcomp.entropy import EntropyCodec, HyperpriorCodec, TemporalCodec
from featcomp.errors import ConfigError
from featcomp.model import CompressedClip, Extractor, decode_clip, load_model, save_model
from featcomp.store import StoreWriter, open_store, verify_store
from featcomp.train import clip_windows

C, CL = 12, 4


class FeatureBackbone(nn.Module):
    """A stand-in backbone whose "frames" already are features: preprocess casts, forward is identity."""

    def preprocess(self, frames):
        return torch.as_tensor(np.asarray(frames), dtype=torch.float32)

    def forward(self, x):
        return x


def ar_sequences(rng, n_seq=6, T=40, shape=(), rho=0.9):
    """AR(1) feature sequences (T, C, *shape): strongly correlated in time, as video features are."""
    seqs = []
    for _ in range(n_seq):
        x = np.zeros((T, C) + shape, np.float32)
        x[0] = rng.normal(0, 2, (C,) + shape)
        for t in range(1, T):
            x[t] = rho * x[t - 1] + rng.normal(0, 2 * np.sqrt(1 - rho**2), (C,) + shape)
        seqs.append(x)
    return seqs


def train(kind: str, seed: int = 0):
    """A small reconstruct head of ``kind`` and held-out frames (T, C, *) in time order."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if kind == "temporal":
        seqs = ar_sequences(rng)
        data, frames = clip_windows(seqs[:-1], 4, stride=2), seqs[-1]
    elif kind == "hyperprior":
        seqs = ar_sequences(rng, n_seq=2, T=60, shape=(4, 4))
        data, frames = seqs[0], seqs[1][:20]
    else:
        seqs = ar_sequences(rng, n_seq=2, T=200)
        data, frames = seqs[0], seqs[1][:40]
    head = featcomp.fit_head(data, objective="reconstruct", lam=1e-2, latent_channels=CL, entropy_model=kind,
                             epochs=3, batch_size=32, lr=3e-3, progress=False)
    return head, frames


@pytest.fixture(scope="module", params=["factorized", "temporal", "hyperprior"])
def trained(request, tmp_path_factory):
    kind = request.param
    head, frames = train(kind)
    path = save_model(tmp_path_factory.mktemp(kind) / "m.safetensors", head, sampling={"mode": "all"})
    return kind, head, frames, path


CODECS = {"factorized": EntropyCodec, "temporal": TemporalCodec, "hyperprior": HyperpriorCodec}


def test_save_load_round_trip_keeps_kind_codec_and_latents(trained):
    kind, head, frames, path = trained
    assert head.config.entropy_model == kind
    frozen = head.freeze()
    m = load_model(path)
    assert isinstance(m.codec, CODECS[kind]) and m.codec == frozen.codec and m.kind == kind
    assert m.head.config == head.config
    k = frozen.encode(frames)
    np.testing.assert_array_equal(m.head.encode(frames), k)
    np.testing.assert_array_equal(m.head.decode(k), frozen.decode(k))
    meta = json.loads(__import__("safetensors").safe_open(str(path), framework="pt").metadata()["featcomp"])
    if kind == "factorized":  # the original layout, readable by older releases
        assert meta["format_version"] == 1 and "codec" not in meta and "entropy_model" not in meta["head"]
    else:
        assert meta["format_version"] == 2 and meta["codec"]["kind"] == kind and meta["entropy_model"] == kind
    card = m.model_card()
    assert card["entropy_model"] == kind and card["rate"] is None
    # re-saving the loaded frozen head gives the same content digest
    p2 = save_model(path.with_name("again.safetensors"), m.head, sampling={"mode": "all"}, training=m.training)
    assert load_model(p2).digest == m.digest


def test_compressed_clip_decodes_exactly_to_the_heads_latents(trained):
    kind, head, frames, path = trained
    ex = Extractor(path, backbone=FeatureBackbone(), chunk_frames=7)
    k = ex.encode_frames(frames)
    np.testing.assert_array_equal(k, head.freeze().encode(frames))
    clip = ex.compress_latents(k, np.arange(len(k)) / 5.0)
    assert clip.kind == kind
    if kind == "temporal":  # chunks of 7 frames, each an independent stream
        assert clip.chunks is not None and len(clip.chunks) == -(-len(k) // 7)
        assert np.array_equal(ex.codec.decompress_symbols(clip.streams[1]), k[7:14])
    back = CompressedClip.from_bytes(clip.to_bytes())
    np.testing.assert_array_equal(ex.decompress_latents(back), k)
    np.testing.assert_array_equal(decode_clip(load_model(path), back), ex.model.head.decode(k))


def test_temporal_rate_beats_factorized_on_correlated_clips():
    """Both trained the same way on AR(0.9) clips: the temporal codec codes held-out frames in fewer bits."""
    bits = {}
    for kind in ("factorized", "temporal"):
        head, frames = train(kind, seed=1)
        fr = head.freeze()
        k = fr.encode(frames)
        bits[kind] = 8 * len(fr.codec.compress_symbols(k)) / len(k)
    assert bits["temporal"] < 0.9 * bits["factorized"], bits


def test_temporal_head_needs_clips():
    head = featcomp.head.CompressibleHead(in_channels=C, latent_channels=CL, entropy_model="temporal")
    with pytest.raises(ConfigError, match="clips"):
        head(torch.zeros(5, C))


def test_store_through_the_pipeline_path_with_a_temporal_model(tmp_path):
    head, frames = train("temporal")
    model = load_model(save_model(tmp_path / "m.safetensors", head, sampling={"mode": "all"}))
    k = Extractor(model, backbone=FeatureBackbone()).encode_frames(frames)
    store = tmp_path / "s.zarr"
    with StoreWriter(store, model, chunk_frames=8) as w:  # what featcomp/pipelines/extract.py does
        rec = w.write("v", k, np.arange(len(k)) / 5.0)
    assert rec.kind == "temporal"
    (tmp_path / "m.safetensors").unlink()  # decoding needs no model file
    st = open_store(store)
    assert st.kind == "temporal" and st.model_card["entropy_model"] == "temporal"
    assert verify_store(store).ok
    np.testing.assert_array_equal(st["v"].latents(), k)
    np.testing.assert_allclose(st["v"].features(), model.head.decode(k), rtol=0, atol=0)
