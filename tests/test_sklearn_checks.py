"""scikit-learn's own estimator checks, run on a fast configuration of the selector."""

from __future__ import annotations

from typing import Any

from sklearn.utils.estimator_checks import parametrize_with_checks

from cae_ray.selector.estimator import ConcreteFeatureSelector

# Checks we fail on purpose, and why (also listed in docs/estimator.md).
EXPECTED_FAILURES: dict[str, str] = {
    "check_dtype_object": (
        "a column of arbitrary Python objects gets our NonNumericColumnsError (a ValueError "
        "naming the offending columns and the fix) instead of numpy's bare TypeError"
    ),
}


@parametrize_with_checks(
    [ConcreteFeatureSelector(k=1, epochs=2, hidden=(4,), batch_size=32)],
    expected_failed_checks=lambda estimator: EXPECTED_FAILURES,
)
def test_sklearn_compatible(estimator: Any, check: Any) -> None:
    check(estimator)
