"""Shared fixtures. Heavy imports stay inside fixtures so collection stays fast."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def digits() -> tuple:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype("float32"), y


# Ray reads these at start-up; set them before any test starts a cluster (see notes in README).
RAY_TEST_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "1",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "30",
}


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (4 logical CPUs, 1 GiB object store), temp files in our dir."""
    import os
    import shutil
    import tempfile

    os.environ.update(RAY_TEST_ENV)
    os.environ.pop("RAY_ADDRESS", None)
    import ray

    # Short path: Ray's Unix sockets live under it and have a length limit.
    temp_dir = tempfile.mkdtemp(prefix="cr-", dir="/tmp")
    ray.init(
        num_cpus=4,
        object_store_memory=1 << 30,
        include_dashboard=False,
        _temp_dir=temp_dir,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def wide_dataset(tmp_path_factory) -> tuple[Path, list[str]]:
    """3,000 rows x 200 features in 2 Parquet files; 10 informative columns; label; id."""
    from tests.wide_data import write_wide_parquet

    directory = tmp_path_factory.mktemp("wide")
    informative = write_wide_parquet(directory, rows=3000, features=200, informative=10)
    return directory, informative
