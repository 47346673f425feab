"""Shared helpers for scripts/: machine description and per-section updates of docs/*.md.

Each benchmark script owns one section of ``docs/benchmarks.md``, delimited by
``<!-- begin:NAME -->`` / ``<!-- end:NAME -->`` markers, and replaces only that section, so
scripts can be rerun independently without clobbering each other's tables.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def machine() -> str:
    """One line naming the machine: CPU model, cores, memory, Python, torch, date."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        mem = f"{mem_gb:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        mem = "? GiB"
    parts = [cpu, f"{os.cpu_count()} cores", mem, f"Python {platform.python_version()}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        if torch.cuda.is_available():
            parts.append(torch.cuda.get_device_name(0))
    except ImportError:
        pass
    return ", ".join(parts)


def today() -> str:
    return _dt.date.today().isoformat()


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table; floats are printed as given (format them first)."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def write_section(name: str, body: str, path: Path | str = DOCS / "benchmarks.md", *,
                  machine_line: str | None = None, date: str | None = None) -> Path:
    """Replace (or append) the section ``name`` of ``path`` with ``body`` and return the path.

    The section is stamped with the machine and the date: this machine and today unless
    ``machine_line`` / ``date`` name the machine and day the numbers were measured on (results
    brought back from another machine, e.g. scripts/gpu_check.py).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEach section is written by the script it names.\n"
    block = (
        f"<!-- begin:{name} -->\n{body.rstrip()}\n\n"
        f"_Machine: {machine_line or machine()}. Date: {date or today()}._\n<!-- end:{name} -->"
    )
    pattern = re.compile(rf"<!-- begin:{re.escape(name)} -->.*?<!-- end:{re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path
