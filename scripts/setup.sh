#!/usr/bin/env bash
# Create .venv and install the project. Installs the CPU build of torch first when no NVIDIA
# GPU is present (an unpinned torch would pull a multi-GB CUDA build). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    pip install -q "torch>=2.2"
  else
    pip install -q "${AUGMENT_TORCH_SPEC:-torch==2.13.0}"   # CPU build on this kind of machine
  fi
fi
# The distribution was called "augment" before (a name taken on PyPI by an unrelated project):
# remove that old install so two distributions do not both provide the `augment` package.
if pip show augment >/dev/null 2>&1; then pip uninstall -q -y augment; fi
pip install -q -e ".[dev,scale]"   # scale: Dask scale-out (flows/scale.py); the library works without it
