"""Screen: does a larger synthetic share than crossfit's largest candidate (0.5) help, and for which classifier?

The cross-fitted choice picks the synthetic batch share among ``crossfit.shares`` = [0, 0.25, 0.5].
On mnist28_10 it picked the largest, 0.5, on 11 of 13 runs (docs/results.md), so the grid may stop
below the best share. A larger candidate helps only if the gain keeps rising past 0.5 -- and a
share that suits the pipeline's SmallCNN but not another classifier would hurt a user who trains
their own on the merged folder. This screen measures, outside the pipeline, with the library's own
deform sampler at the ``params.yaml`` defaults (200 samples per class, as the pipeline merges):

* ``d25``, ``d50``, ``d75``: those samples added at share 0.25, 0.5 and 0.75,

each against ``b`` (labelled images + classical augmentation, evaluate's recipe) for the
classifier ``--set evaluate.model=...`` names. Labelled and test images are drawn as
``benchmarks/utility.py`` draws them (``--data-seed``); the test images only score.

    python benchmarks/screen_share_ceiling.py --setting mnist28_10 --gen-seed 0 --json R0.json
    python benchmarks/screen_share_ceiling.py --setting mnist28_10 --set evaluate.model='"lenet"' --json R1.json
    python benchmarks/screen_share_ceiling.py --aggregate R0.json R1.json --out docs/screens/share_ceiling.md
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import screen_deform_variants as DV  # noqa: E402
import screens as S  # noqa: E402

SHARES = {"d25": 0.25, "d50": 0.5, "d75": 0.75}
VARIANTS = ["b", *SHARES]


def run(setting: str, gen_seed: int, clf_seeds: list[int], overrides: dict, data_seed: int) -> dict:
    rx, ry, tx, ty, names, cfg = S.screen_inputs(setting, data_seed, overrides)  # tx, ty: scoring only
    k = len(names)
    gen = cfg.generate
    seconds = {}
    t0 = time.perf_counter()
    syn = DV.samples(rx, ry, k, gen.n_per_class, gen.deform_scale, False, grid=gen.deform_grid,
                     max_pairs=gen.deform_pairs, seed=gen_seed)
    seconds["samples"] = round(time.perf_counter() - t0, 1)
    plan = {"b": (None, None), **{v: (syn, share) for v, share in SHARES.items()}}
    acc_by = S.plan_accuracies(cfg, rx, ry, tx, ty, k, clf_seeds, plan, seconds)
    return {"setting": setting, "gen_seed": gen_seed, "clf_seeds": clf_seeds, "family": cfg.evaluate.model,
            "accepted": int(gen.n_per_class * k), "params": {"grid": gen.deform_grid, "pairs": gen.deform_pairs,
                                                             "scale": gen.deform_scale, "data_seed": data_seed},
            "accuracy": acc_by, "seconds": seconds}


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    S.write_paired_report(out, "Screen: a synthetic share above crossfit's largest candidate", files, command, note,
                          VARIANTS[1:], "dNN: the default deform sampler's samples at share 0.NN.",
                          lambda r: f"{r['setting']} {r['family']} seed {r['gen_seed']}: {r['params']}, {r['seconds']}")


def _args(ap) -> None:
    ap.add_argument("--data-seed", type=int, default=0)


def main(argv: list[str] | None = None) -> int:
    return S.screen_main(argv, __doc__, "screen_share_ceiling.py", ROOT / "docs" / "screens" / "share_ceiling.md",
                         _args, lambda a, o: run(a.setting, a.gen_seed, a.clf_seeds, o, a.data_seed), aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
