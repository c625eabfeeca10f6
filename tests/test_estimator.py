from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cae_ray.config import validate_config
from cae_ray.errors import (
    ConfigValidationError,
    EmptyInputError,
    FeatureMismatchError,
    NonFiniteInputError,
    NonNumericColumnsError,
    TargetLengthError,
    TargetTaskMismatchError,
    TooFewFeaturesError,
)
from cae_ray.selector.estimator import ConcreteFeatureSelector

FAST: dict[str, Any] = {"epochs": 5, "hidden": (16,), "batch_size": 64}


def small_table(rows: int = 60, cols: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, cols)).astype(np.float32)


def heldout_reconstruction_mse(X: np.ndarray, columns: np.ndarray) -> float:
    train, test = X[:1400], X[1400:]
    model = LinearRegression().fit(train[:, columns], train)
    return float(((model.predict(test[:, columns]) - test) ** 2).mean())


# --- quality: a short version of benchmarks/paper_mnist.py on scikit-learn's digits ------------


@pytest.mark.parametrize("method", ["ipcae", "cae"])
def test_unsupervised_selection_reconstructs_far_better_than_random(digits, method) -> None:
    X, _ = digits
    selector = ConcreteFeatureSelector(k=10, method=method, epochs=60).fit(X[:1400])
    chosen = heldout_reconstruction_mse(X, selector.selected_indices_)
    rng = np.random.default_rng(0)
    random = [heldout_reconstruction_mse(X, rng.choice(64, 10, replace=False)) for _ in range(20)]
    assert chosen < 0.8 * np.median(random), (chosen, np.median(random))
    assert selector.task_ == "reconstruction"
    assert len(set(selector.selected_indices_)) == 10


def test_supervised_selection_classifies_far_better_than_random(digits) -> None:
    from sklearn.ensemble import ExtraTreesClassifier

    X, y = digits
    selector = ConcreteFeatureSelector(k=8, epochs=60).fit(X[:1400], y[:1400])
    assert selector.task_ == "classification"

    def accuracy(columns: np.ndarray) -> float:
        trees = ExtraTreesClassifier(50, random_state=0).fit(X[:1400, columns], y[:1400])
        return float(trees.score(X[1400:, columns], y[1400:]))

    rng = np.random.default_rng(0)
    random = np.median([accuracy(rng.choice(64, 8, replace=False)) for _ in range(10)])
    assert accuracy(selector.selected_indices_) > random + 0.08


# --- guarantees ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["ipcae", "cae"])
def test_always_exactly_k_distinct_features(method: str, seed: int) -> None:
    # 3 epochs never converge, so argmax duplicates are common; the result must still be K distinct.
    X = small_table(80, 12, seed)
    selector = ConcreteFeatureSelector(
        k=9, method=method, random_state=seed, **{**FAST, "epochs": 3}
    )
    with pytest.warns(ConvergenceWarning):
        selector.fit(X)
    assert len(selector.selected_indices_) == 9
    assert len(set(selector.selected_indices_.tolist())) == 9
    assert selector.get_support().sum() == 9
    assert selector.transform(X).shape == (80, 9)
    assert selector.scores_.shape == (12,)


def test_same_seed_same_selection_and_global_rng_untouched(digits) -> None:
    X, y = digits
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = ConcreteFeatureSelector(k=6, epochs=8, random_state=7).fit(X[:600], y[:600])
    assert torch.equal(torch.rand(3), before)  # fit did not consume the caller's RNG
    second = ConcreteFeatureSelector(k=6, epochs=8, random_state=7).fit(X[:600], y[:600])
    assert np.array_equal(first.selected_indices_, second.selected_indices_)
    assert np.allclose(first.scores_, second.scores_)
    assert [h["loss"] for h in first.history_] == [h["loss"] for h in second.history_]


