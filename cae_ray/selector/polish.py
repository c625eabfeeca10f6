"""A last pass over an unsupervised selection: swap picks while a linear reconstruction improves.

The annealed search ends with K good features, but the Gumbel noise and the finite schedule
leave it short of a local optimum: on MNIST a single swap of one pick for an outside feature
often lowers the reconstruction error. With the sample's centred covariance C (N x N) and
G = C C, everything a swap needs is closed form: the error of reconstructing all features
linearly from a set S is ``trace(C) - trace(C_SS^-1 G_SS)``; dropping pick i raises it by
``(P G_SS P)_ii / P_ii`` (P = C_SS^-1); adding feature j to a set T lowers it by
``||r_j||^2 / r_jj``, r being C's residual after regression on T. Each try costs N K^2.

The pass drops the pick that costs least and adds the outside feature that gains most; it keeps
the swap when the error falls and otherwise tries the next-cheapest pick, until no pick can be
swapped for a gain (or ``max_swaps``). It needs C and G in memory, so it runs up to
:data:`POLISH_MAX_FEATURES` features.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

POLISH_MAX_FEATURES = 4096
"""``polish: null`` polishes up to this many features: C and G in float64 take 256 MB here,
and a swap's tries stay under a second."""
RELATIVE_GAIN = 1e-6
"""A swap must lower the error by this fraction of it: smaller gains are rounding."""


def polishes(polish: bool | None, n_features: int, task: str) -> bool:
    """Whether the final selection gets the reconstruction polish."""
    if task != "reconstruction":
        return False
    return polish if polish is not None else n_features <= POLISH_MAX_FEATURES


@torch.no_grad()
def polish_reconstruction(x: Tensor, picks: Tensor, max_swaps: int | None = None) -> Tensor:
    """``picks`` (K distinct column indices of ``x``) after swaps that lower the error of a
    linear reconstruction of every column of ``x`` from the picked ones; same order, swapped
    picks replaced in place."""
    centred = x.double() - x.double().mean(dim=0)
    C = centred.T @ centred
    G = C @ C
    floor = 1e-9 * float(C.diagonal().max())  # columns with (almost) no variance left
    chosen = picks.tolist()
    limit = 2 * len(chosen) if max_swaps is None else max_swaps
    error = float(C.trace() - _explained(C, G, chosen))
    swaps = 0
    while swaps < limit:
        swap = _best_swap(C, G, chosen, floor, RELATIVE_GAIN * error)
        if swap is None:
            break
        position, feature, gain = swap
        chosen[position] = feature
        error -= gain
        swaps += 1
    logger.info("select: the polish swapped %d of the %d picks", swaps, len(chosen))
    return torch.tensor(chosen, dtype=picks.dtype)


@torch.no_grad()
def linear_order(x: Tensor, picks: Tensor) -> Tensor:
    """``picks`` in greedy forward order: first the pick from which all columns of ``x`` are
    best reconstructed linearly, then the one that adds most beside it, and so on."""
    centred = x.double() - x.double().mean(dim=0)
    C = centred.T @ centred
    G = C @ C
    floor = 1e-9 * float(C.diagonal().max())
    order: list[int] = []
    left = picks.tolist()
    while left:
        gains = _addition_gains(C, G, order, floor) if order else _first_gains(C, G, floor)
        best = max(left, key=lambda j: float(gains[j]))
        order.append(best)
        left.remove(best)
    return torch.tensor(order, dtype=picks.dtype)


def _first_gains(C: Tensor, G: Tensor, floor: float) -> Tensor:
    """How much each feature alone lowers the error: ||C_j||^2 / C_jj."""
    gains = G.diagonal() / C.diagonal().clamp_min(floor)
    gains[C.diagonal() <= floor] = -torch.inf
    return gains


def _explained(C: Tensor, G: Tensor, S: list[int]) -> Tensor:
    P = torch.linalg.pinv(C[S][:, S], hermitian=True)
    return (P * G[S][:, S]).sum()


def _best_swap(
    C: Tensor, G: Tensor, S: list[int], floor: float, min_gain: float
) -> tuple[int, int, float] | None:
    """(position in S, feature to put there, error drop) of the first gainful swap, trying the
    picks that cost least to drop first; None when no pick can be swapped for a gain."""
    P = torch.linalg.pinv(C[S][:, S], hermitian=True)
    drop_cost = (P @ G[S][:, S] @ P).diagonal() / P.diagonal().clamp_min(1e-300)
    for position in torch.argsort(drop_cost).tolist():
        rest = S[:position] + S[position + 1 :]
        gains = _addition_gains(C, G, rest, floor)
        gains[rest] = -torch.inf
        feature = int(gains.argmax())
        gain = float(gains[feature] - drop_cost[position])
        if feature != S[position] and gain > min_gain:
            return position, feature, gain
    return None


def _addition_gains(C: Tensor, G: Tensor, T: list[int], floor: float) -> Tensor:
    """For every feature j, how much adding it to T lowers the reconstruction error."""
    P = torch.linalg.pinv(C[T][:, T], hermitian=True)
    C_NT = C[:, T]
    A = C_NT @ P  # regression of every feature on T
    residual_var = C.diagonal() - (A * C_NT).sum(1)
    # ||r_j||^2 with r = C - C_NT P C_TN, expanded so that only N x |T| products are needed.
    residual_norm = G.diagonal() - 2 * (A * G[:, T]).sum(1) + ((A @ G[T][:, T]) * A).sum(1)
    gains = residual_norm / residual_var.clamp_min(floor)
    gains[residual_var <= floor] = -torch.inf
    return gains
