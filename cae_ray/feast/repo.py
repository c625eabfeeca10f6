"""What cae-ray keeps in a Feast repo beside its definitions, except the overlay: the lock that
lets one prune or restore in at a time, the audit log (every prune and restore, who and when),
and the check that all of it, and the registry, can be written before anything is.
"""

from __future__ import annotations

import getpass
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from cae_ray.feast.errors import RegistryNotWritableError, UnknownRunIdError
from cae_ray.feast.journal import JOURNAL
from cae_ray.feast.overlay import OVERLAY

AUDIT_LOG = "cae_ray_audit.jsonl"
LOCK_FILE = ".cae_ray.lock"


def check_writable(repo: Path, store: Any) -> None:
    """Raise ``RegistryNotWritableError`` unless everything a prune or restore writes can be
    written: the registry, and the lock, overlay and audit log in the repo. Opens files for
    writing without writing (bytes and modification times stay) rather than asking
    ``os.access``, which says yes to root on any mode."""
    for path in _registry_files(repo, store):
        _probe_file(path)
    _probe_directory(repo)  # the lock and audit log may be new; the overlay is replaced
    for path in (repo / LOCK_FILE, repo / AUDIT_LOG, repo / OVERLAY, repo / JOURNAL):
        _probe_file(path)


def _registry_files(repo: Path, store: Any) -> list[Path]:
    """The local files a registry commit writes: the file registry, or a SQLite database (with
    its directory, for the journal). Remote registries (s3://, postgres, ...) answer at commit."""
    config = store.config.registry
    path = str(config.path)
    if config.registry_type == "sql":
        if not path.startswith("sqlite:///"):
            return []
        database = Path(path.removeprefix("sqlite:///"))
        return [database, database.parent]
    if "://" in path:
        return []
    local = Path(path)
    return [local if local.is_absolute() else repo / local]


def _probe_file(path: Path) -> None:
    if path.is_dir():
        _probe_directory(path)
        return
    if not path.exists():
        _probe_directory(path.parent)  # it will be created there
        return
    try:
        with path.open("r+b"):  # open for writing, write nothing
            pass
    except OSError as e:
        raise RegistryNotWritableError(str(path), e.strerror or str(e)) from e


def _probe_directory(path: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".cae_ray-probe-"):
            pass
    except OSError as e:
        raise RegistryNotWritableError(str(path), e.strerror or str(e), directory=True) from e


@contextmanager
def repo_lock(repo: Path) -> Iterator[None]:
    """One prune or restore at a time per repo: a file registry is rewritten whole, so two
    overlapping read-modify-writes would lose the first one's marks."""
    with FileLock(repo / LOCK_FILE):
        yield


def audit_records(repo: Path) -> list[dict[str, Any]]:
    log = repo / AUDIT_LOG
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def restored_runs(records: list[dict[str, Any]]) -> set[str]:
    """Run ids whose last prune was restored since."""
    undone: set[str] = set()
    for r in records:  # in order: a run pruned again after its restore is live again
        if r["action"] == "restore":
            undone.add(r["run_id"])
        else:
            undone.discard(r["run_id"])
    return undone


def is_live(repo: Path, run_id: str) -> bool:
    """Whether prune ``run_id`` is applied to the repo's registry (and not restored since)."""
    records = audit_records(repo)
    pruned = any(r["action"] == "prune" and r["run_id"] == run_id for r in records)
    return pruned and run_id not in restored_runs(records)


def find_prune(repo: Path, run_id: str) -> tuple[dict[str, Any], set[str]]:
    """The audit record of prune ``run_id``, and the run ids restored since they were pruned."""
    records = audit_records(repo)
    prunes = [r for r in records if r["action"] == "prune" and r["run_id"] == run_id]
    if not prunes:
        known = sorted({r["run_id"] for r in records if r["action"] == "prune"})
        raise UnknownRunIdError(run_id, str(repo / AUDIT_LOG), known)
    return dict(prunes[-1]), restored_runs(records)


def append_audit(repo: Path, action: str, record: dict[str, Any], journal: str) -> None:
    """Append one line to the audit log: the action's record, who, when, and its journal id
    (the sign, for recovery, that the transaction wrote everything)."""
    line = {
        **record,
        "action": action,
        "user": getpass.getuser(),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "journal": journal,
    }
    with (repo / AUDIT_LOG).open("a") as log:
        log.write(json.dumps(line) + "\n")
        log.flush()
        os.fsync(log.fileno())


def audited(repo: Path, journal: str) -> bool:
    """Whether the transaction of this journal id wrote its audit record."""
    return any(r.get("journal") == journal for r in audit_records(repo))
