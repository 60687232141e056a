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
