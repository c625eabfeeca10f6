"""The embedded demo: a generated table whose informative columns are known."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cae_ray.config import Config, validate_config

# Kept equal to configs/demo.yaml (a test checks it).
DEMO_CONFIG: Config = validate_config(
    {
        "selector": {"method": "ipcae", "k": 10},
        "training": {"epochs": 100, "batch_size": 128, "learning_rate": 0.001, "seed": 0},
        "head": {"task": "classification", "hidden": [200]},
    },
    source="embedded demo config",
)


@dataclass(frozen=True)
class DemoData:
    frame: pd.DataFrame
    target: np.ndarray
    informative: list[str]
    """Names of the columns that carry the class signal; the rest is noise."""


def make_demo_data(*, rows: int, features: int, informative: int, seed: int = 0) -> DemoData:
    """A Madelon-style table (scikit-learn's make_classification) with shuffled columns."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=rows,
        n_features=features,
        n_informative=informative,
        n_redundant=0,
        n_repeated=0,
        shuffle=False,
        random_state=seed,
    )
    # make_classification puts the informative columns first; spread them out.
    order = np.random.default_rng(seed).permutation(features)
    names = [f"f_{j:04d}" for j in range(features)]
    frame = pd.DataFrame(X[:, order].astype(np.float32), columns=names)
    hits = sorted(names[pos] for pos in np.flatnonzero(order < informative))
    return DemoData(frame, y, hits)
