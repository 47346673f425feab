"""The ``featcomp`` command's ergonomics: a light parser, and mistakes that end in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "ray", "decord")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featcomp.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=_env(**env), timeout=timeout)


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
