"""Distributed batch extraction on Ray Data: videos -> decode -> backbone + head -> entropy coding -> store.

Run it as ``featcomp extract INPUT... --store STORE --model MODEL`` or as a Ray job::

    python -m featcomp.pipelines.extract data/clips --store runs/feat.zarr --model runs/model.fcm
    ray job submit --working-dir . -- python -m featcomp.pipelines.extract s3://bucket/videos \\
        --store s3://bucket/feat.zarr --model s3://bucket/model.fcm --config configs/extract_gpu_cluster.yaml

Stages (all streaming, so decoding overlaps inference):

1. **discover** (driver): inputs -> ``(video_id, path)`` with deterministic ids; videos already
   complete in the store are skipped (a re-run resumes). A directory of image frames (a *frames
   folder*: >= 2 images, no video file) is one video, timed at ``decode.frames_fps`` (``--frames-fps``).
2. **decode** (Ray tasks on CPU workers, one video per task): ``featcomp.video`` resized on decode,
   chunks of ``inference.batch_size`` frames; a watchdog reports hanging files.
3. **encode** (a pool of Ray actors, GPU when present): ``featcomp.Extractor.encode_frames``
   (backbone + frozen head -> int32 latents), or float16 backbone features with ``--raw``; with
   ``--keep-top1`` (per-frame rate control) also a rate level per frame, chosen per decoded chunk.
4. **write** (driver, one ``featcomp.StoreWriter``): chunks are reassembled per video, entropy
   coded by the writer and committed when the whole video is there, so a video appears in the
   store only complete (with ``--keep-top1`` the store records every frame's level: format version 3). A single writer needs no cross-process coordination; latents are ~100x
   smaller than frames and ANS codes ~10^8 symbols/s, so the driver is never the bottleneck (see
   docs/scaling.md).

Object storage: inputs, ``--store`` and ``--model`` may be any fsspec URL (``s3://``, ``gs://``,
``az://``); ``storage_options`` (config) / ``--storage-option KEY=VALUE`` reach every stage, and
environment credentials work as usual. Decode tasks stage each remote video in a bounded local
scratch file (``decode.scratch_dir`` / ``decode.scratch_mb``); see docs/scaling.md.

Fault tolerance: decode tasks are retried (``decode.max_retries``) and actors restarted
(``inference.max_restarts``/``max_task_retries``) when their process dies; bad videos become rows of
the store's failures table and the job goes on; killing the driver loses only uncommitted videos,
which the next run redoes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from featcomp.errors import ConfigError, FeatcompError, PipelineError
from featcomp.pipelines.config import ExtractConfig, RayConfig, load_config
from featcomp.pipelines.inputs import VIDEO_EXTENSIONS, VideoInput, discover
from featcomp.pipelines.plan import ExtractPlan, backbone_only
from featcomp.pipelines.progress import JobSummary, Progress
from featcomp.pipelines.rows import ChunkRow, FailureRow, VideoTask, parse_row

__all__ = ["configure", "main", "run_extract", "build_dataset", "init_ray", "ChunkAssembler", "VideoDone",
           "VideoFailed"]

log = logging.getLogger("featcomp.pipelines.extract")


# ------------------------------------------------------------------------------------------ Ray
def init_ray(cfg: RayConfig, address: str | None = None) -> bool:
    """Connect to Ray, or start it locally with small-machine settings.

    Order: an already initialized Ray is reused; then ``address`` (``--address``), ``cfg.address``,
    the ``RAY_ADDRESS`` environment variable (set by ``ray job submit``); otherwise a new local Ray of
    the job's own with ``cfg.num_cpus`` CPUs and a ``cfg.object_store_memory_mb`` object store, even
    when a cluster started with ``ray start`` runs on this machine (use ``--address auto`` for that).

    Returns:
        True when this call started or connected Ray (so the job should shut it down at the end).

    Raises:
        PipelineError: the cluster cannot be reached.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    addr = address or cfg.address or os.environ.get("RAY_ADDRESS") or None
    common: dict[str, Any] = {"namespace": cfg.namespace, "log_to_driver": cfg.log_to_driver, "logging_level": logging.WARNING}
    try:
        if addr:
            log.info("ray: connecting to the cluster at %s", addr)
            ray.init(address=addr, **common)
        else:
            num_cpus = cfg.num_cpus or os.cpu_count() or 1
            kwargs: dict[str, Any] = dict(num_cpus=num_cpus, include_dashboard=cfg.include_dashboard, **common)
            if cfg.num_gpus is not None:
                kwargs["num_gpus"] = cfg.num_gpus
            if cfg.object_store_memory_mb:
                kwargs["object_store_memory"] = int(cfg.object_store_memory_mb) * 2**20
            log.info("ray: starting locally (%d CPUs, object store %s MiB)", num_cpus, cfg.object_store_memory_mb)
            # address="local": a Ray of its own even when a cluster started with `ray start` is recorded
            # on this machine (ray.init() would connect to it, and refuse num_cpus/num_gpus)
            ray.init(address="local", **kwargs)
            _start_reaper()
    except (ConnectionError, RuntimeError, ValueError) as e:
        why = f"{e} ({e.__cause__})" if e.__cause__ is not None else str(e)
        hint = ""
        if "token" in why.lower() or "auth" in why.lower():
            hint = ("; the cluster uses token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or "
                    "RAY_AUTH_TOKEN_PATH) to the head's token on the driver (docs/scaling.md)")
        raise PipelineError(f"cannot start or reach Ray at {addr or 'local'}: {why}{hint}") from None
    return True


