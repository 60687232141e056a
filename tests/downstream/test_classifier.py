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
    it = _prefetch(iter(range(10**6)))
    assert next(it) == 0
    it.close()  # the consumer stops early: the producer thread is stopped, nothing hangs


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
