"""Class 4 -- every intermediate file verified: a consumer checks what the producer recorded
(generate.json's shard list: files, counts, sha256) and the schema of every npz/json/csv it reads.
Each case: exit 2, one line naming the file and the stage to re-run, nothing else changed."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from augment.core.files import sha256_file
from tests.reliability.helpers import assert_one_line_error, run_cli, tree_hash

GEN = Path("data/generated")
GJ = GEN / "generate.json"
DEC = Path("data/filtered/decisions.npz")
DS = Path("data/prepared/dataset.npz")
SUMMARY = Path("data/augmented/summary.json")
CKPT = Path("models/generator.safetensors")


def _snapshot(ws: Path) -> dict[str, str]:
    return {k: v for k, v in tree_hash(ws).items() if k != ".augment.lock"}


def _refused(ws: Path, capsys, command: str, *needles: str) -> str:
    before = _snapshot(ws)
    rc, _, err = run_cli(capsys, command, "--quiet")
    line = assert_one_line_error(rc, err, *needles)
    assert "unsafely" not in line and "pickle.load" not in line
    assert _snapshot(ws) == before  # the damaged file and every output are as they were
    return line


def _npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _edit_npz(path: Path, edit: Callable[[dict], None]) -> None:
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    edit(d)
    _npz(path, **d)


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


def _rehash(shard: str) -> None:
    """Record a shard's new sha256 in generate.json (someone who edits both)."""
    def edit(meta):
        for s in meta["shards"]:
            if s["file"] == shard:
                s["sha256"] = sha256_file(GEN / shard)
    _edit_json(GJ, edit)


# ------------------------------------------------------------------------------------ shards


@pytest.mark.parametrize("command", ["filter", "merge"])
def test_deleted_shard(built, capsys, command):
    (GEN / "shard_00002.npz").unlink()
    _refused(built, capsys, command, "shard_00002.npz: missing", "augment generate")


def test_extra_shard(built, capsys):
    (GEN / "shard_00009.npz").write_bytes((GEN / "shard_00000.npz").read_bytes())
    _refused(built, capsys, "filter", "shard_00009.npz: not listed in generate.json", "augment generate")


@pytest.mark.parametrize("command", ["filter", "merge"])
def test_changed_shard(built, capsys, command):
    _edit_npz(GEN / "shard_00001.npz", lambda d: d.__setitem__("images", 255 - d["images"]))
    _refused(built, capsys, command, "shard_00001.npz: content changed", "sha256", "augment generate")


def test_truncated_shard(built, capsys):
    p = GEN / "shard_00003.npz"
    p.write_bytes(p.read_bytes()[:100])
    _refused(built, capsys, "filter", "shard_00003.npz", "augment generate")


def test_random_bytes_shard_with_matching_hash(built, capsys):
    (GEN / "shard_00000.npz").write_bytes(os.urandom(400))
    _rehash("shard_00000.npz")
    _refused(built, capsys, "filter", "shard_00000.npz: not an .npz array archive", "augment generate")


def test_shard_with_fewer_samples_than_recorded(built, capsys):
    _edit_npz(GEN / "shard_00000.npz", lambda d: d.update({k: v[:4] for k, v in d.items()}))
    _rehash("shard_00000.npz")
    _refused(built, capsys, "filter", "shard_00000.npz: holds 4 samples, generate.json says 8")


def test_shard_with_float_images(built, capsys):
    _edit_npz(GEN / "shard_00000.npz", lambda d: d.__setitem__("images", d["images"].astype(np.float32)))
    _rehash("shard_00000.npz")
    _refused(built, capsys, "filter", "shard_00000.npz", "'images' has dtype float32")


def test_shard_labels_out_of_range(built, capsys):
    _edit_npz(GEN / "shard_00000.npz", lambda d: d.__setitem__("labels", d["labels"] + 7))
    _rehash("shard_00000.npz")
    _refused(built, capsys, "filter", "shard_00000.npz: labels outside [0, 3)")


def test_shard_missing_an_array(built, capsys):
    _edit_npz(GEN / "shard_00000.npz", lambda d: d.pop("index"))
    _rehash("shard_00000.npz")
    _refused(built, capsys, "filter", "shard_00000.npz: missing array(s) ['index']")


# ------------------------------------------------------------------------------ generate.json


@pytest.mark.parametrize("command", ["filter", "merge"])
def test_generate_json_not_json(built, capsys, command):
    GJ.write_text("{not json")
    _refused(built, capsys, command, "generate.json: not valid JSON", "augment generate")


def test_generate_json_a_list(built, capsys):
    GJ.write_text("[1, 2]")
    _refused(built, capsys, "filter", "generate.json: expected a JSON object")


@pytest.mark.parametrize("key", ["shards", "class_names", "n_per_class", "checkpoint_sha256"])
def test_generate_json_missing_key(built, capsys, key):
    _edit_json(GJ, lambda m: m.pop(key))
    _refused(built, capsys, "merge", f"generate.json: missing key {key!r}", "augment generate")


