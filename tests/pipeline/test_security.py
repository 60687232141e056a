"""Security and leakage: nothing read from disk is unpickled, paths stay in the workspace, the
pipeline never touches the network, and the TEST split never reaches a generator, filter or tuner.
"""

from __future__ import annotations

import ast
import hashlib
import socket
from pathlib import Path

import numpy as np
import pytest

from augment.cli import STAGE_NAMES as STAGES
from augment.cli import main
from tests.conftest import ROOT, make_image_folder, write_params

SOURCE_DIRS = ("augment", "flows")


# ------------------------------------------------------------------------- source scan (AST)

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
NETWORK_MODULES = {"socket", "urllib.request", "http.client", "requests", "httpx", "urllib3", "ftplib",
                   "smtplib", "aiohttp"}
EXEC_BUILTINS = {"eval", "exec", "compile", "__import__"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def unsafe_calls(source: str, filename: str = "<string>", network: bool = True) -> list[str]:
    """Every way ``source`` could execute code from a file (or reach the network), by line."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                root = name.split(".")[0]
                if root in UNSAFE_MODULES or name in UNSAFE_MODULES:
                    found.append(f"{where}: imports {name}")
                if network and (name in NETWORK_MODULES or root in {"requests", "httpx", "urllib3", "aiohttp"}):
                    found.append(f"{where}: imports network module {name}")
        if not isinstance(node, ast.Call):
            continue
        func = _dotted(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        if isinstance(node.func, ast.Name) and node.func.id in EXEC_BUILTINS:
            found.append(f"{where}: calls {node.func.id}()")
        if func == "torch.load":
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        ap = kw.get("allow_pickle")
        if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
            found.append(f"{where}: allow_pickle not False")
        if func in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            found.append(f"{where}: {func} (use yaml.safe_load)")
        if func.endswith("read_pickle") or func in ("os.system", "os.popen"):
            found.append(f"{where}: {func}")
        sh = kw.get("shell")
        if sh is not None and not (isinstance(sh, ast.Constant) and sh.value is False):
            found.append(f"{where}: subprocess with shell=True")
    return found


def test_scanner_catches_every_unsafe_pattern():
    bad = """
import pickle
from dill import loads
import socket
x = torch.load(f)
y = torch.load(f, weights_only=False)
z = np.load(f, allow_pickle=True)
w = yaml.load(s)
eval("1")
exec("x = 1")
df = pd.read_pickle(p)
os.system("ls")
subprocess.run("ls", shell=True)
"""
    hits = unsafe_calls(bad)
    assert len(hits) == 12, hits
    ok = """
import json
m = model.eval()
a = torch.load(f, weights_only=True)
b = np.load(f, allow_pickle=False)
c = yaml.safe_load(s)
r = re.compile("x")
"""
    assert unsafe_calls(ok) == []


def test_no_pickle_eval_or_network_in_the_source():
    files = [p for d in SOURCE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 10
    hits = []
    for p in files:
        # flows/ talk to the local Prefect API by design; augment/ never opens a socket itself.
        rel = p.relative_to(ROOT)
        hits += unsafe_calls(p.read_text(encoding="utf-8"), str(rel), network="flows" not in rel.parts)
    assert not hits, "\n".join(hits)


# ------------------------------------------------------------------- workspace confinement


def test_output_folder_that_is_a_symlink_is_replaced_not_written_through(workspace: Path, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "precious.txt").write_text("keep me")
    Path("data/prepared").symlink_to(outside, target_is_directory=True)
    assert main(["prepare", "--quiet"]) == 0
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]  # nothing written outside
    assert Path("data/prepared").is_dir() and not Path("data/prepared").is_symlink()
    assert not list(Path("data").glob(".prepared*"))  # the replaced link is removed, not left aside


def test_an_output_folder_holding_the_params_file_is_refused(workspace: Path, capsys):
    """The folder a stage replaces must not hold the params file it was run with."""
    Path("cfg").mkdir()
    Path("cfg/params.yaml").write_text(Path("params.yaml").read_text())
    assert main(["prepare", "--quiet", "--params", "cfg/params.yaml", "--prepared", "cfg"]) == 2
    assert "contains --params = cfg/params.yaml" in capsys.readouterr().err
    assert sorted(p.name for p in Path("cfg").iterdir()) == ["params.yaml"]


def test_a_folder_augment_did_not_write_is_not_replaced(workspace: Path, capsys):
    """A stage replaces its output folder whole. A non-empty folder without the file the stage
    always writes is someone else's: refused, naming it, and left as it was. A folder the stage
    wrote (or an empty one) is replaced as before."""
    Path("mystuff").mkdir()
    Path("mystuff/notes.txt").write_text("mine")
    assert main(["prepare", "--quiet", "--prepared", "mystuff"]) == 2
    err = capsys.readouterr().err
    assert "--prepared = mystuff" in err and "augment did not write" in err and "dataset.npz" in err
    assert sorted(p.name for p in Path("mystuff").iterdir()) == ["notes.txt"]
    Path("mystuff/notes.txt").unlink()  # empty: used
    assert main(["prepare", "--quiet", "--prepared", "mystuff"]) == 0
    assert main(["prepare", "--quiet", "--prepared", "mystuff"]) == 0  # its own output: replaced
    assert (Path("mystuff") / "dataset.npz").is_file()
    Path("afile").write_text("x")
    assert main(["prepare", "--quiet", "--prepared", "afile"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and Path("afile").read_text() == "x"
    # The file's name alone does not make a folder ours: a results folder of the user's with a
    # summary.json (the merged folder's file) in it is refused, and nothing in it is deleted.
    Path("results").mkdir()
    Path("results/summary.json").write_text("{}")
    Path("results/notes.txt").write_text("mine")
    assert main(["merge", "--quiet", "--augmented", "results"]) == 2
    assert "its summary.json is not one augment wrote" in capsys.readouterr().err
    assert sorted(p.name for p in Path("results").iterdir()) == ["notes.txt", "summary.json"]
    Path("mystuff/dataset.npz").write_bytes(b"not an archive")
    assert main(["prepare", "--quiet", "--prepared", "mystuff"]) == 2 and Path("mystuff/dataset.npz").is_file()


def test_every_folder_replacing_stage_names_the_file_it_always_writes():
    """:data:`OWN_FILE` covers every stage output that is a whole folder swapped into place."""
    from augment.pipeline.stages import OWN_FILE, OWN_KEYS, STAGES as DECLARED

    folders = {spec for st in DECLARED for spec in st.outputs if ":" not in spec}
    assert folders == set(OWN_FILE) == set(OWN_KEYS)


# -------------------------------------------------------------- network + test-split leakage


class NetworkUsed(AssertionError):
    pass


def _blocked(*args, **kwargs):
    raise NetworkUsed(f"network access attempted: {args[:2]}")


class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        _blocked(*args)


def _no_network(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(socket, "socket", _NoSocket)
    mp.setattr(socket, "create_connection", _blocked)
    mp.setattr(socket, "getaddrinfo", _blocked)


def tree(path: Path, skip: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if p.is_file() and not rel.startswith(skip):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _workspace(root: Path, quota: str) -> Path:
    # Odd class-folder names on purpose: they travel through every stage into merge's folders.
    make_image_folder(root / "data/raw", per_class=9)
    for old, new in [("class_0", "with space"), ("class_1", "ünïcødé"), ("class_2", "-dash")]:
        (root / "data/raw" / old).rename(root / "data/raw" / new)
    write_params(root / "params.yaml", _widest_overrides(quota))
    return root


# The two quotas that decide from held-out data: crossfit (the default: out-of-fold scores over
# the labelled images) and tuned (a VAL split). Each makes the other's stage a no-op, so the test
# split check runs once per quota.
QUOTAS_THAT_TUNE = ("crossfit", "tuned")


def _widest_overrides(quota: str) -> dict:
    """Switch on every filter (they may read TRAIN/VAL) and the tuner ``quota`` names."""
    from augment.config import FILTER_NAMES

    return {"filter": {"filters": list(FILTER_NAMES)}, "merge": {"quota": quota}}


@pytest.fixture(scope="module", params=QUOTAS_THAT_TUNE)
def clean_run(request, tmp_path_factory) -> Path:
    """Every stage, evaluate included, with the network unplugged."""
    root = _workspace(tmp_path_factory.mktemp(f"clean-{request.param}"), request.param)
    with pytest.MonkeyPatch.context() as mp:
        _no_network(mp)
        mp.chdir(root)
        assert main(["run", "--quiet"]) == 0
    return root


@pytest.mark.slow
def test_pipeline_runs_with_the_network_unplugged(clean_run: Path):
    assert (clean_run / "metrics/evaluate.json").is_file()
    # `augment run` leaves a params file that repeats it, whatever params.yaml says later
    from augment.config import load_params

    assert load_params(clean_run / "metrics/run_params.yaml") == load_params(clean_run / "params.yaml")
    import cv2
    import torch

    head = (clean_run / "metrics/run_params.yaml").read_text().splitlines()[1]
    assert f"torch {torch.__version__}" in head and f"opencv {cv2.__version__}" in head and "albumentations " in head
    assert {p.name for p in (clean_run / "data/augmented").iterdir() if p.is_dir()} == {"with space", "ünïcødé", "-dash"}
    # each folder a stage wrote passes its own content check, so a re-run may replace it
    from augment.pipeline.paths import Paths, written_by_augment
    from augment.pipeline.stages import OWN_FILE, OWN_KEYS

    for spec, own in OWN_FILE.items():
        assert written_by_augment(clean_run / getattr(Paths(), spec) / own, OWN_KEYS[spec]), spec


@pytest.mark.slow
def test_test_split_never_reaches_generator_filter_or_tuner(clean_run: Path, tmp_path: Path, monkeypatch):
    """Replace every TEST image with noise: everything before evaluate is byte-identical.

    Covers every stage the CLI knows except evaluate (the test split's one consumer), so a
    tuning or calibration stage added later is covered too; every filter is on, and the run is
    made once with each quota that decides from held-out data (crossfit, tuned).
    """
    import json

    from augment.config import load_params
    from augment.core.files import read_csv
    from augment.core.images import png_bytes
    from augment.data.prepare import SPLIT_CODE, load_prepared

    quota = load_params(clean_run / "params.yaml").merge.quota
    ws = _workspace(tmp_path / "poisoned", quota)
    rng = np.random.default_rng(123)
    test_files = [r["file"] for r in read_csv(clean_run / "data/prepared/manifest.csv") if r["split"] == "test"]
    assert test_files
    for f in test_files:  # the split depends on labels and the seed, never on pixels
        (ws / f).write_bytes(png_bytes(rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)))
    monkeypatch.chdir(ws)
    _no_network(monkeypatch)
    for stage in STAGES:
        if stage != "evaluate":
            assert main([stage, "--quiet"]) == 0, stage

    a, b = load_prepared(clean_run / "data/prepared"), load_prepared(ws / "data/prepared")
    assert np.array_equal(a.split, b.split)
    test = a.split == SPLIT_CODE["test"]
    assert not np.array_equal(a.images[test], b.images[test])  # the poison did land in the test split
    np.testing.assert_array_equal(a.images[~test], b.images[~test])

    skip = ("data/raw/", "data/prepared/", "params.yaml")
    clean, poisoned = tree(clean_run, skip), tree(ws, skip)
    assert all(k.startswith("metrics/") for k in set(clean) - set(poisoned))  # evaluate's outputs (not run)
    assert not set(poisoned) - set(clean)
    common = sorted(set(clean) & set(poisoned))
    for out in ("models/generator.safetensors", "data/generated/generate.json", "data/augmented/manifest.csv"):
        assert out in common
    different = [k for k in common if clean[k] != poisoned[k]]
    assert not different, f"outputs changed when only test images changed: {different[:10]}"
    # the tuner of this quota did its work (and so was covered), the other stood aside
    selection = json.loads((ws / "data/crossfit/selection.json").read_text())
    assert selection["used"] is (quota == "crossfit")
    if quota == "crossfit":
        assert len(selection["table"]) == 2 and selection["folds"] == 2  # real only + share 0.5, 2 folds
    else:  # the VAL-split tuner scored its grid (no synthetic, and shares x fractions)
        assert len(read_csv(ws / "metrics/tuning.csv")) > 1


def test_test_dir_images_never_reach_training(workspace: Path, monkeypatch):
    """With a separate test folder, train sees exactly the raw folder's train split."""
    from augment.data.prepare import load_prepared

    make_image_folder(workspace / "data/test", per_class=2, seed=9)
    write_params(workspace / "params.yaml", {"prepare": {"test_dir": "data/test"}})
    assert main(["prepare", "--quiet"]) == 0
    ds = load_prepared("data/prepared")
    from_test = {f for f, s in zip(ds.files, ds.split) if s == 2}
    assert from_test == {str(p) for p in Path("data/test").rglob("*.png")}
    assert all(f.startswith("data/raw/") for f, s in zip(ds.files, ds.split) if s != 2)


def test_filter_refuses_samples_of_an_earlier_generator(workspace: Path, capsys):
    """`augment train` re-run (another seed) but not generate: the discriminator the filter would
    load is not the one trained with the samples' generator. The filter refuses, naming
    generate.json and the stage to re-run, instead of scoring them with the wrong critic."""
    from tests.conftest import write_params

    for stage in ("prepare", "train", "generate"):
        assert main([stage, "--quiet"]) == 0, stage
    write_params(Path("params.yaml"), {"train": {"seed": 7}})
    assert main(["train", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["filter", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "data/generated/generate.json" in err and "another checkpoint" in err and "augment generate" in err
    assert not Path("data/filtered").exists()
    assert main(["generate", "--quiet"]) == 0 and main(["filter", "--quiet"]) == 0


def test_stages_run_by_hand_refuse_outputs_of_an_earlier_split(workspace: Path, capsys):
    """`augment prepare` re-run with another split, then a later stage run by hand: the
    checkpoint, the samples and the merged folder were made before, from images some of which
    are test images now. Each stage refuses them, naming the file and the stage to re-run,
    instead of leaking the new test split into evaluate. The full run still works."""
    from tests.conftest import write_params

    for stage in ("prepare", "train", "generate", "filter", "merge"):
        assert main([stage, "--quiet"]) == 0, stage
    write_params(Path("params.yaml"), {"prepare": {"seed": 1}})  # another test split
    assert main(["prepare", "--quiet"]) == 0
    capsys.readouterr()
    for stage, file, rerun in (("generate", "models/generator.safetensors", "train"),
                               ("filter", "data/generated/generate.json", "generate"),
                               ("merge", "data/generated/generate.json", "generate"),
                               ("evaluate", "data/augmented/summary.json", "merge")):
        assert main([stage, "--quiet"]) == 2, stage
        err = capsys.readouterr().err
        assert file in err and "another prepared dataset" in err and f"augment {rerun}" in err, (stage, err)
    for stage in ("train", "generate", "filter", "merge"):
        assert main([stage, "--quiet"]) == 0, stage
