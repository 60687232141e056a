"""Re-read every stored utility run under the cross-fitted rule that became the default on
2026-12-06: merge the candidate whose out-of-fold log-loss *estimate* beats real only
(``crossfit.confidence: 0.5``), unless its out-of-fold accuracy is *significantly* lower
(``crossfit.accuracy_guard: no_significant_loss``: its 95 % interval lies wholly below 0), without
the calibrated check (``crossfit.calibrated_gain: false``); candidates in the fixed sequence,
smallest share first, as before.

The rule it replaces (a one-sided 95 % bound above 0, the calibrated check, accuracy not lower)
asks a 50-image out-of-fold test for evidence it cannot give: on the 8x8 digits with 5 per class
it merged 4 of 10 runs whose forced share 0.25 gained +1.02 points
(docs/screens/crossfit_confidence.md). Plain cross-validated selection takes the better estimate;
the risk is merging samples that hurt when the estimate is wrong by chance. This screen measures
both, on stored runs only (the pipeline is seeded end to end, so a run re-read under another rule
has the same out-of-fold table; only the share merged changes):

1. *today's default runs* (``meta.default_config`` of the results file: the configuration the
   rule was chosen on) -- per setting, (d) - (b) over runs under the stored choice and the new rule;
2. *every other configuration* (39 of them: other samplers, filters, families, generator sizes,
   older defaults -- the rule was not chosen on them) -- per configuration and setting, the same,
   flagging any whose interval lies wholly below 0; and over all runs whose choice changes, the
   mean change and how many lose more than half a point.

A run's outcome is known when the rule merges none (0), share 0.25 (the run's *forced* row) or
the run's own choice; for share 0.5 where the run merged none or 0.25 the forced 0.25 value stands
in (``≈``; docs/screens/share_ceiling.md: the gain is flat from 0.25 to 0.75). Tables stored before
the accuracy interval was recorded (``accuracy_gain_ci_high``) are read with accuracy "not
lower". The test split is never read here: only stored runs.

    python benchmarks/reread_estimate_rule.py --out docs/screens/crossfit_estimate.md
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

from augment.core.files import atomic_write_text  # noqa: E402
from augment.selection.crossfit import choose  # noqa: E402
from benchmarks.common import machine  # noqa: E402
from benchmarks.utility import t_interval  # noqa: E402
from reread_confidence import _cell as reread_cell, outcome  # noqa: E402

HARM = -0.005  # a changed run "loses" when its (d) - (b) drops by more than half a point


def estimate_choice(table: list[dict[str, Any]], guard: str = "no_significant_loss") -> float:
    """The share the new default picks from a stored out-of-fold table: at ``confidence`` 0.5 the
    bound is the estimate itself, so the stored bound's level does not matter."""
    rows = [{**r, "nll_gain_lower": r["nll_gain"]} for r in table]
    return float(choose(rows, 0.0, False, True, guard)["synthetic_share"])


def stored_runs(path: Path, config: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Every run with an out-of-fold table and a forced row, and the configuration the rule was
    chosen on (``config``; default: the file's ``meta.default_config``)."""
    doc = json.loads(path.read_text())
    runs = [r for r in doc["runs"] if r.get("crossfit_table") and r.get("forced_d_minus_b")]
    if not runs:
        raise SystemExit(f"{path}: no run with an out-of-fold table and a forced row")
    label = config or doc["meta"].get("default_config")
    if not any(r["config"] == label for r in runs):
        raise SystemExit(f"{path}: no run of config {label!r}")
    return runs, label


def reread(runs: list[dict[str, Any]], default: str | None) -> dict[str, Any]:
    """Per (config, setting): (d) - (b) over runs under the stored choice and the new rule, runs
    merged, runs stood in; and every run whose choice changes."""
    cells: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"stored": [], "new": [], "merged_stored": 0, "merged_new": 0, "stand_in": 0, "old_table": 0})
    changed = []
    for r in runs:
        old = float(r["choice"]["synthetic_share"])
        new = estimate_choice(r["crossfit_table"])
        d_old, _ = outcome(r, old)
        d_new, known = outcome(r, new)
        c = cells[(r["config"], r["setting"])]
        c["stored"].append(float(np.mean(d_old)))  # one value per run (labelled draw x generator seed)
        c["new"].append(float(np.mean(d_new)))
        c["merged_stored"] += old > 0
        c["merged_new"] += new > 0
        c["stand_in"] += not known
        c["old_table"] += any("accuracy_gain_ci_high" not in x for x in r["crossfit_table"][1:])
        if new != old:
            changed.append({"setting": r["setting"], "default": r["config"] == default, "from": old, "to": new,
                            "change": float(np.mean(d_new)) - float(np.mean(d_old)), "known": known})
    out = {"cells": {}, "changed": changed, "runs": len(runs)}
    for (cfg, s), c in cells.items():
        out["cells"].setdefault(cfg, {})[s] = {**c, "stored_ci": t_interval(c["stored"]), "new_ci": t_interval(c["new"]),
                                              "n": len(c["new"])}
    for name, keep in (("default", True), ("other", False)):
        ch = [x["change"] for x in changed if x["default"] is keep]
        out[f"changed_{name}"] = {"n": len(ch), "ci": t_interval(ch) if len(ch) > 1 else None,
                                  "lose": sum(v < HARM for v in ch), "gain": sum(v > -HARM for v in ch),
                                  "stand_in": sum(not x["known"] for x in changed if x["default"] is keep)}
    return out