_REAPER_PID: int | None = None  # the driver pid whose reaper runs (a forked child starts its own)


def _start_reaper() -> None:
    """Watch this driver from a separate session: if it dies, the local Ray's processes go within
    seconds, not a minute (see ``featcomp/pipelines/_reaper.py``). Linux only; best effort."""
    global _REAPER_PID
    if not sys.platform.startswith("linux") or _REAPER_PID == os.getpid():
        return  # one reaper per driver process watches every local Ray it starts
    import subprocess

    try:
        subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_reaper.py"),
                          str(os.getpid())], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        _REAPER_PID = os.getpid()
    except OSError as e:  # pragma: no cover - the job runs without it
        log.warning("ray: could not start the process reaper (%s); after a kill -9 of the driver Ray's agents "
                    "linger for about a minute", e)


def _cluster_resources() -> tuple[float, float]:
    import ray

    res = ray.cluster_resources()
    return float(res.get("CPU", 0)), float(res.get("GPU", 0))


# ------------------------------------------------------------------------------------- assembly
class VideoDone(NamedTuple):
    """A video whose chunks are all there, concatenated in chunk order (a tuple: ``("done", ...)``)."""

    kind: str
    video_id: str
    path: str
    latents: np.ndarray
    timestamps: np.ndarray  # float64 seconds
    indices: np.ndarray  # int64 frame numbers
    float16_bytes: int
    levels: np.ndarray | None  # uint8 per-frame rate levels, when the chunks carry them


class VideoFailed(NamedTuple):
    """A video that failed in a stage (a tuple: ``("failed", video_id, path, error)``)."""

    kind: str
    video_id: str
    path: str
    error: str


@dataclass
class _Pending:
    chunks: dict[int, ChunkRow] = field(default_factory=dict)
    num_chunks: int | None = None
    path: str = ""


