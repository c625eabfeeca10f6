"""Selector training on Ray Train (V2): the per-worker function and the TorchTrainer driver.

Each worker rebuilds the typed config from a plain dict, reads its shard of the packed training
data, and runs THE loop (:mod:`cae_ray.loop`); around it this module adds only what a cluster
needs: DDP, a checkpoint per epoch, resume from the latest checkpoint, and metric reports.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cae_ray.batches import ShuffledWindows
from cae_ray.config import Config, ray_address
from cae_ray.errors import GpuUnavailableError, RayUnreachableError
from cae_ray.heads import ResolvedTask, SelectorModel, build_model, build_optimizer
from cae_ray.loop import Batch, EpochRecord, fit, unwrap

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
    import ray.train
    import ray.train.torch

    config = Config.model_validate(loop_config["config"])
    spec = TrainSpec(**loop_config["spec"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(spec.threads)

    torch.manual_seed(config.training.seed)  # identical initial weights on every rank
    model = ray.train.torch.prepare_model(
        build_model(config, spec.n_features, spec.task, spec.n_outputs)
    )
    optimizer = build_optimizer(unwrap(model), config, spec.task)
    local_dir = loop_config.get("local_checkpoint_dir")
    start_epoch, step, history = restore(unwrap(model), optimizer, local_dir)
    # Each rank (and each restart) draws its own Gumbel noise and batch order.
    torch.manual_seed(config.training.seed + 7919 * (rank + 1) + start_epoch)

    shard = ray.train.get_dataset_shard("train")
    t = config.training

    windows = shuffled_windows(config, spec.n_features, spec.task)

    def epoch_batches(epoch: int) -> Iterator[Batch]:
        return shard_batches(shard, windows, t.seed + epoch)

    steps_per_epoch = math.ceil(max(spec.n_train_rows // max(world, 1), 1) / t.batch_size)

    reporter = EpochReporter(
        rank, unwrap(model), optimizer, history, start_epoch, local_dir, loop_config["progress"]
    )

    def report(record: EpochRecord) -> None:
        reporter.epoch_done({**record.as_dict(), "loss": mean_over_ranks(record.loss)})

    fit(
        model,
        optimizer,
        epoch_batches,
        config=config,
        task=spec.task,
        steps_per_epoch=steps_per_epoch,
        device=ray.train.torch.get_device(),
        start_epoch=start_epoch,
        start_step=step,
        all_agree=_all_agree,
        on_epoch_end=report,
        autocast_bf16=config.scaling.bf16 and config.scaling.use_gpu,
    )
    reporter.finish()


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
    model: nn.Module, optimizer: torch.optim.Optimizer, local_dir: str | None
) -> tuple[int, int, list[dict[str, Any]]]:
    """Load the latest checkpoint if there is one: (next epoch, global step, history).

    Ray keeps checkpoints for worker groups; Train local mode (no workers) keeps none across
    driver restarts, so there we read our own copy in ``local_dir``.
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = _load_state(Path(directory))
    elif local_dir is not None and (Path(local_dir) / STATE_FILE).exists():
        state = _load_state(Path(local_dir))
    else:
        return 0, 0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    logger.info("resuming after epoch %d (step %d)", state["epoch"], state["step"])
    return state["epoch"] + 1, state["step"], state["history"]


def _load_state(directory: Path) -> dict[str, Any]:
    return dict(torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False))


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
        progress_file: str | None = None,
    ) -> None:
        self.rank, self.model, self.optimizer = rank, model, optimizer
        self.history, self.start_epoch, self.local_dir = history, start_epoch, local_dir
        self.progress_file = progress_file
        self.interval_s = float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2.0"))
        self._last = time.monotonic()
        self._reported: int | None = None

    def epoch_done(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.rank == 0 and self.progress_file is not None:
            write_progress(Path(self.progress_file), record)
        if _any_rank(time.monotonic() - self._last >= self.interval_s):
            self._report()

    def finish(self) -> None:
        """Report the last epoch if it was not yet (call on every rank after training)."""
        if self.history and self.history[-1]["epoch"] != self._reported:
            self._report()

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
        }
        self._last, self._reported = time.monotonic(), record["epoch"]
        if self.local_dir is not None:  # local mode: the checkpoint must outlive this call
            directory = Path(self.local_dir)
            directory.mkdir(parents=True, exist_ok=True)
            torch.save(state, directory / (STATE_FILE + ".partial"))
            os.replace(directory / (STATE_FILE + ".partial"), directory / STATE_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
            return
        with tempfile.TemporaryDirectory() as scratch:
            checkpoint = None
            if self.rank == 0:
                torch.save(state, Path(scratch) / STATE_FILE)
                checkpoint = ray.train.Checkpoint.from_directory(scratch)
            ray.train.report(metrics, checkpoint=checkpoint)


def write_progress(path: Path, record: dict[str, Any]) -> None:
    """The last epoch, for the driver's progress bar: a few bytes, replaced atomically. (Ray
    Train's reports go to its controller, not to the driver, and only every poll.)"""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".partial").write_text(json.dumps(record))
        os.replace(path.with_suffix(".partial"), path)
    except OSError as e:  # progress is a nicety: never fail training over it
        logger.debug("cannot write progress to %s: %s", path, e)


