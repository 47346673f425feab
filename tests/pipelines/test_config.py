"""Job configs, the chunk assembler and the summary: no Ray runtime needed."""

from __future__ import annotations

import numpy as np
import pytest

from featcomp.errors import ConfigError, PipelineError
from featcomp.pipelines.config import CONFIG_DIR, ExtractConfig, InferenceConfig, RayConfig, load_config
from featcomp.pipelines.extract import ChunkAssembler
from featcomp.pipelines.progress import JobSummary, Progress


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIG_DIR.glob("extract_*.yaml")))
def test_shipped_configs_load_and_round_trip(name):
    cfg = load_config(CONFIG_DIR / name)
    assert ExtractConfig.from_yaml(cfg.to_yaml()) == cfg
    assert ExtractConfig.from_json(cfg.to_json()) == cfg


def test_default_config_is_the_small_machine_one():
    assert {p.name for p in CONFIG_DIR.glob("extract_*.yaml")} >= {"extract_default.yaml", "extract_gpu_cluster.yaml"}
    cfg = load_config(None)
    assert cfg.ray.address is None and cfg.ray.object_store_memory_mb == 512
    # an installed featcomp has no configs/ directory and falls back to the built-in defaults: the
    # shipped default YAML must say exactly the same, so both routes run the same job
    assert cfg == ExtractConfig()
    gpu = load_config(CONFIG_DIR / "extract_gpu_cluster.yaml")
    assert gpu.inference.num_gpus == 1.0 and gpu.inference.dtype == "bfloat16" and gpu.ray.address == "auto"