class ChunkAssembler:
    """Reassembles per-video chunk rows arriving in any order (and possibly twice, after a retry).

    ``add`` takes a row of the encoded dataset (a dict as ``iter_rows`` yields it, or a
    :class:`~featcomp.pipelines.rows.ChunkRow` / :class:`~featcomp.pipelines.rows.FailureRow`) and returns
    :class:`VideoDone` when the last missing chunk of a video arrives, :class:`VideoFailed` for a failure
    row (once per video), or ``None``. A row is a failure exactly when it has an ``error``
    (:func:`~featcomp.pipelines.rows.parse_row`). Chunks of a failed video are dropped. Idempotent in
    the chunk index.
    """

    def __init__(self) -> None:
        self.pending: dict[str, _Pending] = {}
        self.finished: set[str] = set()
        self.partial: dict[str, str] = {}  # video -> why it is incomplete (truncated, allow_partial)

    def add(self, row: dict[str, Any] | ChunkRow | FailureRow) -> VideoDone | VideoFailed | None:
        rec = parse_row(row)
        vid = rec.video_id
        if vid in self.finished:
            return None
        if isinstance(rec, FailureRow):
            self.pending.pop(vid, None)
            self.finished.add(vid)
            return VideoFailed("failed", vid, rec.path, rec.error)
        p = self.pending.setdefault(vid, _Pending(path=rec.path))
        if rec.partial:
            self.partial[vid] = rec.partial
        p.chunks[rec.chunk] = rec
        if rec.last:
            p.num_chunks = rec.chunk + 1
        if p.num_chunks is None or len(p.chunks) < p.num_chunks:
            return None
        del self.pending[vid]
        self.finished.add(vid)
        parts = [p.chunks[i] for i in range(p.num_chunks)]
        have_levels = [c.levels is not None for c in parts]
        if any(have_levels) and not all(have_levels):
            raise PipelineError(f"video {vid!r}: some chunks carry per-frame rate levels and some do not; "
                                "the encoder actors disagree (mixed configurations?)")
        return VideoDone(
            "done",
            vid,
            p.path,
            np.concatenate([c.latents for c in parts]),
            np.concatenate([c.timestamps for c in parts]).astype(np.float64),
            np.concatenate([c.indices for c in parts]).astype(np.int64),
            sum(c.float16_bytes for c in parts),
            np.concatenate([c.levels for c in parts]) if all(have_levels) else None,
        )

    def incomplete(self) -> list[tuple[str, str]]:
        """Videos with chunks still missing (should be empty once the dataset is exhausted)."""
        return [(vid, p.path) for vid, p in self.pending.items()]