def test_generate_json_shard_name_escapes(built, capsys):
    _edit_json(GJ, lambda m: m["shards"][0].__setitem__("file", "../../etc/passwd"))
    _refused(built, capsys, "filter", "shard entry 0 is malformed")


def test_generate_json_num_shards_disagrees(built, capsys):
    _edit_json(GJ, lambda m: m.__setitem__("num_shards", 9))
    _refused(built, capsys, "filter", "lists 4 shard(s) but num_shards = 9")


def test_generate_json_sample_total_disagrees(built, capsys):
    _edit_json(GJ, lambda m: m.__setitem__("n_per_class", 11))
    _refused(built, capsys, "filter", "its shards hold 30 samples")


def test_generate_json_class_names_wrong_type(built, capsys):
    _edit_json(GJ, lambda m: m.__setitem__("class_names", "class_0"))
    _refused(built, capsys, "filter", "generate.json: key 'class_names'", "is not list")


def test_generate_json_for_other_classes(built, capsys):
    _edit_json(GJ, lambda m: m.__setitem__("class_names", ["a", "b", "c"]))
    _refused(built, capsys, "merge", "generate.json: generated for classes", "augment generate")


# ------------------------------------------------------------------------------ decisions.npz


def test_decisions_random_bytes(built, capsys):
    DEC.write_bytes(os.urandom(300))
    _refused(built, capsys, "merge", "decisions.npz: not an .npz array archive", "augment filter")


def test_decisions_empty_file(built, capsys):
    DEC.write_bytes(b"")
    _refused(built, capsys, "merge", "decisions.npz", "augment filter")


@pytest.mark.parametrize("key", ["accepted", "confidence", "labels", "index"])
def test_decisions_missing_array(built, capsys, key):
    _edit_npz(DEC, lambda d: d.pop(key))
    _refused(built, capsys, "merge", f"decisions.npz: missing array {key!r}", "augment filter")


def test_decisions_accepted_not_bool(built, capsys):
    _edit_npz(DEC, lambda d: d.__setitem__("accepted", d["accepted"].astype(np.float64)))
    _refused(built, capsys, "merge", "'accepted' has dtype float64, expected bool")


def test_decisions_lengths_differ(built, capsys):
    _edit_npz(DEC, lambda d: d.__setitem__("confidence", d["confidence"][:5]))
    _refused(built, capsys, "merge", "decisions.npz: arrays have different lengths")


def test_decisions_nan_confidence(built, capsys):
    def edit(d):
        d["confidence"] = d["confidence"].copy()
        d["confidence"][3] = np.nan
    _edit_npz(DEC, edit)
    _refused(built, capsys, "merge", "'confidence' holds NaN or infinite values")


def test_decisions_duplicate_index(built, capsys):
    _edit_npz(DEC, lambda d: d.__setitem__("index", np.zeros_like(d["index"])))
    _refused(built, capsys, "merge", "a sample index is listed twice")


def test_decisions_for_fewer_samples(built, capsys):
    _edit_npz(DEC, lambda d: d.update({k: v[:20] for k, v in d.items()}))
    _refused(built, capsys, "merge", "holds decisions for 20 samples", "lists 30", "augment filter")


def test_decisions_index_beyond_the_samples(built, capsys):
    _edit_npz(DEC, lambda d: d.__setitem__("index", d["index"] + 100))
    _refused(built, capsys, "merge", "decisions.npz", "augment filter")


def test_decisions_pickled_object_array_never_loaded(built, capsys):
    marker = built / "pwned"
    with np.load(DEC) as z:
        d = {k: z[k] for k in z.files}
    d["accepted"] = np.array([_Payload(str(marker))], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, **d)
    DEC.write_bytes(buf.getvalue())
    line = _refused(built, capsys, "merge", "decisions.npz: refused to load", "never loaded")
    assert not marker.exists() and "augment filter" in line


class _Payload:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


# -------------------------------------------------------------------------------- dataset.npz


def test_dataset_random_bytes(built, capsys):
    DS.write_bytes(os.urandom(1000))
    _refused(built, capsys, "train", "dataset.npz: not an .npz array archive", "augment prepare")


@pytest.mark.parametrize("key", ["images", "labels", "split", "class_names"])
def test_dataset_missing_array(built, capsys, key):
    _edit_npz(DS, lambda d: d.pop(key))
    _refused(built, capsys, "train", f"dataset.npz: missing array {key!r}", "augment prepare")


def test_dataset_float_images(built, capsys):
    _edit_npz(DS, lambda d: d.__setitem__("images", d["images"].astype(np.float32)))
    _refused(built, capsys, "train", "'images' has dtype float32")


def test_dataset_labels_out_of_range(built, capsys):
    _edit_npz(DS, lambda d: d.__setitem__("labels", d["labels"] + 3))
    _refused(built, capsys, "generate", "dataset.npz: labels outside [0, 3)")


