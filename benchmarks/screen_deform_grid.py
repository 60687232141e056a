"""Screen: how fine should the learned deformations' lattice be (``generate.deform_grid``)?

``generate.sampler: deform`` (augment/models/deform.py, the default) registers pairs of labelled
images of a class by displacement fields on a ``deform_grid x deform_grid`` lattice (6 by
default, bicubic to full size) and warps a labelled image by another pair's field. The lattice
sets which deformations exist: a coarse one only bends a whole stroke, a fine one can also move a
loop or a serif on its own -- and, on an 8x8 image, a 6x6 lattice is already nearly one control
point per pixel, where registration can match pixels rather than shapes. The lattice was never
screened (docs/screens/deform_variants.md screened scale, count, composition and pooling at 6).
This screen measures, with the library's own registration and sampler (not a copy), outside the
pipeline, 200 samples per class added at share 0.25 for lattices of

* ``g3``, ``g4``, ``g6`` (the default), ``g10`` control points per side,

each against ``b`` (labelled images + classical augmentation: evaluate's recipe, the utility
benchmark's (b)), and ``g6`` also at share 0.5 (``g6s50``: the pipeline's most common choice).
Labelled and test images are drawn as ``benchmarks/utility.py`` draws them (``--data-seed``); the
test images only score: no registration, sampler or classifier sees them. ``--gen-seed`` seeds the
pairs drawn and the samples.

    python benchmarks/screen_deform_grid.py --setting digits8_5 --gen-seed 0 --json R0.json
    python benchmarks/screen_deform_grid.py --aggregate R0.json R1.json --out docs/screens/deform_grid.md
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import screen_deform_variants as DV  # noqa: E402
import screens as S  # noqa: E402

GRIDS = {"g3": 3, "g4": 4, "g6": 6, "g10": 10}
VARIANTS = ["b", *GRIDS, "g6s50"]


def run(setting: str, gen_seed: int, clf_seeds: list[int], overrides: dict, data_seed: int) -> dict:
    rx, ry, tx, ty, names, cfg = S.screen_inputs(setting, data_seed, overrides)  # tx, ty: scoring only
    k = len(names)
    gen = cfg.generate
    seconds: dict[str, float] = {}
    syn = {}
    for name, grid in GRIDS.items():
        t0 = time.perf_counter()
        syn[name] = DV.samples(rx, ry, k, 200, gen.deform_scale, False, grid=grid, max_pairs=gen.deform_pairs,
                               seed=gen_seed)
        seconds[f"samples_{name}"] = round(time.perf_counter() - t0, 1)
    plan = {"b": (None, None), **{name: (syn[name], 0.25) for name in GRIDS}, "g6s50": (syn["g6"], 0.5)}
    acc_by = S.plan_accuracies(cfg, rx, ry, tx, ty, k, clf_seeds, plan, seconds)
    return {"setting": setting, "gen_seed": gen_seed, "clf_seeds": clf_seeds, "family": cfg.evaluate.model,
            "accepted": int(200 * k), "params": {"grids": GRIDS, "pairs": gen.deform_pairs,
                                                 "scale": gen.deform_scale, "data_seed": data_seed},
            "accuracy": acc_by, "seconds": seconds}


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    S.write_paired_report(out, "Screen: learned deformations -- the lattice (generate.deform_grid)", files, command,
                          note, VARIANTS[1:], "every variant adds 200 samples per class at share 0.25 but g6s50 (0.5).",
                          lambda r: f"{r['setting']} draw {r['params']['data_seed']} seed {r['gen_seed']}: {r['seconds']}")


def _args(ap) -> None:
    ap.add_argument("--data-seed", type=int, default=0)


def main(argv: list[str] | None = None) -> int:
    return S.screen_main(argv, __doc__, "screen_deform_grid.py", ROOT / "docs" / "screens" / "deform_grid.md",
                         _args, lambda a, o: run(a.setting, a.gen_seed, a.clf_seeds, o, a.data_seed), aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
