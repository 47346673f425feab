"""scripts/generality_eval.py --quick: the whole evaluation on tiny synthetic data with tiny random backbones.

The real run needs the fetched data and an hour of CPU (docs/generality.md); this makes sure every part of
it runs and that the report has every column, the per-video worst case and the targets, so that the one real
run does not fail on a typo. The numbers of a quick run mean nothing; the properties checked here hold for
any data: stored bits of fixed-size codes are exact, metrics are in range, the temporal refit keeps the
fixed-rate head's integers (hence its quality), teacher metrics exist exactly for the backbone with a
classifier.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "generality_eval.py"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("generality")
    data, out = tmp / "data", tmp / "gen.md"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--data", str(data), "--out", str(out)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=840)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    return out, json.loads((data / "cache" / "generality_results_quick.json").read_text())


def _table(md: str, section: str) -> list[list[str]]:
    """Rows (cells) of the first table after the heading that starts with ``section``."""
    lines = md.split("\n## " + section, 1)[1].split("\n")
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| "))
    block = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        block.append([c.strip() for c in ln.strip().strip("|").split("|")])
    return block


@pytest.mark.slow
@pytest.mark.video
@pytest.mark.timeout(900)
def test_quick_run_writes_a_table_with_every_column_and_the_targets(quick):
    from scripts.generality_eval import COLUMNS

    out, res = quick
    md = out.read_text()
    assert out.with_suffix(".png").stat().st_size > 10_000
    for key, label in (("tinyA", "tiny random CNN, no classifier"), ("tinyB", "tiny random CNN + random classifier")):
        rows = _table(md, label)
        assert rows[0] == COLUMNS
        body = {r[0]: r for r in rows[2:]}
        assert all(len(r) == len(COLUMNS) for r in body.values())
        names = " ".join(body)
        for fam in ("float32", "float16 + zstd", "8-bit + zstd", "PCA-8 -> 8-bit", "uniform q", "FAISS PQ",
                    "FAISS OPQ", "learned: reconstruct (mse)", "temporal refit", "sweep_lambda"):
            assert fam in names, (key, fam)
        f16 = next(r for n, r in body.items() if n.startswith("float16"))
        assert f16[1] != "–" and f16[3] != "–" and f16[4] != "–" and f16[8] in ("bikes", "carphone_pristine",
                                                                                 "bigbuckbunny")
        if key == "tinyA":  # no classifier: no teacher metrics, no rate control, no distill head
            assert f16[5] == f16[6] == f16[7] == "–"
            assert "rate control" not in names and "distill" not in names
        else:
            assert all(c.endswith("%") for c in (f16[5].split("; ")[1], f16[6]))
            assert "rate control" in names and "learned: distill (teacher-SVD init)" in names
        section = md.split(label, 1)[1].split("\n## ", 1)[0]
        assert "### Targets (issue 18)" in section
        assert "Unseen-task probe" in section and "kNN recall@10 >= 0.9" in section
        assert ("**met**" in section) or ("**missed**" in section)
        assert "per held-out video" in section


@pytest.mark.slow
@pytest.mark.video
@pytest.mark.timeout(900)
def test_quick_run_results_are_stored_sizes_and_metrics_in_range(quick):
    _, res = quick
    for key in ("tinyA", "tinyB"):
        r = res["backbones"][key]
        fm = {x["label"]: x for x in r["fm"]}
        c = r["channels"]
        assert fm["float32"]["fm_bits"] == 32 * c
        pq = next(x for n, x in fm.items() if n.startswith("FAISS PQ, 8 x 8-bit"))
        assert pq["fm_bits"] == 64.0  # 8 one-byte codes per example, nothing else stored
        for x in r["fm"]:
            if x["family"] != "sweep":
                assert 0.0 <= x["fm_acc"] <= 1.0 and x["fm_bits"] > 0
        vid = {x["label"]: x for x in r["video"]}
        assert all(len(x["videos"]) == 3 for x in vid.values())  # leave-one-out: every clip held out once
        vpq = next(x for n, x in vid.items() if n.startswith("FAISS PQ, 8 x 4-bit"))  # 96 training vectors < 256
        for v, o in vpq["videos"].items():
            assert o["test"]["bits"] == 32.0
        for x in vid.values():
            for v, o in x["videos"].items():
                m = o["test"]
                assert m["bits"] > 0 and 0.0 <= m["knn"] <= 1.0
                assert ("top1" in m) == (key == "tinyB")
                if "top1" in m:
                    assert 0.0 <= m["top1"] <= m["top5"] <= 1.0 and m["kl"] >= -1e-6
        temporal = [x for x in vid.values() if x["family"].startswith("temporal")]
        assert temporal
        for t in temporal:
            fixed = vid[t["label"].split(" + temporal refit")[0]]
            for v, o in t["videos"].items():  # same integers as the fixed-rate head: same decoded features
                assert o["test"]["knn"] == fixed["videos"][v]["test"]["knn"]
                assert o["test"]["factorized_5fps_bits"] > 0
        if key == "tinyB":
            rc = [x for x in vid.values() if x["family"] == "ratecontrol"]
            assert rc and all("levels" in o["test"] for x in rc for o in x["videos"].values())
            for x in rc:  # every frame of the held-out clip got a level
                for v, o in x["videos"].items():
                    assert sum(o["test"]["levels"]) == 30
