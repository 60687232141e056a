"""Re-read today's default runs of the utility benchmark under a less strict cross-fitted choice:
how much of the gain that the samples carry (the *forced* share) would a looser rule merge, and
does it start merging where the samples hurt (lfw)?

Reads the runs that ``docs/results.md`` aggregates as today's default
(``benchmarks/results/utility.json``, config = its ``meta.default_config``) and re-reads each
run's stored out-of-fold table under:

* the raw log-loss bound at ``--levels`` (``crossfit.confidence``; 0.95 is today's), the
  calibrated check at 0.7 (``crossfit.calibrated_confidence``, today's), candidates in the fixed
  sequence (today's ``crossfit.multiple_testing``) -- :func:`augment.selection.crossfit.choose`, the
  pipeline's own rule, on bounds recomputed at the level (``screen_crossfit_rule.lower_at``);
* the same with the accuracy condition relaxed from "out-of-fold accuracy not lower" to "not
  significantly lower" (its 95 % interval reaches above 0) -- a rule not built, screened here;
* the same as today's with the fixed sequence run the other way, largest share first -- also a
  valid fixed-sequence test (any order fixed in advance), not built.

The pipeline is seeded end to end, so a run re-read under another rule has the same table; only
the share merged changes. Its (d) - (b) on the test split is then known when the rule merges none
(0: (d) is (b)), share 0.25 (the run's *forced* (d) - (b): the accepted samples merged at 0.25
regardless of the choice) or the share the run chose itself; for another share (0.5 where the run
merged none or 0.25) it was not measured, and the run's forced value at 0.25 stands in (counted in
the table, ``≈``). Two ceilings that no rule can pass with these samples close the table: every run
forced at 0.25, and per run the best of none, 0.25 and its own choice *by the test split's
outcome* (not a rule: it reads the test split; here it only bounds what a rule could reach).
The test split is never read here: only stored runs.

    python benchmarks/reread_confidence.py --out docs/screens/crossfit_confidence.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from screen_crossfit_rule import choice  # noqa: E402
from benchmarks.common import machine  # noqa: E402
from benchmarks.utility import t_interval  # noqa: E402

STORED = 0.95  # the level today's default runs stored their bounds at (crossfit.confidence, fixed sequence)
CHECK = 0.7  # today's crossfit.calibrated_confidence
LEVELS = (0.95, 0.9, 0.85, 0.8)


VARIANTS = {  # (accuracy condition, order of the fixed sequence) -> heading
    ("not_lower", "ascending"): "accuracy not lower, smallest share first (today's)",
    ("not_significantly_lower", "ascending"): "accuracy not significantly lower (not built), smallest share first",
    ("not_lower", "descending"): "accuracy not lower, largest share first (not built)",
}


def rule_choice(table: list[dict[str, Any]], images: int, level: float, accuracy: str = "not_lower",
                order: str = "ascending") -> float:
    """The share today's rule picks from a stored table with the raw bound at ``level`` (the
    calibrated check at CHECK, fixed sequence); ``accuracy="not_significantly_lower"``: a candidate
    whose out-of-fold accuracy interval reaches above 0 counts as not lower; ``order="descending"``:
    the synthetic candidates tested largest share first."""
    if order == "descending":
        table = [table[0]] + table[1:][::-1]
    guard = "no_significant_loss" if accuracy == "not_significantly_lower" else "not_lower"
    return float(choice(table, True, images=images, stored=STORED, sequence=True, calibrated_level=CHECK,
                        confidence=level, guard=guard))


def outcome(run: dict[str, Any], share: float) -> tuple[list[float], bool]:
    """(d) - (b) per classifier seed if ``share`` were merged, and whether it was measured."""
    paired = [float(v) for v in run["paired_d_minus_b"]]
    if share == 0.0:
        return [0.0] * len(paired), True
    if abs(share - float(run["choice"]["synthetic_share"])) < 1e-9:
        return paired, True
    forced = [float(v) for v in run.get("forced_d_minus_b") or []]
    return forced, share == 0.25


def default_runs(path: Path, config: str | None = None) -> tuple[list[dict[str, Any]], str]:
    doc = json.loads(path.read_text())
    label = config or doc["meta"].get("default_config")
    runs = [r for r in doc["runs"] if r.get("config") == label and r.get("crossfit_table")
            and r.get("forced_d_minus_b")]
    if not runs:
        raise SystemExit(f"{path}: no run of config {label!r} with an out-of-fold table and a forced row")
    return runs, label


def sweep(runs: list[dict[str, Any]], levels=LEVELS) -> dict[str, Any]:
    """Per rule and setting: merged runs, runs whose outcome stands in, and (d) - (b)."""
    out: dict[str, Any] = {"rules": {}, "reproduced": 0, "runs": len(runs)}
    for r in runs:
        if rule_choice(r["crossfit_table"], int(r["labelled"]), STORED) == float(r["choice"]["synthetic_share"]):
            out["reproduced"] += 1
    for (acc, order), lv in ((v, lv) for v in VARIANTS for lv in levels):
        per: dict[str, dict[str, Any]] = defaultdict(lambda: {"diffs": [], "merged": 0, "stand_in": 0, "runs": 0})
        for r in runs:
            share = rule_choice(r["crossfit_table"], int(r["labelled"]), lv, acc, order)
            diffs, known = outcome(r, share)
            p = per[r["setting"]]
            p["diffs"].append(float(np.mean(diffs)))  # one value per run (labelled draw x generator seed)
            p["runs"] += 1
            p["merged"] += share > 0
            p["stand_in"] += not known
        out["rules"][f"{acc}/{order}@{lv}"] = {k: {**v, "d_minus_b": t_interval(v["diffs"])} for k, v in per.items()}
    ceil: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"forced": [], "best": []})
    for r in runs:
        opts = [outcome(r, s)[0] for s in (0.0, 0.25, float(r["choice"]["synthetic_share"]))]
        ceil[r["setting"]]["forced"].append(float(np.mean(outcome(r, 0.25)[0])))
        ceil[r["setting"]]["best"].append(max(float(np.mean(d)) for d in opts))
    out["ceilings"] = {k: {n: t_interval(v) for n, v in c.items()} for k, c in ceil.items()}
    return out


def _cell(c: dict[str, float]) -> str:
    return f"{100 * c['mean']:+.2f} [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]"


def report(path: Path, out: Path, command: str, config: str | None = None, levels=LEVELS) -> dict[str, Any]:
    runs, label = default_runs(path, config)
    res = sweep(runs, levels)
    settings = sorted({r["setting"] for r in runs})
    m = machine()
    lines = ["# Re-read: a looser cross-fitted choice on today's default runs", "",
             f"Written by `{command}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC "
             f"({m['nproc']} CPU(s) {m['cpu']}; nothing is trained here) from the {len(runs)} runs of today's "
             f"default in `{path.relative_to(ROOT) if path.is_absolute() and ROOT in path.parents else path}` "
             "(config: " + label + "). Each run's date, commit, machine and command are in docs/results.md. See "
             "the script's docstring for the method.", "",
             f"- check: today's rule (raw bound at {STORED}, check at {CHECK}, fixed sequence) re-read from the "
             f"stored tables gives the stored choice on {res['reproduced']} of {res['runs']} runs",
             "- cells: (d) − (b) in points, mean and 95 % t-interval over runs (one value per labelled draw x "
             "generator seed, its classifier seeds averaged: as docs/results.md's *Other labelled draws* and "
             "docs/stages.md's table, not counting a run's classifier seeds as independent); `k/n`: runs merged; "
             "`≈u`: u runs where the rule picks a share that run did not measure (its forced 0.25 value stands in)",
             ""]
    for (acc, order), title in VARIANTS.items():
        today = (acc, order) == ("not_lower", "ascending")
        lines += [f"## Raw bound's level; {title}", "",
                  "| setting | " + " | ".join(f"{lv}" + (" (today)" if lv == STORED and today else "")
                                              for lv in levels) + " |",
                  "|---|" + "---|" * len(levels)]
        for s in settings:
            cells = []
            for lv in levels:
                p = res["rules"][f"{acc}/{order}@{lv}"][s]
                cells.append(f"{_cell(p['d_minus_b'])} {p['merged']}/{p['runs']}"
                             + (f" ≈{p['stand_in']}" if p["stand_in"] else ""))
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Ceilings (not rules)", "",
              "| setting | every run forced at 0.25 | best of none / 0.25 / own choice per run, by the test split |",
              "|---|---|---|"]
    for s in settings:
        c = res["ceilings"][s]
        lines.append(f"| {s} | {_cell(c['forced'])} | {_cell(c['best'])} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "utility.json"),
                    help="the utility benchmark's aggregate (benchmarks/utility.py --json)")
    ap.add_argument("--config", default=None, help="the config label to re-read (default: the file's default_config)")
    ap.add_argument("--levels", nargs="+", type=float, default=list(LEVELS))
    ap.add_argument("--out", default=str(ROOT / "docs" / "screens" / "crossfit_confidence.md"))
    a = ap.parse_args(argv)
    if Path(a.out).resolve() == Path(a.json).resolve():
        ap.error(f"--out {a.out} is the file to read: it would be overwritten")
    for lv in a.levels:
        if not 0.5 <= lv < 1.0:
            ap.error(f"--levels {lv}: a one-sided level in [0.5, 1)")
    args = shlex.join(sys.argv[1:] if argv is None else argv)
    command = f"python benchmarks/reread_confidence.py {args}".strip()
    report(Path(a.json), Path(a.out), command, a.config, tuple(a.levels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