# ------------------------------------------------------------------------------------------ job
def run_extract(
    inputs: Sequence[str] | Sequence[VideoInput],
    store: str,
    model_path: str | None = None,
    *,
    backbone: Any = None,
    sampling: Any = None,
    config: ExtractConfig | None = None,
    address: str | None = None,
    shutdown: bool | None = None,
    storage_options: dict | None = None,
    raw_dtype: str | None = None,
) -> JobSummary:
    """Extract every input video into ``store`` (the library-level entry point of the job).

    Args:
        inputs: Input specs for :func:`featcomp.pipelines.inputs.discover`, or already resolved videos.
        store: Path or URL of the Zarr store (created, or appended to).
        model_path: A featcomp model file (``featcomp.save_model``), read once by the driver. None
            with ``backbone``: no head, raw float16 backbone features (video_features' first step).
        backbone: Without a model: the backbone whose features to store (a name, a ``BackboneSpec`` or
            its dict); the store is raw (float16 + zstd) and its card records the spec and sampling, so
            ``featcomp train`` fits a head on it and ``featcomp transcode`` codes it later.
        sampling: Without a model: the ``SamplingConfig`` (or dict); default 1 frame per second.
        config: Job configuration (default: ``configs/extract_default.yaml``).
        address: Ray address; overrides ``config.ray.address``.
        shutdown: Shut Ray down at the end (default: only when this call started it).
        storage_options: Options of the filesystem of every URL (inputs, store, model), added to
            ``config.storage_options`` (these win); environment credentials apply as usual.
        raw_dtype: Raw stores (``backbone``, or ``config.output.raw``): ``"float16"`` or ``"int8"``
            (per-video per-channel scales, docs/format.md); overrides ``config.output.raw_dtype``.

    Returns:
        The run's :class:`JobSummary`.

    Raises:
        PipelineError: no inputs, unreachable cluster, a stage that failed beyond its retries.
        StoreError, ModelFileError: the store or model cannot be used.
    """
    import featcomp

    t0 = time.perf_counter()
    _check_store_path(store)
    cfg = config or load_config(None)
    if raw_dtype is not None:
        cfg = cfg.with_overrides(output={"raw_dtype": raw_dtype})
    extensions = cfg.extensions or VIDEO_EXTENSIONS
    opts = {**cfg.storage_options, **(storage_options or {})}
    if storage_options:
        cfg = cfg.replace(storage_options=opts)  # the stages read them from the config
    if (model_path is None) == (backbone is None):
        raise ConfigError("featcomp extract: give --model MODEL (compressed features) or --backbone NAME (raw "
                          "backbone features, no head), not both" if model_path else
                          "featcomp extract: give --model MODEL (compressed features) or --backbone NAME (raw "
                          "backbone features, no head)")
    spec_dict = None
    if backbone is not None:
        spec_dict = backbone_only(backbone, cfg)
    videos = (list(inputs) if inputs and isinstance(inputs[0], VideoInput)
              else discover([str(i) for i in inputs], extensions=extensions, storage_options=opts))
    # every decision of the job, once: the model (loaded once, at the job's rate), rate control, sampling,
    # the store's options; the stages receive this plan
    plan = ExtractPlan.build(cfg, model_path, backbone=spec_dict, sampling=sampling)
    summary = JobSummary(store=str(store), total=len(videos), raw=plan.raw, raw_dtype=plan.raw_dtype)

    size_before = _store_size(store, opts)
    with featcomp.StoreWriter(store, plan.model, **plan.writer_kwargs()) as writer:
        if cfg.output.overwrite:
            todo = videos
        else:
            todo = [v for v in videos if v.video_id not in writer]
        summary.skipped = len(videos) - len(todo)
        log.info("store: %s (%d videos found, %d already complete, %d to extract)", store, len(videos), summary.skipped, len(todo))
        log.info("failures are recorded in the store's failures table: featcomp info %s", store)
        if not todo:
            summary.wall_s = time.perf_counter() - t0
            return summary

        started = init_ray(cfg.ray, address)
        try:
            _run_dataset(todo, plan, writer, summary)
        finally:
            if shutdown or (shutdown is None and started):
                import ray

                ray.shutdown()
    summary.bytes_written = max(0, _store_size(store, opts) - size_before)
    summary.wall_s = time.perf_counter() - t0
    return summary


def _check_store_path(store: Any) -> None:
    """A local store path must be a directory or not exist yet (checked before any work starts).

    Raises:
        StoreError: the path is an existing file.
    """
    from featcomp.errors import StoreError

    s = str(store)
    if "://" not in s and os.path.exists(s) and not os.path.isdir(s):
        raise StoreError(f"--store {s} is a file, not a store directory; give a new or existing store directory "
                         "(e.g. feats.zarr)")


def _store_size(url: str, storage_options: dict | None = None) -> int:
    """Total bytes under a store (0 if it does not exist yet); local paths and fsspec URLs."""
    try:
        from featcomp.storage import filesystem

        fs, root = filesystem(str(url), storage_options)
        return int(fs.du(root, total=True)) if fs.exists(root) else 0
    except Exception:  # size is informative only; never fail the job on it
        return 0


