"""How much memory training will take, and a refusal before it starts when that cannot fit.

The estimate counts what grows with the data's width N, the batch B and the selector rows K:

- parameters (exact: the model is built on PyTorch's ``meta`` device, which allocates nothing),
  their gradients, Adam's two moments and the temporary of its step;
- the Gumbel samples: a few K x N buffers with ``shared`` sampling, three B x K x N buffers
  with ``per_example`` (the softmax kept for backward, its gradient, and the gradient of its
  input), two chunk x K x N buffers with ``chunked``;
- activations: the batch, the head's hidden layers and outputs, and their gradients.

It leaves out the Python/torch runtime, which is already resident when the check runs (the limit
is measured then). ``tests/test_scale.py`` holds it against a measured peak.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from cae_ray.config import Config, ray_address
from cae_ray.selector.concrete import auto_dim_ip, chunk_rows
from cae_ray.selector.errors import MemoryBudgetError
from cae_ray.selector.model import build_model
from cae_ray.selector.targets import ResolvedTask

FLOAT = 4  # bytes of a float32
SAMPLE_COPIES = 3
"""Live buffers of the sample's size at the peak of the backward pass (see module docstring)."""
LIMIT_SHARE_OF_AVAILABLE = 0.9
"""Without training.memory_limit_gb, training may use this share of the available memory."""
GB = 1e9


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes training needs on one machine, by kind."""

    parameters: int
    gradients: int
    optimizer: int
    """Adam's two moments, and the temporary its multi-tensor step allocates (sqrt of the
    second moment)."""
    samples: int
    """Gumbel noise, relaxed samples and their gradients."""
    activations: int
    """The batch, the head's activations and the gradients flowing back through them."""

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def describe(self) -> str:
        """E.g. ``2.10 GB (parameters 0.52 GB, gradients 0.52 GB, ...)``."""
        parts = ", ".join(f"{_LABELS[f.name]} {_gb(getattr(self, f.name))}" for f in fields(self))
        return f"{_gb(self.total)} ({parts})"


_LABELS = {
    "parameters": "parameters",
    "gradients": "gradients",
    "optimizer": "Adam state",
    "samples": "Gumbel samples",
    "activations": "activations",
}


def estimate_memory(
    config: Config, n_features: int, task: ResolvedTask, n_outputs: int, *, workers: int = 1
) -> MemoryEstimate:
    """The memory ``workers`` training processes on one machine need for this config.

    With several workers each holds a model replica, and DDP one more copy of the gradients
    (its all-reduce buckets). For ``k: auto``, the search's model (``k_max`` rows)."""
    config = config.model_copy(update={"selector": config.selector.for_search(n_features)})
    with torch.device("meta"):
        model = build_model(config, n_features, task, n_outputs)
    params = sum(p.numel() for p in model.parameters()) * FLOAT
    rows = model.selector.rows  # k, or the supervised search's spare rows
    batch = config.training.batch_size
    per_worker = MemoryEstimate(
        parameters=params,
        gradients=params * (2 if workers > 1 else 1),
        optimizer=3 * params,
        samples=_sample_bytes(config.selector.sampling, batch, rows, n_features),
        activations=_activation_bytes(config, batch, rows, n_features, task, n_outputs),
    )
    return MemoryEstimate(*(getattr(per_worker, f.name) * workers for f in fields(per_worker)))


def _sample_bytes(sampling: str, batch: int, rows: int, n_features: int) -> int:
    plane = rows * n_features * FLOAT  # one K x N buffer
    # The logits and their gradient are always there, whatever the sampling.
    if sampling == "shared":
        return (2 + SAMPLE_COPIES) * plane
    if sampling == "chunked":  # one reused chunk buffer, and einsum's copy of it in backward
        return (2 + 2 * min(batch, chunk_rows(rows, n_features))) * plane
    return (2 + SAMPLE_COPIES * batch) * plane


def _activation_bytes(
    config: Config, batch: int, rows: int, n_features: int, task: ResolvedTask, n_outputs: int
) -> int:
    outputs = n_features if task == "reconstruction" else n_outputs
    # Per hidden layer: Linear, LayerNorm and LeakyReLU outputs and their gradient.
    hidden = 6 * sum(config.head.hidden)
    # The batch and its gathered copy; the selected features and their gradient; the output,
    # the loss's difference and the output's gradient.
    values = 2 * n_features + 2 * rows + hidden + 3 * outputs
    return batch * values * FLOAT


