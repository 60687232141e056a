"""The ``merge`` stage: real TRAIN images + selected synthetic ones -> one augmented dataset.

Which synthetic samples: those accepted by every filter, most trusted first per class, cut to a
quota (``merge.quota``: crossfit -- the share chosen by :mod:`augment.selection.crossfit` --, all,
per_real, count, balanced, or tuned on the VAL split, see :mod:`augment.selection.tuning`). A
chosen share is realised as ``merge.realise`` says -- and as it was tested: ``replicate`` (default)
merges every accepted sample, the manifest's draw weights give the share, and every real image is
written ``k`` times (:func:`augment.selection.quota.replicate_factor`) so that the folder read as
is (ImageFolder, weights ignored) is that share as well; ``weights`` is the same without the copies
(read as is, the synthetic images dominate); ``count`` merges ``n_real x share / (1 - share)`` per
class, so the folder read uniformly is that share and every weight is equal. The copies of a real
image follow all the originals (the first ``summary["real"]`` real rows are the originals) and
carry the same ``origin``. Output formats (``merge.format``):

* ``png`` (default): ImageFolder ``<out>/<class>/real_*.png`` and ``<out>/<class>/syn_*.png``;
* ``npz``: compact shards ``<out>/shard_*.npz`` (images, labels, is_synthetic, weight) for large sets.

Both come with ``manifest.csv`` (provenance of every sample: real or synthetic, class, draw weight,
every filter's score, source checkpoint, generation seed, sample index, original file) and
``summary.json``; :class:`augment.data.torch_dataset.AugmentedDataset` reads either. Val and test images
never enter the merged set, and the test split never reaches the tuner. The folder is built
aside and swapped in whole; the raw dataset is only ever read.
"""

from __future__ import annotations

from contextlib import contextmanager

from pathlib import Path
from typing import Any

import numpy as np

from augment.config import ClassicalConfig, MergeConfig
from augment.core.files import (
    atomic_directory,
    atomic_save_npz,
    atomic_write_csv,
    atomic_write_json,
)
from augment.core.images import PngWriter
from augment.data.prepare import PreparedDataset
from augment.errors import DataError
from augment.generation.shards import iter_shards, load_generate_meta
from augment.selection.quota import (
    quota_counts,
    realised_share,
    replicate_factor,
    scored_as,
    select_for_share,
    select_per_class,
)
from augment.selection.tuning import tune_selection

MANIFEST_FIELDS = ["file", "class", "label", "source", "weight", "score", "confidence",
                   "score_discriminator", "score_label", "score_memorisation", "checkpoint_sha256",
                   "generate_seed", "sample_index", "origin", "shard", "offset"]


def select_synthetic(decisions: dict[str, np.ndarray], real_counts: np.ndarray, cfg: MergeConfig) -> np.ndarray:
    """Decision rows of the synthetic samples to merge under a fixed (non-tuned) quota."""
    k = len(real_counts)
    accepted_counts = np.bincount(decisions["labels"][decisions["accepted"]], minlength=k)[:k]
    counts = quota_counts(accepted_counts, real_counts, cfg)
    return select_per_class(decisions["labels"], decisions["accepted"], decisions["confidence"], counts)


