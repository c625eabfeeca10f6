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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cae_ray.config import SelectorConfig

# Keeps log(-log(u)) finite: torch.rand can return exactly 0.
_EPS = 1e-7

FULL_RANK_MAX_FEATURES = 2048
"""Automatic dim_ip: full rank (d = N, the paper's setting) up to this width, where the N x N
matrix W with its gradient and Adam state takes 64 MiB."""
LOW_RANK_DIM = 256
"""Automatic dim_ip above FULL_RANK_MAX_FEATURES. 64-512 select equally well on MNIST and on
wide synthetic tables (benchmarks/scale.py); 256 keeps the K x N logits of up to 256 selector
rows unrestricted (their rank is at most d + 1) at a quarter of 1,024's cost."""
CHUNK_VALUES = 1 << 21
"""``chunked`` sampling: Gumbel values drawn per chunk of rows (rows x K x N <= this; 8 MB)."""


def auto_dim_ip(n_features: int) -> int:
    """The IP width used when ``dim_ip`` is null: N up to 2,048 features, else 256."""
    return n_features if n_features <= FULL_RANK_MAX_FEATURES else LOW_RANK_DIM


def chunk_rows(k: int, n_features: int) -> int:
    """Rows per chunk for ``chunked`` sampling: at least one, at most CHUNK_VALUES values."""
    return max(1, CHUNK_VALUES // (k * n_features))


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


def gumbel_noise(
    shape: tuple[int, ...], *, device: torch.device, out: Tensor | None = None
) -> Tensor:
    """Gumbel(0, 1) noise of ``shape``, written into ``out`` when given (no allocation)."""
    # -log(-log(u)) from torch.rand is ~5x faster on CPU than Tensor.exponential_.
    u = torch.rand(shape, device=device, out=out).clamp_(_EPS, 1.0 - _EPS)
    return u.log_().neg_().log_().neg_()


def relaxed_sample(logits: Tensor, noise: Tensor, temperature: float) -> Tensor:
    """softmax((logits + noise) / T) over the last dim; ``noise`` is consumed (in place) so
    no second buffer of its size is allocated. Broadcasts K x N logits over leading dims."""
    return torch.softmax(noise.add_(logits).div_(temperature), dim=-1)


def mix_shared(logits: Tensor, x: Tensor, temperature: float) -> Tensor:
    """One Gumbel draw for the whole batch: B x K from a K x N sample."""
    noise = gumbel_noise(tuple(logits.shape), device=logits.device)
    weights = relaxed_sample(logits, noise, temperature)
    return x @ weights.T.to(x.dtype)


def mix_per_example(logits: Tensor, x: Tensor, temperature: float) -> Tensor:
    """One Gumbel draw per row: B x K from a B x K x N sample."""
    noise = gumbel_noise((x.shape[0], *logits.shape), device=logits.device)
    weights = relaxed_sample(logits, noise, temperature)
    return torch.bmm(weights.to(x.dtype), x.unsqueeze(-1)).squeeze(-1)


def mix_chunked(logits: Tensor, x: Tensor, temperature: float, rows: int) -> Tensor:
    """:func:`mix_per_example` computed ``rows`` rows at a time into one reused buffer.

    The sample is not kept for the backward pass: it is redrawn there from the RNG state saved
    at the start, so only one chunk's rows x K x N values ever exist. On CPU the draws (and so
    the result) equal :func:`mix_per_example`'s under the same seed."""
    return _ChunkedPerExample.apply(logits, x, temperature, rows)


def _sample_into(buffer: Tensor, logits: Tensor, temperature: float) -> Tensor:
    """Fill ``buffer`` (rows x K x N) with softmax((logits + Gumbel) / T), in place: the chunk
    loop allocates nothing of its size (fresh allocations of tens of MB per chunk fragment the
    C heap, and the process keeps growing)."""
    gumbel_noise(tuple(buffer.shape), device=buffer.device, out=buffer)
    buffer.add_(logits).div_(temperature)
    buffer.sub_(buffer.amax(dim=-1, keepdim=True)).exp_()
    return buffer.div_(buffer.sum(dim=-1, keepdim=True))


class _ChunkedPerExample(torch.autograd.Function):
    """u[b] = softmax((L + G[b]) / T) @ x[b] for chunks of rows; backward redraws G."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, x: Tensor, temperature: float, rows: int) -> Tensor:
        ctx.rng_state = _rng_state(logits.device)
        ctx.temperature, ctx.rows = temperature, rows
        logits = logits.detach().to(x.dtype)
        out = x.new_empty(x.shape[0], logits.shape[0])
        buffer = x.new_empty(min(rows, x.shape[0]), *logits.shape)
        # In x's precision even under bf16 autocast (which would also clash with out=).
        with torch.autocast(x.device.type, enabled=False):
            for start in range(0, x.shape[0], rows):
                chunk = x[start : start + rows]
                weights = _sample_into(buffer[: len(chunk)], logits, temperature)
                result = out[start : start + rows].unsqueeze(-1)
                torch.bmm(weights, chunk.unsqueeze(-1), out=result)
        ctx.save_for_backward(logits, x, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        logits, x, out = ctx.saved_tensors
        grad_out = grad_out.to(x.dtype)
        grad_logits = torch.zeros_like(logits)
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[1] else None
        buffer = x.new_empty(min(ctx.rows, x.shape[0]), *logits.shape)
        with (
            _replayed_rng(logits.device, ctx.rng_state),
            torch.autocast(x.device.type, enabled=False),
        ):
            for start in range(0, x.shape[0], ctx.rows):
                stop = start + ctx.rows
                chunk, g, u = x[start:stop], grad_out[start:stop], out[start:stop]
                weights = _sample_into(buffer[: len(chunk)], logits, ctx.temperature)
                if grad_x is not None:  # du[b,k]/dx[b,n] = w[b,k,n]
                    grad_x[start:stop] = torch.bmm(g.unsqueeze(1), weights).squeeze(1)
                # dL[k,n] = sum_b g[b,k] w[b,k,n] (x[b,n] - u[b,k]) / T, without a second buffer
                grad_logits -= torch.einsum("bk,bkn->kn", g * u, weights)
                grad_logits += torch.einsum("bk,bkn->kn", g, weights.mul_(chunk.unsqueeze(1)))
        return grad_logits.div_(ctx.temperature), grad_x, None, None


def _rng_state(device: torch.device) -> Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


@contextmanager
def _replayed_rng(device: torch.device, state: Tensor) -> Iterator[None]:
    """Draw from ``state`` inside the block; the global RNG is untouched afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if device.type == "cuda":
            torch.cuda.set_rng_state(state, device)
        else:
            torch.set_rng_state(state)
        yield


class BaseConcreteSelector(nn.Module, ABC):
    """Shared forward pass; subclasses define :meth:`logits`."""

    def __init__(self, n_features: int, rows: int, sampling: str) -> None:
        super().__init__()
        self.n_features, self.rows, self.sampling = n_features, rows, sampling

    @abstractmethod
    def logits(self) -> Tensor:
        """The rows x N selection logits."""

    def forward(self, x: Tensor, temperature: float = 1.0) -> Tensor:
        logits = self.logits()
        if not self.training:
            return x[:, self.selected_indices(logits)]
        if self.sampling == "shared":
            return mix_shared(logits, x, temperature)
        if self.sampling == "chunked":
            return mix_chunked(logits, x, temperature, chunk_rows(self.rows, self.n_features))
        return mix_per_example(logits, x, temperature)

    @torch.no_grad()
    def probabilities(self, logits: Tensor | None = None) -> Tensor:
        """Selection probabilities at temperature 1, rows x N; each row sums to 1."""
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

    def __init__(self, n_features: int, rows: int, *, sampling: str = "shared") -> None:
        super().__init__(n_features, rows, sampling)
        # Near-uniform start (like Keras' glorot_normal in the reference code).
        self.selection_logits = nn.Parameter(0.01 * torch.randn(rows, n_features))

    def logits(self) -> Tensor:
        return self.selection_logits


class IndirectConcreteSelector(BaseConcreteSelector):
    """IP-CAE: logits = Psi @ W.T + b, with Psi (rows x d) and one ``nn.Linear(d, N)``.

    ``dim_ip=None`` picks d with :func:`auto_dim_ip` (full rank up to 2,048 features)."""

    def __init__(
        self,
        n_features: int,
        rows: int,
        *,
        dim_ip: int | None = None,
        sampling: str = "shared",
    ) -> None:
        super().__init__(n_features, rows, sampling)
        self.dim_ip = dim_ip or auto_dim_ip(n_features)
        self.ip_vectors = nn.Parameter(torch.randn(rows, self.dim_ip))
        # PyTorch's default init, as in the reference: logits start with std ~0.58.
        self.feature_map = nn.Linear(self.dim_ip, n_features)

    def logits(self) -> Tensor:
        return self.feature_map(self.ip_vectors)


class EveryColumn(BaseConcreteSelector):
    """No selection at all: row i is feature i, so a head behind it sees every column as it is
    (:func:`cae_ray.selector.refine.whole_pool_rises`, on a pool of a few dozen columns)."""

    def __init__(self, n_features: int) -> None:
        super().__init__(n_features, n_features, "shared")
        # Logits only for the loop's progress figures: each row is sure of its own column.
        self.register_buffer("fixed_logits", 100.0 * torch.eye(n_features))

    def logits(self) -> Tensor:
        return self.get_buffer("fixed_logits")

    def forward(self, x: Tensor, temperature: float = 1.0) -> Tensor:
        return x


def build_selector(config: SelectorConfig, n_features: int, rows: int) -> BaseConcreteSelector:
    """The configured selector with ``rows`` selector rows (the user's k, or a search's more)."""
    if config.method == "cae":
        return ConcreteSelector(n_features, rows, sampling=config.sampling)
    return IndirectConcreteSelector(
        n_features, rows, dim_ip=config.dim_ip, sampling=config.sampling
    )


@dataclass(frozen=True)
class DistinctSelection:
    indices: Tensor
    """K distinct feature indices, in selector-row order."""
    collisions: int
    """How many rows' argmax repeated another row's and had to take their next-best feature."""


def distinct_selection(probs: Tensor) -> DistinctSelection:
    """Give each selector row its own feature.

    Every feature that is some row's argmax stays selected: the most confident of the rows
    that chose it keeps it (ties by row index). The rows that gave way then take, most
    confident first, their most probable feature that no row holds yet. (Serving all rows in
    one pass instead let a row that gave way take the argmax of a less confident row that had
    no rival: the demo lost a feature with one of the strongest class signals that way.)
    Without duplicates this is the plain argmax.
    """
    k, n = probs.shape
    if k > n:
        raise ValueError(f"cannot pick {k} distinct features out of {n}")
    argmax = probs.argmax(dim=-1)
    collisions = k - int(torch.unique(argmax).numel())
    if collisions == 0:
        return DistinctSelection(argmax, 0)
    order = torch.argsort(probs.max(dim=-1).values, descending=True, stable=True).tolist()
    chosen = argmax.clone()
    held: set[int] = set()
    gave_way = []
    for row in order:
        feature = int(argmax[row])
        if feature in held:
            gave_way.append(row)
        held.add(feature)
    available = probs.clone()
    available[:, sorted(held)] = -math.inf
    for row in gave_way:
        feature = int(available[row].argmax())
        chosen[row] = feature
        available[:, feature] = -math.inf
    return DistinctSelection(chosen, collisions)


def feature_scores(probs: Tensor) -> Tensor:
    """A score per feature in [0, 1]: its largest selection probability over the K rows."""
    return probs.max(dim=0).values


def converged(confident: bool, collisions: int) -> bool:
    """A converged selection: its rows are confident (mean max probability at the threshold)
    and chose K distinct features, so no pick had to give way (``collisions`` is 0)."""
    return confident and collisions == 0
