"""Example downstream training flow: calls the augmentation pipeline as a subflow, then trains
a classifier on the augmented dataset it returns.

    python flows/train_downstream.py --params params.yaml
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# A temporary Prefect server (no PREFECT_API_URL) needs more than Prefect's default 20 s to start on a
# small loaded machine; effective when this module is imported before prefect (scripts/env.sh sets it too).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

from prefect import flow, get_run_logger, task  # noqa: E402

from augment.config import load_config, under_root  # noqa: E402
from augment.data.classical import classical_augmentation  # noqa: E402
from augment.data.prepare import load_prepared  # noqa: E402
from augment.data.torch_dataset import AugmentedDataset  # noqa: E402
from augment.downstream.classifier import predict_proba, train_classifier  # noqa: E402
from augment.downstream.models import resolve_model  # noqa: E402
from augment.errors import AugmentError, DataError  # noqa: E402
from augment.evaluation.evaluate import classifier_spec  # noqa: E402
from augment.flows.augment_flow import AugmentResult, augment_pipeline, parse_set_args  # noqa: E402
from augment.pipeline.paths import Paths  # noqa: E402


@task(name="train-classifier")
def train_on_augmented(augmented_dir: str, prepared_dir: str, params_file: str, steps: int | None,
                       seed: int | None, overrides: dict[str, Any] | None = None) -> dict:
    """Train the downstream classifier on the merged set the way the pipeline chose the synthetic
    share for it: the ``evaluate`` recipe and network (``evaluate.model``), classical augmentation
    on every image (the ``classical`` params; the share was chosen against real + classical), and
    each image drawn by the manifest's ``weight`` (uniform for the default ``merge.realise:
    replicate``; needed for ``weights``). Replace this task's body with your own training.

    It reports accuracy on the val split, or on the test split when there is none (the default
    ``prepare.val_fraction: 0``: cross-fitting uses every labelled image). The classifier is
    final here, so scoring it on test is reporting; no choice is made from that number.

    ``overrides``: the ones the pipeline ran with, so the recipe is the one its share was chosen for.
    ``seed``: ``None`` = the first of ``evaluate.seeds``; the device is ``evaluate.device``'s."""
    from augment.core.device import resolve_device

    cfg = load_config(params_file, overrides)
    seed = cfg.evaluate.seeds[0] if seed is None else seed
    device = resolve_device(cfg.evaluate.device)
    spec = classifier_spec(cfg.evaluate)
    if steps is not None:
        spec.steps = steps
    images, labels, _, weights = AugmentedDataset(augmented_dir).arrays()
    ds = load_prepared(prepared_dir)
    model = train_classifier(images, labels, ds.num_classes, spec, seed,
                             augment=classical_augmentation(cfg.classical, seed), device=device,
                             sample_weights=weights, make_model=resolve_model(cfg.evaluate.model, "evaluate.model"))
    split = "val" if len(ds.subset("val")[1]) else "test"
    x, y = ds.subset(split)
    if not len(x):
        raise DataError(f"{prepared_dir}: no val or test images to score the classifier on; set "
                         "prepare.val_fraction > 0 or prepare.test_dir")
    acc = float((predict_proba(model, x, device).argmax(1) == y).mean())
    return {"accuracy": acc, "scored_on": split, "scored_images": int(len(y)), "train_images": int(len(images)),
            "seed": int(seed)}


@flow(name="downstream-training")
def downstream_training(params_path: str = "params.yaml", workdir: str = ".", steps: int | None = None,
                        seed: int | None = None, overrides: dict[str, Any] | None = None) -> dict:
    """``steps``: training steps (``None``: ``evaluate.steps``); ``seed``: ``None`` = the first of
    ``evaluate.seeds`` (the config's, so a run is reproduced from params.yaml alone). ``overrides``
    (``{"filter.top_fraction": 0.3}``): for the pipeline and the same for the classifier's recipe."""
    result: AugmentResult = augment_pipeline(params_path=params_path, workdir=workdir, evaluate=False,
                                             overrides=overrides)  # subflow
    params_file = under_root(params_path, workdir)
    # Pass paths (small), never arrays, between tasks; the task reads the merged set itself.
    out = train_on_augmented(result.augmented_dir, Paths().rooted(workdir).prepared, params_file, steps, seed,
                             result.overrides)
    get_run_logger().info("downstream %s accuracy %.4f, trained on %d images (%d synthetic, generator %s)",
                          out["scored_on"], out["accuracy"], out["train_images"], result.synthetic_images,
                          result.checkpoint_sha256[:12])
    return {**out, "synthetic_images": result.synthetic_images, "checkpoint_sha256": result.checkpoint_sha256}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Example: the pipeline as a subflow, then a classifier trained on its output")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--workdir", default=".")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: evaluate.steps)")
    ap.add_argument("--seed", type=int, default=None, help="classifier seed (default: the first of evaluate.seeds)")
    ap.add_argument("--set", "-S", dest="overrides", action="append", default=[], metavar="GROUP.KEY=VALUE",
                    help="override one parameter for this run (repeatable), e.g. -S filter.top_fraction=0.3")
    a = ap.parse_args(argv)
    overrides = parse_set_args(ap, a.overrides)
    try:
        load_config(under_root(a.params, a.workdir), overrides or None)  # a bad param: one line, before any server
        out = downstream_training(params_path=a.params, workdir=a.workdir, steps=a.steps, seed=a.seed,
                                  overrides=overrides or None)
    except AugmentError as exc:
        print(f"{ap.prog}: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
