"""Generator families. Each family provides a trainer with the same small interface:

``Trainer(cfg, image_shape, num_classes, device)`` with ``step(real, labels, generator) -> dict``,
``modules()``, ``optimizers()``, ``sampler()`` (the network used for generation, with
``sample(labels, generator)``) and ``discriminator()`` (a class-conditional critic whose logit
the filter stage reads: higher = more confidently a real image of that class), plus
``extra_state()`` / ``load_extra_state(d)`` for the small non-tensor state a resume needs
(ADA strength ``aug_p``, step counters).
"""

from __future__ import annotations

from typing import Any

from augment.training.gan import GANTrainer
from augment.training.vae import VAETrainer

FAMILIES: dict[str, Any] = {"gan": GANTrainer, "vae": VAETrainer}


def get_trainer_class(family: str) -> Any:
    if family not in FAMILIES:
        raise ValueError(f"train.family = {family!r}: known families {sorted(FAMILIES)}")
    return FAMILIES[family]
