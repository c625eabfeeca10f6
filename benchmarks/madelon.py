"""Known informative columns: a Madelon-style table, supervised K=20 of 2,000.

    .venv/bin/python benchmarks/madelon.py [--generators 0 1]

scikit-learn's make_classification (Madelon's own generator) with 4,000 rows, 2,000 columns,
20 informative, no redundant or repeated columns, shuffle=False (so columns 0-19 are the
answer). Compares plain supervised selection (exactly k rows, no head weight decay) with the
default spare-row search, for IP-CAE and CAE.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from sklearn.datasets import make_classification

from cae_ray.selector.estimator import ConcreteFeatureSelector

VARIANTS: dict[str, dict[str, Any]] = {
    "IP-CAE, plain (k rows, no decay)": {
        "method": "ipcae",
        "search_factor": 1,
        "head_weight_decay": 0,
    },
    "IP-CAE, search (default)": {"method": "ipcae"},
    "CAE, search": {"method": "cae"},
}


def madelon_table(random_state: int, n_features: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """4,000 x n_features; shuffle=False puts the 20 informative columns first (indices 0-19)
    and leaves the rows ordered by class."""
    X, y = make_classification(
        n_samples=4000,
        n_features=n_features,
        n_informative=20,
        n_redundant=0,
        n_repeated=0,
        shuffle=False,
        random_state=random_state,
    )
    return X, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generators", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    print("| variant | generator random_state | informative found (of 20) | epochs | fit s |")
    print("|---|---|---|---|---|")
    for rs in args.generators:
        X, y = madelon_table(rs)
        for name, params in VARIANTS.items():
            started = time.perf_counter()
            selector = ConcreteFeatureSelector(k=20, epochs=200, **params).fit(X, y)
            seconds = time.perf_counter() - started
            found = int((selector.selected_indices_ < 20).sum())
            print(f"| {name} | {rs} | {found} | {len(selector.history_)} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