def _cell(c: dict[str, float] | None, n: int) -> str:
    if n < 2 or c is None or not np.isfinite(c.get("low", np.nan)):
        return "(1 run)" if n < 2 else "—"
    return reread_cell(c)


def _single(c: dict[str, Any], which: str) -> str:
    return f"{100 * c[which][0]:+.2f} (1 run)" if c["n"] == 1 else _cell(c[which + "_ci"], c["n"])


def report(path: Path, out: Path, command: str, config: str | None = None) -> dict[str, Any]:
    runs, default = stored_runs(path, config)
    res = reread(runs, default)
    m = machine()
    rel = path.relative_to(ROOT) if path.is_absolute() and ROOT in path.parents else path
    lines = ["# Re-read: merging on the out-of-fold estimate, on every stored run", "",
             f"Written by `{command}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC ({m['nproc']} CPU(s) "
             f"{m['cpu']}; nothing is trained here) from the {res['runs']} runs in `{rel}` that stored an out-of-fold "
             "table and a forced row. Each run's date, commit, machine and command are in docs/results.md. Method: "
             "the script's docstring.", "",
             "- *stored*: the choice the run made (the rule of its day); *estimate*: the rule that is the default "
             "from 2026-12-06 (`crossfit.confidence: 0.5`, `accuracy_guard: no_significant_loss`, "
             "`calibrated_gain: false`, fixed sequence)",
             "- cells: (d) − (b) in points, mean and 95 % t-interval over runs (one value per labelled draw × "
             "generator seed, its classifier seeds averaged); `k/n`: runs merged; `≈u`: u runs where the new rule "
             "merges share 0.5 that the run did not measure (its forced 0.25 value stands in); `old u`: u runs "
             "whose table has no accuracy interval (read with accuracy not lower)", ""]
    dflt = res["cells"].get(default, {})
    lines += ["## The configuration the rule was chosen on", "", f"Config: {default}.", "",
              "| setting | stored choice | estimate rule |", "|---|---|---|"]
    for s in sorted(dflt):
        c = dflt[s]
        lines.append(f"| {s} | {_single(c, 'stored')} {c['merged_stored']}/{c['n']} | "
                     f"{_single(c, 'new')} {c['merged_new']}/{c['n']}"
                     + (f" ≈{c['stand_in']}" if c["stand_in"] else "") + " |")
    others = [(cfg, s, c) for cfg, per in res["cells"].items() if cfg != default for s, c in per.items()]
    below = [(cfg, s, c) for cfg, s, c in others if c["n"] > 1 and c["new_ci"]["high"] < 0]
    below_stored = [(cfg, s, c) for cfg, s, c in others if c["n"] > 1 and c["stored_ci"]["high"] < 0]
    lines += ["", "## Every other configuration (the rule was not chosen on these)", "",
              f"{len(others)} (configuration, setting) cells. Interval wholly below 0: {len(below_stored)} under the "
              f"stored choices, {len(below)} under the estimate rule"
              + (" (" + "; ".join(f"{s}: {cfg[:70]}" for cfg, s, _ in below) + ")" if below else "") + ".", "",
              "| setting | configuration | stored choice | estimate rule |", "|---|---|---|---|"]
    for cfg, s, c in sorted(others, key=lambda t: (t[1], t[0])):
        if c["merged_stored"] == c["merged_new"] and c["stored"] == c["new"]:
            continue  # unchanged: not listed
        lines.append(f"| {s} | {cfg[:90]} | {_single(c, 'stored')} "
                     f"{c['merged_stored']}/{c['n']} | {_single(c, 'new')} {c['merged_new']}/{c['n']}"
                     + (f" ≈{c['stand_in']}" if c["stand_in"] else "")
                     + (f" old {c['old_table']}" if c["old_table"] else "") + " |")
    lines += ["", "(Cells whose choices do not change are not listed.)", "", "## Runs whose choice changes", "",
              "| runs | changed | change in (d) − (b), mean and 95 % t-interval | lose > 0.5 pt | gain > 0.5 pt | stood in |",
              "|---|---|---|---|---|---|"]
    for name, title in (("default", "the configuration chosen on"), ("other", "every other configuration")):
        c = res[f"changed_{name}"]
        lines.append(f"| {title} | {c['n']} | {_cell(c['ci'], c['n'])} | {c['lose']} | {c['gain']} | {c['stand_in']} |")
    worst = sorted(res["changed"], key=lambda x: x["change"])[:8]
    lines += ["", "Largest losses among changed runs (setting, share stored → new, change; `≈`: stood in): "
              + ", ".join(f"{x['setting']} {x['from']} → {x['to']} {100 * x['change']:+.2f}{'' if x['known'] else ' ≈'}"
                          for x in worst) + "."]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(lines) + "\n")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "utility.json"),
                    help="the utility benchmark's aggregate (benchmarks/utility.py --json)")
    ap.add_argument("--config", default=None, help="the configuration the rule was chosen on (default: the file's "
                    "default_config; name it once a later default has taken that place)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screens" / "crossfit_estimate.md"))
    a = ap.parse_args(argv)
    if Path(a.out).resolve() == Path(a.json).resolve():
        ap.error(f"--out {a.out} is the file to read: it would be overwritten")
    args = shlex.join(sys.argv[1:] if argv is None else argv)
    report(Path(a.json), Path(a.out), f"python benchmarks/reread_estimate_rule.py {args}".strip(), a.config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
