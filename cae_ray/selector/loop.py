"""THE training loop, pure PyTorch over any iterable of (x, y) batches.

:func:`fit` runs epochs of :func:`train_epoch` for an *objective*: the selector's
(:class:`SelectionObjective`: annealed temperature, stop at convergence, here) or a model's with
early stopping on held-out rows (the validation gate's ``mlp``, :mod:`cae_ray.gate.mlp`). The
in-memory estimator and :mod:`cae_ray.selector.refine` feed it tensors through
:func:`fit_in_memory`; the Ray worker (:mod:`cae_ray.runtime.train`) feeds it its dataset shard
and adds checkpoints and reporting through ``on_epoch_end``. There is no second copy.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import torch
from torch import Tensor, nn

from cae_ray.config import Config
from cae_ray.selector.concrete import BaseConcreteSelector, TemperatureSchedule
from cae_ray.selector.errors import TrainingDivergedError
from cae_ray.selector.model import SelectorModel, build_optimizer, task_loss
from cae_ray.selector.targets import ResolvedTask

logger = logging.getLogger(__name__)
CPU = torch.device("cpu")

Batch = tuple[Tensor, Tensor | None]


@dataclass(frozen=True)
class EpochRecord:
    """Metrics of one finished epoch of the selector."""

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


R = TypeVar("R")
"""An epoch's record: :class:`EpochRecord` here, the gate mlp's own in :mod:`cae_ray.gate.mlp`."""


class Objective(Protocol[R]):
    """What one training optimises and watches; :func:`fit` is the same loop for all."""

    epochs: int
    early_stop: bool

    def loss_at(self, model: nn.Module, x: Tensor, y: Tensor | None, step: int) -> Tensor:
        """The batch's loss, a scalar."""
        ...

    def epoch_done(
        self, model: nn.Module, epoch: int, step: int, loss: Tensor, seconds: float
    ) -> R: ...

    def converged(self, record: R) -> bool: ...


@dataclass
class LoopResult(Generic[R]):
    history: list[R] = field(default_factory=list)
    converged: bool = False
    step: int = 0


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    inner: nn.Module = getattr(model, "module", model)
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

    ``loss_at(x, y, step)`` runs the model and returns its (scalar) loss.
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
        loss.backward()
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
    objective: Objective[R],
    *,
    device: torch.device,
    start_epoch: int = 0,
    start_step: int = 0,
    all_agree: Callable[[bool], bool] = lambda converged: converged,
    on_epoch_end: Callable[[R], None] | None = None,
    autocast_bf16: bool = False,
) -> LoopResult[R]:
    """Train from ``start_epoch`` up to ``objective.epochs``; with ``objective.early_stop``,
    stop once it has converged.

    ``epoch_batches(epoch)`` yields that epoch's batches. ``all_agree`` turns this process's
    "converged?" into a decision every worker shares (identity when training alone).
    ``autocast_bf16`` runs the forward pass in bfloat16 (for GPUs; the loss stays float32).
    """
    result: LoopResult[R] = LoopResult(step=start_step)

    def loss_at(x: Tensor, y: Tensor | None, step: int) -> Tensor:
        return objective.loss_at(model, x, y, step)

    for epoch in range(start_epoch, objective.epochs):
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
        seconds = time.perf_counter() - started
        record = objective.epoch_done(model, epoch, result.step, mean_loss, seconds)
        result.history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(record)
        result.converged = objective.converged(record)
        if objective.early_stop and all_agree(result.converged):
            break
    return result


class SelectionObjective:
    """The selector's: the task's loss through a Gumbel-softmax whose temperature anneals over
    ``epochs * steps_per_epoch`` steps; converged when the selection is sure enough."""

    def __init__(self, config: Config, task: ResolvedTask, steps_per_epoch: int) -> None:
        s = config.selector
        self.task, self.epochs, self.early_stop = task, config.training.epochs, s.early_stop
        self.threshold = s.convergence_threshold
        total_steps = self.epochs * steps_per_epoch
        self.schedule = TemperatureSchedule(s.start_temperature, s.end_temperature, total_steps)

    def loss_at(self, model: nn.Module, x: Tensor, y: Tensor | None, step: int) -> Tensor:
        # The loss in float32 even when the forward pass ran in bfloat16.
        output = model(x, self.schedule.temperature_at(step)).float()
        return task_loss(self.task, output, x, y)

    def epoch_done(
        self, model: nn.Module, epoch: int, step: int, loss: Tensor, seconds: float
    ) -> EpochRecord:
        value = float(loss)
        if not math.isfinite(value):
            raise TrainingDivergedError(epoch, value)
        selector = unwrap(model).selector
        assert isinstance(selector, BaseConcreteSelector)
        state = selector.state()
        record = EpochRecord(
            epoch=epoch,
            step=step,
            loss=value,
            temperature=self.schedule.temperature_at(max(step - 1, 0)),
            mean_max=state.mean_max,
            min_max=state.min_max,
            distinct=state.distinct,
            seconds=seconds,
        )
        logger.info(
            "epoch %d: loss %.5f, temperature %.4f, mean max prob %.4f, %d distinct",
            epoch,
            value,
            record.temperature,
            state.mean_max,
            state.distinct,
        )
        return record

    def converged(self, record: EpochRecord) -> bool:
        return record.mean_max >= self.threshold


def fit_in_memory(
    model: SelectorModel,
    config: Config,
    task: ResolvedTask,
    x: Tensor,
    y: Tensor | None,
    device: torch.device = CPU,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> LoopResult[EpochRecord]:
    """Train on in-memory tensors for up to ``training.epochs`` epochs (early stop as
    configured), one shuffled pass per epoch."""
    t = config.training
    order = torch.Generator().manual_seed(t.seed)

    def epoch_batches(epoch: int) -> Iterator[Batch]:
        permutation = torch.randperm(x.shape[0], generator=order)
        for start in range(0, x.shape[0], t.batch_size):
            rows = permutation[start : start + t.batch_size]
            yield x[rows], None if y is None else y[rows]

    steps_per_epoch = -(-x.shape[0] // t.batch_size)
    return fit(
        model.to(device),
        build_optimizer(model, config, task),
        epoch_batches,
        SelectionObjective(config, task, steps_per_epoch),
        device=device,
        on_epoch_end=on_epoch_end,
    )
