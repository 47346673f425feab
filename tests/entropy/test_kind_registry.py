"""Entropy-model kinds as registry entries (issue 15): every registered kind meets one contract, and a
new kind is one module plus one registration: head, model file, clip and store then work unchanged.
Also: dispatch on 'kind' (old factorized dicts without 'kind'), unknown kinds. The frozen-codec contract
over every kind and layout is tests/entropy/test_contract.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import featcomp
from featcomp.entropy import (
    DEFAULT_KIND,
    EntropyCodec,
    EntropyKind,
    FrozenCodec,
    TemporalCodec,
    codec_from_dict,
    codec_kind,
    codec_kinds,
    entropy_kind,
    entropy_kinds,
    register_entropy_kind,
    unregister_entropy_kind,
)
from featcomp.entropy.trainable import FactorizedPrior, TrainablePrior
from featcomp.errors import CodecError, ConfigError, FeatcompError, ModelFileError, RegistryError
from featcomp.head import CompressibleHead, HeadConfig

from .test_temporal import random_codec


C, CL = 6, 3


def _inputs(layout: str, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """(training batch in the kind's layout, frozen input: frames (T, C[, H, W]) in time order)."""
    if layout == "clips":
        return torch.from_numpy(rng.normal(0, 2, (8, C, 5)).astype(np.float32)), rng.normal(0, 2, (12, C)).astype(np.float32)
    if layout == "maps":
        return (torch.from_numpy(rng.normal(0, 2, (4, C, 4, 4)).astype(np.float32)),
                rng.normal(0, 2, (5, C, 4, 4)).astype(np.float32))
    return torch.from_numpy(rng.normal(0, 2, (16, C)).astype(np.float32)), rng.normal(0, 2, (12, C)).astype(np.float32)


# ------------------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("name", entropy_kinds(trainable=True))
def test_every_trainable_kind_meets_the_contract(name):
    """Build, price, quantize, freeze, code and decode through the registry entry alone."""
    spec = entropy_kind(name)
    assert spec.name == name and isinstance(spec.adapter(), TrainablePrior)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    head = CompressibleHead(in_channels=C, latent_channels=CL, entropy_model=name)
    assert head.entropy_module is getattr(head, spec.adapter().attr) and head.entropy_parameters()
    x, frames = _inputs(spec.layout, rng)
    head.train()
    out = head(x)
    assert out.bits.shape == (len(x),) and torch.isfinite(out.bits).all() and (out.bits >= 0).all()
    out.bits.sum().backward()  # the rate reaches the entropy model's parameters
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.entropy_parameters())
    head.eval()
    with torch.no_grad():
        ev = head(x)
    q = ev.y_hat / head.scale.reshape((1, -1) + (1,) * (x.ndim - 2)) - head.quant_offsets().reshape(
        (1, -1) + (1,) * (x.ndim - 2))
    assert torch.allclose(q, torch.round(q), atol=1e-4)  # eval quantizes onto the integer grid
    frozen = head.freeze()
    assert isinstance(frozen.codec, spec.codec) and frozen.kind == name == codec_kind(frozen.codec)
    k = frozen.encode(frames)
    data = frozen.codec.compress_symbols(k)
    np.testing.assert_array_equal(frozen.codec.decompress_symbols(data), k)
    np.testing.assert_allclose(frozen.decompress(data), frozen.decode(k), rtol=0, atol=0)
    # the codec survives both of its serializations, dispatched by kind
    back = codec_from_dict(json.loads(json.dumps(frozen.codec.to_dict())))
    assert type(back) is spec.codec and back.digest == frozen.codec.digest
    assert spec.codec.from_bytes(frozen.codec.to_bytes()).digest == frozen.codec.digest
    # damage: a truncated stream is a CodecError, never a crash or a wrong answer passed off as right
    with pytest.raises(FeatcompError):
        frozen.codec.decompress_symbols(data[: max(1, len(data) // 3)])
    if spec.time_chunks:  # chunked kinds decode each chunk alone
        streams = frozen.codec.compress_chunks(k, 4)
        np.testing.assert_array_equal(frozen.codec.decompress_symbols(streams[1]), k[4:8])


def test_registry_facts():
    kinds = [entropy_kind(n) for n in entropy_kinds()]
    assert [k.name for k in kinds if k.implicit] == [DEFAULT_KIND]  # exactly one pre-kinds default
    assert entropy_kind(None).name == DEFAULT_KIND and entropy_kind(EntropyCodec.fit(np.zeros((3, 2), np.int32))).name == DEFAULT_KIND
    assert entropy_kind("temporal").time_chunks and entropy_kind("temporal").layout == "clips"
    assert entropy_kind(DEFAULT_KIND).rate_control and not entropy_kind("hyperprior").rate_control
    with pytest.raises(RegistryError, match="already registered"):
        register_entropy_kind(EntropyKind("temporal", EntropyCodec))
    with pytest.raises(CodecError, match="only one kind can be implicit"):
        register_entropy_kind(EntropyKind("other", EntropyCodec, implicit=True))
    with pytest.raises(CodecError, match="cannot be unregistered"):
        unregister_entropy_kind(DEFAULT_KIND)
    with pytest.raises(CodecError, match="layout"):
        EntropyKind("x", EntropyCodec, layout="cubes")
    with pytest.raises(ConfigError, match="must be one of"):
        HeadConfig(in_channels=4, latent_channels=2, entropy_model="nope")


# ------------------------------------------------------------------------------- a plugin kind
class ToyCodec(EntropyCodec):
    """A new kind for the test: the factorized tables under another name (frames independent)."""

    kind = "toy"

    def to_dict(self):
        return {**super().to_dict(), "kind": self.kind}


class ToyPrior(FactorizedPrior):
    """Its trainable half: the factorized bottleneck, frozen into a :class:`ToyCodec`."""

    def freeze(self, module, offsets, *, precision):
        return ToyCodec.from_bytes(super().freeze(module, offsets, precision=precision).to_bytes())


@pytest.fixture
def toy_kind():
    spec = register_entropy_kind(EntropyKind("toy", ToyCodec, f"{__name__}:ToyPrior", rate_control=True))
    try:
        yield spec
    finally:
        unregister_entropy_kind("toy")


def test_a_new_kind_is_one_module_and_one_registration(toy_kind, tmp_path):
    """No featcomp module names the toy kind, yet a head of it trains, saves, clips and stores."""
    from featcomp.model import CompressedClip, Extractor, load_model, save_model
    from featcomp.store import StoreWriter, open_store, verify_store
    from tests.test_entropy_kinds_model import FeatureBackbone

    rng = np.random.default_rng(1)
    data = rng.normal(0, 2, (200, C)).astype(np.float32)
    frames = rng.normal(0, 2, (30, C)).astype(np.float32)
    torch.manual_seed(1)
    head = featcomp.fit_head(data, objective="reconstruct", lam=1e-2, latent_channels=CL, entropy_model="toy",
                             steps=20, min_steps=0, batch_size=32, progress=False)
    assert head.config.entropy_model == "toy" and head.freeze().kind == "toy"
    path = save_model(tmp_path / "toy.safetensors", head, sampling={"mode": "all"})
    model = load_model(path)
    assert model.kind == "toy" and isinstance(model.codec, ToyCodec)
    ex = Extractor(model, backbone=FeatureBackbone())
    k = ex.encode_frames(frames)
    clip = CompressedClip.from_bytes(ex.compress_latents(k, np.arange(len(k)) / 5.0).to_bytes())
    assert clip.kind == "toy" and clip.chunks is None
    np.testing.assert_array_equal(ex.decompress_latents(clip), k)
    store = tmp_path / "toy.zarr"
    with StoreWriter(store, model, chunk_frames=8) as w:
        assert w.write("v", k, np.arange(len(k)) / 5.0).kind == "toy"
    st = open_store(store)
    assert st.kind == "toy" and st.header["format_version"] == 2  # a kind is named: store version 2
    np.testing.assert_array_equal(st["v"].latents(), k)
    assert verify_store(store).ok
    # without the plugin, the files name a kind this featcomp does not know: one clear error each
    unregister_entropy_kind("toy")
    try:
        with pytest.raises(ModelFileError, match="newer featcomp"):
            load_model(path)
        from featcomp.store import codec as store_codec

        store_codec._TABLE_CACHE.clear()  # as in a fresh process, where no tables were decoded yet
        with pytest.raises(FeatcompError, match="toy"):
            open_store(store)["v"].latents()
    finally:
        register_entropy_kind(toy_kind)


# ==================================================================================================
# (formerly test_kinds.py)
# Codec kinds: the registry, dispatch on 'kind', old factorized dicts without 'kind'.
# ==================================================================================================
def test_dispatch_and_json_round_trip():
    rng = np.random.default_rng(0)
    fact = EntropyCodec.fit(rng.integers(-5, 5, (50, 4)))
    temp = random_codec(rng, 4)
    assert {"factorized", "temporal"} <= set(codec_kinds())
    for c, kind, cls in ((fact, "factorized", EntropyCodec), (temp, "temporal", TemporalCodec)):
        assert isinstance(c, FrozenCodec) and codec_kind(c) == kind
        d = json.loads(json.dumps(c.to_dict()))
        back = codec_from_dict(d)
        assert type(back) is cls and back.digest == c.digest
        k = rng.integers(-30, 30, (9, 4)).astype(np.int32)
        np.testing.assert_array_equal(back.decompress_symbols(c.compress_symbols(k)), k)
    assert "kind" not in fact.to_dict()  # the factorized format is unchanged


def test_unknown_kind_raises():
    with pytest.raises(RegistryError):
        codec_from_dict({"kind": "nope"})
