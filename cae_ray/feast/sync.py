"""One way every change of the models' states reaches the registry: as one journaled transaction.

    write_state(repo, store, Change(...)) -> what it changed, view by view

A prune, the restore of a prune, ``forget-model`` and its restore each change the repo's
overlay (one model's state, see :mod:`cae_ray.feast.models`); this writes what that change
means everywhere, in the order :mod:`cae_ray.feast.journal` makes safe: the journal of what it
touches, the registry (the views whose cae-ray tags change and the kept FeatureServices that
change, in one commit), the overlay, the audit record, the journal's end. Call it under the
repo lock, after :func:`cae_ray.feast.repo.recover`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cae_ray.feast import backup, import_feast, journal
from cae_ray.feast.overlay import (
    TAG_PREFIX,
    all_view_tags,
    marks,
    ours,
    service_tags,
    services,
    write_overlay,
)
from cae_ray.feast.repo import append_audit

logger = logging.getLogger(__name__)


@dataclass
class Written:
    changed: dict[str, dict[str, list[str]]]
    """Per view written: cae-ray tags removed, added and set to another value."""
    services_set: list[str]
    services_removed: list[str]
    gone: list[str] = field(default_factory=list)
    """Views the change would touch that are no longer in the registry (a colleague deleted
    them): left alone, and left out of the kept services set here."""


@dataclass
class Change:
    """A change of the overlay and the record the audit log keeps of it."""

    action: str
    """``prune``, ``restore`` or ``forget-model``: the audit record's action."""
    run_id: str
    project: str
    before: dict[str, Any]
    """The overlay as read under the lock."""
    after: dict[str, Any]
    """The overlay after the change (its ``readers`` are filled in here, from the registry)."""
    record: Callable[[Written], dict[str, Any]]
    """The audit record, given what the change will write (made just before it is written)."""
    views: list[str] = field(default_factory=list)
    """Views to write even where their tags do not change (a prune's: their last run)."""
    on_view_written: Callable[[str], None] | None = None
    """Called after each view is changed in memory, before the commit (tests inject faults)."""


def write_state(repo: Path, store: Any, change: Change) -> Written:
    """Write ``change`` to the registry, the overlay and the audit log, journaled."""
    registry, project = store.registry, change.project
    # Read everything first: a registry getter re-reads the store by default, which would drop
    # the changes made so far in memory.
    registry.refresh(project)
    present = {s.name: s for s in registry.list_feature_services(project)}
    ours_now = set(services(change.before)) | set(services(change.after))
    change.after["readers"] = marked_readers(change.after, present, ours_now)
    tags_before, tags_after = all_view_tags(change.before), all_view_tags(change.after)
    existing = {fv.name for fv in registry.list_feature_views(project)}
    wanted = {v for v in {*tags_before, *tags_after} if tags_before.get(v) != tags_after.get(v)}
    views = sorted((wanted | set(change.views)) & existing)
    kept_before, kept_after = services(change.before), services(change.after)
    to_set = [n for n, s in kept_after.items() if kept_before.get(n) != s or n not in present]
    to_remove = [n for n in kept_before if n not in kept_after and n in present]
    served = {v for n in to_set for v in kept_after[n]["features"]}
    gone = sorted((wanted | set(change.views) | served) - existing)
    if gone:
        logger.warning("not in the registry of %s, left alone: %s", repo, ", ".join(gone))
    entry = journal.snapshot(
        store, change.action, change.run_id, project, views, [*to_set, *to_remove]
    )
    originals = {v: registry.get_any_feature_view(v, project) for v in views}
    readable = {v: registry.get_any_feature_view(v, project) for v in served & existing}
    changed = {v: _tag_changes(ours(originals[v].tags), tags_after.get(v, {})) for v in views}
    written = Written(
        {v: c for v, c in changed.items() if any(c.values())}, to_set, to_remove, gone
    )
    record = change.record(written)
    journal.begin(repo, entry)
    services_set = [_without(kept_after[n], gone) for n in to_set]
    try:
        _write_registry(repo, store, change, originals, readable, services_set, to_remove)
    except BaseException:
        if backup.as_copied(repo, backup.registry_file(repo, store.config.registry)):
            journal.end(repo)  # nothing of it stayed: the registry is back, byte for byte
        raise
    _record_in_repo(repo, change.after)
    append_audit(repo, change.action, record, entry.id)
    journal.end(repo)
    return written