@contextmanager
def watching_progress(
    path: Path, on_progress: Callable[[dict[str, Any]], None] | None, every_s: float = 0.5
) -> Iterator[None]:
    """Call ``on_progress(record)`` from a background thread whenever ``path`` changes."""
    if on_progress is None:
        yield
        return
    path.unlink(missing_ok=True)  # a progress file from an earlier attempt is stale
    stop = threading.Event()

    def poll() -> None:
        seen = None
        while not stop.wait(every_s):
            try:
                text = path.read_text()
            except OSError:
                continue
            if text != seen:
                seen = text
                on_progress(json.loads(text))

    thread = threading.Thread(target=poll, name="cae-ray-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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


def run_trainer(
    config: Config,
    spec: TrainSpec,
    train_data: Any,
    storage: Path,
    name: str = "select",
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainOutcome:
    """Train the selector; the same ``storage``/``name`` resumes an earlier run.
    ``on_progress(epoch record)`` is called on the driver as epochs finish."""
    state, metrics = run_on_ray(
        train_loop_per_worker,
        {"spec": asdict(spec)},
        config,
        train_data,
        storage,
        name,
        on_progress,
    )
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
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    config: Config,
    train_data: Any,
    storage: Path,
    name: str,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``loop`` on the configured workers with ``TorchTrainer``; return the last
    checkpoint's state and the last reported metrics. ``loop_config`` gets the config and the
    progress file added (an :class:`EpochReporter` writes it; ``on_progress`` reads it)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    s = config.scaling
    storage = storage.resolve()  # Ray Train takes a relative storage path for a URI and fails
    progress = storage / name / PROGRESS_FILE
    loop_config = {
        **loop_config,
        "config": config.model_dump(mode="json"),
        "progress": str(progress) if on_progress else None,
    }
    if s.num_workers == 0:
        loop_config["local_checkpoint_dir"] = str(storage / name / "local_checkpoint")
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=s.num_workers,
            use_gpu=s.use_gpu,
            resources_per_worker=s.resources_per_worker,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=s.max_failures),
        ),
        datasets={"train": train_data},
        # Train replaces the dataset's execution options with its own defaults unless given
        # some: pass the dataset's, so the block order read_ordered pinned holds in the workers.
        dataset_config=DataConfig(execution_options=train_data.context.execution_options),
    )
    with watching_progress(progress, on_progress):
        result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as directory:
        state = _load_state(Path(directory))
    return state, dict(result.metrics or {})


def worker_threads(config: Config) -> int:
    """Torch threads per worker: its CPU share, so workers never oversubscribe the cores."""
    cpus = (config.scaling.resources_per_worker or {}).get("CPU", 1.0)
    if config.scaling.num_workers == 0:
        cpus = float(os.cpu_count() or 1)
    return max(1, int(cpus))


def connect(config: Config) -> None:
    """Join the configured Ray cluster (or ``RAY_ADDRESS``), else start a local one; fail fast
    when the address does not answer or GPUs are asked for and missing."""
    import ray

    if not ray.is_initialized():
        address = ray_address(config)
        if address and address != "auto":
            _probe(address)
        # Worker output (Ray Data's and Train's own chatter included) reaches the driver only
        # when our logging is verbose (`cae-ray -v`); the CLI shows its own progress.
        verbose = logging.getLogger("cae_ray").isEnabledFor(logging.INFO)
        try:
            ray.init(
                address=address,
                include_dashboard=False if not address else None,
                log_to_driver=verbose,
                logging_level=logging.INFO if verbose else logging.WARNING,
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RayUnreachableError(str(address), str(e).splitlines()[0]) from e
    _check_gpus(config)


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """A TCP connect to host:port, so a wrong address fails in seconds, not minutes."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"ray://{address}")
    if parts.hostname is None or parts.port is None:
        raise RayUnreachableError(address, "expected host:port or ray://host:port")
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=timeout_s).close()
    except OSError as e:
        raise RayUnreachableError(address, e.strerror or type(e).__name__) from e


def _check_gpus(config: Config) -> None:
    import ray

    s = config.scaling
    if not s.use_gpu:
        return
    if s.num_workers == 0:
        if not torch.cuda.is_available():
            raise GpuUnavailableError(1, 0)
        return
    per_worker = (s.resources_per_worker or {}).get("GPU", 1.0)
    available = float(ray.cluster_resources().get("GPU", 0.0))
    if available < per_worker * s.num_workers:
        raise GpuUnavailableError(per_worker * s.num_workers, available)
