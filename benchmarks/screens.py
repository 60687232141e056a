"""What the screens (``screen_*.py``) share: the pipeline run up to the filter stage on one
utility setting, the report's header, and the command line (one run to JSON, or ``--aggregate``)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import utility as U  # noqa: E402
from common import machine  # noqa: E402


#: the cross-fitted rule these screens were written for (the default until 2026-12-06): a one-sided
#: 95 % bound, accuracy not lower, the calibrated check. Screens of that rule pin it, so that they
#: repeat what they measured whatever params.yaml's default is now; ``--set`` overrides still win.
STRICT_RULE = {"crossfit": {"confidence": 0.95, "accuracy_guard": "not_lower", "calibrated_gain": True}}


def with_strict_rule(overrides: dict) -> dict:
    """``overrides`` on top of :data:`STRICT_RULE` (per group; the user's keys win)."""
    out = {g: dict(v) for g, v in STRICT_RULE.items()}
    for g, v in overrides.items():
        out[g] = {**out.get(g, {}), **v}
    return out

@dataclass
class FilteredRun:
    """One setting's run up to the filter stage: the labelled (``rx``, ``ry``) and test (``tx``,
    ``ty``) images, the accepted samples (``sx``, ``sy``) and where the stages wrote."""

    cfg: Any
    paths: Any
    rx: np.ndarray
    ry: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    num_classes: int
    sx: np.ndarray
    sy: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def filtered_run(setting: str, gen_seed: int, overrides: dict, prefix: str) -> Iterator[FilteredRun]:
    """Run prepare, train, generate and filter as ``benchmarks/utility.py`` runs them (crossfit
    mode, default ``params.yaml``, ``overrides``) in a scratch folder that lives while the context
    does. The test images are for scoring only: no stage sees them."""
    from augment.data.prepare import load_prepared
    from augment.filters.apply import load_decisions
    from augment.pipeline.paths import Paths
    from augment.pipeline.stages import STAGES
    from augment.selection.merge import load_rows_images

    spec = U.SETTINGS[setting]
    x, y, names = U.load_data(spec["data"], spec["size"])
    seconds = {}
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-{setting}-") as tmp:
        ws = Path(tmp)
        U.write_split(ws, x, y, names, spec["per_class"], 0)
        cfg = U.run_config(ws, "crossfit", gen_seed, {}, overrides)  # as the utility benchmark's runs
        paths = Paths().rooted(ws)
        for stage in [s for s in STAGES if s.name in ("prepare", "train", "generate", "filter")]:
            t0 = time.perf_counter()
            stage(cfg, paths, progress=False)
            seconds[stage.name] = round(time.perf_counter() - t0, 1)
        ds = load_prepared(ws / "data/prepared")
        rx, ry = ds.subset("train")
        tx, ty = ds.subset("test")  # scoring only: no stage, teacher, edit or classifier sees it
        dec = load_decisions(ws / "data/filtered")
        rows = np.flatnonzero(dec["accepted"])
        if not len(rows):
            raise SystemExit(f"{setting}, generator seed {gen_seed}: the filter accepted no sample; nothing to screen")
        sx, sy = load_rows_images(ws / "data/generated", dec, rows), dec["labels"][rows]
        yield FilteredRun(cfg, paths, rx, ry, tx, ty, ds.num_classes, sx, sy, seconds)


def labelled_split(setting: str, data_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """A utility setting's labelled images (``rx, ry``, in index order) and test images (``tx, ty``,
    every other image: for scoring only), drawn by ``benchmarks/utility.py``'s labelled_mask, as
    write_split draws them for ``data_seed``, and the class names -- for screens that run outside the pipeline."""
    spec = U.SETTINGS[setting]
    x, y, names = U.load_data(spec["data"], spec["size"])
    is_lab = U.labelled_mask(y, len(names), spec["per_class"], data_seed)
    return x[is_lab], y[is_lab], x[~is_lab], y[~is_lab], names


def screen_inputs(setting: str, data_seed: int, overrides: dict
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], Any]:
    """What a screen outside the pipeline starts from: :func:`labelled_split`'s labelled and test
    images and class names, and ``params.yaml`` with the screen's ``--set`` overrides (the typed
    config its samplers and classifiers read)."""
    from augment.config import load_params

    return (*labelled_split(setting, data_seed), U.configure(load_params(ROOT / "params.yaml"), overrides))


def save_sample_grid(rx: np.ndarray, ry: np.ndarray, names: list[str], sets: list[tuple[np.ndarray, np.ndarray]],
                     path: str) -> None:
    """A picture of a screen's samples: per class a row of 2 labelled images, then 4 samples of each
    of ``sets`` (``(images, labels)``), scaled up to about 56 pixels a side."""
    from augment.core.images import image_grid
    from augment.core.plots import save_png

    rows = []
    for c in range(len(names)):
        rows += list(rx[ry == c][:2]) + [x[y == c][j] for x, y in sets for j in range(4)]
    save_png(image_grid(np.stack(rows), 2 + 4 * len(sets), scale=max(1, 56 // rx.shape[1]), row_labels=names), path)


def half_and_half(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per class the first half of ``a``'s samples and the second half of ``b``'s (both hold the
    same number per class, in class order)."""
    xs, ys = [], []
    for c in range(k):
        ia, ib = np.flatnonzero(a[1] == c), np.flatnonzero(b[1] == c)
        h = len(ia) // 2
        xs += [a[0][ia[:h]], b[0][ib[h:]]]
        ys += [a[1][ia[:h]], b[1][ib[h:]]]
    return np.concatenate(xs), np.concatenate(ys)


def plan_accuracies(cfg: Any, rx: np.ndarray, ry: np.ndarray, tx: np.ndarray, ty: np.ndarray, k: int,
                    clf_seeds: list[int], plan: dict[str, tuple[Any, float | None]], seconds: dict[str, float]
                    ) -> dict[str, list[float]]:
    """Test accuracy per classifier seed of evaluate's recipe and classifier (``cfg.evaluate``) on
    CPU for every entry of ``plan``, ``name -> ((syn_x, syn_y) or None, share)``: the labelled
    images with classical augmentation plus those samples at that share; ``seconds`` gets each
    entry's time. The test images only score."""
    import torch

    from augment.downstream.classifier import predict_proba, train_downstream
    from augment.downstream.models import resolve_model
    from augment.evaluation.evaluate import classifier_spec

    dev = torch.device("cpu")
    recipe = classifier_spec(cfg.evaluate)
    make = resolve_model(cfg.evaluate.model, "evaluate.model")
    out = {}
    for name, (data, share) in plan.items():
        extra = (None, None, None) if data is None else (*data, share)
        t0 = time.perf_counter()
        out[name] = [float((predict_proba(train_downstream(rx, ry, k, recipe, s, dev, cfg.classical, *extra, make),
                                          tx, dev).argmax(1) == ty).mean()) for s in clf_seeds]
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {np.mean(out[name]):.4f}", flush=True)
    return out


def write_paired_report(out: Path, title: str, files: list[str], command: str, note: str | None,
                        variants: list[str], caption: str, run_label: Callable[[dict], str]) -> None:
    """A screen's report: the header, one paired row per (setting, classifier, overrides) against
    ``b`` for ``variants``, then each run's ``run_label`` (its parameters and seconds)."""
    runs = [json.loads(Path(f).read_text()) for f in files]
    lines = report_header(title, files, runs, command, note)
    lines += paired_header(["setting", "classifier", "overrides", "gen seeds", "samples per set", "b"], variants,
                           caption)
    lines += [paired_row(key, rs, variants) for key, rs in group_runs(runs)]
    lines += ["", "Parameters and seconds per run: " + "; ".join(run_label(r) for r in runs), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


def report_header(title: str, files: list[str], runs: list[dict], command: str, note: str | None) -> list[str]:
    """The report's title, the command that wrote it, and each run's date, commit, machine and command."""
    lines = [f"# {title}", "",
             f"Written by `{command}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC from these runs"
             " (each run's date, commit, machine and command):", ""]
    for f, r in zip(files, runs):
        m = r["meta"]
        lines.append(f"- `{Path(f).name}`: {m['date']}, commit {m['commit']}, {m['machine']['nproc']} CPU(s) "
                     f"{m['machine']['cpu']}, torch {m['machine']['torch']}: `{m['command']}`")
    return lines + (["", note] if note else [])


def group_runs(runs: list[dict]) -> list[tuple[tuple[str, str, str], list[dict]]]:
    """Runs pooled by (setting, classifier, overrides as JSON), sorted: one report row each."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["setting"], r["family"], json.dumps(r["meta"].get("set", {}))), []).append(r)
    return sorted(groups.items())


def paired_header(columns: list[str], variants: list[str], caption: str = "") -> list[str]:
    """The caption and header of a screen's paired table: ``columns`` (ending with ``b``), then one
    ``<variant> − b`` column per variant; ``caption`` adds a sentence to the standard one."""
    head = columns + [f"{v} − b" for v in variants]
    text = ("Test accuracy (%); the paired difference to `b` per (generator seed x classifier seed) pair, "
            "mean and 95 % t-interval." + (f" {caption}" if caption else ""))
    return ["", text, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def paired_row(key: tuple[str, str, str], rs: list[dict], variants: list[str], extra: list[str] | None = None) -> str:
    """One row of a screen's paired table for the runs ``rs`` of group ``key`` (:func:`group_runs`):
    setting, classifier, overrides, generator seeds, each run's ``accepted`` count, then ``extra``
    cells, ``b``'s mean accuracy and the :func:`paired_cells`."""
    setting, family, sets = key
    b = [a for r in rs for a in r["accuracy"]["b"]]
    cells = [setting, family, sets if sets != "{}" else "default", ",".join(str(r["gen_seed"]) for r in rs),
             ", ".join(str(r["accepted"]) for r in rs), *(extra or []), f"{100 * np.mean(b):.2f}",
             *paired_cells(rs, variants)]
    return "| " + " | ".join(cells) + " |"


def paired_cells(rs: list[dict], variants: list[str]) -> list[str]:
    """Per variant, the paired difference to ``b`` in points over every (generator seed x
    classifier seed) pair, mean and 95 % t-interval; "—" where a run lacks the variant."""
    cells = []
    for v in variants:
        if not all(v in r["accuracy"] for r in rs):  # a variant added after these runs
            cells.append("—")
            continue
        ci = U.t_interval([100 * (a - bb) for r in rs for a, bb in zip(r["accuracy"][v], r["accuracy"]["b"])])
        cells.append(f"{ci['mean']:+.2f} [{ci['low']:+.2f}, {ci['high']:+.2f}]")
    return cells


def sample_screen_args(ap: argparse.ArgumentParser) -> None:
    """The options of a screen that draws its own samples: the labelled draw (``--data-seed``) and
    where to save a picture of the samples (``--grid-png``)."""
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--grid-png", default=None, help="where to save a picture of the samples")


def screen_main(argv: list[str] | None, doc: str, script: str, default_out: Path,
                add_args: Callable[[argparse.ArgumentParser], None],
                run: Callable[[argparse.Namespace, dict], dict],
                aggregate: Callable[[list[str], Path, str, str | None], None]) -> int:
    """A screen's command line: ``--json`` for one run (``run(args, overrides)``), ``--aggregate``
    for the report, which may not overwrite a run it reads."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=list(U.SETTINGS), default="mnist28_10")
    ap.add_argument("--gen-seed", type=int, default=0)
    ap.add_argument("--clf-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    add_args(ap)
    ap.add_argument("--set", nargs="*", default=[], metavar="GROUP.KEY=JSON")
    ap.add_argument("--json", help="where to write this run")
    ap.add_argument("--aggregate", nargs="+", metavar="JSON")
    ap.add_argument("--out", default=str(default_out))
    ap.add_argument("--note", default=None, help="a sentence on how the runs ran, for the report")
    args = ap.parse_args(argv)
    command = f"python benchmarks/{script} " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.aggregate:
        if Path(args.out).resolve() in {Path(f).resolve() for f in args.aggregate}:
            ap.error(f"--out {args.out} is one of the runs to aggregate: it would be overwritten")
        aggregate(args.aggregate, Path(args.out), command, args.note)
        return 0
    if not args.json:
        ap.error("--json is required for a run")
    overrides = U.parse_set(args.set)
    meta = {"date": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC", "commit": U._commit(),
            "machine": machine(), "set": overrides, "command": command}
    result = run(args, overrides)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({**result, "meta": meta}, indent=1))
    return 0
