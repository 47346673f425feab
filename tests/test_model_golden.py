"""Golden model files (tests/fixtures/model/model_v*.safetensors, written once by
tests/fixtures/make_model_golden.py): every committed version loads, its typed header
(:class:`featcomp.model.headers.ModelFileHeader`) gives back exactly the metadata read, re-saving gives the
same file, and damaged metadata raises the right :class:`~featcomp.errors.ModelFileError` subclass naming
the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

import featcomp
from featcomp.errors import CorruptModelFileError, ModelFileError, ModelFileVersionError
from featcomp.model import load_model, save_model
from featcomp.model.headers import ModelFileHeader

HERE = Path(__file__).resolve().parent / "fixtures" / "model"
FACTS = json.loads((HERE / "model_golden.json").read_text())
NAMES = sorted(FACTS)


def _read(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["featcomp"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return meta, tensors


def test_the_goldens_cover_both_versions():
    assert {FACTS[n]["format_version"] for n in NAMES} == {1, 2}
    assert {FACTS[n]["kind"] for n in NAMES} == {"factorized", "temporal"}


@pytest.mark.parametrize("name", NAMES)
def test_golden_model_file_loads_and_round_trips(name, tmp_path):
    path = HERE / f"{name}.safetensors"
    facts = FACTS[name]
    m = load_model(path)
    assert (m.digest, m.codec.digest, m.kind) == (facts["digest"], facts["codec_digest"], facts["kind"])
    assert m.head.config.rate_levels == facts["rate_levels"]
    assert m.metadata == {"golden": name} and m.sampling.fps == 5.0 and m.backbone.name == "resnet18"
    meta, tensors = _read(path)
    header = ModelFileHeader.from_dict(meta, str(path))
    assert header.format_version == facts["format_version"] and header.to_dict() == meta
    assert header.digest == facts["digest"] and header.codec_digest == facts["codec_digest"]
    assert ("codec" in tensors) == (facts["format_version"] == 1) == (header.codec is None)
    # saving the loaded model again: the same tensors and metadata (byte for byte while the version
    # string is the one that wrote the golden; the digest covers the version string)
    out = save_model(tmp_path / "again.safetensors", m.head, backbone=m.backbone, sampling=m.sampling,
                     training=m.training, metadata=m.metadata, extra=m.extra)
    meta2, tensors2 = _read(out)
    assert sorted(tensors2) == sorted(tensors)
    for k, t in tensors.items():
        assert t.dtype == tensors2[k].dtype and np.array_equal(t.numpy(), tensors2[k].numpy()), k
    drop = ("featcomp_version", "digest")
    assert {k: v for k, v in meta2.items() if k not in drop} == {k: v for k, v in meta.items() if k not in drop}
    if meta["featcomp_version"] == featcomp.__version__:
        assert out.read_bytes() == path.read_bytes()
    else:
        assert load_model(out).codec.digest == m.codec.digest


def test_variable_rate_golden_card_carries_every_level_step():
    m = load_model(HERE / "model_v2_rate.safetensors")
    card = m.model_card()
    steps = np.asarray(card["dequantization"]["level_scale"], np.float32)
    assert steps.shape == (3, m.latent_channels)
    for lv in range(3):
        np.testing.assert_array_equal(steps[lv], m.head.scale_at(lv).numpy())
    assert "level_scale" not in load_model(HERE / "model_v1.safetensors").model_card()["dequantization"]


def _damaged(tmp_path: Path, name: str, fn, raw: str | None = None) -> Path:
    """The golden file with its metadata changed by ``fn``; a change marked ``redigest`` also recomputes
    the content digest (an edit made to look intact, so the later checks are reached)."""
    meta, tensors = _read(HERE / f"{name}.safetensors")
    if fn is not None:
        fn(meta)
        if getattr(fn, "redigest", False):
            from featcomp.model.file import _content_digest

            meta["digest"] = _content_digest(meta, tensors)
    out = tmp_path / f"{name}-damaged.safetensors"
    save_file(tensors, str(out), metadata={"featcomp": raw if raw is not None else json.dumps(meta)})
    return out


def _set(key, value):
    def f(d):
        d[key] = value
    return f


def _drop(key):
    def f(d):
        d.pop(key)
    return f


def _redigest(fn):
    fn.redigest = True
    return fn


def _head_set(key, value):
    def f(d):
        d["head"][key] = value
    return f


DAMAGE = [
    ("model_v1", _set("format_version", 99), ModelFileVersionError, "format version 99"),
    ("model_v2_rate", _set("format_version", "2"), ModelFileVersionError, "format version '2'"),
    ("model_v1", _drop("head"), CorruptModelFileError, "no 'head' field"),
    ("model_v1", _set("head", [1, 2]), CorruptModelFileError, "head is list"),
    ("model_v1", _drop("digest"), CorruptModelFileError, "no 'digest' field"),
    ("model_v1", _set("codec_digest", 7), CorruptModelFileError, "codec_digest 7 is not a string"),
    ("model_v1", _set("sampling", "fps"), CorruptModelFileError, "sampling is str"),
    ("model_v1", _head_set("rate_lams", [0.1, 0.2]), CorruptModelFileError, "version-1 head with version-2 fields"),
    ("model_v1", _head_set("latent_channels", "four"), CorruptModelFileError, "head: HeadConfig"),
    ("model_v2_rate", _drop("codec"), CorruptModelFileError, "no 'codec' field"),
    ("model_v2_rate", _set("codec", "abc"), CorruptModelFileError, "codec is str"),
    ("model_v2_rate", _set("rate", {"lams": [0.1, 0.2], "levels": 2}), CorruptModelFileError, "rate"),
    ("model_v2_rate", _set("rate", None), CorruptModelFileError, "for a head of 3 rate levels"),
    ("model_v2_temporal", _set("entropy_model", "factorized"), CorruptModelFileError, "entropy_model"),
    ("model_v2_rate", _set("metadata", {"edited": 1}), CorruptModelFileError, "digest mismatch"),
    ("model_v2_temporal", _redigest(lambda d: d["codec"].update(bytes_b64="AAAA")), CorruptModelFileError,
     "'temporal' codec cannot be read"),
    ("model_v1", _redigest(_set("codec_digest", "0" * 64)), CorruptModelFileError, "differs from the recorded"),
]


@pytest.mark.parametrize("name,fn,err,text", DAMAGE, ids=[f"{i}-{d[3][:20]}" for i, d in enumerate(DAMAGE)])
def test_damaged_metadata_raises_the_right_error_naming_the_file(tmp_path, name, fn, err, text):
    path = _damaged(tmp_path, name, fn)
    with pytest.raises(err) as e:
        load_model(path)
    assert text in str(e.value) and str(path) in str(e.value)
    assert isinstance(e.value, ModelFileError)  # one family for callers that catch any model-file problem


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]"])
def test_unreadable_metadata_is_a_corrupt_model_file(tmp_path, raw):
    path = _damaged(tmp_path, "model_v1", None, raw=raw)
    with pytest.raises(CorruptModelFileError) as e:
        load_model(path)
    assert str(path) in str(e.value)
