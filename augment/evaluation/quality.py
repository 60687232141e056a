"""Quality of synthetic images, measured in the feature space of a classifier trained on REAL TRAIN data.

No Inception weights here (and they would not fit 8x8 digits or X-rays): a :class:`SmallCNN`
trained on the real train split only is the feature extractor (its penultimate layer, ``embed``).
Reported overall and per class:

- **FD**: Fréchet distance between Gaussian fits of real and synthetic features (lower = closer).
- **PRDC** (Kynkäänniemi et al. 2019; Naeem et al. 2020, k = 5): precision (synthetic samples
  inside the real manifold: fidelity), recall (real samples inside the synthetic manifold),
  density (like precision, robust to outliers; ~1 for identical distributions) and coverage
  (real samples with a synthetic neighbour inside their k-NN ball; ~0.97 when identical).
- **CAS** (Ravuri & Vinyals 2019): a classifier trained on synthetic images only, tested on the
  real test split, as a fraction of the same classifier trained on real images only.
- **Diversity ratio**: mean pairwise feature distance among a class's synthetic samples divided
  by that among its real train images (1 = as varied as the real data; near 0 = collapse).
- **Nearest train image** (pixels, per class): the share of synthetic images closer to a train
  image than the 5 % closest pairs of train images are (``near``), the share identical to one
  (``copies``) and the median distance over the train images' own spacing (``dist``): how far the
  synthetic data is from copies of the labelled images, whether or not the memorisation filter ran.

The real reference for FD/PRDC is the TEST split: this runs inside the evaluate stage, whose final
scoring is the test split's only use; nothing here feeds back into training, filtering or tuning.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from augment.downstream.classifier import (
    ClassifierSpec,
    embed,
    predict_proba,
    train_classifier,
)

MAX_PER_CLASS = 1000  # synthetic samples per class used for PRDC/FD/diversity (a seeded subsample)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (N, D)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = np.cov(a, rowvar=False) if len(a) > 1 else np.zeros((a.shape[1], a.shape[1]))
    s2 = np.cov(b, rowvar=False) if len(b) > 1 else np.zeros((b.shape[1], b.shape[1]))
    s1, s2 = np.atleast_2d(s1), np.atleast_2d(s2)
    with warnings.catch_warnings():  # few samples per class give singular covariances: expected
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():  # near-singular product: regularise (as in pytorch-fid)
            off = np.eye(len(s1)) * 1e-6
            covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    return float(max(0.0, ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)))


def _pdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(d, 0.0))


def _nearest_distances(a: np.ndarray, b: np.ndarray, same: bool = False) -> np.ndarray:
    """Euclidean distance from each row of ``a`` to its nearest row of ``b`` (to its nearest other
    row when ``same``: ``a`` is ``b``). The neighbour is found by the float64 expansion (BLAS), then
    its distance is recomputed by differences: the expansion's cancellation leaves ~1e-3 in float32
    where two rows are equal, on some CPUs and not others, and that is as large as a slight edit.
    So a copy is at 0 exactly and an edit of a few grey levels is measured as such."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = _pdist(a64, b64)
    if same:
        np.fill_diagonal(d, np.inf)
    nearest = d.argmin(1)
    diff = a64 - b64[nearest]
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
    d = _pdist(x, x)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float] | None:
    """Precision, recall, density, coverage (Naeem et al. 2020). None when a set has <= k points."""
    if len(real) <= k or len(fake) <= k:
        return None
    real_r, fake_r = _kth_radius(real, k), _kth_radius(fake, k)
    d = _pdist(real, fake)  # (R, F)
    inside_real = d < real_r[:, None]  # fake j inside real i's ball
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d < fake_r[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((d.min(axis=1) < real_r).mean()),
    }


def mean_pairwise_distance(x: np.ndarray) -> float | None:
    if len(x) < 2:
        return None
    d = _pdist(x, x)
    return float(d.sum() / (len(x) * (len(x) - 1)))


