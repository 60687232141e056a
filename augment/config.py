"""Typed configuration: ``params.yaml`` -> frozen dataclasses -> function arguments.

Config flows one way. Every stage reads exactly one group of ``params.yaml`` (named after the
stage); unknown keys, wrong types and out-of-range values fail loudly with the offending key
spelled out (``train.iterations``), before any work is done.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from augment.errors import ConfigError

# DiffAugment policy names (augment/training/diffaug.py registers one list of ops for each).
DIFFAUG_OPS = ("color", "translation", "cutout")
# Sample filters (augment/filters/apply.py builds one for each name), in their canonical order.
FILTER_NAMES = ("discriminator", "label", "memorisation", "coverage")


@dataclass(frozen=True)
class PrepareConfig:
    raw_dir: str = "data/raw"
    # Optional folder with a fixed, separately labelled test set (same class folders). When set,
    # raw_dir is split into train/val only and every test image comes from here.
    test_dir: Optional[str] = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2  # ignored when test_dir is set
    seed: int = 0
    # Images whose pixels differ from another image's by less than this mean absolute
    # difference (0-255 scale, after resizing) are reported as near duplicates.
    near_duplicate_tolerance: float = 2.0
    # What to do with unreadable/corrupt files: "error" stops with the file named; "skip"
    # skips them and lists every skipped file in the prepare report.
    on_bad_file: Literal["error", "skip"] = "error"
    max_image_pixels: int = 50_000_000
    # The same image (identical bytes or pixels) in two splits leaks the answer into training.
    # "drop" (default) keeps the test copy (else the train copy), drops the other copies and lists
    # them in the report; "error" stops, naming the files; "warn" only reports them.
    on_cross_split_duplicate: Literal["error", "warn", "drop"] = "drop"
    # "auto": grey when no image has colour -- an RGB file whose three channels agree within 2
    # levels (grey saved as RGB, as many exporters write it) counts as grey --, else RGB.
    # "grey": every image converted to grey (luminance); "rgb": every image as 3 channels.
    channels: Literal["auto", "grey", "rgb"] = "auto"

    def validate(self) -> None:
        if not self.raw_dir.strip():
            raise ConfigError("prepare.raw_dir is empty: set it to the folder of class folders")
        if self.test_dir is not None and not self.test_dir.strip():
            raise ConfigError("prepare.test_dir is empty: set it to a folder of test images, or to null to hold "
                              "out prepare.test_fraction of each class instead")
        _check_range("prepare.val_fraction", self.val_fraction, 0.0, 0.9)
        _check_range("prepare.test_fraction", self.test_fraction, 0.0, 0.9)
        if self.test_dir is None and self.val_fraction + self.test_fraction >= 0.95:
            raise ConfigError("prepare.val_fraction + prepare.test_fraction must be < 0.95")
        _check_range("prepare.near_duplicate_tolerance", self.near_duplicate_tolerance, 0.0, 255.0)
        _check_range("prepare.max_image_pixels", self.max_image_pixels, 1, 10**10)


@dataclass(frozen=True)
class TrainConfig:
    # "vae" (the default: on 100 digits at 28x28 its samples are as useful to a classifier as real
    # ones, CAS ~1.0, where the GAN's reach ~0.6; docs/results.md) or "gan".
    family: Literal["gan", "vae"] = "vae"
    # Network architecture: "small" (DCGAN-size, for scarce data), "resnet" (residual blocks), or
    # "auto" (small below 1,000 training images, else resnet; augment/training/sizing.py).
    arch: Literal["auto", "small", "resnet"] = "auto"
    # "classical": every real batch the generator sees is first augmented with the `classical`
    # params' transform (augment/data/classical.py; seeded per iteration, so a resumed run stays identical) --
    # more variety for a generator that sees only a few images per class. "none": raw images.
    real_augment: Literal["none", "classical"] = "classical"
    # null (auto) = sized to the data by augment.training.sizing (widths from the image count,
    # iterations ~ 10 per training image, 800..6000); a number overrides.
    iterations: Optional[int] = None
    batch_size: int = 64
    z_dim: int = 16  # the VAE's code: ~10 images per class fill no more (a GAN was run with 64)
    g_channels: Optional[int] = None
    d_channels: Optional[int] = None
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.99
    # DiffAugment policy applied to real AND fake images in both the D and the G step.
    diffaug: str = "translation,cutout"
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_every: int = 500
    sample_every: int = 500
    log_every: int = 50
    # Adaptive augmentation strength (ADA heuristic): p rises while the overfitting signal
    # r_t = E[sign(D(real))] is above ada_target and falls below it, by ada_rate per iteration.
    # null = fixed p = 1 (plain DiffAugment).
    ada_target: Optional[float] = 0.6
    ada_rate: float = 0.005
    # Mode-seeking regularisation (MSGAN): penalise two noise vectors of one class mapping to
    # near-identical images (counters intra-class collapse). 0 = off.
    ms_weight: float = 1.0
    # Conditional VAE (family: vae): KL weight, its linear warm-up from 0 over this many
    # iterations, and an optional adversarial term from the discriminator (VAE-GAN hybrid).
    vae_beta: float = 1.0
    vae_kl_warmup: int = 500
    vae_adv_weight: float = 0.0
    # CUDA only (the CPU path never changes): autocast precision and channels-last memory format.
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = True

    def validate(self) -> None:
        if self.iterations is not None:
            _check_range("train.iterations", self.iterations, 1, 10**8)
        if self.ada_target is not None:
            _check_range("train.ada_target", self.ada_target, -1.0, 1.0)
        _check_range("train.ada_rate", self.ada_rate, 0.0, 1.0)
        _check_range("train.ms_weight", self.ms_weight, 0.0, 1000.0)
        _check_range("train.vae_beta", self.vae_beta, 0.0, 1000.0)
        _check_range("train.vae_kl_warmup", self.vae_kl_warmup, 0, 10**8)
        _check_range("train.vae_adv_weight", self.vae_adv_weight, 0.0, 1000.0)

        _check_range("train.batch_size", self.batch_size, 2, 1 << 16)
        _check_range("train.z_dim", self.z_dim, 1, 4096)
        for key in ("g_channels", "d_channels"):
            if getattr(self, key) is not None:
                _check_range(f"train.{key}", getattr(self, key), 4, 4096)
        _check_range("train.lr_g", self.lr_g, 0.0, 1.0, low_open=True)
        _check_range("train.lr_d", self.lr_d, 0.0, 1.0, low_open=True)
        _check_range("train.beta1", self.beta1, 0.0, 0.9999)
        _check_range("train.beta2", self.beta2, 0.0, 0.9999)
        _check_range("train.ema_decay", self.ema_decay, 0.0, 0.99999)
        _check_range("train.checkpoint_every", self.checkpoint_every, 1, 10**8)
        _check_range("train.sample_every", self.sample_every, 1, 10**8)
        _check_range("train.log_every", self.log_every, 1, 10**8)
        bad = [n for n in (p.strip() for p in self.diffaug.split(",")) if n and n not in DIFFAUG_OPS]
        if bad:
            raise ConfigError(f"train.diffaug: unknown DiffAugment op(s) {bad}; known: {sorted(DIFFAUG_OPS)}")
        _check_device("train.device", self.device)


@dataclass(frozen=True)
class GenerateConfig:
    n_per_class: int = 200
    batch_size: int = 512
    shard_size: int = 4096
    seed: int = 1
    device: str = "auto"
    # Inference precision: auto = bf16 autocast on CUDA, fp32 on CPU (bit-reproducible);
    # bf16 = bf16 autocast on any device (scores shift slightly); fp32 = always full precision.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # CPU threads for the batched inference; null = one per usable CPU (a worker process keeps its share)
    threads: Optional[int] = None
    # How samples are drawn. "deform" (default; a VAE's or a GAN's checkpoint) = a training image of
    # the class warped by a smooth deformation registered between two other training images of the
    # class (class-dependent learned deformations, augment/models/deform.py); a class with fewer
    # than two training images falls back to the generator's own sampling. "prior" = the generator
    # itself: a VAE decodes codes from the per-class Gaussian fit to the training images' codes, a
    # GAN its N(0, I) noise. VAE only: "interpolate" = a random point between the codes of two
    # training images of the class (saved with the checkpoint); "residual" = an edit of a training
    # image of the class, x_i + D(z_i + residual_scale * L eps) - D(z_i) (z_i its code, L L^T the
    # class prior's covariance): the image's own detail plus the decoder's change for a nearby code.
    sampler: Literal["prior", "interpolate", "residual", "deform"] = "deform"
    # residual: how far the edit's code moves, in units of the class prior's spread (0 = a copy)
    residual_scale: float = 1.0
    # deform: each warp moves along its field by U(0.3, 1) x deform_scale; the fields live on a
    # deform_grid x deform_grid lattice; at most deform_pairs pairs per class are registered
    deform_scale: float = 1.0
    deform_grid: int = 6
    deform_pairs: int = 400
    # deform: the fraction of samples warped by a *random* field instead (each control point moved
    # N(0, s^2), s the root mean square of the class's registered fields: an elastic distortion of
    # the learnt fields' size, then U(0.3, 1) x deform_scale along it). 0 = learnt fields only.
    # docs/screens/deform_elastic.md: 0.5 gained +1.27 vs +1.13 on mnist28_10 (3 draws, overlapping),
    # +1.36 vs +1.61 on digits8_5; not the default unless the utility benchmark confirms a gain
    deform_random: float = 0.0

    def validate(self) -> None:
        _check_range("generate.n_per_class", self.n_per_class, 1, 10**9)
        _check_range("generate.batch_size", self.batch_size, 1, 1 << 20)
        _check_range("generate.shard_size", self.shard_size, 1, 1 << 24)
        _check_range("generate.residual_scale", self.residual_scale, 0.05, 4.0)
        _check_range("generate.deform_scale", self.deform_scale, 0.05, 2.0)
        _check_range("generate.deform_grid", self.deform_grid, 2, 32)
        _check_range("generate.deform_pairs", self.deform_pairs, 1, 100_000)
        _check_range("generate.deform_random", self.deform_random, 0.0, 1.0)
        _check_device("generate.device", self.device)
        _check_threads("generate.threads", self.threads)


@dataclass(frozen=True)
class FilterConfig:
    # Filters applied in order and combined by AND (augment/filters/apply.py); [] accepts everything.
    # Default []: with generate.sampler deform (a warp of a labelled image, its label kept) the
    # filters took away what the samples add -- docs/metrics.md, "Do warps learnt between images
    # of a class help?". Cross-fitting (merge.quota: crossfit) still decides whether anything is merged;
    # evaluate reports how close the samples are to the labelled images ("near/copies/dist").
    filters: list[str] = field(default_factory=list)
    # Discriminator acceptance on the CALIBRATED confidence P(real image of class c):
    # "threshold": >= threshold; "top_fraction": top fraction of each class; "drs": discriminator
    # rejection sampling (seeded), gamma at the drs_percentile of each class; "none": keep all.
    mode: Literal["threshold", "top_fraction", "drs", "none"] = "top_fraction"
    threshold: float = 0.5
    top_fraction: float = 0.5
    drs_percentile: float = 50.0
    # Platt scaling of D's logit on real VAL images vs fresh fakes ("none": raw sigmoid).
    calibration: Literal["platt", "none"] = "platt"
    calibration_fakes_per_class: int = 50
    # Label consistency: a classifier trained on real TRAIN images must give the sample's class
    # at least this probability (and predict it).
    label_min_confidence: float = 0.5
    classifier_steps: int = 300
    # Memorisation guard: reject samples whose nearest TRAIN image is closer than this percentile
    # of real train->train nearest-neighbour distances, per class or global, in pixel and/or
    # classifier-feature space.
    memorisation_percentile: float = 5.0
    memorisation_scope: Literal["per_class", "global"] = "per_class"
    memorisation_space: Literal["pixel", "feature", "both"] = "both"
    # Coverage: of the samples every earlier filter accepted, keep this fraction per class among those
    # inside the class's real manifold (within the coverage_k-NN radius of one of its TRAIN images,
    # label-classifier features), picked farthest-point first with the TRAIN images counting as
    # already covered (favours what the real data does not cover over near-duplicates of it).
    coverage_fraction: float = 0.5
    coverage_k: int = 3
    grid_per_class: int = 8
    seed: int = 0
    device: str = "auto"
    # CPU threads for scoring the samples; null = one per usable CPU (a worker process keeps its share)
    threads: Optional[int] = None
    # The label classifier's inference (label + memorisation filters): auto = bf16 autocast on CUDA,
    # fp32 on CPU; bf16 = bf16 on any device (faster on a CPU with native bf16; probabilities shift slightly)
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    def validate(self) -> None:
        for i, name in enumerate(self.filters):
            if name not in FILTER_NAMES:
                raise ConfigError(f"filter.filters[{i}] = {name!r}: expected one of {', '.join(FILTER_NAMES)}")
        if len(set(self.filters)) != len(self.filters):
            raise ConfigError(f"filter.filters = {self.filters!r}: a filter is listed twice")
        _check_range("filter.threshold", self.threshold, 0.0, 1.0)
        _check_range("filter.top_fraction", self.top_fraction, 0.0, 1.0, low_open=True)
        _check_range("filter.drs_percentile", self.drs_percentile, 0.0, 100.0)
        _check_range("filter.calibration_fakes_per_class", self.calibration_fakes_per_class, 1, 10**6)
        _check_range("filter.label_min_confidence", self.label_min_confidence, 0.0, 1.0)
        _check_range("filter.classifier_steps", self.classifier_steps, 1, 10**7)
        _check_range("filter.memorisation_percentile", self.memorisation_percentile, 0.0, 100.0)
        _check_range("filter.coverage_fraction", self.coverage_fraction, 0.0, 1.0, low_open=True)
        _check_range("filter.coverage_k", self.coverage_k, 1, 1000)
        if "coverage" in self.filters and self.filters[-1] != "coverage":
            raise ConfigError(f"filter.filters = {self.filters!r}: 'coverage' must come last (it picks among the "
                              "samples every other filter accepted)")
        _check_range("filter.grid_per_class", self.grid_per_class, 1, 1000)
        _check_device("filter.device", self.device)
        _check_threads("filter.threads", self.threads)


@dataclass(frozen=True)
class CrossfitConfig:
    """K-fold cross-fitted choice of the synthetic share (augment/selection/crossfit.py): every
    labelled image is used, by a fold generator and, once, as out-of-fold validation."""

    # null = auto: AUTO_FOLDS (5), fewer when a class has fewer labelled images (at least 2). More
    # folds: each fold generator sees more of the data (4/5 instead of 2/3), so its samples are
    # judged closer to how the final generator's will be (docs/screens/crossfit_rule.md)
    folds: Optional[int] = None
    shares: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5])  # 0.0 = real only (always tried)
    fractions: list[float] = field(default_factory=lambda: [1.0])  # top fraction of the accepted samples
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # classifier seeds per fold and candidate
    steps: int = 400  # classifier steps
    # the classifier the share is chosen with: smallcnn | lenet | mlp | "package.module:function"
    # (your own; augment/downstream/models.py). Set evaluate.model to the same.
    model: str = "smallcnn"
    # one-sided bound on the out-of-fold log-loss gain, held for all synthetic candidates
    # (shares x fractions) together, as multiple_testing says. 0.5 (default): the out-of-fold
    # estimate itself must be above min_gain -- plain cross-validated selection, with the
    # accuracy guard below against harm; 0.95: one-sided 95 % evidence of a gain (the default until
    # 2026-12-06: it left most gains of 50 to 200 labelled images unmerged, docs/stages.md)
    confidence: float = 0.5
    # how ``confidence`` is held over all synthetic candidates: "sequence" (default) tests them in
    # the grid's order (shares ascending; within a share, fractions descending), each at
    # ``confidence``, and stops at the first that fails (a fixed-sequence test: no candidate after
    # a failure is merged); "bonferroni" tests each at 1 - (1 - confidence) / m in any order
    multiple_testing: Literal["sequence", "bonferroni"] = "sequence"
    min_gain: float = 0.0  # the bound must exceed this for synthetic data to be merged
    # how out-of-fold accuracy may move for a candidate to be merged: "no_significant_loss"
    # (default): its two-sided ``accuracy_confidence`` interval must reach above 0 (lower only by
    # what a few images' noise explains); "not_lower": its mean must not be below real only's
    # (the rule until 2026-12-06: one image of 50 decided it)
    accuracy_guard: Literal["no_significant_loss", "not_lower"] = "no_significant_loss"
    accuracy_confidence: float = 0.95
    # the bound must also exceed min_gain after each candidate gets its own best temperature: a
    # log-loss gain that is only in how confident the classifier is does not count (default off
    # since 2026-12-06; on, it blocked gains the test split confirmed, docs/stages.md)
    calibrated_gain: bool = False
    # the one-sided level of that check (a guard against gains only in confidence; the evidence is
    # the raw bound's): 0.7 = the gain about half a standard error above min_gain (0.84: one
    # standard error, the default from commit 5cf49c5 to 7615806; 0.5: its mean above min_gain);
    # null = the raw bound's level (stricter)
    calibrated_confidence: Optional[float] = 0.7
    seed: int = 0  # fold assignment
    device: str = "auto"
    workers: Optional[int] = None  # processes for the fold generators and models; null = one per CPU (1 on CUDA)

    def validate(self) -> None:
        if self.folds is not None:
            _check_range("crossfit.folds", self.folds, 2, 20)
        _check_workers("crossfit.workers", self.workers)
        if not self.shares or not self.fractions or not self.seeds:
            raise ConfigError("crossfit.shares, crossfit.fractions and crossfit.seeds must not be empty")
        for i, v in enumerate(self.shares):
            _check_range(f"crossfit.shares[{i}]", v, 0.0, 0.99)
        for i, v in enumerate(self.fractions):
            _check_range(f"crossfit.fractions[{i}]", v, 0.0, 1.0, low_open=True)
        _check_range("crossfit.steps", self.steps, 1, 10**7)
        check_model_name("crossfit.model", self.model)
        _check_range("crossfit.confidence", self.confidence, 0.5, 0.9999)
        _check_range("crossfit.min_gain", self.min_gain, -10.0, 10.0)
        _check_range("crossfit.accuracy_confidence", self.accuracy_confidence, 0.5, 0.9999)
        if self.calibrated_confidence is not None:
            _check_range("crossfit.calibrated_confidence", self.calibrated_confidence, 0.5, 0.9999)
        _check_device("crossfit.device", self.device)


@dataclass(frozen=True)
class MergeConfig:
    # Synthetic images per class in the merged set (accepted samples, most trusted first):
    # "all": every accepted; "per_real": synthetic_per_real x the class's real count (null = all);
    # "count": synthetic_count; "balanced": top every class up to balance_factor x the largest
    # class's real count (rebalances an imbalanced set); "crossfit": the share and fraction the
    # crossfit stage chose by K-fold cross-fitting over every labelled image (the default; none
    # when no synthetic configuration beat real data); "tuned": fraction and synthetic share
    # chosen by downstream accuracy on the VAL split over the tune_* grid (never the test split).
    quota: Literal["all", "per_real", "count", "balanced", "tuned", "crossfit"] = "crossfit"
    # How a crossfit / tuned share is realised (and tested): "replicate" (default) = every accepted
    # sample (x fraction) is merged, the manifest's draw weights give the share, and every real
    # image is written as k copies so the folder read as is (ImageFolder, weights ignored) is that
    # share too (summary.json: real_copies, uniform_share); "weights" = the same without copies (a
    # consumer must sample by AugmentedDataset.weights: read as is, the synthetic images dominate);
    # "count" = n_real x share / (1 - share) samples per class, no copies -- fewer, less varied
    # samples (docs/results.md measured them).
    realise: Literal["replicate", "weights", "count"] = "replicate"
    synthetic_per_real: Optional[float] = None
    synthetic_count: int = 100
    balance_factor: float = 1.0
    # Share of each training batch drawn from synthetic images, recorded in summary.json for the
    # evaluate stage (used when evaluate.synthetic_share is null); null = in proportion to count.
    # With quota "tuned" it is the tuned value.
    synthetic_share: Optional[float] = None
    tune_fractions: list[float] = field(default_factory=lambda: [1.0, 0.5])
    tune_shares: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5])
    tune_seeds: list[int] = field(default_factory=lambda: [0])
    tune_steps: int = 400
    # tuned: the classifier the share is tuned for, as crossfit.model (smallcnn | lenet | mlp |
    # package.module:function); set it to the one you will train, like evaluate.model.
    tune_model: str = "smallcnn"
    # What picks the grid point: "accuracy" (whole val images; ties -> lower NLL -> less synthetic)
    # or "nll" (val log-loss: continuous, less noisy when the val split is a handful per class).
    tune_metric: Literal["accuracy", "nll"] = "accuracy"
    # Final refit: after tuning on VAL, also merge the val images as real ones, so the final
    # training set is everything not in the test split (evaluate then trains every variant on
    # train + val real images). Val stops being a clean estimate; the test split stays untouched.
    refit_with_val: bool = False
    format: Literal["png", "npz"] = "png"  # png: ImageFolder; npz: compact shards for large sets
    shard_size: int = 4096
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        if self.synthetic_per_real is not None:
            _check_range("merge.synthetic_per_real", self.synthetic_per_real, 0.0, 10_000.0)
        _check_range("merge.synthetic_count", self.synthetic_count, 0, 10**9)
        _check_range("merge.balance_factor", self.balance_factor, 0.0, 1000.0)
        if self.synthetic_share is not None:
            _check_range("merge.synthetic_share", self.synthetic_share, 0.0, 0.99)
        if not self.tune_fractions or not self.tune_shares or not self.tune_seeds:
            raise ConfigError("merge.tune_fractions, merge.tune_shares and merge.tune_seeds must not be empty")
        for i, f in enumerate(self.tune_fractions):
            _check_range(f"merge.tune_fractions[{i}]", f, 0.0, 1.0, low_open=True)
        for i, f in enumerate(self.tune_shares):
            _check_range(f"merge.tune_shares[{i}]", f, 0.0, 0.99)
        _check_range("merge.tune_steps", self.tune_steps, 1, 10**7)
        check_model_name("merge.tune_model", self.tune_model)
        _check_range("merge.shard_size", self.shard_size, 1, 1 << 24)
        _check_device("merge.device", self.device)


@dataclass(frozen=True)
class EvaluateConfig:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # Every variant trains for the same number of optimisation steps, so adding data never
    # silently means "more training".
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 32  # the SmallCNN's
    # the classifier variants (a)-(d) train: smallcnn | lenet | mlp | "package.module:function"
    # (augment/downstream/models.py); the quality metrics' feature extractor stays the SmallCNN
    model: str = "smallcnn"
    # Fraction of each batch drawn from synthetic images in variants (c)/(d); null = in
    # proportion to their count in the merged set.
    synthetic_share: Optional[float] = None
    device: str = "auto"
    # Synthetic-image quality (FD, precision/recall/density/coverage, CAS, diversity) in the
    # feature space of a classifier trained on the real train split; adds ~3 classifier trainings.
    quality: bool = True
    # Filter ablation (augment/evaluation/ablation.py): variant (d) with no filter, each filter alone and all
    # filters, over ablation_seeds x ablation_steps (fewer than the main table to keep repro short);
    # synthetic share: the merge stage's, else ablation_share.
    ablation: bool = True
    ablation_seeds: list[int] = field(default_factory=lambda: [0, 1])
    ablation_steps: int = 500
    ablation_share: float = 0.5
    workers: Optional[int] = None  # processes for the variant x seed models; null = one per CPU (1 on CUDA)

    def validate(self) -> None:
        if not self.seeds:
            raise ConfigError("evaluate.seeds must list at least one seed")
        _check_workers("evaluate.workers", self.workers)
        _check_range("evaluate.steps", self.steps, 1, 10**7)
        if self.synthetic_share is not None:
            _check_range("evaluate.synthetic_share", self.synthetic_share, 0.0, 0.99)
        _check_range("evaluate.batch_size", self.batch_size, 1, 1 << 16)
        _check_range("evaluate.lr", self.lr, 0.0, 10.0, low_open=True)
        _check_range("evaluate.width", self.width, 1, 4096)
        check_model_name("evaluate.model", self.model)
        _check_device("evaluate.device", self.device)
        if self.ablation and not self.ablation_seeds:
            raise ConfigError("evaluate.ablation_seeds must list at least one seed when evaluate.ablation is true")
        _check_range("evaluate.ablation_steps", self.ablation_steps, 1, 10**7)
        _check_range("evaluate.ablation_share", self.ablation_share, 0.0, 0.99, low_open=True)


@dataclass(frozen=True)
class ClassicalConfig:
    """Strength (and engine) of the classical augmentation: the baseline (b) every result is
    compared against, and the augmentation of every downstream classifier the pipeline trains
    (the label filter's, the tuner's, the evaluation's variants (b) and (d))."""

    rotate: float = 10.0  # degrees, +-
    translate: float = 0.1  # fraction of the size, +-
    scale: float = 0.1  # +- around 1
    # "batched": the same transform and parameter distributions, drawn and applied a batch at a time
    # (augment/data/classical.py; ~20x faster). "albumentations": the albumentations Compose called
    # per image -- the random stream of runs made before the batched engine existed.
    engine: Literal["batched", "albumentations"] = "batched"
    # What fills the corners a rotation or shift uncovers. "auto": each image's own background, the
    # per-channel median of its outermost pixel ring (0 on black-background data such as digits, so
    # the same output as "zero" there); "zero": black, as albumentations' Affine fills (the only
    # fill of engine albumentations). A black frame on light-background images is learnt by the
    # generator (train.real_augment: classical) and seen by every downstream classifier.
    border: Literal["auto", "zero"] = "auto"
    # Elastic distortion after the affine warp, off at 0 (the default): every image warped by its own
    # random smooth field, a 6x6 lattice of control-point displacements N(0, elastic^2) (a fraction of
    # the image side, per axis) upsampled bicubically. A stricter baseline (b) for a sampler that warps
    # (generate.sampler: deform learns fields of about 0.05 of the side at 28x28): does the synthetic
    # data beat real + classical when classical includes random warps? Engine batched only.
    elastic: float = 0.0

    def validate(self) -> None:
        _check_range("classical.rotate", self.rotate, 0.0, 180.0)
        _check_range("classical.elastic", self.elastic, 0.0, 0.25)
        _check_range("classical.translate", self.translate, 0.0, 0.5)
        _check_range("classical.scale", self.scale, 0.0, 0.9)
        if self.engine == "albumentations" and self.border != "zero":
            raise ConfigError(f"classical.border = {self.border!r} needs classical.engine: batched; engine "
                              f"albumentations (the random stream of older runs) fills with 0: set classical.border: zero")
        if self.engine == "albumentations" and self.elastic > 0:
            raise ConfigError(f"classical.elastic = {self.elastic} needs classical.engine: batched; engine "
                              f"albumentations (the random stream of older runs) has no elastic distortion")


@dataclass(frozen=True)
class PipelineConfig:
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    crossfit: CrossfitConfig = field(default_factory=CrossfitConfig)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            group = getattr(self, f.name)
            check_numbers(group, f.name)
            group.validate()


# Seeds feed numpy/torch generators, which take unsigned 32-bit (numpy) or 64-bit values.
SEED_MAX = 2**32 - 1


def _is_seed_field(name: str) -> bool:
    return name == "seed" or name == "seeds" or name.endswith("_seed") or name.endswith("_seeds")


def check_numbers(group: Any, prefix: str) -> None:
    """Checks every field of one config group gets, whatever the field (new ones included):
    floats finite (NaN passes every ``<``/``>`` test), seeds in [0, 2**32 - 1]."""
    for f in dataclasses.fields(group):
        value = getattr(group, f.name)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for i, v in items:
            name = f"{prefix}.{f.name}" + (f"[{i}]" if i is not None else "")
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{name} = {v!r}: expected a finite number")
            if _is_seed_field(f.name) and isinstance(v, int) and not isinstance(v, bool):
                _check_range(name, v, 0, SEED_MAX)


def check_cross_group(cfg: "PipelineConfig") -> None:
    """Constraints between groups (or between a group and a later stage), checked at load time,
    before the first stage runs: one place for all of them."""
    p, m = cfg.prepare, cfg.merge
    if m.quota == "tuned" and p.val_fraction <= 0:
        raise ConfigError("merge.quota = 'tuned' needs a val split to tune on, but prepare.val_fraction = "
                          f"{p.val_fraction!r}; set prepare.val_fraction > 0 or choose another merge.quota")
    if m.refit_with_val and p.val_fraction <= 0:
        raise ConfigError("merge.refit_with_val = true needs a val split, but prepare.val_fraction = "
                          f"{p.val_fraction!r}; set prepare.val_fraction > 0 or merge.refit_with_val: false")
    if p.test_dir is None and p.test_fraction <= 0:
        raise ConfigError("prepare.test_fraction = 0 leaves no test split for the evaluate stage; "
                          "set prepare.test_fraction > 0 or prepare.test_dir")
    # A user's classifier ("package.module:function") is imported now, so a typo fails before the
    # generator trains, not hours later in the crossfit or evaluate stage.
    for name, value in (("crossfit.model", cfg.crossfit.model), ("evaluate.model", cfg.evaluate.model),
                        ("merge.tune_model", cfg.merge.tune_model)):
        if value not in MODEL_NAMES:
            import_model_factory(name, value)


def _check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} = {value!r}: expected a finite number")
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} = {value!r} is out of range {bracket}{low}, {high}]")


