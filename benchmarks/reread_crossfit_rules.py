"""Re-read every stored utility run's out-of-fold table under three rules:

* ``bonferroni``: each of the ``m`` candidates at ``1 - (1 - confidence) / m`` (97.5 % for the
  default two shares), any order, the calibrated check at the same level -- the default from
  2026-12-02 03:16 UTC (commit 05f08a3);
* ``sequence``: each at ``confidence`` in the grid's order (shares ascending), stopping at the
  first that fails (``crossfit.multiple_testing``) -- a fixed-sequence test, the same guarantee
  over the grid; the default from commit 1075f06;
* ``check84``: the sequence, with the calibrated check (the gain at each candidate's best
  temperature) at its own level, ``crossfit.calibrated_confidence`` 0.84 (one standard error),
  the raw bound still at ``confidence`` -- the default from commit 5cf49c5;
* ``check70``: the same with the check at 0.7 (about half a standard error) -- the default from
  commit 7615806.

A bound at another
level is recomputed from the stored mean and bound (``screen_crossfit_rule.lower_at``); the level
a run's bounds were stored at is read from its commit and config (95 % before 05f08a3, the
Bonferroni level from it on, 95 % again from 1075f06 on, where the fixed sequence is the default). The pipeline is seeded end to end, so a run re-read under another rule has the same
table; only the share merged would change. Where the rules differ the report lists the run with its
*forced* (d) - (b) (the accepted samples merged at share 0.25 regardless of the choice, on the test
split): what merging would have done there at 0.25. Runs stored before the calibrated bound
existed are skipped (their tables lack it). The test split is never read here: only stored runs.

    python benchmarks/reread_crossfit_rules.py 'benchmarks/results/utility_runs/*.json' --out docs/screens/crossfit_sequence.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from screen_crossfit_rule import CONFIDENCE, choice  # noqa: E402
from augment.selection.crossfit import candidate_confidence  # noqa: E402

BONFERRONI_SINCE = "05f08a3"  # from this commit the bounds were stored at the Bonferroni level
SEQUENCE_SINCE = "1075f06"  # from this one at 95 % again, the fixed sequence being the default
CHECK_SINCE = "5cf49c5"  # from this one the calibrated check at 0.84
CHECK70_SINCE = "7615806"  # from this one at 0.7
RULES = ("bonferroni", "sequence", "check84", "check70")


def _contains(commit: str, ancestor: str, cache: dict[tuple[str, str], bool]) -> bool:
    """Whether ``commit`` contains ``ancestor`` (git)."""
    if (commit, ancestor) not in cache:
        rc = subprocess.run(["git", "merge-base", "--is-ancestor", ancestor, commit], cwd=ROOT,
                            capture_output=True).returncode
        if rc not in (0, 1):
            raise SystemExit(f"commit {commit} (or {ancestor}) is not in this repository: cannot tell the "
                             "level its bounds were stored at")
        cache[commit, ancestor] = rc == 0
    return cache[commit, ancestor]


def stored_rule(run: dict, cache: dict) -> str:
    """The rule a stored run chose by, from its commit and config: ``bonferroni`` or ``sequence``
    (each candidate at 95 %: also the rule before BONFERRONI_SINCE, which had no sequence but
    stored its bounds at 95 %, and its choice then read every candidate at that level)."""
    commit, config = run["commit"], str(run.get("config", ""))
    if "multiple_testing=bonferroni" in config.replace(" ", "") or "multiple_testing bonferroni" in config:
        return "bonferroni"
    if not _contains(commit, BONFERRONI_SINCE, cache):
        return "per_candidate"
    if _contains(commit, CHECK70_SINCE, cache):
        return "check70"
    if _contains(commit, CHECK_SINCE, cache):
        return "check84"
    return "sequence" if _contains(commit, SEQUENCE_SINCE, cache) else "bonferroni"


def reread(files: list[str]) -> tuple[list[dict], int]:
    """One row per stored run with a calibrated out-of-fold table; and the count of runs skipped."""
    rows, skipped, cache = [], 0, {}
    for f in files:
        doc = json.loads(Path(f).read_text())
        for r in doc.get("runs", []):
            t = r.get("crossfit_table")
            if not t or len(t) < 2:
                continue
            if any("scaled_nll_gain" not in row for row in t):
                skipped += 1
                continue
            rule = stored_rule(r, cache)
            stored = candidate_confidence(CONFIDENCE, len(t) - 1) if rule == "bonferroni" else CONFIDENCE
            t = [{k: v for k, v in row.items() if k != "scaled_nll_gain_check"} for row in t]  # each rule its own
            n = int(r["labelled"])
            forced = r.get("forced_d_minus_b") or []
            rows.append({"file": Path(f).name, "setting": r["setting"], "config": r.get("config", "default"),
                         "data_seed": r.get("data_seed", 0), "gen_seed": r["gen_seed"], "commit": r["commit"],
                         "stored": stored, "rule": rule,
                         "chosen": float(r["choice"]["synthetic_share"]),
                         "bonferroni": choice(t, True, familywise=True, images=n, stored=stored),
                         "sequence": choice(t, True, images=n, stored=stored, sequence=True),
                         "check84": choice(t, True, images=n, stored=stored, sequence=True, calibrated_level=0.84),
                         "check70": choice(t, True, images=n, stored=stored, sequence=True, calibrated_level=0.7),
                         "forced": 100 * float(np.mean(forced)) if forced else None,
                         "shares": [row["synthetic_share"] for row in t]})
    return rows, skipped


def report(files: list[str], out: Path, command: str) -> None:
    rows, skipped = reread(files)
    checked = [r for r in rows if r["rule"] in RULES]
    same = sum(r[r["rule"]] == r["chosen"] for r in checked)
    differ = [r for r in rows if len({r[k] for k in RULES}) > 1]

    def changes(a: str, b: str) -> str:
        d = [r for r in rows if r[a] != r[b]]
        gained = sum(r[b] > 0 and r[a] == 0 for r in d)
        lost = sum(r[a] > 0 and r[b] == 0 for r in d)
        return (f"{len(d)} runs: merges where {a} merged none on {gained}, none where it merged on {lost}, "
                f"another share on {len(d) - gained - lost}")
    lines = ["# Re-read: how the cross-fitted choice is tested (Bonferroni, fixed sequence, calibrated check at 0.84 "
             "and 0.7)", "",
             f"Written by `{command}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC from "
             f"{len(files)} stored utility run files (benchmarks/results/utility_runs/; each run's date, commit, "
             "machine and command are in its file and in docs/results.md). See the script's docstring for the "
             "method.", "",
             f"- runs with a calibrated out-of-fold table: {len(rows)} ({skipped} older runs skipped: no "
             "calibrated bound stored)",
             f"- check: on the {len(checked)} runs that chose by one of the four rules (Bonferroni from commit "
             f"{BONFERRONI_SINCE}, the fixed sequence from {SEQUENCE_SINCE}, check84 from {CHECK_SINCE}, check70 "
             f"from {CHECK70_SINCE}), the re-read of that rule gives the stored choice on {same}",
             f"- the fixed sequence against Bonferroni: {changes('bonferroni', 'sequence')}",
             f"- check84 against the fixed sequence: {changes('sequence', 'check84')}",
             f"- check70 against check84: {changes('check84', 'check70')}", ""]
    if differ:
        lines += ["| setting | config | labelled draw | gen seed | commit | Bonferroni | sequence | check84 | check70 | "
                  "forced (d) − (b) at 0.25, points |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(differ, key=lambda r: (r["setting"], r["config"], r["data_seed"], r["gen_seed"])):
            forced = f"{r['forced']:+.2f}" if r["forced"] is not None else "—"
            lines.append(f"| {r['setting']} | {r['config']} | {r['data_seed']} | {r['gen_seed']} | {r['commit']} | "
                         + " | ".join(str(r[k]) for k in RULES) + f" | {forced} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="utility run files (benchmarks/utility.py --json); a quoted glob is "
                    "expanded here, so that the report's command stays short")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screens" / "crossfit_sequence.md"))
    args = ap.parse_args(argv)
    args.files = sorted({p for f in args.files for p in (glob.glob(f) if "*" in f else [f])})
    if not args.files:
        ap.error("no utility run file matched")
    if Path(args.out).resolve() in {Path(f).resolve() for f in args.files}:
        ap.error(f"--out {args.out} is one of the files to read: it would be overwritten")
    command = "python benchmarks/reread_crossfit_rules.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    report(args.files, Path(args.out), command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
