"""The reconstruction polish: closed-form swaps that lower a linear reconstruction's error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cae_ray.selector.estimator import ConcreteFeatureSelector
from cae_ray.selector.polish import (
    POLISH_MAX_FEATURES,
    _addition_gains,
    polish_reconstruction,
    polishes,
)


def reconstruction_error(x: np.ndarray, picks: np.ndarray) -> float:
    """Residual sum of squares of a least-squares fit (with intercept) of every column."""
    centred = x - x.mean(axis=0)
    A = centred[:, picks]
    coef, *_ = np.linalg.lstsq(A, centred, rcond=None)
    return float(((centred - A @ coef) ** 2).sum())


def latent_table(rows: int = 400, latent: int = 5, seed: int = 0) -> np.ndarray:
    """5 source columns, 25 noisy mixtures of them, and 10 columns of pure noise (low variance)."""
    rng = np.random.default_rng(seed)
    sources = rng.normal(size=(rows, latent))
    mixtures = sources @ rng.normal(size=(latent, 25)) + 0.05 * rng.normal(size=(rows, 25))
    noise = 0.1 * rng.normal(size=(rows, 10))
    return np.hstack([sources, mixtures, noise]).astype(np.float32)


def test_polish_swaps_noise_picks_for_informative_ones() -> None:
    x = latent_table()
    start = np.array([0, 1, 30, 31, 32])  # two sources and three noise columns
    polished = polish_reconstruction(torch.from_numpy(x), torch.from_numpy(start)).numpy()
    assert len(set(polished.tolist())) == 5
    assert not set(polished.tolist()) & {30, 31, 32}, polished
    assert {0, 1} <= set(polished.tolist())  # the good picks stay, in place
    assert reconstruction_error(x, polished) < 0.2 * reconstruction_error(x, start)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_polish_never_raises_the_error_and_keeps_picks_distinct(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(300, 40)) @ rng.normal(size=(40, 40))).astype(np.float32)
    start = rng.choice(40, 8, replace=False)
    polished = polish_reconstruction(torch.from_numpy(x), torch.from_numpy(start)).numpy()
    assert len(set(polished.tolist())) == 8
    assert reconstruction_error(x, polished) <= reconstruction_error(x, start) * (1 + 1e-9)


def test_addition_gains_match_a_refit() -> None:
    """The N K^2 expansion equals the error drop of actually adding each feature."""
    x = latent_table(rows=200).astype(np.float64)
    centred = torch.from_numpy(x - x.mean(axis=0))
    C = centred.T @ centred
    T = [0, 7, 12]
    gains = _addition_gains(C, C @ C, T, floor=1e-9)
    base = reconstruction_error(x, np.array(T))
    for j in (1, 20, 35):
        refit = base - reconstruction_error(x, np.array([*T, j]))
        assert float(gains[j]) == pytest.approx(refit, rel=1e-6)


def test_polish_stops_at_max_swaps() -> None:
    x = latent_table()
    start = torch.tensor([30, 31, 32, 33, 34])
    once = polish_reconstruction(torch.from_numpy(x), start, max_swaps=1)
    assert int((once != start).sum()) == 1


def test_polishes_only_reconstruction_and_up_to_the_limit() -> None:
    assert polishes(None, 784, "reconstruction")
    assert not polishes(None, POLISH_MAX_FEATURES + 1, "reconstruction")
    assert polishes(True, POLISH_MAX_FEATURES + 1, "reconstruction")
    assert not polishes(False, 784, "reconstruction")
    assert not polishes(True, 784, "classification")


def test_estimator_polish_lowers_the_reconstruction_error() -> None:
    x = latent_table(rows=600, seed=3)
    plain = ConcreteFeatureSelector(k=5, epochs=3, early_stop=False, polish=False).fit(x)
    polished = ConcreteFeatureSelector(k=5, epochs=3, early_stop=False).fit(x)
    assert len(polished.selected_indices_) == 5
    assert reconstruction_error(x, polished.selected_indices_) <= reconstruction_error(
        x, plain.selected_indices_
    )
    assert ConcreteFeatureSelector(polish=True).to_config().selector.polish is True