def _float_hint(text: str) -> str:
    """How to write ``text`` (a number YAML read as a string, e.g. ``2e-4``) so that YAML reads a
    number: the user's own digits with a decimal point and a signed exponent, or in full."""
    import math

    try:
        number = float(text)
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""
    mantissa, _, exponent = text.strip().lower().partition("e")
    if exponent:
        if "." not in mantissa:
            mantissa += ".0"
        if exponent[0] not in "+-":
            exponent = "+" + exponent
        return f" (YAML reads {text} as text: write it as {mantissa}e{exponent} or {number!r})"
    return f" (YAML reads {text} as text: write it as {number!r})"


def _check_workers(name: str, value: Optional[int]) -> None:
    if value is not None and not 1 <= value <= 512:
        raise ConfigError(f"{name} = {value}: expected a number of processes >= 1, or null (one per CPU)")


def _check_threads(name: str, value: Optional[int]) -> None:
    if value is not None and not 1 <= value <= 1024:
        raise ConfigError(f"{name} = {value}: expected a number of threads >= 1, or null (one per CPU)")


# Downstream classifiers (crossfit.model, evaluate.model; augment/downstream/models.py): built-in
# names, or a user's "package.module:function" (in_channels, num_classes, size) -> torch.nn.Module.
MODEL_NAMES = ("smallcnn", "lenet", "mlp")
_MODEL_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def check_model_name(name: str, value: str) -> None:
    """Syntax of a ``*.model`` value (nothing is imported: :func:`import_model_factory` does)."""
    if isinstance(value, str) and (value in MODEL_NAMES or _MODEL_IMPORT_PATH.match(value)):
        return
    raise ConfigError(f"{name} = {value!r}: expected {', '.join(MODEL_NAMES)} or 'package.module:function' "
                      "(a function (in_channels, num_classes, size) -> torch.nn.Module)")


