"""Set a Feast registry's deprecation marks to what the latest run decided, and take them back.

    plan_prune(config, run)            -> the plan (which features, which views, the kept service)
    prune(config, run, apply=...)      -> RUN_DIR/prune.json (+ the registry, + the audit log)
    restore(repo, run_id)              -> the registry as it was before that prune (or retirement)

Marks are view-level tags (no new view version, no online-table switch, docs/lifecycle.md): one key
per deprecated feature, ``cae-ray/deprecated.<feature>`` = ``<run id>@<UTC time first set>``,
plus ``cae-ray/last-run``. An applied prune sets them to exactly its unselected features on
the candidates it covers: features it keeps lose earlier marks, features still unselected keep
their first date. It also sets the one kept FeatureService (``feast.kept_service``) to the
selected features. The state lives in the repo's overlay (:mod:`cae_ray.feast.overlay`), from
which :func:`cae_ray.feast.overlay.view_tags` derives the tags.

A prune and a restore are each one transaction (:mod:`cae_ray.feast.journal`): under the repo
lock, a journal of what they touch is written first, then the registry (read fresh, changed in
memory, one commit), then the overlay, then an audit record in ``cae_ray_audit.jsonl`` (who,
when, run id, the marks added and removed, what stood before, validation figures). Whichever
command finds a journal left by a kill finishes or rolls it back first
(:func:`cae_ray.feast.repo.recover`). Only the latest prune or retirement can be restored: the
audit record holds exactly what stood before it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cae_ray.artifacts import PRUNE_PLAN, RunDir
from cae_ray.config import Config
from cae_ray.feast import import_feast, journal, retire
from cae_ray.feast.errors import MissingFeastConfigError, NotLatestRunError, PruneRefusedError
from cae_ray.feast.overlay import (
    HOOK,
    TAG_PREFIX,
    has_hook,
    ours,
    read_overlay,
    service_tags,
    view_tags,
    write_overlay,
)
from cae_ray.feast.refs import column_refs
from cae_ray.feast.repo import (
    append_audit,
    check_writable,
    find_action,
    latest_action,
    recover,
    repo_lock,
    utc_stamp,
)
from cae_ray.feast.store import open_store
from cae_ray.records import ExportManifest, Selection, Verdict, checked_selection

logger = logging.getLogger(__name__)


@dataclass
class PrunePlan:
    run_id: str
    project: str
    deprecate: dict[str, list[str]]
    """Per feature view: the features to mark deprecated."""
    keep: dict[str, list[str]]
    """Per feature view: the selected features (they go into the kept feature service)."""
    feature_service: str
    """The kept FeatureService (``feast.kept_service``), set to the kept features."""
    validation: dict[str, Any]
    forced_reason: str | None = None
    added: dict[str, list[str]] = field(default_factory=dict)
    """Per view: features marked that were not (on apply: as found under the lock)."""
    removed: dict[str, list[str]] = field(default_factory=dict)
    """Per view: features kept now whose earlier mark this prune takes off."""
    applied: bool = False
    already_applied: bool = False
    """True when this very prune is the latest applied one: nothing was written."""
    recovered: str | None = None
    """What was done first about an earlier transaction that had been interrupted."""
    hook_missing: bool = False
    """True when the repo's definitions lack the overlay hook (marks die on `feast apply`)."""
    at: str = ""
    """When it was applied (UTC): the date of the marks it adds."""
    previous: dict[str, Any] = field(default_factory=dict)
    """Filled on apply: what stood before on what it touches (restore puts it back)."""

    @property
    def views(self) -> list[str]:
        return sorted({*self.deprecate, *self.keep})

    def as_json(self) -> dict[str, Any]:
        """As ``prune.json`` (and the audit log) hold it."""
        return asdict(self)

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> PrunePlan:
        """A plan as ``prune.json`` holds it (keys of other versions ignored)."""
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})

    @classmethod
    def read(cls, run: RunDir) -> PrunePlan | None:
        """The run's ``prune.json``, if the prune step wrote one."""
        saved = run.read_json(PRUNE_PLAN)
        return None if saved is None else cls.from_json(saved)

    def summary(self) -> dict[str, Any]:
        """The figures ``run.json`` keeps."""
        return {
            "run_id": self.run_id,
            "applied": self.applied,
            "feature_service": self.feature_service,
            "hook_missing": self.hook_missing,
            "deprecated": sum(len(marked) for marked in self.deprecate.values()),
            "undeprecated": sum(len(back) for back in self.removed.values()),
        }


