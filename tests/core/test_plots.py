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
