"""Screen: learned deformations against random elastic warps of the same size (a control).

``generate.sampler: deform`` (augment/models/deform.py, the default) warps a labelled image by a
field *observed* between two other labelled images of its class. Its gain over (b) could come from
what those fields learnt -- the ways the class's shapes vary -- or only from warping at all: an
elastic distortion (Simard et al. 2003) is a classical augmentation that (b) does not include. This
control tells the two apart, with the library's registration and warp (not copies), outside the
pipeline:

* ``obs25``: the default sampler's samples (share 0.25) -- the reference;
* ``elastic25``: an image of the class warped by a *random* field on the same lattice, each control
  point's displacement drawn ``N(0, s^2)`` with ``s`` the class's observed fields' root mean square
  per coordinate (the same size as the learnt fields, no structure), then moved ``U(0.3, 1)`` along
  it as the default is;
* ``elastic25_half``: the same at half that size;
* ``shuffled25``: the class's observed fields with their control points permuted at random (each
  field its own permutation, the two coordinates kept together): every displacement the class
  showed, none of its spatial arrangement;
* ``obs_elastic25``: half ``obs25``'s and half ``elastic25``'s samples per class (the same 200 per
  class): both kinds of warp in one set.

Each is compared with ``b`` (labelled images + classical augmentation: the utility benchmark's (b),
evaluate's recipe), 200 samples per class. Labelled and test images are drawn as
``benchmarks/utility.py`` draws them (``--data-seed``); the test images only score: no registration,
sampler or classifier sees them. ``--gen-seed`` seeds the pairs drawn and the samples.

    python benchmarks/screen_deform_elastic.py --setting mnist28_10 --gen-seed 0 --json R0.json
    python benchmarks/screen_deform_elastic.py --aggregate R0.json R1.json --out docs/screens/deform_elastic.md
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

VARIANTS = ["b", "obs25", "elastic25", "elastic25_half", "shuffled25", "obs_elastic25"]
PER_CLASS = 200


def control_samples(rx: np.ndarray, ry: np.ndarray, k: int, per_class: int, grid: int, max_pairs: int, seed: int
                    ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[float]]:
    """``per_class`` samples per class of each control (module docstring): ``{"elastic": ...,
    "elastic_half": ..., "shuffled": ...}`` -- the same source images and ``U(0.3, 1)`` draws for all
    three -- and each class's field size ``s``. Seeded by ``seed`` (the pairs and the draws)."""
    import torch

    from augment.models.deform import MIN_FRACTION, fit_fields, warp

    x = torch.from_numpy(rx).float().permute(0, 3, 1, 2) / 127.5 - 1.0
    y = torch.from_numpy(ry).long()
    pairs, fields = fit_fields(x, y, k, grid, max_pairs, seed)
    pair_class = y[pairs[:, 0]]
    g = torch.Generator().manual_seed(seed)
    out: dict[str, list] = {"elastic": [], "elastic_half": [], "shuffled": []}
    labels, sizes = [], []
    for c in range(k):
        f = fields[pair_class == c]
        s = float(f.pow(2).mean().sqrt())
        sizes.append(round(s, 4))
        own = torch.nonzero(y == c).flatten()
        src = own[torch.randint(len(own), (per_class,), generator=g)]
        t = (MIN_FRACTION + (1 - MIN_FRACTION) * torch.rand(per_class, generator=g))[:, None, None, None]
        rand = torch.randn(per_class, 2, grid, grid, generator=g) * s
        pick = f[torch.randint(len(f), (per_class,), generator=g)].reshape(per_class, 2, grid * grid)
        perm = torch.argsort(torch.rand(per_class, grid * grid, generator=g), dim=1)
        shuf = torch.gather(pick, 2, perm[:, None, :].expand(-1, 2, -1)).reshape(per_class, 2, grid, grid)
        for name, v in (("elastic", rand), ("elastic_half", rand * 0.5), ("shuffled", shuf)):
            out[name].append(warp(x[src], v * t).clamp(-1.0, 1.0))
        labels.append(torch.full((per_class,), c, dtype=torch.long))
    lab = torch.cat(labels).numpy()
    return {name: (DV._to_uint8(torch.cat(v)), lab) for name, v in out.items()}, sizes


def run(setting: str, gen_seed: int, clf_seeds: list[int], overrides: dict, data_seed: int, grid_png: str | None
        ) -> dict:
    rx, ry, tx, ty, names, cfg = S.screen_inputs(setting, data_seed, overrides)  # tx, ty: scoring only
    k = len(names)
    gen = cfg.generate
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    common = dict(grid=gen.deform_grid, max_pairs=gen.deform_pairs, seed=gen_seed)
    ctl, sizes = control_samples(rx, ry, k, PER_CLASS, **common)
    syn = {"obs25": DV.samples(rx, ry, k, PER_CLASS, gen.deform_scale, False, **common),
           "elastic25": ctl["elastic"], "elastic25_half": ctl["elastic_half"], "shuffled25": ctl["shuffled"]}
    syn["obs_elastic25"] = S.half_and_half(syn["obs25"], syn["elastic25"], k)
    seconds["samples"] = round(time.perf_counter() - t0, 1)
    if grid_png:
        S.save_sample_grid(rx, ry, names, [syn[v] for v in ("obs25", "elastic25", "shuffled25")], grid_png)
    plan = {"b": (None, None), **{v: (syn[v], 0.25) for v in VARIANTS[1:]}}
    acc_by = S.plan_accuracies(cfg, rx, ry, tx, ty, k, clf_seeds, plan, seconds)
    return {"setting": setting, "gen_seed": gen_seed, "clf_seeds": clf_seeds, "family": cfg.evaluate.model,
            "accepted": int(PER_CLASS * k), "params": {"grid": gen.deform_grid, "pairs": gen.deform_pairs,
                                                       "field_rms": sizes, "data_seed": data_seed},
            "accuracy": acc_by, "seconds": seconds}


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    S.write_paired_report(out, "Screen: learned deformations against random elastic warps (control)", files,
                          command, note, VARIANTS[1:],
                          f"every variant adds {PER_CLASS} samples per class at share 0.25.",
                          lambda r: f"{r['setting']} draw {r['params']['data_seed']} seed {r['gen_seed']}: "
                                    f"field rms per class {r['params']['field_rms']}, {r['seconds']}")


def main(argv: list[str] | None = None) -> int:
    return S.screen_main(argv, __doc__, "screen_deform_elastic.py", ROOT / "docs" / "screens" / "deform_elastic.md",
                         S.sample_screen_args,
                         lambda a, o: run(a.setting, a.gen_seed, a.clf_seeds, o, a.data_seed, a.grid_png),
                         aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
