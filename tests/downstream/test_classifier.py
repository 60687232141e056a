"""The downstream classifier's batch prefetching (augment/downstream/classifier.py)."""

from __future__ import annotations

import numpy as np
import pytest


def test_classifier_prefetch_keeps_order_and_reraises():
    from augment.downstream.classifier import _prefetch

    assert list(_prefetch(iter(range(50)), depth=2)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        list(_prefetch(broken()))
    import itertools
    import threading

    pulled = itertools.count()
    it = _prefetch((next(pulled) for _ in range(10**6)), depth=2)
    assert next(it) == 0
    producers = [t for t in threading.enumerate() if t.name == "classifier-batches"]
    it.close()  # the consumer stops early: the producer thread stops (close() joins it), nothing hangs
    assert producers and not any(t.is_alive() for t in producers)
    assert next(pulled) <= 1 + 2 + 2  # the one consumed, the queue's 2, at most 2 more in hand


def test_inference_folds_batch_norm_without_changing_the_predictions():
    """predict_proba / predict_with_embedding run a copy with Conv+BN folded (and ReLU after the
    max-pool, channels-last, in chunks): the trained model is left as it was and the outputs match
    the unfolded eval-mode model, across a chunk boundary."""
    import torch

    from augment.downstream.classifier import SmallCNN, for_inference, predict_with_embedding

    torch.manual_seed(0)
    model = SmallCNN(1, 4, 12)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
    model.train()
    x = np.random.default_rng(0).integers(0, 256, (300, 12, 12, 1), dtype=np.uint8)  # > one CPU chunk
    probs, feats = predict_with_embedding(model, x)
    assert model.training  # the caller's model is not switched or changed
    fused = for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    model.eval()
    with torch.no_grad():
        from augment.core.pixels import to_tensor

        ref_f = model.embed(to_tensor(x, torch.device("cpu")))
        ref_p = torch.softmax(model.head(ref_f), 1)
    assert np.allclose(feats, ref_f.numpy(), atol=1e-4) and np.allclose(probs, ref_p.numpy(), atol=1e-5)


def test_bf16_inference_returns_fp32_outputs_close_to_full_precision():
    """filter.precision = bf16: the convolutions run in bf16 (channels-last), the probabilities and
    embeddings come back as float32 and stay close to the fp32 ones."""
    import torch

    from augment.downstream.classifier import SmallCNN, predict_with_embedding

    torch.manual_seed(0)
    model = SmallCNN(1, 4, 12)
    x = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 1), dtype=np.uint8)
    p32, f32 = predict_with_embedding(model, x)
    p16, f16 = predict_with_embedding(model, x, autocast_dtype=torch.bfloat16)
    assert p16.dtype == np.float32 and f16.dtype == np.float32 and p16.shape == p32.shape
    assert np.abs(p16 - p32).max() < 0.02 and np.allclose(p16.sum(1), 1.0, atol=1e-5)


def _bar_images(n: int, value: int, bar: bool) -> np.ndarray:
    x = np.full((n, 8, 8, 1), value, np.uint8)
    if bar:
        x[:, :, 3:5] = 255
    return x


def test_soft_synthetic_labels_decide_what_the_classifier_learns():
    """Synthetic images with soft labels (e.g. a teacher's) are trained towards those
    probabilities, not their conditioning class: the same bar images labelled 0 hard and
    (0, 1) soft are predicted 0 and 1."""
    import torch

    from augment.downstream.classifier import ClassifierSpec, predict_proba, train_downstream

    real_x = np.concatenate([_bar_images(8, 0, False), _bar_images(8, 120, False)])
    real_y = np.repeat([0, 1], 8)
    syn_x = _bar_images(16, 0, True)
    spec = ClassifierSpec(steps=60, batch_size=16, width=8)
    cpu = torch.device("cpu")
    hard = train_downstream(real_x, real_y, 2, spec, 0, cpu, None, syn_x, np.zeros(16, np.int64), 0.5)
    soft = train_downstream(real_x, real_y, 2, spec, 0, cpu, None, syn_x, np.tile([0.0, 1.0], (16, 1)), 0.5)
    assert (predict_proba(hard, syn_x[:4]).argmax(1) == 0).all()
    assert (predict_proba(soft, syn_x[:4]).argmax(1) == 1).all()
    assert (predict_proba(soft, real_x[:4]).argmax(1) == 0).all()  # the real images keep their class


@pytest.mark.parametrize("labels, match", [(np.full((4, 3), 1 / 3), r"shape \(N, 2\)"),
                                           (np.tile([0.7, 0.7], (4, 1)), "sum to 1"),
                                           (np.tile([-0.5, 1.5], (4, 1)), "non-negative")])
def test_bad_soft_labels_are_refused_before_training(labels, match):
    import torch

    from augment.downstream.classifier import ClassifierSpec, train_classifier

    with pytest.raises(ValueError, match=match):
        train_classifier(_bar_images(4, 0, False), labels, 2, ClassifierSpec(steps=2, width=8), 0,
                         device=torch.device("cpu"))


def test_a_share_within_each_class_keeps_the_real_class_frequencies():
    """mixing_weights with labels: 30 samples of class 0, 2 of class 1, none of class 2 do not
    change how often each class is drawn; each class with samples draws them at the share; a
    class without any stays all real. Without labels the share is global and tilts the classes."""
    from augment.downstream.classifier import mixing_weights

    labels = np.r_[np.repeat([0, 1, 2], [10, 10, 20]), np.repeat([0, 1], [30, 2])]
    syn = np.r_[np.zeros(40, bool), np.ones(32, bool)]
    w = mixing_weights(syn, 0.25, labels)
    assert w.sum() == pytest.approx(1.0) and (w > 0).all()
    mass = [w[labels == c].sum() for c in range(3)]
    assert mass == pytest.approx([0.25, 0.25, 0.5])  # the real set's class frequencies
    assert w[(labels == 0) & syn].sum() / mass[0] == pytest.approx(0.25)
    assert w[(labels == 1) & syn].sum() / mass[1] == pytest.approx(0.25)
    assert np.ptp(w[(labels == 0) & syn]) == 0 and np.ptp(w[(labels == 2)]) == 0  # equal within a group
    tilted = mixing_weights(syn, 0.25)
    assert tilted[syn].sum() == pytest.approx(0.25)
    assert tilted[labels == 0].sum() > 0.35 and tilted[labels == 1].sum() < 0.21  # the global share tilts
    assert mixing_weights(syn, None, labels) is None
    with pytest.raises(ValueError, match="class indices"):
        mixing_weights(syn, 0.25, np.eye(3)[labels])
