"""One command at a time per run dir: a lock that every command writing the run dir holds.

Two schedulers on one run dir would otherwise write the same artifacts at once (one run died
with a raw ``ArrowInvalid`` while the other read its half-written splits). :func:`locked` takes
the run dir for the calling thread, and a second command is refused with
:class:`~cae_ray.errors.RunDirLockedError`, which names the holder (host, pid, command, since
when), or waits for it (``wait=True``, ``--wait`` on the command line).

* A local run dir is locked with ``flock`` on ``RUN_DIR/.cae_ray.lock``, which holds the
  holder's JSON while it is held. The kernel releases the lock when its process ends, however
  it ends, so a lock is never stale. (filelock truncates the file on open in some of its
  versions and never removes it; here a run that fails before writing anything leaves no run
  dir, so the file is removed, and a waiter checks that the file it locked is still the one
  at that path.)
* A run dir on object storage gets a lease: ``RUN_DIR/.cae_ray.lease.json`` names the holder
  and an expiry :data:`LEASE_S` ahead, renewed by a thread every third of that. An object
  store has no lock, so a taker writes its lease, waits :data:`SETTLE_S` and reads it back:
  of two that wrote at once, only the one whose lease is still there goes on. A killed
  holder's lease expires by itself.

The lock is re-entrant per thread: ``run`` holds it through its steps, each of which takes it
again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cae_ray.errors import RunDirError, RunDirLockedError
from cae_ray.storage import is_remote, join, location, read_text, remove, write_bytes
from cae_ray.storage.errors import DiskFullError
from cae_ray.storage.space import free_bytes, is_disk_full

logger = logging.getLogger(__name__)

LOCK_FILE = ".cae_ray.lock"
LEASE_FILE = ".cae_ray.lease.json"
LEASE_S = 60.0
"""How long a lease on object storage lasts unless renewed (every third of it)."""
SETTLE_S = 2.0
"""How long a taker of a lease waits before it reads the lease back."""
POLL_S = 1.0
"""How often a waiting command tries again."""


@dataclass(frozen=True)
class Holder:
    """Who holds a run dir: enough for a person to find the process."""

    host: str
    pid: int
    command: str
    since: str

    @classmethod
    def this_process(cls) -> Holder:
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(socket.gethostname(), os.getpid(), command, since)

    @classmethod
    def parse(cls, text: str | bytes) -> Holder | None:
        try:
            found = json.loads(text)["holder"]
            return cls(str(found["host"]), int(found["pid"]), str(found["command"]), found["since"])
        except (ValueError, KeyError, TypeError):
            return None  # being written, or cleared by a holder that is letting go

    def describe(self) -> str:
        return f"`{self.command}` (host {self.host}, pid {self.pid}, since {self.since})"


_held = threading.local()


@contextlib.contextmanager
def locked(where: str, *, wait: bool = False) -> Iterator[None]:
    """Hold the run dir ``where`` while the block runs. Refused with
    :class:`~cae_ray.errors.RunDirLockedError` when another command holds it, unless ``wait``:
    then it waits for it. Re-entered freely by the thread that holds it."""
    key = location(where)
    counts: dict[str, int] = _held.__dict__.setdefault("counts", {})
    if counts.get(key):
        counts[key] += 1
        try:
            yield
        finally:
            counts[key] -= 1
        return
    lock: _LocalLock | _Lease = _Lease(key) if is_remote(key) else _LocalLock(key)
    lock.acquire(wait)
    counts[key] = 1
    try:
        yield
    finally:
        del counts[key]
        lock.release()


def _waiting(root: str, holder: str, wait: bool, said: list[bool]) -> None:
    """Refuse, or (with ``wait``) say once that this command waits, then pause."""
    if not wait:
        raise RunDirLockedError(root, holder)
    if not said:
        logger.warning("waiting for the run dir %s, held by %s", root, holder)
        said.append(True)
    time.sleep(POLL_S)


# --- a local run dir: flock --------------------------------------------------------------------


class _LocalLock:
    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self.created = False
        self.fd: int | None = None

    def acquire(self, wait: bool) -> None:
        said: list[bool] = []
        while True:
            holder = self._try()
            if holder is None:
                return
            _waiting(str(self.root), holder, wait, said)

    def _try(self) -> str | None:
        """None when this process now holds the lock; else who holds it, in words."""
        self.created = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            return "a command that is letting go of it"  # it removed the dir just now
        except OSError as e:
            raise self._unlockable(e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Holder.parse(os.pread(fd, 64 << 10, 0))
            os.close(fd)
            return holder.describe() if holder else "another cae-ray command"
        if not _same_file(fd, self.path):  # removed by a holder letting go: lock the new one
            os.close(fd)
            return self._try()
        payload = json.dumps({"holder": asdict(Holder.this_process())}).encode()
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, payload, 0)
        except OSError as e:
            self.release()  # no lock file left, nor a run dir made for it
            raise self._unlockable(e) from e
        return None

    def _unlockable(self, error: OSError) -> Exception:
        if is_disk_full(error):  # the holder's few bytes take a file-system block
            free = free_bytes(str(self.root))
            return DiskFullError(str(self.path), 4096, free, "the run dir's lock file")
        return RunDirError(str(self.root), f"cannot be locked ({error.strerror or error})")

    def release(self) -> None:
        assert self.fd is not None
        try:
            # Removed while still held (a waiter then locks a fresh file: _same_file), so a
            # command leaves no lock file behind, and a run dir it made and wrote nothing to
            # goes too, as if never made.
            self.path.unlink()
        finally:
            os.close(self.fd)  # releases the lock
            self.fd = None
        if self.created:
            with contextlib.suppress(OSError):  # not empty, or a waiter made it again
                self.root.rmdir()


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


# --- a run dir on object storage: a lease -------------------------------------------------------


class _Lease:
    def __init__(self, root: str) -> None:
        self.root, self.where = root, join(root, LEASE_FILE)
        self.token = uuid.uuid4().hex
        self.holder = Holder.this_process()
        self.stop = threading.Event()
        self.renewer: threading.Thread | None = None

    def acquire(self, wait: bool) -> None:
        said: list[bool] = []
        while True:
            holder = self._try()
            if holder is None:
                self.renewer = threading.Thread(target=self._renew, daemon=True)
                self.renewer.name = "cae-ray-lease"
                self.renewer.start()
                return
            _waiting(self.root, holder, wait, said)

    def _try(self) -> str | None:
        current = self._read()
        if current is not None and self._live_other(current):
            return self._describe(current)
        self._write()
        time.sleep(SETTLE_S)  # a taker that read no lease with us has written its own by now
        back = self._read()
        if back is None or back["token"] != self.token:
            return self._describe(back) if back else "another cae-ray command"
        return None

    def _live_other(self, lease: dict[str, Any]) -> bool:
        """Another command's lease that has not expired (an expired one was a killed one's)."""
        return bool(lease["token"] != self.token and lease["expires"] > time.time())

    def _renew(self) -> None:
        while not self.stop.wait(LEASE_S / 3):
            current = self._read()
            if current is None or current["token"] != self.token:
                logger.error("lost the lease on the run dir %s to another command", self.root)
                return
            self._write()

    def release(self) -> None:
        self.stop.set()
        if self.renewer is not None:
            self.renewer.join()
        current = self._read()
        if current is not None and current["token"] == self.token:
            remove(self.where)

    def _read(self) -> dict[str, Any] | None:
        text = read_text(self.where)
        try:
            lease = json.loads(text) if text else None
            return lease if lease and {"token", "expires"} <= set(lease) else None
        except ValueError:
            return None

    def _write(self) -> None:
        expires = time.time() + LEASE_S
        until = datetime.fromtimestamp(expires, timezone.utc).isoformat(timespec="seconds")
        lease = {"holder": asdict(self.holder), "token": self.token, "expires": expires}
        write_bytes(self.where, json.dumps({**lease, "expires_at": until}).encode())

    @staticmethod
    def _describe(lease: dict[str, Any]) -> str:
        holder = Holder.parse(json.dumps(lease))
        who = holder.describe() if holder else "another cae-ray command"
        return f"{who}; its lease expires at {lease.get('expires_at')} unless renewed"
