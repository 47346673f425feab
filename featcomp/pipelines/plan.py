"""The plan of one extraction job: every decision the stages act on, made once, on the driver.

:meth:`ExtractPlan.build` turns the job's :class:`~featcomp.pipelines.config.ExtractConfig` (and the
model file or backbone spec) into one frozen object before Ray starts:

* the **model**, loaded once and put at the job's rate once (``Model.at_rate(inference.rate)``); the
  encoder actors receive this object and build their ``Extractor`` on it, so they neither reload the
  file nor apply the rate a second way, and the store's model card describes exactly the model the
  actors run;
* **rate control**, decided once: ``keep_top1`` is checked against the model (a variable-rate
  factorized head with synthesis, a backbone with a classifier) and becomes one
  :class:`~featcomp.ratecontrol.RateControl` that the actors use, the writer's ``levels`` option (store
  format version 3) and each video's ``keep_top1`` metadata;
* the **backbone spec** of a head-less job, the **sampling** the decoder uses, the **store options**
  (raw, raw dtype, chunk frames, model card) and how the summary counts payload bits.

:meth:`ExtractPlan.with_resources` adds the :class:`ResourcePlan` (actors, GPUs, device, torch threads)
once the cluster is known. The stages take the plan, never the config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from featcomp.errors import ConfigError, PipelineError
from featcomp.pipelines.config import ExtractConfig, InferenceConfig

__all__ = ["ExtractPlan", "ResourcePlan", "backbone_only", "check_rate_control"]


@dataclass(frozen=True)
class ResourcePlan:
    """Where the encoder actors run, decided from the inference config and the cluster's resources.

    Attributes:
        num_gpus: GPUs per actor.
        device: ``"cpu"`` or ``"cuda"`` (never ``"auto"``).
        actors: ``(min, max)`` actors of the pool (equal: a fixed pool).
        torch_threads: torch intra-op threads per actor (None: torch's setting).
        cluster: ``(CPUs, GPUs)`` of the cluster.
    """

    num_gpus: float
    device: str
    actors: tuple[int, int]
    torch_threads: int | None
    cluster: tuple[float, float]

    @classmethod
    def decide(cls, inf: InferenceConfig, cpus: float, gpus: float) -> ResourcePlan:
        """Raises PipelineError: ``inference.num_gpus`` > 0 on a cluster without GPUs."""
        num_gpus = inf.num_gpus if inf.num_gpus is not None else (1.0 if gpus >= 1 else 0.0)
        if num_gpus > 0 and gpus == 0:
            raise PipelineError(f"inference.num_gpus={num_gpus} but the Ray cluster has no GPU; set it to 0")
        device = inf.device
        if device == "auto":
            device = "cuda" if num_gpus > 0 else "cpu"
        max_actors = inf.max_actors or inf.actors
        threads = inf.torch_threads
        if threads is None and device == "cpu":
            threads = max(1, int(cpus // max(1, max_actors)))
        return cls(num_gpus=num_gpus, device=device, actors=(inf.actors, max_actors), torch_threads=threads,
                   cluster=(cpus, gpus))


@dataclass(frozen=True)
class ExtractPlan:
    """Everything one extraction job decided before it starts (see the module docstring).

    Attributes:
        config: The job's config (storage options and raw dtype already merged in).
        model_path: The model file or URL (None: a head-less ``--backbone`` job).
        model: The loaded ``featcomp.Model`` at the job's rate, or None.
        backbone: The validated spec dict of a head-less job (:func:`backbone_only`), or None.
        sampling: The ``SamplingConfig`` the decoder uses (chunks of ``inference.batch_size`` frames).
        raw: The store holds backbone features (``output.raw`` or a head-less job).
        raw_dtype: ``"float16"`` or ``"int8"`` (raw stores only).
        keep_top1: Per-frame rate control target, or None.
        rate_control: The ``RateControl`` the actors use (None exactly when ``keep_top1`` is None).
        resources: Set by :meth:`with_resources` once Ray is up.
    """

    config: ExtractConfig
    model_path: str | None
    model: Any
    backbone: dict | None
    sampling: Any
    raw: bool
    raw_dtype: str
    keep_top1: float | None
    rate_control: Any
    resources: ResourcePlan | None = None

    @property
    def storage_options(self) -> dict:
        return self.config.storage_options

    @property
    def rate_controlled(self) -> bool:
        return self.rate_control is not None

    @classmethod
    def build(cls, config: ExtractConfig, model_path: str | None = None, *, backbone: dict | None = None,
              sampling: Any = None) -> ExtractPlan:
        """Decide the job: load the model once (at ``inference.rate``), check and fix rate control once.

        Args:
            config: The job config, storage options merged.
            model_path: A featcomp model file or URL; or None with ``backbone``.
            backbone: A spec dict already validated by :func:`backbone_only` (head-less job).
            sampling: Head-less jobs: the ``SamplingConfig`` or its dict (default 1 frame per second).

        Raises:
            ConfigError: rate control the model cannot drive, ``raw_dtype`` int8 on a coded store.
            ModelFileError: the model file cannot be read.
        """
        import featcomp
        from featcomp.video import SamplingConfig

        cfg = config
        if (model_path is None) == (backbone is None):
            raise ConfigError("ExtractPlan.build: give model_path or backbone, not both or neither")
        keep_top1 = cfg.inference.keep_top1
        rate_control = None
        if model_path is not None:
            model = featcomp.load_model(model_path, storage_options=cfg.storage_options).at_rate(cfg.inference.rate)
            if cfg.inference.rate_control is not None:
                from featcomp.ratecontrol import RateControl

                rate_control = RateControl(**cfg.inference.rate_control)
                check_rate_control(model, str(model_path), needs_teacher=rate_control.needs_teacher,
                                   option=f"inference.{cfg.inference.rate_control_options[0]}")
            hint = (model.rate_control_hint(str(model_path))
                    if rate_control is None and cfg.inference.rate is None else None)
            if hint:
                import logging

                logging.getLogger("featcomp.pipelines.extract").warning(hint)
            sampling = (model.sampling if isinstance(model.sampling, SamplingConfig)
                        else SamplingConfig.from_dict(model.sampling or {}))
            raw = cfg.output.raw
        else:
            model = None
            raw = True
            sampling = (sampling if isinstance(sampling, SamplingConfig)
                        else SamplingConfig.from_dict(sampling) if isinstance(sampling, dict)
                        else SamplingConfig(mode="fps", fps=1.0))
        if cfg.decode.sampling:
            sampling = sampling.replace(**cfg.decode.sampling)
        sampling = sampling.replace(
            batch_size=cfg.inference.batch_size, backend=cfg.decode.backend, timeout_s=cfg.decode.timeout_s
        )
        raw_dtype = cfg.output.raw_dtype
        if raw_dtype != "float16" and not raw:
            raise ConfigError(f"featcomp extract: --raw-dtype {raw_dtype} (output.raw_dtype) is for raw stores: give "
                              "it with --raw or --backbone; a --model job stores the head's entropy-coded latents")
        return cls(config=cfg, model_path=None if model_path is None else str(model_path), model=model,
                   backbone=backbone, sampling=sampling, raw=raw, raw_dtype=raw_dtype, keep_top1=keep_top1,
                   rate_control=rate_control)

    def with_resources(self, cpus: float, gpus: float) -> ExtractPlan:
        """This plan with its :class:`ResourcePlan` for a cluster of ``cpus`` CPUs and ``gpus`` GPUs."""
        return dataclasses.replace(self, resources=ResourcePlan.decide(self.config.inference, cpus, gpus))

    # ------------------------------------------------------------------ what the stages are given
    def writer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the job's ``featcomp.StoreWriter`` (besides the store and the model)."""
        kw: dict[str, Any] = {"raw": self.raw, "storage_options": self.storage_options}
        if self.raw and self.raw_dtype != "float16":  # float16 stores are created exactly as before
            kw["raw_dtype"] = self.raw_dtype
        if self.rate_controlled:
            kw["levels"] = True  # store format version 3: every frame's level + per-level steps
        if self.config.output.chunk_frames:
            kw["chunk_frames"] = self.config.output.chunk_frames
        if self.model is None:
            kw["model_card"] = {"backbone": self.backbone, "sampling": self.sampling.to_dict(),
                                "features": "raw backbone features, no head (featcomp extract --backbone)"}
        return kw

    def decode_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`featcomp.pipelines.stages.decode_videos`."""
        d = self.config.decode
        return {"sampling": self.sampling, "timeout_s": 2 * d.timeout_s + 5, "storage_options": self.storage_options,
                "scratch_dir": d.scratch_dir, "scratch_mb": d.scratch_mb, "allow_partial": d.allow_partial,
                "frames_fps": d.frames_fps}

    def video_metadata(self, path: str, indices: np.ndarray) -> dict[str, Any]:
        """The metadata stored with a video (``partial`` is added by the driver when it applies)."""
        meta: dict[str, Any] = {"path": path, "frame_indices": indices.tolist()}
        if self.keep_top1 is not None:
            meta["keep_top1"] = self.keep_top1
        elif self.rate_control is not None:  # a generic fidelity target (max_distortion / max_kl)
            rc = self.rate_control
            meta["rate_control"] = {"criterion": rc.criterion, "budget": rc.budget,
                                    "target_agreement": rc.target_agreement}
        return meta

    def payload_bits(self, latents: np.ndarray) -> float:
        """The summary's payload of one video: the codec's estimate, or the raw values before zstd."""
        if self.raw:
            if self.raw_dtype == "int8":
                return 8.0 * latents.size + 32.0 * latents.shape[1]
            return 16.0 * latents.size
        return float(self.model.codec.estimate_bits(latents))


def check_rate_control(model: Any, model_path: str, *, needs_teacher: bool = True,
                       option: str = "inference.keep_top1") -> None:
    """Refuse per-frame rate control (``option``) on the driver, before Ray starts, when the model cannot
    drive it: a fixed-rate head, one whose entropy model cannot change level per frame (hyperprior) or
    one without synthesis, or (``needs_teacher``: the top-1 and KL criteria) a backbone without its own
    classifier.

    The classifier check builds the backbone's architecture without its weights (cheap, nothing
    downloaded); a backbone that cannot be built here is left for the actors to report.

    Raises:
        ConfigError: naming the model file and what is missing.
    """
    from featcomp.ratecontrol import check_rate_controllable

    try:
        check_rate_controllable(model.head)
    except ConfigError as e:
        raise ConfigError(f"{option} with model {model_path}: {e}") from None
    if not needs_teacher:
        return
    if model.backbone is None:
        raise ConfigError(f"{option} with model {model_path}: the model names no backbone, so there is "
                          "no classifier to keep the top-1 of")
    try:
        from featcomp.backbones import BackboneSpec, build_backbone

        if not isinstance(model.backbone, BackboneSpec):
            return
        bb = build_backbone(model.backbone, weights=None, weights_path=None)
    except Exception:  # noqa: BLE001 - not a verdict on the model; the actors build it for real
        return
    if not bb.has_classifier:
        reason = getattr(bb, "_no_classifier_reason", None)
        raise ConfigError(f"{option} with model {model_path}: backbone {model.backbone.name!r} has no "
                          f"classifier to keep the top-1 of" + (f" ({reason})" if reason else "")
                          + "; inference.max_distortion is a fidelity target that needs none")


def backbone_only(backbone: Any, cfg: ExtractConfig) -> dict[str, Any]:
    """The validated spec dict of a head-less extraction; the name is checked here, before Ray starts.

    Raises:
        ConfigError / RegistryError: an invalid spec or an unknown backbone name (one line).
        ConfigError: options that need a model (--keep-top1, --rate).
    """
    from featcomp.model import backbone_spec_dict

    if cfg.inference.keep_top1 is not None or cfg.inference.rate is not None:
        raise ConfigError("featcomp extract --backbone writes raw features: --keep-top1 and --rate need --model")
    spec = backbone_spec_dict(backbone, where="featcomp extract --backbone")
    from featcomp.backbones import resolve_backbone_factory

    resolve_backbone_factory(spec)  # unknown name / unimportable custom factory: one clear error now
    return spec
