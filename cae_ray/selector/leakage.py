"""Features that give the target away: a copy of the label, or one computed from it.

Such a feature is always selected (alone it predicts the target), the gate then compares two
perfect models and passes, and the kept FeatureService serves the label. A feature that alone
predicts the target perfectly on rows it was not fitted on is almost never honest, so each
candidate is checked on its own, on the in-memory sample the select step already holds:

* classification: the class of the nearest value of the sample's first half (the most
  frequent class of that value), scored on the second half; a perfect held-out accuracy flags
  it (the held-out half must hold two classes and :data:`MIN_HELD_OUT` rows). A quick lookup
  in :data:`BINS` quantile bins first leaves only the columns that nearly get there (bins blur
  the values at a class's edge, the nearest value does not).
* regression: the absolute Pearson or Spearman correlation with the target on the sample,
  or the same lookup's held-out R² (the bin means), at least :data:`NEAR_PERFECT`.

A pass over the sample, column block by column block: about a second for 20,000 rows x 2,000
features. What a flagged feature means for the gate is decided in :mod:`cae_ray.gate.decide`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 64
MIN_HELD_OUT = 20
NEAR_PERFECT = 0.999
NEARLY = 0.98
"""The binned lookup's accuracy from which a column gets the exact (slower) check."""
_BLOCK = 256
"""Columns checked at a time, so the work arrays stay a few times the sample's block."""


@dataclass(frozen=True)
class LeakFound:
    """A candidate that alone predicts the target (almost) perfectly."""

    index: int
    """Its column in the sample."""
    score: float
    test: str
    """What scored it, in words."""


def leaking_features(x: np.ndarray, y: np.ndarray, task: str) -> list[LeakFound]:
    """The columns of ``x`` (rows x features) that alone predict ``y`` (class indices for
    classification, values for regression) perfectly; none for reconstruction or when the
    sample is too small to tell."""
    if task not in ("classification", "regression") or len(x) < 2 * MIN_HELD_OUT:
        return []
    x, y = np.asarray(x, np.float64), np.asarray(y)
    half = len(x) // 2
    fit, held_out = slice(0, half), slice(half, None)
    if task == "classification" and len(np.unique(y[held_out])) < 2:
        return []
    found = []
    for start in range(0, x.shape[1], _BLOCK):
        block = x[:, start : start + _BLOCK]
        bins = _bins(block, fit)
        if task == "classification":
            classes = y.astype(np.int64)
            scores = _lookup_accuracy(bins, classes, fit, held_out)
            for j in np.flatnonzero(scores >= NEARLY):
                scores[j] = _nearest_value_accuracy(block[:, j], classes, half)
            flagged = scores >= 1.0
            test = "held-out accuracy of the nearest value's class"
        else:
            scores = np.maximum(_correlation(block, y), _lookup_r2(bins, y, fit, held_out))
            flagged = scores >= NEAR_PERFECT
            test = "correlation (or one-feature lookup R²) with the target"
        columns = np.flatnonzero(flagged)
        found += [LeakFound(start + int(j), float(scores[j]), test) for j in columns]
    return found


def _bins(block: np.ndarray, fit: slice) -> np.ndarray:
    """Each value's quantile bin (of the fitted rows' quantiles), per column."""
    edges = np.quantile(block[fit], np.linspace(0, 1, BINS + 1)[1:-1], axis=0)
    bins = np.empty(block.shape, np.int64)
    for j in range(block.shape[1]):
        bins[:, j] = np.searchsorted(edges[:, j], block[:, j], side="right")
    return bins


def _flat(bins: np.ndarray) -> np.ndarray:
    """(column, bin) pairs as one index, for one bincount over all columns."""
    return bins + BINS * np.arange(bins.shape[1])


def _lookup_accuracy(bins: np.ndarray, y: np.ndarray, fit: slice, held_out: slice) -> np.ndarray:
    classes = int(y.max()) + 1
    cells = bins.shape[1] * BINS
    index = _flat(bins[fit]) * classes + y[fit, None]
    counts = np.bincount(index.ravel(), minlength=cells * classes).reshape(cells, classes)
    majority = counts.argmax(axis=1)  # an empty bin says class 0: no perfect score by luck
    predicted = majority[_flat(bins[held_out])]
    return np.asarray((predicted == y[held_out, None]).mean(axis=0))


def _nearest_value_accuracy(column: np.ndarray, y: np.ndarray, half: int) -> float:
    """Held-out accuracy of predicting each row of ``column[half:]`` by the most frequent class
    of the nearest value in ``column[:half]``."""
    values, group = np.unique(column[:half], return_inverse=True)
    classes = int(y.max()) + 1
    counts = np.bincount(group * classes + y[:half], minlength=len(values) * classes)
    majority = counts.reshape(len(values), classes).argmax(axis=1)
    held_out = column[half:]
    right = np.clip(np.searchsorted(values, held_out), 0, len(values) - 1)
    left = np.clip(right - 1, 0, len(values) - 1)
    closer_left = np.abs(held_out - values[left]) <= np.abs(values[right] - held_out)
    predicted = majority[np.where(closer_left, left, right)]
    return float((predicted == y[half:]).mean())


def _lookup_r2(bins: np.ndarray, y: np.ndarray, fit: slice, held_out: slice) -> np.ndarray:
    cells = bins.shape[1] * BINS
    target = np.asarray(y, np.float64)
    index = _flat(bins[fit]).ravel()
    sums = np.bincount(index, np.repeat(target[fit], bins.shape[1]), minlength=cells)
    counts = np.bincount(index, minlength=cells)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), target[fit].mean())
    predicted = means[_flat(bins[held_out])]
    truth = target[held_out, None]
    residual = ((predicted - truth) ** 2).sum(axis=0)
    total = max(float(((truth - truth.mean()) ** 2).sum()), 1e-12)
    return np.asarray(1.0 - residual / total)


def _correlation(block: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The larger of |Pearson| and |Spearman| per column (0 for a constant column)."""

    def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a - a.mean(axis=0)
        b = b - b.mean()
        scale = np.sqrt((a**2).sum(axis=0) * (b**2).sum())
        return np.abs(np.divide(b @ a, scale, out=np.zeros(a.shape[1]), where=scale > 0))

    target = np.asarray(y, np.float64)
    ranks = block.argsort(axis=0).argsort(axis=0).astype(np.float64)
    target_ranks = target.argsort().argsort().astype(np.float64)
    return np.maximum(pearson(block, target), pearson(ranks, target_ranks))
