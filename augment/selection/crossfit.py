"""Cross-fitted choice of how much synthetic data to merge -- with every labelled image used.

A held-out val split takes images away from the generator (with 10 labelled images per class a
25 % val split leaves the generator 8 and the tuner 2 per class, and one image decides the
choice). Instead, the labelled non-test images are cut into ``K`` stratified folds; for each
fold ``k``:

1. a generator is trained on the other ``K - 1`` folds only (the same ``train`` config as the
   final one), its samples are generated and filtered with the same ``generate`` and ``filter``
   configs as the final pipeline (filters fitted on those folds only);
2. for every candidate (synthetic share x kept fraction, share 0 = real only) and every
   classifier seed, the downstream model (real + classical augmentation + synthetic at that
   share, :func:`augment.downstream.classifier.train_downstream`) is trained on the other folds
   and scored on fold ``k``, which neither it nor the generator saw. The share is realised as
   merge will realise it (``merge.realise``, :func:`augment.selection.quota.select_for_share`):
   every accepted sample at per-image draw weights, or ``n_real x share / (1 - share)``
   top-ranked samples per class drawn uniformly with the reals.

Every labelled image thus gets one out-of-fold prediction per candidate and seed. A candidate
with synthetic data is chosen when it beats real-only on the out-of-fold log-loss (paired over
images) by more than ``min_gain`` and its out-of-fold accuracy passes ``crossfit.accuracy_guard``;
otherwise the choice is share 0 -- *merge no synthetic image* -- and the report says so.

By default (``crossfit.confidence: 0.5``, since 2026-12-06) "beats" means the out-of-fold
*estimate*: plain cross-validated selection, the better score wins. Its guard against harm is
accuracy: a candidate whose out-of-fold accuracy is significantly lower (its two-sided
``accuracy_confidence`` interval wholly below 0; ``accuracy_guard: no_significant_loss``) is never
merged. The earlier default asked for evidence instead -- a one-sided 95 % bound above
``min_gain``, accuracy not lower by even one image, and the same at each candidate's best
temperature -- which 50 to 200 labelled images cannot give for a one-point gain: it left most
gains the test split later confirmed unmerged (docs/stages.md, docs/screens/crossfit_estimate.md).
``confidence: 0.95``, ``accuracy_guard: not_lower`` and ``calibrated_gain: true`` restore it.

At a ``confidence`` above 0.5 the bound holds for all candidates together, so a longer grid of
shares does not raise the chance of merging data that does not help: by default
(``crossfit.multiple_testing: sequence``) the candidates are tested in the grid's fixed order
(shares ascending; within a share, fractions descending), each at ``confidence``, and testing
stops at the first that fails -- a fixed-sequence test, which holds ``confidence`` over the grid
because a wrong merge needs the first unhelpful candidate in the order to pass, and loses no power
on the first candidate; with ``bonferroni`` each of the ``m`` synthetic candidates is tested at
``1 - (1 - confidence) / m`` (:func:`candidate_confidence`) in any order. With
``crossfit.calibrated_gain`` the log-loss gain must also hold after each candidate's
probabilities get their own best temperature
(:func:`temperature_scaled_nll`): synthetic images can change how confident a classifier is,
which changes its log-loss without making it right more often. That check is a guard, not the
evidence: the gain at the best temperatures must be above ``min_gain`` by its one-sided bound at
``crossfit.calibrated_confidence`` (0.7: about half a standard error); ``null`` uses the raw level.
(Where real only is right on every out-of-fold
image, the best temperature drives both log-losses to about 0 and nothing is merged.) The final
generator is then trained on every labelled image (the ``train`` stage) and the merge stage applies
the chosen share and fraction.

The TEST split never reaches this module: the stage adapter passes the labelled train images only.
"""

from __future__ import annotations

import math
import os
import stat
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from augment.config import (
    ClassicalConfig,
    CrossfitConfig,
    FilterConfig,
    GenerateConfig,
    TrainConfig,
)
from augment.errors import DataError


AUTO_FOLDS = 5


