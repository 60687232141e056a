"""Screen: class-dependent learned deformations as the synthetic images.

Every generator the pipeline has (VAE, GAN, VAE-GAN, the VAE's residual edits) learns from the same
~10 labelled images per class as the classifier, and none has beaten real + classical augmentation
(affine: rotation, shift, scale) by a point on the utility settings. Classical augmentation moves
whole images; the shape variation within a class (a 4 open or closed, a 7 with a long or short
bar) it cannot make. Hauberg et al. (AISTATS 2016, "Dreaming more data: class-dependent
distributions over diffeomorphisms for learned data augmentation") learn that variation from the
labelled images themselves: register every ordered pair of same-class images with a smooth
displacement field, and warp labelled images with fields drawn from the class's collection. This
screen tests a simple version of it, outside the pipeline:

* register: for each class, every ordered pair (i, j) of its labelled images gets a displacement
  field on a coarse ``grid x grid`` lattice (bicubic to full size) that warps image i onto image j
  (mean squared error of Gaussian-blurred images plus a small L2 penalty; Adam, seeded start at 0).
* ``transfer25``: a labelled image of the class warped by a field observed between two *other*
  images of the class, scaled by a uniform draw in [0.3, 1] (how far the shape moves), at share 0.25.
* ``gauss25``: the same with a field drawn from a Gaussian fitted to the class's fields (shrunk
  covariance), scaled by ``--gauss-alpha``; a draw can combine variations no pair showed.
* ``transfer50``: ``transfer25`` at share 0.5.

Both are compared with ``b`` (labelled images + classical augmentation, the utility benchmark's
(b), evaluate's recipe). Labelled and test images are drawn as ``benchmarks/utility.py`` draws them
(``--data-seed``); the test images only score: no registration, field or classifier sees them.
``--gen-seed`` seeds which images and fields are drawn.

    python benchmarks/screen_learned_deformations.py --setting mnist28_10 --gen-seed 0 --json R0.json
    python benchmarks/screen_learned_deformations.py --aggregate R0.json R1.json --out docs/screens/learned_deformations.md
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

VARIANTS = ["b", "transfer25", "gauss25", "transfer50"]


def _blur(x, sigma: float):
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return x
    r = int(3 * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def warp(x, v):
    """``x`` (N, C, H, W) float warped by coarse displacement fields ``v`` (N, 2, G, G), in the
    normalised coordinates of ``grid_sample``; outside the image the border value is repeated."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    u = F.interpolate(v, size=(h, w), mode="bicubic", align_corners=True)
    base = F.affine_grid(torch.eye(2, 3).unsqueeze(0).repeat(n, 1, 1), list(x.shape), align_corners=False)
    return F.grid_sample(x, base + u.permute(0, 2, 3, 1), mode="bilinear", padding_mode="border", align_corners=False)


