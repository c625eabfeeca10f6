"""What the selected features must predict: the task (decided here, and only here, when it is
``auto``) and how the target is encoded for the loop.

``auto`` means: no target -> reconstruction; a target with discrete values (integers, strings,
booleans, and floats that are all whole numbers, as :func:`sklearn.utils.multiclass.
type_of_target` says: a float column of 0.0/1.0 is two classes) -> classification; a continuous
one -> regression. Regression targets are standardised so the loss is of order 1.

:func:`decide_task` is used by the estimator (:func:`prepare_target`, on the values in memory)
and by the pipeline (:func:`cae_ray.runtime.data.resolve_target`, on a column's distinct values), so
the same column gets the same task in both; validation reads the result from ``prepared.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from cae_ray.errors import NonFiniteInputError, TargetLengthError, TargetTaskMismatchError

ResolvedTask = Literal["reconstruction", "classification", "regression"]

_DISCRETE = ("binary", "multiclass")
_CONTINUOUS = ("continuous", "continuous-multioutput")


def target_kind(values: np.ndarray, task: str) -> str:
    """scikit-learn's kind of target (binary, multiclass, continuous, ...) of ``values``; the
    same for a column's distinct values as for the whole column."""
    from sklearn.utils.multiclass import type_of_target

    kind = str(type_of_target(values))
    if kind == "unknown":
        raise TargetTaskMismatchError(
            task, f"Unknown label type (dtype {values.dtype})", "pass class labels or numbers"
        )
    return kind


def decide_task(task: str, kind: str, values: np.ndarray) -> ResolvedTask:
    """The supervised task for a target of this ``kind``; an explicit task must fit it."""
    if task == "auto":
        task = "classification" if kind in _DISCRETE else "regression"
    if task == "classification":
        if kind not in _DISCRETE:
            distinct = len(np.unique(values))
            raise TargetTaskMismatchError(
                "classification",
                f"{kind} values, {distinct} distinct",
                "use task='regression', or bin y into classes first",
            )
        return "classification"
    if values.dtype.kind not in "biuf" or kind not in (*_CONTINUOUS, *_DISCRETE):
        raise TargetTaskMismatchError(
            "regression",
            f"{kind} values of dtype {values.dtype}",
            "use task='classification' for labels, or pass numeric values",
        )
    return "regression"


def check_classes(classes: Sequence[Any]) -> None:
    if len(classes) < 2:
        raise TargetTaskMismatchError(
            "classification",
            f"a single class (every row is {classes[0]!r})",
            "pass a target with at least two classes",
        )


def check_varies(std: Any, value: Any) -> None:
    """A regression target must vary between rows: a constant one (every column's ``std`` 0,
    ``value`` its first row) tells nothing about any feature."""
    if np.all(np.asarray(std) == 0):
        raise TargetTaskMismatchError(
            "regression",
            f"a constant target (every row is {value!r})",
            "pass a target that varies between rows",
        )


@dataclass(frozen=True)
class TargetInfo:
    """How a dataset's target is encoded (kept in ``prepared.json``)."""

    task: ResolvedTask
    classes: list[Any] | None = None
    """Sorted class labels (classification); codes are positions in this list."""
    mean: float = 0.0
    std: float = 1.0
    """Regression targets are standardised with these."""

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.classes is not None else 1

    def to_units(self, values: np.ndarray) -> np.ndarray:
        """Standardised regression values (targets or predictions) back in the target's own
        units; class codes and probabilities as they are."""
        if self.task != "regression":
            return values
        return values.astype(np.float64) * self.std + self.mean

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, recorded: dict[str, Any]) -> TargetInfo:
        return cls(**{key: value for key, value in recorded.items() if key != "column"})


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
    values = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.ravel()
    if values.ndim == 0 or len(values) != n_rows:
        raise TargetLengthError(n_rows, 0 if values.ndim == 0 else len(values))
    numeric = values.dtype.kind in "biuf"
    if numeric and not np.isfinite(values.astype(np.float64)).all():
        bad = int((~np.isfinite(values.astype(np.float64))).sum())
        raise NonFiniteInputError(["y"], bad, 0)
    if decide_task(task, target_kind(values, task), values) == "classification":
        return _classes(values)
    return _standardised(values)


def _classes(values: np.ndarray) -> Target:
    classes, codes = np.unique(values, return_inverse=True)
    check_classes(classes.tolist())
    return Target("classification", codes.astype(np.int64), len(classes), classes)


def _standardised(values: np.ndarray) -> Target:
    values = values.astype(np.float64)
    columns = values.reshape(len(values), -1)
    std = columns.std(axis=0)
    check_varies(std, values[0].tolist())
    scaled = (columns - columns.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return Target("regression", scaled.astype(np.float32), columns.shape[1])
