"""``featcomp extract --backbone NAME --raw-dtype int8`` (issue 17): the Ray job writes a raw store of int8
features with per-video per-channel scales; every value is within half a step of the float16 job's."""

from __future__ import annotations

import numpy as np
import pytest

from featcomp.errors import ConfigError
from featcomp.pipelines.config import ExtractConfig
from featcomp.pipelines.extract import run_extract
from tests.pipelines.conftest import make_clip_dir


def _cfg(**output) -> ExtractConfig:
    cfg = ExtractConfig(progress=False).with_overrides(inference={"batch_size": 8}, decode={"timeout_s": 30.0})
    return cfg.with_overrides(output=output) if output else cfg


@pytest.mark.ray
@pytest.mark.video
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_backbone_job_with_int8_values_is_within_half_a_step_of_float16(ray_local, tiny_model, tmp_path):
    import featcomp

    clips = make_clip_dir(tmp_path / "videos", good={"a.mp4": 30, "sub/b.mp4": 45}, bad=())
    backbone = {"name": "mobilenet_v3_small", "weights": None, "input_size": 32,
                "weights_path": str(tiny_model.parent / "backbone.pt")}
    sampling = {"mode": "fps", "fps": 10.0}
    s16 = run_extract([str(clips)], str(tmp_path / "f16.zarr"), backbone=backbone, sampling=sampling, config=_cfg())
    s8 = run_extract([str(clips)], str(tmp_path / "i8.zarr"), backbone=backbone, sampling=sampling, config=_cfg(),
                     raw_dtype="int8")
    assert (s8.done, s8.failed) == (2, 0) and s8.raw_dtype == "int8" and "int8 features" in s8.format()
    f16, i8 = featcomp.open_store(tmp_path / "f16.zarr"), featcomp.open_store(tmp_path / "i8.zarr")
    c = f16["a.mp4"].sample_shape[0]
    # the summary counts 8 bits per value (16 for float16) and each video's C float32 scales
    assert s8.payload_bits == s16.payload_bits / 2 + 2 * 32 * c and s8.frames == s16.frames
    assert i8.info()["data_bytes"] < 0.6 * f16.info()["data_bytes"]
    assert i8.raw_dtype == "int8" and i8.header["format_version"] == 4 and f16.header["format_version"] == 1
    assert i8.model_card["backbone"]["name"] == "mobilenet_v3_small"
    for vid in ("a.mp4", "sub/b.mp4"):
        a, b = f16[vid].features(), i8[vid].features()
        assert a.shape == b.shape and b.dtype == np.float32
        err = np.abs(a.astype(np.float64) - b).max(axis=0)
        assert np.all(err <= i8[vid].scale * (0.5 + 1e-5)), vid  # the actors' float16 values, quantized
        np.testing.assert_array_equal(i8[vid].timestamps, f16[vid].timestamps)
    assert featcomp.verify_store(tmp_path / "i8.zarr").ok
    # a rerun resumes the int8 store; a float16 job into it is refused before any work
    assert run_extract([str(clips)], str(tmp_path / "i8.zarr"), backbone=backbone, sampling=sampling, config=_cfg(),
                       raw_dtype="int8").skipped == 2
    from featcomp.errors import StoreError

    with pytest.raises(StoreError, match="raw int8 store"):
        run_extract([str(clips)], str(tmp_path / "i8.zarr"), backbone=backbone, sampling=sampling, config=_cfg())


def test_int8_needs_a_raw_store(tiny_model, tmp_path):
    clips = make_clip_dir(tmp_path / "videos", good={"a.mp4": 10}, bad=())
    with pytest.raises(ConfigError, match="--raw-dtype int8 .* is for raw stores"):
        run_extract([str(clips)], str(tmp_path / "x.zarr"), str(tiny_model), config=_cfg(raw_dtype="int8"))
    with pytest.raises(ConfigError, match="output.raw_dtype must be float16 or int8"):
        _cfg(raw_dtype="int4")
    from featcomp.pipelines.extract import _config_from_args, configure
    import argparse

    p = argparse.ArgumentParser()
    configure(p)
    args = p.parse_args([str(clips), "--store", "s", "--backbone", "resnet18", "--raw-dtype", "int8"])
    assert _config_from_args(args).output.raw_dtype == "int8"
