"""The inner held-out rows of the training sample, and what a set of columns scores on them.

``k: auto`` (:mod:`cae_ray.gate.auto_k`) and the incumbent rule (:mod:`cae_ray.gate.incumbent`)
compare sets of columns before the gate sees its own held-out split, so they score on rows of
the training sample that the model being scored was not fitted on: a seeded quarter of it, or,
when that quarter would hold fewer than ``MIN_HELD_OUT`` rows, every row once by
cross-validation (each row predicted by a model fitted on the other folds). With a few hundred
rows a single quarter gives intervals wider than the default tolerance, and K would be chosen
by noise. The gate's model on all features, the costly fit on a wide table, is fitted on the
first fold only: a set of columns is compared with it on that fold's held-out rows (the first
``baseline_rows`` of the scored rows), and with other sets of columns on every row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from torch import Tensor

from cae_ray.config import Config
from cae_ray.gate.metrics import (
    default_metric,
    explained_variance,
    linear_reconstruction_rows,
    per_row_metric,
)
from cae_ray.gate.models import (
    Estimator,
    fitted_model_name,
    make_estimator,
    model_params,
    predicted,
)
from cae_ray.selector.targets import ResolvedTask, TargetInfo

INNER_FRACTION = 0.25
"""Share of the training sample held out in one split (and each fold's share otherwise)."""
MIN_HELD_OUT = 500
"""Fewer held-out rows than this in one split: cross-validate instead, so every row counts.
Cross-validation fits each model 1 / INNER_FRACTION times on 3/4 of the rows (3x the work of
one split), which is cheap on the samples of under 2,000 rows it is used for."""

Fold = tuple[np.ndarray, np.ndarray]
"""(rows a model is fitted on, rows it is scored on)."""


def inner_folds(n_rows: int, seed: int) -> list[Fold]:
    """One seeded split holding out INNER_FRACTION of the rows, or, when that would hold out
    fewer than MIN_HELD_OUT, 1 / INNER_FRACTION folds that hold out every row once."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_folds = round(1 / INNER_FRACTION)
    if INNER_FRACTION * n_rows >= MIN_HELD_OUT or n_rows < n_folds:
        cut = n_rows - max(1, int(INNER_FRACTION * n_rows))
        return [(np.sort(order[:cut]), np.sort(order[cut:]))]
    parts = np.array_split(order, n_folds)
    return [
        (np.sort(np.concatenate(parts[:i] + parts[i + 1 :])), np.sort(part))
        for i, part in enumerate(parts)
    ]


def held_out_rows(folds: list[Fold]) -> np.ndarray:
    """The scored rows in the order the scorers keep them (fold after fold)."""
    return np.concatenate([held_out for _, held_out in folds])


class Scorer(Protocol):
    """Per-row scores of a set of columns against a baseline, on the inner held-out rows."""

    metric: str
    baseline_source: str

    @property
    def n_rows(self) -> int: ...

    @property
    def baseline_rows(self) -> int:
        """The baseline is scored on the first this many rows (``rows`` below them)."""
        ...

    def baseline(self, rows: np.ndarray) -> float: ...

    def score(self, columns: list[int], rows: np.ndarray) -> float: ...


@dataclass
class FittedScorer:
    """The gate's model (made by ``make(seed)``) on a set of columns and on all features,
    fitted on each fold's rows and scored on its held-out rows."""

    make: Callable[[int], Estimator]
    x: np.ndarray
    y: np.ndarray
    folds: list[Fold]
    metric: str
    n_classes: int
    seed: int
    units: Callable[[np.ndarray], np.ndarray] = lambda values: values
    """Regression values back in the target's units (scores such as rmse are in them)."""
    baseline_source: str = "the gate's model on all features"
    _outputs: dict[tuple[int, ...] | None, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._y_scored = self.units(self.y[held_out_rows(self.folds)])

    @property
    def n_rows(self) -> int:
        return len(self._y_scored)

    @property
    def baseline_rows(self) -> int:
        return len(self.folds[0][1])

    def _predictions(self, columns: list[int] | None) -> np.ndarray:
        key = None if columns is None else tuple(columns)
        if key not in self._outputs:
            parts, picked = [], np.asarray(columns if columns is not None else [], np.intp)
            for fit, held_out in self.folds if columns is not None else self.folds[:1]:
                x_fit = self.x[fit] if columns is None else self.x[np.ix_(fit, picked)]
                x_eval = self.x[held_out] if columns is None else self.x[np.ix_(held_out, picked)]
                estimator = self.make(self.seed)
                estimator.fit(x_fit, self.y[fit])
                parts.append(self.units(predicted(estimator, x_eval, self.n_classes)))
            self._outputs[key] = np.concatenate(parts)
        return self._outputs[key]

    def baseline(self, rows: np.ndarray) -> float:
        scored = self._y_scored[: self.baseline_rows]
        return per_row_metric(self.metric, scored, self._predictions(None), rows)

    def score(self, columns: list[int], rows: np.ndarray) -> float:
        return per_row_metric(self.metric, self._y_scored, self._predictions(columns), rows)


@dataclass
class ReconstructionScorer:
    """Explained variance of all features from a set of columns (a least-squares map fitted on
    each fold's rows); the baseline is the ``reference`` columns."""

    x: np.ndarray
    folds: list[Fold]
    reference: list[int]
    metric: str = "explained_variance"
    baseline_source: str = "all k_max picks"
    _rows: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return sum(len(held_out) for _, held_out in self.folds)

    @property
    def baseline_rows(self) -> int:
        return self.n_rows

    def score(self, columns: list[int], rows: np.ndarray) -> float:
        key = tuple(columns)
        if key not in self._rows:
            sums = [
                linear_reconstruction_rows(self.x[f], self.x[h], columns) for f, h in self.folds
            ]
            self._rows[key] = (
                np.concatenate([residual for residual, _ in sums]),
                np.concatenate([total for _, total in sums]),
            )
        residual, total = self._rows[key]
        return explained_variance(residual, total, rows)

    def baseline(self, rows: np.ndarray) -> float:
        return self.score(self.reference, rows)


def inner_scorer(
    config: Config,
    task: ResolvedTask,
    x: Tensor,
    y: Tensor | None,
    reference: list[int],
    target: TargetInfo | None = None,
) -> Scorer:
    """The scorer of the sample ``x``, ``y`` on its inner folds: the gate's model
    (``validation``) against all features, or without a target the linear reconstruction against
    the ``reference`` columns. ``target`` turns regression values back into the target's units."""
    folds = inner_folds(len(x), config.training.seed)
    features = x.float().numpy()
    if task == "reconstruction":
        return ReconstructionScorer(features, folds, reference)
    assert y is not None, "supervised tasks need a target"
    name = fitted_model_name(config)
    params = model_params(config, name)
    chosen = config.validation.metric
    labels = np.asarray(y.numpy())
    n_classes = 0
    if task == "classification":
        n_classes = target.n_outputs if target is not None else int(labels.max()) + 1

    def make(seed: int) -> Estimator:
        return make_estimator(name, params, task, seed)

    return FittedScorer(
        make,
        features,
        labels,
        folds,
        default_metric(task) if chosen == "auto" else chosen,
        n_classes,
        config.training.seed,
        units=target.to_units if target is not None else (lambda values: values),
        baseline_source=f"{name} on all features",
    )
