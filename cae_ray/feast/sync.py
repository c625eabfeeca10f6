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

from cae_ray.feast import import_feast, journal
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
    missing = sorted((wanted | set(change.views)) - existing)
    if missing:
        logger.warning("not in the registry of %s, left alone: %s", repo, ", ".join(missing))
    views = sorted((wanted | set(change.views)) & existing)
    kept_before, kept_after = services(change.before), services(change.after)
    to_set = [n for n, s in kept_after.items() if kept_before.get(n) != s or n not in present]
    to_remove = [n for n in kept_before if n not in kept_after and n in present]
    entry = journal.snapshot(
        store, change.action, change.run_id, project, views, [*to_set, *to_remove]
    )
    originals = {v: registry.get_any_feature_view(v, project) for v in views}
    needed = {v for n in to_set for v in kept_after[n]["features"]} - set(originals)
    readable = {v: registry.get_any_feature_view(v, project) for v in needed}
    changed = {v: _tag_changes(ours(originals[v].tags), tags_after.get(v, {})) for v in views}
    written = Written({v: c for v, c in changed.items() if any(c.values())}, to_set, to_remove)
    record = change.record(written)
    journal.begin(repo, entry)
    _write_registry(store, change, originals, readable, [kept_after[n] for n in to_set], to_remove)
    _record_in_repo(repo, change.after)
    append_audit(repo, change.action, record, entry.id)
    journal.end(repo)
    return written


def _write_registry(
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
        registry.commit()
    except BaseException:
        # A registry that writes eagerly (SQL) already holds part of it: put the views back.
        for fv in written:
            registry.apply_feature_view(fv, project, commit=False)
        registry.refresh(project)  # a file registry drops the uncommitted changes
        raise


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
