"""Screen: does an uneven acceptance hurt by tilting the classifier's class prior?

The filters accept very different numbers per class: on mnist28_10 with the residual sampler,
59-79 samples of digit 1 and 0-5 of digit 2. At a global share of 0.25, a quarter of every batch
is synthetic, so digit 1 is drawn about 1.7x as often as in the real set and digit 2 0.75x as
often. A classifier trained so leans to the favoured classes on a balanced test set. This screen
compares, on the same accepted samples and with evaluate's recipe:

* ``b``: labelled images + classical augmentation (the utility benchmark's (b));
* ``global25`` / ``global50``: the accepted samples at share 0.25 / 0.5 of every batch, as the
  pipeline draws them today (``mixing_weights`` without labels);
* ``balanced25`` / ``balanced50``: the same share *within each class*: every class keeps its real
  draw mass and its synthetic images take the share of it (``train_downstream(...,
  class_balanced=True)``); a class with no accepted sample stays all real.

Per variant it records the test accuracy per classifier seed, the per-class test accuracy (mean
over seeds) and how often each class is predicted. The pipeline's prepare, train, generate and
filter stages run as ``benchmarks/utility.py`` runs them (crossfit mode, default ``params.yaml``,
``--set`` overrides). The test images are used only to score.

    python benchmarks/screen_class_balance.py --setting mnist28_10 --gen-seed 0 --json R0.json
    python benchmarks/screen_class_balance.py --aggregate R0.json R1.json --out docs/screens/class_balance.md
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import screens as S  # noqa: E402

VARIANTS = {"b": None, "global25": (0.25, False), "balanced25": (0.25, True),
            "global50": (0.5, False), "balanced50": (0.5, True)}


def run(setting: str, gen_seed: int, clf_seeds: list[int], overrides: dict) -> dict:
    import torch

    from augment.downstream.classifier import predict_proba, train_downstream
    from augment.downstream.models import resolve_model
    from augment.evaluation.evaluate import classifier_spec

    with S.filtered_run(setting, gen_seed, overrides, "screen-balance") as fr:
        cfg, rx, ry, tx, ty, k, sx, sy, seconds = (fr.cfg, fr.rx, fr.ry, fr.tx, fr.ty, fr.num_classes, fr.sx,
                                                   fr.sy, fr.seconds)
    dev = torch.device("cpu")
    recipe = classifier_spec(cfg.evaluate)
    make = resolve_model(cfg.evaluate.model, "evaluate.model")
    acc_by, per_class, predicted = {}, {}, {}
    for name, how in VARIANTS.items():
        t0 = time.perf_counter()
        accs, pcs, preds = [], [], []
        for s in clf_seeds:
            extra = {} if how is None else {"syn_x": sx, "syn_y": sy, "share": how[0], "class_balanced": how[1]}
            m = train_downstream(rx, ry, k, recipe, s, dev, cfg.classical, make_model=make, **extra)
            pred = predict_proba(m, tx, dev).argmax(1)
            accs.append(float((pred == ty).mean()))
            pcs.append([float((pred[ty == c] == c).mean()) for c in range(k)])
            preds.append((np.bincount(pred, minlength=k) / len(pred)).tolist())
        acc_by[name] = accs
        per_class[name] = np.mean(pcs, axis=0).tolist()
        predicted[name] = np.mean(preds, axis=0).tolist()
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {np.mean(accs):.4f}", flush=True)
    return {"setting": setting, "gen_seed": gen_seed, "clf_seeds": clf_seeds, "family": cfg.evaluate.model,
            "accepted": int(len(sx)), "accepted_per_class": np.bincount(sy, minlength=k).tolist(),
            "test_per_class": np.bincount(ty, minlength=k).tolist(), "accuracy": acc_by,
            "per_class_accuracy": per_class, "predicted_share": predicted, "seconds": seconds}


def _tilt(r: dict, name: str) -> float:
    """Total variation distance between the predicted and the true class frequencies of the test set."""
    true = np.asarray(r["test_per_class"], float)
    return float(0.5 * np.abs(np.asarray(r["predicted_share"][name]) - true / true.sum()).sum())


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    runs = [json.loads(Path(f).read_text()) for f in files]
    names = list(VARIANTS)
    lines = S.report_header("Screen: a global synthetic share or one within each class", files, runs, command,
                            note)
    lines += S.paired_header(["setting", "classifier", "overrides", "gen seeds", "accepted per class", "b"], names[1:])
    for (setting, family, sets), rs in S.group_runs(runs):
        b = [a for r in rs for a in r["accuracy"]["b"]]
        lines.append(f"| {setting} | {family} | {sets if sets != '{}' else 'default'} | "
                     f"{','.join(str(r['gen_seed']) for r in rs)} | "
                     f"{'; '.join(' '.join(map(str, r['accepted_per_class'])) for r in rs)} | "
                     f"{100 * np.mean(b):.2f} | " + " | ".join(S.paired_cells(rs, names[1:])) + " |")
    lines += ["", "How far the predictions lean: total variation distance between the predicted and the true "
              "class frequencies of the test set (%, mean over classifier seeds), per run:", "",
              "| setting | overrides | gen seed | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for r in runs:
        sets = json.dumps(r["meta"].get("set", {}))
        lines.append(f"| {r['setting']} | {sets if sets != '{}' else 'default'} | {r['gen_seed']} | "
                     + " | ".join(f"{100 * _tilt(r, n):.2f}" for n in names) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    return S.screen_main(argv, __doc__, "screen_class_balance.py", ROOT / "docs" / "screens" / "class_balance.md",
                         lambda ap: None, lambda a, o: run(a.setting, a.gen_seed, a.clf_seeds, o), aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
