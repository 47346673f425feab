"""The featcomp exception tree (layer 0: imports nothing from featcomp).

Every error that bad input can cause is a :class:`FeatcompError` subclass whose message names the
thing at fault (a file, a video id, a store and chunk, a codec digest) and says what to do about it.
Callers can catch the whole family with ``except featcomp.FeatcompError``.

Tree::

    FeatcompError
    ├── ConfigError          invalid configuration values, unknown registry names
    │   └── RegistryError    unknown or duplicate names in a register_x/get_x registry
    ├── CodecError           bitstreams and coding tables: corrupt, truncated, wrong codec, unfrozen model
    ├── VideoError           files that cannot be opened or decoded, zero frames, decoder hangs
    │   └── TruncatedVideoError  the stream ends before the frames/duration its container declares
    ├── BackboneError        unknown models or layers, missing weights (offline), key-remap mismatches
    │   └── WeightsNotFoundError
    ├── ModelFileError       model files of another format version, digest mismatches
    │   ├── ModelFileVersionError  a model file of a format version this featcomp does not read
    │   └── CorruptModelFileError  damaged metadata (a missing or mistyped field), digest mismatches
    ├── StoreError           not a featcomp store, digest mismatch, corrupt chunk, missing codec
    │   └── DamagedIndexError  an index file that cannot be read (carries the video ids it still names)
    ├── StorageError         a URL's storage cannot be used (featcomp.storage)
    │   ├── StorageBackendMissing  the URL's fsspec package is not installed (names the pip package)
    │   ├── StorageAccessError     credentials refused or missing
    │   └── BucketNotFoundError    the bucket/container does not exist
    ├── PipelineError        the extraction job: bad inputs list, cluster address, failed stages
    └── MissingExtraError    an optional dependency is not installed (names the pip extra to install)
"""

from __future__ import annotations

__all__ = [
    "FeatcompError",
    "ConfigError",
    "RegistryError",
    "CodecError",
    "VideoError",
    "TruncatedVideoError",
    "BackboneError",
    "WeightsNotFoundError",
    "ModelFileError",
    "ModelFileVersionError",
    "CorruptModelFileError",
    "StoreError",
    "DamagedIndexError",
    "PipelineError",
    "StorageError",
    "StorageBackendMissing",
    "StorageAccessError",
    "BucketNotFoundError",
    "MissingExtraError",
    "missing_extra",
]


class FeatcompError(Exception):
    """Base class of every error featcomp raises on purpose."""


class ConfigError(FeatcompError, ValueError):
    """A configuration value is invalid (wrong type, out of range, unknown field or version)."""


class RegistryError(ConfigError, KeyError):
    """A name is unknown to a registry, or registered twice.

    ``KeyError`` is a base so that mapping-style callers keep working; ``__str__`` is overridden
    because ``KeyError`` would otherwise wrap the message in quotes.
    """

    def __str__(self) -> str:  # pragma: no cover - trivial
        return str(self.args[0]) if self.args else ""


class CodecError(FeatcompError):
    """An entropy-coded bitstream or coding table cannot be used.

    Raised for truncated or corrupted streams, a stream made by another codec (digest mismatch),
    an unknown format version, or compressing with a model that was never frozen.
    """


class VideoError(FeatcompError):
    """A video cannot be opened or decoded; the message names the path and the reason."""


class TruncatedVideoError(VideoError):
    """A video's stream ends before the frame count or duration its container declares.

    Raised by default (a truncated download or copy must not pass for a complete short video);
    ``allow_partial=True`` keeps the decodable part instead, marked partial.

    Attributes:
        path: the file.
        decoded: frames that decode.
        declared: frames the container declares (or estimates from its duration).
        reason: what was compared, e.g. ``"decoded 4 of the 17 frames the container declares"``.
    """

    def __init__(self, path: str, decoded: int, declared: int, reason: str) -> None:
        self.path, self.decoded, self.declared, self.reason = str(path), int(decoded), int(declared), reason
        super().__init__(
            f"{path}: truncated video: {reason}. The file is probably cut short (an incomplete download or "
            "copy): fetch or re-encode it again, or pass allow_partial=True (featcomp extract --allow-partial) "
            f"to keep its {decoded} decodable frames marked partial"
        )

    def __reduce__(self):  # picklable across Ray workers
        return (type(self), (self.path, self.decoded, self.declared, self.reason))


class BackboneError(FeatcompError):
    """A backbone cannot be built: unknown model or layer, incompatible weights."""


class WeightsNotFoundError(BackboneError, FileNotFoundError):
    """Pretrained weights are not available offline; the message names the file expected and where."""


class ModelFileError(FeatcompError):
    """A featcomp model file cannot be loaded (other format version, digest mismatch, missing part)."""


class ModelFileVersionError(ModelFileError):
    """A model file of a format version this featcomp does not read (a newer featcomp wrote it)."""


class CorruptModelFileError(ModelFileError):
    """A model file's metadata is damaged (not JSON, a missing or mistyped field, inconsistent fields) or
    its contents do not match the recorded digests; the message names the file and the field."""


class StoreError(FeatcompError):
    """A feature store cannot be opened, read or written; names the store, the video and the chunk."""


class DamagedIndexError(StoreError):
    """An index file (``.fcidx``) cannot be read.

    Attributes:
        parts: the writer (part) names the file still names, or None when unknown.
        video_ids: the video ids it still names (index files of version 5 keep them in a separately
            checked block, so a file whose columns are damaged still says which videos it held), or
            None when unknown (older versions, or a damaged ids block).
    """

    def __init__(self, message: str, *, parts: list[str] | None = None, video_ids: list[str] | None = None) -> None:
        super().__init__(message)
        self.parts = parts
        self.video_ids = video_ids


class PipelineError(FeatcompError):
    """The extraction job cannot run (no inputs, bad manifest, unreachable cluster)."""


class StorageError(FeatcompError):
    """Object storage or a remote filesystem cannot be used for a URL; names the URL and what to do."""


class StorageBackendMissing(StorageError, ImportError):
    """The fsspec implementation of a URL's protocol is not installed; the message names the pip package."""


class StorageAccessError(StorageError, PermissionError):
    """The storage refused the credentials (or found none); the message says where they come from."""


class BucketNotFoundError(StorageError):
    """The URL's bucket (or container) does not exist."""


class MissingExtraError(FeatcompError, ImportError):
    """An optional dependency is missing: ``pip install featcomp`` is the reader only; extraction,
    training and the Ray job need an extra (``featcomp[extract]``, ``[train]``, ``[ray]``, ``[all]``)."""


# top-level module -> the extra that installs it
_EXTRA_OF = {
    "torch": "extract", "torchvision": "extract", "safetensors": "extract", "av": "extract",
    "decord": "extract", "ray": "ray", "pyarrow": "ray", "timm": "timm", "h5py": "h5py",
}


def missing_extra(error: ImportError, what: str) -> MissingExtraError:
    """A :class:`MissingExtraError` for ``error`` (an ``ImportError`` of an optional dependency) that says
    what needs it and which extra to install."""
    name = (getattr(error, "name", None) or str(error)).split(".")[0]
    extra = _EXTRA_OF.get(name)
    if extra == "h5py":
        hint = "pip install h5py"
    else:
        hint = f"pip install 'featcomp[{extra or 'all'}]'"
    return MissingExtraError(f"{what} needs {name!r}, which is not installed ({hint}); "
                             "plain `pip install featcomp` is the store reader only")
