"""Screen: learned deformations without folds.

``generate.sampler: deform`` (augment/models/deform.py, the default) registers pairs of labelled
images of a class by a smooth displacement field on a 6x6 lattice and warps a third image by it,
moved ``U(0.3, 1)`` along it. Registration only asks that the warped image match the target (plus
a small penalty on the field's size), so nothing keeps the warp one-to-one: where neighbouring
control points move further apart than their spacing, the warp *folds* -- it reads two places of
the source into one and mirrors a stroke. Such a warp is no longer a shape change of the class
(Hauberg et al. 2016 draw diffeomorphisms, which cannot fold). On mnist28_10 (labelled draw 0,
200 pairs, seed 0) 88 % of the fields fold at their full length (the warp's Jacobian determinant
falls to 0 or below somewhere), 65 % at 0.65 of it, 14 % at 0.3; on digits8_5 78 %, 36 %, 0.5 %.

This screen measures what the folds cost, with the library's registration (not a copy), outside
the pipeline:

* ``obs25``: the default sampler's samples (share 0.25) -- the reference;
* ``cap25``: each observed field first shortened to the longest fraction of it (at most 1) whose
  warp does not fold (Jacobian determinant above ``MIN_DET`` everywhere), then moved ``U(0.3, 1)``
  along that, as the default is;
* ``cap50``: ``cap25``'s samples at share 0.5;
* ``drop25``: the fields that fold before half their length left out, the rest as the default.

Each is compared with ``b`` (labelled images + classical augmentation: the utility benchmark's (b),
evaluate's recipe), 200 samples per class. Labelled and test images are drawn as
``benchmarks/utility.py`` draws them (``--data-seed``); the test images only score: no registration,
sampler or classifier sees them. ``--gen-seed`` seeds the pairs drawn and the samples.

    python benchmarks/screen_deform_folds.py --setting mnist28_10 --gen-seed 0 --json R0.json
    python benchmarks/screen_deform_folds.py --aggregate R0.json R1.json --out docs/screens/deform_folds.md
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

VARIANTS = ["b", "obs25", "cap25", "cap50", "drop25"]
PER_CLASS = 200
MIN_DET = 0.1  # a warp's Jacobian determinant must stay above this everywhere (0: the fold itself)
FRACTIONS = np.linspace(0.05, 1.0, 20)  # the lengths tried, as fractions of a field


def min_jacobian(v, size: tuple[int, int]):
    """Per field of ``v`` (N, 2, G, G; normalised ``grid_sample`` coordinates), the smallest
    Jacobian determinant of the sampling map ``p -> p + u(p)`` over the image's pixels (``u``: the
    field bicubic to ``size``, as :func:`augment.models.deform.warp` interpolates it), by finite
    differences in pixel units. At or below 0 the warp folds."""
    import torch.nn.functional as F

    h, w = size
    u = F.interpolate(v, size=(h, w), mode="bicubic", align_corners=True)
    ux, uy = u[:, 0] * (w / 2), u[:, 1] * (h / 2)  # pixels
    a = 1 + (ux[:, :, 1:] - ux[:, :, :-1])[:, :-1, :]
    b = (ux[:, 1:, :] - ux[:, :-1, :])[:, :, :-1]
    c = (uy[:, :, 1:] - uy[:, :, :-1])[:, :-1, :]
    d = 1 + (uy[:, 1:, :] - uy[:, :-1, :])[:, :, :-1]
    return (a * d - b * c).amin(dim=(1, 2))


def fold_free_fraction(fields, size: tuple[int, int]):
    """Per field, the longest fraction in ``FRACTIONS`` up to which every tried fraction's warp
    stays above ``MIN_DET`` (0 when even the shortest folds)."""
    import torch

    ok = torch.stack([min_jacobian(fields * float(t), size) > MIN_DET for t in FRACTIONS], 1)  # (P, T)
    run = torch.cumprod(ok.int(), 1)  # 1 while every shorter fraction passed
    n = run.sum(1)
    return torch.where(n > 0, torch.as_tensor(FRACTIONS, dtype=fields.dtype)[(n - 1).clamp_min(0)],
                       torch.zeros((), dtype=fields.dtype))


def samples(rx: np.ndarray, ry: np.ndarray, k: int, per_class: int, grid: int, max_pairs: int, seed: int,
            mode: str) -> tuple[np.ndarray, np.ndarray, float]:
    """``per_class`` samples per class from the library's deform sampler with its fields capped
    (``mode`` "cap": each shortened to :func:`fold_free_fraction`) or the folding ones dropped
    ("drop": fraction < 0.5 left out); and the mean fraction kept. Seeded as the default sampler."""
    import torch

    from augment.models.deform import DeformSampler, fit_fields

    x = torch.from_numpy(rx).float().permute(0, 3, 1, 2) / 127.5 - 1.0
    y = torch.from_numpy(ry).long()
    pairs, fields = fit_fields(x, y, k, grid, max_pairs, seed)
    frac = fold_free_fraction(fields, tuple(x.shape[2:]))
    if mode == "cap":
        fields = fields * frac[:, None, None, None]
    else:
        keep = frac >= 0.5
        pairs, fields = pairs[keep], fields[keep]
    sampler = DeformSampler(DV._NoFallback(x.shape[1:]), x, y, pairs, fields, k, 1.0)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(k).repeat_interleave(per_class)
    out = [sampler.sample(labels[i : i + 500], g) for i in range(0, len(labels), 500)]
    return DV._to_uint8(torch.cat(out)), labels.numpy(), float(frac.mean())


def run(setting: str, gen_seed: int, clf_seeds: list[int], overrides: dict, data_seed: int, grid_png: str | None
        ) -> dict:
    rx, ry, tx, ty, names, cfg = S.screen_inputs(setting, data_seed, overrides)  # tx, ty: scoring only
    k = len(names)
    gen = cfg.generate
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    common = dict(grid=gen.deform_grid, max_pairs=gen.deform_pairs, seed=gen_seed)
    cx, cy, cap_mean = samples(rx, ry, k, PER_CLASS, mode="cap", **common)
    dx, dy, _ = samples(rx, ry, k, PER_CLASS, mode="drop", **common)
    syn = {"obs25": DV.samples(rx, ry, k, PER_CLASS, gen.deform_scale, False, **common), "cap25": (cx, cy),
           "drop25": (dx, dy)}
    seconds["samples"] = round(time.perf_counter() - t0, 1)
    if grid_png:
        S.save_sample_grid(rx, ry, names, [syn[v] for v in ("obs25", "cap25", "drop25")], grid_png)
    plan = {"b": (None, None), "obs25": (syn["obs25"], 0.25), "cap25": (syn["cap25"], 0.25),
            "cap50": (syn["cap25"], 0.5), "drop25": (syn["drop25"], 0.25)}
    acc_by = S.plan_accuracies(cfg, rx, ry, tx, ty, k, clf_seeds, plan, seconds)
    return {"setting": setting, "gen_seed": gen_seed, "clf_seeds": clf_seeds, "family": cfg.evaluate.model,
            "accepted": int(PER_CLASS * k), "params": {"grid": gen.deform_grid, "pairs": gen.deform_pairs,
                                                       "min_det": MIN_DET, "data_seed": data_seed,
                                                       "mean_fold_free_fraction": round(cap_mean, 3)},
            "accuracy": acc_by, "seconds": seconds}


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    S.write_paired_report(out, "Screen: learned deformations without folds", files, command, note, VARIANTS[1:],
                          f"every variant adds {PER_CLASS} samples per class at share 0.25 but cap50 (0.5).",
                          lambda r: f"{r['setting']} draw {r['params']['data_seed']} seed {r['gen_seed']}: "
                                    f"mean fold-free fraction {r['params']['mean_fold_free_fraction']}, "
                                    f"{r['seconds']}")


def main(argv: list[str] | None = None) -> int:
    return S.screen_main(argv, __doc__, "screen_deform_folds.py", ROOT / "docs" / "screens" / "deform_folds.md",
                         S.sample_screen_args,
                         lambda a, o: run(a.setting, a.gen_seed, a.clf_seeds, o, a.data_seed, a.grid_png),
                         aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
