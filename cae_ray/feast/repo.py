"""What cae-ray keeps in a Feast repo beside its definitions, except the overlay: the lock that
lets one transaction (prune, retire, restore) in at a time, the audit log (every one of them,
who and when, and which ones stand), the recovery of one that was killed, and the check that
everything a transaction writes can be written before anything is.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from cae_ray.feast import backup, journal
from cae_ray.feast.errors import RegistryNotWritableError, UnknownRunIdError
from cae_ray.feast.journal import JOURNAL
from cae_ray.feast.overlay import OVERLAY

logger = logging.getLogger(__name__)

AUDIT_LOG = "cae_ray_audit.jsonl"
LOCK_FILE = ".cae_ray.lock"


def check_writable(repo: Path, store: Any, sources: Sequence[Path] = ()) -> None:
    """Raise ``RegistryNotWritableError`` unless everything a transaction writes can be
    written: the registry, the lock, overlay and audit log in the repo, and the definitions
    files ``sources`` it rewrites (each replaced by a rename in its directory). Opens files for
    writing without writing (bytes and modification times stay) rather than asking
    ``os.access``, which says yes to root on any mode."""
    for path in _registry_files(repo, store):
        _probe_file(path)
    _probe_directory(repo)  # the lock and audit log may be new; the overlay is replaced
    for path in (repo / LOCK_FILE, repo / AUDIT_LOG, repo / OVERLAY, repo / JOURNAL):
        _probe_file(path)
    for path in sources:
        _probe_file(path)
        _probe_directory(path.parent)


def _registry_files(repo: Path, store: Any) -> list[Path]:
    """The local files a registry commit writes: the file registry, or a SQLite database (with
    its directory, for the journal). Remote registries (s3://, postgres, ...) answer at commit."""
    config = store.config.registry
    path = str(config.path)
    if config.registry_type == "sql":
        if not path.startswith("sqlite:///"):
            return []
        database = Path(path.removeprefix("sqlite:///"))  # absolute: see store.registry_in_repo
        return [database, database.parent]
    local = backup.registry_file(repo, config)
    return [] if local is None else [local]


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


RESTORABLE = ("prune", "retire", "forget-model")
"""The actions ``cae-ray restore`` undoes: per model, its latest first (a retirement: the
latest change of all first)."""


def live_actions(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The changes applied and not restored since, oldest first: the registry stands as they
    left it."""
    live: list[dict[str, Any]] = []
    for r in records:
        if r["action"] in RESTORABLE:
            live.append(r)
        elif r["action"] == "restore":
            # The latest of that id (versions before 0.2 could restore any prune, not the last).
            ids = [done["run_id"] for done in live]
            if r["run_id"] in ids:
                live.pop(len(ids) - 1 - ids[::-1].index(r["run_id"]))
    return live


def model_of(record: dict[str, Any]) -> str | None:
    """The model an audit record changed (its kept service); None for a retirement, which is
    the repo's, not one model's."""
    if record["action"] == "retire":
        return None
    return record.get("model") or record.get("feature_service")


def blocking_actions(live: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """The live changes, oldest first, that stand on ``run_id`` (the latest live change of
    that id), so that it cannot be restored exactly before they are: a later change of its
    model or a later retirement; for a retirement, every later change."""
    index = max(i for i, r in enumerate(live) if r["run_id"] == run_id)
    model = model_of(live[index])
    return [
        r
        for r in live[index + 1 :]
        if model is None or r["action"] == "retire" or model_of(r) == model
    ]


def latest_of_model(repo: Path, model: str) -> dict[str, Any] | None:
    """The live change of ``model`` its kept service stands at (None: none, or all undone)."""
    live = [r for r in live_actions(audit_records(repo)) if model_of(r) == model]
    return live[-1] if live else None


def find_action(repo: Path, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The latest audit record of prune or retirement ``run_id``, and the live actions."""
    records = audit_records(repo)
    found = [r for r in records if r["action"] in RESTORABLE and r["run_id"] == run_id]
    if not found:
        known = sorted({r["run_id"] for r in records if r["action"] in RESTORABLE})
        raise UnknownRunIdError(run_id, str(repo / AUDIT_LOG), known)
    return dict(found[-1]), live_actions(records)


def recover(repo: Path, store: Any) -> str | None:
    """Finish or undo a transaction that was killed part way (call under the repo lock): whole
    when its audit record was written, else rolled back to the state before it. What was done,
    in words (logged), or None when there was nothing to do."""
    entry = journal.pending(repo)
    if entry is None:
        return None
    if audited(repo, entry.id):
        said = f"the {entry.action} of run {entry.run_id} had finished; its journal is closed"
    else:
        journal.roll_back(store, entry)
        said = (
            f"rolled back the {entry.action} of run {entry.run_id}, which was interrupted: the "
            "registry, the overlay and the definitions are as they were before it"
        )
    journal.end(repo)
    logger.warning("%s: %s", repo, said)
    return said


STAMP = "%Y-%m-%dT%H:%M:%SZ"
"""How cae-ray dates marks, services and audit records: ``2026-12-03T17:30:49Z`` (UTC)."""


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime(STAMP)


def parse_stamp(stamp: str) -> datetime:
    return datetime.strptime(stamp, STAMP).replace(tzinfo=timezone.utc)


def append_audit(repo: Path, action: str, record: dict[str, Any], journal_id: str) -> None:
    """Append one line to the audit log: the action's record, who, when, and its journal id
    (the sign, for recovery, that the transaction wrote everything)."""
    line = {
        **record,
        "action": action,
        "user": getpass.getuser(),
        "at": utc_stamp(),
        "journal": journal_id,
    }
    with (repo / AUDIT_LOG).open("a") as log:
        log.write(json.dumps(line) + "\n")
        log.flush()
        os.fsync(log.fileno())


def audited(repo: Path, journal_id: str) -> bool:
    """Whether the transaction of this journal id wrote its audit record."""
    return any(r.get("journal") == journal_id for r in audit_records(repo))
