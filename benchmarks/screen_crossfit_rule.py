"""Screen: which synthetic share does cross-fitting choose, with and without ``crossfit.calibrated_gain``?

The pipeline is seeded end to end, so a setting's prepare, train, generate, filter and crossfit
stages give the same samples and the same out-of-fold table as the utility benchmark's run of that
setting, generator seed and ``--set`` overrides. Only the rule that reads the table changed. This
screen runs those stages (as ``benchmarks/utility.py`` runs them: crossfit mode, default
``params.yaml``, ``--set`` overrides; the test split is never read) and records the out-of-fold
table with both bounds: the raw log-loss gain and the gain at each candidate's best temperature.
From the table it derives the choice of five rules: ``crossfit.calibrated_gain`` off (the rule
before 2026-12-02); on, each candidate tested at ``crossfit.confidence`` (2026-12-02, 01:07 to
03:16 UTC); on, with ``confidence`` held over all candidates together by Bonferroni (the default
until 2026-12-04) or by a fixed sequence (each at ``confidence``, smallest share first, stopping
at the first failure: the default since); and, not built, the calibrated bound alone
(familywise, without the raw one). A bound
at another level is recomputed from the stored mean and bound (the t-interval's
standard error), so runs stored before the change are re-read too. What a choice does on the test
set is in the utility benchmark's run of the same setting and seed: merging none gives (d) = (b)
exactly.

    python benchmarks/screen_crossfit_rule.py --setting mnist28_10 --gen-seed 0 --json R0.json
    python benchmarks/screen_crossfit_rule.py --aggregate R0.json R1.json --out docs/screens/crossfit_rule.md
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import screens as S  # noqa: E402
from augment.config import CrossfitConfig  # noqa: E402
from augment.selection.crossfit import _t_quantile, candidate_confidence, choose  # noqa: E402


CLASSES = {"digits": 10, "mnist": 10, "lfw": 2}  # for runs stored before "images" was recorded
CONFIDENCE = 0.95  # crossfit.confidence of every run here (the default)
CALIBRATED_CHECK = CrossfitConfig().calibrated_confidence  # its own level: 0.84 from commit 5cf49c5, 0.7 from 7615806


def lower_at(row: dict, key: str, images: int, stored: float, level: float) -> float:
    """``row[key]``'s one-sided lower bound at ``level``, from its mean and its bound at ``stored``
    (paired t over ``images``, as :func:`augment.selection.crossfit.paired_gain`)."""
    mean, lower = row[key], row[key + "_lower"]
    if level == stored:
        return lower
    se = (mean - lower) / _t_quantile(stored, images - 1)
    return mean - _t_quantile(level, images - 1) * se


def choice(table: list[dict], calibrated: bool, min_gain: float = 0.0, familywise: bool = False,
           images: int = 0, stored: float = CONFIDENCE, raw: bool = True, sequence: bool = False,
           calibrated_level: float | None = None, confidence: float = CONFIDENCE,
           guard: str = "not_lower") -> float:
    """The share a rule picks from an out-of-fold table (0.0: none), as ``crossfit_select`` does;
    ``familywise``: each candidate tested at the Bonferroni level (``images``: the labelled count,
    ``stored``: the level the table's bounds were written at); ``sequence``: each at ``CONFIDENCE``
    in the table's order, stopping at the first failure (``crossfit.multiple_testing: sequence``);
    ``raw=False``: the calibrated bound alone, without the raw one (a rule not built, screened here);
    ``calibrated_level``: the calibrated check at its own level (``crossfit.calibrated_confidence``;
    None: at the raw bound's level, as before that param); ``confidence``: ``crossfit.confidence``;
    ``guard``: ``crossfit.accuracy_guard``."""
    level = candidate_confidence(confidence, len(table) - 1) if familywise and not sequence else confidence
    rows = [{**r, **{f"{k}_lower": lower_at(r, k, images, stored, level) for k in ("nll_gain", "scaled_nll_gain")}}
            for r in table]
    for r, orig in zip(rows, table):  # the check the rule reads, never one a newer table stored
        r["scaled_nll_gain_check"] = (r["scaled_nll_gain_lower"] if calibrated_level is None else
                                      lower_at(orig, "scaled_nll_gain", images, stored, calibrated_level))
    if not raw:  # the raw bound ignored
        rows = [{**r, "nll_gain_lower": math.inf} for r in rows]
    return choose(rows, min_gain, calibrated, sequence, guard)["synthetic_share"]


def images_of(run: dict) -> int:
    spec = S.U.SETTINGS[run["setting"]]
    return int(run.get("images") or spec["per_class"] * CLASSES[spec["data"]])


def choices(run: dict) -> dict[str, float]:
    """Each rule's choice from a stored run's table."""
    n, stored = images_of(run), run.get("candidate_confidence", CONFIDENCE)
    t = run["table"]
    return {"raw": choice(t, False, images=n, stored=stored), "calibrated": choice(t, True, images=n, stored=stored),
            "familywise": choice(t, True, familywise=True, images=n, stored=stored),
            "sequence": choice(t, True, images=n, stored=stored, sequence=True),
            "sequence_check": choice(t, True, images=n, stored=stored, sequence=True,
                                     calibrated_level=CALIBRATED_CHECK),
            "calibrated_only": choice(t, True, familywise=True, images=n, stored=stored, raw=False)}


def run(setting: str, gen_seed: int, overrides: dict) -> dict:
    from augment.pipeline.stages import STAGES

    with S.filtered_run(setting, gen_seed, S.with_strict_rule(overrides), "screen-crossfit") as fr:
        stage = next(s for s in STAGES if s.name == "crossfit")
        t0 = time.perf_counter()
        sel = stage(fr.cfg, fr.paths, progress=False)
        fr.seconds["crossfit"] = round(time.perf_counter() - t0, 1)
        accepted, images = int(len(fr.sx)), int(len(fr.ry))
    keys = ("synthetic_share", "fraction", "oof_accuracy", "nll_gain", "nll_gain_lower", "temperature",
            "scaled_nll_gain", "scaled_nll_gain_lower", "accuracy_gain", "accuracy_gain_ci_low",
            "accuracy_gain_ci_high")
    table = [{k: r[k] for k in keys} for r in sel["table"]]
    out = {"setting": setting, "gen_seed": gen_seed, "accepted": accepted, "images": images, "table": table,
           "candidate_confidence": sel["candidate_confidence"], "chosen": sel["synthetic_share"],
           "reason": sel["reason"], "seconds": fr.seconds}
    c = choices(out)
    out.update(choice_raw_rule=c["raw"], choice_calibrated_rule=c["calibrated"], choice_familywise_rule=c["familywise"],
               choice_sequence_rule=c["sequence"], choice_default_rule=c["sequence_check"])
    return out


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    runs = [json.loads(Path(f).read_text()) for f in files]
    lines = S.report_header("Screen: the cross-fitted choice with and without the calibrated bound", files, runs,
                            command, note)
    lines += ["", "Per run and synthetic candidate: out-of-fold accuracy gain (points), the one-sided bound of the "
              "log-loss gain as it is and at each candidate's best temperature, each at 95 % per candidate and, "
              "in brackets, at the Bonferroni level that holds 95 % over the run's candidates (97.5 % for two), "
              "that temperature (real only's in brackets), and the share each rule chooses (0 = merge none): "
              "raw (calibrated_gain off), calibrated (per candidate), familywise (calibrated, Bonferroni: 95 % "
              "over all candidates; the default from 2026-12-02 to 2026-12-04, crossfit.multiple_testing "
              "bonferroni), sequence (calibrated, each candidate at 95 % in order, smallest share first, stopping "
              "at the first that fails: 95 % over all candidates too; the default from commit 1075f06), "
              "sequence + check (the same with the calibrated check at its own level, "
              f"crossfit.calibrated_confidence {CALIBRATED_CHECK}: the default; 0.84 from commit 5cf49c5, 0.7 "
              "from commit 7615806), and "
              "calibrated only (the bound at the best temperature alone, familywise, without the raw one: not "
              "built).", "",
              "| setting | overrides | gen seed | accepted | share | accuracy gain | log-loss bound | "
              "bound at best T | T (real only) | chosen: raw | calibrated | familywise | sequence | sequence + check | "
              "calibrated only |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["setting"], json.dumps(r["meta"].get("set", {})), r["gen_seed"])):
        sets = json.dumps(r["meta"].get("set", {}))
        t0 = r["table"][0]["temperature"]
        n, stored = images_of(r), r.get("candidate_confidence", CONFIDENCE)
        fw = candidate_confidence(CONFIDENCE, len(r["table"]) - 1)
        c = choices(r)
        for i, row in enumerate(r["table"][1:]):
            first = i == 0
            b = {k: (lower_at(row, k, n, stored, CONFIDENCE), lower_at(row, k, n, stored, fw))
                 for k in ("nll_gain", "scaled_nll_gain")}
            lines.append(f"| {r['setting'] if first else ''} | {(sets if sets != '{}' else 'default') if first else ''} | "
                         f"{r['gen_seed'] if first else ''} | {r['accepted'] if first else ''} | "
                         f"{row['synthetic_share']} | {100 * row['accuracy_gain']:+.1f} | "
                         f"{b['nll_gain'][0]:+.4f} ({b['nll_gain'][1]:+.4f}) | "
                         f"{b['scaled_nll_gain'][0]:+.4f} ({b['scaled_nll_gain'][1]:+.4f}) | "
                         f"{row['temperature']:.2f} ({t0:.2f}) | "
                         + " | ".join(str(c[k]) if first else ""
                                      for k in ("raw", "calibrated", "familywise", "sequence", "sequence_check",
                                                "calibrated_only"))
                         + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    return S.screen_main(argv, __doc__, "screen_crossfit_rule.py", ROOT / "docs" / "screens" / "crossfit_rule.md",
                         lambda ap: None, lambda a, o: run(a.setting, a.gen_seed, o), aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
