"""Typed pipeline rows and the job's plan: no Ray runtime needed."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest

from featcomp.errors import ConfigError, PipelineError
from featcomp.pipelines.config import ExtractConfig, InferenceConfig
from featcomp.pipelines.extract import ChunkAssembler, VideoDone, VideoFailed
from featcomp.pipelines.plan import ExtractPlan, ResourcePlan
from featcomp.pipelines.rows import (
    FILLER_CHUNK,
    ChunkRow,
    FailureRow,
    FrameChunk,
    VideoTask,
    encoded_batch,
    parse_decoded,
    parse_row,
)

PIPELINES = Path(__file__).resolve().parents[2] / "featcomp" / "pipelines"


def _chunk(vid="v", chunk=0, last=True, n=3, levels=False, partial=""):
    return ChunkRow(vid, f"/v/{vid}", chunk, last, np.arange(n * 4, dtype=np.int32).reshape(n, 4) + chunk,
                    np.arange(n) * 0.5 + chunk, np.arange(n, dtype=np.int64) + 10 * chunk, float16_bytes=2 * n * 16,
                    levels=np.arange(n, dtype=np.uint8) if levels else None, partial=partial)


def _same(a: ChunkRow, b: ChunkRow) -> None:
    for name in ("video_id", "path", "chunk", "last", "float16_bytes", "partial"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("latents", "timestamps", "indices"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
    assert (a.levels is None) == (b.levels is None)
    if a.levels is not None:
        assert a.levels.dtype == b.levels.dtype == np.uint8 and np.array_equal(a.levels, b.levels)


def test_video_task_round_trips_through_rows_and_batches():
    t = VideoTask("sub/a.mp4", "/data/sub/a.mp4")
    assert VideoTask.from_row(t.to_row()) == t
    batch = {"video_id": np.array(["a", "b"]), "path": np.array(["/a", "/b"])}
    assert VideoTask.from_batch(batch) == [VideoTask("a", "/a"), VideoTask("b", "/b")]


@pytest.mark.parametrize("levels", [False, True])
def test_chunk_row_round_trips_through_to_row_and_parse_row(levels):
    c = _chunk(chunk=2, last=False, levels=levels, partial="decoded 4 of 17 frames")
    row = c.to_row()
    assert row["error"] == "" and ("levels" in row) == levels
    _same(ChunkRow.from_row(row), c)
    back = parse_row(row)
    assert isinstance(back, ChunkRow)
    _same(back, c)


def test_failure_row_round_trips_and_splits_kind_and_message():
    f = FailureRow("x", "/v/x", "VideoError: /v/x: no frames could be decoded (empty video?)")
    assert FailureRow.from_row(f.to_row()) == f and parse_row(f.to_row()) == f
    assert f.kind == "VideoError" and f.message == "/v/x: no frames could be decoded (empty video?)"
    assert FailureRow("x", "/v/x", "it broke").kind == "Error"
    g = FailureRow.from_exception("x", "/v/x", ValueError("bad value"))
    assert g.error == "ValueError: bad value" and g.kind == "ValueError"
    with pytest.raises(PipelineError, match="'x'.*empty error"):
        FailureRow("x", "/v/x", "  ")


def test_a_failure_is_never_mistaken_for_data_and_data_never_for_a_failure():
    # the error text is the one signal: whatever the chunk column says
    for chunk in (FILLER_CHUNK, 0, 3):
        row = {**_chunk(chunk=max(chunk, 0)).to_row(), "chunk": chunk, "error": "VideoError: broken"}
        assert isinstance(parse_row(row), FailureRow)
        with pytest.raises(PipelineError, match="failure row"):
            ChunkRow.from_row(row)
    # a row with no error is data; a negative chunk index without an error breaks the contract (it is
    # neither silently a failure nor silently data)
    row = {**_chunk().to_row(), "chunk": -1}
    with pytest.raises(PipelineError, match="'v'.*chunk -1 and no error"):
        parse_row(row)
    with pytest.raises(PipelineError, match="empty error"):
        FailureRow.from_row(_chunk().to_row())
    with pytest.raises(PipelineError, match="FailureRow"):
        _chunk(chunk=-1)
    # the assembler follows the same rule: a failure row with chunk 0 and last=True fails the video
    a = ChunkAssembler()
    assert a.add(_chunk("y", 1, True).to_row()) is None
    failed = a.add({**_chunk("y", 0, True).to_row(), "error": "ValueError: bad"})
    assert isinstance(failed, VideoFailed) and failed == ("failed", "y", "/v/y", "ValueError: bad")
    assert a.incomplete() == [] and a.add(_chunk("y", 0, False).to_row()) is None


def test_assembler_takes_typed_rows_and_returns_typed_events():
    a = ChunkAssembler()
    assert a.add(_chunk("z", 1, True, levels=True)) is None
    done = a.add(_chunk("z", 0, False, levels=True))
    assert isinstance(done, VideoDone) and done.kind == "done" and done.video_id == "z"
    assert done.latents.shape == (6, 4) and done.indices.tolist() == [0, 1, 2, 10, 11, 12]
    assert done.levels.tolist() == [0, 1, 2, 0, 1, 2] and done.float16_bytes == 2 * 2 * 3 * 16
    assert a.add(FailureRow("w", "/v/w", "VideoError: x")) == VideoFailed("failed", "w", "/v/w", "VideoError: x")


def test_decode_batches_round_trip_and_keep_their_columns():
    frames = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    fc = FrameChunk("v", "/v", 1, True, frames, np.array([0.1, 0.2]), np.array([3, 4]), partial="why")
    b = fc.to_batch()
    assert b["chunk"].dtype == np.int64 and b["frames"].shape == (1, 2, 8, 8, 3) and b["error"].tolist() == [""]
    fb = FailureRow("w", "/w", "VideoError: bad").to_batch()
    assert fb["chunk"].tolist() == [FILLER_CHUNK] and fb["frames"].shape == (1, 0, 1, 1, 3)
    merged = {k: [b[k][0], fb[k][0]] for k in b}
    got = parse_decoded(merged)
    assert isinstance(got[0], FrameChunk) and isinstance(got[1], FailureRow) and got[1].error == "VideoError: bad"
    assert got[0].chunk == 1 and got[0].last and got[0].partial == "why" and np.array_equal(got[0].frames, frames)
    with pytest.raises(PipelineError, match="chunk -1 and no error"):
        parse_decoded({**merged, "chunk": [-1, -1], "error": ["", "VideoError: bad"]})


@pytest.mark.parametrize("with_levels", [False, True])
def test_encoded_batch_columns_and_rows_back(with_levels):
    rows = [_chunk("a", 0, False, levels=with_levels), FailureRow("b", "/v/b", "VideoError: bad"),
            _chunk("a", 1, True, n=2, levels=with_levels)]
    batch = encoded_batch(rows, raw=False, with_levels=with_levels)
    assert batch["chunk"].tolist() == [0, FILLER_CHUNK, 1] and batch["chunk"].dtype == np.int64
    assert batch["error"].tolist() == ["", "VideoError: bad", ""] and batch["float16_bytes"].dtype == np.int64
    assert batch["latents"][1].shape == (0, 4) and batch["latents"][1].dtype == np.int32
    assert ("levels" in batch) == with_levels
    back = [parse_row({k: v[i] for k, v in batch.items()}) for i in range(3)]
    assert back[1] == rows[1]
    _same(back[0], rows[0])
    _same(back[2], rows[2])
    raw = encoded_batch([FailureRow("b", "/v/b", "E: x")], raw=True, with_levels=False)
    assert raw["latents"][0].dtype == np.float16


def test_resource_plan_is_decided_from_the_config_and_the_cluster():
    cpu = ResourcePlan.decide(InferenceConfig(actors=2), cpus=8, gpus=0)
    assert (cpu.device, cpu.num_gpus, cpu.actors, cpu.torch_threads) == ("cpu", 0.0, (2, 2), 4)
    gpu = ResourcePlan.decide(InferenceConfig(actors=1, max_actors=3), cpus=16, gpus=2)
    assert (gpu.device, gpu.num_gpus, gpu.actors, gpu.torch_threads) == ("cuda", 1.0, (1, 3), None)
    with pytest.raises(PipelineError, match="no GPU"):
        ResourcePlan.decide(InferenceConfig(num_gpus=1.0), cpus=4, gpus=0)


def test_the_plan_takes_a_fidelity_target_for_a_backbone_without_classifier(tmp_path):
    from featcomp.backbones import BackboneSpec
    from featcomp.head import CompressibleHead
    from featcomp.model import save_model
    from featcomp.ratecontrol import RateControl, step_ladder_head

    ladder = step_ladder_head(8, 4, (0.5, 1.0), analysis="linear", synthesis="linear")
    path = str(save_model(tmp_path / "deepsort.safetensors", ladder,
                          backbone=BackboneSpec(name="mobilenet_v2_deepsort", weights=None)))
    cfg = ExtractConfig(progress=False).with_overrides(inference={"max_distortion": 0.05})
    plan = ExtractPlan.build(cfg, path)
    assert plan.rate_control == RateControl(criterion="distortion", budget=0.05) and plan.rate_controlled
    assert plan.writer_kwargs()["levels"] is True and plan.keep_top1 is None
    meta = plan.video_metadata("/a", np.arange(2))
    assert meta["rate_control"] == {"criterion": "distortion", "budget": 0.05, "target_agreement": 1.0}
    assert "keep_top1" not in meta
    # the teacher-based targets still need the classifier this backbone lacks; a fixed-rate head none of them
    for inf in ({"max_kl": 0.1}, {"keep_top1": 0.9}):
        name = next(iter(inf))
        with pytest.raises(ConfigError, match=f"{name}.*deepsort.safetensors.*classifier"):
            ExtractPlan.build(ExtractConfig(progress=False).with_overrides(inference=inf), path)
    fixed = str(save_model(tmp_path / "fixed.safetensors",
                           CompressibleHead(in_channels=8, latent_channels=4, synthesis="linear")))
    with pytest.raises(ConfigError, match="max_distortion.*fixed.safetensors.*variable-rate"):
        ExtractPlan.build(cfg, fixed)


def test_the_plan_decides_keep_top1_once(rate_control_model):
    from featcomp.ratecontrol import RateControl

    on = ExtractPlan.build(ExtractConfig(progress=False).with_overrides(inference={"keep_top1": 0.9}),
                           str(rate_control_model))
    assert on.rate_control == RateControl(target_agreement=0.9) and on.rate_controlled and on.keep_top1 == 0.9
    assert on.writer_kwargs()["levels"] is True and on.video_metadata("/a", np.arange(2))["keep_top1"] == 0.9
    off = ExtractPlan.build(ExtractConfig(progress=False).with_overrides(inference={"rate": 1.0}),
                            str(rate_control_model))
    assert off.rate_control is None and not off.rate_controlled and "levels" not in off.writer_kwargs()
    assert "keep_top1" not in off.video_metadata("/a", np.arange(2))
    # the rate is applied once, on the driver: the plan's model is at the job's rate
    import featcomp

    assert off.model.rate == 1.0 and off.model.rate_card()["level"] == 1.0
    assert on.model.rate == featcomp.load_model(rate_control_model).rate
    # the plan crosses to the actors whole (pickled by Ray): same model, same rate control
    back = pickle.loads(pickle.dumps(on))
    assert back.model.digest == on.model.digest and back.rate_control == on.rate_control

    # nothing else reads inference.keep_top1 or builds a RateControl: the stages and the driver ask the plan
    for name in ("extract.py", "stages.py", "rows.py", "progress.py", "inputs.py"):
        tree = ast.parse((PIPELINES / name).read_text())
        reads = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "keep_top1"
                 and isinstance(n.ctx, ast.Load)]
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "RateControl"]
        assert not reads and not calls, f"{name} decides rate control itself"


def test_the_plan_refuses_before_ray_and_counts_payload_bits(tiny_model):
    cfg = ExtractConfig(progress=False)
    with pytest.raises(ConfigError, match="keep_top1.*tiny.safetensors"):
        ExtractPlan.build(cfg.with_overrides(inference={"keep_top1": 0.9}), str(tiny_model))
    with pytest.raises(ConfigError, match="raw-dtype int8"):
        ExtractPlan.build(cfg.with_overrides(output={"raw_dtype": "int8"}), str(tiny_model))
    plan = ExtractPlan.build(cfg.with_overrides(inference={"batch_size": 8}), str(tiny_model))
    assert not plan.raw and plan.sampling.batch_size == 8 and plan.sampling.timeout_s == cfg.decode.timeout_s
    k = np.zeros((5, 8), np.int32)
    assert plan.payload_bits(k) == pytest.approx(float(plan.model.codec.estimate_bits(k)))
    raw8 = ExtractPlan.build(cfg.with_overrides(output={"raw": True, "raw_dtype": "int8"}), str(tiny_model))
    assert raw8.raw and raw8.payload_bits(np.zeros((5, 16))) == 8.0 * 80 + 32.0 * 16
    assert raw8.writer_kwargs()["raw_dtype"] == "int8"
    from featcomp.pipelines.plan import backbone_only

    spec = backbone_only({"name": "mobilenet_v3_small", "weights": None}, cfg)
    head_less = ExtractPlan.build(cfg, backbone=spec)
    assert head_less.raw and head_less.model is None and head_less.sampling.fps == 1.0
    card = head_less.writer_kwargs()["model_card"]
    assert card["backbone"] == spec and card["sampling"] == head_less.sampling.to_dict()
    assert head_less.payload_bits(np.zeros((2, 16))) == 16.0 * 32


@pytest.mark.video
@pytest.mark.timeout(120)
def test_encoder_on_the_plan_codes_like_an_extractor_on_the_model_file(tiny_model, tmp_path):
    """The actor builds its Extractor on the driver's model object: the latents are those of the file."""
    import featcomp
    from featcomp.pipelines.stages import EncodeChunks, decode_videos
    from tests.clips import make_clip

    cfg = ExtractConfig(progress=False).with_overrides(inference={"batch_size": 8, "device": "cpu"})
    plan = ExtractPlan.build(cfg, str(tiny_model)).with_resources(cpus=2, gpus=0)
    clip = make_clip(tmp_path / "a.mp4", 40, fps=25, width=64, height=48)
    decoded = list(decode_videos({"video_id": np.array(["a"]), "path": np.array([str(clip)])}, **plan.decode_kwargs()))
    decoded.append(FailureRow("bad", "/bad.mp4", "VideoError: bad").to_batch())
    enc = EncodeChunks(plan)
    assert enc.extractor.model is plan.model and enc.extractor.rate_control is None
    out = enc({k: [b[k][0] for b in decoded] for k in decoded[0]})
    rows = [parse_row({k: v[i] for k, v in out.items()}) for i in range(len(decoded))]
    assert isinstance(rows[-1], FailureRow) and rows[-1].error == "VideoError: bad"
    chunks = [r for r in rows if isinstance(r, ChunkRow)]
    assert [c.chunk for c in chunks] == list(range(len(decoded) - 1)) and chunks[-1].last
    ref = featcomp.Extractor(featcomp.load_model(tiny_model), device="cpu", batch_size=8)
    frames = np.concatenate([np.asarray(b["frames"][0]) for b in decoded[:-1]])
    assert np.array_equal(np.concatenate([c.latents for c in chunks]), ref.encode_frames(frames))
    assert all(c.float16_bytes > 0 for c in chunks)
