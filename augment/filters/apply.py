"""The ``filter`` stage: decide which generated samples are good enough to merge.

Every filter has one small interface (:class:`SampleFilter`):

* ``name``
* ``score(images, labels) -> {column: array}`` -- called once per generate shard (streaming: the
  images of one shard are in memory at a time); the column named ``name`` is the filter's score;
  extra columns (distances, raw logits) are recorded too.
* ``accept(scores, labels) -> bool mask`` -- called once on the whole score column (scores are
  small; quotas such as "top fraction per class" need them all); a filter with ``sequential =
  True`` also gets ``prior``, the AND of the filters before it.

Filters are named in ``filter.filters`` and composed by AND:

* ``discriminator`` -- D's logit, **calibrated** on real VAL images vs fresh fakes (Platt scaling,
  :mod:`augment.filters.calibration`), read as P(real image of class c); accepted by ``threshold``,
  ``top_fraction`` per class, or DRS acceptance probability (``drs``, seeded).
* ``label`` -- a classifier trained on the real TRAIN split must give the conditioning class at
  least ``label_min_confidence`` (rejects wrong-class samples).
* ``memorisation`` -- the nearest TRAIN image (pixel space and/or classifier-feature space) must be
  farther than the ``memorisation_percentile`` of real train->train nearest-neighbour distances
  (rejects copies); DCR vs the val->train baseline is reported.
* ``coverage`` (last, opt-in) -- of the samples every earlier filter accepted that lie inside the
  class's real manifold (the k-NN ball of one of its TRAIN images, label-classifier features),
  keeps ``coverage_fraction`` per class by farthest-point selection, the class's TRAIN images
  counting as already covered: it favours samples the real data does not cover yet over
  near-duplicates of it. Its accept sees the earlier filters' AND (``prior``).

Only the train split (classifier, nearest neighbours) and the val split (calibration, DCR baseline)
are used here. The TEST split is never passed to any filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from augment.config import ClassicalConfig, FilterConfig
from augment.core.files import (
    atomic_directory,
    atomic_save_npz,
    atomic_write_json,
    load_npz,
)
from augment.core.images import image_grid, shorten
from augment.errors import DataError
from augment.filters.calibration import (
    Calibration,
    calibrate_discriminator,
    discriminator_logits,
    drs_accept_prob,
)
from augment.generation.shards import iter_shards, load_generate_meta


class SampleFilter(Protocol):
    name: str

    def score(self, images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]: ...

    def accept(self, scores: dict[str, np.ndarray], labels: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


def top_fraction_per_class(score: np.ndarray, labels: np.ndarray, fraction: float) -> np.ndarray:
    accepted = np.zeros(len(score), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(len(idx) * fraction)))
        # stable sort on -score: ties broken by sample order, so decisions are deterministic
        accepted[idx[np.argsort(-score[idx], kind="stable")][:k]] = True
    return accepted


def accept_by_confidence(conf: np.ndarray, labels: np.ndarray, cfg: FilterConfig) -> np.ndarray:
    """Boolean mask of accepted samples by (calibrated) discriminator confidence, per class."""
    if cfg.mode == "none":
        return np.ones(len(conf), dtype=bool)
    if cfg.mode == "threshold":
        return conf >= cfg.threshold
    if cfg.mode == "drs":
        logit = np.log(np.clip(conf, 1e-12, 1.0)) - np.log(np.clip(1.0 - conf, 1e-12, 1.0))
        p = drs_accept_prob(logit, labels, cfg.drs_percentile)
        u = np.random.default_rng(np.random.SeedSequence([cfg.seed, 31337])).random(len(conf))
        return u < p
    return top_fraction_per_class(conf, labels, cfg.top_fraction)


@dataclass
class DiscriminatorFilter:
    disc: torch.nn.Module
    device: torch.device
    calibration: Calibration
    cfg: FilterConfig
    name: str = "discriminator"

    def score(self, images, labels, logits: np.ndarray | None = None):
        """``logits``: D's logits that the generate stage stored with the shard (the one
        definition of the score, computed once); recomputed only when absent."""
        raw = logits if logits is not None else discriminator_logits(self.disc, images, labels, self.device)
        raw = np.asarray(raw, np.float32)
        return {"discriminator": self.calibration.prob(raw), "discriminator_logit": raw}

    def accept(self, scores, labels):
        return accept_by_confidence(scores["discriminator"], labels, self.cfg)

    def describe(self):
        return {"mode": self.cfg.mode, "threshold": self.cfg.threshold, "top_fraction": self.cfg.top_fraction,
                "drs_percentile": self.cfg.drs_percentile, "calibration": self.calibration.to_dict()}


class SharedClassifier:
    """The label classifier's probabilities AND embedding from one forward pass per image; the
    label and memorisation filters both read it (the last shard's outputs are kept)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, autocast_dtype: torch.dtype | None = None):
        from augment.downstream.classifier import for_inference

        self.model, self.device = for_inference(model), device  # folded once, not per shard
        self.autocast_dtype = autocast_dtype
        self._key: tuple[int, int] | None = None
        self._out: tuple[np.ndarray, np.ndarray] | None = None

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = (id(images), len(images))
        if self._key != key or self._out is None:
            from augment.downstream.classifier import predict_with_embedding

            self._out = predict_with_embedding(self.model, images, self.device, autocast_dtype=self.autocast_dtype)
            self._key = key
        return self._out

    def proba(self, images: np.ndarray) -> np.ndarray:
        return self.outputs(images)[0]

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.outputs(images)[1]


@dataclass
class LabelFilter:
    """Rejects samples a classifier trained on real TRAIN images does not assign to their class."""

    classifier: SharedClassifier
    min_confidence: float
    name: str = "label"

    def score(self, images, labels):
        p = self.classifier.proba(images)
        return {"label": p[np.arange(len(labels)), labels], "label_predicted": p.argmax(1).astype(np.int64)}

    def accept(self, scores, labels):
        return (scores["label"] >= self.min_confidence) & (scores["label_predicted"] == labels)

    def describe(self):
        return {"min_confidence": self.min_confidence}


def _flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def nearest_distance(queries: np.ndarray, refs: np.ndarray, exclude_self: bool = False,
                     block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query row to its nearest ref row (and that row's index).

    The search runs in torch (its intra-op threads: ``filter.threads``; numpy's BLAS would follow
    OMP_NUM_THREADS, often 1); the winner's distance is recomputed exactly in float64."""
    with torch.no_grad():
        refs_t = torch.from_numpy(np.ascontiguousarray(refs, dtype=np.float32))
        refs64 = refs_t.double()
        rn = (refs_t * refs_t).sum(1)
        dist = np.empty(len(queries), np.float64)
        arg = np.empty(len(queries), np.int64)
        for s in range(0, len(queries), block):
            q = torch.from_numpy(np.ascontiguousarray(queries[s : s + block], dtype=np.float32))
            d2 = (q * q).sum(1)[:, None] + rn[None, :] - 2.0 * (q @ refs_t.T)
            if exclude_self:
                d2[torch.arange(len(q)), torch.arange(s, s + len(q))] = float("inf")
            a = d2.argmin(1)
            arg[s : s + len(q)] = a.numpy()
            # recompute the winner's distance directly: the expanded form above loses exact zeros
            dist[s : s + len(q)] = (q.double() - refs64[a]).square().sum(1).sqrt().numpy()
    return dist, arg


@dataclass
class MemorisationFilter:
    """Rejects samples closer to a training image than real training images are to each other."""

    train_x: np.ndarray
    train_y: np.ndarray
    num_classes: int
    percentile: float
    scope: str  # per_class | global
    space: str  # pixel | feature | both
    embed_fn: Any = None  # images -> (N, F) features (the label classifier's embedding)
    name: str = "memorisation"
    thresholds: dict[str, np.ndarray] = field(default_factory=dict)
    _refs: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        spaces = ["pixel", "feature"] if self.space == "both" else [self.space]
        for sp in spaces:
            ref = _flat(self.train_x) if sp == "pixel" else self.embed_fn(self.train_x).astype(np.float32)
            self._refs[sp] = ref
            # real train -> train nearest-neighbour distances (leave one out): the "not a copy" scale
            d, _ = nearest_distance(ref, ref, exclude_self=True) if len(ref) > 1 else (np.zeros(len(ref)), None)
            if self.scope == "global":
                thr = np.full(self.num_classes, np.percentile(d, self.percentile) if len(d) else 0.0)
            else:
                glob = np.percentile(d, self.percentile) if len(d) else 0.0
                thr = np.array([np.percentile(d[self.train_y == c], self.percentile) if (self.train_y == c).any()
                                else glob for c in range(self.num_classes)])
            self.thresholds[sp] = thr

    def distances(self, images: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for sp, ref in self._refs.items():
            q = _flat(images) if sp == "pixel" else self.embed_fn(images).astype(np.float32)
            out[sp] = nearest_distance(q, ref)[0]
        return out

    def score(self, images, labels):
        d = self.distances(images)
        # distance relative to the class's copy threshold; < 1 means "closer than real images are"
        rel = np.min([d[sp] / np.maximum(self.thresholds[sp][labels], 1e-12) for sp in d], axis=0)
        exact = np.min([d[sp] for sp in d], axis=0) <= 1e-6
        rel = np.where(exact, 0.0, rel)
        return {"memorisation": rel, **{f"memorisation_{sp}_dist": v.astype(np.float32) for sp, v in d.items()}}

    def accept(self, scores, labels):
        return scores["memorisation"] >= 1.0

    def describe(self):
        return {"percentile": self.percentile, "scope": self.scope, "space": self.space,
                "thresholds": {sp: [float(t) for t in thr] for sp, thr in self.thresholds.items()}}


def farthest_point_pick(candidates: np.ndarray, covered: np.ndarray, k: int) -> np.ndarray:
    """Indices (into ``candidates``) of ``k`` rows picked greedily, each the row farthest from
    everything covered so far (``covered`` rows, then the rows already picked). Deterministic:
    ties go to the lower index."""
    n = len(candidates)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, np.int64)
    if len(covered):
        gap, _ = nearest_distance(candidates, covered)
    else:
        gap = np.full(n, np.inf)
    cand = torch.from_numpy(np.ascontiguousarray(candidates, dtype=np.float64))
    gap_t = torch.from_numpy(gap.astype(np.float64))
    picked = np.empty(k, np.int64)
    for i in range(k):
        j = int(torch.argmax(gap_t))  # first maximum: the lower index wins a tie
        picked[i] = j
        gap_t = torch.minimum(gap_t, (cand - cand[j]).square().sum(1).sqrt())
        gap_t[j] = -1.0  # never picked twice (every other gap is >= 0)
    return picked


def knn_radii(feat: np.ndarray, k: int) -> np.ndarray:
    """Each row's distance to its k-th nearest other row (k capped at len - 1; NaN for a lone row)."""
    n = len(feat)
    if n < 2:
        return np.full(n, np.nan)
    f = torch.from_numpy(np.ascontiguousarray(feat, dtype=np.float64))
    d = torch.cdist(f, f)  # n x n: fine for one class of a scarce dataset
    d.fill_diagonal_(float("inf"))
    return torch.topk(d, min(k, n - 1), dim=1, largest=False).values[:, -1].numpy()


@dataclass
class CoverageFilter:
    """Keeps ``fraction`` of each class's accepted samples: those inside the class's real manifold
    (within the k-NN radius of one of its TRAIN images, the "precision" test of Kynkaenniemi et
    al. 2019, in the label classifier's feature space) that cover it where the train images do not
    (farthest-point selection seeded with the train images). Samples outside every ball (off the
    class's data: the farthest-point pick would take them first) are never kept."""

    train_x: np.ndarray
    train_y: np.ndarray
    num_classes: int
    fraction: float
    k: int
    embed_fn: Any  # images -> (N, F) features (the label classifier's embedding)
    name: str = "coverage"
    sequential: bool = True  # decide() passes the earlier filters' AND as ``prior``
    _train_feat: np.ndarray | None = None
    _radii: np.ndarray | None = None
    _feats: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self):
        self._train_feat = self.embed_fn(self.train_x).astype(np.float32)
        radii = np.full(len(self.train_y), np.nan)
        for c in range(self.num_classes):
            m = self.train_y == c
            radii[m] = knn_radii(self._train_feat[m], self.k)
        # a class with one train image has no radius of its own: the median of the other classes'
        # radii; when no class has two, the median k-NN radius over all train images (any class)
        if np.isfinite(radii).any():
            fallback = float(np.nanmedian(radii))
        elif len(self._train_feat) > 1:
            fallback = float(np.median(knn_radii(self._train_feat, self.k)))
        else:
            fallback = float("inf")  # one train image in all: no scale to test against
        self._radii = np.where(np.isfinite(radii), radii, fallback)

    def score(self, images, labels):
        feat = self.embed_fn(images).astype(np.float32)
        self._feats.append(feat)  # accept() runs once on every shard's features, in shard order
        ratio = np.full(len(labels), np.inf)
        for c in np.unique(labels):
            m, ref = labels == c, self.train_y == c
            if ref.any():
                d = torch.cdist(torch.from_numpy(feat[m].astype(np.float64)),
                                torch.from_numpy(self._train_feat[ref].astype(np.float64))).numpy()
                ratio[m] = (d / np.maximum(self._radii[ref], 1e-12)[None, :]).min(axis=1)
        # <= 1: inside the k-NN ball of one of the class's train images
        return {"coverage": ratio.astype(np.float32)}

    def accept(self, scores, labels, prior: np.ndarray | None = None):
        feats = np.concatenate(self._feats) if self._feats else np.zeros((0, 1), np.float32)
        if len(feats) != len(labels):
            raise DataError(f"coverage filter: {len(feats)} scored samples but {len(labels)} labels; "
                            "score every shard once before accepting")
        pool = np.ones(len(labels), bool) if prior is None else np.asarray(prior, bool)
        inside = scores["coverage"] <= 1.0
        accepted = np.zeros(len(labels), bool)
        for c in np.unique(labels):
            n = int((pool & (labels == c)).sum())
            idx = np.flatnonzero(pool & inside & (labels == c))
            if not len(idx):  # (also when no sample of the class survived: n = 0)
                continue
            k = max(1, int(round(n * self.fraction)))  # of what the earlier filters accepted (fewer inside: all)
            accepted[idx[farthest_point_pick(feats[idx], self._train_feat[self.train_y == c], k)]] = True
        return accepted

    def describe(self):
        return {"fraction": self.fraction, "k": self.k, "space": "feature",
                "inside": "k-NN ball of a train image of the class", "seeded_with": "train images of the class",
                "counts": "accepted is a subset of the earlier filters' accepted; their rejections count here too"}


@dataclass
class FilterContext:
    """What the filters may see: TRAIN and VAL images, never test; and the checkpoint."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    num_classes: int
    checkpoint: str | None = None
    classical: ClassicalConfig = ClassicalConfig()  # the label classifier's augmentation (params: classical)


def train_label_classifier(train_x, train_y, num_classes: int, cfg: FilterConfig, device: torch.device,
                           classical: ClassicalConfig = ClassicalConfig()):
    from augment.downstream.classifier import ClassifierSpec, train_downstream

    spec = ClassifierSpec(steps=cfg.classifier_steps, batch_size=64)
    return train_downstream(train_x, train_y, num_classes, spec, cfg.seed, device, classical)


def build_filters(ctx: FilterContext, cfg: FilterConfig) -> tuple[list[Any], dict[str, Any]]:
    """Instantiate the filters named in ``cfg.filters`` (calibrating D, training the classifier)."""
    from augment.core.device import resolve_device

    device = resolve_device(cfg.device)
    info: dict[str, Any] = {}
    filters: list[Any] = []
    model = None
    need_model = ("label" in cfg.filters or "coverage" in cfg.filters
                  or ("memorisation" in cfg.filters and cfg.memorisation_space != "pixel"))
    if need_model:
        from augment.generation.generate import resolve_precision

        model = SharedClassifier(
            train_label_classifier(ctx.train_x, ctx.train_y, ctx.num_classes, cfg, device, ctx.classical), device,
            resolve_precision(cfg.precision, device, "filter.precision"))
        if len(ctx.val_x):
            info["label_classifier_val_accuracy"] = float((model.proba(ctx.val_x).argmax(1) == ctx.val_y).mean())
    for name in cfg.filters:
        if name == "discriminator":
            if ctx.checkpoint is None:
                raise DataError("the discriminator filter needs the generator checkpoint")
            from augment.generation.generate import load_generator

            gen = load_generator(ctx.checkpoint, cfg.device, precision="fp32")
            cal = calibrate_discriminator(gen, ctx.val_x, ctx.val_y, cfg.calibration_fakes_per_class,
                                          cfg.calibration, cfg.seed)
            filters.append(DiscriminatorFilter(gen.discriminator, gen.device, cal, cfg))
        elif name == "label":
            filters.append(LabelFilter(model, cfg.label_min_confidence))
        elif name == "memorisation":
            fn = model.embed if model is not None else None
            filters.append(MemorisationFilter(ctx.train_x, ctx.train_y, ctx.num_classes, cfg.memorisation_percentile,
                                              cfg.memorisation_scope, cfg.memorisation_space, fn))
        elif name == "coverage":
            filters.append(CoverageFilter(ctx.train_x, ctx.train_y, ctx.num_classes, cfg.coverage_fraction,
                                          cfg.coverage_k, model.embed))
    return filters, info


def score_stream(filters: list[Any], shards) -> dict[str, np.ndarray]:
    """Score every shard with every filter (one shard's images in memory at a time)."""
    cols: dict[str, list[np.ndarray]] = {"index": [], "labels": []}
    for shard in shards:
        cols["index"].append(shard["index"])
        cols["labels"].append(shard["labels"].astype(np.int64))
        for f in filters:
            extra = {"logits": shard["scores"]} if isinstance(f, DiscriminatorFilter) and "scores" in shard else {}
            for k, v in f.score(shard["images"], shard["labels"].astype(np.int64), **extra).items():
                cols.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in cols.items()}


def decide(filters: list[Any], scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-filter accept masks, their AND, and the rank score merge uses (most trusted first).
    A ``sequential`` filter (coverage) picks among what the filters before it accepted."""
    labels = scores["labels"]
    out = dict(scores)
    accepted = np.ones(len(labels), dtype=bool)
    for f in filters:
        extra = {"prior": accepted.copy()} if getattr(f, "sequential", False) else {}
        m = np.asarray(f.accept(scores, labels, **extra), dtype=bool)
        out[f"accept_{f.name}"] = m
        accepted &= m
    out["accepted"] = accepted
    # Rank: calibrated D confidence if present, else label confidence, else none (sample order).
    if "discriminator" in scores:
        rank = scores["discriminator"]
    elif "label" in scores:
        rank = scores["label"]
    else:
        rank = np.zeros(len(labels))
    out["confidence"] = rank.astype(np.float32)
    out["logit"] = scores.get("discriminator_logit", np.zeros(len(labels), np.float32)).astype(np.float32)
    return out


def dcr_report(mem: MemorisationFilter, scores: dict[str, np.ndarray], val_x: np.ndarray) -> dict[str, Any]:
    """Distance to closest TRAIN record: synthetic vs the holdout (val) baseline, per space."""
    out = {}
    base = mem.distances(val_x) if len(val_x) else {}
    for sp in mem._refs:
        syn = scores[f"memorisation_{sp}_dist"].astype(np.float64)
        row = {"synthetic_median": float(np.median(syn)), "synthetic_p05": float(np.percentile(syn, 5))}
        if sp in base:
            b = base[sp]
            row.update({"holdout_median": float(np.median(b)), "holdout_p05": float(np.percentile(b, 5)),
                        "median_ratio": float(np.median(syn) / max(np.median(b), 1e-12)),
                        "synthetic_closer_than_holdout_p05": float((syn < np.percentile(b, 5)).mean())})
        out[sp] = row
    return out


def filter_samples(gen_dir: str | Path, cfg: FilterConfig, ctx: FilterContext
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Score every generated sample with every named filter and decide acceptance (on CPU over
    ``filter.threads`` torch threads; null: one per usable CPU)."""
    from augment.core.device import resolve_device
    from augment.core.parallel import inference_threads

    with inference_threads(cfg.threads, resolve_device(cfg.device)):
        return _filter_samples(gen_dir, cfg, ctx)


def _filter_samples(gen_dir: str | Path, cfg: FilterConfig, ctx: FilterContext
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    meta = load_generate_meta(gen_dir)
    class_names = meta["class_names"]
    filters, info = build_filters(ctx, cfg)
    scores = score_stream(filters, iter_shards(gen_dir, keys=("images", "labels", "index", "scores")))
    decisions = decide(filters, scores)
    label, accepted = decisions["labels"], decisions["accepted"]
    per_class = {}
    for c, name in enumerate(class_names):
        m = label == c
        row = {"generated": int(m.sum()), "accepted": int((m & accepted).sum()),
               "rejected": int((m & ~accepted).sum())}
        for f in filters:
            row[f"accepted_by_{f.name}"] = int((m & decisions[f"accept_{f.name}"]).sum())
        row["mean_confidence"] = float(decisions["confidence"][m].mean()) if m.any() else None
        per_class[name] = row
    n = len(label)
    report: dict[str, Any] = {
        "filters": list(cfg.filters),
        "mode": cfg.mode,
        "threshold": cfg.threshold,
        "top_fraction": cfg.top_fraction,
        "generated": int(n),
        "accepted": int(accepted.sum()),
        "acceptance_rate": float(accepted.mean()) if n else 0.0,
        "per_filter": {f.name: {"accepted": int(decisions[f"accept_{f.name}"].sum()),
                                "rejection_rate": float(1 - decisions[f"accept_{f.name}"].mean()) if n else 0.0,
                                **f.describe()} for f in filters},
        "per_class": per_class,
        **info,
    }
    for f in filters:
        if isinstance(f, MemorisationFilter):
            report["per_filter"]["memorisation"]["dcr"] = dcr_report(f, decisions, ctx.val_x)
    return decisions, report


def collect_grid_samples(gen_dir: str | Path, decisions: dict[str, np.ndarray], per_class: int,
                         class_names: list[str]) -> dict[str, np.ndarray]:
    """Up to ``per_class`` accepted and rejected images per class (best / worst by rank), streamed.

    One row per class, labelled with its name and its count of that kind (a short row is padded black).
    """
    num_classes = len(class_names)
    pick: dict[str, set[int]] = {"accepted": set(), "rejected": set()}
    lab, acc, rank = decisions["labels"], decisions["accepted"], decisions["confidence"]
    for c in range(num_classes):
        for kind, m, sign in (("accepted", acc, -1.0), ("rejected", ~acc, 1.0)):
            idx = np.flatnonzero((lab == c) & m)
            idx = idx[np.argsort(sign * rank[idx], kind="stable")][:per_class]
            pick[kind].update(int(decisions["index"][i]) for i in idx)
    found: dict[str, dict[int, tuple[int, np.ndarray]]] = {"accepted": {}, "rejected": {}}
    for shard in iter_shards(gen_dir, keys=("images", "labels", "index")):
        for j, g in enumerate(shard["index"]):
            for kind in found:
                if int(g) in pick[kind]:
                    found[kind][int(g)] = (int(shard["labels"][j]), shard["images"][j])
    grids = {}
    for kind, items in found.items():
        if not items:
            continue
        shape = next(iter(items.values()))[1].shape
        rows = []
        for c in range(num_classes):
            imgs = [im for _, (y, im) in sorted(items.items()) if y == c][:per_class]
            imgs += [np.zeros(shape, np.uint8)] * (per_class - len(imgs))
            rows.extend(imgs)
        scale = max(1, 64 // max(shape[0], 1))
        counts = [int(((lab == c) & (acc if kind == "accepted" else ~acc)).sum()) for c in range(num_classes)]
        labels = [f"{shorten(name)} ({n})" for name, n in zip(class_names, counts, strict=True)]
        grids[kind] = image_grid(np.stack(rows), per_class, pad=1, scale=min(scale, 8), row_labels=labels)
    return grids


def rank_score_name(report: dict[str, Any]) -> str:
    """What :func:`decide`'s rank score (``confidence``) is, for a plot title."""
    filters = report.get("per_filter", {})
    if "discriminator" in filters:
        cal = filters["discriminator"].get("calibration") or {}
        method = cal.get("method", "none")
        if method == "none":
            why = (": calibration needs held-out reals, prepare.val_fraction > 0"
                   if cal.get("n_real", 0) < 2 else "")
            return f"discriminator score per class (sigmoid of its logit, not calibrated{why})"
        return f"discriminator confidence per class (P(real), {method}-calibrated)"
    if "label" in filters:
        return "label confidence per class (classifier probability of the intended class)"
    return "no rank score (sample order): per class"


def save_filter_output(decisions: dict[str, np.ndarray], report: dict[str, Any], out_dir: str | Path,
                       class_names: list[str], grids: dict[str, np.ndarray] | None = None) -> None:
    from augment.core.plots import save_png, score_histogram

    with atomic_directory(out_dir) as tmp:
        atomic_save_npz(tmp / "decisions.npz", **decisions)
        atomic_write_json(tmp / "report.json", report)
        score_histogram(decisions["confidence"], decisions["labels"], decisions["accepted"], class_names,
                        tmp / "score_histogram.png", title=rank_score_name(report))
        for kind, grid in (grids or {}).items():
            save_png(grid, tmp / f"{kind}_grid.png")


# What decisions.npz must hold: kind and number of dimensions (the per-filter arrays are optional).
DECISIONS_SPEC = {"index": ("int", 1), "labels": ("int", 1), "accepted": ("bool", 1), "confidence": ("float", 1)}


def load_decisions(filter_dir: str | Path) -> dict[str, np.ndarray]:
    """``decisions.npz``, its schema checked: required arrays, dtypes, one length, finite floats."""
    from augment.core.files import check_arrays

    path = Path(filter_dir) / "decisions.npz"
    if not path.is_file():
        raise DataError(f"{path} not found: run the filter stage first (augment filter)")
    d = load_npz(path, producer="filter")
    n = check_arrays(path, d, DECISIONS_SPEC, producer="filter")
    for key, a in d.items():
        if key not in DECISIONS_SPEC and (a.ndim != 1 or len(a) != n):
            raise DataError(f"{path}: array {key!r} has shape {list(a.shape)}, expected ({n},); "
                            "re-run the filter stage (augment filter)")
    if n and ((d["labels"] < 0).any() or (d["index"] < 0).any()):
        raise DataError(f"{path}: negative labels or sample indices; re-run the filter stage (augment filter)")
    if len(np.unique(d["index"])) != n:
        raise DataError(f"{path}: a sample index is listed twice; re-run the filter stage (augment filter)")
    return d
