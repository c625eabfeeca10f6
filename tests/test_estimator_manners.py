"""The estimator's scikit-learn manners (issue 40): random_state's convention, n_jobs as torch
threads, a quiet GridSearchCV, errors named in parameters, and what ``dir(cae_ray)`` shows."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

import cae_ray
from cae_ray.errors import ConfigValidationError, TooFewFeaturesError
from cae_ray.selector.estimator import ConcreteFeatureSelector, torch_threads_for

FAST: dict[str, Any] = {"epochs": 4, "hidden": (16,), "batch_size": 64}


def informative_table(rows: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 10)).astype(np.float32)
    y = (X[:, 2] + X[:, 5] > 0).astype(int)
    return X, y


def test_random_state_defaults_to_none_and_follows_numpy_seed() -> None:
    assert ConcreteFeatureSelector().random_state is None
    X, _ = informative_table(120)
    np.random.seed(11)
    first = ConcreteFeatureSelector(k=3, **FAST).fit(X).selected_indices_
    np.random.seed(11)
    second = ConcreteFeatureSelector(k=3, **FAST).fit(X).selected_indices_
    np.testing.assert_array_equal(first, second)
    state = np.random.RandomState(5)
    assert ConcreteFeatureSelector(random_state=state).to_config().training.seed == (
        np.random.RandomState(5).randint(np.iinfo(np.int32).max)
    )


@pytest.mark.parametrize(("n_jobs", "threads"), [(None, 1), (1, 1), (2, 2)])
def test_n_jobs_reaches_torch_and_is_restored(n_jobs: int | None, threads: int) -> None:
    seen: list[int] = []
    before = torch.get_num_threads()
    X, _ = informative_table(80)
    ConcreteFeatureSelector(k=2, n_jobs=n_jobs, **FAST).fit(
        X, on_epoch_end=lambda _: seen.append(torch.get_num_threads())
    )
    assert set(seen) == {threads}
    assert torch.get_num_threads() == before


def test_n_jobs_minus_one_means_every_cpu_joblib_sees() -> None:
    from joblib import cpu_count

    assert torch_threads_for(-1) == cpu_count()
    assert torch_threads_for(-2) == max(1, cpu_count() - 1)


def test_grid_search_over_k_in_parallel_without_a_warning_storm() -> None:
    X, y = informative_table()
    pipe = make_pipeline(
        ConcreteFeatureSelector(task="classification", random_state=0, **FAST),
        LogisticRegression(),
    )
    grid = GridSearchCV(pipe, {"concretefeatureselector__k": [1, 2, 3]}, cv=2, n_jobs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grid.fit(X, y)
    assert grid.best_params_["concretefeatureselector__k"] in (2, 3)
    # Four epochs do not converge (our own ConvergenceWarning, one per fit, is honest); what
    # must not come is anything else, such as a thread warning per worker.
    expected = (DeprecationWarning, ConvergenceWarning)
    storm = [w for w in caught if not issubclass(w.category, expected)]
    assert storm == [], [str(w.message) for w in storm]


def test_clone_keeps_every_parameter() -> None:
    selector = ConcreteFeatureSelector(k=4, n_jobs=2, random_state=3, verbose=1)
    assert clone(selector).get_params() == selector.get_params()


@pytest.mark.parametrize(
    ("params", "error", "says", "not_says"),
    [
        ({"k": 64}, TooFewFeaturesError, r"k=64", "selector.k"),
        ({"k": 0}, ConfigValidationError, r"\bk\b", "selector.k"),
        ({"epochs": 0}, ConfigValidationError, r"\bepochs\b", "training.epochs"),
    ],
)
def test_errors_name_parameters_not_config_keys(params, error, says, not_says) -> None:
    X, _ = informative_table(60)
    with pytest.raises(error, match=says) as raised:
        ConcreteFeatureSelector(**{**FAST, **params}).fit(X)
    assert not_says not in str(raised.value)


def test_dir_lists_the_public_names() -> None:
    names = dir(cae_ray)
    assert "ConcreteFeatureSelector" in names
    assert "Any" not in names and "TYPE_CHECKING" not in names