def import_model_factory(name: str, value: str) -> Any:
    """The callable a ``package.module:function`` value of ``name`` names, imported; a missing
    module or attribute, or one that is not callable, is a :class:`ConfigError` naming ``name``."""
    import importlib

    check_model_name(name, value)
    module_name, _, attr = value.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{name} = {value!r}: cannot import module {module_name!r} ({exc}); is it installed "
                          "or on PYTHONPATH?") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{name} = {value!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{name} = {value!r}: {attr!r} is not callable; expected a function "
                          "(in_channels, num_classes, size) -> torch.nn.Module")
    return obj


def _check_device(name: str, value: str) -> None:
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return
    raise ConfigError(f"{name} = {value!r}: expected auto, cpu, cuda or cuda:N")


def _coerce(name: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, arg, value)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name} = {value!r}: expected one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name} = {value!r}: expected a list")
        return [_coerce(f"{name}[{i}]", args[0], v) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, name)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} = {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} = {value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = _float_hint(value) if isinstance(value, str) else ""
            raise ConfigError(f"{name} = {value!r}: expected a number{hint}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} = {value!r}: expected a string")
        return value
    raise ConfigError(f"{name}: unsupported config type {tp}")  # pragma: no cover


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    where = prefix or "params"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)  # a YAML key may be a number: sort them as text
    if unknown:
        full = ", ".join(f"{prefix}.{k}" if prefix else str(k) for k in unknown)
        raise ConfigError(f"unknown parameter(s) {full}; known: {', '.join(sorted(names))}")
    kwargs = {
        k: _coerce(f"{prefix}.{k}" if prefix else k, hints[k], v) for k, v in data.items()
    }
    return cls(**kwargs)


