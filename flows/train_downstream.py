"""Example downstream training flow: calls the augmentation pipeline as a subflow, then trains
a classifier on the augmented dataset it returns.

    python flows/train_downstream.py --params params.yaml
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if not __package__:  # run as a script from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# A temporary Prefect server (no PREFECT_API_URL) needs more than Prefect's default 20 s to start on a
# small loaded machine; effective when this module is imported before prefect (scripts/env.sh sets it too).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

from prefect import flow, get_run_logger, task  # noqa: E402

from augment.data.prepare import load_prepared  # noqa: E402
from augment.data.torch_dataset import load_augmented  # noqa: E402
from augment.downstream.classifier import (  # noqa: E402
    ClassifierSpec,
    predict_proba,
    train_classifier,
)
from augment.errors import DataError  # noqa: E402
from augment.pipeline.paths import Paths  # noqa: E402
from flows.augment_flow import AugmentResult, augment_pipeline  # noqa: E402


@task(name="train-classifier")
def train_on_augmented(augmented_dir: str, prepared_dir: str, steps: int, seed: int) -> dict:
    """Train the downstream classifier on the merged set; report its accuracy on the val split, or
    on the test split when there is none (the default ``prepare.val_fraction: 0``: cross-fitting
    uses every labelled image). The classifier is final here, so scoring it on test is reporting;
    no choice is made from that number."""
    images, labels, _, _ = load_augmented(augmented_dir)
    ds = load_prepared(prepared_dir)
    model = train_classifier(images, labels, ds.num_classes, ClassifierSpec(steps=steps), seed)
    split = "val" if len(ds.subset("val")[1]) else "test"
    x, y = ds.subset(split)
    if not len(x):
        raise DataError(f"{prepared_dir}: no val or test images to score the classifier on; set "
                         "prepare.val_fraction > 0 or prepare.test_dir")
    acc = float((predict_proba(model, x).argmax(1) == y).mean())
    return {"accuracy": acc, "scored_on": split, "scored_images": int(len(y)), "train_images": int(len(images))}


@flow(name="downstream-training")
def downstream_training(params_path: str = "params.yaml", workdir: str = ".", steps: int = 500, seed: int = 0) -> dict:
    result: AugmentResult = augment_pipeline(params_path=params_path, workdir=workdir, evaluate=False)  # subflow
    # Pass paths (small), never arrays, between tasks; the task reads the merged set itself.
    out = train_on_augmented(result.augmented_dir, Paths().rooted(workdir).prepared, steps, seed)
    get_run_logger().info("downstream %s accuracy %.4f, trained on %d images (%d synthetic, generator %s)",
                          out["scored_on"], out["accuracy"], out["train_images"], result.synthetic_images,
                          result.checkpoint_sha256[:12])
    return {**out, "synthetic_images": result.synthetic_images, "checkpoint_sha256": result.checkpoint_sha256}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--workdir", default=".")
    a = ap.parse_args()
    print(downstream_training(params_path=a.params, workdir=a.workdir))
