"""The pipeline's stages, each declared once.

A stage is one :class:`Stage`: its name, the ``params.yaml`` group it reads, what it reads and
writes (:class:`~augment.pipeline.paths.Paths` fields or ``param:<group>.<key>``), the adapter
that runs it and a one-line summary of its result. The CLI subcommands (:mod:`augment.cli`),
the Prefect tasks and their cache keys (:mod:`augment.flows.augment_flow`, :mod:`augment.flows.caching`) and the
check of ``dvc.yaml`` (``tests/pipeline``) are all derived from :data:`STAGES`; nothing restates a
stage elsewhere.

Each adapter reads its inputs from disk, calls the pure library functions, and writes its
outputs atomically. Paths are arguments (written once, in ``dvc.yaml`` / the flow's
parameters), never hard-coded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from augment.config import (
    ClassicalConfig,
    CrossfitConfig,
    EvaluateConfig,
    FilterConfig,
    GenerateConfig,
    MergeConfig,
    PrepareConfig,
    TrainConfig,
)
from augment.core.files import (
    atomic_directory,
    atomic_write_csv,
    atomic_write_files,
    atomic_write_json,
    json_bytes,
    read_json_checked,
)
from augment.pipeline.paths import Paths
from augment.pipeline.paths import require as _require


def run_prepare(cfg: PrepareConfig, paths: Paths = Paths(), progress: bool = True) -> dict[str, Any]:
    from augment.data.prepare import prepare_dataset, recorded_under, save_prepared

    ds, report = recorded_under(*prepare_dataset(cfg), paths.workspace)
    save_prepared(ds, report, paths.prepared)
    return report


def run_train(cfg: TrainConfig, paths: Paths = Paths(), progress: bool = True,
              wrap_trainer: Callable[[Any], Any] | None = None,
              classical: ClassicalConfig = ClassicalConfig()) -> dict[str, Any]:
    import torch

    from augment.core.plots import loss_curves, save_png
    from augment.data.prepare import load_prepared
    from augment.models.checkpoint import save_checkpoint
    from augment.training.live import LiveLogger
    from augment.training.loop import sampler_tensors, train_generator

    ds = load_prepared(paths.prepared)
    x, y = ds.subset("train")  # the generator sees the TRAIN split only -- never val, never test
    Path(paths.resume).parent.mkdir(parents=True, exist_ok=True)
    # Live metrics (dvclive, when installed): losses, ADA p and sample grids as they happen. The
    # folder starts empty every time; a resumed run replays the rows and grids of its resume state
    # first (train_generator), so it holds the whole run even where dvc repro deleted it before
    # the retry, and nothing of an earlier run whose resume state no longer matches.
    with LiveLogger(Path(paths.metrics_dir) / "train_live") as live:
        result = train_generator(x, y, ds.class_names, cfg, resume_path=paths.resume, progress=progress,
                                 wrap_trainer=wrap_trainer, on_log=live.on_log, on_grid=live.on_grid,
                                 classical=classical)
    cfg = result.cfg  # auto sizes resolved for this data: the checkpoint records what was trained
    with atomic_directory(paths.model_dir) as tmp:
        save_checkpoint(tmp / "generator.safetensors", result.trainer.modules(), cfg, ds.image_shape,
                        ds.class_names, extra={"iteration": cfg.iterations, "train_images": int(len(x)),
                                               "prepared_sha256": ds.fingerprint(),
                                               # train.real_augment: classical trains on these transforms
                                               "classical": asdict(classical),
                                               # float sums split over threads: another count, other last bits
                                               "torch_threads": torch.get_num_threads()},
                        extra_tensors=sampler_tensors(result.trainer, x, y))
        last = max(result.grids)
        save_png(result.grids[last], tmp / "sample_grid.png")
        (tmp / "samples").mkdir()
        for it, grid in sorted(result.grids.items()):
            save_png(grid, tmp / "samples" / f"iter_{it:07d}.png")
        loss_curves(result.log, tmp / "loss_curves.png")
        # loss_generator: the generator's own loss under one name for either family (GAN loss_g, VAE
        # loss_vae), so the plot dvc.yaml declares finds its column whichever family ran. Written
        # before the model folder is swapped in: if it fails, neither output has changed.
        log = [{**r, "loss_generator": r.get("loss_g", r.get("loss_vae"))} for r in result.log]
        keys = sorted({k for r in log for k in r})
        keys = ["iteration"] + [k for k in keys if k != "iteration"]
        atomic_write_csv(Path(paths.metrics_dir) / "train_log.csv", log, keys)
    Path(paths.resume).unlink(missing_ok=True)  # finished: the resume state is no longer needed
    return {"checkpoint": paths.checkpoint, "iterations": cfg.iterations, "resumed_from": result.resumed_from,
            "final": result.log[-1] if result.log else {}}


def run_generate(cfg: GenerateConfig, paths: Paths = Paths(), progress: bool = True) -> dict[str, Any]:
    from augment.core.files import workspace_relative
    from augment.data.prepare import load_prepared
    from augment.generation.generate import generate_samples
    from augment.models.checkpoint import Checkpoint

    ckpt = Checkpoint(paths.checkpoint)
    if Path(paths.prepared, "dataset.npz").is_file():
        ds = load_prepared(paths.prepared)
        ckpt.check_compatible(ds.image_shape, ds.class_names)
        check_same_prepared(ckpt.extra.get("prepared_sha256"), ds, paths.checkpoint, "train", paths.prepared)
    return generate_samples(paths.checkpoint, paths.generated, cfg, progress=progress,
                            recorded_checkpoint=workspace_relative(paths.checkpoint, paths.workspace))


def run_filter(cfg: FilterConfig, paths: Paths = Paths(), progress: bool = True,
               classical: ClassicalConfig = ClassicalConfig()) -> dict[str, Any]:
    from augment.filters.apply import (
        collect_grid_samples,
        filter_samples,
        save_filter_output,
    )
    from augment.generation.shards import load_generate_meta

    class_names = load_generate_meta(paths.generated)["class_names"]
    ctx = filter_context(cfg, paths, classical)
    decisions, report = filter_samples(paths.generated, cfg, ctx)
    grids = collect_grid_samples(paths.generated, decisions, cfg.grid_per_class, class_names)
    save_filter_output(decisions, report, paths.filtered, class_names, grids)
    return report


def filter_context(cfg: FilterConfig, paths: Paths, classical: ClassicalConfig = ClassicalConfig()):
    """TRAIN and VAL images for the filters (never the test split), and the checkpoint."""
    from augment.data.prepare import load_prepared
    from augment.filters.apply import FilterContext

    needs_data = bool(cfg.filters)
    if needs_data:
        _require(Path(paths.prepared) / "dataset.npz", "prepare")
        ds = load_prepared(paths.prepared)
        from augment.generation.shards import load_generate_meta

        check_same_prepared(load_generate_meta(paths.generated).get("prepared_sha256"), ds,
                            Path(paths.generated) / "generate.json", "generate", paths.prepared)
        tx, ty = ds.subset("train")
        vx, vy = ds.subset("val")
        k = ds.num_classes
    else:
        import numpy as np

        tx = vx = np.zeros((0, 1, 1, 1), np.uint8)
        ty = vy = np.zeros(0, np.int64)
        from augment.generation.shards import load_generate_meta

        k = len(load_generate_meta(paths.generated)["class_names"])
    ckpt = paths.checkpoint if "discriminator" in cfg.filters else None
    if ckpt is not None:
        _require(Path(ckpt), "train")
        from augment.core.files import sha256_file
        from augment.errors import DataError
        from augment.generation.shards import load_generate_meta

        # The discriminator that judges the samples must be the one trained with their generator:
        # after `augment train` re-ran, the samples are another run's until generate re-runs.
        made_by = load_generate_meta(paths.generated).get("checkpoint_sha256")
        if made_by != sha256_file(ckpt):
            raise DataError(f"{Path(paths.generated) / 'generate.json'}: the samples were made by another checkpoint "
                            f"than {ckpt} holds now (sha256 {str(made_by)[:12]}...); re-run the generate stage "
                            "(augment generate)")
    return FilterContext(tx, ty, vx, vy, k, ckpt, classical)


def run_crossfit(cfg: CrossfitConfig, paths: Paths = Paths(), progress: bool = True,
                 train: TrainConfig = TrainConfig(), generate: GenerateConfig = GenerateConfig(),
                 filter: FilterConfig = FilterConfig(), merge: MergeConfig = MergeConfig(),
                 classical: ClassicalConfig = ClassicalConfig()) -> dict[str, Any]:
    """K-fold cross-fitted choice of the synthetic share over every labelled train image."""
    from augment.data.prepare import load_prepared
    from augment.selection.crossfit import crossfit_select

    if merge.quota != "crossfit":
        out = {"used": False, "reason": f"merge.quota = {merge.quota}: cross-fitting not used", "table": []}
    else:
        ds = load_prepared(paths.prepared)
        x, y = ds.subset("train")  # every labelled image outside the test split (and val, if any) -- never test
        # One line per fold, also under --quiet (dvc.yaml): cross-fitting trains a generator per fold
        # and is the pipeline's longest stage; without them a user sees nothing for many minutes.
        log = lambda m: print(m, flush=True)  # noqa: E731
        out = {"used": True, **crossfit_select(x, y, ds.class_names, cfg, train, generate, filter, classical, log,
                                               realise=merge.realise), "prepared_sha256": ds.fingerprint()}
    with atomic_directory(paths.crossfit) as tmp:
        atomic_write_json(tmp / "selection.json", out)
        keys = ["synthetic_share", "fraction", "synthetic_per_fold", "oof_accuracy", "oof_nll", "nll_gain",
                "nll_gain_lower", "temperature", "scaled_nll_gain", "scaled_nll_gain_lower", "scaled_nll_gain_check",
                "accuracy_gain", "accuracy_gain_ci_low", "accuracy_gain_ci_high"]
        rows = [{**r, "synthetic_per_fold": " ".join(str(n) for n in r.get("synthetic_per_fold", []))}
                for r in out["table"]]
        atomic_write_csv(tmp / "table.csv", rows, keys)
    return out


def run_merge(cfg: MergeConfig, paths: Paths = Paths(), progress: bool = True,
              classical: ClassicalConfig = ClassicalConfig()) -> dict[str, Any]:
    from augment.data.prepare import load_prepared
    from augment.filters.apply import load_decisions
    from augment.selection.crossfit import read_selection
    from augment.selection.merge import merge_dataset

    ds = load_prepared(paths.prepared)
    decisions = load_decisions(paths.filtered)
    check_generated_fits(paths, ds.class_names, ds.image_shape, decisions, prepared=ds)
    selection = None
    if cfg.quota == "crossfit":
        _require(Path(paths.crossfit) / "selection.json", "crossfit")
        selection = read_selection(Path(paths.crossfit) / "selection.json")
        check_same_prepared(selection.get("prepared_sha256"), ds, Path(paths.crossfit) / "selection.json",
                            "crossfit", paths.prepared)
    # The tuning curve (VAL accuracy per grid point) is a DVC plot; empty when quota is not tuned.
    summary = merge_dataset(ds, paths.generated, decisions, paths.augmented, cfg, classical=classical,
                            selection=selection, curve_csv=Path(paths.metrics_dir) / "tuning.csv")
    summary.pop("tuning_curve")
    return summary


def check_same_prepared(recorded: str | None, ds: Any, file: str | Path, stage: str, prepared: str) -> None:
    """``file`` (a checkpoint, generate.json, selection.json, summary.json) records the fingerprint
    of the prepared dataset it was made from (:meth:`PreparedDataset.fingerprint`); refuse it when
    ``prepared`` now holds another (prepare re-ran, e.g. with another test split: the generator may
    have learnt images that are test images now). Files written before the fingerprint was
    recorded (``None``) are not checked."""
    from augment.errors import DataError

    if recorded is not None and recorded != ds.fingerprint():
        raise DataError(f"{file}: made from another prepared dataset than {prepared} holds now (prepare re-ran "
                        "since, with other images or another split: its test images may be ones this output was "
                        f"made from); re-run the {stage} stage (augment {stage}) and the stages after it, or "
                        "`augment run` / `dvc repro`")


def check_generated_fits(paths: Paths, class_names: list[str], image_shape: tuple[int, ...],
                         decisions: dict[str, Any] | None = None, prepared: Any = None) -> dict[str, Any]:
    """The generate output (and the filter's decisions on it) belong to this prepared dataset:
    same classes and image shape (and, given ``prepared``, the same prepared dataset), one decision
    per generated sample. Returns generate.json."""
    import numpy as np

    from augment.errors import DataError
    from augment.generation.shards import (
        check_shard_files,
        load_generate_meta,
        total_samples,
    )

    meta = load_generate_meta(paths.generated)
    check_shard_files(paths.generated, meta)
    gj = Path(paths.generated) / "generate.json"
    if list(meta["class_names"]) != list(class_names) or tuple(meta["image_shape"]) != tuple(image_shape):
        raise DataError(f"{gj}: generated for classes {meta['class_names']} and shape {meta['image_shape']}, but "
                        f"the prepared data has {list(class_names)} and {list(image_shape)}; re-run the generate "
                        "stage (augment generate)")
    if prepared is not None:
        check_same_prepared(meta.get("prepared_sha256"), prepared, gj, "generate", paths.prepared)
    if decisions is not None:
        dn = Path(paths.filtered) / "decisions.npz"
        total = total_samples(meta)
        if len(decisions["index"]) != total or (total and int(decisions["index"].max()) >= total):
            raise DataError(f"{dn}: holds decisions for {len(decisions['index'])} samples, but {gj} lists "
                            f"{total}; re-run the filter stage (augment filter)")
        if len(decisions["labels"]) and int(np.max(decisions["labels"])) >= len(class_names):
            raise DataError(f"{dn}: labels outside the {len(class_names)} classes; re-run the filter stage "
                            "(augment filter)")
    return meta


# What merge's summary.json must hold for the evaluate stage.
MERGE_SUMMARY_KEYS = {"real": int, "synthetic": int, "synthetic_share": (float, int, type(None)),
                      "real_splits": list, "class_names": list}


def run_evaluate(cfg: EvaluateConfig, paths: Paths = Paths(), progress: bool = True,
                 classical: ClassicalConfig = ClassicalConfig()) -> dict[str, Any]:
    """Writes ``evaluate.json`` (headline: per variant mean and 95% CI, share, accepted/merged
    synthetic counts, classes left without synthetic samples), ``evaluate_detail.json`` (per seed,
    per class, deltas, ablation, quality) and ``evaluate.md`` (the tables). Returns the detail
    with ``headline`` and ``table`` added."""
    from augment.data.prepare import load_prepared
    from augment.data.torch_dataset import load_augmented
    from augment.errors import DataError
    from augment.evaluation.evaluate import (
        classes_without_synthetic,
        evaluate_variants,
        format_table,
        headline_metrics,
    )

    ds = load_prepared(paths.prepared)
    merge_summary_path = Path(paths.augmented) / "summary.json"
    merge_summary = (read_json_checked(merge_summary_path, MERGE_SUMMARY_KEYS, producer="merge")
                     if merge_summary_path.is_file() else {})
    _check_merge_summary(merge_summary_path, merge_summary, ds.class_names)
    check_same_prepared(merge_summary.get("prepared_sha256"), ds, merge_summary_path, "merge", paths.prepared)
    images, labels, synthetic, _ = load_augmented(paths.augmented)
    filter_report_path = Path(paths.filtered) / "report.json"
    filter_report = (read_json_checked(filter_report_path, {"accepted": int, "per_class": dict}, producer="filter")
                     if filter_report_path.is_file() else {})
    if cfg.synthetic_share is None and merge_summary.get("synthetic_share") is not None:
        import dataclasses

        # the share the merge stage chose (tuned on VAL when merge.quota is "tuned")
        cfg = dataclasses.replace(cfg, synthetic_share=merge_summary["synthetic_share"])
    # merge.refit_with_val: every variant trains on the merged real images (train + val)
    # (the originals: merge.realise replicate writes the copies of the real images after them)
    n_orig = int(merge_summary.get("real", int((~synthetic).sum())))
    if merge_summary and int((~synthetic).sum()) != n_orig * int(merge_summary.get("real_copies", 1)):
        raise DataError(f"{merge_summary_path}: {n_orig} real images x {merge_summary.get('real_copies', 1)} copies, "
                        f"but the merged set holds {int((~synthetic).sum())} real rows; re-run the merge stage "
                        "(augment merge)")
    real = ((images[~synthetic][:n_orig], labels[~synthetic][:n_orig])
            if "val" in merge_summary.get("real_splits", []) else None)
    metrics = evaluate_variants(ds, images[synthetic], labels[synthetic], cfg, progress=progress, real=real,
                                classical=classical)
    metrics["synthetic_share"] = cfg.synthetic_share
    metrics["classes_without_synthetic"] = classes_without_synthetic(labels[synthetic], ds.class_names)
    metrics["filter_accepted_per_class"] = {c: r.get("accepted") for c, r in filter_report.get("per_class", {}).items()}
    table = format_table(metrics)
    if metrics["classes_without_synthetic"] and not _chose_none(metrics):  # (chose none: the table says so)
        table += ("\n\nWARNING: no synthetic sample for class(es) " + ", ".join(metrics["classes_without_synthetic"])
                  + ": for them (c) and (d) train on real images only")
    if cfg.ablation and Path(paths.filtered, "decisions.npz").is_file():
        from augment.evaluation.ablation import format_ablation, run_ablation
        from augment.filters.apply import load_decisions

        metrics["ablation"] = run_ablation(ds, paths.generated, load_decisions(paths.filtered), merge_summary,
                                           cfg, progress=progress, real=real, classical=classical)
        table += "\n\n" + format_ablation(metrics["ablation"])
    if cfg.quality:  # FD, PRDC, CAS, diversity of the synthetic images (augment/evaluation/quality.py)
        from augment.evaluation.quality import evaluate_quality, format_quality

        metrics["quality"] = evaluate_quality(ds, images[synthetic], labels[synthetic], paths.generated, cfg)
        table += "\n\n" + format_quality(metrics["quality"])
    headline = headline_metrics(metrics, filter_report.get("accepted"))
    metrics_dir = Path(paths.metrics_dir)
    atomic_write_files({metrics_dir / "evaluate_detail.json": json_bytes(metrics),  # all three or none
                        metrics_dir / "evaluate.json": json_bytes(headline),
                        metrics_dir / "evaluate.md": ("```\n" + table + "\n```\n").encode("utf-8")})
    metrics["headline"] = headline
    metrics["table"] = table
    return metrics


def _check_merge_summary(path: Path, s: dict[str, Any], class_names: list[str]) -> None:
    import math

    from augment.errors import DataError

    if not s:
        return
    share = s["synthetic_share"]
    bad = None
    if share is not None and not (math.isfinite(share) and 0.0 <= share < 1.0):
        bad = f"synthetic_share = {share!r} is not in [0, 1)"
    elif not set(s["real_splits"]) <= {"train", "val"}:
        bad = f"real_splits = {s['real_splits']!r:.60} may only name train and val"
    elif s["class_names"] != list(class_names):
        bad = f"class_names {s['class_names']!r:.80} differ from the prepared data's {class_names!r:.80}"
    elif s["real"] < 0 or s["synthetic"] < 0:
        bad = "negative counts"
    elif "real_copies" in s and not (type(s["real_copies"]) is int and s["real_copies"] >= 1):
        bad = f"real_copies = {s['real_copies']!r:.40} is not a whole number >= 1"
    if bad:
        raise DataError(f"{path}: {bad}; re-run the merge stage (augment merge)")


def no_synthetic_warnings(per_class: dict[str, dict[str, Any]], key: str, what: str) -> list[str]:
    """One warning line when some class has ``per_class[c][key] == 0`` (no synthetic sample)."""
    empty = [c for c, r in per_class.items() if not r.get(key)]
    if not empty:
        return []
    return [f"WARNING: {what} left {len(empty)} of {len(per_class)} class(es) with no synthetic sample: "
            f"{', '.join(empty)}"]


def _filter_warnings(r: dict[str, Any]) -> list[str]:
    out = no_synthetic_warnings(r.get("per_class", {}), "accepted", f"the filter ({', '.join(r.get('filters', [])) or 'none'})")
    if out:  # which filter emptied which class
        causes = []
        for c, row in r["per_class"].items():
            if not row.get("accepted"):
                zero = [k[len("accepted_by_"):] for k, v in row.items() if k.startswith("accepted_by_") and v == 0]
                causes.append(f"{c}: {'/'.join(zero) or 'the combination'} accepted none of {row.get('generated')}")
        out[0] += " (" + "; ".join(causes) + ")"
    return out


def _merge_warnings(r: dict[str, Any]) -> list[str]:
    if not r.get("synthetic"):
        if r.get("tuning") and r["tuning"].get("synthetic_share") == 0:
            how = "cross-fitted over every labelled image" if r.get("quota") == "crossfit" else "tuned on val"
            return [f"WARNING: merge chose no synthetic sample (synthetic share 0.0, {how})"]
        return ["WARNING: merge left every class with no synthetic sample"]
    out = no_synthetic_warnings(r.get("per_class", {}), "synthetic", "merge")
    share, uniform = r.get("synthetic_share"), r.get("uniform_share")
    if share:  # the share is global: a class with few or no samples is drawn less often than in the real set
        pc = r.get("per_class", {})
        n_real = sum(c.get("real", 0) for c in pc.values())
        n_syn = sum(c.get("synthetic", 0) for c in pc.values())
        moved = {name: ((1 - share) * c["real"] / n_real + share * c.get("synthetic", 0) / n_syn) / (c["real"] / n_real)
                 for name, c in pc.items() if c.get("real") and n_syn}
        far = [f"{name} x{ratio:.2f}" for name, ratio in moved.items() if not 1 / 1.5 <= ratio <= 1.5]
        if far:
            out.append("note: sampled by weight, the synthetic share changes how often these classes are drawn "
                       f"against the real set: {', '.join(far)} (the share is global, not per class; "
                       "docs/stages.md, merge)")
    if share is not None and uniform is not None and abs(uniform - share) > 0.05:
        if r.get("realise") == "replicate":  # already copying reals: too few samples to reach the share
            fix = (f"only {r['synthetic']} synthetic images were accepted, too few for that share even with one "
                   "copy of each real image: sample by the manifest's weight column (e.g. WeightedRandomSampler)")
        else:
            fix = "sample by the manifest's weight column, or set merge.realise: replicate"
        out.append(f"WARNING: read as is (ImageFolder, weights ignored) the merged folder is {uniform:.0%} synthetic, "
                   f"not the chosen {share:.0%}: {fix}")
    return out


def _chose_none(r: dict[str, Any]) -> bool:
    """The merge stage chose to merge nothing (cross-fitting or tuning found no share that helps):
    a decision, not a class the filter or the merge left empty."""
    accepted = any((r.get("filter_accepted_per_class") or {}).values())  # there was something to merge
    return accepted and r.get("synthetic_images") == 0 and r.get("synthetic_share") == 0.0


def _evaluate_warnings(r: dict[str, Any]) -> list[str]:
    empty = r.get("classes_without_synthetic", [])
    if empty and _chose_none(r):  # merge has warned why; evaluate only says what it measured
        return ["note: the merge stage chose no synthetic sample (share 0.0), so (c) and (d) train as (a) and (b) do"]
    return [f"WARNING: evaluated with no synthetic sample for {len(empty)} class(es): {', '.join(empty)} "
            "((c) and (d) see only real images of them; flag no_syn in metrics/evaluate.json)"] if empty else []


# ------------------------------------------------------------------------------ declarations


@dataclass(frozen=True)
class Stage:
    """One pipeline stage, declared once (see the module docstring)."""

    name: str
    group: str  # the params.yaml group passed as the run function's first argument
    run: Callable[..., dict[str, Any]]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    summary: Callable[[dict[str, Any]], str]
    warnings: Callable[[dict[str, Any]], list[str]] = field(default=lambda out: [])
    doc: str = ""
    shared_groups: tuple[str, ...] = ()  # other groups it reads, passed as keyword arguments

    @property
    def groups(self) -> tuple[str, ...]:
        return (self.group,) + self.shared_groups

    def __call__(self, cfg: Any, paths: Paths, progress: bool = True,
                 protect: dict[str, str] | None = None) -> dict[str, Any]:
        """Run the stage with its groups of the whole config ``cfg`` (a PipelineConfig);
        ``protect``: files the caller read that no output may touch (:func:`check_stage_paths`)."""
        check_stage_paths(self, cfg, paths, protect)
        extra = {g: getattr(cfg, g) for g in self.shared_groups}
        return self.run(getattr(cfg, self.group), paths, progress=progress, **extra)


def _prepare_summary(r: dict[str, Any]) -> str:
    dup = r["duplicates"]
    dropped = f" ({len(dup['dropped'])} identical dropped)" if dup.get("dropped") else ""
    return (f"prepared {r['num_classes']} classes, shape {r['image_shape']}; skipped {len(r['skipped'])} file(s); "
            f"cross-split duplicates left: {dup['exact_cross_split']} exact, {dup['near_cross_split']} near{dropped}")


def _prepare_warnings(r: dict[str, Any]) -> list[str]:
    dup, out = r["duplicates"], []
    if dup.get("dropped"):
        d = dup["dropped"][0]
        twin = f" = {d['identical_to']}" if d.get("identical_to") else ""
        out.append(f"dropped {len(dup['dropped'])} image(s) identical to an image in another split, e.g. "
                   f"{d['file']}{twin} (prepare.on_cross_split_duplicate: drop); listed in report.json")
    if dup["exact_cross_split"] or dup["near_cross_split"]:
        out.append("WARNING: duplicates across splits leak between train and val/test; see report.json")
    if r.get("label_conflicts"):
        c = r["label_conflicts"][0]
        out.append(f"WARNING: {len(r['label_conflicts'])} image(s) appear under two class labels, e.g. "
                   f"{c['a']} ({c['class_a']}) = {c['b']} ({c['class_b']}); listed in report.json (label_conflicts)")
    if r.get("altered"):
        out.append(f"note: {len(r['altered'])} image(s) used with a change (first frame of a multi-frame image, "
                   "EXIF rotation); listed in report.json (altered)")
    h, w = r["image_shape"][:2]
    if r.get("resized_files"):
        first = r["resized_files"][0]
        out.append(f"note: {len(r['resized_files'])} image(s) resized (stretched, not cropped) to the most common "
                   f"size {w}x{h} (width x height), e.g. {first['file']} ({first['from'][1]}x{first['from'][0]}); "
                   "listed in report.json (resized_files)")
    if max(h, w) > 128:
        out.append(f"WARNING: the images are {w}x{h} pixels; the generator is built and tested for 8 to 128 pixels "
                   "a side and its training time grows with the pixel count: downscale the images (e.g. to 64x64) "
                   "before prepare unless the detail is needed")
    colour, total = r.get("colour_images", 0), r.get("images_read", 0)
    grey_rgb, channels = r.get("grey_rgb_images", 0), r["image_shape"][2] if len(r["image_shape"]) > 2 else None
    if channels == 3 and r.get("channels", "auto") == "auto" and colour and total and colour < total:
        out.append(f"note: {colour} of {total} images are colour (e.g. {r.get('colour_example')}), so every image "
                   f"is prepared as RGB: the {total - colour} grey one(s) (e.g. {r.get('grey_example')}) get their grey "
                   "copied to R, G and B; convert the colour ones to grey if the data is grey (or set prepare.channels: grey)")
    if channels == 1 and colour:
        why = ("prepare.channels: grey" if r.get("channels") == "grey"
               else "the labelled images are grey, and test images follow them")
        out.append(f"note: {colour} colour image(s) converted to grey ({why}), e.g. {r.get('colour_example')}")
    if channels == 1 and grey_rgb:
        out.append(f"note: {grey_rgb} RGB file(s) hold grey pixels (R = G = B within 2 levels), e.g. "
                   f"{r.get('grey_rgb_example')}: prepared as grey, as every image is "
                   "(prepare.channels: rgb keeps 3 channels)")
    return out


def _crossfit_summary(r: dict[str, Any]) -> str:
    if not r.get("used"):
        return r["reason"]
    res = r.get("accuracy_resolution")
    seen = (f", accuracy gain seen to +/-{100 * res:.1f} points"
            if res is not None and not r.get("no_synthetic") else "")  # a "none" reason already states it
    auto = " (auto)" if "folds_param" in r and r["folds_param"] is None else ""
    return f"crossfit ({r['folds']} folds{auto}, {r['images']} labelled images{seen}): {r['reason']}"


def _merge_summary(r: dict[str, Any]) -> str:
    line = f"merged {r['real']} real + {r['synthetic']} synthetic images"
    t = r.get("tuning")
    if t and "reason" in t:
        line += f"; cross-fitted choice: share {t['synthetic_share']}, fraction {t['fraction']}"
    elif t:
        line += (f"; tuned on val ({t['val_images']} images): synthetic share {t['synthetic_share']}, "
                 f"fraction {t['fraction']}, val accuracy {t['val_accuracy']:.4f}")
    return line


STAGES: tuple[Stage, ...] = (
    Stage("prepare", "prepare", run_prepare,
          inputs=("param:prepare.raw_dir", "param:prepare.test_dir"), outputs=("prepared",),
          summary=_prepare_summary, warnings=_prepare_warnings,
          doc="validate, resize and split the labelled images"),
    Stage("train", "train", run_train, inputs=("prepared",),
          outputs=("model_dir", "metrics_dir:train_log.csv", "metrics_dir:train_live/metrics.json",
                   "metrics_dir:train_live/plots"),
          summary=lambda r: (f"trained for {r['iterations']} iterations"
                             + (f" (resumed from iteration {r['resumed_from']})" if r.get("resumed_from") else "")
                             + f" -> {r['checkpoint']}"),
          doc="train the class-conditional generator on the train split", shared_groups=("classical",)),
    Stage("generate", "generate", run_generate, inputs=("prepared", "checkpoint"), outputs=("generated",),
          summary=lambda r: f"generated {r['n_per_class']} per class in {r['num_shards']} shard(s) on {r['device']}",
          doc="sample every class from the generator, in seeded shards"),
    Stage("filter", "filter", run_filter, inputs=("prepared", "checkpoint", "generated"), outputs=("filtered",),
          summary=lambda r: f"filter ({r['mode']}): accepted {r['accepted']} of {r['generated']}",
          warnings=_filter_warnings, doc="score and accept generated samples", shared_groups=("classical",)),
    Stage("crossfit", "crossfit", run_crossfit, inputs=("prepared",), outputs=("crossfit",),
          summary=_crossfit_summary, doc="choose the synthetic share by K-fold cross-fitting on every labelled image",
          shared_groups=("train", "generate", "filter", "merge", "classical")),
    Stage("merge", "merge", run_merge, inputs=("prepared", "generated", "filtered", "crossfit"),
          outputs=("augmented", "metrics_dir:tuning.csv"), summary=_merge_summary, warnings=_merge_warnings,
          doc="merge real and accepted synthetic images into one dataset", shared_groups=("classical",)),
    Stage("evaluate", "evaluate", run_evaluate, inputs=("prepared", "generated", "filtered", "augmented"),
          outputs=("metrics_dir:evaluate.json", "metrics_dir:evaluate_detail.json", "metrics_dir:evaluate.md"),
          summary=lambda r: r["table"], warnings=_evaluate_warnings,
          doc="train the downstream classifier four ways; score on the test split", shared_groups=("classical",)),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def _spec_label(spec: str) -> str:
    if spec.startswith("param:"):
        return spec[6:]
    base, _, leaf = spec.partition(":")
    return f"--{base.replace('_', '-')}" + (f" ({leaf})" if leaf else "")


def stage_outputs(stage: Stage, cfg: Any, paths: Paths) -> dict[str, str]:
    """What ``stage`` writes, deletes or swaps: its declared outputs (train: also its resume state)."""
    out = {_spec_label(s): paths.resolve(s, cfg) for s in stage.outputs}
    if stage.name == "train":
        out["--resume"] = paths.resume
    return {k: v for k, v in out.items() if v is not None}


# The file each folder-replacing stage has always written into its output folder: a non-empty
# folder without it was not written by augment, and replacing it would delete someone's files.
OWN_FILE = {"prepared": "dataset.npz", "model_dir": "generator.safetensors", "generated": "generate.json",
            "filtered": "decisions.npz", "crossfit": "selection.json", "augmented": "summary.json"}
# What that file holds when augment wrote it (JSON keys, npz arrays, safetensors metadata): its
# name alone does not make a folder ours.
OWN_KEYS = {"prepared": ("images", "labels", "split", "class_names"), "model_dir": ("augment",),
            "generated": ("checkpoint_sha256", "shards", "n_per_class"), "filtered": ("index", "accepted"),
            "crossfit": ("table", "reason"),
            "augmented": ("synthetic_share", "real", "per_class", "class_names")}


def check_stage_paths(stage: Stage, cfg: Any, paths: Paths, protect: dict[str, str] | None = None) -> None:
    """No output can destroy an input: ``stage``'s outputs must not equal, contain or lie inside the
    input datasets (``prepare.raw_dir``/``test_dir``), any other stage's outputs or the files in
    ``protect`` (``{"--params": "params.yaml"}``: what the caller read). An output folder the stage
    replaces as a whole must be missing, empty or one that augment wrote (:data:`OWN_FILE`). Called
    before the stage deletes or swaps anything (every caller goes through :meth:`Stage.__call__`)."""
    from augment.pipeline.paths import check_outputs_safe, check_output_owned

    protected: dict[str, str] = dict(protect or {})
    for spec in ("param:prepare.raw_dir", "param:prepare.test_dir"):
        value = paths.resolve(spec, cfg)
        if value is not None:
            protected[_spec_label(spec)] = value
    mine = stage_outputs(stage, cfg, paths)
    for other in STAGES:
        if other.name != stage.name:
            protected.update(stage_outputs(other, cfg, paths))
    check_outputs_safe(stage.name, mine, protected, paths.workspace)
    for spec in stage.outputs:
        if spec in OWN_FILE:
            check_output_owned(stage.name, _spec_label(spec), paths.resolve(spec, cfg), OWN_FILE[spec],
                               OWN_KEYS[spec])


def check_crossfit_folds(cfg: Any, paths: Paths) -> None:
    """Right after prepare, when a run goes on to cross-fitting: ``crossfit.folds`` must fit every
    class of the prepared train split, or the crossfit stage would fail only after train, generate
    and filter have run. Raises the crossfit stage's own :class:`DataError`."""
    from augment.data.prepare import load_prepared
    from augment.selection.crossfit import resolve_folds, stratified_folds

    if cfg.merge.quota != "crossfit":
        return
    ds = load_prepared(paths.prepared)
    y = ds.subset("train")[1]
    stratified_folds(y, resolve_folds(y, cfg.crossfit.folds, ds.class_names), cfg.crossfit.seed, ds.class_names)


def get_stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