def _subsample(x: np.ndarray, y: np.ndarray, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        keep.append(idx if len(idx) <= cap else np.sort(rng.choice(idx, cap, replace=False)))
    keep_idx = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return x[keep_idx], y[keep_idx]


def feature_quality(
    f_real_ref: np.ndarray, y_real_ref: np.ndarray, f_real_train: np.ndarray, y_real_train: np.ndarray,
    f_syn: np.ndarray, y_syn: np.ndarray, class_names: list[str], k: int = 5,
) -> dict[str, Any]:
    """FD, PRDC and diversity ratio, overall and per class, from precomputed features."""
    out: dict[str, Any] = {"n_synthetic": int(len(f_syn)), "fd": None, "prdc": None, "per_class": {}}
    if len(f_syn) >= 2:
        out["fd"] = frechet_distance(f_real_ref, f_syn)
        out["prdc"] = prdc(f_real_ref, f_syn, k)
    ratios = []
    for c, name in enumerate(class_names):
        fr, fs, ft = f_real_ref[y_real_ref == c], f_syn[y_syn == c], f_real_train[y_real_train == c]
        real_div, syn_div = mean_pairwise_distance(ft), mean_pairwise_distance(fs)
        ratio = syn_div / real_div if real_div and syn_div is not None else None
        if ratio is not None:
            ratios.append(ratio)
        out["per_class"][name] = {
            "n_synthetic": int(len(fs)),
            "fd": frechet_distance(fr, fs) if len(fs) >= 2 and len(fr) >= 2 else None,
            "prdc": prdc(fr, fs, min(k, len(fr) - 1)) if len(fr) >= 3 else None,
            "diversity_ratio": ratio,
        }
    out["diversity_ratio_min"] = float(min(ratios)) if ratios else None
    out["diversity_ratio_mean"] = float(np.mean(ratios)) if ratios else None
    return out


def nearest_train_distances(syn_x: np.ndarray, syn_y: np.ndarray, train_x: np.ndarray, train_y: np.ndarray,
                            class_names: list[str], percentile: float = 5.0) -> dict[str, Any]:
    """How close the synthetic images come to copies of the training images, in pixels.

    Per class: each synthetic image's root-mean-square pixel distance (0..1 scale) to the nearest
    real TRAIN image of its class, against the same distance from each train image to its nearest
    other train image of the class (the spacing of the real data). ``closer_than_real`` is the share
    of synthetic images nearer to a train image than ``percentile`` % of the train images are to
    each other (the memorisation filter's pixel-space rule, within the class); ``exact_copies``
    the share identical to one; ``distance_ratio_median`` the median of the synthetic distances
    over the median train spacing (near 0: copies; ~1: as far from the train images as they are
    from each other). Warps and edits of the train images (``generate.sampler: deform`` /
    ``residual``) are expected below 1. A class with one train image (no spacing) or no synthetic
    image is reported as None."""
    def flat(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), int(np.prod(x.shape[1:]))).astype(np.float32) / 255.0  # also for 0 images

    per_class: dict[str, Any] = {}
    close = copies = counted = 0
    ratios: list[np.ndarray] = []
    for c, name in enumerate(class_names):
        t, s = flat(train_x[train_y == c]), flat(syn_x[syn_y == c])
        if len(t) < 2 or len(s) == 0:
            per_class[name] = None
            continue
        spacing = _nearest_distances(t, t, same=True) / np.sqrt(t.shape[1])
        ds = _nearest_distances(s, t) / np.sqrt(t.shape[1])
        thr, med = float(np.percentile(spacing, percentile)), float(np.median(spacing))
        seen = {bytes(r) for r in np.ascontiguousarray(train_x[train_y == c]).reshape(len(t), -1)}
        n_close = int((ds < thr).sum())
        n_copy = sum(bytes(r) in seen for r in np.ascontiguousarray(syn_x[syn_y == c]).reshape(len(s), -1))
        ratio = ds / med if med > 0 else np.full(len(ds), np.inf)
        per_class[name] = {"n": int(len(s)), "closer_than_real": n_close / len(s), "exact_copies": n_copy / len(s),
                           "distance_ratio_median": float(np.median(ratio))}
        close, copies, counted = close + n_close, copies + n_copy, counted + len(s)
        ratios.append(ratio)
    return {"percentile": percentile, "n": counted,
            "closer_than_real": close / counted if counted else None,
            "exact_copies": copies / counted if counted else None,
            "distance_ratio_median": float(np.median(np.concatenate(ratios))) if ratios else None,
            "per_class": per_class}


