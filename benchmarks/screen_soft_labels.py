"""Screen: soft labels for the synthetic images (teacher-ensemble distillation) vs hard labels.

Does the harm or gain of the accepted samples come from their labels? Runs the pipeline's
prepare, train, generate and filter stages (default ``params.yaml``, crossfit mode as
``benchmarks/utility.py`` sets it up, ``--set`` overrides) on one utility setting and one
generator seed, then trains evaluate's classifier recipe (``evaluate.model`` unless ``--family``)
on:

* ``b``: the labelled images + classical augmentation (the utility benchmark's (b));
* ``hard25``: + every accepted sample at share 0.25 with its conditioning label;
* ``soft25`` / ``soft50``: + the same samples at share 0.25 / 0.5 with soft labels, the mean class
  probabilities of a teacher ensemble (``--teachers`` SmallCNNs with evaluate's recipe, trained on
  the labelled images only, seeds 100+);
* ``hard50``, ``kdclassical50``: the same at share 0.5 (added after the first runs; a run without
  them shows "—" there);
* ``kdclassical25``: the control. The same teacher's soft labels on as many classically augmented
  copies of the labelled images, at share 0.25: if this matches ``soft25``, a gain is distillation,
  not the synthetic data.

The test images are used only to score (they never reach the stages, the teachers or the
students). One JSON per run; ``--aggregate`` pools runs into a markdown table of the paired
differences to ``b`` over every (generator seed x classifier seed) pair with 95 % t-intervals.

    python benchmarks/screen_soft_labels.py --setting mnist28_10 --gen-seed 0 --json R0.json
    python benchmarks/screen_soft_labels.py --aggregate R0.json R1.json --out docs/screens/soft_labels.md
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

VARIANTS = ["b", "hard25", "hard50", "soft25", "soft50", "kdclassical25", "kdclassical50"]


def run(setting: str, gen_seed: int, clf_seeds: list[int], teachers: int, family: str | None,
        overrides: dict) -> dict:
    import torch

    from augment.data.classical import augment_batch, classical_augmentation
    from augment.downstream.classifier import predict_proba, train_downstream
    from augment.downstream.models import resolve_model
    from augment.evaluation.evaluate import classifier_spec

    with S.filtered_run(setting, gen_seed, overrides, "screen-soft") as fr:
        pass  # the arrays stay; the scratch folder goes
    cfg, rx, ry, tx, ty, k, sx, sy, seconds = fr.cfg, fr.rx, fr.ry, fr.tx, fr.ty, fr.num_classes, fr.sx, fr.sy, fr.seconds
    dev = torch.device("cpu")
    recipe = classifier_spec(cfg.evaluate)
    make = resolve_model(family or cfg.evaluate.model, "--family")

    def acc(m) -> float:
        return float((predict_proba(m, tx, dev).argmax(1) == ty).mean())

    t0 = time.perf_counter()
    team = [train_downstream(rx, ry, k, recipe, 100 + s, dev, cfg.classical) for s in range(teachers)]
    p_syn = np.mean([predict_proba(t, sx, dev) for t in team], 0)
    aug = classical_augmentation(cfg.classical, 10_000 + gen_seed)
    reps = len(sx) // len(rx) + 1
    cx = np.concatenate([augment_batch(aug, rx) for _ in range(reps)])[: len(sx)]
    p_cls = np.mean([predict_proba(t, cx, dev) for t in team], 0)
    p_test = np.mean([predict_proba(t, tx, dev) for t in team], 0)
    out = {"teacher_single": [acc(t) for t in team], "teacher_ensemble": float((p_test.argmax(1) == ty).mean()),
           "teacher_agrees_with_label": float((p_syn.argmax(1) == sy).mean()),
           "teacher_mean_label_probability": float(p_syn[np.arange(len(sy)), sy].mean())}
    seconds["teachers"] = round(time.perf_counter() - t0, 1)

    def fit(s, syn_x=None, syn_y=None, share=None):
        return train_downstream(rx, ry, k, recipe, s, dev, cfg.classical, syn_x, syn_y, share, make)

    variants = {
        "b": lambda s: fit(s),
        "hard25": lambda s: fit(s, sx, sy, 0.25),
        "soft25": lambda s: fit(s, sx, p_syn, 0.25),
        "soft50": lambda s: fit(s, sx, p_syn, 0.5),
        "kdclassical25": lambda s: fit(s, cx, p_cls, 0.25),
        "kdclassical50": lambda s: fit(s, cx, p_cls, 0.5),
        "hard50": lambda s: fit(s, sx, sy, 0.5),
    }
    acc_by = {}
    for name in VARIANTS:
        t0 = time.perf_counter()
        acc_by[name] = [acc(variants[name](s)) for s in clf_seeds]
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {np.mean(acc_by[name]):.4f}", flush=True)
    return {"setting": setting, "gen_seed": gen_seed, "clf_seeds": clf_seeds, "family": family or cfg.evaluate.model,
            "accepted": int(len(sx)), "accuracy": acc_by, **out, "seconds": seconds}


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    runs = [json.loads(Path(f).read_text()) for f in files]
    lines = S.report_header("Screen: soft labels for the synthetic images", files, runs, command, note)
    lines += S.paired_header(["setting", "classifier", "overrides", "gen seeds", "accepted",
                              "teacher single / ensemble", "b"], VARIANTS[1:],
                             "Teacher: the ensemble that gives the soft labels (mean of its members' test accuracy / "
                             "the ensemble's).")
    for key, rs in S.group_runs(runs):
        single = np.mean([a for r in rs for a in r["teacher_single"]])
        ens = np.mean([r["teacher_ensemble"] for r in rs])
        lines.append(S.paired_row(key, rs, VARIANTS[1:], [f"{100 * single:.2f} / {100 * ens:.2f}"]))
    lines += ["", "Teacher agreement with the conditioning label on the accepted samples: "
              + ", ".join(f"{r['setting']} seed {r['gen_seed']}: {r['teacher_agrees_with_label']:.3f} "
                          f"(mean probability of the label {r['teacher_mean_label_probability']:.3f})" for r in runs),
              ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    def add_args(ap) -> None:
        ap.add_argument("--teachers", type=int, default=5)
        ap.add_argument("--family", default=None, help="the student classifier (default: evaluate.model)")

    return S.screen_main(argv, __doc__, "screen_soft_labels.py", ROOT / "docs" / "screens" / "soft_labels.md", add_args,
                         lambda a, o: run(a.setting, a.gen_seed, a.clf_seeds, a.teachers, a.family, o), aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
