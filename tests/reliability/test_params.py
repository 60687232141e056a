"""Class 3 -- every number checked: NaN/inf refused for every float, seeds in [0, 2**32 - 1],
cross-group constraints at load time, duplicate keys, empty, huge and alias-bomb files refused.
Each case: exit 2, one line naming the parameter, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_PARAMS
from tests.reliability.helpers import assert_one_line_error, run_cli, tree_hash


def _params(overrides: dict) -> str:
    params = {k: dict(v) for k, v in TINY_PARAMS.items()}
    for group, values in overrides.items():
        params.setdefault(group, {}).update(values)
    return yaml.safe_dump(params, sort_keys=False)


def _expect_refused(ws: Path, capsys, text: str, *needles: str, command: str = "prepare") -> str:
    Path("params.yaml").write_text(text)
    before = tree_hash(ws)
    rc, out, err = run_cli(capsys, command, "--quiet")
    line = assert_one_line_error(rc, err, *needles)
    after = tree_hash(ws)
    after.pop(".augment.lock", None)
    assert after == before  # nothing written: no data/prepared, raw untouched, params untouched
    return line


FLOATS = ["prepare.val_fraction", "prepare.near_duplicate_tolerance", "train.lr_g", "train.lr_d",
          "train.ema_decay", "train.beta2", "train.ada_rate", "train.ms_weight", "filter.threshold",
          "filter.top_fraction", "merge.balance_factor", "evaluate.lr", "classical.rotate", "train.ada_target"]


@pytest.mark.parametrize("key", FLOATS)
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_floats_are_refused(workspace, capsys, key, value):
    group, name = key.split(".")
    _expect_refused(workspace, capsys, _params({group: {name: value}}), key, "finite")


@pytest.mark.parametrize("key,value", [("merge.tune_fractions", [1.0, float("nan")]),
                                       ("merge.tune_shares", [float("-inf")]),
                                       ("merge.synthetic_share", float("nan")),
                                       ("evaluate.synthetic_share", float("inf"))])
def test_non_finite_in_lists_and_optionals(workspace, capsys, key, value):
    group, name = key.split(".")
    _expect_refused(workspace, capsys, _params({group: {name: value}}), key, "finite")


@pytest.mark.parametrize("key,value", [("prepare.seed", -1), ("train.seed", 2**70), ("generate.seed", 2**32),
                                       ("filter.seed", -5), ("merge.seed", 2**33),
                                       ("evaluate.seeds", [0, -1]), ("merge.tune_seeds", [2**40]),
                                       ("evaluate.ablation_seeds", [2**64])])
def test_seeds_out_of_range(workspace, capsys, key, value):
    group, name = key.split(".")
    line = _expect_refused(workspace, capsys, _params({group: {name: value}}), key, "out of range [0, 4294967295]")
    assert "Traceback" not in line


def test_largest_seed_is_accepted(workspace, capsys):
    Path("params.yaml").write_text(_params({"prepare": {"seed": 2**32 - 1}}))
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    assert rc == 0, err


def test_tuned_quota_needs_a_val_split(workspace, capsys):
    text = _params({"prepare": {"val_fraction": 0.0}, "merge": {"quota": "tuned"}})
    _expect_refused(workspace, capsys, text, "merge.quota", "prepare.val_fraction")


def test_refit_with_val_needs_a_val_split(workspace, capsys):
    text = _params({"prepare": {"val_fraction": 0.0}, "merge": {"refit_with_val": True}})
    _expect_refused(workspace, capsys, text, "merge.refit_with_val", "prepare.val_fraction")


def test_no_test_split_is_refused_at_load(workspace, capsys):
    _expect_refused(workspace, capsys, _params({"prepare": {"test_fraction": 0.0}}), "prepare.test_fraction",
                    "evaluate", command="train")


def test_val_fraction_zero_is_fine_without_tuning(workspace, capsys):
    Path("params.yaml").write_text(_params({"prepare": {"val_fraction": 0.0}, "merge": {"quota": "all"}}))
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    assert rc == 0, err


def test_common_yaml_slips_get_a_message_that_says_what_to_write(workspace, capsys):
    # PyYAML reads 2e-4 (no decimal point) as text
    _expect_refused(workspace, capsys, _params({"train": {"lr_g": "2e-4"}}),
                    "train.lr_g = '2e-4': expected a number (YAML reads 2e-4 as text", "0.0002")
    from augment.config import _float_hint  # the hint keeps the user's digits
    assert _float_hint("125e-6") == " (YAML reads 125e-6 as text: write it as 125.0e-6 or 0.000125)"
    assert _float_hint("2.55e4") == " (YAML reads 2.55e4 as text: write it as 2.55e+4 or 25500.0)"
    assert _float_hint("nan") == _float_hint("abc") == ""
    # an empty folder name is not "no test folder"
    _expect_refused(workspace, capsys, _params({"prepare": {"test_dir": ""}}),
                    "prepare.test_dir is empty", "null")
    # a top-level key that YAML reads as a number, beside an unknown name (was a TypeError)
    _expect_refused(workspace, capsys, _params({}) + "1: x\nfoo: y\n", "unknown parameter(s) 1, foo")


def test_duplicate_top_level_key(workspace, capsys):
    text = _params({}) + "train:\n  iterations: 5\n"
    _expect_refused(workspace, capsys, text, "params.yaml", "duplicate key 'train'", "lines")


def test_duplicate_nested_key(workspace, capsys):
    text = _params({}).replace("  seed: 0\n", "  seed: 0\n  seed: 7\n", 1)
    _expect_refused(workspace, capsys, text, "duplicate key 'seed'")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "~\n"],
                         ids=["empty", "blank", "comment", "doc-marker", "null"])
def test_empty_params_file(workspace, capsys, text):
    _expect_refused(workspace, capsys, text, "params.yaml is empty")


def test_billion_laughs_is_refused_before_it_expands(workspace, capsys):
    # 10**10 list items once expanded: the refusal names the size limit, so it was counted on the
    # aliases, not after building them (which would exhaust memory instead of returning)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    _expect_refused(workspace, capsys, "\n".join(lines) + "\n", "params.yaml", "expands to more than")


def test_recursive_alias_is_refused(workspace, capsys):
    _expect_refused(workspace, capsys, "a: &a [*a]\n", "params.yaml")


def test_huge_file_is_refused_before_parsing(workspace, capsys):
    text = _params({}) + "# " + "x" * (2 << 20) + "\n"
    _expect_refused(workspace, capsys, text, "params.yaml", "far too large")


def test_not_utf8(workspace, capsys):
    Path("params.yaml").write_bytes(b"prepare:\n  raw_dir: \xff\xfe\n")
    before = tree_hash(workspace)
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    assert_one_line_error(rc, err, "params.yaml", "UTF-8")
    after = tree_hash(workspace)
    after.pop(".augment.lock", None)
    assert after == before


def test_yaml_error_message_stays_one_line(workspace, capsys):
    _expect_refused(workspace, capsys, "prepare:\n  seed: [1,\n  raw_dir: x\n", "params.yaml", "not valid YAML")


def test_params_path_is_a_folder(workspace, capsys):
    rc, _, err = run_cli(capsys, "prepare", "--quiet", "--params", "data")
    assert_one_line_error(rc, err, "parameter file data does not exist")
