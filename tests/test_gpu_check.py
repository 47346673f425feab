"""scripts/gpu_check.py's dry run (CPU, tiny sizes) writes complete results, a report and a docs section.

The real run happens on a GPU machine (docs/gpu.md); these tests make sure every part of it that needs
no CUDA runs, so that the one GPU run does not fail on a typo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _run(out: Path, *extra: str, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "RAY_USAGE_STATS_ENABLED": "0", "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), *extra], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads((out / "gpu_results.json").read_text())


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_dry")
    return out, _run(out, "--skip", "ray", "--time-budget", "120", timeout=400)


@pytest.mark.slow
@pytest.mark.video
@pytest.mark.timeout(450)
def test_dry_run_records_every_section_with_sane_values(dry):
    out, doc = dry
    S = doc["sections"]
    assert doc["dry_run"] is True and doc["device"] == "cpu"
    for name in ("env", "clip", "pytest_gpu", "correctness", "autocast", "decode", "backbone_speed", "end_to_end"):
        assert S[name]["status"] == "ok", (name, S[name].get("error"), S[name].get("traceback"))
    # the gpu tests were collected and skipped (no CUDA here), not errored
    assert S["pytest_gpu"]["counts"].get("skipped", 0) >= 2 and not S["pytest_gpu"]["counts"].get("failed")
    assert "tests/entropy/test_temporal.py" in S["pytest_gpu"]["files"]
    assert (out / "pytest_gpu.log").read_text().strip()
    # latents compared for the three kinds, with bitstreams and integer contexts
    kinds = S["correctness"]["kinds"]
    assert set(kinds) == {"factorized", "temporal", "hyperprior"}
    for r in kinds.values():
        assert r["latents"] > 0 and 0.0 <= r["identical_fraction"] <= 1.0
        assert r["bitstream_from_same_integers_identical"] is True and r["decodes_to_device_latents"] is True
    assert kinds["temporal"]["context_identical"] is True and kinds["temporal"]["context_identical_wide_range"] is True
    assert kinds["hyperprior"]["scale_index_identical"] is True
    # autocast: bf16 measured on the CPU, fp16 recorded as needing CUDA
    bf = S["autocast"]["rows"]["bf16"]
    assert bf["max_abs"] > 0 and 0.0 <= bf["top1_agreement"] <= 1.0
    assert "no CUDA" in S["autocast"]["rows"]["fp16"]["status"]
    # decode: PyAV measured; the CUDA decoder row says why it did not run
    dec = {(r["decoder"], r["device"], r["size"], r["threads"]): r for r in S["decode"]["rows"]}
    assert dec[("pyav", "cpu", "short side 256", "auto")]["fps"] > 0
    assert dec[("torchcodec", "cuda", "native", "nvdec")]["status"] == "skipped: no CUDA"
    # speed rows: frames/s > 0 and the end-to-end ratio computed against the matching backbone row
    speed = [r for r in S["backbone_speed"]["rows"] if "fps" in r]
    assert speed and all(r["fps"] > 0 for r in speed)
    e2e = S["end_to_end"]["rows"][0]
    assert e2e["extract_features_fps"] > 0 and e2e["extractor_compress_fps"] > 0
    assert e2e["ratio_extract_features"] > 0 and e2e["backbone_only_fps"] > 0
    assert e2e["extractor_backbone_device"] == "cpu"
    assert doc["elapsed_s"] < 120
    report = (out / "gpu_report.md").read_text()
    for heading in ("### Correctness", "### Autocast", "### Video decode", "### Backbone only", "### End to end",
                    "### CUDA tests"):
        assert heading in report


@pytest.mark.slow
@pytest.mark.video
@pytest.mark.timeout(450)
def test_write_doc_replaces_only_the_gpu_section(dry, tmp_path):
    out, doc = dry
    bench = tmp_path / "benchmarks.md"
    original = (ROOT / "docs" / "benchmarks.md").read_text()
    bench.write_text(original)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(2):  # twice: the second run replaces the section instead of appending another
        p = subprocess.run([sys.executable, str(SCRIPT), "--write-doc", str(out / "gpu_results.json"), "--doc", str(bench)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
    text = bench.read_text()
    assert text.count("<!-- begin:gpu -->") == 1 and text.count("<!-- end:gpu -->") == 1
    section = text.split("<!-- begin:gpu -->")[1].split("<!-- end:gpu -->")[0]
    assert "### Correctness" in section and "Dry run" in section
    # stamped with the machine recorded in the results and the date of the run
    assert doc["sections"]["env"]["machine"] in section and f"Date: {doc['date']}" in section
    # every other section is untouched (the gpu section is replaced in place, or appended after them)
    def outside(t):
        if "<!-- begin:gpu -->" not in t:
            return t.rstrip(), ""
        head, rest = t.split("<!-- begin:gpu -->", 1)
        return head.rstrip(), rest.split("<!-- end:gpu -->", 1)[1].strip()
    assert outside(text) == outside(original)
    assert (ROOT / "docs" / "benchmarks.md").read_text() == original


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.video
@pytest.mark.timeout(300)
def test_dry_run_ray_job_section(tmp_path):
    doc = _run(tmp_path, "--skip", "pytest,correctness,decode,speed", "--time-budget", "200", timeout=280)
    r = doc["sections"]["ray"]
    assert r["status"] == "ok", r.get("log_tail", "")[-2000:]
    assert r["done"] == r["total"] == 2 and r["failed"] == 0 and r["frames"] > 0
    assert r["warm_done"] == 2 and r["fps_warm"] > 0
    assert "### Ray job" in (tmp_path / "gpu_report.md").read_text()
