"""Screen: which out-of-fold score gives the cross-fitted choice its power on 50-200 images?

Today the crossfit stage merges a synthetic share when the paired one-sided bound of its
out-of-fold **log-loss** gain is above 0 (augment/selection/crossfit.py). The log-loss is
unbounded: one held-out image the classifier gets confidently wrong can outweigh fifty it gets
right, so on 50 labelled images the bound is wide, and the stored runs show gains forced in at
share 0.25 of +0.8 to +1.6 points left unmerged (docs/screens/crossfit_confidence.md). The
**Brier score** (squared error of the predicted class probabilities) is also a proper scoring rule
but bounded (0 to 2 per image), so a few hard images weigh less.

A run here repeats one utility run's prepare and crossfit stages (same setting, labelled draw and
generator seed: the pipeline is seeded end to end, so at the stored run's commit and on its CPU
the out-of-fold table is the stored run's, bit for bit; elsewhere to a few thousandths -- the
report counts both) and keeps what the stage's table is computed from: each candidate's
per-image out-of-fold log-loss, log-loss at its best temperature, Brier score and correctness
(averaged over ``crossfit.seeds``). The report re-decides every run under each score, in the
fixed sequence at ``crossfit.confidence`` (95 %) with accuracy not lower, and reads the outcome on
the test split from the stored utility run (none: 0; share 0.25: its forced (d) - (b); its own
choice: its (d) - (b); another share: not measured, the forced 0.25 value stands in, counted).
No stage here reads the test split: the stored runs' outcomes are read only for the report.

    python benchmarks/screen_crossfit_score.py --setting digits8_5 --data-seed 3 --gen-seed 0 --json r.json
    python benchmarks/screen_crossfit_score.py --aggregate r*.json --out docs/screens/crossfit_score.md
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import screens as S  # noqa: E402
from reread_confidence import default_runs, outcome as paired_outcome  # noqa: E402
from augment.selection.crossfit import paired_gain  # noqa: E402

CONFIDENCE = 0.95  # today's crossfit.confidence
CHECK = 0.7  # today's crossfit.calibrated_confidence
SCORES = ("nll", "brier", "brier_nocheck")


def per_image(prob: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per held-out image, averaged over the classifier seeds (``prob``: (seeds, images, classes)):
    log-loss, Brier score, correct."""
    n = len(y)
    p_true = prob[:, np.arange(n), y]
    onehot = np.eye(prob.shape[-1])[y]
    return {"nll": -np.log(np.clip(p_true, 1e-12, 1.0)).mean(axis=0),
            "brier": ((prob - onehot[None]) ** 2).sum(-1).mean(axis=0),
            "correct": (prob.argmax(-1) == y).mean(axis=0)}


def run(args, overrides: dict) -> dict[str, Any]:
    import augment.selection.crossfit as C
    from augment.pipeline.paths import Paths
    from augment.pipeline.stages import STAGES

    spec = S.U.SETTINGS[args.setting]
    x, y, names = S.U.load_data(spec["data"], spec["size"])
    captured: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    original = C.temperature_scaled_nll

    def capture(prob: np.ndarray, labels: np.ndarray):  # called once per candidate, in the table's order
        scaled, t = original(prob, labels)
        captured.append((prob.copy(), labels.copy(), scaled.copy()))
        return scaled, t

    seconds = {}
    with tempfile.TemporaryDirectory(prefix=f"screen-score-{args.setting}-") as tmp:
        ws = Path(tmp)
        S.U.write_split(ws, x, y, names, spec["per_class"], args.data_seed)
        # as the utility benchmark's runs, under the rule they were made with
        cfg = S.U.run_config(ws, "crossfit", args.gen_seed, {}, S.with_strict_rule(overrides))
        paths = Paths().rooted(ws)
        C.temperature_scaled_nll = capture
        try:
            for stage in [s for s in STAGES if s.name in ("prepare", "crossfit")]:
                t0 = time.perf_counter()
                out = stage(cfg, paths, progress=False)
                seconds[stage.name] = round(time.perf_counter() - t0, 1)
        finally:
            C.temperature_scaled_nll = original
    table = out["table"]
    cands = []
    for row, (prob, labels, scaled) in zip(table, captured):
        pi = per_image(prob, labels)
        cands.append({"synthetic_share": row["synthetic_share"], "fraction": row["fraction"],
                      **{k: [round(float(v), 7) for v in a] for k, a in pi.items()},
                      "scaled_nll": [round(float(v), 7) for v in scaled]})
    return {"setting": args.setting, "data_seed": args.data_seed, "gen_seed": args.gen_seed,
            "images": int(len(captured[0][1])), "chosen": out["synthetic_share"], "table": table,
            "candidates": cands, "seconds": seconds}


def _passes(real: dict, cand: dict, score: str) -> tuple[bool, float]:
    """(passes, mean gain) of one candidate against real only under ``score``."""
    key = "nll" if score == "nll" else "brier"
    gain = paired_gain(np.asarray(real[key]) - np.asarray(cand[key]), CONFIDENCE)
    acc = float(np.mean(cand["correct"]) - np.mean(real["correct"]))
    ok = gain["lower"] > 0.0 and acc >= 0.0
    if score != "brier_nocheck":  # today's guard: the gain at each candidate's best temperature
        ok = ok and paired_gain(np.asarray(real["scaled_nll"]) - np.asarray(cand["scaled_nll"]), CHECK)["lower"] > 0.0
    return ok, gain["mean"]


