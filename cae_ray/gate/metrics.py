"""The numbers behind the validation gate: is a model on K selected features as good as one on all?

Both models are scored on the same validation rows, and the rows are resampled together (a paired
bootstrap), so the interval is for the *difference* of the two scores: row-to-row noise that
hurts both models alike cancels out. The gate passes only when even the pessimistic end of that
interval is within the tolerance. Pure numpy and scikit-learn: no torch, no Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sklearn.metrics import f1_score, r2_score, roc_auc_score

from cae_ray.gate.errors import (
    InvalidBootstrapError,
    InvalidToleranceError,
    MetricTaskMismatchError,
    TooFewValidationRowsError,
)
from cae_ray.gate.figures import figures

Rows = npt.NDArray[np.float64]
Indices = npt.NDArray[np.integer[Any]]

METRICS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "classification": ("accuracy", "macro_f1", "roc_auc"),
        "regression": ("r2", "rmse"),
        "reconstruction": ("explained_variance",),
    }
)
"""The metrics that fit each task; the first one is the task's default."""

MIN_ROWS_FOR_INTERVAL: Final = 20
"""Below this many validation rows a bootstrap interval (or a point estimate) decides nothing."""

_ALL_METRICS: Final = tuple(m for names in METRICS.values() for m in names)
_LOWER_IS_BETTER: Final = frozenset({"rmse"})


def higher_is_better(metric: str) -> bool:
    """Direction of a metric, so the gate can tell "worse" from "better" for any of them."""
    if metric not in _ALL_METRICS:
        raise MetricTaskMismatchError(metric, None, _ALL_METRICS)
    return metric not in _LOWER_IS_BETTER


def default_metric(task: str) -> str:
    """The metric used when the user names none; ``task`` must already be resolved (not auto)."""
    return METRICS[task][0]


def check_metric(metric: str, task: str, n_classes: int | None = None) -> None:
    """Fail before training, not after, when the metric cannot score this task.

    ``roc_auc`` needs exactly two classes; ``n_classes=None`` means not known yet (not checked).
    """
    allowed = METRICS.get(task, ())
    if task == "classification" and n_classes is not None and n_classes != 2:
        allowed = tuple(m for m in allowed if m != "roc_auc")
    if metric not in allowed:
        classes = n_classes if task == "classification" else None
        raise MetricTaskMismatchError(metric, task, allowed, classes)


def _accuracy(y_true: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean(np.argmax(proba, axis=1) == y_true))


def _macro_f1(y_true: np.ndarray, proba: np.ndarray) -> float:
    return float(f1_score(y_true, np.argmax(proba, axis=1), average="macro"))


def _roc_auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    # A resample can hold only one class; AUC is then undefined and the bootstrap skips it.
    if np.all(y_true == y_true[0]):
        return float("nan")
    return float(roc_auc_score(y_true, proba[:, 1]))


def _rmse(y_true: np.ndarray, values: np.ndarray) -> float:
    return float(np.sqrt(np.mean((values.astype(np.float64) - y_true) ** 2)))


def _r2(y_true: np.ndarray, values: np.ndarray) -> float:
    return float(r2_score(y_true, values))


_SCORERS: Final = dict(accuracy=_accuracy, macro_f1=_macro_f1, roc_auc=_roc_auc, rmse=_rmse, r2=_r2)


def per_row_metric(
    metric: str, y_true: np.ndarray, prediction: np.ndarray, indices: Indices
) -> float:
    """Score the rows ``indices`` (repeats allowed, as in a bootstrap resample).

    Classification: ``prediction`` is (n, n_classes) class probabilities and ``y_true`` class
    codes 0..C-1. Regression: ``prediction`` is (n,) values. Reconstruction is a ratio of sums
    over rows, so it has its own function: :func:`explained_variance`.
    """
    scorer = _SCORERS.get(metric)
    if scorer is None:
        raise MetricTaskMismatchError(metric, None, tuple(_SCORERS))
    return scorer(np.asarray(y_true)[indices], np.asarray(prediction)[indices])


def explained_variance(residual_ss: Rows, total_ss: Rows, indices: Indices) -> float:
    """Share of the rows' variance (around the training mean) that the reconstruction explains.

    Kept as per-row sums of squares so a bootstrap resample is just a re-indexing.
    """
    total = float(total_ss[indices].sum())
    return 1.0 - float(residual_ss[indices].sum()) / total if total > 0 else float("nan")


def _row_sums(x_eval: Rows, reconstruction: Rows, mean: Rows) -> tuple[Rows, Rows]:
    residual_ss = ((x_eval - reconstruction) ** 2).sum(axis=1)
    total_ss = ((x_eval - mean) ** 2).sum(axis=1)
    return residual_ss, total_ss


def linear_reconstruction_rows(
    x_train: np.ndarray, x_eval: np.ndarray, columns: Sequence[int] | np.ndarray
) -> tuple[Rows, Rows]:
    """How well the selected columns alone rebuild every column, with a least-squares linear map.

    The map (with intercept) is fitted on ``x_train`` and judged on ``x_eval``; a linear map is
    the baseline any selection should be judged by, whatever decoder trained it.
    Returns per-row (residual_ss, total_ss) on ``x_eval``, for :func:`explained_variance`.
    """
    train, evaluate = np.asarray(x_train, np.float64), np.asarray(x_eval, np.float64)
    selected = np.asarray(columns, dtype=np.intp)
    if selected.size < 1:
        raise ValueError("linear_reconstruction_rows needs at least one selected column")
    mean = train.mean(axis=0)
    centered = train - mean
    # Centring both sides is the same as fitting an intercept column, without the extra column.
    weights = np.linalg.lstsq(centered[:, selected], centered, rcond=None)[0]
    reconstruction = (evaluate[:, selected] - mean[selected]) @ weights + mean
    return _row_sums(evaluate, reconstruction, mean)


def _top_components(centered: Rows, k: int) -> Rows:
    """(N, k) orthonormal top principal directions; eigh of the N x N covariance when n >= N."""
    n_rows, n_features = centered.shape
    if n_rows >= n_features:
        eigenvalues, vectors = np.linalg.eigh(centered.T @ centered)
        return vectors[:, np.argsort(eigenvalues)[::-1][:k]]
    return np.linalg.svd(centered, full_matrices=False)[2][:k].T


def pca_reconstruction_rows(x_train: np.ndarray, x_eval: np.ndarray, k: int) -> tuple[Rows, Rows]:
    """The same sums for the top-k principal components of ``x_train``.

    No K-dimensional linear summary rebuilds the training data better, so this is the ceiling a
    selection of K columns can be compared with.
    """
    train, evaluate = np.asarray(x_train, np.float64), np.asarray(x_eval, np.float64)
    if not 1 <= k <= train.shape[1]:
        raise ValueError(f"k={k} components of {train.shape[1]} features: need 1 <= k <= N")
    mean = train.mean(axis=0)
    components = _top_components(train - mean, k)
    reconstruction = ((evaluate - mean) @ components) @ components.T + mean
    return _row_sums(evaluate, reconstruction, mean)


@dataclass(frozen=True)
class Interval:
    """A value on all rows and its confidence interval, in the metric's own units and direction
    (the gate's is of ``selected - baseline``)."""

    low: float
    high: float
    estimate: float
    """The value on all rows."""


def paired_bootstrap(
    score: Callable[[Indices], tuple[float, float]],
    n_rows: int,
    resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> Interval:
    """Percentile interval of ``selected - baseline``; ``score(indices)`` returns both values.

    Both models see the same resampled rows, so the interval reflects how much their scores
    differ, not how hard the rows are. ``resamples=0`` gives no interval (low = high = estimate).
    Resamples where the metric is undefined (NaN, e.g. AUC on one class) are left out.
    """
    if n_rows < MIN_ROWS_FOR_INTERVAL:
        raise TooFewValidationRowsError(n_rows, MIN_ROWS_FOR_INTERVAL)
    if resamples < 0:
        raise InvalidBootstrapError("resamples", resamples, ">= 0 (0 skips the interval)")
    if not 0 < confidence < 1:
        raise InvalidBootstrapError("confidence", confidence, "between 0 and 1, e.g. 0.95")

    def difference(rows: Indices) -> dict[str, float]:
        baseline, selected = score(rows)
        return {"difference": float(selected - baseline)}

    return bootstrap(difference, n_rows, resamples, seed, confidence)["difference"]


def bootstrap(
    values: Callable[[Indices], dict[str, float]],
    n_rows: int,
    resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, Interval]:
    """Each of the named ``values(indices)``: its estimate on all rows and its percentile
    interval at ``confidence`` over the same ``resamples`` resamples of the rows (values that
    come from one call stay paired). Undefined (NaN) resamples are left out."""
    estimates = values(np.arange(n_rows))
    if resamples == 0:
        return {name: Interval(value, value, value) for name, value in estimates.items()}
    rng = np.random.default_rng(seed)
    drawn = {name: np.empty(resamples) for name in estimates}
    for r in range(resamples):
        for name, value in values(rng.integers(0, n_rows, size=n_rows)).items():
            drawn[name][r] = value
    tail = 100 * (1 - confidence) / 2
    intervals = {}
    for name, draws in drawn.items():
        finite = draws[np.isfinite(draws)]
        low, high = np.percentile(finite, [tail, 100 - tail]) if finite.size else (np.nan, np.nan)
        intervals[name] = Interval(float(low), float(high), float(estimates[name]))
    return intervals


@dataclass(frozen=True)
class Verdict:
    passed: bool
    shortfall: float
    """How much worse the selected model is on the point estimate (positive = worse)."""
    worst_shortfall: float
    """The same at the pessimistic end of the interval."""
    allowed: float
    """The largest worst_shortfall that still passes."""
    reason: str


def _compared(loss: float, shown: str) -> str:
    """A loss (positive is worse), ``shown`` in the verdict's format, as words."""
    if loss > 0:
        return f"{shown} worse than"
    if loss < 0:
        return f"{shown.removeprefix('-')} better than"
    return "as good as" if loss == 0 else "not comparable with (NaN)"


def gate(
    metric: str, baseline: float, interval: Interval, tolerance: float, relative: bool
) -> Verdict:
    """Pass when we are confident the selected features lose at most ``tolerance``.

    "Confident" means at the interval's level: the pessimistic end of the interval, not the
    point estimate, must be within the tolerance, so a noisy validation split fails closed.
    ``relative`` reads the tolerance as a fraction of ``|baseline|``.
    """
    if not tolerance >= 0:
        raise InvalidToleranceError(tolerance)
    worse = -1.0 if higher_is_better(metric) else 1.0  # sign turning a difference into a loss
    shortfall = worse * interval.estimate
    # np.max, unlike max(), keeps a NaN end of the interval, so an undefined interval fails.
    worst_shortfall = float(np.max([worse * interval.low, worse * interval.high]))
    allowed = tolerance * abs(baseline) if relative else tolerance
    passed = bool(worst_shortfall <= allowed)
    share = f" ({100 * tolerance:.3g}% of |baseline|)" if relative else ""
    loss, worst, base, allowance = figures(shortfall, worst_shortfall, baseline, allowed)
    within = "within" if passed else "beyond"
    reason = (
        f"{metric} on the selected features is {_compared(shortfall, loss)} the baseline {base}, "
        f"and at worst {_compared(worst_shortfall, worst)} it, which is {within} the allowed "
        f"loss of {allowance}{share}, so the gate {'passes' if passed else 'fails'}."
    )
    return Verdict(passed, shortfall, worst_shortfall, allowed, reason)
