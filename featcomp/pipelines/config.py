"""Configuration of the extraction job: frozen featcomp ``Config`` dataclasses that round-trip YAML.

``configs/extract_default.yaml`` is the embedded default (a small machine, local Ray);
``configs/extract_gpu_cluster.yaml`` shows a multi-node GPU cluster. Every field has a default, so a
YAML file names only what it changes; unknown keys are errors (a typo is never ignored).

Example::

    cfg = ExtractConfig.from_yaml(Path("configs/extract_default.yaml").read_text())
    cfg.inference.batch_size  # 32
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featcomp.config import Config, require
from featcomp.errors import ConfigError

__all__ = [
    "RayConfig",
    "DecodeConfig",
    "InferenceConfig",
    "OutputConfig",
    "ExtractConfig",
    "load_config",
    "CONFIG_DIR",
]

# the repository's configs/ (featcomp/pipelines/config.py -> ../../configs); an installed wheel has none,
# so load_config(None) falls back to the built-in defaults there
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class RayConfig(Config):
    """How to reach (or start) Ray.

    Attributes:
        address: ``None`` starts Ray locally unless ``RAY_ADDRESS`` is set (``ray job submit`` sets
            it); ``"auto"`` joins the cluster this node belongs to; ``"ray://host:10001"`` a remote one.
        num_cpus: CPUs of a local Ray (``None``: all cores). Ignored when joining a cluster.
        num_gpus: GPUs of a local Ray (``None``: detected). Ignored when joining a cluster.
        object_store_memory_mb: Object store of a local Ray in MiB. Without it Ray reserves ~30% of
            memory; frames are small once resized on decode, so 512 MiB is plenty for one machine.
        include_dashboard: Start the dashboard with a local Ray.
        namespace: Ray namespace of the job.
        data_progress_bars: Show Ray Data's own per-operator progress bars as well as the job's.
        log_to_driver: Forward workers' stdout/stderr (decoder warnings) to the driver's terminal.
    """

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_memory_mb: int | None = 512
    include_dashboard: bool = False
    namespace: str | None = "featcomp"
    data_progress_bars: bool = False
    log_to_driver: bool = False

    def __post_init__(self) -> None:
        require(self.num_cpus is None or self.num_cpus >= 1, f"ray.num_cpus must be >= 1, got {self.num_cpus}")
        require(self.num_gpus is None or self.num_gpus >= 0, f"ray.num_gpus must be >= 0, got {self.num_gpus}")
        require(
            self.object_store_memory_mb is None or self.object_store_memory_mb >= 75,
            f"ray.object_store_memory_mb must be >= 75 (Ray's minimum), got {self.object_store_memory_mb}",
        )


@dataclass(frozen=True)
class DecodeConfig(Config):
    """The decode stage: Ray tasks on CPU workers, one video per task, resized on decode.

    Attributes:
        num_cpus: CPUs reserved per decode task.
        concurrency: Most decode tasks at once (``None``: Ray Data decides from free CPUs).
        timeout_s: A video that yields no frames for this long is recorded as failed (decord can
            hang on broken files); the job goes on.
        max_retries: Retries of a decode task whose worker process died.
        backend: ``"auto"``, ``"pyav"``, ``"decord"`` or ``"torchcodec"`` (featcomp.video backends).
        sampling: Overrides of the model's ``SamplingConfig`` fields (e.g. ``{fps: 2.0}``);
            ``batch_size`` there is the frames per decoded chunk.
        scratch_dir: Local directory where a decode task stages a video read from a URL (``None``:
            the system temporary directory, ``TMPDIR``). Each video is copied there whole, decoded,
            and deleted when its task moves on.
        scratch_mb: The largest video (MiB) a decode task stages; a larger one is recorded as a
            failure. A node's scratch use is at most its concurrent decode tasks times this.
        allow_partial: Keep the decodable part of a truncated video (one that ends before the frame
            count or duration its container declares), marked ``partial`` in its store metadata;
            by default such a video is a failure row (``TruncatedVideoError``).
        frames_fps: Frame rate of frames-folder inputs (a directory of images as one video,
            docs/pipeline.md): frame ``i`` is at ``i / frames_fps`` seconds, and the sampling's
            ``fps`` picks from those times. Video files keep their own timestamps.
    """

    num_cpus: float = 1.0
    concurrency: int | None = None
    timeout_s: float = 60.0
    max_retries: int = 3
    backend: str = "auto"
    sampling: dict[str, Any] = field(default_factory=dict)
    scratch_dir: str | None = None
    scratch_mb: int = 4096
    allow_partial: bool = False
    frames_fps: float = 25.0

    def __post_init__(self) -> None:
        require(self.num_cpus > 0, f"decode.num_cpus must be > 0, got {self.num_cpus}")
        require(self.frames_fps > 0 and self.frames_fps != float("inf"),
                f"decode.frames_fps must be a positive number of frames per second, got {self.frames_fps}")
        require(self.scratch_mb >= 1, f"decode.scratch_mb must be >= 1, got {self.scratch_mb}")
        require(self.concurrency is None or self.concurrency >= 1, "decode.concurrency must be >= 1")
        require(self.timeout_s > 0, f"decode.timeout_s must be > 0, got {self.timeout_s}")
        require(self.max_retries >= 0, "decode.max_retries must be >= 0")
        require(self.backend in ("auto", "decord", "pyav", "torchcodec"),
                f"decode.backend must be auto, decord, pyav or torchcodec, got {self.backend!r}")
        require(isinstance(self.sampling, dict), "decode.sampling must be a mapping of SamplingConfig fields")


@dataclass(frozen=True)
class InferenceConfig(Config):
    """The backbone + head stage: a pool of Ray actors, each holding one frozen model.

    Attributes:
        actors: Actors in the pool (fixed size), or the lower bound when ``max_actors`` is set.
        max_actors: Upper bound of an autoscaling pool (``None``: fixed at ``actors``).
        num_gpus: GPUs per actor (fractions share a GPU: 0.5 puts two actors on one device);
            ``None`` means 1 when the cluster has GPUs and 0 otherwise.
        num_cpus: CPUs reserved per actor.
        torch_threads: Intra-op threads of torch in an actor (``None``: the node's cores divided by
            the actors, at least 1). Ray would otherwise pin an actor with ``num_cpus=1`` to one thread.
        batch_size: Frames per model call: decoded chunks hold at most this many frames.
        chunks_per_call: Decoded chunks regrouped into one model call (fills large GPU batches
            with the chunks of short videos); 1 keeps one chunk per call.
        device: ``"auto"`` (cuda when the actor has a GPU), ``"cpu"`` or ``"cuda"``.
        dtype: Autocast dtype for the backbone: ``"auto"`` (bfloat16 on GPU, float32 on CPU),
            ``"float32"``, ``"bfloat16"``, ``"float16"``.
        max_restarts: Restarts of an actor whose process died (-1: forever).
        max_task_retries: Retries of a batch whose actor died while holding it (-1: forever).
        rate: Rate level of a variable-rate model (0 = most bits; floats interpolate between levels);
            ``None`` keeps the model's default. Recorded in the store's model card.
        keep_top1: Per-frame rate control (:class:`featcomp.ratecontrol.RateControl`
            ``target_agreement``, in (0, 1]): each frame gets the coarsest rate level whose decoded
            features keep the backbone classifier's top-1, and the store records every frame's level
            (store format version 3). Needs a variable-rate factorized or temporal model with a synthesis
            transform and a backbone with a classifier. The give-up quota ``floor((1 - keep_top1) * n)`` applies
            per decoded chunk (``n`` <= ``batch_size`` frames of one video, whatever ``chunks_per_call``),
            so the guarantee holds per video and the levels do not depend on how Ray groups chunks.
            Excludes ``rate`` and ``output.raw``. ``None``: off.
        max_distortion: Per-frame rate control by a generic fidelity target, for backbones with no
            classifier: each frame gets the coarsest level whose decoded features are within this
            relative squared error (``||x_hat - x||^2 / ||x||^2``) of the backbone's features.
            Excludes ``keep_top1``, ``max_kl``, ``rate`` and ``output.raw``. ``None``: off.
        max_kl: Per-frame rate control by a KL budget (nats per frame) between the backbone
            classifier's softmax on the original and on the decoded features (needs a classifier).
            Excludes ``keep_top1``, ``max_distortion``, ``rate`` and ``output.raw``. ``None``: off.
        keep_fraction: With ``max_distortion``/``max_kl``: the fraction of each chunk's frames that must
            meet the budget (in (0, 1]; below 1 the most expensive frames are coded at the coarsest
            level), as ``keep_top1`` is for the top-1. ``None``: 1.
    """

    actors: int = 1
    max_actors: int | None = None
    num_gpus: float | None = None
    num_cpus: float = 1.0
    torch_threads: int | None = None
    batch_size: int = 32
    chunks_per_call: int = 1
    device: str = "auto"
    dtype: str = "auto"
    max_restarts: int = 3
    max_task_retries: int = 3
    rate: float | None = None
    keep_top1: float | None = None
    max_distortion: float | None = None
    max_kl: float | None = None
    keep_fraction: float | None = None

    @property
    def rate_control_options(self) -> list[str]:
        """The names of the per-frame rate control targets that are set (at most one in a valid config)."""
        return [n for n in ("keep_top1", "max_distortion", "max_kl") if getattr(self, n) is not None]

    @property
    def rate_control(self) -> dict[str, Any] | None:
        """The :class:`featcomp.ratecontrol.RateControl` fields these settings ask for, or None."""
        if self.keep_top1 is not None:
            return {"target_agreement": float(self.keep_top1)}
        for criterion, budget in (("distortion", self.max_distortion), ("kl", self.max_kl)):
            if budget is not None:
                return {"criterion": criterion, "budget": float(budget),
                        "target_agreement": 1.0 if self.keep_fraction is None else float(self.keep_fraction)}
        return None

    def __post_init__(self) -> None:
        targets = self.rate_control_options
        require(len(targets) <= 1, f"inference.{' and inference.'.join(targets)} are per-frame rate control targets "
                                   "that exclude each other; set one of them")
        for n in ("max_distortion", "max_kl"):
            v = getattr(self, n)
            require(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 < v < float("inf")),
                    f"inference.{n} must be a finite number > 0, got {v!r}")
        require(self.keep_fraction is None or (self.max_distortion is not None or self.max_kl is not None),
                "inference.keep_fraction goes with inference.max_distortion or inference.max_kl (keep_top1 is "
                "its own fraction)")
        require(self.keep_fraction is None or 0.0 < self.keep_fraction <= 1.0,
                f"inference.keep_fraction must be in (0, 1], got {self.keep_fraction}")
        require(not targets or targets[0] == "keep_top1" or self.rate is None,
                f"inference.rate (one level for every frame) and inference.{targets[0] if targets else ''} (a level "
                "per frame, chosen by rate control) exclude each other; set one of them")
        require(self.rate is None or self.rate >= 0, f"inference.rate must be >= 0, got {self.rate}")
        require(self.keep_top1 is None or 0.0 < self.keep_top1 <= 1.0,
                f"inference.keep_top1 must be in (0, 1] (the fraction of frames whose top-1 is kept), got {self.keep_top1}")
        require(self.keep_top1 is None or self.rate is None,
                "inference.rate (one level for every frame) and inference.keep_top1 (a level per frame, chosen by "
                "rate control) exclude each other; set one of them")
        require(self.actors >= 1, f"inference.actors must be >= 1, got {self.actors}")
        require(self.max_actors is None or self.max_actors >= self.actors, "inference.max_actors must be >= actors")
        require(self.num_gpus is None or self.num_gpus >= 0, "inference.num_gpus must be >= 0")
        require(self.num_cpus >= 0, "inference.num_cpus must be >= 0")
        require(self.torch_threads is None or self.torch_threads >= 1, "inference.torch_threads must be >= 1")
        require(self.batch_size >= 1, f"inference.batch_size must be >= 1, got {self.batch_size}")
        require(self.chunks_per_call >= 1, "inference.chunks_per_call must be >= 1")
        require(self.device in ("auto", "cpu", "cuda"), f"inference.device must be auto, cpu or cuda, got {self.device!r}")
        require(self.dtype in _DTYPES, f"inference.dtype must be one of {_DTYPES}, got {self.dtype!r}")
        require(self.max_restarts >= -1 and self.max_task_retries >= -1, "retries must be >= -1")


@dataclass(frozen=True)
class OutputConfig(Config):
    """The store side.

    Attributes:
        chunk_frames: Frames per stored chunk (``None``: the store's default).
        raw: Write float16 backbone features instead of coded latents (training data for a head).
        raw_dtype: Values of a raw store (``raw`` or a head-less ``--backbone`` job): ``"float16"``
            (default) or ``"int8"`` (symmetric per-video per-channel quantization with float32 scales,
            half the bytes; store format version 4, docs/format.md).
        overwrite: Re-extract videos already complete in the store (default: skip them).
    """

    chunk_frames: int | None = None
    raw: bool = False
    raw_dtype: str = "float16"
    overwrite: bool = False

    def __post_init__(self) -> None:
        require(self.chunk_frames is None or self.chunk_frames >= 1, "output.chunk_frames must be >= 1")
        require(self.raw_dtype in ("float16", "int8"),
                f"output.raw_dtype must be float16 or int8, got {self.raw_dtype!r}")


@dataclass(frozen=True)
class ExtractConfig(Config):
    """Everything the extraction job needs besides inputs, store and model.

    Attributes:
        storage_options: Options of the filesystem of every URL the job opens (inputs, store, model):
            ``endpoint_url``, ``key``, ``secret``, ``anon``, ``client_kwargs`` ... (s3fs/gcsfs/adlfs
            keywords; :mod:`featcomp.storage`). Environment credentials apply as usual, and are the
            better place for secrets: these options travel to every Ray task and actor.
    """

    FORMAT_VERSION = 1

    ray: RayConfig = field(default_factory=RayConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    extensions: tuple[str, ...] = ()
    progress: bool = True
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, tp in (("ray", RayConfig), ("decode", DecodeConfig), ("inference", InferenceConfig), ("output", OutputConfig)):
            require(isinstance(getattr(self, name), tp), f"ExtractConfig.{name} must be a {tp.__name__}")
        require(all(e.startswith(".") for e in self.extensions), "extensions must start with a dot, e.g. .mp4")
        require(isinstance(self.storage_options, dict) and all(isinstance(k, str) for k in self.storage_options),
                "storage_options must be a mapping of option names to values")
        require(self.inference.rate_control is None or not self.output.raw,
                "inference.keep_top1 / max_distortion / max_kl (per-frame rate control of coded latents) does not "
                "apply to output.raw (float16 backbone features); drop one of them")

    def with_overrides(self, **sections: dict[str, Any]) -> ExtractConfig:
        """A copy with fields of sections changed, e.g. ``with_overrides(ray={"address": "auto"})``."""
        changes = {}
        for name, values in sections.items():
            if not values:
                continue
            sub = getattr(self, name, None)
            if not isinstance(sub, Config):
                raise ConfigError(f"ExtractConfig has no section {name!r}")
            known = {f.name for f in dataclasses.fields(sub)}  # type: ignore[arg-type]
            unknown = sorted(set(values) - known)
            if unknown:
                raise ConfigError(f"{type(sub).__name__}: unknown keys {unknown}; known keys: {sorted(known)}")
            changes[name] = sub.replace(**values)
        return self.replace(**changes) if changes else self


def load_config(path: str | os.PathLike | None) -> ExtractConfig:
    """Load an :class:`ExtractConfig` from YAML; ``None`` gives ``configs/extract_default.yaml``
    when present, else the built-in defaults.

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown keys or invalid values.
    """
    if path is None:
        default = CONFIG_DIR / "extract_default.yaml"
        if not default.exists():
            return ExtractConfig()
        path = default
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"config {path}: cannot read it ({e})") from None
    try:
        return ExtractConfig.from_yaml(text)
    except ConfigError as e:
        raise ConfigError(f"config {path}: {e}") from None
