"""The evaluations' metrics: bits as stored, agreement with a teacher (top-1, top-5, KL), kNN recall@k,
linear-probe accuracy, the worst held-out video, and bits at equal quality between two rate curves.

Bits are always counted from the bytes a representation actually stores (one stream per test set, clip
or sequence; headers and framing included), never from a model's estimate.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch


def stored_bits(*streams: bytes) -> int:
    """Bits of the bytes as stored: 8 x the total length of ``streams``."""
    return 8 * sum(len(s) for s in streams)


def knn_recall(ref: np.ndarray, dec: np.ndarray, k: int = 10) -> float:
    """Mean overlap of the k nearest other frames (L2) found with ``dec`` vs with ``ref`` (both (n, D))."""
    n = len(ref)
    k = min(k, n - 1)

    def nn(a):
        a = torch.as_tensor(np.asarray(a, np.float64))
        d = torch.cdist(a, a)
        d.fill_diagonal_(math.inf)
        return d.argsort(1)[:, :k].numpy()

    a, b = nn(ref), nn(dec)
    return float(np.mean([len(set(a[i]) & set(b[i])) / k for i in range(n)]))


def teacher_metrics(teacher, ref_logits: np.ndarray, dec: np.ndarray) -> dict:
    """Agreement of ``teacher(dec)`` with the teacher's logits on the float features ``ref_logits`` (n, K):
    ``top1`` (same argmax), ``top5`` (the float top-1 is among the decoded top 5), ``kl``
    (KL(teacher(x) || teacher(x_hat)) in nats, mean per example)."""
    with torch.no_grad():
        lg = teacher(torch.as_tensor(np.asarray(dec, np.float32))).float()
    t = torch.as_tensor(ref_logits).float()
    top1 = t.argmax(1)
    kl = torch.nn.functional.kl_div(lg.log_softmax(1), t.log_softmax(1), log_target=True, reduction="none").sum(1)
    return {"top1": float((lg.argmax(1) == top1).float().mean()),
            "top5": float((lg.topk(5, 1).indices == top1[:, None]).any(1).float().mean()),
            "kl": float(kl.mean())}


def top1_agreement(logits: np.ndarray | torch.Tensor, ref_logits: np.ndarray) -> float:
    """Fraction of rows whose argmax of ``logits`` equals that of ``ref_logits`` (both (n, K))."""
    a = logits.argmax(1).numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits).argmax(1)
    return float((a == np.asarray(ref_logits).argmax(1)).mean())


def probe_accuracy(dtr: np.ndarray, ytr: np.ndarray, dte: np.ndarray, yte: np.ndarray, *, l2: float = 1e-4,
                   max_iter: int = 100) -> float:
    """Test accuracy of :class:`featcomp.train.LinearProbe` fitted on decoded training features ``dtr``."""
    from featcomp.train import LinearProbe

    return LinearProbe(l2=l2, max_iter=max_iter).fit(dtr, ytr).accuracy(dte, yte)


def summarize_video(r: dict) -> dict:
    """Mean / worst over the held-out videos of one representation row (``r["videos"][video]["test"]``
    holding ``bits``, ``knn`` and, with a teacher, ``top1``, ``top5``, ``kl``). ``worst`` is the video of
    the lowest top-1 agreement, else of the lowest kNN recall."""
    te = {v: o["test"] for v, o in r.get("videos", {}).items()}
    if not te:
        return {}
    s = {"bits_mean": float(np.mean([m["bits"] for m in te.values()])),
         "bits_max": float(max(m["bits"] for m in te.values())),
         "knn_mean": float(np.mean([m["knn"] for m in te.values()])),
         "knn_min": float(min(m["knn"] for m in te.values())), "n_videos": len(te)}
    if all("top1" in m for m in te.values()):
        worst = min(te, key=lambda v: te[v]["top1"])
        s.update(top1_mean=float(np.mean([m["top1"] for m in te.values()])), top1_min=te[worst]["top1"],
                 top5_min=float(min(m["top5"] for m in te.values())), kl_max=float(max(m["kl"] for m in te.values())),
                 worst=worst)
    else:
        s["worst"] = min(te, key=lambda v: te[v]["knn"])
    return s


def bits_at(points: list[tuple[float, float]], q: float, higher_better: bool = True) -> float:
    """Bits at quality q: linear in (quality, log bits) between the points bracketing q along the curve
    sorted by bits; the fewest such bits; nan when q lies outside the curve."""
    pts = sorted(points)
    best = float("nan")
    for (b0, a0), (b1, a1) in itertools.pairwise(pts):
        if min(a0, a1) <= q <= max(a0, a1) and a1 != a0:
            w = (q - a0) / (a1 - a0)
            b = math.exp((1 - w) * math.log(b0) + w * math.log(b1))
            best = b if math.isnan(best) else min(best, b)
    for b0, a0 in pts:
        if a0 == q:
            best = b0 if math.isnan(best) else min(best, b0)
    return best


def equal_quality(pa, pb, n: int = 5, higher_better: bool = True) -> list[tuple[float, float, float]]:
    """(q, bits_a(q), bits_b(q)) at n qualities evenly spread over the overlap of the two curves."""
    lo = max(min(a for _, a in pa), min(a for _, a in pb))
    hi = min(max(a for _, a in pa), max(a for _, a in pb))
    if lo > hi:
        return []
    out = []
    for q in np.linspace(lo, hi, n):
        ba, bb = bits_at(pa, float(q)), bits_at(pb, float(q))
        if not (math.isnan(ba) or math.isnan(bb)):
            out.append((float(q), ba, bb))
    return out


def curve_summary(history: list[dict], metric: str) -> dict:
    """Training/validation loss at 25%, 50% and 100% of training (convergence check)."""
    idx = sorted({max(0, round(f * len(history)) - 1) for f in (0.25, 0.5, 1.0)})
    return {"epochs": len(history),
            "train_loss": [round(history[i]["loss"], 4) for i in idx],
            "val_loss": [round(history[i].get("val_loss", float("nan")), 4) for i in idx],
            f"val_{metric}": [round(history[i].get(f"val_{metric}", float("nan")), 4) for i in idx]}


def decode_maps_s(codec, stream: bytes, repeat: int = 3, rounds: int = 3) -> float:
    """Maps decoded per second from one stream: the median over ``rounds`` of ``repeat`` decodes."""
    n = codec.decompress_symbols(stream).shape[0]
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(repeat):
            codec.decompress_symbols(stream)
        rates.append(repeat * n / (time.perf_counter() - t))
    return float(np.median(rates))


def decode_fps(variants: dict, repeat: int = 15) -> dict[str, float]:
    """Frames/s of each decode variant ``name -> (codec, streams, lockstep)``: best of ``repeat``, the
    variants timed round robin (one of each per round) so that ratios compare runs under the same
    load. ``lockstep``: all streams in one ``decompress_chunks`` call (temporal codecs), else one
    ``decompress_symbols`` call per stream."""
    def run(codec, streams, lockstep):
        return codec.decompress_chunks(streams) if lockstep else [codec.decompress_symbols(s) for s in streams]

    frames = {k: sum(o.shape[0] for o in run(*v)) for k, v in variants.items()}  # warm-up (lazy tables)
    best = {k: float("inf") for k in variants}
    for _ in range(repeat):
        for k, v in variants.items():
            t = time.perf_counter()
            run(*v)
            best[k] = min(best[k], time.perf_counter() - t)
    return {k: frames[k] / best[k] for k in variants}
