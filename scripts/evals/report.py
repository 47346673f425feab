"""Report rendering shared by the evaluations and benchmarks: machine + date line, markdown tables, and
per-section updates of docs/*.md.

Each script owns sections of a doc (``docs/benchmarks.md``, ``docs/rd.md``, ...), delimited by
``<!-- begin:NAME -->`` / ``<!-- end:NAME -->`` markers, and replaces only those, so scripts can be rerun
independently without clobbering each other's tables.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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
    """Today's date, ISO format (``2026-12-05``)."""
    return _dt.date.today().isoformat()


def logger(name: str) -> Callable[[str], None]:
    """A ``log(msg)`` that prints ``[name HH:MM:SS] msg`` and flushes (progress lines of a long run)."""
    def log(msg: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    return log


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table; floats are printed as given (format them first)."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def dict_table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    """A markdown table of dict rows: ``cols`` is ``[(key, header), ...]``; a missing key is an empty cell."""
    out = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(k, "")) for k, _ in cols) + " |")
    return "\n".join(out)


def write_section(name: str, body: str, path: Path | str = DOCS / "benchmarks.md", *,
                  machine_line: str | None = None, date: str | None = None, stamp: bool = True,
                  header: str = "# Benchmarks\n\nEach section is written by the script it names.\n") -> Path:
    """Replace (or append) the section ``name`` of ``path`` with ``body`` and return the path.

    The section is stamped with the machine and the date: this machine and today unless
    ``machine_line`` / ``date`` name the machine and day the numbers were measured on (results
    brought back from another machine, e.g. scripts/gpu_check.py); ``stamp=False`` writes ``body`` alone
    (it carries its own machine line). ``header`` starts the file when it does not exist yet.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else header
    line = f"\n\n_Machine: {machine_line or machine()}. Date: {date or today()}._" if stamp else ""
    block = f"<!-- begin:{name} -->\n{body.rstrip()}{line}\n<!-- end:{name} -->"
    pattern = re.compile(rf"<!-- begin:{re.escape(name)} -->.*?<!-- end:{re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path
