"""Representations under one interface: ``fit(train features)`` then ``code(x) -> (bits as stored,
decoded features)``: the ``featcomp.train`` baselines (float16+zstd, int8+zstd, PCA -> 8-bit, PCA +
uniform q + ANS), FAISS product quantization (PQ, OPQ), and frozen featcomp heads coded through a saved
and reloaded model file; plus the step ladder of per-frame rate control.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

RC_LADDER = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0)  # rate-control step multipliers
OPQ_NITER = 4  # OPQ alternations (faiss default 50): each is a PQ fit + a 1280 x 1280 SVD


class BaselineRep:
    """A ``featcomp.train`` baseline; decoded back to the feature space (PCA: through its basis)."""

    def __init__(self, name: str, family: str, **opts) -> None:
        self.name, self.family, self.opts = name, family, opts

    def fit(self, x: np.ndarray) -> BaselineRep:
        from featcomp.train import get_baseline

        self.b = get_baseline(self.name)(**self.opts).fit(x)
        self.label = self.b.label
        return self

    def code(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        data = self.b.encode(x)
        dec = self.b.decode(data)
        if self.name == "pca8":
            dec = ((dec * self.b.std) @ self.b.basis.T + self.b.mean).astype(np.float32)
        elif self.name == "pca_ec":
            dec = (dec @ self.b.basis.T + self.b.mean).astype(np.float32)
        return 8.0 * len(data), dec


class FaissRep:
    """FAISS product quantization (``PQ{m}x8``) or OPQ-rotated PQ (``OPQ{m},PQ{m}x8``): the stored bytes are
    the ``sa_encode`` codes (m bytes per vector); the codebooks (and rotation) are side information."""

    def __init__(self, m: int, opq: bool) -> None:
        self.m, self.opq = int(m), bool(opq)
        self.family = "opq" if opq else "pq"

    def fit(self, x: np.ndarray) -> FaissRep:
        import faiss

        d = x.shape[1]
        if d % self.m:
            raise SystemExit(f"PQ needs {self.m} | {d}")
        nbits = 8 if len(x) >= 256 else 4  # k-means needs at least 2**nbits training vectors (smoke runs)
        self.label = f"FAISS {'OPQ' if self.opq else 'PQ'}, {self.m} x {nbits}-bit codes"
        # built by hand (not index_factory) to switch off polysemous training (Hamming-order permutations of
        # the codes: unused here, and minutes per fit); the parts are kept referenced by self
        self.pq_index = faiss.IndexPQ(d, self.m, nbits)
        self.pq_index.do_polysemous_training = False
        if self.opq:
            self.opq_matrix = faiss.OPQMatrix(d, self.m)
            self.opq_matrix.niter = OPQ_NITER
            self.index = faiss.IndexPreTransform(self.opq_matrix, self.pq_index)
        else:
            self.index = self.pq_index
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.index.train(np.ascontiguousarray(x, np.float32))
        return self

    def code(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        codes = self.index.sa_encode(np.ascontiguousarray(x, np.float32))
        return 8.0 * codes.nbytes, self.index.sa_decode(codes)


def baselines(c: int, pca8_dims, pca_ec, pq_m, opq_m) -> list:
    """The baseline representations that fit ``c``-dimensional features: float16+zstd, int8+zstd, PCA-8 at
    ``pca8_dims``, PCA + uniform q at ``pca_ec`` ((dims, step) pairs), PQ at ``pq_m``, OPQ at ``opq_m``."""
    reps = [BaselineRep("float16_zstd", "float16_zstd"), BaselineRep("int8_zstd", "int8_zstd")]
    reps += [BaselineRep("pca8", "pca8", dims=d) for d in pca8_dims if d <= c]
    reps += [BaselineRep("pca_ec", "pca_ec", dims=d, step=s) for d, s in pca_ec if d <= c]
    reps += [FaissRep(m, False) for m in pq_m if c % m == 0]
    reps += [FaissRep(m, True) for m in opq_m if c % m == 0]
    return reps


def model_extractor(frozen, spec, bb, tmp: Path, tag: str, rc=None):
    """Save the frozen head as a model file, load it back and wrap it in an :class:`featcomp.Extractor`."""
    from featcomp.model import Extractor, load_model, save_model

    path = save_model(tmp / f"{tag}.safetensors", frozen, backbone=spec)
    return Extractor(load_model(path), backbone=bb, rate_control=rc)


class HeadRep:
    """A frozen featcomp head coded through a saved/reloaded model file and ``Extractor.compress_features``;
    decoded through its synthesis (feature space) when it has one."""

    def __init__(self, label: str, family: str, frozen, spec, bb, tmp: Path, tag: str, rc=None, meta=None) -> None:
        self.label, self.family = label, family
        self.ex = model_extractor(frozen, spec, bb, tmp, tag, rc)
        self.meta = dict(meta or {})

    def code(self, x: np.ndarray, fps: float = 25.0) -> tuple[float, np.ndarray]:
        from featcomp.model import CompressedClip

        clip = self.ex.compress_features(x, np.arange(len(x)) / fps)
        clip = CompressedClip.from_bytes(clip.to_bytes())
        y = self.ex.decompress(clip)
        head = self.ex.model.head
        with torch.no_grad():
            dec = head.synthesize(y).numpy() if head.config.synthesis != "none" else np.asarray(y, np.float32)
        self.last_levels = None if clip.levels is None else np.asarray(clip.levels)
        return clip.bits_per_frame * clip.num_frames, dec


def rate_control_ladder(xtr, weight, latent: int):
    """The variable-rate head of per-frame rate control: a teacher-SVD projection to ``latent`` channels
    (``init_from_classifier`` with the classifier ``weight``), ``RC_LADDER`` steps as its levels
    (``step_ladder_head``), one table set fitted to the training vectors ``xtr`` at every level. Returns the
    frozen head that ``featcomp.ratecontrol.fit_rate_control_codec`` refits under a rule."""
    from featcomp.entropy import EntropyCodec
    from featcomp.head import FrozenHead, init_from_classifier
    from featcomp.ratecontrol import step_ladder_head

    head = step_ladder_head(xtr.shape[1], latent, RC_LADDER, analysis="linear", synthesis="linear")
    head.set_input_stats(xtr)
    init_from_classifier(head, weight)
    probe = FrozenHead.from_head(head, EntropyCodec.fit(np.zeros((2, latent), np.int32)))
    return FrozenHead.from_head(head, EntropyCodec.fit(np.concatenate(
        [probe.encode(xtr, rate=lv) for lv in range(len(RC_LADDER))])))
