"""Every script under scripts/ starts: ``--help`` exits 0 (imports resolve after moves such as scripts/evals)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "scripts").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_script_help_runs(path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
    p = subprocess.run([sys.executable, str(path), "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=110)
    assert p.returncode == 0, f"{path.name} --help failed:\n{p.stderr[-2000:]}"
    assert "usage" in p.stdout.lower()