def test_dataset_bad_split_codes(built, capsys):
    _edit_npz(DS, lambda d: d.__setitem__("split", d["split"] + 5))
    _refused(built, capsys, "train", "dataset.npz: split codes")


def test_dataset_lengths_differ(built, capsys):
    _edit_npz(DS, lambda d: d.__setitem__("labels", d["labels"][:-1]))
    _refused(built, capsys, "train", "dataset.npz: arrays have different lengths")


def test_dataset_images_wrong_rank(built, capsys):
    _edit_npz(DS, lambda d: d.__setitem__("images", d["images"][..., 0]))
    _refused(built, capsys, "train", "'images' has shape", "expected 4 dimension(s)")


def test_manifest_missing_rows(built, capsys):
    p = Path("data/prepared/manifest.csv")
    p.write_text("".join(p.read_text().splitlines(keepends=True)[:-2]))
    _refused(built, capsys, "train", "manifest.csv", "rows, but", "augment prepare")


def test_manifest_missing_column(built, capsys):
    Path("data/prepared/manifest.csv").write_text("a,b\n1,2\n")
    _refused(built, capsys, "train", "manifest.csv: missing column(s) ['file', 'sha256']")


def test_manifest_missing(built, capsys):
    Path("data/prepared/manifest.csv").unlink()
    _refused(built, capsys, "train", "manifest.csv not found", "augment prepare")


# ------------------------------------------------------------------------------- summary.json


def test_summary_not_json(built, capsys):
    SUMMARY.write_text("{")
    _refused(built, capsys, "evaluate", "summary.json: not valid JSON", "augment merge")


def test_summary_nan_share(built, capsys):
    SUMMARY.write_text(SUMMARY.read_text().replace('"synthetic_share": null', '"synthetic_share": NaN'))
    _refused(built, capsys, "evaluate", "summary.json: synthetic_share = nan")


def test_summary_missing_key(built, capsys):
    _edit_json(SUMMARY, lambda s: s.pop("real_splits"))
    _refused(built, capsys, "evaluate", "summary.json: missing key 'real_splits'")


def test_summary_other_classes(built, capsys):
    _edit_json(SUMMARY, lambda s: s.__setitem__("class_names", ["x", "y", "z"]))
    _refused(built, capsys, "evaluate", "summary.json: class_names", "augment merge")


def test_summary_share_a_string(built, capsys):
    _edit_json(SUMMARY, lambda s: s.__setitem__("synthetic_share", "0.5"))
    _refused(built, capsys, "evaluate", "summary.json: key 'synthetic_share'")


# ------------------------------------------------------------------ checkpoint metadata (class 2)


def _edit_checkpoint(edit: Callable[[dict], None]) -> None:
    """Rewrite the checkpoint's metadata, keeping the tensors (and their digest) as they are, and
    recompute the metadata's own digest: a file crafted to pass both digests must still pass the
    validation below (an edit that leaves the digest stale is refused earlier, see test_corpus)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from augment.models.checkpoint import meta_digest

    tensors = load_file(str(CKPT))
    with safe_open(str(CKPT), framework="pt") as fh:
        meta = json.loads(fh.metadata()["augment"])
    edit(meta)
    meta["meta_sha256"] = meta_digest(meta)
    save_file(tensors, str(CKPT), metadata={"augment": json.dumps(meta, sort_keys=True)})


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m["train_config"].__setitem__("z_dim", 10**7), "train.z_dim = 10000000 is out of range"),
    (lambda m: m["train_config"].__setitem__("g_channels", 10**6), "train.g_channels"),
    (lambda m: m["train_config"].__setitem__("ema_decay", float("nan")), "train.ema_decay"),
    (lambda m: m["train_config"].__setitem__("seed", 2**70), "train.seed"),
    (lambda m: m["train_config"].__setitem__("z_dim", "big"), "train.z_dim = 'big': expected an integer"),
    (lambda m: m.__setitem__("image_shape", [10**6, 10**6, 1]), "image_shape"),
    (lambda m: m.__setitem__("image_shape", [8, 8]), "image_shape"),
    (lambda m: m.__setitem__("class_names", ["only"]), "class names"),
    (lambda m: m.__setitem__("family", "vae"), "family 'vae' differs"),
], ids=["z_dim_huge", "channels_huge", "ema_nan", "seed_huge", "z_dim_str", "shape_huge", "shape_2d",
        "one_class", "family"])
def test_checkpoint_metadata_validated_before_building(built, capsys, edit, needle):
    _edit_checkpoint(edit)
    line = _refused(built, capsys, "generate", "models/generator.safetensors", needle, "re-run the train stage")
    assert "metadata" in line


def test_checkpoint_metadata_in_range_but_not_its_weights(built, capsys):
    _edit_checkpoint(lambda m: m["train_config"].__setitem__("z_dim", 4096))
    Path("data/prepared/dataset.npz").unlink()  # generate then trusts only the checkpoint
    _refused(built, capsys, "generate", "metadata does not match its weights", "re-run the train stage")