# params.yaml is a few KB; anything far larger, or whose aliases expand to a huge tree (the
# "billion laughs"), is refused before it is built.
MAX_PARAMS_BYTES = 1 << 20
MAX_PARAMS_NODES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                line = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if line is not None:
                raise ConfigError(f"duplicate key {key!r} (lines {line} and {key_node.start_mark.line + 1}); "
                                  "YAML would silently keep the last one: remove one of them")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: Any, limit: int) -> int:
    """Nodes in the tree ``node`` expands to (aliases counted each time), stopping past ``limit``."""
    count, stack = 0, [node]
    while stack:
        n = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack.extend((k, v))
    return count


def parse_params_text(text: str, where: str) -> Any:
    """YAML text -> Python objects, refusing duplicate keys and alias bombs (ConfigError)."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_PARAMS_NODES) > MAX_PARAMS_NODES:
            raise ConfigError(f"{where}: expands to more than {MAX_PARAMS_NODES} values (aliases nested too "
                              "deep?); refusing to build it")
        return loader.construct_document(node)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if not str(exc).startswith(where) else str(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a parameter file") from None
    finally:
        loader.dispose()


def load_params(path: str | Path = "params.yaml") -> PipelineConfig:
    """Read ``params.yaml`` into a validated :class:`PipelineConfig`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} does not exist")
    if path.stat().st_size > MAX_PARAMS_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes is far too large for a parameter file "
                          f"(limit {MAX_PARAMS_BYTES}); is it the right file?")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    raw = parse_params_text(text, str(path))
    if raw is None:
        raise ConfigError(f"{path} is empty (no parameters); refusing to run on built-in defaults -- "
                          "restore it (git checkout params.yaml) or list the parameters")
    cfg = from_dict(PipelineConfig, raw, "")
    cfg.validate()
    check_cross_group(cfg)
    return cfg


