"""Pictures the pipeline writes into DVC-tracked outputs."""

from __future__ import annotations

from pathlib import Path


def test_loss_curves_do_not_depend_on_the_order_of_the_log_keys(tmp_path: Path):
    """A resumed run restores its log with the keys sorted; the picture of the same losses must be
    the same bytes, or `models/` changes hash in dvc.lock although the weights are identical."""
    from augment.core.plots import loss_curves

    rows = [{"iteration": i, "loss_vae": 1.0 / (i + 1), "kl": 0.1 * i, "loss_d": 0.5} for i in range(1, 6)]
    loss_curves(rows, tmp_path / "a.png")
    loss_curves([dict(sorted(r.items())) for r in rows], tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_the_score_histogram_title_says_which_score_the_filter_ranked_by():
    from augment.filters.apply import rank_score_name

    uncal = {"per_filter": {"discriminator": {"calibration": {"method": "none", "n_real": 0}}, "label": {}}}
    assert "not calibrated: calibration needs held-out reals" in rank_score_name(uncal)
    cal = {"per_filter": {"discriminator": {"calibration": {"method": "platt", "n_real": 40}}}}
    assert rank_score_name(cal) == "discriminator confidence per class (P(real), platt-calibrated)"
    assert rank_score_name({"per_filter": {"label": {}, "memorisation": {}}}).startswith("label confidence")
    assert rank_score_name({"per_filter": {"memorisation": {}}}).startswith("no rank score")


def test_loss_curves_give_each_series_its_own_panel(tmp_path: Path, monkeypatch):
    """A VAE's KL (~100) on one axis with losses near 0 hid them: one panel (own scale) each."""
    import matplotlib.pyplot as plt

    from augment.core import plots

    seen = {}
    monkeypatch.setattr(plots, "_save_fig", lambda fig, path: seen.update(
        titles=sorted(ax.get_title() for ax in fig.axes if ax.get_visible() and ax.axison)) or plt.close(fig))
    rows = [{"iteration": i, "kl": 80.0 + i, "mse": 0.1 / i, "beta": 1.0} for i in (1, 2, 3)]
    plots.loss_curves(rows, tmp_path / "x.png")
    assert seen["titles"] == ["beta", "kl", "mse"]


def test_sample_grids_name_the_class_of_each_row():
    """A grid of one class per row is unreadable without knowing which row is which class: a strip
    left of the images carries each row's label (white text on black), centred on its row."""
    import numpy as np
    import pytest

    from augment.core.images import image_grid, shorten

    imgs = np.full((6, 8, 8, 1), 60, np.uint8)
    plain = image_grid(imgs, nrow=3, scale=4)
    named = image_grid(imgs, nrow=3, scale=4, row_labels=["cat", "dog"])
    strip = named.shape[1] - plain.shape[1]
    assert strip > 0 and named.shape[0] == plain.shape[0]
    assert np.array_equal(named[:, strip:], plain)  # the images themselves are untouched
    text = named[:, :strip, 0] > 128
    row_h = plain.shape[0] // 2
    assert text[:row_h].any() and text[row_h:].any()  # one label in each row's band
    assert not np.array_equal(text[:row_h], text[row_h:])  # and they differ
    assert image_grid(np.zeros((2, 8, 8, 3), np.uint8), nrow=2, row_labels=["a"]).shape[2] == 3
    with pytest.raises(ValueError, match="2 row labels for 1 rows"):
        image_grid(imgs[:3], nrow=3, row_labels=["a", "b"])
    assert shorten("a_very_long_class_name") == "a_very_long_..", shorten("short") == "short"


def test_filter_grids_label_each_class_row_with_its_count(monkeypatch):
    """The accepted and rejected grids say which class each row is and how many samples it had."""
    import numpy as np

    from augment.filters import apply

    labels = np.array([0, 0, 0, 1, 1, 2])
    shard = {"images": np.zeros((6, 8, 8, 1), np.uint8), "labels": labels, "index": np.arange(6)}
    monkeypatch.setattr(apply, "iter_shards", lambda gen_dir, keys: iter([shard]))
    rows = {}
    real = apply.image_grid
    monkeypatch.setattr(apply, "image_grid", lambda *a, **k: rows.setdefault(len(rows), k["row_labels"]) and real(*a, **k))
    decisions = {"labels": labels, "index": np.arange(6), "confidence": np.linspace(0, 1, 6),
                 "accepted": np.array([True, True, False, False, True, False])}
    grids = apply.collect_grid_samples("unused", decisions, per_class=2, class_names=["zero", "one", "two"])
    assert set(grids) == {"accepted", "rejected"}
    assert rows == {0: ["zero (2)", "one (1)", "two (0)"], 1: ["zero (1)", "one (1)", "two (1)"]}
