#!/usr/bin/env bash
# Set up, materialise the bundled default dataset (no network), and run the DVC pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
. scripts/env.sh
if [ ! -d data/raw ] || [ ! -d data/test ]; then
  augment default-dataset --raw-dir data/raw --test-dir data/test
fi
# The default dataset is tracked by DVC like a user's dataset would be (data/raw.dvc,
# data/test.dvc). Re-record it only if the materialised bytes differ from the committed hash.
if ! dvc status data/raw.dvc data/test.dvc | grep -q "up to date"; then
  dvc add -q data/raw data/test
fi
# One OpenMP thread per process unless told otherwise: the networks sized for a scarce dataset are
# too small to split across threads, and two spinning OpenMP threads on a busy 2-core machine
# multiplied the wall time (issue 12; measured in docs/performance.md).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
dvc repro
echo
cat metrics/evaluate.md
