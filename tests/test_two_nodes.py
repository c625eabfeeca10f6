"""Runs that cross machines: a real two-node Ray cluster (two `ray start`s, each with its own
temp dir) whose training workers are placed on the second node, with the run dir on a real
S3-compatible server. The driver is `cae-ray` in its own process, as a user (or a scheduler)
runs it; nothing it makes is written locally."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from cae_ray import storage
from cae_ray.demo import DEMO_DIR_DEFAULT, DEMO_YAML, TARGET, VIEW, make_demo_repo
from cae_ray.errors import EXIT_CLUSTER
from cae_ray.feast.overlay import TAG_PREFIX
from tests.object_store import S3Server, TwoNodes, environment, node_processes, s3_server
from tests.object_store import two_node_cluster as start_two_nodes
from tests.wide_data import write_wide_parquet

pytestmark = [pytest.mark.ray, pytest.mark.slow]
K = 10
ON_NODE_2 = {"num_workers": 2, "resources_per_worker": {"CPU": 1, "node2": 1}}
CAE_RAY = str(Path(sys.executable).with_name("cae-ray"))


@pytest.fixture(scope="module")
def s3() -> Any:
    with s3_server() as server, environment(server.env):
        yield server


@pytest.fixture(scope="module")
def nodes(s3: S3Server) -> Any:
    with start_two_nodes(s3) as cluster:
        yield cluster


def upload(local: Path, uri: str) -> None:
    for file in sorted(local.glob("*.parquet")):
        storage.write_bytes(storage.join(uri, file.name), file.read_bytes())


class Driver:
    """`cae-ray -v ARGS` joined to the two-node cluster, in an empty working dir of its own; its
    output goes to a file (a pipe nobody reads fills up and blocks it)."""

    def __init__(self, nodes: TwoNodes, workdir: Path, *args: str) -> None:
        workdir.mkdir(exist_ok=True)
        self.log = workdir.parent / f"{workdir.name}.log"
        env = {**os.environ, **nodes.env, "COLUMNS": "1000"}  # no wrapped messages
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [CAE_RAY, "-v", *args], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout_s: float = 900) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            self.stop()

    def stop(self) -> None:
        """Kill it if it still runs (a failed test must not leave a driver behind)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def output(self) -> str:
        return self.log.read_text()


@pytest.mark.feast
def test_a_whole_run_on_two_nodes_keeps_every_artifact_on_s3(s3, nodes, tmp_path) -> None:
    demo = make_demo_repo(tmp_path / "demo", rows=2000, features=40)
    entities = s3.uri("inputs/entities")
    upload(tmp_path / "demo", entities)
    config = yaml.safe_load(DEMO_YAML.replace(DEMO_DIR_DEFAULT, str(tmp_path / "demo")))
    config["feast"]["entities"] = entities
    config["training"]["epochs"] = 10
    # The gate runs (in memory) and passes whatever 10 epochs found: this test is about where
    # things are written, not how good they are.
    config["validation"].update(model="mlp", epochs=5, tolerance=1.0, require_fair_baseline=False)
    config["scaling"] = ON_NODE_2
    path = tmp_path / "two-nodes.yaml"
    path.write_text(yaml.safe_dump(config))

    run = Driver(nodes, tmp_path / "work", "run", str(path), "--run-dir", s3.uri("runs/e2e"))
    assert run.wait() == 0, run.output[-5000:]

    keys = s3.objects("runs/e2e/")
    named = {k.removeprefix("runs/e2e/") for k in keys}
    for artifact in (
        "run.json",
        "export/_manifest.json",
        "data/prepared.json",
        "selection.json",
        "validation.json",
        "prune.json",
        "report/report.html",
        "report/training.png",
    ):
        assert artifact in named, f"{artifact} not on S3: {sorted(named)}"
    for directory in ("export/part-", "data/train/part-", "data/validation/part-"):
        assert any(n.startswith(directory) for n in named), directory
    assert any("/checkpoint_" in n for n in named if n.startswith("ray/select-")), named
    assert not [n for n in named if ".partial" in n or "cae_ray-probe" in n]
    assert list((tmp_path / "work").iterdir()) == []  # nothing written where it ran

    from feast import FeatureStore

    view = FeatureStore(repo_path=str(demo.repo)).get_feature_view(VIEW)
    marked = [t for t in view.tags if t.startswith(f"{TAG_PREFIX}deprecated.")]
    assert len(marked) == 40 - K  # the prune reached the (local) registry
    assert TARGET not in marked


