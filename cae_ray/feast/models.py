"""The models that share a Feast repo, and the marks derived from all of them.

A feature store serves many models, each trained on its own label from the same views. Each
config's ``feast.kept_service`` names its model; the overlay keeps, per model, the state its
latest applied run left (a plain dict, so the overlay stays YAML)::

    label:       the config's data.target (None: reconstruction)
    run, at:     the run id and when it was applied (UTC)
    description: of its kept FeatureService
    kept:        {view: [feature, ...]}       the features it selected (its kept service)
    dropped:     {view: {feature: mark}}      the candidates it left unselected, each with the
                                              run that first left it out and since when
    migrated:    the overlay format it was read from (only a model an earlier version made:
                 its label is unknown); view_runs: {view: run}, the run each view was last
                 covered by there

:func:`derive_marks` is the one place that says which features are deprecated: those that
every model whose candidates include them leaves unselected; a feature's mark is that of the
model that stopped keeping it last. A feature kept by any model is kept. Light imports only:
the overlay hook reads this in every definitions module Feast imports.
"""

from __future__ import annotations

from typing import Any

State = dict[str, Any]
Mark = dict[str, Any]
"""``{"run": run id, "since": UTC stamp}`` (``since`` None on marks of cae-ray before 0.2)."""
Marks = dict[str, dict[str, Mark]]
"""Per view: feature -> mark."""


def candidates(state: State) -> dict[str, set[str]]:
    """Per view: the features the model's latest run considered (kept or left out)."""
    views: dict[str, set[str]] = {v: set() for v in state.get("view_runs") or {}}
    for view, features in state["kept"].items():
        views.setdefault(view, set()).update(features)
    for view, features in state["dropped"].items():
        views.setdefault(view, set()).update(features)
    return views


def after_prune(
    state: State | None,
    *,
    run_id: str,
    at: str,
    label: str | None,
    keep: dict[str, list[str]],
    unselected: dict[str, list[str]],
    description: str,
    order: int,
) -> State:
    """The model's state after an applied run: its selection now; a feature it left out
    before and still leaves out keeps the mark of the run that first left it out. ``order``
    counts the applied runs in the repo (:func:`next_order`): stamps are to the second, and two
    models' runs often land in the same one."""
    before = (state or {}).get("dropped") or {}
    dropped = {
        view: {f: before.get(view, {}).get(f) or {"run": run_id, "since": at} for f in features}
        for view, features in unselected.items()
        if features
    }
    return {
        "label": label,
        "run": run_id,
        "at": at,
        "order": order,
        "description": description,
        "kept": {view: list(features) for view, features in keep.items() if features},
        "dropped": dropped,
    }


def keepers(models: dict[str, State]) -> dict[tuple[str, str], list[str]]:
    """(view, feature) -> the models that keep it (sorted), for every kept feature."""
    kept: dict[tuple[str, str], list[str]] = {}
    for name in sorted(models):
        for view, features in models[name]["kept"].items():
            for feature in features:
                kept.setdefault((view, feature), []).append(name)
    return kept


def derive_marks(models: dict[str, State], retired: dict[str, Any] | None = None) -> Marks:
    """The deprecation marks all models' states call for: a feature is marked when every model
    whose candidates include it leaves it unselected (and it is not retired); its mark is the
    latest of theirs (when the last model stopped keeping it)."""
    kept = keepers(models)
    gone = retired or {}
    marks: Marks = {}
    for name in sorted(models):
        for view, features in models[name]["dropped"].items():
            for feature, mark in features.items():
                if (view, feature) in kept or feature in gone.get(view, {}):
                    continue
                held = marks.setdefault(view, {}).get(feature)
                if held is None or _later(mark, held):
                    marks[view][feature] = dict(mark)
    return marks


def _later(mark: Mark, than: Mark) -> bool:
    return (mark.get("since") or "", mark["run"]) > (than.get("since") or "", than["run"])


def next_order(models: dict[str, State]) -> int:
    """The order of the next applied run: after every model's latest."""
    return 1 + max((int(state.get("order") or 0) for state in models.values()), default=0)


def last_runs(models: dict[str, State]) -> dict[str, str]:
    """Per view: the run of the model applied last among those whose candidates include it."""
    latest: dict[str, tuple[int, str, str, str]] = {}
    for state in models.values():
        for view in candidates(state):
            run = str((state.get("view_runs") or {}).get(view, state["run"]))
            order = int(state.get("order") or 0)  # 0: a state of an earlier version
            key = (order, str(state.get("at") or ""), str(state["run"]), run)
            if view not in latest or key > latest[view]:
                latest[view] = key
    return {view: key[3] for view, key in latest.items()}


def mark_changes(before: Marks, after: Marks) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(Per view: the features marked in ``after`` but not ``before``; and the reverse.)"""
    added = {v: sorted(set(f) - set(before.get(v, {}))) for v, f in after.items()}
    removed = {v: sorted(set(f) - set(after.get(v, {}))) for v, f in before.items()}
    return _nonempty(added), _nonempty(removed)


def _nonempty(per_view: dict[str, list[str]]) -> dict[str, list[str]]:
    return {view: names for view, names in per_view.items() if names}


def model_of_v2(overlay: dict[str, Any], default: str) -> tuple[str, State] | None:
    """The one model an overlay of format 2 (one kept service, marks set by its latest run)
    stands for: named after its kept service (``default`` when it had none), label unknown."""
    kept = overlay.get("kept_service")
    marks, last_run = overlay.get("marks") or {}, overlay.get("last_run") or {}
    if kept is None and not marks and not last_run:
        return None
    stamps = [m.get("since") or "" for features in marks.values() for m in features.values()]
    state = {
        "label": None,
        "run": kept["run"] if kept else max(last_run.values(), default="?"),
        "at": (kept or {}).get("at") or max(stamps, default=""),
        "description": kept["description"] if kept else "",
        "kept": {v: list(f) for v, f in (kept or {}).get("features", {}).items()},
        "dropped": {v: dict(f) for v, f in marks.items() if f},
        "migrated": 2,
        "view_runs": dict(last_run),
    }
    return (kept["name"] if kept else default), state
