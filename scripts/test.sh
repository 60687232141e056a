#!/usr/bin/env bash
# Set up and run the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
. scripts/env.sh
export PREFECT_HOME=${PREFECT_HOME:-$(mktemp -d)}
python -m pytest -q "$@"