def under_root(path: str, root: str | Path) -> str:
    """``path`` read under ``root`` when relative (a flow's params file and dataset folders under
    its ``workdir``); an absolute path as it is."""
    return path if Path(path).is_absolute() else str(Path(root) / path)


def root_config(cfg: PipelineConfig, root: str | Path) -> PipelineConfig:
    """``cfg`` with its relative dataset folders (``prepare.raw_dir``/``test_dir``) under ``root``,
    as the stages' output paths are (:meth:`augment.pipeline.paths.Paths.rooted`)."""
    def under(p: str | None) -> str | None:
        return None if p is None else under_root(p, root)

    prep = dataclasses.replace(cfg.prepare, raw_dir=under(cfg.prepare.raw_dir), test_dir=under(cfg.prepare.test_dir))
    return dataclasses.replace(cfg, prepare=prep)


def apply_overrides(cfg: PipelineConfig, overrides: dict[str, Any] | None) -> PipelineConfig:
    """``cfg`` with dotted-key overrides applied (``{"filter.top_fraction": 0.3}``), checked
    exactly as ``params.yaml`` is: the same type coercion (:func:`from_dict`), the same range
    checks (``validate``), the same checks across groups (:func:`check_cross_group`, which also
    imports a user's ``crossfit.model``/``evaluate.model``), and an unknown group or key is a
    :class:`ConfigError` naming it.

    This is what a calling flow passes as ``augment_pipeline(overrides=...)`` -- the Prefect
    counterpart of ``dvc exp run -S filter.top_fraction=0.3``.
    """
    if not overrides:
        return cfg
    if not isinstance(overrides, dict):
        raise ConfigError(f"overrides: expected a mapping of 'group.key' to values, got {type(overrides).__name__}")
    raw = dataclasses.asdict(cfg)
    groups = sorted(raw)
    for key, value in overrides.items():
        if not isinstance(key, str) or key.count(".") != 1 or not all(key.split(".")):
            raise ConfigError(f"override {key!r}: expected 'group.key', e.g. 'filter.top_fraction'")
        group, name = key.split(".")
        if group not in raw:
            raise ConfigError(f"unknown parameter {key} (override): no group {group!r}; groups: {', '.join(groups)}")
        if name not in raw[group]:
            raise ConfigError(f"unknown parameter {key} (override); known in {group}: {', '.join(sorted(raw[group]))}")
        raw[group][name] = value
    new = from_dict(PipelineConfig, raw, "")
    new.validate()
    check_cross_group(new)  # as load_params does: a bad combination fails now, not after training
    return new


