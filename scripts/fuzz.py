"""A long fuzz run over every decoder of untrusted bytes; writes its counts to docs/reliability.md.

    python -m scripts.fuzz --cases 2000 --seed 1

Same targets, mutators and bounds as the CI suite (``tests/fuzz_cases.py``, ``tests/test_fuzz.py``),
with forged sizes drawn over the full range (up to 2**40, so some cases decode streams at the
per-stream caps). Stops at the first case that raises anything but a ``FeatcompError`` or breaks the
time or memory bound, and prints it (the input's first bytes, for a regression test).
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- fuzz:begin -->", "<!-- fuzz:end -->"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000, help="cases per decoder")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="decoder names (default: all)")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/reliability.md")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests import fuzz_cases as fc

    fc.FULL_RANGE = True
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for t in fc.all_targets(Path(d)):
            if args.only and t.name not in args.only:
                continue
            t0 = time.perf_counter()
            try:
                out = fc.fuzz(t, args.cases, args.seed)
            except fc.FuzzFailure as e:
                print(f"FAILED {e}", file=sys.stderr)
                return 1
            wall = time.perf_counter() - t0
            errs = ", ".join(f"{k} {v}" for k, v in sorted(out.errors.items()))
            rows.append(f"| {t.name} | {args.cases} | {out.ok} | {errs} | {out.worst_s:.2f} | {out.worst_mib:.0f} | {wall:.0f} |")
            print(rows[-1], flush=True)
    table = "\n".join([
        f"Last long run: `python -m scripts.fuzz --cases {args.cases} --seed {args.seed}` on "
        f"{datetime.date.today().isoformat()} (forged sizes over the full range; slowest case and peak traced "
        "memory under tracemalloc, which slows Python code several times).",
        "",
        "| decoder | cases | decoded | featcomp errors | slowest case (s) | peak (MiB) | run (s) |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])
    if not args.no_doc and not args.only:
        text = DOC.read_text()
        new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), f"{BEGIN}\n{table}\n{END}", text, flags=re.S)
        DOC.write_text(new)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