# --- the limit ---------------------------------------------------------------------------------


def available_memory() -> int:
    """Bytes this process can still allocate: what the OS reports available, capped by a cgroup
    limit if any (psutil does not know containers' limits)."""
    import psutil

    available = int(psutil.virtual_memory().available)
    cgroup = _cgroup_room()
    return min(available, cgroup) if cgroup is not None else available


def _cgroup_room() -> int | None:
    """cgroup v2 limit minus usage, when the process runs in a memory-limited container."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((base / "memory.current").read_text()), 0)
    except (OSError, ValueError):
        return None


def memory_limit(config: Config) -> tuple[int, str]:
    """(bytes training may use, where that figure comes from)."""
    if config.training.memory_limit_gb is not None:
        return int(config.training.memory_limit_gb * GB), "training.memory_limit_gb"
    share = LIMIT_SHARE_OF_AVAILABLE
    return int(share * available_memory()), f"{share:.0%} of the memory available now"


# --- the check ---------------------------------------------------------------------------------


def check_memory(
    config: Config, n_features: int, task: ResolvedTask, n_outputs: int, *, workers: int = 1
) -> MemoryEstimate:
    """Estimate the memory of training and refuse (:class:`MemoryBudgetError`) if it exceeds
    the limit; the error names the setting to change and a value that fits."""
    estimate = estimate_memory(config, n_features, task, n_outputs, workers=workers)
    limit, source = memory_limit(config)
    if estimate.total <= limit:
        return estimate
    setting, value, fixed = suggest_fix(config, n_features, task, n_outputs, workers, limit)
    raise MemoryBudgetError(estimate.describe(), _gb(limit), source, setting, value, fixed)


def check_memory_for_ray(
    config: Config, n_features: int, task: ResolvedTask, n_outputs: int
) -> MemoryEstimate | None:
    """:func:`check_memory` for Ray Train workers, run on the driver before they start.

    On a local cluster all workers share this machine, so their sum is checked against its free
    memory. On a remote cluster this machine's memory says nothing about the workers': one
    worker is checked, and only against an explicit ``training.memory_limit_gb``."""
    if ray_address(config) is None:  # a local cluster
        workers = max(1, config.scaling.num_workers)
        return check_memory(config, n_features, task, n_outputs, workers=workers)
    if config.training.memory_limit_gb is not None:
        return check_memory(config, n_features, task, n_outputs, workers=1)
    return None


def suggest_fix(
    config: Config,
    n_features: int,
    task: ResolvedTask,
    n_outputs: int,
    workers: int,
    limit: int,
) -> tuple[str, str, str]:
    """(setting, value, the estimate with it) for the first change that fits, trying the
    biggest cost first; ("", "", "") when none of them is enough."""
    for section, key, values in _candidates(config, n_features):
        for value in values:
            changed = config.model_copy(
                update={
                    section: getattr(config, section).model_copy(update={key: value}),
                }
            )
            estimate = estimate_memory(changed, n_features, task, n_outputs, workers=workers)
            if estimate.total <= limit:
                return f"{section}.{key}", str(value), _gb(estimate.total)
    return "", "", ""


def _candidates(config: Config, n_features: int) -> list[tuple[str, str, list[object]]]:
    """Settings that shrink the estimate, most effective first, each with values to try."""
    s, t = config.selector, config.training
    found: list[tuple[str, str, list[object]]] = []
    if s.sampling == "per_example":
        found.append(("selector", "sampling", ["chunked", "shared"]))
    if s.method == "ipcae":
        dims = [
            d for d in (1024, 512, 256, 128, 64, 32) if d < (s.dim_ip or auto_dim_ip(n_features))
        ]
        found.append(("selector", "dim_ip", list(dims)))
    batches = [b for b in (512, 256, 128, 64, 32, 16) if b < t.batch_size]
    found.append(("training", "batch_size", list(batches)))
    return found


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / GB:.2f} GB"
