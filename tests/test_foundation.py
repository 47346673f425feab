"""Layer 0: the error tree, the Config base, the Registry and the CLI dispatcher."""

from __future__ import annotations

import dataclasses
import enum
import subprocess
import sys

import pytest

import featcomp
from featcomp.config import Config, require
from featcomp.errors import ConfigError, FeatcompError, RegistryError
from featcomp.registry import Registry


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Inner(Config):
    size: int = 3

    def __post_init__(self):
        require(self.size > 0, f"Inner.size must be positive, got {self.size}")


@dataclasses.dataclass(frozen=True)
class Outer(Config):
    FORMAT_VERSION = 2
    name: str = "x"
    rate: float = 1.0
    color: Color = Color.RED
    inner: Inner = Inner()
    dims: tuple[int, ...] = (1, 2)
    maybe: int | None = None


def test_error_tree_is_catchable_as_featcomp_error():
    for name in ["ConfigError", "CodecError", "VideoError", "StoreError", "BackboneError",
                 "WeightsNotFoundError", "ModelFileError", "PipelineError", "RegistryError"]:
        cls = getattr(featcomp, name)
        assert issubclass(cls, FeatcompError), name
    assert issubclass(featcomp.WeightsNotFoundError, FileNotFoundError)


def test_config_round_trips_json_and_yaml():
    c = Outer(name="y", rate=0.5, color=Color.BLUE, inner=Inner(7), dims=(4, 5, 6), maybe=9)
    d = c.to_dict()
    assert d["format_version"] == 2 and d["color"] == "blue" and d["inner"] == {"size": 7}
    assert Outer.from_json(c.to_json()) == c
    assert Outer.from_yaml(c.to_yaml()) == c
    assert Outer.from_dict({"rate": 2}).rate == 2.0  # ints widen to float


def test_config_rejects_unknown_keys_bad_values_and_newer_versions():
    with pytest.raises(ConfigError, match="unknown keys"):
        Outer.from_dict({"nmae": "typo"})
    with pytest.raises(ConfigError, match="positive"):
        Outer.from_dict({"inner": {"size": 0}})
    with pytest.raises(ConfigError, match="not one of"):
        Outer.from_dict({"color": "green"})
    with pytest.raises(ConfigError, match="newer"):
        Outer.from_dict({"format_version": 3})
    with pytest.raises(ConfigError, match="invalid YAML"):
        Outer.from_yaml("a: [unclosed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Outer().name = "z"  # type: ignore[misc]


def test_registry_refuses_unknown_and_duplicate_names():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)

    @reg.register("b")
    def _b():  # decorator form returns the object
        return 2

    assert reg.get("a") == 1 and reg.get("b")() == 2 and reg.names() == ["a", "b"]
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a", 3)
    reg.register("a", 3, overwrite=True)
    assert reg.get("a") == 3
    with pytest.raises(RegistryError, match=r"unknown widget 'c'.*a, b"):
        reg.get("c")
    with pytest.raises(KeyError):  # mapping-style callers still work
        reg.get("c")


def test_import_featcomp_is_light():
    code = "import sys, featcomp; print(sorted(m for m in ('torch','torchvision','ray','decord') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_public_attribute_raises_attribute_error():
    with pytest.raises(AttributeError):
        featcomp.no_such_thing  # noqa: B018


def test_cli_help_lists_every_subcommand():
    from featcomp.cli import COMMANDS

    out = subprocess.run([sys.executable, "-m", "featcomp.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in COMMANDS:
        assert name in out.stdout
