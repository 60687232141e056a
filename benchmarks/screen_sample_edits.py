"""Screen: do the samples hurt because they look unlike real images? Two edits, measured.

On real MNIST (mnist28_10) the accepted VAE samples carry the right class (a teacher ensemble
agrees with their labels) and still cost the SmallCNN about half a point at share 0.25. Their
strokes are softer and their background hazier than real digits'. This screen tests two edits
that make samples look more like real images, without changing the pipeline:

* ``matched25``: every accepted sample gets the pixel-value distribution of a random labelled
  image of its class (per channel, rank for rank: the sample's darkest pixel takes that image's
  darkest value, and so on). Strokes become as crisp, and the background as black, as a real
  image's; the shape stays the sample's.
* ``residual05_25`` / ``residual10_25``: DAGAN-style edits of the labelled images themselves:
  ``x_i + D(z_i + s L eps) - D(z_i)``, where ``z_i`` is the VAE's code of labelled image ``x_i``,
  ``L`` the Cholesky factor of the class prior's covariance and ``s`` 0.5 / 1.0. The real image's
  detail stays; the decoder's change of a nearby code is added to it. As many as were accepted,
  spread evenly over the classes; no filter (they are meant to be close to the real images).
* ``copies25``: the control for the residual edits: the same labelled images, unedited (scale 0),
  at the same share. A gain here would come from re-weighting the labelled images, not from edits.

Both are compared with ``b`` (labelled images + classical augmentation, the utility benchmark's
(b)) and ``hard25`` (the accepted samples as they are), at share 0.25, with evaluate's recipe. The
pipeline's prepare, train, generate and filter stages run as ``benchmarks/utility.py`` runs them
(crossfit mode, default ``params.yaml``, ``--set`` overrides). The test images are used only to
score; no edit, stage or classifier sees them.

    python benchmarks/screen_sample_edits.py --setting mnist28_10 --gen-seed 0 --json R0.json
    python benchmarks/screen_sample_edits.py --aggregate R0.json R1.json --out docs/screens/sample_edits.md
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

VARIANTS = ["b", "hard25", "matched25", "residual05_25", "residual10_25", "copies25"]


def match_intensity(samples: np.ndarray, labels: np.ndarray, real_x: np.ndarray, real_y: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """Each ``uint8 (N, H, W, C)`` sample with the per-channel pixel values of a random real image of
    its class, assigned in the sample's rank order (ties by position). A class with no real image
    keeps its samples as they are."""
    n, h, w, c = samples.shape
    flat = samples.reshape(n, h * w, c)
    refs = np.sort(real_x.reshape(len(real_x), h * w, c), axis=1)
    out = flat.copy()
    for k in np.unique(labels):
        pool = np.flatnonzero(real_y == k)
        if not len(pool):
            continue
        rows = np.flatnonzero(labels == k)
        order = np.argsort(flat[rows], axis=1, kind="stable")
        edited = np.empty_like(flat[rows])
        np.put_along_axis(edited, order, refs[rng.choice(pool, len(rows))], axis=1)
        out[rows] = edited
    return out.reshape(samples.shape)


def residual_edits(checkpoint: str, real_x: np.ndarray, real_y: np.ndarray, per_class: int, scales: list[float],
                   seed: int) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """``x_i + D(z_i + s L eps) - D(z_i)`` for ``per_class`` random labelled images per class, per
    scale ``s`` (the same images and noise for every scale): ``{s: (images uint8, labels)}``."""
    import torch

    from augment.core.pixels import to_tensor, to_uint8
    from augment.generation.generate import interpolation_anchors, load_generator

    gen = load_generator(checkpoint, "cpu", "fp32", "prior")
    z, zy = interpolation_anchors(gen.checkpoint)
    if not np.array_equal(zy.numpy(), real_y):
        raise SystemExit(f"{checkpoint}: its training codes are not those of the labelled images in order")
    dec, prior = gen.sampler.decoder, gen.sampler.prior
    eye = torch.eye(prior.cov.shape[-1], dtype=torch.float64)
    chol = torch.linalg.cholesky(prior.cov.double() + 1e-6 * eye).float()
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(real_y == k), per_class) for k in np.unique(real_y)])
    eps = torch.randn(len(idx), z.shape[1], generator=torch.Generator().manual_seed(seed))
    yi = torch.from_numpy(real_y[idx])
    out = {}
    with torch.no_grad():
        zi = z[idx]
        base, xi = dec(zi, yi), to_tensor(real_x[idx], torch.device("cpu"))
        for s in scales:
            if s == 0:  # the labelled images themselves (no round trip through float)
                out[s] = (real_x[idx].copy(), real_y[idx])
                continue
            moved = dec(zi + s * torch.einsum("nij,nj->ni", chol[yi], eps), yi)
            out[s] = (to_uint8((xi + moved - base).clamp(-1, 1)), real_y[idx])
    return out


def run(setting: str, gen_seed: int, clf_seeds: list[int], overrides: dict) -> dict:
    import torch

    from augment.downstream.classifier import predict_proba, train_downstream
    from augment.downstream.models import resolve_model
    from augment.evaluation.evaluate import classifier_spec

    with S.filtered_run(setting, gen_seed, overrides, "screen-edits") as fr:
        per = max(1, round(len(fr.sx) / fr.num_classes))
        res = residual_edits(fr.paths.checkpoint, fr.rx, fr.ry, per, [0.5, 1.0, 0.0], 4321 + gen_seed)
    cfg, rx, ry, tx, ty, k, sx, sy, seconds = fr.cfg, fr.rx, fr.ry, fr.tx, fr.ty, fr.num_classes, fr.sx, fr.sy, fr.seconds
    mx = match_intensity(sx, sy, rx, ry, np.random.default_rng(1234 + gen_seed))
    dev = torch.device("cpu")
    recipe = classifier_spec(cfg.evaluate)
    make = resolve_model(cfg.evaluate.model, "evaluate.model")

    def acc(m) -> float:
        return float((predict_proba(m, tx, dev).argmax(1) == ty).mean())

    def fit(s, syn=None):
        extra = (None, None, None) if syn is None else (*syn, 0.25)
        return train_downstream(rx, ry, k, recipe, s, dev, cfg.classical, *extra, make)

    data = {"b": None, "hard25": (sx, sy), "matched25": (mx, sy), "residual05_25": res[0.5],
            "residual10_25": res[1.0], "copies25": res[0.0]}
    acc_by = {}
    for name in VARIANTS:
        t0 = time.perf_counter()
        acc_by[name] = [acc(fit(s, data[name])) for s in clf_seeds]
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {np.mean(acc_by[name]):.4f}", flush=True)
    dist = {"matched25": float(np.abs(mx.astype(float) - sx).mean()),
            "residual05_25": float(np.abs(res[0.5][0].astype(float) - res[1.0][0]).mean())}
    return {"setting": setting, "gen_seed": gen_seed, "clf_seeds": clf_seeds, "family": cfg.evaluate.model,
            "accepted": int(len(sx)), "residual_per_class": per, "accuracy": acc_by,
            "mean_abs_pixel_change": dist, "seconds": seconds}


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    runs = [json.loads(Path(f).read_text()) for f in files]
    lines = S.report_header("Screen: edits that make the samples look more like real images", files, runs, command,
                            note)
    lines += S.paired_header(["setting", "classifier", "overrides", "gen seeds", "accepted", "b"], VARIANTS[1:],
                             "Every variant adds its images at share 0.25.")
    lines += [S.paired_row(key, rs, VARIANTS[1:]) for key, rs in S.group_runs(runs)]
    lines += ["", "Mean absolute pixel change (0-255): matching, sample before vs after; residual, scale 0.5 vs "
              "1.0 on the same images and noise: "
              + ", ".join(f"{r['setting']} seed {r['gen_seed']}: {r['mean_abs_pixel_change']['matched25']:.1f} / "
                          f"{r['mean_abs_pixel_change']['residual05_25']:.1f}" for r in runs), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    return S.screen_main(argv, __doc__, "screen_sample_edits.py", ROOT / "docs" / "screens" / "sample_edits.md",
                         lambda ap: None, lambda a, o: run(a.setting, a.gen_seed, a.clf_seeds, o), aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