def test_partial_yaml_keeps_defaults_and_typos_are_errors(tmp_path):
    cfg = ExtractConfig.from_yaml("inference:\n  batch_size: 8\n")
    assert cfg.inference.batch_size == 8 and cfg.inference.actors == 1 and cfg.ray == RayConfig()
    with pytest.raises(ConfigError, match="batchsize"):
        ExtractConfig.from_yaml("inference:\n  batchsize: 8\n")
    with pytest.raises(ConfigError, match="batch_size"):
        ExtractConfig.from_yaml("inference:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match="newer"):
        ExtractConfig.from_yaml("format_version: 99\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ray: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_validation_and_overrides():
    with pytest.raises(ConfigError):
        InferenceConfig(dtype="int8")
    with pytest.raises(ConfigError):
        InferenceConfig(actors=4, max_actors=2)
    with pytest.raises(ConfigError):
        RayConfig(object_store_memory_mb=10)
    cfg = ExtractConfig().with_overrides(ray={"address": "auto"}, inference={"actors": 3}, output={})
    assert cfg.ray.address == "auto" and cfg.inference.actors == 3 and cfg.output == ExtractConfig().output
    with pytest.raises(ConfigError, match="nope"):
        ExtractConfig().with_overrides(ray={"nope": 1})
    with pytest.raises(ConfigError):
        ExtractConfig().replace(progress=True, extensions=("mp4",))


def _row(vid, chunk, last, n=2, c=3, error=""):
    return {
        "video_id": vid,
        "path": f"/v/{vid}",
        "chunk": chunk,
        "last": last,
        "latents": np.full((n, c), chunk, dtype=np.int32),
        "timestamps": np.arange(n) + 10.0 * chunk,
        "indices": np.arange(n) + 100 * chunk,
        "error": error,
        "float16_bytes": 2 * n * 8,
    }


def test_assembler_reorders_dedups_and_completes_once():
    a = ChunkAssembler()
    assert a.add(_row("x", 2, True, n=1)) is None
    assert a.add(_row("x", 0, False)) is None
    assert a.add(_row("x", 0, False)) is None  # a retried task re-sent chunk 0
    kind, vid, path, lat, ts, idx, f16, levels = a.add(_row("x", 1, False))
    assert f16 == 2 * 8 * 5 and levels is None
    assert (kind, vid, path) == ("done", "x", "/v/x")
    assert lat.shape == (5, 3) and lat[:, 0].tolist() == [0, 0, 1, 1, 2]
    assert ts.tolist() == [0, 1, 10, 11, 20] and idx.dtype == np.int64
    assert a.add(_row("x", 1, False)) is None  # late duplicate after completion: ignored
    assert a.incomplete() == []


def test_assembler_concatenates_per_frame_levels_in_chunk_order():
    a2 = ChunkAssembler()
    rows = []
    for chunk, last in ((1, True), (0, False)):
        row = _row("y", chunk, last, n=3)
        row["levels"] = np.array([chunk, 2, 3 + chunk], np.uint8)
        rows.append(row)
    assert a2.add(rows[0]) is None
    *_, levels = a2.add(rows[1])
    assert levels.dtype == np.uint8 and levels.tolist() == [0, 2, 3, 1, 2, 4]
    # chunks of one video with and without levels: the actors disagree
    a3 = ChunkAssembler()
    assert a3.add(rows[0]) is None
    with pytest.raises(PipelineError, match="levels"):
        a3.add(_row("y", 0, False, n=3))


def test_keep_top1_config_cli_and_its_exclusions():
    import argparse

    from featcomp.pipelines.extract import _config_from_args, configure

    cfg = ExtractConfig.from_yaml("inference:\n  keep_top1: 0.95\n")
    assert cfg.inference.keep_top1 == 0.95 and ExtractConfig.from_yaml(cfg.to_yaml()) == cfg
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="keep_top1"):
            InferenceConfig(keep_top1=bad)
    with pytest.raises(ConfigError, match="exclude each other"):
        InferenceConfig(keep_top1=0.9, rate=1.0)
    with pytest.raises(ConfigError, match="raw"):
        ExtractConfig().with_overrides(inference={"keep_top1": 0.9}, output={"raw": True})
    parser = argparse.ArgumentParser()
    configure(parser)
    base = ["v.mp4", "--store", "s.zarr", "--model", "m.safetensors"]
    args = parser.parse_args([*base, "--keep-top1", "0.95"])
    assert _config_from_args(args).inference.keep_top1 == 0.95
    for extra in (["--rate", "1"], ["--raw"]):
        with pytest.raises(ConfigError, match="keep_top1"):
            _config_from_args(parser.parse_args([*base, "--keep-top1", "0.95", *extra]))


def test_fidelity_rate_control_config_cli_and_its_exclusions():
    import argparse

    from featcomp.pipelines.extract import _config_from_args, configure

    cfg = ExtractConfig.from_yaml("inference:\n  max_distortion: 0.05\n  keep_fraction: 0.9\n")
    assert cfg.inference.rate_control == {"criterion": "distortion", "budget": 0.05, "target_agreement": 0.9}
    assert ExtractConfig.from_yaml(cfg.to_yaml()) == cfg
    assert InferenceConfig(max_kl=0.1).rate_control == {"criterion": "kl", "budget": 0.1, "target_agreement": 1.0}
    assert InferenceConfig(keep_top1=0.9).rate_control == {"target_agreement": 0.9}
    assert InferenceConfig().rate_control is None
    for kw, match in (({"max_distortion": 0.0}, "max_distortion"), ({"max_kl": -1.0}, "max_kl"),
                      ({"max_distortion": float("inf")}, "max_distortion"),
                      ({"max_distortion": 0.1, "max_kl": 0.1}, "exclude each other"),
                      ({"keep_top1": 0.9, "max_distortion": 0.1}, "exclude each other"),
                      ({"max_distortion": 0.1, "rate": 1.0}, "exclude each other"),
                      ({"keep_fraction": 0.9}, "keep_fraction"), ({"max_kl": 0.1, "keep_fraction": 1.5}, "keep_fraction"),
                      ({"keep_top1": 0.9, "keep_fraction": 0.9}, "keep_fraction")):
        with pytest.raises(ConfigError, match=match):
            InferenceConfig(**kw)
    with pytest.raises(ConfigError, match="raw"):
        ExtractConfig().with_overrides(inference={"max_distortion": 0.1}, output={"raw": True})
    parser = argparse.ArgumentParser()
    configure(parser)
    base = ["v.mp4", "--store", "s.zarr", "--model", "m.safetensors"]
    got = _config_from_args(parser.parse_args([*base, "--max-distortion", "0.05", "--keep-fraction", "0.95"]))
    assert got.inference.rate_control == {"criterion": "distortion", "budget": 0.05, "target_agreement": 0.95}
    assert _config_from_args(parser.parse_args([*base, "--max-kl", "0.2"])).inference.max_kl == 0.2
    with pytest.raises(ConfigError, match="exclude each other"):
        _config_from_args(parser.parse_args([*base, "--max-kl", "0.2", "--keep-top1", "0.9"]))


def test_keep_top1_refuses_models_it_cannot_drive_before_starting_ray(tmp_path):
    from featcomp.head import CompressibleHead
    from featcomp.model import save_model
    from featcomp.pipelines.extract import run_extract

    model = save_model(tmp_path / "fixed.safetensors", CompressibleHead(in_channels=8, latent_channels=4,
                                                                         synthesis="linear"))
    cfg = ExtractConfig(progress=False).with_overrides(inference={"keep_top1": 0.9})
    (tmp_path / "v.mp4").write_bytes(b"")  # discovery only needs the file to exist
    with pytest.raises(ConfigError, match="keep_top1.*fixed.safetensors.*variable-rate"):
        run_extract([str(tmp_path / "v.mp4")], str(tmp_path / "s.zarr"), str(model), config=cfg)
    # a variable-rate head on a backbone without its own classifier (no teacher)
    from featcomp.backbones import BackboneSpec
    from featcomp.ratecontrol import step_ladder_head

    ladder = step_ladder_head(8, 4, (0.5, 1.0), analysis="linear", synthesis="linear")
    for name, spec in (("nobackbone", None), ("deepsort", BackboneSpec(name="mobilenet_v2_deepsort", weights=None))):
        path = save_model(tmp_path / f"{name}.safetensors", ladder, backbone=spec)
        with pytest.raises(ConfigError, match=f"keep_top1.*{name}.safetensors.*classifier"):
            run_extract([str(tmp_path / "v.mp4")], str(tmp_path / "s.zarr"), str(path), config=cfg)
    assert not (tmp_path / "s.zarr").exists()


def test_assembler_failure_drops_chunks_and_reports_once():
    a = ChunkAssembler()
    assert a.add(_row("y", 0, False)) is None
    assert a.add(_row("y", -1, True, error="VideoError: broken")) == ("failed", "y", "/v/y", "VideoError: broken")
    assert a.add(_row("y", 1, True)) is None
    assert a.add(_row("y", -1, True, error="again")) is None
    assert a.add(_row("z", 0, False)) is None
    assert a.incomplete() == [("z", "/v/z")]


def test_summary_numbers_and_text():
    s = JobSummary(store="/s.zarr", total=5, done=3, skipped=1, failed=1, frames=100, bytes_written=6400,
                   payload_bits=40_000, float16_bytes=256_000, wall_s=2.0,
                   failures=[("bad.mp4", "/v/bad.mp4", "VideoError: empty")])
    assert s.bits_per_frame == 400 and s.ratio_vs_float16 == pytest.approx(51.2) and s.frames_per_s == 50
    assert s.ratio_on_disk == pytest.approx(40.0)
    text = s.format()
    for needle in ("3 done", "1 skipped", "1 failed", "/s.zarr", "400 bits/frame", "51.2x", "40.0x", "bad.mp4", "VideoError: empty"):
        assert needle in text
    assert '"ratio_vs_float16": 51.2' in s.to_json()


def test_progress_bar_counts(monkeypatch):
    import io

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    out = io.StringIO()
    p = Progress(3, enabled=True, file=out)
    p.update(frames=10, bits=800.0)
    p.update(failed=True)
    p.close()
    assert (p.frames, p.bits, p.failed) == (10, 800.0, 1)
    assert "2/3" in out.getvalue() and "bits/frame=80" in out.getvalue()
    quiet = Progress(2, enabled=False)
    quiet.update(frames=1)
    quiet.close()


def test_assembler_remembers_why_a_video_is_partial_and_cli_allows_it():
    import argparse

    from featcomp.pipelines.extract import _config_from_args, configure

    a = ChunkAssembler()
    row = _row("p", 0, True)
    row["partial"] = "decoded 4 of the 17 frames the container declares"
    assert a.add(row)[0] == "done" and a.partial == {"p": row["partial"]}
    row = _row("q", 0, True)
    row["partial"] = ""
    assert a.add(row)[0] == "done" and "q" not in a.partial

    parser = argparse.ArgumentParser()
    configure(parser)
    base = ["v.mp4", "--store", "s.zarr", "--model", "m.safetensors"]
    assert _config_from_args(parser.parse_args(base)).decode.allow_partial is False
    cfg = _config_from_args(parser.parse_args([*base, "--allow-partial"]))
    assert cfg.decode.allow_partial is True and ExtractConfig.from_yaml(cfg.to_yaml()) == cfg


def test_frames_fps_from_the_config_and_the_cli():
    import argparse

    from featcomp.pipelines.config import DecodeConfig, load_config
    from featcomp.pipelines.extract import _config_from_args, configure

    assert load_config(None).decode.frames_fps == DecodeConfig().frames_fps == 25.0
    parser = argparse.ArgumentParser()
    configure(parser)
    base = ["frames_dir", "--store", "s.zarr", "--model", "m.safetensors"]
    assert _config_from_args(parser.parse_args(base)).decode.frames_fps == 25.0
    cfg = _config_from_args(parser.parse_args([*base, "--frames-fps", "12.5"]))
    assert cfg.decode.frames_fps == 12.5 and ExtractConfig.from_yaml(cfg.to_yaml()) == cfg
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match="frames_fps"):
            DecodeConfig(frames_fps=bad)