def quality_report(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
    sets: dict[str, tuple[np.ndarray, np.ndarray]], class_names: list[str], spec: ClassifierSpec,
    seed: int, device: torch.device = torch.device("cpu"), k: int = 5,
) -> dict[str, Any]:
    """Quality of each named synthetic set (e.g. ``merged``, ``generated``).

    The feature classifier is trained on ``train_x`` (real TRAIN split) only; ``test_x`` is the
    real reference and the CAS test set (evaluate's final scoring, nothing is tuned on it).
    """
    num_classes = len(class_names)
    real_model = train_classifier(train_x, train_y, num_classes, spec, seed, device=device)
    real_acc = float((predict_proba(real_model, test_x, device).argmax(1) == test_y).mean())
    f_train = embed(real_model, train_x, device)
    f_test = embed(real_model, test_x, device)
    report: dict[str, Any] = {"feature_model": "SmallCNN.embed trained on the real train split", "k": k,
                              "reference": "test split", "seed": seed, "real_only_accuracy": real_acc, "sets": {}}
    for name, (sx, sy) in sets.items():
        if len(sx) == 0:
            report["sets"][name] = None
            continue
        sx_sub, sy_sub = _subsample(sx, sy, MAX_PER_CLASS, seed)
        q = feature_quality(f_test, test_y, f_train, train_y, embed(real_model, sx_sub, device), sy_sub, class_names, k)
        # CAS: synthetic images only, same classifier recipe and seed as the real-only reference.
        cas_model = train_classifier(sx, sy, num_classes, spec, seed, device=device)
        cas_acc = float((predict_proba(cas_model, test_x, device).argmax(1) == test_y).mean())
        q["cas_accuracy"] = cas_acc
        q["cas_ratio"] = cas_acc / real_acc if real_acc > 0 else None
        q["nearest_train"] = nearest_train_distances(sx_sub, sy_sub, train_x, train_y, class_names)
        report["sets"][name] = q
    return report


def _f(v: Any, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def format_quality(report: dict[str, Any]) -> str:
    """A short table: one row per synthetic set, then per-class diversity and coverage."""
    lines = [
        f"Synthetic quality (features: {report['feature_model']}; reference: {report['reference']}, "
        f"k={report['k']}; real-only accuracy {report['real_only_accuracy']:.4f})",
        f"{'set':<10} {'n':>6} {'FD':>8} {'prec':>6} {'recall':>6} {'dens':>6} {'cover':>6} "
        f"{'CAS':>6} {'CAS/real':>8} {'div min':>7} {'div mean':>8} {'near':>6} {'copies':>6} {'dist':>6}",
    ]
    for name, q in report["sets"].items():
        if q is None:
            lines.append(f"{name:<10} {0:>6} (no samples{': the merge stage chose none' if name == 'merged' else ''})")
            continue
        p = q["prdc"] or {}
        nt = q.get("nearest_train") or {}
        lines.append(
            f"{name:<10} {q['n_synthetic']:>6} {_f(q['fd'], '{:.2f}'):>8} {_f(p.get('precision')):>6} "
            f"{_f(p.get('recall')):>6} {_f(p.get('density')):>6} {_f(p.get('coverage')):>6} "
            f"{_f(q['cas_accuracy']):>6} {_f(q['cas_ratio']):>8} {_f(q['diversity_ratio_min']):>7} "
            f"{_f(q['diversity_ratio_mean']):>8} {_f(nt.get('closer_than_real')):>6} "
            f"{_f(nt.get('exact_copies')):>6} {_f(nt.get('distance_ratio_median'), '{:.2f}'):>6}"
        )
    for name, q in report["sets"].items():
        if q is None:
            continue
        names = list(q["per_class"])
        lines.append("")
        lines.append(f"{name}: per class " + " ".join(f"{n[:7]:>7}" for n in names))
        lines.append(f"{'diversity':<{len(name) + 11}}" + " ".join(
            f"{_f(q['per_class'][n]['diversity_ratio']):>7}" for n in names))
        lines.append(f"{'coverage':<{len(name) + 11}}" + " ".join(
            f"{_f((q['per_class'][n]['prdc'] or {}).get('coverage')):>7}" for n in names))
    return "\n".join(lines)


def evaluate_quality(ds: Any, syn_x: np.ndarray, syn_y: np.ndarray, generated_dir: str | None, cfg: Any) -> dict[str, Any]:
    """The evaluate stage's quality block: the merged synthetic samples (those the merge stage drew
    from the filter's accepted ones) and, when the generate output is present, every generated
    sample. ``cfg`` is the :class:`EvaluateConfig`."""
    from pathlib import Path

    from augment.core.device import resolve_device

    train_x, train_y = ds.subset("train")  # feature extractor: real TRAIN split only
    test_x, test_y = ds.subset("test")  # reference / CAS test set: final scoring only
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {"merged": (syn_x, syn_y)}
    if generated_dir is not None and (Path(generated_dir) / "generate.json").is_file():
        from augment.generation.shards import iter_shards

        shards = list(iter_shards(generated_dir, keys=("images", "labels")))
        sets["generated"] = (np.concatenate([s["images"] for s in shards]),
                             np.concatenate([s["labels"] for s in shards]).astype(np.int64))
    from augment.evaluation.evaluate import classifier_spec

    spec = classifier_spec(cfg)
    return quality_report(train_x, train_y, test_x, test_y, sets, ds.class_names, spec, cfg.seeds[0],
                          resolve_device(cfg.device))
