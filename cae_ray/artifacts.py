"""The run directory: every artifact's name, atomic writes, the hashes that bind an artifact to
its inputs, and the one answer to "is this step's output up to date?".

    RUN_DIR/
      run.json                    the whole run, step by step (cae-ray run)
      export/_manifest.json       the Feast export; beside it part-NNNNN.parquet (export)
      data/prepared.json          statistics and features; data/train/, data/validation/ (prepare)
      selection.json              the K selected features (select)
      validation.json             the gate's verdict (validate)
      prune.json                  the prune plan, applied or not (prune)
      report/report.html          the report, beside its PNGs and features.csv (report)
      ray/                        Ray Train's storage: checkpoints of select and validate

A step's JSON artifact records what it was made from (config hashes, data fingerprints) and the
files it stands for; :meth:`RunDir.reusable` returns it only when both still hold. Nothing else
names a file of the run dir. Standard library and pyarrow only (Ray workers and Feast's import
of a repo's definitions use parts of it).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cae_ray import storage
from cae_ray.errors import RunDirError

if TYPE_CHECKING:
    from cae_ray.config import Config

RUN_RECORD = "run.json"
EXPORT_DIR = "export"
EXPORT_MANIFEST = "export/_manifest.json"
"""Beside the parts; readers of the directory skip it (pyarrow ignores names starting with _)."""
PREPARED = "data/prepared.json"
TRAIN_SPLIT, VALIDATION_SPLIT = "data/train", "data/validation"
SELECTION = "selection.json"
VALIDATION = "validation.json"
PRUNE_PLAN = "prune.json"
RETIRE_PLAN = "retire.json"
REPORT_DIR = "report"
REPORT = "report/report.html"
FEATURES_CSV = "report/features.csv"
RAY_STORAGE = "ray"

STEP_ARTIFACTS = {
    "export": EXPORT_MANIFEST,
    "prepare": PREPARED,
    "select": SELECTION,
    "validate": VALIDATION,
    "prune": PRUNE_PLAN,
    "retire": RETIRE_PLAN,
    "report": REPORT,
}
"""The file each step of ``cae-ray run`` leaves behind."""

SELECTION_INPUTS = ("data", "selector", "training", "head")
"""The config sections that decide a selection: change one and it is made again (with
``k: auto`` the gate's section too: :func:`selection_inputs`)."""
PREPARE_INPUTS = ("data", "head")
EXPORT_INPUTS = ("feast",)
VALIDATION_INPUTS = ("validation",)


# --- hashes ---------------------------------------------------------------------------------


def digest(text: str) -> str:
    """A short, stable hash of a text (fingerprints and cache keys)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def selection_inputs(config: Config) -> tuple[str, ...]:
    """The config sections a selection is made from: ``k: auto`` chooses K with the gate's
    model and tolerance, so ``validation`` decides it too."""
    return (*SELECTION_INPUTS, "validation") if config.selector.auto else SELECTION_INPUTS


def config_hash(config: Config, *sections: str) -> str:
    """A short hash of the named config sections (all of them when none is named)."""
    dumped = config.model_dump(mode="json")
    chosen = {s: dumped[s] for s in sections} if sections else dumped
    return digest(json.dumps(chosen, sort_keys=True))


_DECIDED = (
    "selected_features",
    "selected_indices",
    "candidate_features",
    "k",
    "method",
    "task",
    "config_hash",
    "data_fingerprint",
)


def selection_digest(selection: Mapping[str, Any]) -> str:
    """A hash of what a selection decides, kept in ``selection.json`` itself, so a later step
    (validation, pruning) can tell that the file was edited since it was made."""
    return digest(json.dumps({key: selection.get(key) for key in _DECIDED}, sort_keys=True))


# --- atomic writes --------------------------------------------------------------------------


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Write to the path this yields; on success it replaces ``path`` in one rename, so readers
    see the old file or the new one, never half of one. On failure ``path`` is left as it was
    (a full disk: :class:`~cae_ray.storage.DiskFullError`, the partial file removed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")  # hidden from Parquet readers too
    try:
        yield partial
        os.replace(partial, path)
    except OSError as e:
        if not storage.is_disk_full(e):
            raise
        partial.unlink(missing_ok=True)  # before the free bytes are measured
        raise storage.DiskFullError(str(path), None, storage.free_bytes(str(path))) from e
    finally:
        partial.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as partial:
        partial.write_text(text, encoding="utf-8")


def write_bytes(path: Path, data: bytes) -> None:
    """``path``'s new bytes in one rename, keeping its permission bits (a source file, say)."""
    mode = path.stat().st_mode if path.exists() else None
    with replacing(path) as partial:
        partial.write_bytes(data)
        if mode is not None:
            os.chmod(partial, mode)


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    write_text(path, json.dumps(payload, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None when there is no such file."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return loaded if isinstance(loaded, dict) else None


# --- the run directory ----------------------------------------------------------------------


class RunDir:
    """One run's directory: where every artifact lives, and whether it is up to date. The
    directory is a local path or a URI (``s3://bucket/runs/...``): :mod:`cae_ray.storage`
    reads and writes both."""

    def __init__(self, where: str | os.PathLike[str]) -> None:
        self.root = storage.location(where)

    def __str__(self) -> str:
        return self.root

    @property
    def name(self) -> str:
        """The run dir's last path component (a run's name, often its date)."""
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    @property
    def remote(self) -> bool:
        return storage.is_remote(self.root)

    def path(self, name: str) -> str:
        """Where the artifact ``name`` lives: a local path or a URI, as the run dir is."""
        return storage.join(self.root, name)

    def ensure_writable(self) -> RunDir:
        """Raise (before any work) when the run dir cannot be written: :class:`RunDirError`
        for a local one, a :class:`cae_ray.storage.StorageError` for a URI. Nothing is left
        behind: a run that fails on its input leaves no run dir."""
        if self.remote:
            storage.ensure_writable(self.root)
            return self
        root = Path(self.root)
        existing = next(p for p in (root, *root.parents) if p.exists())
        if not existing.is_dir():
            where = (
                "is a file, not a directory"
                if existing == root
                else f"is under a file ({existing})"
            )
            raise RunDirError(self.root, where)
        try:
            with tempfile.TemporaryFile(dir=existing, prefix=".cae_ray-probe-"):
                pass
        except OSError as e:
            raise RunDirError(self.root, f"cannot be written ({e.strerror or e})") from e
        return self

    def locked(self, wait: bool = False) -> AbstractContextManager[None]:
        """Hold this run dir for the calling thread's command (:mod:`cae_ray.storage.lock`):
        refused with :class:`RunDirLockedError` while another command holds it, or (``wait``)
        waiting for it."""
        from cae_ray.storage.lock import locked

        return locked(self.root, wait=wait)

    def exists(self, name: str) -> bool:
        return storage.exists(self.path(name))

    def modified(self, name: str) -> int | None:
        """The artifact's modification time (ns), None when it is not there."""
        return storage.modified(self.path(name))

    def read_json(self, name: str) -> dict[str, Any] | None:
        text = storage.read_text(self.path(name))
        loaded = None if text is None else json.loads(text)
        return loaded if isinstance(loaded, dict) else None

    def write_json(self, name: str, payload: Mapping[str, Any]) -> None:
        self.write_text(name, json.dumps(payload, indent=2, default=_jsonable))

    def write_text(self, name: str, text: str) -> None:
        storage.write_bytes(self.path(name), text.encode("utf-8"))

    def write_bytes(self, name: str, data: bytes) -> None:
        storage.write_bytes(self.path(name), data)

    def remove(self, name: str) -> None:
        """Delete a file or a whole directory of the run dir, if it is there."""
        storage.remove(self.path(name))

    def files(self, *directories: str) -> dict[str, int]:
        """Every data file under ``directories`` (names relative to the run dir) with its size;
        hidden files and ``_``-names (manifests, Parquet readers skip both) are not data."""
        found = {}
        for directory in directories:
            for name, size in storage.files(self.path(directory)).items():
                if not name.rsplit("/", 1)[-1].startswith((".", "_")):
                    found[f"{directory}/{name}"] = size
        return found

    def reusable(self, name: str, made_from: Mapping[str, Any]) -> dict[str, Any] | None:
        """The artifact ``name`` if it was made from exactly ``made_from`` (each key equal) and
        every file it records under ``"files"`` is still there with its size; else None."""
        done = self.read_json(name)
        if done is None or any(done.get(key) != value for key, value in made_from.items()):
            return None
        recorded: dict[str, int] = done.get("files") or {}
        for file, size in recorded.items():
            if storage.size(self.path(file)) != size:
                return None
        return done
