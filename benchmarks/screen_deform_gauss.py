"""Screen: new deformations drawn from a per-class Gaussian over the observed fields.

``generate.sampler: deform`` (augment/models/deform.py, the default) warps a labelled image by a
field *observed* between two other labelled images of its class, moved ``U(0.3, 1)`` along it.
With 5 labelled images a class has only 20 such fields, so every sample of the class repeats one of
20 deformations. Hauberg et al. (AISTATS 2016) instead fit a distribution over a class's
deformations and draw new ones from it. ``benchmarks/screen_learned_deformations.py`` (``gauss25``)
tried that before the sampler was built, with its own registration and a shrunk covariance, and it
lost on the 8x8 digits. This screen measures it again with the library's registration
(not a copy), outside the pipeline: per class a Gaussian ``N(mean, S)`` over its fields (``S``
the fields' sample covariance: with fewer fields than the lattice has coordinates, a draw stays in
their span, ``mean + sum_j z_j (v_j - mean) / sqrt(P - 1)``, ``z ~ N(0, I)``), and

* ``obs25``: the default sampler's samples (observed fields, share 0.25) -- the reference;
* ``gauss25``: an image of the class warped by a Gaussian draw scaled by ``U(0.3, 1)``, as the
  observed fields are (share 0.25);
* ``gaussfull25``: the same without the ``U(0.3, 1)`` shrink (the draws' full spread);
* ``gauss50``: ``gauss25``'s samples at share 0.5.

Each is compared with ``b`` (labelled images + classical augmentation: the utility benchmark's (b),
evaluate's recipe), 200 samples per class. Labelled and test images are drawn as
``benchmarks/utility.py`` draws them (``--data-seed``); the test images only score: no registration,
sampler or classifier sees them. ``--gen-seed`` seeds the pairs drawn and the samples.

    python benchmarks/screen_deform_gauss.py --setting digits8_5 --gen-seed 0 --json R0.json
    python benchmarks/screen_deform_gauss.py --aggregate R0.json R1.json --out docs/screens/deform_gauss.md
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import screen_deform_variants as DV  # noqa: E402
import screens as S  # noqa: E402

VARIANTS = ["b", "obs25", "gauss25", "gaussfull25", "gauss50"]
PER_CLASS = 200


def gaussian_samples(rx: np.ndarray, ry: np.ndarray, k: int, per_class: int, grid: int, max_pairs: int, seed: int,
                     shrink: bool) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` samples per class: a labelled image of the class warped by a draw from the
    Gaussian over the class's registered fields (module docstring), times ``U(0.3, 1)`` when
    ``shrink``. Seeded by ``seed`` (the pairs and the draws)."""
    import torch

    from augment.models.deform import MIN_FRACTION, fit_fields, warp

    x = torch.from_numpy(rx).float().permute(0, 3, 1, 2) / 127.5 - 1.0
    y = torch.from_numpy(ry).long()
    pairs, fields = fit_fields(x, y, k, grid, max_pairs, seed)
    pair_class = y[pairs[:, 0]]
    g = torch.Generator().manual_seed(seed)
    out, labels = [], []
    for c in range(k):
        f = fields[pair_class == c].reshape(int((pair_class == c).sum()), -1)  # (P, 2 * grid * grid)
        own = torch.nonzero(y == c).flatten()
        mean = f.mean(0)
        dev = (f - mean) / max(len(f) - 1, 1) ** 0.5
        z = torch.randn(per_class, len(f), generator=g)
        v = (mean + z @ dev).reshape(per_class, 2, grid, grid)
        t = MIN_FRACTION + (1 - MIN_FRACTION) * torch.rand(per_class, generator=g) if shrink else torch.ones(per_class)
        src = own[torch.randint(len(own), (per_class,), generator=g)]
        out.append(warp(x[src], v * t[:, None, None, None]).clamp(-1.0, 1.0))
        labels.append(torch.full((per_class,), c, dtype=torch.long))
    return DV._to_uint8(torch.cat(out)), torch.cat(labels).numpy()


def run(setting: str, gen_seed: int, clf_seeds: list[int], overrides: dict, data_seed: int, grid_png: str | None
        ) -> dict:
    rx, ry, tx, ty, names, cfg = S.screen_inputs(setting, data_seed, overrides)  # tx, ty: scoring only
    k = len(names)
    gen = cfg.generate
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    syn = {"obs25": DV.samples(rx, ry, k, PER_CLASS, gen.deform_scale, False, grid=gen.deform_grid,
                               max_pairs=gen.deform_pairs, seed=gen_seed),
           "gauss25": gaussian_samples(rx, ry, k, PER_CLASS, gen.deform_grid, gen.deform_pairs, gen_seed, True),
           "gaussfull25": gaussian_samples(rx, ry, k, PER_CLASS, gen.deform_grid, gen.deform_pairs, gen_seed, False)}
    seconds["samples"] = round(time.perf_counter() - t0, 1)
    if grid_png:
        S.save_sample_grid(rx, ry, names, [syn[v] for v in ("obs25", "gauss25", "gaussfull25")], grid_png)
    plan = {"b": (None, None), "obs25": (syn["obs25"], 0.25), "gauss25": (syn["gauss25"], 0.25),
            "gaussfull25": (syn["gaussfull25"], 0.25), "gauss50": (syn["gauss25"], 0.5)}
    acc_by = S.plan_accuracies(cfg, rx, ry, tx, ty, k, clf_seeds, plan, seconds)
    return {"setting": setting, "gen_seed": gen_seed, "clf_seeds": clf_seeds, "family": cfg.evaluate.model,
            "accepted": int(PER_CLASS * k), "params": {"grid": gen.deform_grid, "pairs": gen.deform_pairs,
                                                       "scale": gen.deform_scale, "data_seed": data_seed},
            "accuracy": acc_by, "seconds": seconds}


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    S.write_paired_report(out, "Screen: learned deformations -- new fields from a per-class Gaussian", files,
                          command, note, VARIANTS[1:],
                          f"every variant adds {PER_CLASS} samples per class at share 0.25 but gauss50 (0.5).",
                          lambda r: f"{r['setting']} draw {r['params']['data_seed']} seed {r['gen_seed']}: "
                                    f"{r['seconds']}")


def main(argv: list[str] | None = None) -> int:
    return S.screen_main(argv, __doc__, "screen_deform_gauss.py", ROOT / "docs" / "screens" / "deform_gauss.md",
                         S.sample_screen_args,
                         lambda a, o: run(a.setting, a.gen_seed, a.clf_seeds, o, a.data_seed, a.grid_png),
                         aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
