"""Shared fixtures. Heavy imports stay inside fixtures so collection stays fast."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """Airflow writes airflow.cfg (and its logs, its SQLite db) under AIRFLOW_HOME, ~/airflow by
    default, as soon as it is imported: give this session's a temp dir, removed at the end."""
    if "AIRFLOW_HOME" not in os.environ:
        home = tempfile.mkdtemp(prefix="cr-airflow-")
        config.stash[AIRFLOW_HOME] = home
        os.environ["AIRFLOW_HOME"] = home
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    fast_feast_imports(config)


def fast_feast_imports(config: pytest.Config) -> None:
    """Run the processes the tests start (`cae-ray`, `feast`, Ray's workers) under -O.

    Feast wraps its classes in typeguard's @typechecked, which re-parses and recompiles their
    source at every import: about 7 of the 14 s `import feast` takes on 2 cores, in every
    `cae-ray` and `feast` command a test runs. Under -O typeguard leaves them as they are
    (docs/development.md). The -O bytecode goes to a cache of this session's, so no repo or venv
    gets a __pycache__ it did not have. Asserts in a child's code are stripped: cae_ray's are
    type narrowing only, and the tests' own scripts raise instead."""
    if "PYTHONOPTIMIZE" in os.environ:
        return
    cache = tempfile.mkdtemp(prefix="cr-pyc-")
    config.stash[PYCACHE] = cache
    os.environ.update(PYTHONOPTIMIZE="1", PYTHONPYCACHEPREFIX=cache)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    for key in (AIRFLOW_HOME, PYCACHE):
        made = config.stash.get(key, None)
        if made:
            shutil.rmtree(made, ignore_errors=True)


AIRFLOW_HOME = pytest.StashKey[str]()
PYCACHE = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def digits() -> tuple:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype("float32"), y


# Ray reads these at start-up; set them before any test starts a cluster (docs/development.md).
RAY_TEST_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "1",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "30",
    # Ray before 2.5x's ray-project/ray#62492 blanks CUDA_VISIBLE_DEVICES for tasks without
    # GPUs and warns at every ray.init that it will stop: both ends behave as the newest here.
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (4 logical CPUs, 1 GiB object store), temp files in our dir."""
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


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory) -> Path:
    from tests.wide_data import write_wide_parquet

    directory = tmp_path_factory.mktemp("tiny")
    write_wide_parquet(directory, rows=600, features=30, informative=5)
    return directory


@pytest.fixture
def small_disk(tmp_path) -> Iterator[tuple[Path, Callable[..., Path]]]:
    """A 16 MiB tmpfs (a real file system that fills up), and ``fill(leave=0)``, which fills
    it up to ``leave`` bytes (rounded to its pages) and returns the filler file."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {mounted.stderr.decode().strip()}")

    def fill(leave: int = 0) -> Path:
        filler = mount / "filler"
        try:
            with filler.open("ab", buffering=0) as handle:
                while True:
                    handle.write(b"\0" * 65536)
        except OSError:
            pass  # ENOSPC: full
        if leave:
            os.truncate(filler, max(filler.stat().st_size - leave, 0))
        return filler

    yield mount, fill
    subprocess.run(["umount", "-l", str(mount)], check=False)


def free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def job_server() -> Iterator[str]:
    """A Ray head with its dashboard (the job server), started by `ray start` in a process
    group of its own. Every port is a free one: the default ports (the dashboard agent's 52365,
    say) may be held by another Ray on this machine, and a job server whose agent cannot bind
    answers every submission with "No available agent"."""
    pytest.importorskip("aiohttp", reason="the Ray job server needs ray[default] (aiohttp)")
    pytest.importorskip("ray.dashboard.modules.job.job_head", reason="needs ray[default]")
    from ray.job_submission import JobSubmissionClient

    gcs, dashboard, agent, agent_grpc, runtime_env, metrics, client = free_ports(7)
    with tempfile.TemporaryDirectory(prefix="crs-", dir="/tmp") as ray_tmp:
        env = {**os.environ, **RAY_TEST_ENV, "RAY_TMPDIR": ray_tmp}
        env.pop("RAY_ADDRESS", None)
        ray_cli = str(Path(sys.executable).parent / "ray")
        command = [ray_cli, "start", "--head", "--block", "--num-cpus=2", f"--temp-dir={ray_tmp}"]
        command += ["--include-dashboard=true", "--dashboard-host=127.0.0.1"]
        command += [f"--port={gcs}", f"--dashboard-port={dashboard}"]
        command += [f"--dashboard-agent-listen-port={agent}"]
        command += [f"--dashboard-agent-grpc-port={agent_grpc}"]
        command += [f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}"]
        command += [f"--ray-client-server-port={client}"]
        server = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        address = f"http://127.0.0.1:{dashboard}"
        try:
            deadline = time.monotonic() + 120
            while True:
                assert server.poll() is None, "`ray start` exited"
                try:
                    JobSubmissionClient(address).list_jobs()
                    break
                except Exception:
                    assert time.monotonic() < deadline, f"no job server at {address} in 120 s"
                    time.sleep(1.0)
            yield address
        finally:
            stop_process_group(server)


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to the group, then SIGKILL after 5 s: `ray start --block` can take a minute
    to wind down on SIGTERM, and every Ray process it started is in its group."""
    import signal

    os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):  # what is left of the group (raylet, workers)
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
