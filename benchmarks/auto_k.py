"""`k: auto` against a fixed K: the K chosen, the informative columns found, the gate's verdict,
and the time and peak memory of the automatic fit against a fixed-K fit at the K it chose.

    .venv/bin/python benchmarks/auto_k.py [--parts demo madelon wide mnist smalln] [--seeds 0]

Tables (selection on the training rows only; the gate on held-out rows, as the pipeline's):
- ``demo``: cae_ray.demo's generator, 6,000 x 1,000, 10 informative (4,500 train).
- ``madelon``: make_classification, 4,000 x 2,000, 20 informative (3,000 train).
- ``wide``: make_classification, 4,000 x 20,000, 20 informative (3,000 train).
- ``mnist``: 6,000 / 4,000 real MNIST digits, unsupervised: the reconstruction curve's knee.
- ``smalln``: make_classification, 200 x 12,000, 30 informative (150 train), 3 classes.

Each run (the fit, then the gate) is timed in a fresh process (spawn), so its peak RSS is its
own; torch uses 1 thread. The gate's baseline on all features is part of both runs, as in
``cae-ray run``.
The gate: the selection's gradient-boosted trees against the same model on all features on the
held-out rows (paired bootstrap, tolerance 0.01, the pessimistic end decides); for MNIST the
selection's linear reconstruction against the top-K principal components.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.machine

TABLES = ("demo", "madelon", "wide", "mnist", "smalln")
INFORMATIVE = {"demo": 10, "madelon": 20, "wide": 20, "mnist": None, "smalln": 30}


def table(name: str, seed: int) -> tuple[np.ndarray, np.ndarray | None, list[int] | None]:
    """(X, y, informative column indices) of a table, rows shuffled, standardised."""
    from sklearn.datasets import make_classification

    rng = np.random.default_rng(seed)
    informative: list[int] | None = None
    y: np.ndarray | None
    if name == "demo":
        from cae_ray.demo import make_demo_data

        data = make_demo_data(rows=6000, features=1000, informative=10, seed=seed)
        X, y = data.frame.to_numpy(np.float32), np.asarray(data.target)
        informative = [data.frame.columns.get_loc(c) for c in data.informative]
    elif name in ("madelon", "wide", "smalln"):
        rows, columns = {"madelon": (4000, 2000), "wide": (4000, 20000), "smalln": (200, 12000)}[
            name
        ]
        n_informative = INFORMATIVE[name]
        assert n_informative is not None
        X, y = make_classification(
            n_samples=rows,
            n_features=columns,
            n_informative=n_informative,
            n_redundant=0,
            n_repeated=0,
            n_classes=3 if name == "smalln" else 2,
            n_clusters_per_class=1 if name == "smalln" else 2,
            class_sep=1.5 if name == "smalln" else 1.0,
            shuffle=False,
            random_state=seed,
        )
        informative = list(range(n_informative))
    else:
        from benchmarks.mnist_data import load_mnist

        X, y, _ = load_mnist()
        y = None
        X = X[rng.permutation(len(X))[:10_000]]
    order = rng.permutation(len(X))
    X = X[order].astype(np.float32)
    y = None if y is None else y[order]
    std = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(std > 0, std, 1)
    return X, y, informative


def split(name: str, n: int) -> int:
    return 6000 if name == "mnist" else int(0.75 * n)


def fit(name: str, seed: int, k: int | None) -> dict[str, Any]:
    """One whole run in this (fresh) process, the fit then the gate: ``k`` None is
    ``k: auto``."""
    import torch

    from cae_ray import ConcreteFeatureSelector, ConcreteFeatureSelectorCV

    torch.set_num_threads(1)
    X, y, _ = table(name, seed)
    cut = split(name, len(X))
    X_tr, y_tr = X[:cut], None if y is None else y[:cut]
    started = time.perf_counter()
    base = ConcreteFeatureSelector(random_state=seed)
    if k is None:
        selector: Any = ConcreteFeatureSelectorCV(base).fit(X_tr, y_tr)
        chosen, reason = selector.k_, selector.curve_.reason
    else:
        selector = base.set_params(k=k).fit(X_tr, y_tr)
        chosen, reason = k, ""
    verdict = gate_verdict(name, seed, selector.selected_indices_.tolist())
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {
        "gate": verdict,
        "k": chosen,
        "selected": selector.selected_indices_.tolist(),
        "seconds": seconds,
        "peak_gib": peak,
        "reason": reason,
    }


def in_fresh_process(name: str, seed: int, k: int | None) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result: dict[str, Any] = pool.apply(fit, (name, seed, k))
    return result


def gate_verdict(name: str, seed: int, selected: list[int]) -> str:
    """The gate's verdict on held-out rows, in a few words."""
    from cae_ray.gate.metrics import (
        explained_variance,
        gate,
        linear_reconstruction_rows,
        paired_bootstrap,
        pca_reconstruction_rows,
    )

    X, y, _ = table(name, seed)
    cut = split(name, len(X))
    if y is None:
        residual, total = linear_reconstruction_rows(X[:cut], X[cut:], selected)
        pca, _ = pca_reconstruction_rows(X[:cut], X[cut:], len(selected))

        def both(rows: np.ndarray) -> tuple[float, float]:
            return explained_variance(pca, total, rows), explained_variance(residual, total, rows)

        metric = "explained_variance"
    else:
        from sklearn.ensemble import HistGradientBoostingClassifier

        from cae_ray.gate.metrics import per_row_metric

        all_model = HistGradientBoostingClassifier(random_state=seed).fit(X[:cut], y[:cut])
        chosen = HistGradientBoostingClassifier(random_state=seed).fit(X[:cut, selected], y[:cut])
        p_all, p_sel = all_model.predict_proba(X[cut:]), chosen.predict_proba(X[cut:, selected])
        y_te = y[cut:]

        def both(rows: np.ndarray) -> tuple[float, float]:
            return (
                per_row_metric("accuracy", y_te, p_all, rows),
                per_row_metric("accuracy", y_te, p_sel, rows),
            )

        metric = "accuracy"
    n = len(X) - cut
    interval = paired_bootstrap(both, n, 1000, seed)
    baseline, value = both(np.arange(n))
    verdict = gate(metric, baseline, interval, 0.01, False)
    return f"{'pass' if verdict.passed else 'FAIL'} ({value:.4f} vs {baseline:.4f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=list(TABLES), choices=TABLES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    from benchmarks.machine import hardware

    print(f"machine: {hardware()}; torch 1 thread; seeds {args.seeds}")
    print(
        "| table | seed | informative | chosen K | found | gate (selected vs baseline) | "
        "auto s | fixed-K s | ratio | auto peak GiB | fixed peak GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.parts:
        for seed in args.seeds:
            auto = in_fresh_process(name, seed, None)
            fixed = in_fresh_process(name, seed, auto["k"])
            informative = table(name, seed)[2]
            n_inf = INFORMATIVE[name]
            found = (
                "" if informative is None else str(len(set(auto["selected"]) & set(informative)))
            )
            print(
                f"| {name} | {seed} | {n_inf or ''} | {auto['k']} | {found} | "
                f"{auto['gate']} | {auto['seconds']:.1f} | "
                f"{fixed['seconds']:.1f} | {auto['seconds'] / fixed['seconds']:.2f} | "
                f"{auto['peak_gib']:.2f} | {fixed['peak_gib']:.2f} |",
                flush=True,
            )
            print(f"    {auto['reason']}", flush=True)


if __name__ == "__main__":
    main()
