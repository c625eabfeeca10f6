"""THE training loop, pure PyTorch over any iterable of (x, y) batches.

The in-memory estimator and cae_ray.refine feed it tensors through ``fit_in_memory``; the Ray
worker feeds it its dataset shard and adds checkpoints and reporting through ``on_epoch_end``;
validation trains its models through it too. There is no second copy.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from cae_ray.config import Config
from cae_ray.errors import TrainingDivergedError
from cae_ray.heads import ResolvedTask, SelectorModel, build_optimizer, task_loss
from cae_ray.selectors import TemperatureSchedule

logger = logging.getLogger(__name__)
CPU = torch.device("cpu")

Batch = tuple[Tensor, Tensor | None]


@dataclass(frozen=True)
class EpochRecord:
    """Metrics of one finished epoch."""

    epoch: int
    step: int
    """Optimizer steps done so far, over all epochs."""
    loss: float
    """Mean training loss over the epoch's rows."""
    temperature: float
    """Temperature at the epoch's last step."""
    mean_max: float
    min_max: float
    distinct: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoopResult:
    history: list[EpochRecord] = field(default_factory=list)
    converged: bool = False
    step: int = 0


def unwrap(model: nn.Module) -> SelectorModel:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    inner = getattr(model, "module", model)
    assert isinstance(inner, SelectorModel)
    return inner


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    loss_at: Callable[[Tensor, Tensor | None, int], Tensor],
    *,
    step: int,
    device: torch.device,
    autocast_bf16: bool = False,
) -> tuple[Tensor, int]:
    """One pass over ``batches``; returns (mean loss over rows, global step after the pass).

    ``loss_at(x, y, step)`` runs the model and returns its loss: a scalar, or one loss per
    independent model (validation trains several heads at once; their sum is minimised).
    """
    model.train()
    total = torch.zeros((), device=device)
    rows = 0
    for x, y in batches:
        x = x.to(device, non_blocking=True)
        y = None if y is None else y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            loss = loss_at(x, y, step)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        # Accumulate on the device: a .item() per step would synchronise every step.
        total = total + loss.detach().float() * x.shape[0]
        rows += x.shape[0]
        step += 1
    return total.cpu() / max(rows, 1), step


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch_batches: Callable[[int], Iterable[Batch]],
    *,
    config: Config,
    task: ResolvedTask,
    steps_per_epoch: int,
    device: torch.device,
    start_epoch: int = 0,
    start_step: int = 0,
    all_agree: Callable[[bool], bool] = lambda converged: converged,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    autocast_bf16: bool = False,
) -> LoopResult:
    """Train from ``start_epoch`` up to ``config.training.epochs``; with
    ``config.selector.early_stop``, stop once the selection has converged. The temperature
    anneals over ``epochs * steps_per_epoch`` steps.

    ``epoch_batches(epoch)`` yields that epoch's batches. ``all_agree`` turns this process's
    "converged?" into a decision every worker shares (identity when training alone).
    ``autocast_bf16`` runs the forward pass in bfloat16 (for GPUs; the loss stays float32).
    """
    selector = unwrap(model).selector
    s, epochs = config.selector, config.training.epochs
    schedule = TemperatureSchedule(s.start_temperature, s.end_temperature, epochs * steps_per_epoch)
    result = LoopResult(step=start_step)

    def loss_at(x: Tensor, y: Tensor | None, step: int) -> Tensor:
        # The loss in float32 even when the forward pass ran in bfloat16.
        return task_loss(task, model(x, schedule.temperature_at(step)).float(), x, y)

    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        mean_loss, result.step = train_epoch(
            model,
            optimizer,
            epoch_batches(epoch),
            loss_at,
            step=result.step,
            device=device,
            autocast_bf16=autocast_bf16,
        )
        loss = float(mean_loss)
        if not math.isfinite(loss):
            raise TrainingDivergedError(epoch, loss)
        state = selector.state()
        record = EpochRecord(
            epoch=epoch,
            step=result.step,
            loss=loss,
            temperature=schedule.temperature_at(max(result.step - 1, 0)),
            mean_max=state.mean_max,
            min_max=state.min_max,
            distinct=state.distinct,
            seconds=time.perf_counter() - started,
        )
        result.history.append(record)
        logger.info(
            "epoch %d: loss %.5f, temperature %.4f, mean max prob %.4f, %d distinct",
            epoch,
            loss,
            record.temperature,
            state.mean_max,
            state.distinct,
        )
        if on_epoch_end is not None:
            on_epoch_end(record)
        result.converged = state.mean_max >= s.convergence_threshold
        if s.early_stop and all_agree(result.converged):
            break
    return result


def fit_in_memory(
    model: SelectorModel,
    config: Config,
    task: ResolvedTask,
    x: Tensor,
    y: Tensor | None,
    device: torch.device = CPU,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> LoopResult:
    """Train on in-memory tensors for up to ``training.epochs`` epochs (early stop as
    configured), one shuffled pass per epoch."""
    t = config.training
    order = torch.Generator().manual_seed(t.seed)

    def epoch_batches(epoch: int) -> Iterator[Batch]:
        permutation = torch.randperm(x.shape[0], generator=order)
        for start in range(0, x.shape[0], t.batch_size):
            rows = permutation[start : start + t.batch_size]
            yield x[rows], None if y is None else y[rows]

    return fit(
        model.to(device),
        build_optimizer(model, config, task),
        epoch_batches,
        config=config,
        task=task,
        steps_per_epoch=-(-x.shape[0] // t.batch_size),
        device=device,
        on_epoch_end=on_epoch_end,
    )
