"""The previous applied selection stays unless this run's is better beyond noise
(cae_ray/gate/incumbent.py), on a table of near-twins, the case it is for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cae_ray.config import validate_config
from cae_ray.gate.incumbent import challenge
from cae_ray.records import IncumbentCheck
from cae_ray.selector.targets import ResolvedTask

NAMES = [f"v__f{i:02d}" for i in range(30)]


@pytest.fixture(scope="module")
def twins() -> tuple[torch.Tensor, torch.Tensor]:
    """2,000 rows: f00-f04 informative, f05-f09 their near-twins (copies plus 1% noise), the
    rest noise; the class is the sign of the informative columns' sum."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 30))
    x[:, 5:10] = x[:, 0:5] + 0.01 * rng.normal(size=(2000, 5))
    y = (x[:, 0:5].sum(axis=1) > 0).astype(np.int64)
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)


def check(
    incumbent: list[int], challenger: list[int], data, task: ResolvedTask = "classification"
) -> IncumbentCheck:
    x, y = data
    config = validate_config({"selector": {"k": len(challenger)}})
    target = None if task == "reconstruction" else y
    previous = [NAMES[i] for i in incumbent]
    return challenge(previous, challenger, NAMES, config, task, x, target)


def test_a_challenger_of_twins_does_not_replace_the_incumbent(twins) -> None:
    kept = check([0, 1, 2, 3, 4], [5, 6, 2, 3, 4], twins)
    assert kept.kept and kept.metric == "accuracy" and kept.rows == 500
    assert kept.low is not None and kept.high is not None and kept.low <= 0 <= kept.high
    assert kept.churn == 0 and "within noise, so the previous one stays" in kept.reason


def test_a_challenger_better_beyond_noise_replaces_the_incumbent(twins) -> None:
    replaced = check([0, 1, 2, 20, 21], [0, 1, 2, 3, 4], twins)
    assert not replaced.kept and replaced.low is not None and replaced.low > 0
    assert replaced.churn == pytest.approx(2 / 5)
    assert replaced.sentence.startswith("40% of the selection changed since the previous run")


def test_unsupervised_runs_compare_linear_reconstructions(twins) -> None:
    assert check([0, 1, 2, 3, 4], [5, 6, 2, 3, 4], twins, "reconstruction").kept
    replaced = check([20, 21, 22, 23, 24], [0, 1, 2, 3, 4], twins, "reconstruction")
    assert replaced.metric == "explained_variance" and not replaced.kept


def test_an_incumbent_that_cannot_be_compared_gives_way(twins) -> None:
    x, y = twins
    config = validate_config({"selector": {"k": 5}})
    gone = challenge(["v__f00", "gone__f99"], [0, 1], NAMES, config, "classification", x, y)
    assert not gone.kept and gone.metric is None and "no longer candidates" in gone.reason
    resized = check([0, 1, 2], [0, 1, 2, 3, 4], twins)
    assert not resized.kept and "it kept 3 features and this run selects 5" in resized.reason
    same = check([4, 3, 2, 1, 0], [0, 1, 2, 3, 4], twins)
    assert same.kept and same.metric is None and same.churn == 0
