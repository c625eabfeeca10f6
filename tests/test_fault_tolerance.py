"""A run survives a SIGKILLed worker (resumes from its checkpoint) and a SIGTERMed driver."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from cae_ray.config import load_config
from cae_ray.pipeline import select
from tests.conftest import RAY_TEST_ENV
from tests.object_store import node_processes
from tests.test_pipeline import K, make_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "ray").glob("**/checkpoint_*"))


def wait_for_checkpoints(
    run_dir: Path, count: int, timeout_s: float = 600, process: Any = None
) -> None:
    # A guard against a hang, not a speed check: two checkpoints take ~40 s on a quiet machine
    # but over 240 s when benchmarks share its two cores (that once failed this test).
    deadline = time.monotonic() + timeout_s
    while len(checkpoints(run_dir)) < count:
        assert time.monotonic() < deadline, f"no {count} checkpoints in {run_dir} in time"
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.stderr.read()[-3000:]}")
        time.sleep(0.2)


def _kill_ray_under(temp_dir: str) -> None:
    """Kill the Ray processes a SIGTERMed driver's local cluster may leave behind: only the
    cluster under ``temp_dir`` (tests may run beside others with clusters of their own). Repeat
    for a few seconds: a dying raylet still spawns."""
    for _ in range(10):
        for process in node_processes(temp_dir):
            with contextlib.suppress(psutil.Error):
                process.kill()
        time.sleep(0.5)


def train_workers_of_this_process() -> list[psutil.Process]:
    """This process's own cluster's Ray Train workers (its raylet's children), not those of a
    test running beside it."""
    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "ray::RayTrainWorker" in " ".join(process.cmdline()):
                found.append(process)
    return found


def test_sigkilled_worker_resumes_from_its_last_checkpoint(
    ray_cluster, wide_dataset, tmp_path
) -> None:
    path, _ = wide_dataset
    config = make_config(path, training={"epochs": 8}, scaling={"max_failures": 1})
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["selection"] = select(config, tmp_path)
        except BaseException as e:  # surfaced by the assertions below
            outcome["error"] = e

    driver = threading.Thread(target=run)
    driver.start()
    wait_for_checkpoints(tmp_path, 2)
    workers = train_workers_of_this_process()
    assert workers, "no Ray Train worker process found"
    os.kill(workers[-1].pid, signal.SIGKILL)
    driver.join(timeout=600)

    assert "error" not in outcome, outcome.get("error")
    selection = outcome["selection"]
    assert selection.resumed_from_epoch >= 1  # resumed, not restarted
    assert [h["epoch"] for h in selection.history] == list(range(8))
    assert len(set(selection.selected_features)) == K


def test_sigterm_stops_cleanly_and_the_resumed_run_selects_as_an_uninterrupted_one(
    ray_cluster, wide_dataset, tmp_path
) -> None:
    """`cae-ray run` stopped by SIGTERM during training (what Kubernetes, Airflow and Dagster
    send): it exits 143 with Ray shut down and run.json saying where; the same command again
    resumes the training from its checkpoint, to exactly the selection (and losses) of an
    uninterrupted run. `cae-ray select` goes through the same code. The uninterrupted run is
    only the reference, so it runs in this process (no CLI start-up, no second Ray start)."""
    path, _ = wide_dataset
    config_file = tmp_path / "select.yaml"
    config_file.write_text(
        f"data: {{path: {path}, features: 'f_*', target: label, row_key: id}}\n"
        f"selector: {{k: {K}}}\ntraining: {{epochs: 6, batch_size: 32}}\n"
        "scaling: {num_workers: 1, resources_per_worker: {CPU: 1}}\n"
        "validation: {epochs: 3, bootstrap: 200, tolerance: 1.0}\n"
    )
    run_dir, uninterrupted_dir = tmp_path / "run", tmp_path / "uninterrupted"
    # A short temp dir: Ray's Unix socket paths under it have a length limit.
    ray_tmp = tempfile.mkdtemp(prefix="crd-", dir="/tmp")
    env = {**os.environ, **RAY_TEST_ENV, "RAY_TMPDIR": ray_tmp, "HOME": str(tmp_path)}
    env.pop("RAY_ADDRESS", None)
    cli = [sys.executable, "-m", "cae_ray.cli"]
    command = [*cli, "run", str(config_file), "--run-dir", str(run_dir)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_checkpoints(run_dir, 2, process=first)
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    stopped = json.loads((run_dir / "run.json").read_text())
    assert not (run_dir / "selection.json").exists()
    select(load_config(config_file), uninterrupted_dir)
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    _kill_ray_under(ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)

    assert first.returncode == 143, stderr.decode()[-3000:]
    assert "stopped by SIGTERM" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert stopped["status"] == "interrupted"
    assert stopped["steps"]["select"]["status"] == "interrupted"
    assert stopped["steps"]["select"]["error"] == "SIGTERM"

    assert second.returncode == 0, second.stderr[-3000:]
    selection = json.loads((run_dir / "selection.json").read_text())
    reference = json.loads((uninterrupted_dir / "selection.json").read_text())
    assert selection["resumed_from_epoch"] >= 1
    assert selection["selected_features"] == reference["selected_features"]
    losses = [[h["epoch"], h["loss"]] for h in selection["history"]]
    assert losses == [[h["epoch"], h["loss"]] for h in reference["history"]]
    record = json.loads((run_dir / "run.json").read_text())  # and the run went on from there
    assert record["status"] == "succeeded"
    assert record["steps"]["select"]["resumed_from_epoch"] >= 1
    assert record["steps"]["prepare"]["status"] == "reused"
    assert (run_dir / "report" / "report.html").is_file()
