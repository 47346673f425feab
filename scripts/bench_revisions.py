"""Speed of this checkout against an older revision, with the project's own benchmark scripts.

    .venv/bin/python scripts/bench_revisions.py [--base 1527cdf] [--repeats 2] [--no-write]

Used for the redesign (issue 15), whose rule is "benchmark ratios stay within noise": it checks the
revision ``--base`` out into a temporary git worktree and runs ``scripts/bench_entropy.py`` and
``scripts/bench_store.py`` (each with ``--no-write``) once per repeat in each checkout, alternating
base and now, so both see the same machine load; every throughput cell keeps its best run. The
temporal codec is compared inside one process by ``scripts/bench_temporal.py --baseline-rev``, which
loads the base revision's ``temporal.py`` beside today's (its rows are reported as now/base). Each
checkout imports its own ``featcomp`` (``PYTHONPATH`` = the checkout). Writes the "revisions" section
of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.evals.report import markdown_table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def table_rows(text: str) -> list[list[str]]:
    """Every markdown table row of ``text`` as a list of stripped cells (separator rows left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not set(line.replace("|", "").strip()) <= set("-: "):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def number(cell: str) -> float:
    """The first number of a table cell ("1,582" -> 1582.0, "0.75 / 1.55" -> 0.75)."""
    m = re.search(r"-?[\d,]*\.?\d+", cell)
    if m is None:
        raise ValueError(f"no number in table cell {cell!r}")
    return float(m.group(0).replace(",", ""))


def run(checkout: Path, args: list[str], timeout: int) -> str:
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    p = subprocess.run([sys.executable, *args], cwd=checkout, env=env, capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {checkout} (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return p.stdout


def entropy_cells(text: str) -> dict[tuple[str, str], float]:
    """(size, column) -> M symbols/s of the featcomp coder rows of bench_entropy's table."""
    out = {}
    for r in table_rows(text):
        if len(r) >= 6 and r[1] == "featcomp":
            out[(r[0], "encode")] = number(r[4])
            out[(r[0], "decode")] = number(r[5])
    return out


STORE_COLUMNS = {4: ("read, M values/s", True), 5: ("read, videos/s", True),
                 6: ("16-frame window median, ms", False), 7: ("probe epoch, s", False)}


def store_cells(text: str) -> dict[tuple[str, str], float]:
    """(row, column) -> value of bench_store's representation table."""
    out = {}
    for r in table_rows(text):
        if len(r) == 8 and r[0] != "representation":
            for i, (name, _) in STORE_COLUMNS.items():
                out[(r[0], name)] = number(r[i])
    return out


def keep_best(acc: dict, new: dict, higher_better) -> None:
    for k, v in new.items():
        better = higher_better(k)
        acc[k] = v if k not in acc else (max(acc[k], v) if better else min(acc[k], v))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="1527cdf", help="git revision to compare against (default: before the redesign)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each script per checkout")
    ap.add_argument("--sizes", nargs="+", default=["1e6", "1e7"], help="bench_entropy --sizes")
    ap.add_argument("--videos", type=int, default=200, help="bench_store --videos")
    ap.add_argument("--no-temporal", action="store_true", help="skip the bench_temporal comparison")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    base_sha = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    now_sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="featcomp-base-"))
    base_dir = tmp / "base"
    subprocess.run(["git", "worktree", "add", "--detach", "-f", str(base_dir), base_sha], cwd=ROOT,
                   capture_output=True, check=True)
    ent_cmd = ["scripts/bench_entropy.py", "--no-write", "--no-compressai", "--sizes", *args.sizes]
    st_cmd = ["scripts/bench_store.py", "--no-write", "--videos", str(args.videos)]
    ent = {"base": {}, "now": {}}
    st = {"base": {}, "now": {}}
    try:
        for rep in range(args.repeats):
            for name, where in (("base", base_dir), ("now", ROOT)):
                print(f"repeat {rep + 1}/{args.repeats}: {name} ({base_sha if name == 'base' else now_sha})",
                      flush=True)
                keep_best(ent[name], entropy_cells(run(where, ent_cmd, 1800)), lambda k: True)
                keep_best(st[name], store_cells(run(where, st_cmd, 1800)),
                          lambda k: dict(STORE_COLUMNS.values())[k[1]])
        temporal = None if args.no_temporal else run(
            ROOT, ["scripts/bench_temporal.py", "--dry-run", "--baseline-rev", base_sha], 1800)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_dir)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    for what, d in (("bench_entropy.py", ent), ("bench_store.py", st)):
        if not d["base"] or not d["now"]:
            raise SystemExit(f"{what}: no table rows parsed from its output (did its table format change?)")
    rows = []
    for k in sorted(ent["now"]):
        if k in ent["base"]:
            b, n = ent["base"][k], ent["now"][k]
            rows.append([f"entropy coder, {k[0]} symbols, {k[1]} (M symbols/s)", f"{b:,.1f}", f"{n:,.1f}",
                         f"{n / b:.2f}x"])
    for k in st["now"]:
        if k in st["base"]:
            b, n = st["base"][k], st["now"][k]
            higher = dict(STORE_COLUMNS.values())[k[1]]
            ratio = n / b if higher else b / n
            rows.append([f"{k[0]}: {k[1]}", f"{b:,.4g}", f"{n:,.4g}", f"{ratio:.2f}x"])
    if temporal is not None:
        for r in table_rows(temporal):
            if len(r) == 8 and r[0] != "chunk (frames x latents)":
                for label, i_b, i_n in (("one chunk at a time", 3, 5), ("16 chunks in lockstep", 4, 6)):
                    b, n = number(r[i_b]), number(r[i_n])
                    rows.append([f"temporal decode {r[0]}, {label} (frames/s)", f"{b:,.0f}", f"{n:,.0f}",
                                 f"{n / b:.2f}x"])
    table = markdown_table(["measure", f"base ({base_sha})", f"now ({now_sha})", "speed now / base"], rows)
    ratios = [float(r[3][:-1]) for r in rows]
    body = (
        "## This checkout against an older revision (`scripts/bench_revisions.py`)\n\n"
        f"The redesign's rule (issue 15): speed unchanged within noise. Base {base_sha}, now {now_sha}; "
        f"`bench_entropy.py` (featcomp coder rows, sizes {' '.join(args.sizes)}) and `bench_store.py` "
        f"({args.videos} videos) run {args.repeats}x in each checkout, alternating, best run per cell; temporal "
        "decode from `bench_temporal.py --baseline-rev` (both decoders in one process). Speed ratio > 1 is "
        "faster now (for times, base / now).\n\n"
        f"{table}\n\n"
        f"Ratios span {min(ratios):.2f}x to {max(ratios):.2f}x.\n")
    print(body)
    if not args.no_write:
        write_section("revisions", body)
        print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
