"""Screen: how far, how many and how composed the default sampler's learned deformations should be.

``generate.sampler: deform`` (augment/models/deform.py, the default) adds a labelled image warped
by the field registered between two other labelled images of its class, moved ``U(0.3, 1) x
deform_scale`` along it. Forced into the classifier at share 0.25 it gains +0.3 to +1.1 points on
the digit settings (docs/results.md) -- below the +1 the product aims for on most of them. This
screen asks which of the sampler's knobs, or a small extension of it, moves the gain, with the
library's own registration and sampler (not a copy), outside the pipeline:

* ``d25``: the default (scale 1, 200 samples per class) at share 0.25 -- the reference;
* ``scale15``: ``deform_scale`` 1.5 (up to half as far again as an observed deformation);
* ``compose``: each sample warped by the sum of two observed fields of its class (each scaled by
  its own ``U(0.3, 1)``), a deformation no single pair showed;
* ``d50``: the default at share 0.5;
* ``n1000``: 1,000 samples per class instead of 200, share 0.25;
* ``pooled``: an image of the class warped by a field registered between two images of *any*
  class (the deformations pooled over classes: ten times as many fields, none specific to the
  class; Hauberg et al. found class-dependent ones better, with more images per class than here).

Each is compared with ``b`` (labelled images + classical augmentation: the utility benchmark's (b),
evaluate's recipe). Labelled and test images are drawn as ``benchmarks/utility.py`` draws them
(``--data-seed``); the test images only score: no registration, sampler or classifier sees them.
``--gen-seed`` seeds the pairs drawn and the samples.

    python benchmarks/screen_deform_variants.py --setting digits8_5 --gen-seed 0 --json R0.json
    python benchmarks/screen_deform_variants.py --aggregate R0.json R1.json --out docs/screens/deform_variants.md
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

VARIANTS = ["b", "d25", "scale15", "compose", "d50", "n1000", "pooled"]


class _NoFallback:
    """Every class of a screen has >= 2 labelled images, so the sampler never falls back (a
    pipeline's VAE fallback also draws its codes, so the same seed gives other samples there)."""

    def __init__(self, shape):
        self.shape = shape

    def sample(self, labels, generator):
        import torch

        return torch.zeros(len(labels), *self.shape)


def _to_uint8(x) -> np.ndarray:
    return np.clip(np.round((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5), 0, 255).astype(np.uint8)


def samples(rx: np.ndarray, ry: np.ndarray, k: int, per_class: int, scale: float, compose: bool, grid: int,
            max_pairs: int, seed: int, batch: int = 500, pooled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` samples per class from the library's deform sampler (``compose``: each warped
    again by a second observed field of its class, scaled by its own U(0.3, 1) x ``scale``;
    ``pooled``: by a field of any class's pair that does not contain the image)."""
    import torch

    from augment.models.deform import DeformSampler, fit_fields, warp

    x = torch.from_numpy(rx).float().permute(0, 3, 1, 2) / 127.5 - 1.0
    y = torch.from_numpy(ry).long()
    pairs, fields = fit_fields(x, y, k, grid, max_pairs, seed)
    sampler = DeformSampler(_NoFallback(x.shape[1:]), x, y, pairs, fields, k, scale)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(k).repeat_interleave(per_class)
    out = []
    for i in range(0, len(labels), batch):
        lab = labels[i : i + batch]
        if pooled:
            u = torch.rand(len(lab), 10, generator=g)
            counts, n_pairs = sampler.counts[lab], len(sampler.pairs)
            src = sampler.starts[lab] + (u[:, 0] * counts).long().clamp_max(counts - 1)
            pick = (u[:, 1] * n_pairs).long().clamp_max(n_pairs - 1)
            for t in range(3, 10):  # redraw a pair that contains the image itself
                own = (sampler.pairs[pick] == sampler.image_index[src][:, None]).any(1)
                pick = torch.where(own, (u[:, t] * n_pairs).long().clamp_max(n_pairs - 1), pick)
            frac = (0.3 + 0.7 * u[:, 2]) * scale
            out.append(warp(sampler.images[src], sampler.fields[pick] * frac[:, None, None, None]).clamp(-1.0, 1.0))
            continue
        if not compose:
            out.append(sampler.sample(lab, g))
            continue
        # a second field of the class on top of the first: the first warp's output is warped again
        # by a field drawn the same way (its own U(0.3, 1) x scale), composing the two deformations
        first = sampler.sample(lab, g)
        u = torch.rand(len(lab), 2, generator=g)
        m = sampler.pair_counts[lab]
        pick = sampler.pair_starts[lab] + (u[:, 0] * m).long().clamp_max(m - 1)
        frac = (0.3 + 0.7 * u[:, 1]) * scale
        out.append(warp(first, sampler.fields[pick] * frac[:, None, None, None]).clamp(-1.0, 1.0))
    return _to_uint8(torch.cat(out)), labels.numpy()


def run(setting: str, gen_seed: int, clf_seeds: list[int], overrides: dict, data_seed: int, grid_png: str | None
        ) -> dict:
    rx, ry, tx, ty, names, cfg = S.screen_inputs(setting, data_seed, overrides)  # tx, ty: scoring only
    k = len(names)
    gen = cfg.generate
    seconds = {}
    t0 = time.perf_counter()
    common = dict(grid=gen.deform_grid, max_pairs=gen.deform_pairs, seed=gen_seed)
    syn = {"d25": samples(rx, ry, k, 200, gen.deform_scale, False, **common),
           "scale15": samples(rx, ry, k, 200, 1.5 * gen.deform_scale, False, **common),
           "compose": samples(rx, ry, k, 200, gen.deform_scale, True, **common),
           "n1000": samples(rx, ry, k, 1000, gen.deform_scale, False, **common),
           "pooled": samples(rx, ry, k, 200, gen.deform_scale, False, pooled=True, **common)}
    seconds["samples"] = round(time.perf_counter() - t0, 1)
    if grid_png:
        S.save_sample_grid(rx, ry, names, [syn[v] for v in ("d25", "compose", "pooled")], grid_png)
    plan = {"b": (None, None), "d25": (syn["d25"], 0.25), "scale15": (syn["scale15"], 0.25),
            "compose": (syn["compose"], 0.25), "d50": (syn["d25"], 0.5), "n1000": (syn["n1000"], 0.25),
            "pooled": (syn["pooled"], 0.25)}
    acc_by = S.plan_accuracies(cfg, rx, ry, tx, ty, k, clf_seeds, {v: plan[v] for v in VARIANTS}, seconds)
    return {"setting": setting, "gen_seed": gen_seed, "clf_seeds": clf_seeds, "family": cfg.evaluate.model,
            "accepted": int(200 * k), "params": {"grid": gen.deform_grid, "pairs": gen.deform_pairs,
                                                 "scale": gen.deform_scale, "data_seed": data_seed},
            "accuracy": acc_by, "seconds": seconds}


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    runs = [json.loads(Path(f).read_text()) for f in files]
    lines = S.report_header("Screen: learned deformations -- how far, how many, how composed", files, runs,
                            command, note)
    lines += S.paired_header(["setting", "classifier", "overrides", "gen seeds", "samples per set", "b"], VARIANTS[1:],
                             "every variant adds its samples at share 0.25 but d50 (0.5).")
    lines += [S.paired_row(key, rs, VARIANTS[1:]) for key, rs in S.group_runs(runs)]
    lines += ["", "Parameters and seconds per run: "
              + "; ".join(f"{r['setting']} seed {r['gen_seed']}: {r['params']}, {r['seconds']}" for r in runs), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    return S.screen_main(argv, __doc__, "screen_deform_variants.py", ROOT / "docs" / "screens" / "deform_variants.md",
                         S.sample_screen_args,
                         lambda a, o: run(a.setting, a.gen_seed, a.clf_seeds, o, a.data_seed, a.grid_png),
                         aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