# --- the plan -------------------------------------------------------------------------------


def plan_prune(config: Config, run: RunDir, force_reason: str | None = None) -> PrunePlan:
    """Map the selection in ``run`` back to feature references, refusing unless a passed
    validation of this very selection is on record (or ``force_reason`` says why not)."""
    if config.feast is None:
        raise MissingFeastConfigError("the config", "`feast:` section")
    # Made by this very config from this data, whatever --force says; edited only if forced.
    selection, _ = checked_selection(config, run, edited_ok=force_reason is not None)
    validation = _checked_validation(run, selection, force_reason)
    store = open_store(config.feast.repo)
    manifest = ExportManifest.read(run)
    exported = manifest.columns if manifest is not None else None
    refs = column_refs(selection.candidate_features, store, exported)
    chosen = set(selection.selected_features)
    deprecate: dict[str, list[str]] = {}
    keep: dict[str, list[str]] = {}
    for column in selection.candidate_features:
        view, feature = refs[column]
        (keep if column in chosen else deprecate).setdefault(view, []).append(feature)
    plan = PrunePlan(
        run_id=selection.digest(),  # the recorded hash, unless the file was edited
        project=store.project,
        deprecate=deprecate,
        keep=keep,
        feature_service=config.feast.kept_service,
        validation=validation,
        forced_reason=force_reason,
    )
    _, plan.added, plan.removed = marked(read_overlay(Path(config.feast.repo)), plan)
    return plan


def _checked_validation(
    run: RunDir, selection: Selection, force_reason: str | None
) -> dict[str, Any]:
    """The passed validation of this very selection, or why there is none (an error, unless
    ``force_reason`` says why to prune anyway)."""
    if selection.edited:
        problem = "selection.json was edited after it was made"
    else:
        verdict = Verdict.read(run)
        if verdict is None:
            problem = "no validation.json: the selection was never validated"
        elif verdict.selection_hash != selection.selection_hash:
            problem = "validation.json is for another selection"
        elif not verdict.passed:
            problem = f"the validation gate failed: {verdict.reason}"
        else:
            figures = verdict.as_json()
            keys = ("metric", "baseline", "selected", "difference", "interval", "tolerance")
            return {key: figures[key] for key in keys}
    if force_reason is None:
        raise PruneRefusedError(str(run), problem)
    logger.warning("prune: forced despite: %s (reason: %s)", problem, force_reason)
    return {"forced_despite": problem}


def marked(
    overlay: dict[str, Any], plan: PrunePlan
) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, list[str]]]:
    """The overlay after ``plan``, and the marks it adds and removes (per view). Marks on
    features the run did not consider stay: it has no opinion on them."""
    after, at = copy.deepcopy(overlay), plan.at or utc_stamp()
    added: dict[str, list[str]] = {}
    removed: dict[str, list[str]] = {}
    for view in plan.views:
        marks = after["marks"].pop(view, {})
        for feature in plan.keep.get(view, []):
            if marks.pop(feature, None) is not None:
                removed.setdefault(view, []).append(feature)
        for feature in plan.deprecate.get(view, []):
            if feature not in marks:
                marks[feature] = {"run": plan.run_id, "since": at}
                added.setdefault(view, []).append(feature)
        if marks:
            after["marks"][view] = marks
        after["last_run"][view] = plan.run_id
    after["kept_service"] = {
        "name": plan.feature_service,
        "run": plan.run_id,
        "at": at,
        "features": plan.keep,
        "description": _service_description(plan),
    }
    after["legacy_services"].pop(plan.feature_service, None)
    return after, added, removed


# --- apply ----------------------------------------------------------------------------------


