"""What the user of the extraction job sees: a progress bar while it runs and a summary at the end.

No ray import here: the bar and the summary are plain objects, tested without a runtime.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JobSummary", "Progress", "human_bytes"]


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


@dataclass
class JobSummary:
    """Counts and sizes of one run of the extraction job.

    Attributes:
        store: Where the features went.
        total: Videos found in the inputs.
        done: Videos written by this run.
        skipped: Videos already complete in the store (not re-extracted).
        failed: Videos that could not be extracted (listed in the store's failures table).
        frames: Frames written by this run.
        bytes_written: Bytes the store grew by in this run (on disk/object store: chunks, index,
            metadata), measured.
        payload_bits: Entropy-coded size of the written latents (the tables' cost, within the
            ANS flush of the coded bytes); for raw stores, 16 bits per value before zstd (int8: 8 bits
            per value plus each video's 32-bit scales).
        float16_bytes: What the same frames' backbone features take as float16.
        wall_s: Wall time of the run, seconds (Ray start-up included).
        failures: ``(video_id, path, error)`` of this run's failures.
    """

    store: str
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    bytes_written: int = 0
    payload_bits: float = 0.0
    float16_bytes: int = 0
    wall_s: float = 0.0
    raw: bool = False
    raw_dtype: str = "float16"
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def bits_per_frame(self) -> float:
        """Coded payload bits per frame."""
        return self.payload_bits / self.frames if self.frames else float("nan")

    @property
    def ratio_vs_float16(self) -> float:
        """``float16_bytes / payload bytes`` (how many times smaller than float16 backbone features)."""
        return 8.0 * self.float16_bytes / self.payload_bits if self.payload_bits else float("nan")

    @property
    def ratio_on_disk(self) -> float:
        """``float16_bytes / bytes_written``: the same, with the store's index and metadata counted."""
        return self.float16_bytes / self.bytes_written if self.bytes_written > 0 else float("nan")

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["failures"] = [list(f) for f in self.failures]
        d.update(bits_per_frame=self.bits_per_frame, ratio_vs_float16=self.ratio_vs_float16,
                 ratio_on_disk=self.ratio_on_disk, frames_per_s=self.frames_per_s)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def format(self) -> str:
        """The multi-line summary printed at the end of the job."""
        lines = [
            f"featcomp extract: {self.done} done, {self.skipped} skipped (already in the store), "
            f"{self.failed} failed, of {self.total} videos in {self.wall_s:.1f} s",
            f"  store:    {self.store}",
            f"  frames:   {self.frames} written ({self.frames_per_s:.1f} frames/s end to end)",
        ]
        if self.frames:
            what = f"{self.raw_dtype} features (raw)" if self.raw else "entropy-coded latents"
            lines.append(
                f"  written:  {human_bytes(self.bytes_written)} to the store ({what}: "
                f"{human_bytes(self.payload_bits / 8)}, {self.bits_per_frame:,.0f} bits/frame)"
            )
            if self.float16_bytes:
                lines.append(
                    f"  ratio:    {self.ratio_vs_float16:.1f}x smaller than float16 backbone features "
                    f"({human_bytes(self.float16_bytes)}); {self.ratio_on_disk:.1f}x counting the store's "
                    "index and metadata"
                )
        if self.failed:
            lines.append(f"  failures: {self.failed}, recorded in the store's failures table "
                         f"(featcomp info {self.store}):")
            for vid, path, err in self.failures[:10]:
                err = " ".join(err.split())
                lines.append(f"    {vid}: {err[:160]}{'...' if len(err) > 160 else ''}")
            if len(self.failures) > 10:
                lines.append(f"    ... and {len(self.failures) - 10} more")
        return "\n".join(lines)


class Progress:
    """A tqdm bar over videos with frames/s, bits per frame so far, failures and an ETA.

    Args:
        total: Videos to extract in this run (skipped ones excluded).
        enabled: ``False`` keeps it silent (also when ``TQDM_DISABLE`` is set).
    """

    def __init__(self, total: int, *, enabled: bool = True, file=None) -> None:
        self.total = total
        self.frames = 0
        self.bits = 0.0
        self.failed = 0
        self.start = time.perf_counter()
        self._bar = None
        if enabled and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes"):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="video", desc="extract", file=file or sys.stderr, dynamic_ncols=True,
                             disable=False)

    def update(self, *, frames: int = 0, bits: float = 0.0, failed: bool = False) -> None:
        """Count one finished video (written, or failed)."""
        self.frames += frames
        self.bits += bits
        self.failed += int(failed)
        if self._bar is not None:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            post = {"frames/s": f"{self.frames / elapsed:.1f}"}
            if self.frames:
                post["bits/frame"] = f"{self.bits / self.frames:,.0f}"
            if self.failed:
                post["failed"] = self.failed
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(1)

    def write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