def software_versions() -> dict[str, str]:
    """The versions a run's numbers depend on: augment, torch, numpy, opencv and albumentations
    (a newer opencv wheel alone changed a trained generator's last digits; docs/operations.md,
    "Repeating a run") and python. Recorded in run records and checkpoints, never checked.
    Looked up once per process (every resume checkpoint of a training run records them)."""
    return dict(_software_versions())


@functools.lru_cache(maxsize=1)
def _software_versions() -> dict[str, str]:
    import importlib
    import platform

    from augment import __version__

    def version(module: str) -> str:
        try:
            return str(importlib.import_module(module).__version__)
        except Exception:  # noqa: BLE001 -- a record, never a reason to fail the run
            return "absent"

    def dist_version(dist: str) -> str:  # without importing it (albumentations' import checks for updates online)
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as meta_version

        try:
            return meta_version(dist)
        except PackageNotFoundError:
            return "absent"

    return {"augment": __version__, "torch": version("torch"), "numpy": version("numpy"),
            "opencv": version("cv2"), "albumentations": dist_version("albumentations"),
            "python": platform.python_version()}


def effective_params_yaml(cfg: PipelineConfig, source: str) -> str:
    """``cfg`` as a params file that repeats the run (every group, every key), headed by where it
    came from and the versions and thread count it ran with (``metrics/run_params.yaml`` of
    ``augment run``, ``metrics/flow_params.yaml`` of the flow)."""
    import torch

    versions = ", ".join(f"{k} {v}" for k, v in software_versions().items())
    head = (f"# effective parameters of the run that wrote these outputs ({source})\n"
            f"# {versions}, torch threads {torch.get_num_threads()}\n"
            "# to repeat it: copy this file out of the outputs and pass it as --params\n")
    return head + yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


def load_config(params_path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """``params.yaml`` with ``overrides`` applied, validated (see :func:`apply_overrides`)."""
    return apply_overrides(load_params(params_path), overrides)