def prune(
    config: Config,
    run: RunDir,
    *,
    apply: bool = False,
    force_reason: str | None = None,
    on_view_written: Callable[[str], None] | None = None,
) -> PrunePlan:
    """Plan (and with ``apply``, write) the deprecation marks; save ``RUN_DIR/prune.json``.

    Every caller (the CLI, ``cae-ray run``, the adapters) gets both guards: no prune without a
    passed validation of this very selection (:func:`plan_prune`), and a prune that is the
    latest applied one is not applied again: it says so and changes nothing.
    ``on_view_written(view)`` is called after each view is changed in memory, before the
    commit: tests inject failures and pauses there.
    """
    plan = plan_prune(config, run, force_reason)
    assert config.feast is not None
    repo = Path(config.feast.repo)
    plan.hook_missing = not has_hook(repo)
    if apply:
        store = open_store(str(repo))
        check_writable(repo, store)  # before the lock: taking it already writes in the repo
        with repo_lock(repo):
            plan.recovered = recover(repo, store)
            latest = latest_action(repo)
            if latest is not None and latest["action"] == "prune":
                plan.already_applied = latest["run_id"] == plan.run_id
            if plan.already_applied:
                plan.applied = True
            else:
                _apply(repo, store, plan, on_view_written)
    saved = run.read_json(PRUNE_PLAN)
    if not (plan.already_applied and saved and saved.get("applied")):
        run.write_json(PRUNE_PLAN, plan.as_json())
    return plan


def _apply(
    repo: Path, store: Any, plan: PrunePlan, on_view_written: Callable[[str], None] | None
) -> None:
    """The prune as one journaled transaction: journal, registry, overlay, audit record."""
    if plan.hook_missing:
        logger.warning(
            "%s has no `%s` in its definitions: the next `feast apply` will remove these "
            "marks. Add `from cae_ray.feast.overlay import annotate_all; %s` to it.",
            repo,
            HOOK,
            HOOK,
        )
    registry, project = store.registry, plan.project
    # Read everything first: a registry getter re-reads the store by default, which would drop
    # the changes made so far in memory.
    registry.refresh(project)
    entry = journal.snapshot(
        store, "prune", plan.run_id, project, plan.views, [plan.feature_service]
    )
    originals = {v: registry.get_any_feature_view(v, project) for v in plan.views}
    services = {s.name: s for s in registry.list_feature_services(project)}
    overlay = read_overlay(repo)
    plan.at = utc_stamp()
    after, plan.added, plan.removed = marked(overlay, plan)
    plan.previous = {
        "tags": {v: ours(originals[v].tags) for v in plan.views},
        "marks": {v: overlay["marks"].get(v) for v in plan.views},
        "last_run": {v: overlay["last_run"].get(v) for v in plan.views},
        "kept_service": overlay["kept_service"],
        "legacy_service": overlay["legacy_services"].get(plan.feature_service),
        "service": service_record(services.get(plan.feature_service)),
    }
    journal.begin(repo, entry)
    _write_marks(store, plan, after, originals, on_view_written)
    _record_in_repo(repo, after)
    plan.applied = True
    append_audit(repo, "prune", asdict(plan), entry.id)
    journal.end(repo)


def _write_marks(
    store: Any,
    plan: PrunePlan,
    overlay: dict[str, Any],
    originals: dict[str, Any],
    on_view_written: Callable[[str], None] | None,
) -> None:
    registry, project = store.registry, plan.project
    written: list[Any] = []
    try:
        for view in plan.views:
            fv = copy.deepcopy(originals[view])
            fv.tags = {**_theirs(fv.tags), **view_tags(overlay, view)}
            registry.apply_feature_view(fv, project, commit=False)
            written.append(originals[view])
            if on_view_written is not None:
                on_view_written(view)
        set_service(registry, project, overlay["kept_service"], originals)
        registry.commit()
    except BaseException:
        # A registry that writes eagerly (SQL) already holds part of it: put the views back.
        for fv in written:
            registry.apply_feature_view(fv, project, commit=False)
        registry.refresh(project)  # a file registry drops the uncommitted changes
        raise


