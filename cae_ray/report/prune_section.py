"""The report's Feast part, from ``prune.json``: each feature's status and mark change, each
view's kept and deprecated features, and the other models sharing those views."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cae_ray.feast.registry import PrunePlan
from cae_ray.report.shown import chips, utc

Json = dict[str, Any]


def feature_status(selected: bool, prune: PrunePlan | None, ref: tuple[str, str]) -> str:
    """A feature's status on the page: picked or not; after a prune kept, deprecated (or to
    be), or kept by another model that shares the store."""
    if prune is None:
        return "selected" if selected else "not selected"
    if selected:
        return "kept"
    view, feature = ref
    if feature in prune.kept_by_others.get(view, {}):
        return "kept by another model"
    return "deprecated" if prune.applied else "to deprecate"


def column_refs(prune: PrunePlan | None) -> dict[str, tuple[str, str]]:
    """Column name -> (view, feature), from the prune plan: an exported column is named
    ``view__feature``; a table's own column is the feature's name."""
    refs: dict[str, tuple[str, str]] = {}
    for views in (prune.keep, prune.deprecate) if prune is not None else ():
        for view, features in views.items():
            for feature in features:
                refs[f"{view}__{feature}"] = refs[feature] = (view, feature)
    return refs


def mark_changes(prune: PrunePlan | None) -> dict[tuple[str, str], str]:
    """(view, feature) -> how its mark changed against the registry the prune found (what the
    previous applied run left there)."""
    if prune is None:
        return {}
    added, removed = prune.added, prune.removed
    changes = {}
    for view, features in prune.keep.items():
        for f in features:
            changes[view, f] = "mark removed" if f in removed.get(view, []) else "unchanged"
    others = prune.kept_by_others
    for view, features in prune.deprecate.items():
        for f in features:
            new = f in added.get(view, [])
            changes[view, f] = "newly deprecated" if new else "deprecated before"
            if f in others.get(view, {}):
                changes[view, f] = f"kept by {', '.join(others[view][f])}"
    return changes


def prune_section(
    p: PrunePlan | None, grace: timedelta | None = None, value_bytes: dict[str, int] | None = None
) -> Json | None:
    """What ``prune.json`` planned or applied, view by view, or None when there is none; first
    the owner's summary (:func:`owner_lines`)."""
    if p is None:
        return None
    return {
        "summary": owner_lines(p, grace, value_bytes or {}),
        "project": p.project,
        "state": "marks applied to the registry" if p.applied else "planned, not applied",
        "feature_service": p.feature_service,
        "forced_reason": p.forced_reason or "",
        "hook_missing": p.hook_missing,
        "views": [_view(view, p) for view in p.views],
        "others": [_other(name, o) for name, o in p.others.items()],
        "readers": [
            f"{view}:{feature} (deprecated) is still read by FeatureService {', '.join(names)}"
            for view, features in sorted(p.readers.items())
            for feature, names in sorted(features.items())
        ],
    }


def _view(view: str, p: PrunePlan) -> Json:
    gone, kept = p.deprecate.get(view, []), p.keep.get(view, [])
    by_others = p.kept_by_others.get(view, {})
    marked = [f for f in gone if f not in by_others]
    shown = chips((kept, "on"), (list(by_others), "other"), (marked, "off"))
    return {
        "name": view,
        "gone": len(marked),
        "kept": len(kept),
        "by_others": len(by_others),
        "chips": shown,
    }


def _other(name: str, other: Json) -> Json:
    """Another model sharing the run's views, as the prune found it: what it keeps there."""
    keep = other.get("keep") or {}
    names = [f"{view}:{f}" for view, features in sorted(keep.items()) for f in features]
    return {
        "name": name,
        "label": str(other.get("label") or "none"),
        "run": str(other.get("run") or "?"),
        "at": utc(other.get("at")),
        "kept": len(names),
        "chips": chips((names, "on")),
    }


def owner_lines(p: PrunePlan, grace: timedelta | None, value_bytes: dict[str, int]) -> list[str]:
    """What the registry's owner needs first: what leaves production and what it weighs per
    entity row, what changed against the marks the prune found, when the new marks become due
    to retire, and who still reads a deprecated feature."""
    leaving = [
        f"{view}__{feature}"
        for view, features in p.deprecate.items()
        for feature in features
        if feature not in p.kept_by_others.get(view, {})
    ]
    verb = "leave" if p.applied else "would leave"
    said = f"{len(leaving):,} feature(s) {verb} production (deprecated: no model keeps them)"
    sized = [value_bytes[column] for column in leaving if column in value_bytes]
    if sized:
        some = "" if len(sized) == len(leaving) else f" for the {len(sized):,} of fixed width"
        said += f", {sum(sized):,} bytes per entity row{some}"
    lines = [said + "."]
    added, back = sum(map(len, p.added.values())), sum(map(len, p.removed.values()))
    lines.append(
        f"Against the marks the registry held before: {added:,} newly deprecated, {back:,} back "
        "in use."
    )
    if p.applied and p.at and grace is not None and added:
        due = datetime.fromisoformat(p.at.replace("Z", "+00:00")) + grace
        lines.append(
            f"The newly deprecated become due to retire on {due:%Y-%m-%d} (grace period "
            f"{_days(grace)}); `cae-ray retire` then removes them from the definitions."
        )
    read = sum(map(len, p.readers.values()))
    if read:
        lines.append(f"{read:,} deprecated feature(s) are still read by FeatureServices: below.")
    return lines


def _days(grace: timedelta) -> str:
    days = grace.total_seconds() / 86400
    return f"{days:g} day(s)" if days >= 1 else f"{grace.total_seconds() / 3600:g} hour(s)"
