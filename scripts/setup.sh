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
    # PyPI's Linux torch wheel is the CUDA build (several GB of nvidia-* wheels). PyTorch's own CPU
    # index serves the CPU build: use it when it can be reached. Offline machines with a local
    # wheel mirror (this project's CI) install from that mirror as before.
    # AUGMENT_TORCH_INDEX= (empty) skips the CPU index; AUGMENT_TORCH_SPEC picks another version.
    index=${AUGMENT_TORCH_INDEX-https://download.pytorch.org/whl/cpu}
    if [ -n "$index" ] && python - "$index" >/dev/null 2>&1 <<'EOF'
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10)
EOF
    then
      pip install -q --index-url "$index" "${AUGMENT_TORCH_SPEC:-torch==2.13.0}"
    else
      pip install -q "${AUGMENT_TORCH_SPEC:-torch==2.13.0}"
    fi
  fi
fi
# The distribution was called "augment" before (a name taken on PyPI by an unrelated project):
# remove that old install so two distributions do not both provide the `augment` package.
if pip show augment >/dev/null 2>&1; then pip uninstall -q -y augment; fi
pip install -q -e ".[dev,scale]"   # scale: Dask scale-out (flows/scale.py); the library works without it
