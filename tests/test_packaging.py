"""Packaging: `pip install featcomp` is the reader; heavy parts are extras; reading imports no torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = [ROOT / "tests" / "fixtures" / "store" / "golden", ROOT / "tests" / "fixtures" / "store" / "golden_levels"]


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_core_dependencies_are_the_reader_and_extras_hold_the_rest():
    from packaging.requirements import Requirement

    proj = _pyproject()["project"]
    core = {Requirement(r).name for r in proj["dependencies"]}
    assert {"numpy", "zarr", "numcodecs", "constriction", "fsspec"} <= core
    assert not core & {"torch", "torchvision", "decord", "ray", "av", "safetensors", "pyarrow"}, core
    extras = proj["optional-dependencies"]
    names = {k: {Requirement(r).name for r in v} for k, v in extras.items()}
    assert {"torch", "torchvision", "av"} <= names["extract"]
    assert "decord" not in names["extract"]  # PyAV is the default decoder (docs/decisions.md, "Default decoder")
    assert "ray" in names["ray"] and "featcomp" in names["ray"]  # [ray] pulls [extract]
    assert "torch" in names["train"]
    assert [str(Requirement(r).extras and sorted(Requirement(r).extras)) for r in extras["all"]] == \
        ["['extract', 'ray', 'train']"]
    # the optional decord extra is required only where a wheel exists: not on Linux aarch64 nor macOS arm64
    for extra in ("decord", "test"):
        decord = next(Requirement(r) for r in extras[extra] if Requirement(r).name == "decord")
        assert decord.marker is not None
        assert decord.marker.evaluate({"platform_machine": "x86_64", "sys_platform": "linux"})
        assert not decord.marker.evaluate({"platform_machine": "aarch64", "sys_platform": "linux"})
        assert not decord.marker.evaluate({"platform_machine": "arm64", "sys_platform": "darwin"})
    assert '".[all,test,bench]"' in (ROOT / "Makefile").read_text()


@pytest.mark.timeout(120)
def test_reading_a_store_imports_no_torch_torchvision_decord_ray():
    """open_store + every video's features and timestamps + verify + info, in a fresh interpreter
    (torch is installed here, so this checks that nothing on the reading path imports it)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_reader.py"), *map(str, GOLDEN)],
                       capture_output=True, text=True, env=env, timeout=100)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reader OK" in r.stdout and "3 videos 49 frames" in r.stdout


@pytest.mark.timeout(120)
def test_missing_extra_is_one_clear_error():
    """Without torch (simulated by blocking its import), the extraction API and CLI name the extra."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import featcomp\n"
        "for call in (lambda: featcomp.Extractor, lambda: featcomp.extract_features('v.mp4')):\n"
        "    try:\n"
        "        call()\n"
        "    except featcomp.MissingExtraError as e:\n"
        "        assert isinstance(e, ImportError)\n"
        "        print('API:', e)\n"
        "from featcomp.cli import main\n"
        "sys.exit(main(['compress', 'v.mp4', '--model', 'm.safetensors', '-o', 'o.fcc']))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=100)
    assert "API: featcomp.Extractor needs 'torch'" in r.stdout and "featcomp[extract]" in r.stdout, r
    assert "API: featcomp.extract_features needs 'torch'" in r.stdout, r
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "featcomp[extract]" in r.stderr


def test_only_featcomp_is_packaged_and_the_ray_jobs_are_featcomp_pipelines():
    """The wheel holds the `featcomp` package alone: no generic top-level name such as `pipelines`."""
    from setuptools import find_namespace_packages

    find = _pyproject()["tool"]["setuptools"]["packages"]["find"]
    pkgs = find_namespace_packages(where=str(ROOT), include=find["include"], exclude=find.get("exclude", ()))
    assert "featcomp" in pkgs and "featcomp.pipelines" in pkgs and "featcomp.store" in pkgs, pkgs
    assert {p.split(".")[0] for p in pkgs} == {"featcomp"}, pkgs
    assert not list((ROOT / "pipelines").glob("*.py"))  # the old top-level package is gone from the checkout


@pytest.mark.timeout(120)
@pytest.mark.parametrize("job", ["extract", "demo"])
def test_python_m_entry_points_of_the_ray_jobs_start(job, tmp_path):
    """`python -m featcomp.pipelines.extract|demo --help` runs from any directory, without starting Ray."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['x', '--help']\n"
        "try:\n"
        f"    runpy.run_module('featcomp.pipelines.{job}', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('RAY', 'ray' in sys.modules)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=100)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"usage: python -m featcomp.pipelines.{job}" in r.stdout, r.stdout
    assert "RAY False" in r.stdout, r.stdout
    r = subprocess.run([sys.executable, "-m", f"featcomp.pipelines.{job}", "--help"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=100)
    assert r.returncode == 0 and f"usage: python -m featcomp.pipelines.{job}" in r.stdout, r.stdout + r.stderr
