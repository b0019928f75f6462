"""Regularised logistic regression, Platt calibration and the metrics that judge them (numpy,
sans-I/O).

`fit()` solves L2-regularised logistic regression by Newton's method (IRLS) on standardised
features (the intercept is not penalised); `platt()` fits p = σ(a·z + b) on a held-out slice's
logits, so the probabilities are calibrated on rows the weights never saw. `auc()` is the
Mann-Whitney statistic (ties counted half), `log_loss()` the mean negative log-likelihood."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import limits


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0))))


@dataclass(frozen=True, slots=True)
class Logistic:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    """Intercept first, then one weight per standardised feature."""
    a: float = 1.0
    b: float = 0.0
    """Platt calibration of the logit: p = σ(a·z + b)."""

    def logit(self, x: np.ndarray) -> np.ndarray:
        xs = (np.atleast_2d(x) - self.mean) / self.scale
        return np.asarray(self.weights[0] + xs @ self.weights[1:])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, one per row of x."""
        return sigmoid(self.a * self.logit(x) + self.b)


def _newton(x1: np.ndarray, y: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """Weights minimising the mean log-loss + ½ Σ penalty·w² (x1 has the intercept column)."""
    n, d = x1.shape
    w = np.zeros(d)
    for _ in range(limits.NEWTON_STEPS):
        p = sigmoid(x1 @ w)
        grad = x1.T @ (p - y) / n + penalty * w
        hess = (x1.T * (p * (1.0 - p))) @ x1 / n + np.diag(penalty) + 1e-9 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < limits.NEWTON_TOLERANCE:
            break
    return w


def fit(x: np.ndarray, y: np.ndarray, l2: float = limits.L2) -> Logistic:
    """L2-regularised logistic regression of y (0/1) on the rows of x (uncalibrated: a=1, b=0)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    scale = x.std(axis=0) if len(x) else np.ones(x.shape[1])
    scale = np.where(scale > 1e-12, scale, 1.0)
    x1 = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    penalty = np.full(x1.shape[1], l2)
    penalty[0] = 0.0
    if len(y) == 0 or y.min() == y.max():
        rate = float(np.clip(y.mean() if len(y) else 0.5, limits.MIN_RATE, 1 - limits.MIN_RATE))
        w = np.zeros(x1.shape[1])
        w[0] = np.log(rate / (1 - rate))
        return Logistic(mean, scale, w)
    return Logistic(mean, scale, _newton(x1, y, penalty))


def platt(model: Logistic, x: np.ndarray, y: np.ndarray) -> Logistic:
    """`model` with a and b fitted on a held-out slice (x, y); unchanged when the slice has a
    single class (nothing to calibrate against)."""
    y = np.asarray(y, dtype=np.float64)
    if len(y) == 0 or y.min() == y.max():
        return model
    z = model.logit(x)
    a, b = _newton(np.column_stack([z, np.ones(len(z))]), y, np.full(2, limits.PLATT_L2))
    return Logistic(model.mean, model.scale, model.weights, float(a), float(b))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (probability a random positive outranks a random negative)."""
    y = np.asarray(y, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = np.asarray(p)[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), limits.MIN_RATE, 1 - limits.MIN_RATE)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