def resolve_folds(labels: np.ndarray, folds: int | None, class_names: list[str] | None = None) -> int:
    """``crossfit.folds``, or with null (auto) :data:`AUTO_FOLDS`, lowered to the smallest class's
    count of labelled images (at least 2, so every image is held out once)."""
    if folds is not None:
        return int(folds)
    counts = np.bincount(labels)
    present = counts[counts > 0]
    if not len(present):
        raise DataError("crossfit: no labelled images")
    if present.min() < 2:
        short = [int(c) for c in np.flatnonzero(counts == 1)]
        named = [class_names[c] for c in short] if class_names else short
        raise DataError(f"cross-fitting needs at least 2 labelled images in every class; class(es) {named} have 1: "
                        "add images, or choose another merge.quota")
    return int(min(AUTO_FOLDS, present.min()))


def stratified_folds(labels: np.ndarray, k: int, seed: int, class_names: list[str] | None = None) -> np.ndarray:
    """Fold id (0..k-1) per image: each class spread as evenly as possible over the folds."""
    counts = np.bincount(labels)
    short = [int(c) for c in np.flatnonzero((counts > 0) & (counts < k))]
    if short:
        named = [class_names[c] for c in short] if class_names else short
        raise DataError(f"crossfit.folds = {k} needs at least {k} labelled images in every class; class(es) "
                        f"{named} have {[int(counts[c]) for c in short]}: lower crossfit.folds "
                        "(minimum 2) or add images")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5077]))
    folds = np.empty(len(labels), np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = (np.arange(len(idx)) + offset) % k  # rotate so small classes do not all pile in fold 0
        offset += len(idx)
    return folds


def candidates(cfg: CrossfitConfig) -> list[tuple[float, float]]:
    """(share, fraction) grid; share 0 (real only) always first and only once."""
    points = [(0.0, 1.0)]
    for share in sorted({s for s in cfg.shares if s > 0}):
        for frac in sorted(set(cfg.fractions), reverse=True):
            points.append((float(share), float(frac)))
    return points


def _t_quantile(conf: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(conf, max(dof, 1)))


def paired_gain(diff: np.ndarray, confidence: float) -> dict[str, float]:
    """Mean of per-image paired differences and its one-sided lower / two-sided bounds."""
    n = len(diff)
    mean = float(diff.mean()) if n else 0.0
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else float("inf")
    lower = mean - _t_quantile(confidence, n - 1) * se
    half = _t_quantile(0.5 + confidence / 2, n - 1) * se
    return {"mean": mean, "lower": lower, "ci_low": mean - half, "ci_high": mean + half}


def candidate_confidence(confidence: float, candidates: int) -> float:
    """The one-sided level each of ``candidates`` synthetic candidates is tested at so that, when
    none of them helps, the chance that any is merged stays at most ``1 - confidence`` (Bonferroni:
    any candidate that passes is merged, so the errors add up). One candidate: ``confidence``."""
    return 1.0 - (1.0 - confidence) / max(int(candidates), 1)


def accuracy_ok(row: dict[str, Any], guard: str = "not_lower") -> bool:
    """Whether a candidate's out-of-fold accuracy allows merging it: ``not_lower``: its mean gain is
    not below 0; ``no_significant_loss``: that, or its two-sided interval (``accuracy_gain_ci_high``,
    at ``crossfit.accuracy_confidence``) reaches above 0 -- lower only by what noise explains."""
    if row["accuracy_gain"] >= 0.0:
        return True
    return guard == "no_significant_loss" and row.get("accuracy_gain_ci_high", -math.inf) > 0.0


def passes(row: dict[str, Any], min_gain: float, calibrated: bool, guard: str = "not_lower") -> bool:
    """A synthetic candidate passes when its log-loss gain bound -- and, with ``calibrated``, the
    bound at its best temperature (``scaled_nll_gain_check``, at ``calibrated_confidence``; a table
    written before it existed: ``scaled_nll_gain_lower``) -- is above ``min_gain`` and its accuracy
    passes ``guard`` (:func:`accuracy_ok`)."""
    check = row.get("scaled_nll_gain_check", row.get("scaled_nll_gain_lower"))
    return (row["nll_gain_lower"] > min_gain and accuracy_ok(row, guard)
            and (not calibrated or check > min_gain))


def choose(table: list[dict[str, Any]], min_gain: float, calibrated: bool, sequence: bool = False,
           guard: str = "not_lower") -> dict[str, Any]:
    """The chosen row of an out-of-fold table (``table[0]``, real only, when none passes): of the
    synthetic candidates that pass (:func:`passes`), the largest log-loss gain (the smaller share on
    a tie). ``sequence``: only those before the first candidate that fails, in the table's order
    (a fixed-sequence test; module docstring)."""
    ok = []
    for r in table[1:]:
        if passes(r, min_gain, calibrated, guard):
            ok.append(r)
        elif sequence:
            break
    return max(ok, key=lambda r: (r["nll_gain"], -r["synthetic_share"])) if ok else table[0]


def _level_text(confidence: float, level: float, sequence: bool = False) -> str:
    if sequence:
        return f"{confidence:.0%}"
    if math.isclose(confidence, level):
        return f"{confidence:.0%}"
    return f"{100 * level:.4g}% (= {confidence:.0%} over all candidates)"


def temperature_scaled_nll(prob: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-image log-loss after the one temperature that minimises it (and that temperature).

    ``prob``: class probabilities ``(seeds, images, classes)``; ``labels``: ``(images,)``. The
    log-probabilities are divided by ``T`` and re-normalised (the predicted class never changes);
    ``T`` is fitted on all of them at once, in log space over [1/20, 20]. Returns the log-loss per
    image averaged over seeds. It measures how well a model *ranks* the classes, not how well its
    confidence is scaled: two candidates compared so differ in what accuracy can see."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(prob, 1e-12, 1.0))
    idx = np.arange(len(labels))

    def per_image(log_t: float) -> np.ndarray:
        z = logp / math.exp(log_t)
        z = z - z.max(axis=-1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=-1))
        return (lse - z[:, idx, labels]).mean(axis=0)

    best = minimize_scalar(lambda t: float(per_image(t).mean()), bounds=(-math.log(20), math.log(20)),
                           method="bounded", options={"xatol": 1e-4})
    return per_image(float(best.x)), float(math.exp(best.x))


def accuracy_resolution(table: list[dict[str, Any]]) -> float | None:
    """How finely the cross-fit sees accuracy: the median half-width of the 95 % interval of the
    out-of-fold accuracy gain over the synthetic candidates (a fraction; None without one).

    With ~100 labelled images this is a few points, so a true gain or loss below it is invisible
    to any out-of-fold rule; the report says so instead of letting "merging none" read as "harmful"."""
    widths = [(r["accuracy_gain_ci_high"] - r["accuracy_gain_ci_low"]) / 2 for r in table[1:]
              if math.isfinite(r["accuracy_gain_ci_high"]) and math.isfinite(r["accuracy_gain_ci_low"])
              and sum(r.get("synthetic_per_fold") or [1]) > 0]  # a candidate with no sample tests nothing
    widths = [w for w in widths if w > 0]  # a candidate that changed no prediction measures no noise level
    return float(np.median(widths)) if widths else None


def fold_candidates(x: np.ndarray, y: np.ndarray, class_names: list[str], train_cfg: TrainConfig,
                    gen_cfg: GenerateConfig, filter_cfg: FilterConfig, classical: ClassicalConfig,
                    workdir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train a generator on ``x`` (the other folds), generate and filter exactly as the pipeline
    does; return the accepted samples (images, labels) and their rank (most trusted first)."""
    from augment.filters.apply import FilterContext, filter_samples
    from augment.generation.generate import generate_samples
    from augment.models.checkpoint import save_checkpoint
    from augment.selection.merge import load_rows_images
    from augment.training.loop import sampler_tensors, train_generator

    result = train_generator(x, y, class_names, train_cfg, progress=False, classical=classical)
    ckpt = workdir / "generator.safetensors"
    save_checkpoint(ckpt, result.trainer.modules(), result.cfg, tuple(x.shape[1:]), class_names,
                    extra={"iteration": result.cfg.iterations, "train_images": int(len(x))},
                    extra_tensors=sampler_tensors(result.trainer, x, y))
    gen_dir = workdir / "generated"
    generate_samples(ckpt, gen_dir, gen_cfg, progress=False)
    empty = x[:0]
    ctx = FilterContext(x, y, empty, y[:0], len(class_names),
                        str(ckpt) if "discriminator" in filter_cfg.filters else None, classical)
    decisions, _ = filter_samples(gen_dir, filter_cfg, ctx)
    rows = np.flatnonzero(decisions["accepted"])
    return load_rows_images(gen_dir, decisions, rows), decisions["labels"][rows], decisions["confidence"][rows]


SCRATCH_PREFIX = "augment-crossfit-"


def _fold_generator(x: np.ndarray, y: np.ndarray, class_names: list[str], train_cfg: TrainConfig,
                    gen_cfg: GenerateConfig, filter_cfg: FilterConfig, classical: ClassicalConfig
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One fold's accepted samples (a worker job: its own scratch directory, named by the worker's
    process id so that a later run can tell a killed run's leftovers, :func:`remove_stale_scratch`)."""
    with tempfile.TemporaryDirectory(prefix=_scratch_prefix()) as tmp:
        return fold_candidates(x, y, class_names, train_cfg, gen_cfg, filter_cfg, classical, Path(tmp))


def _host() -> str:
    """This machine's name, readable and collision-free: its letters and digits (at most 16) and
    a hash of the whole name (``ip-172-31-2-210`` and ``ip-172-31-22-10`` read the same without it)."""
    import hashlib
    import platform
    import re

    node = platform.node()
    return (re.sub(r"[^A-Za-z0-9]", "", node)[:16] or "host") + hashlib.sha256(node.encode()).hexdigest()[:8]


def _scratch_prefix(pid: int | None = None) -> str:
    """``augment-crossfit-<host>-<pid>-``: a pid means something only on its own host."""
    return f"{SCRATCH_PREFIX}{_host()}-{os.getpid() if pid is None else pid}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists (POSIX)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process, or unknown: not ours to judge
    return True


def remove_stale_scratch(root: str | Path | None = None) -> list[str]:
    """Remove the scratch folders of fold generators whose process is gone (a run killed with
    SIGKILL or by the OOM killer cannot clean up; each folder holds a checkpoint and its samples).

    Only folders named ``augment-crossfit-<this host>-<pid>-*``, owned by this user, whose
    ``<pid>`` no longer runs on this host are touched: a concurrent run's scratch, another
    machine's on a shared temporary folder, and another user's stay. Not on Windows (where
    ``os.kill`` would terminate the process it asks about). Returns the folders removed."""
    import shutil

    if not hasattr(os, "getuid"):  # Windows
        return []
    base = Path(root or tempfile.gettempdir())
    mine = f"{SCRATCH_PREFIX}{_host()}-"
    removed = []
    for d in base.glob(f"{mine}*-*"):
        pid = d.name[len(mine):].split("-", 1)[0]
        try:
            st = d.lstat()
        except OSError:
            continue
        if (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and pid.isdigit()
                and not _alive(int(pid))):
            shutil.rmtree(d, ignore_errors=True)
            if not d.exists():
                removed.append(str(d))
    return removed


def _fold_classifier(x: np.ndarray, y: np.ndarray, held_x: np.ndarray, k: int, steps: int, seed: int,
                     device: str, classical: ClassicalConfig, syn_x: np.ndarray, syn_y: np.ndarray,
                     share: float, model_name: str = "smallcnn") -> np.ndarray:
    """Out-of-fold class probabilities of one downstream model (a worker job); ``model_name``:
    ``crossfit.model``, resolved in the worker (a name travels to a process, a factory may not)."""
    from augment.core.device import resolve_device
    from augment.downstream.classifier import ClassifierSpec, predict_proba, train_downstream
    from augment.downstream.models import resolve_model, user_model_errors

    dev = resolve_device(device)
    with user_model_errors(model_name, "crossfit.model"):
        model = train_downstream(x, y, k, ClassifierSpec(steps=steps), seed, dev, classical, syn_x, syn_y, share,
                                 resolve_model(model_name, "crossfit.model"))
        return predict_proba(model, held_x, dev)


def crossfit_select(x: np.ndarray, y: np.ndarray, class_names: list[str], cfg: CrossfitConfig,
                    train_cfg: TrainConfig, gen_cfg: GenerateConfig, filter_cfg: FilterConfig,
                    classical: ClassicalConfig, progress: Callable[[str], None] | None = None,
                    realise: str = "weights") -> dict[str, Any]:
    """Choose the synthetic share and kept fraction by K-fold cross-fitting (module docstring).

    ``x, y``: every labelled image that is not in the test split -- never test images.
    The fold generators and the downstream models are independent jobs, run over
    ``crossfit.workers`` processes (augment/core/parallel.py); results are placed by job."""
    from augment.core.device import resolve_device
    from augment.core.parallel import job_threads, process_pool, resolve_workers
    from augment.downstream.models import check_model_builds
    from augment.selection.quota import select_for_share

    k = len(class_names)
    check_model_builds(cfg.model, "crossfit.model", x.shape[3], k, min(x.shape[1:3]), *x.shape[1:3])  # before any training
    stale = remove_stale_scratch()
    if stale and progress:
        progress(f"removed {len(stale)} scratch folder(s) left by a killed cross-fitting run, e.g. {stale[0]}")
    n_folds = resolve_folds(y, cfg.folds, class_names)
    folds = stratified_folds(y, n_folds, cfg.seed, class_names)
    points = candidates(cfg)
    device = resolve_device(cfg.device)
    n_jobs = n_folds * len(points) * len(cfg.seeds)
    workers = resolve_workers(cfg.workers, n_jobs, device)
    threads = job_threads(n_jobs, device)  # per job, whatever crossfit.workers is (augment/core/parallel.py)
    if device.type == "cpu":
        # Each fold job also generates and filters (the label filter trains a classifier): on the
        # job's threads, not the stages' "one per CPU" default, so that the out-of-fold table does
        # not depend on crossfit.workers.
        gen_cfg, filter_cfg = replace(gen_cfg, threads=threads), replace(filter_cfg, threads=threads)
    # out-of-fold class probabilities, per candidate, seed and image
    prob_all = np.zeros((len(points), len(cfg.seeds), len(y), k))
    accepted_per_fold = []
    synthetic_per_fold: list[list[int]] = [[] for _ in points]  # images the candidate adds, per fold
    with process_pool(workers, threads) as pool:
        gen_jobs = []
        for f in range(n_folds):
            fit = folds != f
            # Each fold's generator gets its own seed, derived from the final one's.
            fold_train = replace(train_cfg, seed=int(np.random.SeedSequence([train_cfg.seed, f]).generate_state(1)[0] % 2**31))
            gen_jobs.append(pool.submit(_fold_generator, x[fit], y[fit], class_names, fold_train, gen_cfg,
                                        filter_cfg, classical))
        clf_jobs = {}
        for f, job in enumerate(gen_jobs):  # a fold's models queue as soon as its samples exist
            fit, held = folds != f, folds == f
            syn_x, syn_y, rank = job.result()
            accepted_per_fold.append([int(c) for c in np.bincount(syn_y, minlength=k)])
            if progress:
                progress(f"crossfit fold {f + 1}/{n_folds}: generator trained on the other folds, "
                         f"{len(syn_y)} samples accepted; its classifiers are queued")
            real_counts = np.bincount(y[fit], minlength=k)
            for i, (share, frac) in enumerate(points):
                pick, draw = select_for_share(syn_y, np.ones(len(syn_y), bool), rank, real_counts, share, frac, realise)
                synthetic_per_fold[i].append(int(len(pick)))
                for j, seed in enumerate(cfg.seeds):
                    clf_jobs[f, i, j] = pool.submit(_fold_classifier, x[fit], y[fit], x[held], k, cfg.steps, seed,
                                                    str(device), classical, syn_x[pick], syn_y[pick], draw, cfg.model)
        for f in range(n_folds):
            held = folds == f
            for i, (share, frac) in enumerate(points):
                for j in range(len(cfg.seeds)):
                    prob_all[i, j, held] = clf_jobs[f, i, j].result()
                if progress:
                    fold_acc = (prob_all[i][:, held].argmax(-1) == y[held]).mean()
                    progress(f"crossfit fold {f + 1}/{n_folds} share {share} fraction {frac}: "
                             f"out-of-fold accuracy {fold_acc:.4f}")
    p_true = prob_all[:, :, np.arange(len(y)), y]  # probability of the true class
    correct = prob_all.argmax(-1) == y
    nll = -np.log(np.clip(p_true, 1e-12, 1.0)).mean(axis=1)  # (candidates, images), averaged over seeds
    acc = correct.mean(axis=1)
    scaled = [temperature_scaled_nll(prob_all[i], y) for i in range(len(points))]  # (per-image nll, T)
    # The chance of merging when no candidate helps is held at 1 - confidence over all of them, not
    # per candidate: tested in the grid's order, each at ``confidence``, stopping at the first
    # failure (fixed sequence), or each at the Bonferroni level in any order.
    sequence = cfg.multiple_testing == "sequence"
    level = cfg.confidence if sequence else candidate_confidence(cfg.confidence, len(points) - 1)
    cal_level = level if cfg.calibrated_confidence is None else cfg.calibrated_confidence
    cal_text = f"{cal_level:.0%} bound" if cfg.calibrated_confidence is not None else "bound"
    table = []
    for i, (share, frac) in enumerate(points):
        gain_nll = paired_gain(nll[0] - nll[i], level)  # > 0: lower log-loss than real only
        cal_diff = scaled[0][0] - scaled[i][0]
        gain_cal = paired_gain(cal_diff, level)  # the same, each at its best T
        # the calibrated check's own level: a guard against gains only in confidence, not the evidence
        cal_check = paired_gain(cal_diff, cal_level)["lower"]
        gain_acc = paired_gain(acc[i] - acc[0], cfg.accuracy_confidence)  # its interval: the accuracy guard's
        table.append({"synthetic_share": share, "fraction": frac, "synthetic_per_fold": synthetic_per_fold[i],
                      "oof_accuracy": float(acc[i].mean()),
                      "oof_nll": float(nll[i].mean()), "nll_gain": gain_nll["mean"], "nll_gain_lower": gain_nll["lower"],
                      "temperature": scaled[i][1], "scaled_nll_gain": gain_cal["mean"],
                      "scaled_nll_gain_lower": gain_cal["lower"], "scaled_nll_gain_check": cal_check,
                      "accuracy_gain": gain_acc["mean"], "accuracy_gain_ci_low": gain_acc["ci_low"],
                      "accuracy_gain_ci_high": gain_acc["ci_high"]})
    resolution = accuracy_resolution(table)

    guard = cfg.accuracy_guard
    best = choose(table, cfg.min_gain, cfg.calibrated_gain, sequence, guard)
    if best is not table[0]:
        acc_text = ("not lower" if best["accuracy_gain"] >= 0.0 else
                    f"lower, but not significantly: its two-sided {cfg.accuracy_confidence:.0%} interval reaches above 0")
        bound_text = ("the out-of-fold estimate itself, crossfit.confidence 0.5" if level == 0.5 else
                      f"one-sided {_level_text(cfg.confidence, level, sequence)} bound {best['nll_gain_lower']:.4f}")
        reason = (f"share {best['synthetic_share']} (fraction {best['fraction']}) lowers out-of-fold log-loss by "
                  f"{best['nll_gain']:.4f} ({bound_text} > {cfg.min_gain}"
                  + (f"; {cal_text} {best['scaled_nll_gain_check']:.4f} at each candidate's best temperature"
                     if cfg.calibrated_gain else "")
                  + ("; candidates tested in order, smallest share first" if sequence else "")
                  + f"); out-of-fold accuracy {best['accuracy_gain']:+.4f} ({acc_text})")
    else:
        reason = ("no synthetic configuration beat real data + classical augmentation under cross-fitting "
                  f"(out-of-fold log-loss gain {'' if level == 0.5 else 'bound '}<= {cfg.min_gain}"
                  + (", also at each candidate's best temperature," if cfg.calibrated_gain else "")
                  + (" or accuracy lower" if guard == "not_lower" else " or accuracy significantly lower")
                  + "): merging none")
        later = [r for r in table[1:] if passes(r, cfg.min_gain, cfg.calibrated_gain, guard)]
        if later:  # only under the fixed sequence: a candidate after the first failure
            r = later[0]
            reason += (f". Share {r['synthetic_share']} (fraction {r['fraction']}) passed on its own, but candidates "
                       "are tested in order (smallest share first) and testing stopped at the first that failed, so "
                       + ("that a larger share is merged only when every smaller one also beat real only "
                          "(crossfit.multiple_testing)" if cfg.confidence == 0.5 else
                          f"that the chance of merging unhelpful data stays at {1 - cfg.confidence:.0%} over the grid "
                          "(crossfit.multiple_testing)"))
        calib_only = [r for r in table[1:] if r["nll_gain_lower"] > cfg.min_gain and accuracy_ok(r, guard)]
        if calib_only and cfg.calibrated_gain and not later:
            r = calib_only[0]
            reason += (f". Share {r['synthetic_share']} lowered the log-loss (bound {r['nll_gain_lower']:.4f}) but "
                       f"not at each candidate's best temperature ({cal_text} {r['scaled_nll_gain_check']:.4f}): the gain "
                       "was in how confident the classifier is, which accuracy does not see")
        if len(table) == 1:
            pass  # no synthetic candidate was asked for (crossfit.shares: [0.0])
        elif not any(sum(r["synthetic_per_fold"]) for r in table[1:]):
            reason += (f". The fold filters accepted no synthetic sample (accepted per fold and class: "
                       f"{accepted_per_fold}), so no synthetic candidate was tested. The fold filters use the "
                       "filter params: the filter stage's report (which filter rejected what, for the final "
                       "generator) shows what to loosen; or train the generator longer")
        elif resolution is None:
            reason += (". No synthetic candidate changed any out-of-fold prediction (real + classical: "
                       f"{100 * table[0]['oof_accuracy']:.1f} % correct out of fold), so accuracy could show neither "
                       "a gain nor a loss here")
        else:
            reason += (f". On {len(y)} labelled images the out-of-fold accuracy gain is known to about "
                       f"+/-{100 * resolution:.1f} points (95 %): a smaller gain or loss cannot be told from noise "
                       "here, so 'none' means no gain was shown, not that the synthetic data hurts")
    return {
        "synthetic_share": best["synthetic_share"], "fraction": best["fraction"],
        "no_synthetic": best["synthetic_share"] == 0.0, "reason": reason,
        "folds": n_folds, "folds_param": cfg.folds,  # the folds used; the param (null = auto)
        "seeds": list(cfg.seeds), "steps": cfg.steps, "calibrated_gain": cfg.calibrated_gain,
        "accuracy_guard": guard, "accuracy_confidence": cfg.accuracy_confidence,
        "calibrated_confidence": cal_level,
        "confidence": cfg.confidence, "candidate_confidence": level, "multiple_testing": cfg.multiple_testing,
        "images": int(len(y)),  # (not the worker count: the choice must not depend on the machine's CPUs)
        "realise": realise, "accuracy_resolution": resolution,
        "accepted_per_fold": accepted_per_fold, "table": table,
    }


def read_selection(path: str | Path) -> dict[str, Any]:
    """The crossfit stage's ``selection.json``, schema-checked (a damaged file is never trusted)."""
    import json

    path = Path(path)
    try:
        sel = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({type(exc).__name__}); re-run the crossfit stage (augment crossfit)") from None
    ok = (isinstance(sel, dict) and isinstance(sel.get("used"), bool) and isinstance(sel.get("table"), list))
    if ok and sel["used"]:
        share, frac = sel.get("synthetic_share"), sel.get("fraction")
        ok = (isinstance(share, (int, float)) and isinstance(frac, (int, float)) and math.isfinite(share)
              and math.isfinite(frac) and 0.0 <= share < 1.0 and 0.0 < frac <= 1.0)
    elif ok:
        ok = False  # merge.quota is crossfit but the stage ran for another quota: stale
    if not ok:
        raise DataError(f"{path}: not a valid cross-fitted selection for merge.quota = crossfit (damaged or stale); "
                        "re-run the crossfit stage (augment crossfit)")
    return sel
