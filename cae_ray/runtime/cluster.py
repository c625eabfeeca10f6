"""The Ray cluster a run uses: joining it (or starting a local one), failing fast when it does
not answer or lacks the GPUs asked for, each worker's CPU share, and the object store cache.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from cae_ray.config import Config, ray_address
from cae_ray.runtime import signals
from cae_ray.runtime.data import split_files
from cae_ray.runtime.errors import GpuUnavailableError, RayUnreachableError
from cae_ray.versions import warn_if_untested

logger = logging.getLogger(__name__)


def worker_threads(config: Config) -> int:
    """Torch threads per worker: its CPU share, so workers never oversubscribe the cores."""
    cpus = (config.scaling.resources_per_worker or {}).get("CPU", 1.0)
    if config.scaling.num_workers == 0:
        cpus = float(os.cpu_count() or 1)
    return max(1, int(cpus))


def ray_log_level() -> int:
    """Ray's own log level, from cae-ray's: Ray's lines show from INFO on (``-v``); at
    cae-ray's default, WARNING, only Ray's errors do. Ray warns about itself (its token
    authentication, its own deprecations) in every run, which says nothing about the run."""
    ours = logging.getLogger("cae_ray").getEffectiveLevel()
    return ours if ours <= logging.INFO else max(ours, logging.ERROR)


def connect(config: Config) -> None:
    """Join the configured Ray cluster (or ``RAY_ADDRESS``), else start a local one; fail fast
    when the address does not answer or GPUs are asked for and missing."""
    import ray

    warn_if_untested("ray")
    if not ray.is_initialized():
        address = ray_address(config)
        if address and address != "auto":
            _probe(address)
        # Worker output (Ray Data's and Train's own chatter included) reaches the driver only
        # when our logging is verbose (`cae-ray -v`); the CLI shows its own progress.
        level = ray_log_level()
        try:
            ray.init(
                address=address,
                include_dashboard=False if not address else None,
                log_to_driver=level <= logging.INFO,
                logging_level=level,
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RayUnreachableError(str(address), str(e).splitlines()[0]) from e
        signals.reinstall()  # ray.init installed Ray's SIGTERM handler, which aborts
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
        import torch

        if not torch.cuda.is_available():
            raise GpuUnavailableError(1, 0)
        return
    per_worker = (s.resources_per_worker or {}).get("GPU", 1.0)
    available = float(ray.cluster_resources().get("GPU", 0.0))
    if available < per_worker * s.num_workers:
        raise GpuUnavailableError(per_worker * s.num_workers, available)


def cached(config: Config, dataset: Any, path: str) -> Any:
    """The dataset, materialized in the object store when ``scaling.cache_train_split`` says so:
    Ray Data then skips the Parquet read (and its start-up) on every later epoch."""
    import ray

    policy = config.scaling.cache_train_split
    size = sum(split_files(path).values())
    room = float(ray.cluster_resources().get("object_store_memory", 0.0)) / 2
    if policy == "always" or (policy == "auto" and size <= room):
        logger.info("caching the train split (%.0f MB) in the object store", size / 1e6)
        return dataset.materialize()
    return dataset