def build_dataset(todo: Sequence[VideoInput], plan: ExtractPlan, encoder_cls: type | None = None):
    """The lazy Ray Dataset of the job: videos -> decode tasks -> encoder actor pool.

    ``plan`` must carry its resources (:meth:`ExtractPlan.with_resources`). Rows out: ``video_id``,
    ``path``, ``chunk``, ``last``, ``latents``, ``timestamps``, ``indices``, ``error``, ``partial``,
    ``float16_bytes`` (and ``levels`` with rate control): :class:`~featcomp.pipelines.rows.ChunkRow` /
    :class:`~featcomp.pipelines.rows.FailureRow` through :func:`~featcomp.pipelines.rows.parse_row`.
    """
    import ray.data

    from featcomp.pipelines.stages import EncodeChunks, decode_videos

    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    if plan.resources is None:
        raise PipelineError("build_dataset: the plan has no resources; use plan.with_resources(cpus, gpus)")
    cfg, res = plan.config, plan.resources
    items = [VideoTask(v.video_id, v.path).to_row() for v in todo]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    lo, hi = res.actors
    pool = ActorPoolStrategy(size=lo) if lo == hi else ActorPoolStrategy(min_size=lo, max_size=hi)
    with warnings.catch_warnings():
        # Ray 2.60 flags **ray_remote_args as deprecated, yet retries/restarts have no named parameter
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*", category=DeprecationWarning)
        ds = ds.map_batches(
            decode_videos,
            batch_size=1,
            compute=TaskPoolStrategy(size=cfg.decode.concurrency),
            fn_kwargs=plan.decode_kwargs(),
            num_cpus=cfg.decode.num_cpus,
            max_retries=cfg.decode.max_retries,
            retry_exceptions=False,
        )
        return ds.map_batches(
            encoder_cls or EncodeChunks,
            batch_size=cfg.inference.chunks_per_call,
            compute=pool,
            fn_constructor_kwargs={"plan": plan},
            num_gpus=res.num_gpus or None,
            num_cpus=cfg.inference.num_cpus,
            max_restarts=cfg.inference.max_restarts,
            max_task_retries=cfg.inference.max_task_retries,
        )


def _run_dataset(todo: Sequence[VideoInput], plan: ExtractPlan, writer: Any, summary: JobSummary) -> None:
    import ray
    import ray.data

    cfg = plan.config
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.ray.data_progress_bars
    ctx.print_on_execution_start = cfg.ray.data_progress_bars
    if not cfg.ray.data_progress_bars:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    plan = plan.with_resources(*_cluster_resources())
    res = plan.resources
    log.info(
        "ray: cluster of %g CPUs, %g GPUs; %s encoder actor(s) on %s (num_gpus=%g each, %s torch threads)",
        *res.cluster, "%d..%d" % res.actors, res.device, res.num_gpus, res.torch_threads,
    )
    ds = build_dataset(todo, plan)
    assembler = ChunkAssembler()
    progress = Progress(len(todo), enabled=cfg.progress)
    try:
        for row in ds.iter_rows():
            event = assembler.add(row)
            if event is None:
                continue
            if isinstance(event, VideoFailed):
                _, vid, path, error = event
                writer.record_failure(vid, path, error)
                summary.failed += 1
                summary.failures.append((vid, path, error))
                log.warning("failed: %s (%s): %s", vid, path, error)
                progress.update(failed=True)
                continue
            _, vid, path, latents, timestamps, indices, f16, levels = event
            meta = plan.video_metadata(path, indices)
            if vid in assembler.partial:  # a truncated file kept with decode.allow_partial
                meta["partial"] = assembler.partial.pop(vid)
                log.warning("partial: %s (%s): %s", vid, path, meta["partial"])
            if plan.rate_controlled and levels is None:
                raise PipelineError(f"video {vid!r}: the encoder returned no per-frame levels although "
                                    "per-frame rate control is set")
            record = writer.write(vid, latents, timestamps, metadata=meta, force=cfg.output.overwrite, levels=levels)
            if record is None:  # already there (another run finished it meanwhile)
                summary.skipped += 1
                progress.update()
                continue
            bits = plan.payload_bits(latents)
            summary.done += 1
            summary.frames += len(latents)
            summary.payload_bits += bits
            summary.float16_bytes += f16
            log.debug("wrote %s: %d frames, %.0f bits", vid, len(latents), bits)
            progress.update(frames=len(latents), bits=bits)
    except ray.exceptions.RayError as e:
        raise PipelineError(f"the Ray job failed beyond its retries: {e}") from e
    finally:
        progress.close()
    for vid, path in assembler.incomplete():  # a stage lost chunks: never write a partial video
        error = "PipelineError: chunks went missing in the pipeline; re-run the job to retry this video"
        writer.record_failure(vid, path, error)
        summary.failed += 1
        summary.failures.append((vid, path, error))


