"""Filter ablation: which filters make the synthetic data help?

For each filter set -- no filter, each filter alone, all filters -- the same number of synthetic
samples per class is drawn (the count the merge stage chose; when it chose none, every sample
accepted by all filters), from that set's accepted pool: by calibrated discriminator rank when the
discriminator is in the set, otherwise in a seeded random order. Each is trained as variant (d)
(real + classical + synthetic at the same share) over ``evaluate.ablation_seeds``, next to
variant (b) (real + classical) with the same seeds and steps, and scored on the TEST split --
this is part of the evaluate stage, the only place test images are used.
A sequential filter (``coverage``) picked among what the filters before it accepted, so its
"alone" set still carries their choice.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from augment.config import FILTER_NAMES, ClassicalConfig, EvaluateConfig
from augment.data.prepare import PreparedDataset


def filter_sets(names: list[str]) -> dict[str, list[str]]:
    sets: dict[str, list[str]] = {"no filter": []}
    for n in names:
        sets[f"{n} only"] = [n]
    if len(names) > 1:
        sets["all filters"] = list(names)
    return sets


def pick_for_set(decisions: dict[str, np.ndarray], names: list[str], counts: np.ndarray, seed: int) -> np.ndarray:
    """Decision rows for one filter set: ``counts[c]`` per class from its accepted pool."""
    from augment.selection.quota import select_per_class

    labels = decisions["labels"]
    pool = np.ones(len(labels), bool)
    for n in names:
        pool &= decisions[f"accept_{n}"].astype(bool)
    if "discriminator" in names:
        rank = decisions["discriminator"].astype(np.float64)
    else:
        rank = np.random.default_rng(np.random.SeedSequence([seed, 4242])).random(len(labels))
    return select_per_class(labels, pool, rank, counts)


def run_ablation(ds: PreparedDataset, gen_dir, decisions: dict[str, np.ndarray], merge_summary: dict[str, Any],
                 cfg: EvaluateConfig, progress: bool = False,
                 real: tuple[np.ndarray, np.ndarray] | None = None,
                 classical: ClassicalConfig = ClassicalConfig()) -> dict[str, Any]:
    from augment.core.device import resolve_device
    from augment.downstream.classifier import predict_proba
    from augment.evaluation.evaluate import summarise, train_variant
    from augment.selection.merge import load_rows_images

    names = [n for n in FILTER_NAMES if f"accept_{n}" in decisions]
    k = ds.num_classes
    real_x, real_y = real if real is not None else ds.subset("train")
    test_x, test_y = ds.subset("test")  # final scoring only
    device = resolve_device(cfg.device)
    merged = np.array([merge_summary["per_class"][n]["synthetic"] for n in ds.class_names])
    if merged.sum() == 0:
        merged = np.bincount(decisions["labels"][decisions["accepted"].astype(bool)], minlength=k)
    share = merge_summary.get("synthetic_share") or cfg.ablation_share
    ecfg = replace(cfg, steps=cfg.ablation_steps, synthetic_share=share)
    rows: dict[str, Any] = {}
    configs: list[tuple[str, list[str] | None]] = [("classical (b)", None)] + list(filter_sets(names).items())
    for label, members in configs:
        accs = []
        n_syn = 0
        if members is not None:
            pick = pick_for_set(decisions, members, merged, cfg.ablation_seeds[0])
            syn_x = load_rows_images(gen_dir, decisions, pick)
            syn_y = decisions["labels"][pick]
            n_syn = len(pick)
        for seed in cfg.ablation_seeds:
            if members is None:
                model = train_variant("classical", real_x, real_y, real_x[:0], real_y[:0], k, ecfg, seed, classical)
            else:
                model = train_variant("combined", real_x, real_y, syn_x, syn_y, k, ecfg, seed, classical)
            accs.append(float((predict_proba(model, test_x, device).argmax(1) == test_y).mean()))
        rows[label] = {**summarise(accs), "per_seed": accs, "synthetic": int(n_syn), "filters": members}
        if progress:
            print(f"ablation {label}: {rows[label]['mean']:.4f} ± {rows[label]['std']:.4f}")
    return {"seeds": list(cfg.ablation_seeds), "steps": cfg.ablation_steps, "synthetic_share": share,
            "per_class_count": [int(c) for c in merged], "rows": rows}


def format_ablation(ab: dict[str, Any]) -> str:
    base = ab["rows"]["classical (b)"]["mean"]
    lines = [f"Filter ablation: variant (d) real + classical + synthetic (share {ab['synthetic_share']}), "
             f"{len(ab['seeds'])} seeds x {ab['steps']} steps; test accuracy",
             f"{'filters':<22} {'synthetic':>9} {'accuracy':>16} {'Δ vs (b)':>9}"]
    for label, r in ab["rows"].items():
        lines.append(f"{label:<22} {r['synthetic']:>9} {r['mean']:.4f} ± {r['std']:.4f} {r['mean'] - base:>+9.4f}")
    return "\n".join(lines)
