"""Weights: local state-dict files with key remapping, and the torch cache lookup (layer 1).

Lookup order for a backbone's weights (docs/video.md):

1. ``BackboneSpec.weights_path``: a local file, loaded with an optional key remap;
2. torchvision weights enum: ``torch.hub.get_dir()/checkpoints/<file name of weights.url>``;
3. download into that cache, as torchvision does, unless forbidden (``download=False`` or
   ``FEATCOMP_DOWNLOAD=0``);
4. a forbidden or failed download (offline) raises :class:`~featcomp.errors.WeightsNotFoundError` naming
   the file and where to put it.

The cache is checked before any network access; a download has a 60 s socket timeout.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from featcomp.errors import BackboneError, WeightsNotFoundError

__all__ = ["load_state_dict_file", "remap_keys", "load_weights_into", "cache_path", "download_allowed"]


def download_allowed(flag: bool = True) -> bool:
    """Whether missing torchvision weights may be downloaded.

    The environment variable ``FEATCOMP_DOWNLOAD`` decides when set (``0``/``false``/``no``/``off``
    forbids, ``1``/``true``/``yes``/``on`` allows); otherwise ``flag`` (a spec's ``download``, True by default).
    """
    env = os.environ.get("FEATCOMP_DOWNLOAD", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return bool(flag)


def cache_path(url: str) -> Path:
    """Where torch's hub cache keeps the file of ``url``: ``torch.hub.get_dir()/checkpoints/<basename>``.

    ``torch.hub.get_dir()`` follows ``$TORCH_HOME`` (default ``~/.cache/torch``) at call time.
    """
    name = os.path.basename(url.split("?", 1)[0])
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def load_state_dict_file(path: str | os.PathLike[str]) -> OrderedDict[str, torch.Tensor]:
    """Read a state dict from ``.pt``/``.pth`` (``torch.load(weights_only=True)``) or ``.safetensors``.

    A checkpoint dict holding the state dict under ``"state_dict"``, ``"model"`` or ``"model_state"``
    is unwrapped.

    Raises:
        WeightsNotFoundError: the file does not exist.
        BackboneError: the file cannot be read or holds no tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsNotFoundError(f"weights file {p} not found; put the state dict there or fix weights_path")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors, zip errors, safetensors header errors
        raise BackboneError(f"weights file {p}: cannot be read as a state dict ({e.__class__.__name__}: {e})") from None
    if isinstance(sd, dict):
        for key in ("state_dict", "model", "model_state"):
            if key in sd and isinstance(sd[key], dict):
                sd = sd[key]
                break
    if isinstance(sd, torch.nn.Module):  # pragma: no cover - weights_only forbids this
        sd = sd.state_dict()
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BackboneError(f"weights file {p}: expected a mapping of names to tensors")
    return OrderedDict(sd)


def remap_keys(
    source: OrderedDict[str, torch.Tensor],
    target: torch.nn.Module,
    key_remap: str | dict[str, str] | None,
    *,
    origin: str = "weights",
) -> OrderedDict[str, torch.Tensor]:
    """Rename a state dict's keys for ``target``.

    Args:
        source: The file's state dict (its order matters for ``"by_position"``).
        target: The module that will receive it.
        key_remap: None (unchanged), ``"by_position"`` (i-th source tensor -> i-th entry of
            ``target.state_dict()``, shapes must all match), or ``{regex: replacement}`` applied in
            order with ``re.sub`` to each key.
        origin: Names the file in error messages.

    Returns:
        The renamed state dict.

    Raises:
        BackboneError: by-position counts or shapes differ; a regex is invalid; two keys collide.
    """
    if key_remap is None:
        return source
    if key_remap == "by_position":
        tgt = target.state_dict()
        if len(tgt) != len(source):
            raise BackboneError(
                f"{origin}: key_remap='by_position' needs as many tensors as the target has "
                f"({len(source)} in the file, {len(tgt)} in {type(target).__name__}.state_dict())"
            )
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, ((sk, sv), (tk, tv)) in enumerate(zip(source.items(), tgt.items())):
            if tuple(sv.shape) != tuple(tv.shape):
                raise BackboneError(
                    f"{origin}: key_remap='by_position': tensor #{i} {sk!r} has shape {tuple(sv.shape)} "
                    f"but the target's #{i} {tk!r} has {tuple(tv.shape)}"
                )
            out[tk] = sv
        return out
    if isinstance(key_remap, dict):
        try:
            rules = [(re.compile(k), v) for k, v in key_remap.items()]
        except re.error as e:
            raise BackboneError(f"{origin}: invalid key_remap regex: {e}") from None
        out = OrderedDict()
        for k, v in source.items():
            nk = k
            for pat, rep in rules:
                nk = pat.sub(rep, nk)
            if nk in out:
                raise BackboneError(f"{origin}: key_remap maps two keys onto {nk!r}")
            out[nk] = v
        return out
    raise BackboneError(f"{origin}: unknown key_remap {key_remap!r}")


def load_weights_into(
    module: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    key_remap: str | dict[str, str] | None = None,
    submodule: str | None = None,
    strict: bool = True,
) -> torch.nn.Module:
    """Load a local state-dict file into ``module`` (or its ``submodule``), with a key remap.

    Raises:
        WeightsNotFoundError: the file is missing.
        BackboneError: unreadable file, unknown submodule, remap failure, missing/unexpected keys
            (when ``strict``) or shape mismatches.
    """
    target = module
    if submodule:
        try:
            target = module.get_submodule(submodule)
        except AttributeError:
            raise BackboneError(f"{type(module).__name__} has no submodule {submodule!r} to load {path} into") from None
    sd = remap_keys(load_state_dict_file(path), target, key_remap, origin=str(path))
    try:
        result = target.load_state_dict(sd, strict=strict)
    except RuntimeError as e:
        msg = str(e)
        raise BackboneError(
            f"weights file {path} does not fit {type(target).__name__}"
            f"{' (' + submodule + ')' if submodule else ''}: {msg[:600]}"
            + (" ... (try key_remap='by_position' or a regex remap)" if "Missing key" in msg or "Unexpected key" in msg else "")
        ) from None
    if not strict and result is not None and len(result.missing_keys) == len(target.state_dict()):
        raise BackboneError(f"weights file {path}: no key matches {type(target).__name__}; give a key_remap")
    return module