# ------------------------------------------------------------------------------------------ CLI
def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``featcomp extract`` / ``python -m featcomp.pipelines.extract``."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video files, directories (recursive), globs, manifests (.csv/.parquet/.txt) or fsspec URLs")
    parser.add_argument("--store", required=True, help="Zarr store to write (path or URL); created or resumed")
    parser.add_argument("--model", default=None,
                        help="featcomp model file (featcomp.save_model), a path or URL: store compressed features")
    parser.add_argument("--backbone", default=None, metavar="NAME",
                        help="no model: store raw float16 backbone features of NAME (a torchvision or registered "
                             "backbone, or package.module:factory) with timestamps; train a head on them later "
                             "(featcomp train) and code them (featcomp transcode)")
    parser.add_argument("--weights", default="DEFAULT",
                        help="with --backbone: torchvision weights (DEFAULT, IMAGENET1K_V2, none) (default DEFAULT)")
    parser.add_argument("--weights-path", default=None, help="with --backbone: a local state-dict file")
    parser.add_argument("--layer", default=None, help="with --backbone: node to tap (default: pre-classifier)")
    parser.add_argument("--fps", type=float, default=None,
                        help="with --backbone: frames per second to sample (default 1)")
    parser.add_argument("--config", default=None, help="job YAML (default: configs/extract_default.yaml)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address ('auto', 'ray://host:10001'); default: RAY_ADDRESS or a local Ray")
    parser.add_argument("--raw", action="store_true", help="write float16 backbone features (to train a head at scale)")
    parser.add_argument("--raw-dtype", choices=("float16", "int8"), default=None,
                        help="values of a raw store (--raw, --backbone): float16 (default), or int8 quantized per "
                             "video and channel with float32 scales (half the bytes; readers return float32)")
    parser.add_argument("--overwrite", action="store_true", help="re-extract videos already complete in the store")
    parser.add_argument("--allow-partial", action="store_true",
                        help="keep the decodable part of truncated videos, marked partial in the store (default: "
                             "a truncated video is a failure row; decode.allow_partial)")
    parser.add_argument("--frames-fps", type=float, default=None, metavar="F",
                        help="frame rate of frames-folder inputs (a directory of JPEG/PNG/BMP/WebP images as one "
                             "video): frame i is at i / F seconds (default: decode.frames_fps, 25)")
    parser.add_argument("--batch-size", type=int, default=None, help="frames per model call (overrides the config)")
    parser.add_argument("--actors", type=int, default=None, help="encoder actors (overrides the config)")
    parser.add_argument("--rate", type=float, default=None,
                        help="variable-rate models: rate level (0 = most bits; floats interpolate; overrides the config)")
    parser.add_argument("--keep-top1", type=float, default=None, metavar="TARGET",
                        help="per-frame rate control: each frame gets the coarsest rate level whose decoded features keep "
                             "the backbone classifier's top-1, on at least this fraction of each chunk's frames; the "
                             "store records every frame's level (inference.keep_top1; excludes --rate and --raw)")
    parser.add_argument("--max-distortion", type=float, default=None, metavar="D",
                        help="per-frame rate control by a fidelity target, for any backbone (no classifier needed): "
                             "each frame gets the coarsest level whose decoded features are within relative squared "
                             "error D (||x_hat - x||^2 / ||x||^2) of the backbone's (inference.max_distortion)")
    parser.add_argument("--max-kl", type=float, default=None, metavar="B",
                        help="per-frame rate control by a KL budget: KL of the backbone classifier's softmax on the "
                             "original vs decoded features <= B nats per frame (inference.max_kl)")
    parser.add_argument("--keep-fraction", type=float, default=None, metavar="T",
                        help="with --max-distortion/--max-kl: the fraction of each chunk's frames that must meet the "
                             "budget (default 1; below 1 the most expensive frames get the coarsest level)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (overrides the config)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--summary-json", default=None, help="also write the summary as JSON to this file")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: log each video written")
    from featcomp.storage import add_storage_option_argument

    add_storage_option_argument(parser)


