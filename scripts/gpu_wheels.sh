#!/usr/bin/env bash
# Download, on a machine with network, the cp312 manylinux x86_64 wheels that scripts/gpu_check.py
# needs on a GPU machine with no network (which already has torch, torchvision, ray, numpy, pyyaml,
# pyarrow, fsspec, safetensors, pytest, hypothesis, psutil, pillow, msgpack). They land in .whl/
# (git-ignored) and travel with the working tree; on the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
# Versions are those of the development venv (torchcodec: the release paired with the GPU machine's
# torch, 0.11 <-> torch 2.11). The tree that travels is limited to 64 MiB, so decord (13.6 MB; the
# check then decodes with PyAV only and reports decord as absent) and zstandard (only the
# float16_zstd baselines use it) are left out unless asked for.
# Usage: scripts/gpu_wheels.sh [--with-decord] [--no-torchcodec]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=.whl
rm -rf "$DEST"  # a stale wheel of another version would install beside the pinned one
mkdir -p "$DEST"

WANT=(
  constriction==0.5.0
  zarr==3.1.6
  numcodecs==0.16.6
  donfig==0.8.1.post1
  google-crc32c==1.9.0
  typing_extensions==4.16.0
  packaging==26.4
  av==18.1.0
)
TORCHCODEC=${TORCHCODEC_VERSION:-0.11.1}
for a in "$@"; do
  case "$a" in
    --with-decord) WITH_DECORD=1 ;;
    --no-torchcodec) NO_TORCHCODEC=1 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
if [ -n "${WITH_DECORD:-}" ]; then WANT+=(decord==0.6.0); fi
if [ -z "${NO_TORCHCODEC:-}" ]; then WANT+=("torchcodec==$TORCHCODEC"); fi

PLAT=()
for p in manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux2010_x86_64 manylinux1_x86_64; do
  PLAT+=(--platform "$p")
done
for spec in "${WANT[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLAT[@]}" -d "$DEST" "$spec" || echo "WARNING: no cp312 manylinux wheel for $spec" >&2
done
echo "wheels in $DEST:"
ls -l "$DEST"
du -sh "$DEST"
