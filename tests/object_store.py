"""A real S3-compatible server on localhost (moto in server mode) and a real two-node Ray
cluster (two `ray start` processes, each with its own temp dir), for the tests of runs that
cross machines. Both are torn down even when a test fails."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.conftest import RAY_TEST_ENV

BUCKET = "cae-ray-test"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing answered on port {port} in {timeout_s} s")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    env: dict[str, str]
    """What a process needs to reach it: the endpoint and the (fake) credentials."""

    def uri(self, key: str) -> str:
        return f"s3://{BUCKET}/{key}"

    def objects(self, prefix: str = "") -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        return [key for key in keys if not key.endswith("/")]  # directory markers hold nothing


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


@contextlib.contextmanager
def s3_server(*, bucket: bool = True, auth: bool = False) -> Iterator[S3Server]:
    """moto's S3 on a free localhost port, with the test bucket; ``auth`` makes it refuse
    every key (for the denied-credentials test)."""
    port = free_port()
    env = {**os.environ, **CREDENTIALS}
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_port(port, server)
        endpoint = f"http://127.0.0.1:{port}"
        if bucket:
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
            client.create_bucket(Bucket=BUCKET)
        yield S3Server(endpoint, {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})
    finally:
        server.kill()
        server.wait()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment, put back as they were afterwards."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class TwoNodes:
    address: str
    env: dict[str, str]
    """For a driver: the cluster's address, the S3 server's endpoint and credentials."""
    node2_temp_dir: Path


def _ray(args: list[str], env: dict[str, str]) -> None:
    ray = str(Path(sys.executable).with_name("ray"))
    done = subprocess.run([ray, *args], env=env, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"ray {' '.join(args)} failed: {done.stderr[-2000:]}")


@contextlib.contextmanager
def two_node_cluster(s3: S3Server) -> Iterator[TwoNodes]:
    """A head (1 CPU, resource ``head``) and a second node (2 CPUs, resource ``node2``), each
    a `ray start` with its own temp dir, both with the S3 server's environment."""
    port = free_port()
    env = {**os.environ, **RAY_TEST_ENV, **s3.env}
    env.pop("RAY_ADDRESS", None)
    head_dir = tempfile.mkdtemp(prefix="crh-", dir="/tmp")  # short: Ray's socket paths
    node2_dir = tempfile.mkdtemp(prefix="crn-", dir="/tmp")
    try:
        yield _started(port, head_dir, node2_dir, env, s3)
    finally:
        _kill_nodes(head_dir, node2_dir, f":{port}")
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(node2_dir, ignore_errors=True)


def _agent_ports() -> list[str]:
    """Every fixed default port of a node, made free ones: two nodes (and the tests' own
    local cluster) share this machine."""
    flags = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port"]
    flags += ["--metrics-export-port", "--runtime-env-agent-port"]
    return [word for flag in flags for word in (flag, str(free_port()))]


def _started(
    port: int, head_dir: str, node2_dir: str, env: dict[str, str], s3: S3Server
) -> TwoNodes:
    common = ["--disable-usage-stats", "--object-store-memory", str(300 << 20)]
    head = ["start", "--head", "--port", str(port), "--num-cpus", "1", "--temp-dir", head_dir]
    head += ["--resources", json.dumps({"head": 1}), "--include-dashboard", "false"]
    head += ["--ray-client-server-port", str(free_port())]
    _ray([*head, *common, *_agent_ports()], env)
    address = f"127.0.0.1:{port}"
    node2 = ["start", "--address", address, "--num-cpus", "2", "--temp-dir", node2_dir]
    node2 += ["--resources", json.dumps({"node2": 2})]
    _ray([*node2, *common, *_agent_ports()], env)
    return TwoNodes(address, {**s3.env, **RAY_TEST_ENV, "RAY_ADDRESS": address}, Path(node2_dir))


def node_processes(temp_dir: str | Path) -> list[psutil.Process]:
    """A node's processes: those naming its temp dir (raylet, GCS, agents; or any other mark)
    and their children (the workers)."""
    roots = []
    for process in psutil.process_iter(["cmdline"]):
        if str(temp_dir) in " ".join(process.info["cmdline"] or []):
            roots.append(process)
    found = {p.pid: p for p in roots}
    for root in roots:
        with contextlib.suppress(psutil.Error):
            found.update({c.pid: c for c in root.children(recursive=True)})
    return list(found.values())


def _kill_nodes(*marks: str) -> None:
    """Only these nodes' processes (those naming their temp dirs or the head's address, as the
    Ray Client server does): `ray stop` would stop every Ray on the machine, the tests' own
    local cluster included."""
    for _ in range(3):  # a dying raylet may still start a worker
        for process in [p for mark in marks for p in node_processes(mark)]:
            with contextlib.suppress(psutil.Error):
                process.kill()
        time.sleep(0.5)
