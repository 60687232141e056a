"""The downstream classifier's batch prefetching (augment/downstream/classifier.py)."""

from __future__ import annotations

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
