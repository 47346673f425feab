"""How the evaluations split their data: leave-one-video-out folds, time / phase / video splits of clips
into sequences, and every sampling phase of a clip at a lower frame rate. Validation data is only ever
used for choices (lambda, learning rates, settings); test data only for the reported numbers.
"""

from __future__ import annotations

import numpy as np

TRAIN_END, VAL_END = 0.5, 0.6  # time split: the first 50% trains, 50-60% validates, the last 40% tests


def phase_sequences(x: np.ndarray, fps: float, target_fps: float = 5.0) -> list[np.ndarray]:
    """Every sampling phase of ``x`` (frames at ``fps``) at ``target_fps`` (stride round(fps / target_fps)):
    together they hold every frame once, each in time order."""
    s = max(1, int(round(fps / target_fps)))
    return [x[p::s] for p in range(s) if len(x[p::s])]


def leave_one_video_out(feats: dict[str, dict], clips: list[str], test: str, teacher: bool) -> dict:
    """The fold that holds out the video ``test``: training = the other clips' training parts (their first
    ``cut`` frames) and augmentations, validation = the rest of the other clips, test = every frame of
    ``test``. ``feats[clip]`` holds ``x`` (n, C), ``cut``, ``x_aug``, ``fps`` and, with a ``teacher``,
    ``logits``. Returns ``train`` (the training clips), ``x_train``, ``x_val_parts`` (one array per
    training clip), ``x_val``, ``x_test``, ``fps`` (of the test clip), ``logits_val`` / ``logits_test``
    (None without a teacher)."""
    train = [c for c in clips if c != test]
    xtr = np.concatenate([feats[c]["x"][:int(feats[c]["cut"])] for c in train] + [feats[c]["x_aug"] for c in train])
    xva_parts = [feats[c]["x"][int(feats[c]["cut"]):] for c in train]
    lva = np.concatenate([feats[c]["logits"][int(feats[c]["cut"]):] for c in train]) if teacher else None
    return {"train": train, "x_train": xtr, "x_val_parts": xva_parts, "x_val": np.concatenate(xva_parts),
            "x_test": feats[test]["x"], "fps": float(feats[test]["fps"]), "logits_val": lva,
            "logits_test": feats[test]["logits"] if teacher else None}


def clip_sequences(feats: dict[str, tuple[np.ndarray, np.ndarray]], clips: dict[str, float], fps: float,
                   mode: str = "time", *, test_clip: str = "bikes", val_clip: str = "carphone_pristine"):
    """Train / validation sequences and test (sequence, teacher logits) pairs at ``fps``, per clip and
    sampling phase; ``feats[clip] = (features (n, C), logits (n, K))`` at the clip's native rate
    ``clips[clip]``. ``time``: first 50% of each clip trains, 50-60% validates, the last 40% tests (later
    segments, other shots). ``phase``: the sampling phases of the whole clip are dealt out (phase p % 5 in
    0-2 trains, 3 validates, 4 tests): test frames are 1-2 source frames from training frames (near
    duplicates, same shots): the in-distribution upper bound. ``video``: whole videos: ``test_clip`` (every
    phase) tests, ``val_clip`` validates, the others train (an unseen video, longest test chunks)."""
    train, val, test = [], [], []
    for c, native in clips.items():
        x, logits = feats[c]
        s = max(1, round(native / fps))
        a, b = round(TRAIN_END * len(x)), round(VAL_END * len(x))
        for ph in range(s):
            if mode == "video":
                role = {test_clip: "test", val_clip: "val"}.get(c, "train")
                if role != "test":
                    (train if role == "train" else val).append(x[ph::s])
                xs, ls = (x[ph::s], logits[ph::s]) if role == "test" else (x[:0], logits[:0])
            elif mode == "time":
                train.append(x[:a][ph::s])
                val.append(x[a:b][ph::s])
                xs, ls = x[b:][ph::s], logits[b:][ph::s]
            else:
                role = ph % 5
                if role < 3:
                    train.append(x[ph::s])
                elif role == 3:
                    val.append(x[ph::s])
                xs, ls = (x[ph::s], logits[ph::s]) if role == 4 else (x[:0], logits[:0])
            if len(xs):
                test.append((xs, ls))
    return train, val, test


def pick_on_validation(items, ok, bits, quality, fallback: bool = True):
    """The validation choice of the evaluations: among ``items`` meeting the quality rule ``ok(item)``, the
    one of fewest validation bits ``bits(item)``; when none meets it, the one of highest validation
    ``quality(item)`` (``fallback``) or None. Test numbers never enter the choice."""
    cands = [t for t in items if ok(t)]
    if cands:
        return min(cands, key=bits)
    return max(items, key=quality) if fallback else None


def choose_density_lr(fit, kind: str, lam: float, grid: list[float]) -> float:
    """The entropy model's learning rate with the lowest validation objective (loss + lam * bits) at ``lam``;
    ``fit(kind, lam, dlr)`` trains a head with validation. One-value grids are returned without training."""
    if len(grid) == 1:
        return grid[0]
    scores = {}
    for dlr in grid:
        h = fit(kind, lam, dlr).history[-1]
        scores[dlr] = h["val_loss"] + lam * h["val_bits"]
    best = min(scores, key=scores.get)
    print(f"  {kind}: density lr on validation {scores} -> {best:g}", flush=True)
    return best