def _write_registry(
    repo: Path,
    store: Any,
    change: Change,
    originals: dict[str, Any],
    readable: dict[str, Any],
    to_set: list[dict[str, Any]],
    to_remove: list[str],
) -> None:
    registry, project = store.registry, change.project
    tags = all_view_tags(change.after)
    written: list[Any] = []
    try:
        for view, original in originals.items():
            fv = copy.deepcopy(original)
            fv.tags = {**_theirs(fv.tags), **tags.get(view, {})}
            registry.apply_feature_view(fv, project, commit=False)
            written.append(original)
            if change.on_view_written is not None:
                change.on_view_written(view)
        for record in to_set:
            set_service(registry, project, record, {**readable, **originals})
        for name in to_remove:
            registry.delete_feature_service(name, project, commit=False)
        _commit(repo, store)
    except BaseException:
        # A registry that writes eagerly (SQL) already holds part of it: put the views back.
        for fv in written:
            registry.apply_feature_view(fv, project, commit=False)
        _drop_uncommitted(repo, store, project)
        raise


def _commit(repo: Path, store: Any) -> None:
    """Commit the registry; a file registry only when its disk can hold it, and checked whole
    after (Feast rewrites the file in place: a full disk cuts the write short silently)."""
    registry = store.registry
    path = backup.registry_file(repo, store.config.registry)
    proto = getattr(registry, "cached_registry_proto", None)
    if path is None or proto is None:
        registry.commit()
        return
    backup.check_room(path, proto.ByteSize())
    registry.commit()
    backup.check_written(path, proto.ByteSize())  # the bytes Feast wrote, as it stamped them


def _drop_uncommitted(repo: Path, store: Any, project: str) -> None:
    """After a failure: a file registry back as copied (a commit may have been cut short),
    the registry's cache as the store holds it. What cannot be done now (the disk still
    full) the next command does: the journal stays."""
    path = backup.registry_file(repo, store.config.registry)
    try:
        if path is not None:
            backup.put_back(repo, path)
        store.registry.refresh(project)  # a file registry drops the uncommitted changes
    except Exception as e:  # keep the failure that brought us here
        logger.warning("%s: left for the next command to roll back: %s", repo, e)


def _without(service: dict[str, Any], gone: list[str]) -> dict[str, Any]:
    """A kept service's record without the views that are gone from the registry."""
    features = {v: f for v, f in service["features"].items() if v not in gone}
    return {**service, "features": features}


def _record_in_repo(repo: Path, overlay: dict[str, Any]) -> None:
    """The repo's overlay after the change, so the next ``feast apply`` keeps it."""
    write_overlay(repo, overlay)


def _theirs(tags: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in tags.items() if not key.startswith(TAG_PREFIX)}


def set_service(registry: Any, project: str, record: dict[str, Any], views: dict[str, Any]) -> None:
    """Apply (uncommitted) the FeatureService ``record`` describes over ``views`` (by name,
    read before anything was applied)."""
    import_feast()  # keeps our warning filters
    from feast import FeatureService

    service = FeatureService(
        name=record["name"],
        features=[views[v][features] for v, features in record["features"].items()],
        tags=record.get("tags") or service_tags(record),
        description=record["description"],
    )
    registry.apply_feature_service(service, project, commit=False)


def service_readers(present: dict[str, Any], exclude: set[str]) -> dict[tuple[str, str], list[str]]:
    """(view, feature) -> the FeatureServices (but ``exclude``, cae-ray's own) that read it."""
    readers: dict[tuple[str, str], list[str]] = {}
    for name in sorted(set(present) - exclude):
        for projection in present[name].feature_view_projections:
            for f in projection.features:
                readers.setdefault((projection.name, f.name), []).append(name)
    return readers


def marked_readers(
    overlay: dict[str, Any], present: dict[str, Any], exclude: set[str]
) -> dict[str, dict[str, list[str]]]:
    """Per view: each feature the overlay marks that the team's FeatureServices still read."""
    readers = service_readers(present, exclude)
    found: dict[str, dict[str, list[str]]] = {}
    for view, features in marks(overlay).items():
        for feature in features:
            if (view, feature) in readers:
                found.setdefault(view, {})[feature] = readers[(view, feature)]
    return found


def _tag_changes(now: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    """What setting the tags ``now`` to ``after`` changes: removed, added, set to a value."""
    return {
        "removed": sorted(set(now) - set(after)),
        "added": sorted(set(after) - set(now)),
        "reset": sorted(k for k in set(now) & set(after) if now[k] != after[k]),
    }