def checkpoints(s3: S3Server, prefix: str) -> set[str]:
    return {
        k.split("/checkpoint_")[1].split("/")[0] for k in s3.objects(prefix) if "/checkpoint_" in k
    }


def train_workers_on(temp_dir: Path) -> list[Any]:
    return [
        p for p in node_processes(temp_dir) if "ray::RayTrainWorker" in " ".join(p.cmdline() or [])
    ]


def start_selection(
    s3: S3Server, nodes: TwoNodes, tmp_path: Path, name: str, epochs: int, max_failures: int
) -> Driver:
    """`cae-ray select` on a 3,000 x 200 table on S3, its workers on node 2, run dir runs/NAME."""
    write_wide_parquet(tmp_path / "wide", rows=3000, features=200, informative=K)
    data = s3.uri(f"inputs/{name}")
    upload(tmp_path / "wide", data)
    config = {
        "data": {"path": data, "features": "f_*", "target": "label", "row_key": "id"},
        "selector": {"k": K},
        "training": {"epochs": epochs, "batch_size": 32},
        "scaling": {**ON_NODE_2, "max_failures": max_failures},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return Driver(
        nodes, tmp_path / "work", "select", str(path), "--run-dir", s3.uri(f"runs/{name}")
    )


def wait_for_checkpoints(s3: S3Server, driver: Driver, name: str, count: int) -> None:
    deadline = time.monotonic() + 600  # a guard against a hang, not a speed check
    while len(checkpoints(s3, f"runs/{name}/ray/")) < count:
        assert driver.poll() is None, driver.output[-5000:]
        assert time.monotonic() < deadline, f"no {count} checkpoints on S3 in time"
        time.sleep(0.5)


def test_a_worker_killed_on_node_2_resumes_from_its_checkpoint_on_s3(s3, nodes, tmp_path) -> None:
    driver = start_selection(s3, nodes, tmp_path, "kill", epochs=12, max_failures=1)
    try:
        wait_for_checkpoints(s3, driver, "kill", 2)
        workers = train_workers_on(nodes.node2_temp_dir)
        assert len(workers) == 2, "both training workers run on node 2"
        os.kill(workers[0].pid, signal.SIGKILL)
        code = driver.wait()
    finally:
        driver.stop()
    output = driver.output
    assert code == 0, output[-5000:]
    for line in output.splitlines():  # the closing note quotes these
        if any(w in line for w in ("died", "resuming", "Restart", "RETRY", "failed")):
            print(line)

    selection = storage.read_text(s3.uri("runs/kill/selection.json"))
    assert selection is not None
    chosen = json.loads(selection)
    assert len(set(chosen["selected_features"])) == K
    assert chosen["resumed_from_epoch"] > 0, "the run started over instead of resuming"


def test_a_node_that_dies_for_good_ends_the_run_naming_its_checkpoint(s3, nodes, tmp_path) -> None:
    """Last in this module: it takes node 2 down for good."""
    driver = start_selection(s3, nodes, tmp_path, "lost", epochs=30, max_failures=0)
    try:
        wait_for_checkpoints(s3, driver, "lost", 1)
        for process in node_processes(nodes.node2_temp_dir):  # the whole node, raylet and all
            with contextlib.suppress(psutil.Error):
                process.kill()
        code = driver.wait(600)
    finally:
        driver.stop()
    output = " ".join(driver.output.split())
    assert code == EXIT_CLUSTER, output[-5000:]
    assert "failed after 0 retries (scaling.max_failures)" in output
    assert f"the last checkpoint is {s3.uri('runs/lost/ray/select-')}" in output
    assert "run the same command with the same config and run dir to resume" in output