def decide(run: dict[str, Any], score: str) -> float:
    """The share the fixed sequence picks under ``score`` (0.0: none)."""
    real, ok = run["candidates"][0], []
    for cand in run["candidates"][1:]:
        passed, mean = _passes(real, cand, score)
        if not passed:
            break
        ok.append((mean, -cand["synthetic_share"], cand["synthetic_share"]))
    return max(ok)[2] if ok else 0.0


def t_stat(run: dict[str, Any], score: str, i: int) -> float:
    key = "nll" if score == "nll" else "brier"
    d = np.asarray(run["candidates"][0][key]) - np.asarray(run["candidates"][i][key])
    se = d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() / se) if se > 0 else 0.0


def stored_runs(path: Path) -> dict[tuple, dict]:
    """Today's default runs in the utility benchmark's aggregate, by (setting, labelled draw, generator seed)."""
    return {(r["setting"], r.get("data_seed") or 0, r["gen_seed"]): r for r in default_runs(path)[0]}


def outcome(stored: dict, share: float) -> tuple[float, bool]:
    """(d) - (b) in points had ``share`` been merged, and whether it was measured."""
    diffs, known = paired_outcome(stored, share)
    return 100 * float(np.mean(diffs)), known


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    from benchmarks.utility import t_interval

    runs = [json.loads(Path(f).read_text()) for f in files]
    stored = stored_runs(ROOT / "benchmarks" / "results" / "utility.json")
    lines = S.report_header("Screen: log-loss or Brier score for the cross-fitted choice", files, runs, command, note)
    same = [r for r in runs if (r["setting"], r["data_seed"], r["gen_seed"]) in stored]
    match = sum(1 for r in same if all(
        math.isclose(a["nll_gain"], b["nll_gain"], rel_tol=1e-6, abs_tol=1e-9)
        for a, b in zip(r["table"], stored[r["setting"], r["data_seed"], r["gen_seed"]]["crossfit_table"])))
    agree = sum(1 for r in same if decide(r, "nll") == float(
        stored[r["setting"], r["data_seed"], r["gen_seed"]]["choice"]["synthetic_share"]))
    lines += ["", f"- check: {match} of {len(same)} runs repeat their stored utility run's out-of-fold log-loss "
              "gains to 6 digits (benchmarks/results/utility.json, today's default; a run stored at an older "
              "commit or on another CPU may differ by a few thousandths), and today's rule re-decided from these "
              f"runs' scores gives the stored choice on {agree} of {len(same)}; {len(runs) - len(same)} have no "
              "stored run",
              "- `nll`: today's rule (log-loss bound at 95 %, accuracy not lower, the log-loss gain at each "
              "candidate's best temperature above 0 at 70 %, fixed sequence); `brier`: the same with the Brier "
              "score's bound instead of the log-loss's; `brier_nocheck`: without the temperature check",
              "- t: the paired t statistic of each score's gain at share 0.25 / 0.5 (95 % one-sided needs about "
              "1.73 on 20 images, 1.68 on 50, 1.65 on 200); outcome: (d) − (b) on the test split from the stored "
              "run, points (≈: a share that run did not measure; its forced 0.25 value stands in)", "",
              "| setting | draw | gen seed | forced 0.25 | t nll | t brier | nll | brier | brier_nocheck |",
              "|---|---|---|---|---|---|---|---|---|"]
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(same, key=lambda r: (r["setting"], r["data_seed"], r["gen_seed"])):
        st = stored[r["setting"], r["data_seed"], r["gen_seed"]]
        cells = []
        for score in SCORES:
            share = decide(r, score)
            val, known = outcome(st, share)
            per[r["setting"]][score].append(val)
            cells.append(f"{share} ({'' if known else '≈'}{val:+.2f})")
        forced = 100 * float(np.mean(st["forced_d_minus_b"]))
        per[r["setting"]]["forced"].append(forced)
        ts = [" / ".join(f"{t_stat(r, s, i):+.2f}" for i in range(1, len(r["candidates"]))) for s in ("nll", "brier")]
        lines.append(f"| {r['setting']} | {r['data_seed']} | {r['gen_seed']} | {forced:+.2f} | {ts[0]} | {ts[1]} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Per setting, (d) − (b) over runs (one value per labelled draw × generator seed), mean and 95 % "
              "t-interval, points:", "", "| setting | runs | " + " | ".join(SCORES) + " | forced 0.25 |",
              "|---|---|" + "---|" * (len(SCORES) + 1)]
    for s in sorted(per):
        cells = []
        for k in (*SCORES, "forced"):
            c = t_interval(per[s][k])
            cells.append(f"{c['mean']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]")
        lines.append(f"| {s} | {len(per[s]['nll'])} | " + " | ".join(cells) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    return S.screen_main(argv, __doc__, "screen_crossfit_score.py", ROOT / "docs" / "screens" / "crossfit_score.md",
                         lambda ap: ap.add_argument("--data-seed", type=int, default=0), run, aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
