"""Screen: in-between shapes -- a pair's own field, part of the way (morphing).

``generate.sampler: deform`` (augment/models/deform.py, the default) *transfers* a deformation: a
labelled image ``i`` of a class is warped by the field registered between two *other* images
``k -> l`` of the class, moved ``U(0.3, 1)`` along it. Nothing guarantees that ``k``'s deformation
suits ``i``: a field that closes ``k``'s loop may tear ``i``'s stroke. Morphing stays between two
real images instead: ``x_k`` moved a fraction ``t`` of the way onto ``x_l`` along their own field --
the shapes the class passes through between two of its members (the classic in-between of image
morphing). This screen measures that, with the library's registration (not a copy), outside the
pipeline:

* ``obs25``: the default sampler's samples (share 0.25) -- the reference;
* ``morph25``: per sample a pair ``(k, l)`` of the class, ``warp(x_k, t v_kl)``, ``t ~ U(0.2, 0.8)``
  (geometry only: the ink is ``k``'s);
* ``xfade25``: the two-sided morph ``(1 - t) warp(x_k, t v_kl) + t warp(x_l, (1 - t) v_lk)`` -- each
  end moved towards the other and the two cross-dissolved, so stroke width and ink come from both
  (``v_lk`` the reverse pair's field; every ordered pair is registered up to ``deform_pairs`` per
  class; a pair whose reverse was not drawn gives ``morph25``'s sample);
* ``mix25``: half ``obs25``'s samples and half ``xfade25``'s per class (the same 200 per class).

Each is compared with ``b`` (labelled images + classical augmentation: the utility benchmark's (b),
evaluate's recipe), 200 samples per class. Labelled and test images are drawn as
``benchmarks/utility.py`` draws them (``--data-seed``); the test images only score: no registration,
sampler or classifier sees them. ``--gen-seed`` seeds the pairs drawn and the samples.

    python benchmarks/screen_deform_morph.py --setting mnist28_10 --gen-seed 0 --json R0.json
    python benchmarks/screen_deform_morph.py --aggregate R0.json R1.json --out docs/screens/deform_morph.md
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

VARIANTS = ["b", "obs25", "morph25", "xfade25", "mix25"]
PER_CLASS = 200
T_RANGE = (0.2, 0.8)  # how far along its own field a morph moves


def morph_samples(rx: np.ndarray, ry: np.ndarray, k: int, per_class: int, grid: int, max_pairs: int, seed: int
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``per_class`` samples per class of each morph (module docstring): ``{"morph": ..., "xfade":
    ...}``, both from the same draws of pair and ``t`` (seeded by ``seed``, as are the pairs
    registered)."""
    import torch

    from augment.models.deform import fit_fields, warp

    x = torch.from_numpy(rx).float().permute(0, 3, 1, 2) / 127.5 - 1.0
    y = torch.from_numpy(ry).long()
    pairs, fields = fit_fields(x, y, k, grid, max_pairs, seed)
    where = {(int(a), int(b)): i for i, (a, b) in enumerate(pairs.tolist())}
    rev = torch.tensor([where.get((int(b), int(a)), -1) for a, b in pairs.tolist()], dtype=torch.long)
    pair_class = y[pairs[:, 0]]
    g = torch.Generator().manual_seed(seed)
    geo, fade, labels = [], [], []
    for c in range(k):
        own = torch.nonzero(pair_class == c).flatten()
        pick = own[torch.randint(len(own), (per_class,), generator=g)]
        t = (T_RANGE[0] + (T_RANGE[1] - T_RANGE[0]) * torch.rand(per_class, generator=g))[:, None, None, None]
        a, b = pairs[pick, 0], pairs[pick, 1]
        fwd = warp(x[a], fields[pick] * t)
        r = rev[pick]
        back = warp(x[b], fields[r.clamp_min(0)] * (1 - t))
        blend = torch.where((r >= 0)[:, None, None, None], (1 - t) * fwd + t * back, fwd)
        geo.append(fwd.clamp(-1.0, 1.0))
        fade.append(blend.clamp(-1.0, 1.0))
        labels.append(torch.full((per_class,), c, dtype=torch.long))
    lab = torch.cat(labels).numpy()
    return {"morph": (DV._to_uint8(torch.cat(geo)), lab), "xfade": (DV._to_uint8(torch.cat(fade)), lab)}


def run(setting: str, gen_seed: int, clf_seeds: list[int], overrides: dict, data_seed: int, grid_png: str | None
        ) -> dict:
    rx, ry, tx, ty, names, cfg = S.screen_inputs(setting, data_seed, overrides)  # tx, ty: scoring only
    k = len(names)
    gen = cfg.generate
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    common = dict(grid=gen.deform_grid, max_pairs=gen.deform_pairs, seed=gen_seed)
    syn = {"obs25": DV.samples(rx, ry, k, PER_CLASS, gen.deform_scale, False, **common)}
    m = morph_samples(rx, ry, k, PER_CLASS, **common)
    syn["morph25"], syn["xfade25"] = m["morph"], m["xfade"]
    syn["mix25"] = S.half_and_half(syn["obs25"], syn["xfade25"], k)
    seconds["samples"] = round(time.perf_counter() - t0, 1)
    if grid_png:
        S.save_sample_grid(rx, ry, names, [syn[v] for v in ("obs25", "morph25", "xfade25")], grid_png)
    plan = {"b": (None, None), **{v: (syn[v], 0.25) for v in VARIANTS[1:]}}
    acc_by = S.plan_accuracies(cfg, rx, ry, tx, ty, k, clf_seeds, plan, seconds)
    return {"setting": setting, "gen_seed": gen_seed, "clf_seeds": clf_seeds, "family": cfg.evaluate.model,
            "accepted": int(PER_CLASS * k), "params": {"grid": gen.deform_grid, "pairs": gen.deform_pairs,
                                                       "t_range": list(T_RANGE), "data_seed": data_seed},
            "accuracy": acc_by, "seconds": seconds}


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    S.write_paired_report(out, "Screen: learned deformations -- morphing along a pair's own field", files, command,
                          note, VARIANTS[1:], f"every variant adds {PER_CLASS} samples per class at share 0.25.",
                          lambda r: f"{r['setting']} draw {r['params']['data_seed']} seed {r['gen_seed']}: "
                                    f"{r['seconds']}")


def main(argv: list[str] | None = None) -> int:
    return S.screen_main(argv, __doc__, "screen_deform_morph.py", ROOT / "docs" / "screens" / "deform_morph.md",
                         S.sample_screen_args,
                         lambda a, o: run(a.setting, a.gen_seed, a.clf_seeds, o, a.data_seed, a.grid_png),
                         aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
