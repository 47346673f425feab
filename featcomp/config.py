"""Frozen, validated configuration dataclasses that round-trip through JSON and YAML (layer 0).

Every configuration in featcomp is a ``@dataclass(frozen=True)`` subclass of :class:`Config`.
Subclasses validate their fields in ``__post_init__`` (raise :class:`~featcomp.errors.ConfigError`),
and get ``to_dict``/``from_dict``/``to_json``/``from_json``/``to_yaml``/``from_yaml`` for free.

Nested configs, tuples, Enums and ``None`` are supported. ``from_dict`` rejects unknown keys (a
typo in a YAML file is an error, not a silently ignored setting). Stored configs carry
``FORMAT_VERSION`` under the key ``"format_version"`` when the subclass sets it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any, ClassVar, TypeVar

from featcomp.errors import ConfigError

__all__ = ["Config", "require"]

C = TypeVar("C", bound="Config")


def require(cond: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``cond`` holds (for ``__post_init__``)."""
    if not cond:
        raise ConfigError(message)


def _to_plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


def _from_plain(tp: Any, value: Any, where: str) -> Any:
    """Convert a JSON-plain ``value`` to the annotated type ``tp`` (best effort, strict on configs)."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        for a in args:
            try:
                return _from_plain(a, value, where)
            except (ConfigError, TypeError, ValueError):
                continue
        return value
    if isinstance(tp, type) and issubclass(tp, Config):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return tp.from_dict(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in tp)
            raise ConfigError(f"{where}: {value!r} is not one of {allowed}") from None
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_plain(args[0], v, where) for v in value)
        if args:
            return tuple(_from_plain(a, v, where) for a, v in zip(args, value))
        return tuple(value)
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return [_from_plain(arg, v, where) for v in value]
    if origin is dict:
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


class Config:
    """Mixin for frozen config dataclasses: validation hooks plus JSON/YAML round trips.

    Subclasses must be decorated with ``@dataclasses.dataclass(frozen=True)``.
    """

    FORMAT_VERSION: ClassVar[int | None] = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the fields (Enums by value, nested configs as dicts)."""
        out = {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        if self.FORMAT_VERSION is not None:
            out["format_version"] = self.FORMAT_VERSION
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from a dict; unknown keys and newer format versions raise :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("format_version", None)
        if cls.FORMAT_VERSION is not None and version is not None and int(version) > cls.FORMAT_VERSION:
            raise ConfigError(
                f"{cls.__name__}: format version {version} is newer than this featcomp supports "
                f"({cls.FORMAT_VERSION}); upgrade featcomp"
            )
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; known keys: {sorted(fields)}")
        kwargs = {k: _from_plain(hints[k], v, f"{cls.__name__}.{k}") for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f"{cls.__name__}: {e}") from None

    def to_json(self, **kwargs: Any) -> str:
        """Serialize to a JSON string (sorted keys, so equal configs give equal strings)."""
        return json.dumps(self.to_dict(), sort_keys=True, **kwargs)

    @classmethod
    def from_json(cls: type[C], text: str | bytes) -> C:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{cls.__name__}: invalid JSON: {e}") from None
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls: type[C], text: str) -> C:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{cls.__name__}: invalid YAML: {e}") from None
        return cls.from_dict(data or {})

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