def test_history_records_every_epoch() -> None:
    selector = ConcreteFeatureSelector(k=2, early_stop=False, **FAST).fit(small_table())
    assert [h["epoch"] for h in selector.history_] == list(range(5))
    temperatures = [h["temperature"] for h in selector.history_]
    assert temperatures == sorted(temperatures, reverse=True)
    assert temperatures[-1] == pytest.approx(0.01)
    assert {"loss", "mean_max", "min_max", "distinct", "seconds", "step"} <= set(
        selector.history_[0]
    )


def test_early_stop_when_converged(digits) -> None:
    X, _ = digits
    selector = ConcreteFeatureSelector(k=5, epochs=200, convergence_threshold=0.9).fit(X)
    assert selector.converged_
    assert len(selector.history_) < 200
    assert selector.history_[-1]["mean_max"] >= 0.9


def test_converged_means_confident_rows_and_no_collision(digits) -> None:
    """The documented promise (docs/estimator.md): `collisions_` is 0 whenever `converged_` is
    True."""
    from cae_ray.selector.concrete import converged

    assert converged(True, 0) and not converged(True, 1) and not converged(False, 0)
    X, _ = digits
    for k, seed in ((5, 0), (20, 1), (40, 2)):  # many rows for 64 features: collisions likely
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            selector = ConcreteFeatureSelector(
                k=k, epochs=60, convergence_threshold=0.9, random_state=seed
            ).fit(X)
        assert not selector.converged_ or selector.collisions_ == 0, (k, seed)
        assert selector.converged_ == (
            selector.history_[-1]["mean_max"] >= 0.9 and selector.collisions_ == 0
        )


@pytest.mark.parametrize(("verbose", "lines"), [(0, 0), (1, 11), (2, 20)])
def test_verbose_prints_progress_the_scikit_learn_way(digits, capsys, verbose, lines) -> None:
    X, _ = digits
    ConcreteFeatureSelector(k=5, epochs=20, early_stop=False, verbose=verbose).fit(X[:300])
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == lines
    if printed:
        assert printed[0].startswith("[ConcreteFeatureSelector] epoch 1/20: loss ")
        assert printed[-1].startswith("[ConcreteFeatureSelector] epoch 20/20: loss ")


# --- inputs -------------------------------------------------------------------------------------


def test_pandas_names_flow_through() -> None:
    X = small_table()
    frame = pd.DataFrame(X, columns=[f"col_{j}" for j in range(8)])
    selector = ConcreteFeatureSelector(k=3, random_state=0, **FAST).fit(frame)
    names = selector.get_feature_names_out()
    assert list(names) == [f"col_{j}" for j in selector.selected_indices_]
    assert list(selector.feature_names_in_) == list(frame.columns)


def test_pyarrow_table_gives_the_same_selection_as_numpy() -> None:
    X = small_table()
    table = pa.table({f"c{j}": X[:, j] for j in range(8)})
    from_arrow = ConcreteFeatureSelector(k=3, **FAST).fit(table)
    from_numpy = ConcreteFeatureSelector(k=3, **FAST).fit(X)
    assert np.array_equal(from_arrow.selected_indices_, from_numpy.selected_indices_)
    assert list(from_arrow.get_feature_names_out()) == [
        f"c{j}" for j in from_arrow.selected_indices_
    ]
    assert from_arrow.transform(table).shape == (60, 3)


def test_regression_and_pipeline() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 10))
    y = 1000 * X[:, 3] - 500 * X[:, 7] + rng.normal(size=400)  # large scale: standardised inside
    pipe = make_pipeline(StandardScaler(), ConcreteFeatureSelector(k=2, epochs=60, random_state=0))
    pipe.fit(X, y)
    selector = pipe[-1]
    assert selector.task_ == "regression"
    assert set(selector.selected_indices_) == {3, 7}
    assert pipe.transform(X).shape == (400, 2)


