from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, r2_score, roc_auc_score

from cae_ray.errors import InvalidInputError
from cae_ray.gate.errors import (
    InvalidBootstrapError,
    InvalidToleranceError,
    MetricTaskMismatchError,
    TooFewValidationRowsError,
)
from cae_ray.gate.metrics import (
    METRICS,
    MIN_ROWS_FOR_INTERVAL,
    Interval,
    check_metric,
    default_metric,
    explained_variance,
    gate,
    higher_is_better,
    linear_reconstruction_rows,
    paired_bootstrap,
    pca_reconstruction_rows,
    per_row_metric,
)

# --- which metric ------------------------------------------------------------------------------


def test_each_task_lists_its_metrics_and_defaults_to_the_usual_one() -> None:
    assert set(METRICS["classification"]) == {"accuracy", "macro_f1", "roc_auc"}
    assert set(METRICS["regression"]) == {"rmse", "r2"}
    assert set(METRICS["reconstruction"]) == {"explained_variance"}
    assert default_metric("classification") == "accuracy"
    assert default_metric("regression") == "r2"
    assert default_metric("reconstruction") == "explained_variance"


def test_only_rmse_is_lower_is_better() -> None:
    directions = {m: higher_is_better(m) for names in METRICS.values() for m in names}
    assert [m for m, higher in directions.items() if not higher] == ["rmse"]
    with pytest.raises(MetricTaskMismatchError, match="'acc' is not one of"):
        higher_is_better("acc")


@pytest.mark.parametrize(
    ("metric", "task", "n_classes"),
    [
        ("accuracy", "classification", 3),
        ("roc_auc", "classification", 2),
        ("roc_auc", "classification", None),
        ("rmse", "regression", None),
        ("explained_variance", "reconstruction", None),
    ],
)
def test_check_metric_accepts_metrics_that_fit(metric: str, task: str, n_classes: int) -> None:
    check_metric(metric, task, n_classes)


def test_check_metric_names_the_metrics_that_fit() -> None:
    with pytest.raises(MetricTaskMismatchError) as info:
        check_metric("rmse", "classification", 2)
    message = str(info.value)
    assert "metric='rmse' does not fit task='classification'" in message
    assert "Fix: use one of 'accuracy', 'macro_f1', 'roc_auc'." in message
    assert isinstance(info.value, InvalidInputError) and isinstance(info.value, ValueError)


def test_roc_auc_needs_exactly_two_classes() -> None:
    with pytest.raises(MetricTaskMismatchError) as info:
        check_metric("roc_auc", "classification", 3)
    assert "task='classification' with 3 classes" in str(info.value)
    assert info.value.allowed == ["accuracy", "macro_f1"]


def test_check_metric_on_an_unresolved_task_says_to_resolve_it() -> None:
    with pytest.raises(MetricTaskMismatchError, match="resolve the task"):
        check_metric("accuracy", "auto")


# --- scoring predictions -----------------------------------------------------------------------


@pytest.fixture
def toy_classes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=40)
    proba1 = np.clip(0.3 * y + 0.7 * rng.random(40), 0, 1)
    indices = np.array([0, 0, 0, 3, 5, 5, 7, 8, 9, 9, 12, 20, 21, 33, 39, 39])  # repeats
    return y, np.column_stack([1 - proba1, proba1]), indices


def test_classification_metrics_match_sklearn_on_resampled_rows(toy_classes) -> None:
    y, proba, idx = toy_classes
    predicted = proba.argmax(axis=1)
    assert per_row_metric("accuracy", y, proba, idx) == pytest.approx(
        np.mean(predicted[idx] == y[idx])
    )
    assert per_row_metric("macro_f1", y, proba, idx) == pytest.approx(
        f1_score(y[idx], predicted[idx], average="macro")
    )
    assert per_row_metric("roc_auc", y, proba, idx) == pytest.approx(
        roc_auc_score(y[idx], proba[idx, 1])
    )
    # The repeats count: scoring the unique rows gives a different accuracy here.
    assert per_row_metric("accuracy", y, proba, idx) != pytest.approx(
        per_row_metric("accuracy", y, proba, np.unique(idx))
    )


