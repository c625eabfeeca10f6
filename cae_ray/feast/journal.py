"""The repo's journal: a prune, retirement or restore is one transaction over several stores (the
registry; the overlay, the definitions files and the audit log in the repo), and a kill between
two of them must leave a state the next command can finish or undo.

Before anything is written, :func:`begin` records durably (written, flushed to disk, renamed
into place) what the transaction will touch as it is now: the registry objects (their protos),
the overlay's text and the bytes of the definitions files it rewrites. Then those are written,
then the audit record, which carries the journal's id; :func:`end` removes the journal last.
Whoever finds a journal later (:func:`cae_ray.feast.repo.recover`) knows from the audit log
whether everything was written (the record is there: only the journal's end is missing) or not
(put everything back as the journal recorded it, :func:`roll_back`).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cae_ray.artifacts import write_bytes, write_text
from cae_ray.feast import backup, import_feast
from cae_ray.feast.overlay import OVERLAY

JOURNAL = ".cae_ray_journal.json"


@dataclass(frozen=True)
class Entry:
    """What one transaction touches, as it was before it began."""

    action: str
    """``prune`` or ``restore``."""
    run_id: str
    project: str
    views: dict[str, str]
    """Each feature view it writes: name -> its proto before, base64."""
    services: dict[str, str | None]
    """Each feature service it writes: name -> its proto before, or None where there was none."""
    overlay: str | None
    """The repo overlay's text before (None: there was no overlay file)."""
    files: dict[str, str] = field(default_factory=dict)
    """Each definitions file it rewrites (a retirement): path -> its bytes before, base64."""
    registry_file: str | None = None
    """A file registry's path: its whole bytes are copied beside the journal
    (:mod:`cae_ray.feast.backup`), and a roll back puts them back."""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


def snapshot(
    store: Any,
    action: str,
    run_id: str,
    project: str,
    views: list[str],
    services: list[str],
    files: list[Path] = (),  # type: ignore[assignment]
) -> Entry:
    """The journal entry of a transaction that will write ``views``, ``services`` and
    ``files``: each as it is now (read under the repo lock, after a refresh)."""
    registry = store.registry
    existing = {s.name: s for s in registry.list_feature_services(project)}
    protos = {v: _encode(registry.get_any_feature_view(v, project)) for v in views}
    before = {s: _encode(existing[s]) if s in existing else None for s in services}
    overlay = Path(store.repo_path) / OVERLAY
    text = overlay.read_text() if overlay.exists() else None
    sources = {str(p): base64.b64encode(p.read_bytes()).decode("ascii") for p in files}
    path = backup.registry_file(Path(store.repo_path), store.config.registry)
    copied = str(path) if path is not None and path.is_file() else None
    return Entry(action, run_id, project, protos, before, text, sources, copied)


def begin(repo: Path, entry: Entry) -> None:
    """Record ``entry`` durably: after this returns, a kill leaves it for the next command. A
    file registry is copied first (``RegistryDiskFullError`` when the copy cannot fit)."""
    if entry.registry_file is not None:
        backup.keep(repo, Path(entry.registry_file))
    path = repo / JOURNAL
    partial = path.with_name(path.name + ".partial")
    with partial.open("w") as handle:
        json.dump(asdict(entry), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    _sync_directory(repo)


def end(repo: Path) -> None:
    """The transaction is whole: forget its journal."""
    (repo / JOURNAL).unlink(missing_ok=True)
    backup.forget(repo)
    _sync_directory(repo)


def pending(repo: Path) -> Entry | None:
    """The journal of a transaction that did not end, if there is one."""
    path = repo / JOURNAL
    if not path.exists():
        return None
    return Entry(**json.loads(path.read_text()))


def roll_back(store: Any, entry: Entry) -> None:
    """Put the registry objects, the overlay and the definitions files back as ``entry``
    recorded them: the registry object by object, in one commit (so a colleague's `feast
    apply` since then stays), or, when it no longer decodes (a write cut short), whole from
    its copy."""
    registry, project = store.registry, entry.project
    repo = Path(store.repo_path)
    file = Path(entry.registry_file) if entry.registry_file is not None else None
    if file is not None and not backup.decodes(file) and backup.put_back(repo, file):
        registry.refresh(project)
    else:
        _replay(registry, entry)
    overlay = repo / OVERLAY
    if entry.overlay is None:
        overlay.unlink(missing_ok=True)
    else:
        write_text(overlay, entry.overlay)
    for path, blob in entry.files.items():
        write_bytes(Path(path), base64.b64decode(blob))


def _replay(registry: Any, entry: Entry) -> None:
    """Put back each registry object ``entry`` recorded, in one commit."""
    import_feast()  # keeps our warning filters
    from feast import FeatureService, FeatureView
    from feast.protos.feast.core.FeatureService_pb2 import FeatureService as ServiceProto
    from feast.protos.feast.core.FeatureView_pb2 import FeatureView as ViewProto

    project = entry.project
    registry.refresh(project)
    # Read first: a registry getter re-reads the store by default, dropping what was applied.
    present = {s.name for s in registry.list_feature_services(project)}
    for view_blob in entry.views.values():
        view = FeatureView.from_proto(_decode(view_blob, ViewProto()))
        registry.apply_feature_view(view, project, commit=False)
    for name, service_blob in entry.services.items():
        if service_blob is not None:
            service = FeatureService.from_proto(_decode(service_blob, ServiceProto()))
            registry.apply_feature_service(service, project, commit=False)
        elif name in present:
            registry.delete_feature_service(name, project, commit=False)
    registry.commit()


def _encode(feast_object: Any) -> str:
    return base64.b64encode(feast_object.to_proto().SerializeToString()).decode("ascii")


def _decode(blob: str, proto: Any) -> Any:
    proto.ParseFromString(base64.b64decode(blob))
    return proto


def _sync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (where the OS lets a directory sync)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
