"""One command at a time per run dir: a second command is refused naming the holder, or waits
with --wait; on object storage a lease does the same, and a killed holder's lease expires."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cae_ray.errors import EXIT_CONFIG, RunDirLockedError
from cae_ray.pipeline import hold_run_dir
from cae_ray.storage import lock
from tests.object_store import S3Server, environment, s3_server


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"data: {{path: {tmp_path / 'none.parquet'}, target: label}}\n")
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "cae_ray.cli", *args]
    environ = {**os.environ, **(env or {})}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ
    )


def test_a_second_command_on_a_held_run_dir_is_refused_naming_the_holder(tmp_path) -> None:
    config, run_dir = write_config(tmp_path), tmp_path / "run"
    with hold_run_dir(run_dir):
        holder = json.loads((run_dir / lock.LOCK_FILE).read_text())["holder"]
        second = cli("validate", str(config), "--run-dir", str(run_dir))
        _, stderr = second.communicate(timeout=120)
    message = " ".join(stderr.split())
    assert second.returncode == EXIT_CONFIG, stderr
    assert f"the run dir {run_dir} is in use by" in message
    assert f"host {socket.gethostname()}, pid {os.getpid()}, since {holder['since']}" in message
    assert "--wait" in message and "Traceback" not in stderr
    # The holder ran nothing that wrote: its lock goes with it, and so does the run dir.
    assert not run_dir.exists()


def test_with_wait_the_second_command_starts_when_the_first_ends(tmp_path) -> None:
    config, run_dir = write_config(tmp_path), tmp_path / "run"
    with hold_run_dir(run_dir):
        (run_dir / "kept.txt").write_text("an artifact of the first command")
        second = cli("validate", str(config), "--run-dir", str(run_dir), "--wait")
        time.sleep(8)
        assert second.poll() is None, second.communicate()  # still waiting
    _, stderr = second.communicate(timeout=120)
    # It ran once the run dir was free: validate then finds no selection there.
    assert second.returncode == EXIT_CONFIG, stderr
    assert "has no selection.json" in " ".join(stderr.split())
    # The artifact stays; the lock file goes with the last command that held it.
    assert (run_dir / "kept.txt").exists() and not (run_dir / lock.LOCK_FILE).exists()


def test_a_waiter_never_holds_a_lock_file_its_holder_removed(tmp_path) -> None:
    """The first holder removes the run dir it made (nothing was written) while a waiter polls:
    the waiter ends up holding the lock of the run dir as it is, alone."""
    run_dir = tmp_path / "run"
    taken = threading.Event()

    def waiter() -> None:
        with lock.locked(str(run_dir), wait=True):
            taken.set()
            time.sleep(1)

    with lock.locked(str(run_dir)):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(2 * lock.POLL_S)
        assert not taken.is_set()
    assert taken.wait(timeout=30)
    with pytest.raises(RunDirLockedError), lock.locked(str(run_dir)):  # a real hold
        pass
    thread.join()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server, environment(server.env):
        yield server


def test_a_run_dir_on_object_storage_is_leased(s3, tmp_path) -> None:
    run_dir = s3.uri("runs/leased")
    config = write_config(tmp_path)
    with lock.locked(run_dir):
        second = cli("validate", str(config), "--run-dir", run_dir, env=s3.env)
        _, stderr = second.communicate(timeout=120)
        lease = json.loads(lock.read_text(lock.join(run_dir, lock.LEASE_FILE)) or "{}")
    message = " ".join(stderr.split())
    assert second.returncode == EXIT_CONFIG, stderr
    assert f"pid {os.getpid()}" in message and f"expires at {lease['expires_at']}" in message
    assert "runs/leased/" + lock.LEASE_FILE not in s3.objects("runs/leased/")  # let go

    # A killed holder's lease runs out: the next command takes the run dir over.
    expired = {**lease, "token": "killed", "expires": time.time() - 1}
    lock.write_bytes(lock.join(run_dir, lock.LEASE_FILE), json.dumps(expired).encode())
    with lock.locked(run_dir):
        taken = json.loads(lock.read_text(lock.join(run_dir, lock.LEASE_FILE)) or "{}")
        assert taken["token"] != "killed" and taken["holder"]["pid"] == os.getpid()