def test_roc_auc_on_a_single_class_resample_is_nan(toy_classes) -> None:
    y, proba, _ = toy_classes
    assert np.isnan(per_row_metric("roc_auc", y, proba, np.flatnonzero(y == 1)))


def test_regression_metrics_match_sklearn_on_resampled_rows() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    pred = np.array([1.5, 2.0, 2.0, 4.5, 4.0])
    idx = np.array([0, 0, 2, 3, 4, 4, 4])
    expected_rmse = np.sqrt(np.mean((pred[idx] - y[idx]) ** 2))
    assert per_row_metric("rmse", y, pred, idx) == pytest.approx(expected_rmse)
    assert per_row_metric("r2", y, pred, idx) == pytest.approx(r2_score(y[idx], pred[idx]))


def test_per_row_metric_refuses_explained_variance() -> None:
    with pytest.raises(MetricTaskMismatchError, match="'explained_variance' is not one of"):
        per_row_metric("explained_variance", np.zeros(3), np.zeros(3), np.arange(3))


# --- reconstruction ----------------------------------------------------------------------------


def test_explained_variance_is_a_ratio_of_the_resampled_sums() -> None:
    residual, total = np.array([1.0, 0.0, 3.0]), np.array([2.0, 2.0, 4.0])
    assert explained_variance(residual, total, np.arange(3)) == pytest.approx(1 - 4 / 8)
    assert explained_variance(residual, total, np.array([2, 2, 1])) == pytest.approx(1 - 6 / 10)


def _low_rank(n_rows: int, seed: int = 1) -> np.ndarray:
    """Rows x = z @ A + b with z 3-dimensional: any 3 generic columns determine the rest."""
    rng = np.random.default_rng(seed)
    mixing, offset = rng.normal(size=(3, 8)), rng.normal(size=8)
    return rng.normal(size=(n_rows, 3)) @ mixing + offset


def test_columns_that_generate_the_others_explain_all_variance() -> None:
    x = _low_rank(250)
    x_train, x_eval = x[:200], x[200:]
    residual, total = linear_reconstruction_rows(x_train, x_eval, [0, 3, 5])
    assert residual.shape == total.shape == (50,)
    assert explained_variance(residual, total, np.arange(50)) == pytest.approx(1.0, abs=1e-9)


def test_too_few_columns_leave_variance_unexplained() -> None:
    x = _low_rank(200)
    residual, total = linear_reconstruction_rows(x, x, [0, 3])
    assert explained_variance(residual, total, np.arange(200)) < 0.99


def test_pca_is_at_least_as_good_as_any_column_selection() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 10)) @ rng.normal(size=(10, 10))
    all_rows = np.arange(300)
    pca = explained_variance(*pca_reconstruction_rows(x, x, 3), all_rows)
    for columns in ([0, 1, 2], [4, 7, 9], [2, 5, 8]):
        selected = explained_variance(*linear_reconstruction_rows(x, x, columns), all_rows)
        assert pca >= selected - 1e-12
        assert pca > selected + 1e-3  # strictly better on generic data
    # Wide data (fewer rows than columns) takes the SVD path and stays optimal.
    wide = rng.normal(size=(12, 30))
    wide_pca = explained_variance(*pca_reconstruction_rows(wide, wide, 4), np.arange(12))
    wide_sel = explained_variance(
        *linear_reconstruction_rows(wide, wide, [0, 1, 2, 3]), np.arange(12)
    )
    assert wide_pca >= wide_sel - 1e-12


def test_pca_with_all_components_explains_everything_on_new_rows() -> None:
    rng = np.random.default_rng(4)
    x_train, x_eval = rng.normal(size=(100, 5)), rng.normal(size=(30, 5))
    residual, total = pca_reconstruction_rows(x_train, x_eval, 5)
    assert explained_variance(residual, total, np.arange(30)) == pytest.approx(1.0)


# --- paired bootstrap ---------------------------------------------------------------------------


def _accuracy_scorer(n_rows: int, seed: int, gap: float):
    """Baseline right on ~90% of rows, selected model on ~(90 - gap)%."""
    rng = np.random.default_rng(seed)
    baseline_right = rng.random(n_rows) < 0.9
    selected_right = baseline_right & (rng.random(n_rows) >= gap)

    def score(indices: np.ndarray) -> tuple[float, float]:
        return float(baseline_right[indices].mean()), float(selected_right[indices].mean())

    return score


def test_bootstrap_is_reproducible_with_a_seed() -> None:
    score = _accuracy_scorer(200, seed=0, gap=0.05)
    first = paired_bootstrap(score, 200, resamples=200, seed=7)
    assert paired_bootstrap(score, 200, resamples=200, seed=7) == first
    assert paired_bootstrap(score, 200, resamples=200, seed=8) != first


def test_bootstrap_interval_contains_the_estimate() -> None:
    score = _accuracy_scorer(300, seed=1, gap=0.05)
    interval = paired_bootstrap(score, 300, resamples=300, seed=0)
    baseline, selected = score(np.arange(300))
    assert interval.estimate == pytest.approx(selected - baseline)
    assert interval.low < interval.estimate < interval.high
    assert interval.high <= 0  # the selected model is never better on any row


def test_bootstrap_interval_narrows_with_more_rows() -> None:
    def width(n_rows: int) -> float:
        interval = paired_bootstrap(_accuracy_scorer(n_rows, 2, 0.1), n_rows, 300, seed=0)
        return interval.high - interval.low

    assert width(2000) < 0.5 * width(100)


def test_bootstrap_with_higher_confidence_is_wider() -> None:
    score = _accuracy_scorer(200, seed=3, gap=0.1)
    narrow = paired_bootstrap(score, 200, 300, seed=0, confidence=0.5)
    wide = paired_bootstrap(score, 200, 300, seed=0, confidence=0.99)
    assert wide.low < narrow.low and wide.high > narrow.high


def test_zero_resamples_gives_the_point_estimate_only() -> None:
    calls: list[int] = []

    def score(indices: np.ndarray) -> tuple[float, float]:
        calls.append(len(indices))
        return 0.75, 0.5

    assert paired_bootstrap(score, 50, resamples=0, seed=0) == Interval(-0.25, -0.25, -0.25)
    assert calls == [50]


def test_bootstrap_skips_undefined_resamples() -> None:
    def score(indices: np.ndarray) -> tuple[float, float]:
        return (float("nan"), 0.0) if indices[0] % 2 else (0.5, 0.4)

    interval = paired_bootstrap(score, 40, resamples=100, seed=0)
    assert (interval.low, interval.high) == pytest.approx((-0.1, -0.1))


def test_bootstrap_refuses_too_few_rows() -> None:
    n_rows = MIN_ROWS_FOR_INTERVAL - 1
    with pytest.raises(TooFewValidationRowsError) as info:
        paired_bootstrap(lambda idx: (1.0, 1.0), n_rows, resamples=100, seed=0)
    assert f"has {n_rows} row(s), fewer than the {MIN_ROWS_FOR_INTERVAL}" in str(info.value)
    assert "raise data.validation_fraction" in str(info.value)


@pytest.mark.parametrize(("resamples", "confidence"), [(-1, 0.95), (10, 0.0), (10, 95.0)])
def test_bootstrap_refuses_bad_settings(resamples: int, confidence: float) -> None:
    with pytest.raises(InvalidBootstrapError, match="Fix: set"):
        paired_bootstrap(lambda idx: (1.0, 1.0), 30, resamples, seed=0, confidence=confidence)


# --- the gate ----------------------------------------------------------------------------------


def test_equal_models_pass_with_zero_tolerance() -> None:
    verdict = gate("accuracy", 0.9, Interval(0.0, 0.0, 0.0), tolerance=0.0, relative=False)
    assert verdict.passed
    assert verdict.shortfall == 0.0 and verdict.worst_shortfall == 0.0
    assert "gate passes" in verdict.reason


