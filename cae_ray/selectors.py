"""Concrete selector layers: K selector rows, each a Gumbel-softmax over the N input features.

- :class:`ConcreteSelector` (CAE, Abid et al. 2019) learns the K x N logits directly.
- :class:`IndirectConcreteSelector` (IP-CAE, Nilsson et al. 2024) learns them as
  ``L = Psi @ W.T + b``: the shared factors precondition the gradient and converge faster.

During training a row outputs a convex mix of the features, ``x @ softmax((L + G) / T).T``; at
inference it outputs exactly one feature. :func:`distinct_selection` turns the logits into K
*different* features, which the papers do not guarantee.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cae_ray.config import SelectorConfig

# Keeps log(-log(u)) finite: torch.rand can return exactly 0.
_EPS = 1e-7


@dataclass(frozen=True)
class TemperatureSchedule:
    """Exponential annealing from ``start`` to ``end`` over ``total_steps`` optimizer steps."""

    start: float
    end: float
    total_steps: int

    def temperature_at(self, step: int) -> float:
        progress = min(step / max(self.total_steps - 1, 1), 1.0)
        return self.start * (self.end / self.start) ** progress


@dataclass(frozen=True)
class SelectionState:
    """What the logits say right now, without noise (temperature 1)."""

    mean_max: float
    """Mean over rows of the largest selection probability: 1.0 means fully converged."""
    min_max: float
    """The least converged row's largest probability."""
    distinct: int
    """How many different features the rows' argmaxes pick (K when there is no duplicate)."""


def gumbel_noise(shape: tuple[int, ...], *, device: torch.device) -> Tensor:
    # -log(-log(u)) from torch.rand is ~5x faster on CPU than Tensor.exponential_.
    u = torch.rand(shape, device=device).clamp_(_EPS, 1.0 - _EPS)
    return u.log_().neg_().log_().neg_()


class BaseConcreteSelector(nn.Module, ABC):
    """Shared forward pass; subclasses define :meth:`logits`."""

    def __init__(self, n_features: int, k: int, sampling: str) -> None:
        super().__init__()
        self.n_features, self.k, self.sampling = n_features, k, sampling

    @abstractmethod
    def logits(self) -> Tensor:
        """The K x N selection logits."""

    def forward(self, x: Tensor, temperature: float = 1.0) -> Tensor:
        logits = self.logits()
        if not self.training:
            return x[:, self.selected_indices(logits)]
        if self.sampling == "shared":
            noise = gumbel_noise(tuple(logits.shape), device=logits.device)
            weights = torch.softmax((logits + noise) / temperature, dim=-1)
            return x @ weights.T.to(x.dtype)
        noise = gumbel_noise((x.shape[0], *logits.shape), device=logits.device)
        weights = torch.softmax((logits + noise) / temperature, dim=-1)  # B x K x N
        return torch.bmm(weights.to(x.dtype), x.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def probabilities(self, logits: Tensor | None = None) -> Tensor:
        """Selection probabilities at temperature 1, K x N; each row sums to 1."""
        logits = self.logits() if logits is None else logits
        return torch.softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def selected_indices(self, logits: Tensor | None = None) -> Tensor:
        return distinct_selection(self.probabilities(logits)).indices

    @torch.no_grad()
    def state(self) -> SelectionState:
        probs = self.probabilities()
        top = probs.max(dim=-1)
        return SelectionState(
            mean_max=float(top.values.mean()),
            min_max=float(top.values.min()),
            distinct=int(torch.unique(top.indices).numel()),
        )


class ConcreteSelector(BaseConcreteSelector):
    """CAE: the K x N logits are free parameters."""

    def __init__(self, n_features: int, k: int, *, sampling: str = "shared") -> None:
        super().__init__(n_features, k, sampling)
        # Near-uniform start (like Keras' glorot_normal in the reference code).
        self.selection_logits = nn.Parameter(0.01 * torch.randn(k, n_features))

    def logits(self) -> Tensor:
        return self.selection_logits


class IndirectConcreteSelector(BaseConcreteSelector):
    """IP-CAE: logits = Psi @ W.T + b, with Psi (K x d) and one ``nn.Linear(d, N)``."""

    def __init__(
        self, n_features: int, k: int, *, dim_ip: int | None = None, sampling: str = "shared"
    ) -> None:
        super().__init__(n_features, k, sampling)
        self.dim_ip = dim_ip or n_features
        self.ip_vectors = nn.Parameter(torch.randn(k, self.dim_ip))
        # PyTorch's default init, as in the reference: logits start with std ~0.58.
        self.feature_map = nn.Linear(self.dim_ip, n_features)

    def logits(self) -> Tensor:
        return self.feature_map(self.ip_vectors)


def build_selector(config: SelectorConfig, n_features: int) -> BaseConcreteSelector:
    if config.method == "cae":
        return ConcreteSelector(n_features, config.k, sampling=config.sampling)
    return IndirectConcreteSelector(
        n_features, config.k, dim_ip=config.dim_ip, sampling=config.sampling
    )


@dataclass(frozen=True)
class DistinctSelection:
    indices: Tensor
    """K distinct feature indices, in selector-row order."""
    collisions: int
    """How many rows' argmax repeated another row's and had to take their next-best feature."""


def distinct_selection(probs: Tensor) -> DistinctSelection:
    """Give each selector row its own feature.

    Rows are served in order of confidence (largest probability first, ties by row index); each
    takes its most probable feature that no earlier row took. Without duplicates this is the
    plain argmax; with them the most confident claimant keeps the feature.
    """
    k, n = probs.shape
    if k > n:
        raise ValueError(f"cannot pick {k} distinct features out of {n}")
    argmax = probs.argmax(dim=-1)
    collisions = k - int(torch.unique(argmax).numel())
    if collisions == 0:
        return DistinctSelection(argmax, 0)
    order = torch.argsort(probs.max(dim=-1).values, descending=True, stable=True)
    available = probs.clone()
    chosen = torch.empty(k, dtype=torch.long, device=probs.device)
    for row in order.tolist():
        feature = int(available[row].argmax())
        chosen[row] = feature
        available[:, feature] = -math.inf
    return DistinctSelection(chosen, collisions)


def feature_scores(probs: Tensor) -> Tensor:
    """A score per feature in [0, 1]: its largest selection probability over the K rows."""
    return probs.max(dim=0).values
