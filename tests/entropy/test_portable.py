"""The golden-fixture tests pass whatever SIMD path numpy takes on this CPU.

numpy's vectorized ``exp``/``log`` differ in the last bit between its AVX-512 and AVX2 kernels, and a CPU
without AVX-512 once failed six golden tests (issue 14). Here the golden tests run again in a child
process with numpy's AVX-512 kernels switched off (``NPY_DISABLE_CPU_FEATURES``), which is what such a
CPU executes. On a CPU or numpy build without those kernels the child runs the same tests unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_TESTS = ["test_codec.py::test_golden_streams_decode_and_reencode_identically",
                "test_codec.py::test_generator_script_reproduces_the_committed_files", "test_temporal.py", "test_hyperprior.py",
                "test_contract.py::test_golden_stream_decodes_and_reencodes_byte_for_byte"]


def _avx512_dispatch_targets() -> list[str]:
    """numpy's dispatched targets that use AVX-512 (names differ between numpy versions)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__
    return [t for t in __cpu_dispatch__ if t == "X86_V4" or t.startswith("AVX512")]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_golden_tests_pass_without_avx512_kernels():
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=" ".join(_avx512_dispatch_targets()))
    probe = subprocess.run([sys.executable, "-c", "import numpy"], env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-2000:]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not gpu",
         *[str(Path(__file__).parent / t) for t in GOLDEN_TESTS]],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout
