"""Turn a user's target into what the loop trains on, and decide the task when it is ``auto``.

``auto`` means: no target -> reconstruction; a target with discrete values (integers, strings,
booleans, see :func:`sklearn.utils.multiclass.type_of_target`) -> classification; a continuous
one -> regression. Regression targets are standardised internally so the loss is of order 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.multiclass import type_of_target

from cae_ray.errors import NonFiniteInputError, TargetLengthError, TargetTaskMismatchError
from cae_ray.heads import ResolvedTask

_DISCRETE = ("binary", "multiclass")
_CONTINUOUS = ("continuous", "continuous-multioutput")


@dataclass(frozen=True)
class Target:
    task: ResolvedTask
    values: np.ndarray | None
    """Class codes (int64), standardised float32 values, or None for reconstruction."""
    n_outputs: int
    """Classes for classification, target columns for regression, 0 for reconstruction."""
    classes: np.ndarray | None = None


def prepare_target(task: str, y: Any, n_rows: int) -> Target:
    if y is None or task == "reconstruction":
        # scikit-learn pipelines pass y to every step: reconstruction ignores it.
        if task in ("classification", "regression"):
            raise TargetTaskMismatchError(
                task, "y is missing", "pass y to fit, or use task='reconstruction'"
            )
        return Target("reconstruction", None, 0)
    values = np.asarray(y.to_numpy() if isinstance(y, pd.Series | pd.DataFrame) else y)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.ravel()
    if values.ndim == 0 or len(values) != n_rows:
        raise TargetLengthError(n_rows, 0 if values.ndim == 0 else len(values))
    numeric = values.dtype.kind in "biuf"
    if numeric and not np.isfinite(values.astype(np.float64)).all():
        bad = int((~np.isfinite(values.astype(np.float64))).sum())
        raise NonFiniteInputError(["y"], bad, 0)
    kind = type_of_target(values)
    if kind == "unknown":
        raise TargetTaskMismatchError(
            task, f"Unknown label type (dtype {values.dtype})", "pass class labels or numbers"
        )
    if task == "auto":
        task = "classification" if kind in _DISCRETE else "regression"
    if task == "classification":
        return _classes(values, kind)
    if not numeric or kind not in (*_CONTINUOUS, *_DISCRETE):
        raise TargetTaskMismatchError(
            "regression",
            f"{kind} values of dtype {values.dtype}",
            "use task='classification' for labels, or pass numeric values",
        )
    return _standardised(values)


def _classes(values: np.ndarray, kind: str) -> Target:
    if kind not in _DISCRETE:
        distinct = len(np.unique(values))
        raise TargetTaskMismatchError(
            "classification",
            f"{kind} values, {distinct} distinct",
            "use task='regression', or bin y into classes first",
        )
    classes, codes = np.unique(values, return_inverse=True)
    if len(classes) < 2:
        raise TargetTaskMismatchError(
            "classification",
            f"a single class (every row is {classes[0]!r})",
            "pass a target with at least two classes",
        )
    return Target("classification", codes.astype(np.int64), len(classes), classes)


def _standardised(values: np.ndarray) -> Target:
    values = values.astype(np.float64)
    columns = values.reshape(len(values), -1)
    std = columns.std(axis=0)
    scaled = (columns - columns.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return Target("regression", scaled.astype(np.float32), columns.shape[1])
