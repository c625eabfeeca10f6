"""Training on Ray Train (V2): the one per-worker function and the TorchTrainer driver.

The selector (``select``) trains through :func:`train_loop_per_worker`: each worker rebuilds
the typed config from a plain dict, reads its shard of the packed training data, and runs THE
loop (:mod:`cae_ray.selector.loop`); around it this module adds only what a cluster needs: DDP, a
checkpoint per report, resume from the latest checkpoint, and metric reports.
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cae_ray import storage
from cae_ray.config import Config
from cae_ray.errors import CaeRayError
from cae_ray.runtime.batches import ShuffledWindows
from cae_ray.runtime.compat import worker_failures
from cae_ray.runtime.errors import CheckpointRejectedError, WorkersLostError
from cae_ray.runtime.progress import OnProgress, progress_every_s, watching_progress, write_progress
from cae_ray.runtime.signals import fit_interruptibly
from cae_ray.selector.loop import Batch, EpochRecord, SelectionObjective, fit
from cae_ray.selector.model import SelectorModel, build_model, build_optimizer
from cae_ray.selector.targets import ResolvedTask
from cae_ray.storage import join, ray_storage

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"


@dataclass(frozen=True)
class TrainSpec:
    """What a worker needs besides the config: shapes and sizes, never data."""

    n_features: int
    task: ResolvedTask
    n_outputs: int
    n_train_rows: int
    threads: int


# --- on each worker -----------------------------------------------------------------------------


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """THE per-worker function of the selector: DDP, resume from the latest checkpoint, this
    worker's shard, :func:`cae_ray.selector.loop.fit`, a checkpoint with each report."""
    import ray.train
    import ray.train.torch

    config = Config.model_validate(loop_config["config"])
    spec = TrainSpec(**loop_config["spec"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(spec.threads)

    inner, objective = _selector(config, spec, world)
    model = ray.train.torch.prepare_model(inner)
    optimizer = build_optimizer(inner, config, spec.task)
    local_dir, run = loop_config.get("local_checkpoint_dir"), loop_config["run"]
    start_epoch, step, history, noise = restore(inner, optimizer, local_dir, run)
    reporter = EpochReporter(
        rank, inner, optimizer, history, start_epoch, local_dir, run, loop_config["progress"]
    )
    # Each rank draws its own Gumbel noise. A resumed training takes up each rank's generator
    # where the checkpoint left it (the row order is a function of the epoch), so it goes on
    # exactly as the uninterrupted one would have: same losses, same selection.
    torch.manual_seed(config.training.seed + 7919 * (rank + 1) + start_epoch)
    resume_noise(noise, rank, world)
    shard = ray.train.get_dataset_shard("train")
    windows = shuffled_windows(config, spec.n_features, spec.task)

    def epoch_batches(epoch: int) -> Iterator[Batch]:
        return shard_batches(shard, windows, config.training.seed + epoch)

    fit(
        model,
        optimizer,
        epoch_batches,
        objective,
        device=ray.train.torch.get_device(),
        start_epoch=start_epoch,
        start_step=step,
        all_agree=_all_agree,
        on_epoch_end=lambda record: reporter.epoch_done(epoch_record(record)),
        autocast_bf16=config.scaling.bf16 and config.scaling.use_gpu,
    )
    reporter.finish()


def noise_states() -> list[dict[str, torch.Tensor]]:
    """Every rank's random generators (CPU, and CUDA where training on a GPU), in rank order:
    what a checkpoint needs for a resume to draw the noise an uninterrupted run would."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [state]
    states: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(states, state)
    return states


def resume_noise(states: list[dict[str, torch.Tensor]] | None, rank: int, world: int) -> None:
    """Put back this rank's generators from a checkpoint's :func:`noise_states` (one of as
    many workers: with another count the shards differ too, and the resume starts new noise)."""
    if not states or len(states) != world:
        return
    torch.set_rng_state(states[rank]["cpu"])
    if "cuda" in states[rank] and torch.cuda.is_available():
        torch.cuda.set_rng_state(states[rank]["cuda"])


def _selector(
    config: Config, spec: TrainSpec, world: int
) -> tuple[SelectorModel, SelectionObjective]:
    """The selector model, with the same initial weights on every rank, and its objective."""
    torch.manual_seed(config.training.seed)
    model = build_model(config, spec.n_features, spec.task, spec.n_outputs)
    rows_per_worker = max(spec.n_train_rows // max(world, 1), 1)
    steps_per_epoch = math.ceil(rows_per_worker / config.training.batch_size)
    return model, SelectionObjective(config, spec.task, steps_per_epoch)


def epoch_record(record: EpochRecord) -> dict[str, Any]:
    """What the history keeps of an epoch: its record, the loss averaged over ranks, and the
    torch threads this worker trained with (its CPU share: never more, on a shared node)."""
    return {**averaged_over_ranks(record.as_dict()), "threads": torch.get_num_threads()}


def averaged_over_ranks(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch record with its loss averaged over workers (each saw only its shard)."""
    return {**record, "loss": mean_over_ranks(record["loss"])}


def shuffled_windows(config: Config, n_features: int, task: ResolvedTask) -> ShuffledWindows:
    """A worker's shuffler, made once per run so its window buffers stay warm."""
    return ShuffledWindows(
        n_features,
        config.training.batch_size,
        with_target=task != "reconstruction",
        pin_memory=config.scaling.use_gpu,
    )


def shard_batches(shard: Any, windows: ShuffledWindows, seed: int) -> Iterator[Batch]:
    """One epoch of ``(x, y)`` batches from this worker's shard: windows of about 64 MB, each
    shuffled with a seed of (``seed``, the window), then cut into batches."""
    # Whole blocks, as Ray hands them over: the windows are cut (and copied) once, by us.
    return windows.epoch(shard.iter_batches(batch_size=None, batch_format="pyarrow"), seed)


def restore(
    model: nn.Module, optimizer: torch.optim.Optimizer, local_dir: str | None, run: str
) -> tuple[int, int, list[dict[str, Any]], list[dict[str, torch.Tensor]] | None]:
    """Load the latest checkpoint of training ``run`` if there is one: (next epoch, global
    step, history, each rank's generators). One made by another training (another config) is
    not resumed.

    Ray keeps checkpoints for worker groups; Train local mode (no workers) keeps none across
    driver restarts, so there we read our own copy in ``local_dir``.
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = _load_state(os.path.join(directory, STATE_FILE))
    elif local_dir is not None and storage.exists(join(local_dir, STATE_FILE)):
        state = _load_state(join(local_dir, STATE_FILE))
    else:
        return 0, 0, [], None
    if state.get("run") != run:
        logger.warning("not resuming a checkpoint of %s: this is %s", state.get("run"), run)
        return 0, 0, [], None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    logger.info("resuming after epoch %d (step %d)", state["epoch"], state["step"])
    return state["epoch"] + 1, state["step"], state["history"], state.get("noise")


def _load_state(where: str) -> dict[str, Any]:
    """A checkpoint's state: tensors and plain containers only (``weights_only``), so nothing in
    it runs; a run dir may be on storage that every pod of a cluster can write."""
    data = storage.read_bytes(where)
    assert data is not None, f"{where} vanished"
    try:
        return dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    except pickle.UnpicklingError as e:
        raise CheckpointRejectedError(where, str(e).splitlines()[0]) from e


class EpochReporter:
    """Keeps the epoch history and reports it to Ray Train with a checkpoint, as often as the
    controller collects reports and after the last epoch.

    A Train V2 worker hands each report to the controller through a queue of one, which the
    controller drains once per poll (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s by default):
    reporting every epoch made each short epoch wait up to a poll. Every rank must make the
    same reports (a report is a barrier), so the decision is agreed over ranks.
    """

    def __init__(
        self,
        rank: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        history: list[dict[str, Any]],
        start_epoch: int,
        local_dir: str | None,
        run: str,
        progress_file: str | None = None,
    ) -> None:
        self.rank, self.model, self.optimizer = rank, model, optimizer
        self.history, self.start_epoch, self.local_dir = history, start_epoch, local_dir
        self.run, self.progress_file = run, progress_file
        self.interval_s = float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2.0"))
        self._last = time.monotonic()
        self._reported: int | None = None
        self._progress_every_s = progress_every_s(progress_file) if progress_file else 0.0
        self._progress_at = -math.inf
        self._progress_epoch: int | None = None

    def epoch_done(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        self._write_progress(force=False)
        if _any_rank(time.monotonic() - self._last >= self.interval_s):
            self._report()

    def finish(self) -> None:
        """Report the last epoch if it was not yet (call on every rank after training)."""
        self._write_progress(force=True)
        if self.history and self.history[-1]["epoch"] != self._reported:
            self._report()

    def _write_progress(self, force: bool) -> None:
        """Rank 0 writes the last epoch to the progress file, at most every
        :func:`cae_ray.runtime.progress.progress_every_s` unless ``force``."""
        if self.rank != 0 or self.progress_file is None or not self.history:
            return
        record, now = self.history[-1], time.monotonic()
        due = now - self._progress_at >= self._progress_every_s
        if record["epoch"] != self._progress_epoch and (force or due):
            write_progress(self.progress_file, record)
            self._progress_at, self._progress_epoch = now, record["epoch"]

    def _report(self) -> None:
        """Every rank reports (it is a barrier); rank 0 attaches the checkpoint."""
        import ray.train

        record = self.history[-1]
        metrics = {**record, "start_epoch": self.start_epoch}
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": record["epoch"],
            "step": record["step"],
            "history": self.history,
            "noise": noise_states(),  # gathered from every rank: a report is a barrier
            "run": self.run,  # what it may resume: this training, not one of another config
        }
        self._last, self._reported = time.monotonic(), record["epoch"]
        if self.local_dir is not None:  # local mode: the checkpoint must outlive this call
            buffer = io.BytesIO()
            torch.save(state, buffer)
            storage.write_bytes(join(self.local_dir, STATE_FILE), buffer.getvalue())
            fs, path = storage.filesystem(self.local_dir)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint(path, filesystem=fs))
            return
        with tempfile.TemporaryDirectory() as scratch:
            checkpoint = None
            if self.rank == 0:
                torch.save(state, Path(scratch) / STATE_FILE)
                checkpoint = ray.train.Checkpoint.from_directory(scratch)
            ray.train.report(metrics, checkpoint=checkpoint)


def mean_over_ranks(value: float) -> float:
    """The epoch loss averaged over workers (each saw only its shard)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    total = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(total)
    return float(total.item()) / torch.distributed.get_world_size()


def _any_rank(wanted: bool) -> bool:
    """True on every rank when it is True on any (a no-op without a process group)."""
    return _agreed(wanted, "any")


def _all_agree(converged: bool) -> bool:
    """Stop only when every rank has converged (a no-op without a process group)."""
    return _agreed(converged, "all")


def _agreed(flag: bool, over: str) -> bool:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    value = torch.tensor([1 if flag else 0])
    op = torch.distributed.ReduceOp.MAX if over == "any" else torch.distributed.ReduceOp.MIN
    torch.distributed.all_reduce(value, op=op)
    return bool(value.item())


# --- on the driver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainOutcome:
    model: SelectorModel
    history: list[dict[str, Any]]
    converged: bool
    resumed_from_epoch: int
    """0 for a fresh run; the first epoch trained after a restart otherwise."""


def train_selector(
    config: Config,
    spec: TrainSpec,
    train_data: Any,
    storage_at: str,
    name: str,
    on_progress: OnProgress | None = None,
) -> TrainOutcome:
    """Train the selector; the same ``storage_at`` and ``name`` resume an earlier run.
    ``on_progress(epoch record)`` is called on the driver as epochs finish."""
    state, metrics = run_on_ray(config, spec, train_data, storage_at, name, on_progress)
    model = build_model(config, spec.n_features, spec.task, spec.n_outputs)
    model.load_state_dict(state["model"])
    history = state["history"]
    return TrainOutcome(
        model=model.eval(),
        history=history,
        converged=history[-1]["mean_max"] >= config.selector.convergence_threshold,
        resumed_from_epoch=int(metrics.get("start_epoch", 0)),
    )


def run_on_ray(
    config: Config,
    spec: TrainSpec,
    train_data: Any,
    storage_at: str,
    name: str,
    on_progress: OnProgress | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run :func:`train_loop_per_worker` on the configured workers with ``TorchTrainer``; return
    the last checkpoint's state and the last reported metrics. Progress reaches the driver
    through a small file (an :class:`EpochReporter` writes it; ``on_progress`` reads it)."""
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        RunConfig,
        ScalingConfig,
        TrainingFailedError,
    )
    from ray.train.torch import TorchConfig, TorchTrainer

    s = config.scaling
    progress = join(storage_at, name, PROGRESS_FILE)
    loop_config = {
        "spec": asdict(spec),
        "config": config.model_dump(mode="json"),
        "run": name,
        "progress": progress if on_progress else None,
    }
    if s.num_workers == 0:
        loop_config["local_checkpoint_dir"] = join(storage_at, name, "local_checkpoint")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=s.num_workers,
            use_gpu=s.use_gpu,
            resources_per_worker=s.resources_per_worker,
        ),
        run_config=RunConfig(
            name=name,
            **ray_storage(storage_at),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=s.max_failures),
        ),
        datasets={"train": train_data},
        # Train replaces the dataset's execution options with its own defaults unless given
        # some: pass the dataset's, so the block order read_ordered pinned holds in the workers.
        dataset_config=DataConfig(execution_options=train_data.context.execution_options),
    )
    with watching_progress(progress, on_progress):
        try:
            result = fit_interruptibly(trainer.fit)
        except TrainingFailedError as e:
            ours = _our_error(e)
            if ours is None:
                reason = str(e).strip().splitlines()[-1][:300]
                checkpoint = _last_checkpoint(join(storage_at, name))
                raise WorkersLostError(name, s.max_failures, reason, checkpoint) from e
            raise ours from e
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as directory:
        state = _load_state(os.path.join(directory, STATE_FILE))
    return state, dict(result.metrics or {})


def _last_checkpoint(training: str) -> str | None:
    """Where the newest checkpoint of a training lies (Ray names them by time), if any."""
    made = [d for d in storage.subdirectories(training) if d.startswith("checkpoint_")]
    return join(training, max(made)) if made else None


def _our_error(failure: BaseException) -> CaeRayError | None:
    """The cae-ray error behind a failed training (a worker raised it; Ray wraps it), if any:
    the driver reports it, with its exit code, instead of Ray's wrapper."""
    queue, seen = [failure], set()
    while queue:
        error = queue.pop(0)
        if isinstance(error, CaeRayError):
            return error
        seen.add(id(error))
        inner = [error.__cause__, error.__context__, getattr(error, "cause", None)]
        inner += worker_failures(error)
        inner.append(getattr(error, "controller_failure", None))
        queue += [e for e in inner if isinstance(e, BaseException) and id(e) not in seen]
    return None