def test_from_config_round_trip() -> None:
    config = validate_config({"selector": {"k": 4, "method": "cae"}, "training": {"seed": 3}})
    selector = ConcreteFeatureSelector.from_config(config)
    assert (selector.k, selector.method, selector.random_state) == (4, "cae", 3)
    assert selector.to_config() == config


# --- bad input: typed errors that say what to do --------------------------------------------


@pytest.mark.parametrize(
    ("make_input", "error", "match"),
    [
        (lambda X: (X, None, {"k": 0}), ConfigValidationError, r"\bk: .*whole number.*got 0"),
        (lambda X: (X, None, {"k": 8}), TooFewFeaturesError, "k=8 but only 8.*between 1 and 7"),
        (lambda X: (X, None, {"k": 20}), TooFewFeaturesError, "k=20"),
        (lambda X: (X[:0], None, {}), EmptyInputError, r"0 sample\(s\)"),
        (lambda X: (X[:, :0], None, {}), EmptyInputError, r"0 feature\(s\)"),
        (lambda X: (X[:1], None, {}), EmptyInputError, r"1 sample\(s\)"),
        (lambda X: (_with(X, 2, 5, np.nan), None, {}), NonFiniteInputError, "NaN.*column.*5"),
        (lambda X: (_with(X, 0, 1, np.inf), None, {}), NonFiniteInputError, "inf \\(1 values"),
        (lambda X: (X, np.zeros(59), {}), TargetLengthError, "y has 59 values but X has 60"),
        (
            lambda X: (X, np.linspace(0, 1, 60), {"task": "classification"}),
            TargetTaskMismatchError,
            "classification.*continuous.*task='regression'",
        ),
        (
            lambda X: (X, np.array(["a", "b"] * 30), {"task": "regression"}),
            TargetTaskMismatchError,
            "regression.*task='classification'",
        ),
        (lambda X: (X, np.ones(60), {}), TargetTaskMismatchError, "a single class"),
        (lambda X: (X, np.full(60, 3.5), {}), TargetTaskMismatchError, "constant.*row is 3.5"),
        (lambda X: (X, None, {"task": "classification"}), TargetTaskMismatchError, "pass y"),
        (lambda X: (X, None, {"method": "lasso"}), ConfigValidationError, r"\bmethod\b"),
        (lambda X: (X, None, {"epochs": 0}), ConfigValidationError, r"\bepochs\b"),
    ],
)
def test_bad_input_raises_a_typed_error(make_input, error, match) -> None:
    X, y, params = make_input(small_table())
    with pytest.raises(error, match=match):
        ConcreteFeatureSelector(**{"k": 3, **FAST, **params}).fit(X, y)


def _with(X: np.ndarray, row: int, col: int, value: float) -> np.ndarray:
    X = X.copy()
    X[row, col] = value
    return X


def test_non_numeric_columns_are_named() -> None:
    frame = pd.DataFrame(small_table(), columns=list("abcdefgh"))
    frame["city"] = "Oslo"
    frame["when"] = pd.Timestamp("2026-01-01")
    with pytest.raises(NonNumericColumnsError, match=r"2 column.*'city' \(object\).*'when'"):
        ConcreteFeatureSelector(k=2, **FAST).fit(frame)
    table = pa.table({"x": [1.0, 2.0, 3.0], "y": [1.0, 5.0, 2.0], "s": ["a", "b", "c"]})
    with pytest.raises(NonNumericColumnsError, match="'s'"):
        ConcreteFeatureSelector(k=1, **FAST).fit(table)
    objects = small_table().astype(object)
    objects[3, 6] = "oops"
    with pytest.raises(NonNumericColumnsError, match="6"):
        ConcreteFeatureSelector(k=2, **FAST).fit(objects)


def test_transform_with_other_columns_is_refused() -> None:
    selector = ConcreteFeatureSelector(k=2, **FAST).fit(small_table())
    with pytest.raises(FeatureMismatchError, match=r"X has 5 features.*expecting 8 features"):
        selector.transform(small_table(cols=5))
