"""The ``featcomp`` command's ergonomics: a light parser, and mistakes that end in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "ray", "decord")


def _env(env_path: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([str(env_path)] if env_path else []),
                                         *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 240, env_path: Path | None = None,
            **env: str) -> subprocess.CompletedProcess:
    """``python -m featcomp.cli ARGS`` in a fresh process (``env_path``: one more PYTHONPATH entry)."""
    return subprocess.run([sys.executable, "-m", "featcomp.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=_env(env_path, **env), timeout=timeout)


def test_building_the_parser_and_every_help_imports_no_torch_ray():
    """``featcomp --help`` and ``featcomp CMD --help`` stay fast: no torch/torchvision/ray/decord import."""
    from featcomp.cli import COMMANDS

    code = (
        "import sys, contextlib, io\n"
        "from featcomp.cli import build_parser, main\n"
        "p = build_parser()\n"
        f"for cmd in [None, *{list(COMMANDS)!r}]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try: main(['--help'] if cmd is None else [cmd, '--help'])\n"
        "        except SystemExit as e: assert e.code == 0, (cmd, e.code)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.timeout(120)
def test_mistakes_end_in_one_line(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# not a store\n")
    (tmp_path / "v.mp4").write_bytes(b"\0" * 16)
    # --store pointing at an existing file: a StoreError before anything starts
    _one_line_error(run_cli("extract", tmp_path / "v.mp4", "--store", readme, "--model", tmp_path / "none.safetensors"),
                    "is a file, not a store directory")
    for cmd in ("info", "verify"):
        _one_line_error(run_cli(cmd, readme), "error:")
    _one_line_error(run_cli("compress", tmp_path / "v.mp4", "--model", tmp_path / "none.safetensors", "-o",
                            tmp_path / "o.fcc"), "does not exist")


def test_store_writer_refuses_a_file_path(tmp_path):
    from featcomp.errors import StoreError
    from featcomp.store import StoreWriter

    f = tmp_path / "README.md"
    f.write_text("x")
    with pytest.raises(StoreError, match="is a file, not a store directory"):
        StoreWriter(f, raw=True)
    assert f.read_text() == "x"