def register(src, dst, grid: int, steps: int, lam: float, sigma: float, lr: float = 0.05):
    """Fields ``v`` (N, 2, grid, grid) with ``warp(src, v)`` close to ``dst`` (blurred MSE + L2)."""
    import torch

    sb, db = _blur(src, sigma), _blur(dst, sigma)
    v = torch.zeros(src.shape[0], 2, grid, grid, requires_grad=True)
    opt = torch.optim.Adam([v], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((warp(sb, v) - db) ** 2).mean(dim=(1, 2, 3)).sum() + lam * (v ** 2).mean(dim=(1, 2, 3)).sum()
        loss.backward()
        opt.step()
    return v.detach()


def class_fields(x: np.ndarray, y: np.ndarray, num_classes: int, grid: int, steps: int, lam: float,
                 sigma: float) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per class: every ordered pair (i, j) of its images, and the field that warps i onto j."""
    import torch

    xt = torch.from_numpy(x).float().permute(0, 3, 1, 2) / 255.0
    out = {}
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        pairs = np.array([(i, j) for i in idx for j in idx if i != j])
        v = register(xt[pairs[:, 0]], xt[pairs[:, 1]], grid, steps, lam, sigma)
        out[c] = (pairs, v.reshape(len(pairs), -1).numpy())
    return out


def deform(x: np.ndarray, y: np.ndarray, fields: dict[int, tuple[np.ndarray, np.ndarray]], per_class: int,
           grid: int, mode: str, alpha: float, rng: np.random.Generator, shrink: float = 0.1
           ) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` warped labelled images per class: by a field observed between two other images
    of the class (``transfer``, scaled by U(0.3, 1) x alpha) or drawn from the Gaussian fitted to the
    class's fields (``gauss``, scaled by alpha)."""
    import torch

    xt = torch.from_numpy(x).float().permute(0, 3, 1, 2) / 255.0
    xs, ys = [], []
    for c, (pairs, f) in fields.items():
        src = rng.choice(np.flatnonzero(y == c), per_class)
        if mode == "transfer":
            pick = np.array([rng.choice(np.flatnonzero((pairs[:, 0] != s) & (pairs[:, 1] != s))) for s in src])
            z = f[pick] * (alpha * rng.uniform(0.3, 1.0, (per_class, 1)))
        else:
            mu = f.mean(0)
            cov = np.cov(f - mu, rowvar=False)
            cov = (1 - shrink) * cov + shrink * np.eye(len(mu)) * np.trace(cov) / len(mu)
            z = rng.multivariate_normal(np.zeros(len(mu)), cov, per_class) * alpha
        v = torch.from_numpy(z).float().view(per_class, 2, grid, grid)
        out = warp(xt[src], v).permute(0, 2, 3, 1).numpy()
        xs.append(np.clip(np.round(out * 255), 0, 255).astype(np.uint8))
        ys.append(np.full(per_class, c, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def run(setting: str, gen_seed: int, clf_seeds: list[int], overrides: dict, data_seed: int, grid: int,
        steps: int, lam: float, sigma: float, per_class: int, gauss_alpha: float, grid_png: str | None) -> dict:
    import torch

    torch.manual_seed(gen_seed)
    rx, ry, tx, ty, names, cfg = S.screen_inputs(setting, data_seed, overrides)  # tx, ty: scoring only
    k = len(names)
    seconds = {}
    t0 = time.perf_counter()
    fields = class_fields(rx, ry, k, grid, steps, lam, sigma)
    seconds["register"] = round(time.perf_counter() - t0, 1)
    g = np.random.default_rng(7000 + gen_seed)
    syn = {"transfer": deform(rx, ry, fields, per_class, grid, "transfer", 1.0, g),
           "gauss": deform(rx, ry, fields, per_class, grid, "gauss", gauss_alpha, g)}
    if grid_png:
        from augment.core.images import image_grid
        from augment.core.plots import save_png

        rows = []
        for c in range(k):
            rows += list(rx[ry == c][:2]) + list(syn["transfer"][0][syn["transfer"][1] == c][:6]) + \
                list(syn["gauss"][0][syn["gauss"][1] == c][:6])
        save_png(image_grid(np.stack(rows), 14, scale=max(1, 56 // rx.shape[1]), row_labels=names), grid_png)
    plan = {"b": (None, None), "transfer25": (syn["transfer"], 0.25), "gauss25": (syn["gauss"], 0.25),
            "transfer50": (syn["transfer"], 0.5)}
    acc_by = S.plan_accuracies(cfg, rx, ry, tx, ty, k, clf_seeds, {v: plan[v] for v in VARIANTS}, seconds)
    return {"setting": setting, "gen_seed": gen_seed, "clf_seeds": clf_seeds, "family": cfg.evaluate.model,
            "accepted": int(per_class * k), "params": {"grid": grid, "steps": steps, "lam": lam, "sigma": sigma,
                                                        "gauss_alpha": gauss_alpha, "data_seed": data_seed},
            "accuracy": acc_by, "seconds": seconds}


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    runs = [json.loads(Path(f).read_text()) for f in files]
    lines = S.report_header("Screen: class-dependent learned deformations as the synthetic images", files, runs,
                            command, note)
    lines += S.paired_header(["setting", "classifier", "overrides", "gen seeds", "warped images", "b"], VARIANTS[1:],
                             "transfer and gauss images are added at share 0.25, transfer50 at 0.5.")
    lines += [S.paired_row(key, rs, VARIANTS[1:]) for key, rs in S.group_runs(runs)]
    lines += ["", "Registration parameters and seconds per run: "
              + "; ".join(f"{r['setting']} seed {r['gen_seed']}: {r['params']}, {r['seconds']}" for r in runs), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


def _args(ap) -> None:
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--grid", type=int, default=6, help="coarse lattice of each displacement field")
    ap.add_argument("--steps", type=int, default=200, help="Adam steps per registration")
    ap.add_argument("--lam", type=float, default=0.05, help="L2 penalty on the field")
    ap.add_argument("--sigma", type=float, default=1.0, help="blur (pixels) of the images registered")
    ap.add_argument("--per-class", type=int, default=200, help="warped images per class")
    ap.add_argument("--gauss-alpha", type=float, default=0.5)
    ap.add_argument("--grid-png", default=None, help="where to save a picture of the warped images")


def main(argv: list[str] | None = None) -> int:
    return S.screen_main(argv, __doc__, "screen_learned_deformations.py",
                         ROOT / "docs" / "screens" / "learned_deformations.md", _args,
                         lambda a, o: run(a.setting, a.gen_seed, a.clf_seeds, o, a.data_seed, a.grid, a.steps, a.lam,
                                          a.sigma, a.per_class, a.gauss_alpha, a.grid_png), aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