def load_rows_images(gen_dir: str | Path, decisions: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Images of the given decision rows, in that order (streams the shards; holds only those)."""
    want = {int(decisions["index"][r]): i for i, r in enumerate(rows)}
    out: np.ndarray | None = None
    for shard in iter_shards(gen_dir, keys=("images", "index")):
        if out is None:
            out = np.zeros((len(rows), *shard["images"].shape[1:]), np.uint8)
        for j, g in enumerate(shard["index"]):
            i = want.get(int(g))
            if i is not None:
                out[i] = shard["images"][j]
    return out if out is not None else np.zeros((0, 1, 1, 1), np.uint8)


def draw_weights(is_synthetic: np.ndarray, share: float | None) -> np.ndarray:
    """Per-sample draw weights realising ``share``: they sum to 1 over the whole folder, and the
    synthetic rows together to ``share``; uniform when None."""
    from augment.downstream.classifier import mixing_weights

    w = mixing_weights(is_synthetic, share)
    if w is None:
        return np.full(len(is_synthetic), 1.0 / max(len(is_synthetic), 1))
    return w


def choose_synthetic(ds: PreparedDataset, gen_dir: str | Path, decisions: dict[str, np.ndarray],
                     cfg: MergeConfig, progress: bool = False, classical: ClassicalConfig = ClassicalConfig(),
                     selection: dict[str, Any] | None = None, real_counts: np.ndarray | None = None,
                     ) -> tuple[np.ndarray, float | None, dict[str, Any] | None, list[dict[str, Any]]]:
    """Decision rows to merge, the synthetic share, and (tuned / cross-fitted) the choice and its curve.

    A cross-fitted or tuned share is realised as ``cfg.realise`` says (``select_for_share`` over
    ``real_counts``, the merged real images per class) -- as the choice was scored. The returned
    share is the one the draw weights must realise (with ``count``: the uniform one)."""
    train_x, train_y = ds.subset("train")
    if real_counts is None:
        real_counts = np.bincount(train_y, minlength=ds.num_classes)
    if cfg.quota == "crossfit":
        if selection is None:
            raise DataError("merge.quota = crossfit needs the crossfit stage's selection.json: run "
                            "`augment crossfit` first")
        choice = {k: v for k, v in selection.items() if k != "table"}
        if scored_as(selection.get("realise", "weights")) != scored_as(cfg.realise):
            raise DataError(f"the crossfit stage's selection.json tested merge.realise = "
                            f"{selection.get('realise', 'weights')}, the params now say {cfg.realise}: re-run the "
                            "crossfit stage (augment crossfit)")
        curve: list[dict[str, Any]] = []  # the curve is the crossfit stage's own output
    elif cfg.quota == "tuned":
        val_x, val_y = ds.subset("val")  # tuning is scored on VAL; the test split is never read here
        cand = np.flatnonzero(decisions["accepted"])
        syn_x = load_rows_images(gen_dir, decisions, cand)
        syn_y = decisions["labels"][cand]
        choice, curve = tune_selection(train_x, train_y, val_x, val_y, syn_x, syn_y, decisions["confidence"][cand],
                                       ds.num_classes, cfg, classical, progress=progress)
    else:
        return select_synthetic(decisions, real_counts, cfg), cfg.synthetic_share, None, []
    pick, draw = select_for_share(decisions["labels"], decisions["accepted"], decisions["confidence"], real_counts,
                                  float(choice["synthetic_share"]), float(choice["fraction"]), cfg.realise)
    if not len(pick):
        return pick, 0.0, choice, curve
    return pick, (realised_share(int(real_counts.sum()), len(pick)) if draw is None else draw), choice, curve


def _score(decisions, key, r) -> str:
    return f"{float(decisions[key][r]):.6f}" if key in decisions else ""


def merge_dataset(ds: PreparedDataset, gen_dir: str | Path, decisions: dict[str, np.ndarray],
                  out_dir: str | Path, cfg: MergeConfig, progress: bool = False,
                  classical: ClassicalConfig = ClassicalConfig(), selection: dict[str, Any] | None = None,
                  curve_csv: str | Path | None = None) -> dict[str, Any]:
    """Write the merged dataset to ``out_dir`` (swapped in whole); with ``curve_csv``, also the
    tuning curve (:data:`CURVE_FIELDS`) there, written before the folder is swapped in so that a
    failure leaves both as they were."""
    gen_meta = load_generate_meta(gen_dir)
    # Only TRAIN images are merged (plus VAL with merge.refit_with_val, after tuning); never test.
    splits = (0, 1) if cfg.refit_with_val else (0,)
    keep = np.isin(ds.split, splits)
    train_x, train_y = ds.images[keep], ds.labels[keep]
    train_files = [f for f, s in zip(ds.files, ds.split) if s in splits]
    real_counts = np.bincount(train_y, minlength=ds.num_classes)
    pick, share, choice, curve = choose_synthetic(ds, gen_dir, decisions, cfg, progress, classical, selection,
                                                  real_counts)
    wanted = {int(decisions["index"][r]): int(r) for r in pick}  # global sample index -> decision row
    n_real, n_syn = len(train_x), len(pick)
    copies = replicate_factor(n_real, n_syn, share) if cfg.realise == "replicate" else 1
    # the draw weights spread each real image's weight over its copies: the same distribution
    weights = draw_weights(np.r_[np.zeros(n_real * copies, bool), np.ones(n_syn, bool)], share)
    rows: list[dict[str, Any]] = []
    writer = _Writer(cfg)
    with atomic_directory(out_dir) as tmp, _aborting(writer):
        writer.open(tmp, ds.class_names)
        k = 0
        for c in range(copies):  # the originals first, then each further copy of all of them
            tag = "" if c == 0 else f"_copy{c:03d}"
            for i, (img, y, origin) in enumerate(zip(train_x, train_y, train_files)):
                rel = f"{ds.class_names[y]}/real_{i:05d}{tag}_{Path(origin).stem[:40]}.png"
                row = {"file": rel, "class": ds.class_names[y], "label": int(y), "source": "real",
                       "weight": f"{weights[k]:.8g}", "origin": origin}
                rows.append(writer.add(row, img, False, weights[k]))
                k += 1
        for shard in iter_shards(gen_dir, keys=("images", "index")):
            for j, gidx in enumerate(shard["index"]):
                r = wanted.get(int(gidx))
                if r is None:
                    continue
                y = int(decisions["labels"][r])
                row = {"file": f"{ds.class_names[y]}/syn_{int(gidx):08d}.png", "class": ds.class_names[y],
                       "label": y, "source": "synthetic", "weight": f"{weights[k]:.8g}",
                       "score": _score(decisions, "logit", r), "confidence": _score(decisions, "confidence", r),
                       "score_discriminator": _score(decisions, "discriminator", r),
                       "score_label": _score(decisions, "label", r),
                       "score_memorisation": _score(decisions, "memorisation", r),
                       "checkpoint_sha256": gen_meta["checkpoint_sha256"], "generate_seed": gen_meta["seed"],
                       "sample_index": int(gidx)}
                rows.append(writer.add(row, shard["images"][j], True, weights[k]))
                k += 1
        writer.close()
        atomic_write_csv(tmp / "manifest.csv", rows, MANIFEST_FIELDS)
        syn_counts = np.bincount(decisions["labels"][pick], minlength=ds.num_classes) if n_syn else np.zeros(ds.num_classes, int)
        summary = {
            "real": int(n_real),
            "synthetic": int(n_syn),
            "real_copies": int(copies),
            # the synthetic fraction of a uniform draw over the folder (weights ignored)
            "uniform_share": realised_share(n_real * copies, n_syn),
            "quota": cfg.quota,
            "realise": cfg.realise,
            "real_splits": ["train", "val"] if cfg.refit_with_val else ["train"],
            "synthetic_share": share,
            "format": cfg.format,
            "tuning": choice,
            "per_class": {name: {"real": int(real_counts[c]), "synthetic": int(syn_counts[c])}
                          for c, name in enumerate(ds.class_names)},
            "class_names": ds.class_names,
            "image_shape": list(ds.image_shape),
            "prepared_sha256": ds.fingerprint(),  # evaluate refuses this folder after prepare changed
        }
        atomic_write_json(tmp / "summary.json", summary)
        if curve_csv is not None:  # empty unless merge.quota is tuned (a DVC plot)
            atomic_write_csv(curve_csv, curve, CURVE_FIELDS)
    summary["tuning_curve"] = curve
    return summary


CURVE_FIELDS = ["point", "synthetic_share", "fraction", "synthetic", "val_accuracy", "val_nll"]


@contextmanager
def _aborting(writer: "_Writer"):
    try:
        yield
    except BaseException:
        writer.abort()
        raise


class _Writer:
    """Writes samples as PNG files (ImageFolder) or into npz shards of ``shard_size``."""

    def __init__(self, cfg: MergeConfig):
        self.fmt, self.size = cfg.format, cfg.shard_size
        self.buf: dict[str, list] = {"images": [], "labels": [], "is_synthetic": [], "weight": []}
        self.shard = 0

    def open(self, tmp: Path, class_names: list[str]) -> None:
        self.tmp = tmp
        if self.fmt == "png":
            self.png = PngWriter()  # encodes + writes on a thread pool (io.PngWriter)
            for name in class_names:
                (tmp / name).mkdir(parents=True, exist_ok=True)

    def add(self, row: dict[str, Any], img: np.ndarray, synthetic: bool, weight: float) -> dict[str, Any]:
        if self.fmt == "png":
            self.png.write(self.tmp / row["file"], img)
            return row
        row = {**row, "file": "", "shard": f"shard_{self.shard:05d}.npz", "offset": len(self.buf["labels"])}
        for k, v in zip(self.buf, (img, row["label"], synthetic, weight)):
            self.buf[k].append(v)
        if len(self.buf["labels"]) >= self.size:
            self._flush()
        return row

    def _flush(self) -> None:
        if not self.buf["labels"]:
            return
        atomic_save_npz(self.tmp / f"shard_{self.shard:05d}.npz", images=np.stack(self.buf["images"]),
                        labels=np.asarray(self.buf["labels"], np.int64),
                        is_synthetic=np.asarray(self.buf["is_synthetic"], bool),
                        weight=np.asarray(self.buf["weight"], np.float64))
        self.buf = {k: [] for k in self.buf}
        self.shard += 1

    def close(self) -> None:
        if self.fmt == "npz":
            self._flush()
        else:
            self.png.close()

    def abort(self) -> None:
        """On an error: no background write may land after the unfinished folder is removed."""
        if self.fmt == "png" and hasattr(self, "png"):
            self.png.abort()
