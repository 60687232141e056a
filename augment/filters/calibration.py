"""Calibrating the discriminator's confidence on images the generator never trained on.

A GAN discriminator at the end of training is overconfident and overfit to the train split, so
``sigmoid(logit)`` does not read as a probability. We refit it (Platt scaling: ``p = sigmoid(a *
logit + b)``) on real VAL images (never seen by the generator, never by D) against FRESH generator
samples drawn with the filter's own seed, with the two sides weighted equally. The calibrated
score then reads as "probability that this is a real image of class c" under equal priors, i.e.
``p_data / (p_data + p_g)``, and its logit estimates ``log p_data/p_g`` -- what DRS needs.

The test split is never passed here: only val images (and train-free fakes) are used.
Expected calibration error (ECE) is reported before and after; "after" is measured by 2-fold
cross-fitting so it is not an in-sample number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from augment.core.pixels import to_tensor, to_uint8


@dataclass(frozen=True)
class Calibration:
    """``calibrated_logit = a * raw_logit + b``; identity when a=1, b=0."""

    a: float = 1.0
    b: float = 0.0
    method: str = "none"
    ece_before: float | None = None
    ece_after: float | None = None
    n_real: int = 0
    n_fake: int = 0

    def logit(self, raw: np.ndarray) -> np.ndarray:
        return self.a * raw.astype(np.float64) + self.b

    def prob(self, raw: np.ndarray) -> np.ndarray:
        return sigmoid(self.logit(raw))

    def to_dict(self) -> dict:
        return asdict(self)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def expected_calibration_error(prob: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None,
                               bins: int = 10) -> float:
    """Weighted ECE over equal-width confidence bins of P(real)."""
    prob = np.asarray(prob, np.float64)
    target = np.asarray(target, np.float64)
    w = np.ones_like(prob) if weights is None else np.asarray(weights, np.float64)
    if len(prob) == 0 or w.sum() <= 0:
        return 0.0
    which = np.minimum((prob * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            wb = w[m].sum()
            total += wb * abs(np.average(prob[m], weights=w[m]) - np.average(target[m], weights=w[m]))
    return float(total / w.sum())


def fit_platt(logits: np.ndarray, target: np.ndarray, weights: np.ndarray, iters: int = 100,
              l2: float = 1e-3) -> tuple[float, float]:
    """Weighted logistic regression of ``target`` on ``logits`` (Newton's method, tiny ridge)."""
    x = np.stack([np.asarray(logits, np.float64), np.ones(len(logits))], 1)
    t = np.asarray(target, np.float64)
    w = np.asarray(weights, np.float64) / np.sum(weights)

    def loss(th: np.ndarray) -> float:
        z = x @ th
        return float(np.sum(w * (np.logaddexp(0, z) - t * z)) + 0.5 * l2 * th @ th)

    theta = np.zeros(2)  # start at p = 1/2: well conditioned (a saturated start makes Newton diverge)
    cur = loss(theta)
    for _ in range(iters):
        p = sigmoid(x @ theta)
        grad = x.T @ (w * (p - t)) + l2 * theta
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        lr = 1.0
        while lr > 1e-6 and loss(theta - lr * step) > cur:  # damped Newton: never increase the loss
            lr *= 0.5
        theta = theta - lr * step
        new = loss(theta)
        if abs(cur - new) < 1e-12:
            break
        cur = new
    return float(theta[0]), float(theta[1])


def _balanced_weights(target: np.ndarray) -> np.ndarray:
    n_pos, n_neg = max(int(target.sum()), 1), max(int((1 - target).sum()), 1)
    return np.where(target == 1, 0.5 / n_pos, 0.5 / n_neg)


def calibrate_logits(real_logits: np.ndarray, fake_logits: np.ndarray, method: str = "platt",
                     seed: int = 0) -> Calibration:
    """Fit the calibration on D's logits for real held-out images vs fresh fakes."""
    logits = np.concatenate([real_logits, fake_logits]).astype(np.float64)
    target = np.r_[np.ones(len(real_logits)), np.zeros(len(fake_logits))]
    w = _balanced_weights(target)
    before = expected_calibration_error(sigmoid(logits), target, w)
    if method == "none" or len(real_logits) < 2 or len(fake_logits) < 2:
        return Calibration(method="none", ece_before=before, ece_after=before,
                           n_real=len(real_logits), n_fake=len(fake_logits))
    # 2-fold cross-fit for an out-of-sample ECE; the final map is fitted on everything.
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(logits)) % 2
    cross = np.empty_like(logits)
    for f in (0, 1):
        tr = fold != f
        a, b = fit_platt(logits[tr], target[tr], _balanced_weights(target[tr]))
        cross[~tr] = sigmoid(a * logits[~tr] + b)
    after = expected_calibration_error(cross, target, w)
    a, b = fit_platt(logits, target, w)
    return Calibration(a=a, b=b, method=method, ece_before=before, ece_after=after,
                       n_real=len(real_logits), n_fake=len(fake_logits))


@torch.no_grad()
def discriminator_logits(disc: torch.nn.Module, images: np.ndarray, labels: np.ndarray,
                         device: torch.device, batch: int = 512) -> np.ndarray:
    """D's class-conditional logit for uint8 ``(N, H, W, C)`` images."""
    out = []
    for s in range(0, len(images), batch):
        x = to_tensor(images[s : s + batch], device)
        y = torch.from_numpy(np.asarray(labels[s : s + batch], np.int64)).to(device)
        out.append(disc(x, y).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@torch.no_grad()
def fresh_fakes(sampler: torch.nn.Module, num_classes: int, per_class: int, seed: int,
                device: torch.device, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` new samples per class, from a seed distinct from the generate stage's."""
    g = torch.Generator(device="cpu").manual_seed(int(np.random.SeedSequence([seed, 7919]).generate_state(1)[0]))
    labels = np.repeat(np.arange(num_classes), per_class)
    imgs = []
    for s in range(0, len(labels), batch):
        y = torch.from_numpy(labels[s : s + batch]).to(device)
        imgs.append(to_uint8(sampler.sample(y, g)))
    return np.concatenate(imgs), labels


def calibrate_discriminator(gen, val_x: np.ndarray, val_y: np.ndarray, fakes_per_class: int,
                            method: str, seed: int) -> Calibration:
    """Platt-scale ``gen.discriminator`` on real VAL images vs fresh fakes (never the test split)."""
    k = len(gen.checkpoint.class_names)
    fx, fy = fresh_fakes(gen.sampler, k, fakes_per_class, seed, gen.device)
    real = discriminator_logits(gen.discriminator, val_x, val_y, gen.device)
    fake = discriminator_logits(gen.discriminator, fx, fy, gen.device)
    return calibrate_logits(real, fake, method, seed)


def drs_accept_prob(cal_logit: np.ndarray, labels: np.ndarray, percentile: float,
                    eps: float = 1e-6) -> np.ndarray:
    """Discriminator Rejection Sampling acceptance probability (Azadi et al. 2019), per class.

    ``F = D - D_M - log(1 - exp(D - D_M - eps))``, shifted by ``gamma`` = the ``percentile`` of F
    in the class so that roughly the top (100 - percentile) % get probability >= 0.5.
    """
    p = np.zeros(len(cal_logit), np.float64)
    for c in np.unique(labels):
        m = labels == c
        d = cal_logit[m]
        dm = d.max()
        f = d - dm - np.log1p(-np.exp(np.minimum(d - dm - eps, -eps)))
        gamma = np.percentile(f, percentile)
        p[m] = sigmoid(f - gamma)
    return p
