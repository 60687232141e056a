"""Screen: which synthetic share does cross-fitting choose, with and without ``crossfit.calibrated_gain``?

The pipeline is seeded end to end, so a setting's prepare, train, generate, filter and crossfit
stages give the same samples and the same out-of-fold table as the utility benchmark's run of that
setting, generator seed and ``--set`` overrides. Only the rule that reads the table changed. This
screen runs those stages (as ``benchmarks/utility.py`` runs them: crossfit mode, default
``params.yaml``, ``--set`` overrides; the test split is never read) and records the out-of-fold
table with both bounds: the raw log-loss gain and the gain at each candidate's best temperature.
From the table it derives the choice of both rules: ``crossfit.calibrated_gain`` off (the rule
before 2026-12-02) and on (the default since). What a choice does on the test set is in the
utility benchmark's run of the same setting and seed: merging none gives (d) = (b) exactly.

    python benchmarks/screen_crossfit_rule.py --setting mnist28_10 --gen-seed 0 --json R0.json
    python benchmarks/screen_crossfit_rule.py --aggregate R0.json R1.json --out docs/screens/crossfit_rule.md
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import screens as S  # noqa: E402


def choice(table: list[dict], calibrated: bool, min_gain: float = 0.0) -> float:
    """The share a rule picks from an out-of-fold table (0.0: none), as ``crossfit_select`` does."""
    ok = [r for r in table[1:] if r["nll_gain_lower"] > min_gain and r["accuracy_gain"] >= 0.0
          and (not calibrated or r["scaled_nll_gain_lower"] > min_gain)]
    return max(ok, key=lambda r: (r["nll_gain"], -r["synthetic_share"]))["synthetic_share"] if ok else 0.0


def run(setting: str, gen_seed: int, overrides: dict) -> dict:
    from augment.pipeline.stages import STAGES

    with S.filtered_run(setting, gen_seed, overrides, "screen-crossfit") as fr:
        stage = next(s for s in STAGES if s.name == "crossfit")
        t0 = time.perf_counter()
        sel = stage(fr.cfg, fr.paths, progress=False)
        fr.seconds["crossfit"] = round(time.perf_counter() - t0, 1)
        accepted = int(len(fr.sx))
    keys = ("synthetic_share", "fraction", "oof_accuracy", "nll_gain", "nll_gain_lower", "temperature",
            "scaled_nll_gain", "scaled_nll_gain_lower", "accuracy_gain", "accuracy_gain_ci_low",
            "accuracy_gain_ci_high")
    table = [{k: r[k] for k in keys} for r in sel["table"]]
    return {"setting": setting, "gen_seed": gen_seed, "accepted": accepted, "table": table,
            "chosen": sel["synthetic_share"], "reason": sel["reason"],
            "choice_raw_rule": choice(table, False), "choice_calibrated_rule": choice(table, True),
            "seconds": fr.seconds}


def aggregate(files: list[str], out: Path, command: str, note: str | None = None) -> None:
    runs = [json.loads(Path(f).read_text()) for f in files]
    lines = S.report_header("Screen: the cross-fitted choice with and without the calibrated bound", files, runs,
                            command, note)
    lines += ["", "Per run and synthetic candidate: out-of-fold accuracy gain (points), the one-sided 95 % bound "
              "of the log-loss gain as it is and at each candidate's best temperature, that temperature "
              "(real only's in brackets), and the share each rule chooses (0 = merge none).", "",
              "| setting | overrides | gen seed | accepted | share | accuracy gain | log-loss bound | "
              "bound at best T | T (real only) | chosen, raw rule | chosen, calibrated rule |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["setting"], json.dumps(r["meta"].get("set", {})), r["gen_seed"])):
        sets = json.dumps(r["meta"].get("set", {}))
        t0 = r["table"][0]["temperature"]
        for i, row in enumerate(r["table"][1:]):
            first = i == 0
            lines.append(f"| {r['setting'] if first else ''} | {(sets if sets != '{}' else 'default') if first else ''} | "
                         f"{r['gen_seed'] if first else ''} | {r['accepted'] if first else ''} | "
                         f"{row['synthetic_share']} | {100 * row['accuracy_gain']:+.1f} | "
                         f"{row['nll_gain_lower']:+.4f} | {row['scaled_nll_gain_lower']:+.4f} | "
                         f"{row['temperature']:.2f} ({t0:.2f}) | "
                         f"{r['choice_raw_rule'] if first else ''} | {r['choice_calibrated_rule'] if first else ''} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    return S.screen_main(argv, __doc__, "screen_crossfit_rule.py", ROOT / "docs" / "screens" / "crossfit_rule.md",
                         lambda ap: None, lambda a, o: run(a.setting, a.gen_seed, o), aggregate)


if __name__ == "__main__":
    raise SystemExit(main())