def _theirs(tags: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in tags.items() if not key.startswith(TAG_PREFIX)}


def service_record(service: Any) -> dict[str, Any] | None:
    """A registry FeatureService as data (None stays None): enough to make it again."""
    if service is None:
        return None
    return {
        "name": service.name,
        "features": {
            p.name: [f.name for f in p.features] for p in service.feature_view_projections
        },
        "tags": dict(service.tags),
        "description": service.description,
    }


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


def _service_description(plan: PrunePlan) -> str:
    return f"The {sum(map(len, plan.keep.values()))} features cae-ray kept in run {plan.run_id}"


def _record_in_repo(repo: Path, overlay: dict[str, Any]) -> None:
    """The repo's overlay after the prune, so the next ``feast apply`` keeps its marks."""
    write_overlay(repo, overlay)


# --- restore ----------------------------------------------------------------------------------


def restore(repo: str, run_id: str) -> dict[str, Any]:
    """Undo the latest prune or retirement, ``run_id``, as one journaled transaction: the
    registry (and for a retirement the definitions files) back as they were before it.
    Returns what it changed; ``restored`` False (and nothing changed) when it was undone
    already. ``NotLatestRunError`` when a later prune or retirement stands on it."""
    store = open_store(repo)
    check_writable(Path(repo), store)
    with repo_lock(Path(repo)):
        recovered = recover(Path(repo), store)
        record, live = find_action(Path(repo), run_id)  # UnknownRunIdError if never applied
        live_ids = [r["run_id"] for r in live]
        if run_id not in live_ids:
            return {**record, "restored": False, "changed": {}, "recovered": recovered}
        if live_ids[-1] != run_id:
            later = live_ids[live_ids.index(run_id) + 1 :]
            raise NotLatestRunError(repo, run_id, later[::-1])
        if record["action"] == "retire":
            done = retire.restore_retirement(Path(repo), store, record)
        else:
            done = _restore_prune(Path(repo), store, record)
        return {**done, "recovered": recovered}


def _restore_prune(repo: Path, store: Any, record: dict[str, Any]) -> dict[str, Any]:
    registry, project = store.registry, record["project"]
    previous, service = record["previous"], record["feature_service"]
    registry.refresh(project)
    views = list(previous["tags"])
    entry = journal.snapshot(store, "restore", record["run_id"], project, views, [service])
    needed = {*views, *(previous["service"] or {"features": {}})["features"]}
    current = {v: registry.get_any_feature_view(v, project) for v in needed}
    present = {s.name for s in registry.list_feature_services(project)}
    changed = {v: _tag_changes(ours(current[v].tags), previous["tags"][v]) for v in views}
    journal.begin(repo, entry)
    for view in views:
        fv = copy.deepcopy(current[view])
        fv.tags = {**_theirs(fv.tags), **previous["tags"][view]}
        registry.apply_feature_view(fv, project, commit=False)
    if previous["service"] is not None:
        set_service(registry, project, previous["service"], current)
    elif service in present:
        registry.delete_feature_service(service, project, commit=False)
    registry.commit()
    overlay = read_overlay(repo)
    for key in ("marks", "last_run"):
        for view, value in previous[key].items():
            overlay[key].pop(view, None)
            if value is not None:
                overlay[key][view] = value
    overlay["kept_service"] = previous["kept_service"]
    if previous.get("legacy_service") is not None:
        overlay["legacy_services"][service] = previous["legacy_service"]
    write_overlay(repo, overlay)
    done = {
        **record,
        "restored": True,
        "changed": {v: c for v, c in changed.items() if any(c.values())},
        "service_removed": previous["service"] is None and service in present,
    }
    append_audit(repo, "restore", done, entry.id)
    journal.end(repo)
    return done


def _tag_changes(now: dict[str, str], before: dict[str, str]) -> dict[str, list[str]]:
    """What putting ``before`` back changes: tags removed, added back, set back to a value."""
    return {
        "removed": sorted(set(now) - set(before)),
        "added": sorted(set(before) - set(now)),
        "reset": sorted(k for k in set(now) & set(before) if now[k] != before[k]),
    }