def _config_from_args(args: argparse.Namespace) -> ExtractConfig:
    cfg = load_config(args.config)
    inference = {k: v for k, v in (("batch_size", args.batch_size), ("actors", args.actors),
                                   ("rate", getattr(args, "rate", None)),
                                   ("keep_top1", getattr(args, "keep_top1", None)),
                                   ("max_distortion", getattr(args, "max_distortion", None)),
                                   ("max_kl", getattr(args, "max_kl", None)),
                                   ("keep_fraction", getattr(args, "keep_fraction", None))) if v is not None}
    if inference.get("actors") and cfg.inference.max_actors and cfg.inference.max_actors < inference["actors"]:
        inference["max_actors"] = inference["actors"]
    output: dict[str, Any] = {"raw": True} if args.raw else {}
    if getattr(args, "raw_dtype", None):
        output["raw_dtype"] = args.raw_dtype
    if args.overwrite:
        output["overwrite"] = True
    ray_cfg = {"num_cpus": args.num_cpus} if args.num_cpus else {}
    decode: dict[str, Any] = {"allow_partial": True} if getattr(args, "allow_partial", False) else {}
    if getattr(args, "frames_fps", None) is not None:
        decode["frames_fps"] = args.frames_fps
    cfg = cfg.with_overrides(inference=inference, output=output, ray=ray_cfg, decode=decode)
    if args.no_progress:
        cfg = cfg.replace(progress=False)
    from featcomp.storage import storage_options_from_args

    cli_opts = storage_options_from_args(args)
    if cli_opts:  # --storage-option adds to (and wins over) the config's storage_options
        cfg = cfg.replace(storage_options={**cfg.storage_options, **cli_opts})
    return cfg


def main(args: argparse.Namespace) -> int:
    """Run the job from parsed arguments; exit status 0 when every video is done or skipped, 3 when
    some failed (they are in the store's failures table)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("featcomp").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    cfg = _config_from_args(args)
    backbone = sampling = None
    if args.backbone is not None:
        weights = None if str(args.weights).lower() in ("none", "random") else args.weights
        if ":" in args.backbone:  # package.module:factory -> a custom module, rebuilt in every worker
            backbone = {"name": args.backbone.rsplit(":", 1)[1], "factory": args.backbone, "weights": None,
                        "layer": args.layer, "weights_path": args.weights_path}
        else:
            backbone = {"name": args.backbone, "weights": weights, "layer": args.layer,
                        "weights_path": args.weights_path}
        sampling = {"mode": "fps", "fps": float(args.fps) if args.fps else 1.0}
    elif args.fps is not None or args.layer is not None or args.weights_path is not None:
        raise ConfigError("featcomp extract: --fps, --layer and --weights-path go with --backbone; a --model "
                          "records its own sampling and backbone")
    summary = run_extract(args.inputs, args.store, args.model, backbone=backbone, sampling=sampling, config=cfg,
                          address=args.address)
    print(summary.format(), flush=True)
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            f.write(summary.to_json())
    return 3 if summary.failed else 0


def _entry(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featcomp.pipelines.extract", description=__doc__.split("\n\n")[0])
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return main(args)
    except FeatcompError as e:
        print(f"extract: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("extract: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(_entry())
