"""A small named registry (layer 0).

Every pluggable thing in featcomp (backbones, objectives, baselines, entropy models, video decoders)
has one name and a ``register_x``/``get_x`` pair built on :class:`Registry`. Unknown and duplicate
names raise :class:`~featcomp.errors.RegistryError` listing what is available, so a typo never
falls through to a default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from featcomp.errors import RegistryError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A mapping from names to objects that refuses unknown and duplicate names.

    Args:
        kind: What the registry holds, used in error messages (e.g. ``"backbone"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str, obj: T, *, overwrite: bool = ...) -> T: ...

    @overload
    def register(self, name: str, obj: None = ..., *, overwrite: bool = ...) -> Callable[[T], T]: ...

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False):
        """Register ``obj`` under ``name``; usable directly or as a decorator.

        Raises:
            RegistryError: if ``name`` is empty or already registered and ``overwrite`` is False.
        """
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} names must be non-empty strings, got {name!r}")

        def _do(o: T) -> T:
            if name in self._items and not overwrite:
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered; pick another name or pass overwrite=True"
                )
            self._items[name] = o
            return o

        return _do if obj is None else _do(obj)

    def get(self, name: str) -> T:
        """Return the object registered under ``name``.

        Raises:
            RegistryError: if ``name`` is unknown; the message lists the known names.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._items)) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def unregister(self, name: str) -> T:
        """Remove and return the object registered under ``name`` (plugins unloading, tests).

        Raises:
            RegistryError: if ``name`` is unknown.
        """
        obj = self.get(name)
        del self._items[name]
        return obj

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
