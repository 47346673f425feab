"""Ends the Ray processes of a local Ray when the driver that started it dies (standard library only).

    python featcomp/pipelines/_reaper.py DRIVER_PID

Started by :func:`featcomp.pipelines.extract.init_ray` next to a local Ray of the job's own, in a session of
its own (so a kill of the driver's process group spares it). Ray's GCS and raylet die with the
driver (they share its fate through ``PR_SET_PDEATHSIG``) and its workers follow in about two seconds,
but its dashboard and runtime-env agents try to report the raylet's death to the dead GCS and linger
for a minute (a fixed 60 s timeout in Ray 2.60). This process watches the driver: every half second
it records the driver's descendants whose command line names ray (pid and start time, so a reused pid
is never touched), and once the driver is gone it sends SIGTERM to those still alive, then SIGKILL
after two seconds. It exits then, or when the driver is gone and nothing is left. Linux only (``/proc``);
elsewhere it exits at once.
"""

from __future__ import annotations

import os
import signal
import sys
import time

PERIOD_S = 0.5
GRACE_S = 2.0


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time in clock ticks) of a live, non-zombie process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[1]), int(fields[19])


def _is_ray(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"ray" in f.read().lower()
    except OSError:
        return False


def _descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every live descendant of ``root``."""
    parent: dict[int, int] = {}
    start: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                parent[int(name)], start[int(name)] = st
    children: dict[int, list[int]] = {}
    for pid, pp in parent.items():
        children.setdefault(pp, []).append(pid)
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out[pid] = start[pid]
        todo += children.get(pid, [])
    return out


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] == start


def main(argv: list[str]) -> int:
    if not sys.platform.startswith("linux") or len(argv) != 1:
        return 0
    driver = int(argv[0])
    first = _stat(driver)
    if first is None:
        return 0
    me = os.getpid()
    seen: dict[int, int] = {}
    while _alive(driver, first[1]):
        for pid, start in _descendants(driver).items():
            if pid != me and pid not in seen and _is_ray(pid):
                seen[pid] = start
        seen = {p: s for p, s in seen.items() if _alive(p, s)}
        time.sleep(PERIOD_S)
    left = {p: s for p, s in seen.items() if _alive(p, s)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, start in left.items():
            if _alive(pid, start):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        t0 = time.monotonic()
        while time.monotonic() - t0 < GRACE_S and any(_alive(p, s) for p, s in left.items()):
            time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