def test_a_clearly_worse_model_fails_and_the_reason_gives_the_numbers() -> None:
    verdict = gate("accuracy", 0.9, Interval(-0.12, -0.08, -0.1), tolerance=0.02, relative=False)
    assert not verdict.passed
    assert verdict.shortfall == pytest.approx(0.1)
    assert verdict.worst_shortfall == pytest.approx(0.12)
    assert verdict.allowed == pytest.approx(0.02)
    assert "0.1000 worse than the baseline 0.9000" in verdict.reason
    assert "0.1200 worse" in verdict.reason and "gate fails" in verdict.reason


def test_the_verdict_prints_every_number_in_one_format_with_enough_digits() -> None:
    """Issue 40: "0.0044 better ... at worst 0.001467 worse" mixed precisions, and scores at
    the ends read "0 better than the baseline 1"."""
    mixed = gate("accuracy", 0.9123, Interval(0.001467, 0.01, 0.0044), 0.02, relative=False)
    # Both differences have 3 significant digits, with the same number of decimals.
    assert "0.00440 better than the baseline 0.91230" in mixed.reason
    assert "at worst 0.00147 better than it" in mixed.reason
    assert "allowed loss of 0.02000" in mixed.reason
    perfect = gate("accuracy", 1.0, Interval(0.0, 0.0, 0.0), 0.0, relative=False)
    assert "as good as the baseline 1.0000, and at worst as good as it" in perfect.reason
    assert "allowed loss of 0.0000" in perfect.reason
    # A big metric beside a small difference keeps both readable.
    rmse = gate("rmse", 1234.5, Interval(0.25, 0.75, 0.5), 1.0, relative=False)
    assert "0.5000 worse than the baseline 1234.5000" in rmse.reason


def test_the_pessimistic_end_decides_not_the_estimate() -> None:
    # Point estimate within tolerance, but the interval reaches beyond it: fail closed.
    verdict = gate("r2", 0.8, Interval(-0.05, 0.01, -0.01), tolerance=0.02, relative=False)
    assert verdict.shortfall == pytest.approx(0.01)
    assert not verdict.passed


def test_relative_tolerance_scales_with_the_baseline() -> None:
    interval = Interval(-0.03, -0.01, -0.02)
    absolute = gate("r2", 0.5, interval, tolerance=0.05, relative=False)
    relative = gate("r2", 0.5, interval, tolerance=0.05, relative=True)
    assert absolute.passed and absolute.allowed == pytest.approx(0.05)
    assert not relative.passed and relative.allowed == pytest.approx(0.025)
    assert "5% of |baseline|" in relative.reason


def test_rmse_is_worse_when_it_goes_up() -> None:
    higher_rmse = Interval(0.2, 0.4, 0.3)  # selected - baseline, in rmse units
    lower_rmse = Interval(-0.4, -0.2, -0.3)
    worse = gate("rmse", 1.0, higher_rmse, tolerance=0.1, relative=False)
    better = gate("rmse", 1.0, lower_rmse, tolerance=0.1, relative=False)
    assert not worse.passed and worse.worst_shortfall == pytest.approx(0.4)
    assert better.passed and better.shortfall == pytest.approx(-0.3)
    assert "0.3000 better than" in better.reason
    # The same numbers read as accuracy mean the opposite.
    assert gate("accuracy", 1.0, higher_rmse, tolerance=0.1, relative=False).passed


def test_an_undefined_interval_fails() -> None:
    nan = float("nan")
    verdict = gate("roc_auc", 0.8, Interval(nan, nan, 0.0), tolerance=0.1, relative=False)
    assert not verdict.passed


@pytest.mark.parametrize("tolerance", [-0.01, float("nan")])
def test_negative_tolerance_is_refused(tolerance: float) -> None:
    with pytest.raises(InvalidToleranceError, match=r"cannot be negative\. Fix: set a tolerance"):
        gate("accuracy", 0.9, Interval(0.0, 0.0, 0.0), tolerance=tolerance, relative=False)
