"""Mark the unselected features deprecated in a Feast registry, and take the marks back.

    plan_prune(config, run)            -> the plan (which features, which views, which service)
    prune(config, run, apply=...)      -> RUN_DIR/prune.json (+ the registry, + the audit log)
    restore(repo, run_id)              -> the registry as it was before that prune

Marks are view-level tags (no new view version, no online-table switch; see README): one key
per deprecated feature, ``cae-ray/deprecated.<feature>`` = run id, plus ``cae-ray/last-run``.
A prune also registers a FeatureService of the K kept features for models to switch to.

A prune and a restore are each one transaction (:mod:`cae_ray.feast.journal`): under the repo
lock, a journal of what they touch is written first, then the registry (read fresh, changed in
memory, one commit), then the overlay, then an audit record in ``cae_ray_audit.jsonl`` (who,
when, run id, features, validation figures), which ``restore`` reads to undo exactly what the
prune did. Whichever command finds a journal left by a kill (prune, restore, check) finishes
or rolls it back first (:func:`recover`). Before anything is written, a pre-flight opens for
writing everything that will be written (:func:`cae_ray.feast.repo.check_writable`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cae_ray.artifacts import (
    EXPORT_MANIFEST,
    PRUNE_PLAN,
    VALIDATION,
    RunDir,
    checked_selection,
    selection_digest,
)
from cae_ray.config import Config
from cae_ray.feast import import_feast, journal
from cae_ray.feast.errors import MissingFeastConfigError, PruneRefusedError
from cae_ray.feast.overlay import HOOK, has_hook, read_overlay, tags_of_view, write_overlay
from cae_ray.feast.refs import column_refs
from cae_ray.feast.repo import (
    append_audit,
    audited,
    check_writable,
    find_prune,
    is_live,
    repo_lock,
)
from cae_ray.feast.store import open_store

logger = logging.getLogger(__name__)

TAG_PREFIX = "cae-ray/"
LAST_RUN = TAG_PREFIX + "last-run"


def deprecation_tag(feature: str) -> str:
    return f"{TAG_PREFIX}deprecated.{feature}"


@dataclass
class PrunePlan:
    run_id: str
    project: str
    deprecate: dict[str, list[str]]
    """Per feature view: the features to mark deprecated."""
    keep: dict[str, list[str]]
    """Per feature view: the selected features (they go into the feature service)."""
    feature_service: str
    validation: dict[str, Any]
    forced_reason: str | None = None
    applied: bool = False
    already_applied: bool = False
    """True when this very prune was already applied (and not restored): nothing was written."""
    recovered: str | None = None
    """What was done first about an earlier prune or restore that had been interrupted."""
    hook_missing: bool = False
    """True when the repo's definitions lack the overlay hook (marks die on `feast apply`)."""
    previous: dict[str, Any] = field(default_factory=dict)
    """Filled on apply: each touched view's tags before, and whether the service existed."""


# --- the plan -------------------------------------------------------------------------------


def plan_prune(config: Config, run: RunDir, force_reason: str | None = None) -> PrunePlan:
    """Map the selection in ``run`` back to feature references, refusing unless a passed
    validation of this very selection is on record (or ``force_reason`` says why not)."""
    if config.feast is None:
        raise MissingFeastConfigError("the config", "`feast:` section")
    # Made by this very config from this data, whatever --force says; edited only if forced.
    selection, _ = checked_selection(config, run, edited_ok=force_reason is not None)
    validation = _checked_validation(run, selection, selection_digest(selection), force_reason)
    store = open_store(config.feast.repo)
    manifest = run.read_json(EXPORT_MANIFEST)
    exported = manifest["columns"] if manifest is not None else None
    refs = column_refs(selection["candidate_features"], store, exported)
    chosen = set(selection["selected_features"])
    deprecate: dict[str, list[str]] = {}
    keep: dict[str, list[str]] = {}
    for column in selection["candidate_features"]:
        view, feature = refs[column]
        (keep if column in chosen else deprecate).setdefault(view, []).append(feature)
    run_id = selection_digest(selection)  # the recorded hash, unless the file was edited
    return PrunePlan(
        run_id=run_id,
        project=store.project,
        deprecate=deprecate,
        keep=keep,
        feature_service=f"cae_ray_{run_id}",
        validation=validation,
        forced_reason=force_reason,
    )


def _checked_validation(
    run: RunDir, selection: dict[str, Any], digest: str, force_reason: str | None
) -> dict[str, Any]:
    """The passed validation of this very selection, or why there is none (an error, unless
    ``force_reason`` says why to prune anyway)."""
    if selection.get("selection_hash") != digest:
        problem = "selection.json was edited after it was made"
    else:
        validation = run.read_json(VALIDATION)
        if validation is None:
            problem = "no validation.json: the selection was never validated"
        elif validation.get("selection_hash") != digest:
            problem = "validation.json is for another selection"
        elif not validation.get("passed"):
            problem = f"the validation gate failed: {validation.get('reason')}"
        else:
            keys = ("metric", "baseline", "selected", "difference", "interval", "tolerance")
            return {key: validation[key] for key in keys}
    if force_reason is None:
        raise PruneRefusedError(str(run), problem)
    logger.warning("prune: forced despite: %s (reason: %s)", problem, force_reason)
    return {"forced_despite": problem}


# --- apply and restore ----------------------------------------------------------------------


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
    passed validation of this very selection (:func:`plan_prune`), and a prune already applied
    to the registry (and not restored since) is not applied again: it says so and changes
    nothing. ``on_view_written(view)`` is called after each view is changed in memory, before
    the commit: tests inject failures and pauses there.
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
            if is_live(repo, plan.run_id):
                plan.applied = plan.already_applied = True
            else:
                _apply(repo, store, plan, on_view_written)
    saved = run.read_json(PRUNE_PLAN)
    if not (plan.already_applied and saved and saved.get("applied")):
        run.write_json(PRUNE_PLAN, asdict(plan))
    return plan


def recover(repo: Path, store: Any) -> str | None:
    """Finish or undo a prune or restore that was killed part way (call under the repo lock):
    whole when its audit record was written, else rolled back to the state before it. What
    was done, in words (logged), or None when there was nothing to do."""
    entry = journal.pending(repo)
    if entry is None:
        return None
    if audited(repo, entry.id):
        said = f"the {entry.action} of run {entry.run_id} had finished; its journal is closed"
    else:
        journal.roll_back(store, entry)
        said = (
            f"rolled back the {entry.action} of run {entry.run_id}, which was interrupted: the "
            "registry and the overlay are as they were before it"
        )
    journal.end(repo)
    logger.warning("%s: %s", repo, said)
    return said


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
        store, "prune", plan.run_id, project, list(plan.deprecate), [plan.feature_service]
    )
    originals = {
        v: registry.get_any_feature_view(v, project) for v in {*plan.deprecate, *plan.keep}
    }
    plan.previous = {
        "tags": {v: dict(originals[v].tags) for v in plan.deprecate},
        "service_existed": entry.services[plan.feature_service] is not None,
    }
    journal.begin(repo, entry)
    _write_marks(store, plan, originals, on_view_written)
    _record_in_repo(repo, plan)
    plan.applied = True
    append_audit(repo, "prune", asdict(plan), entry.id)
    journal.end(repo)


def _write_marks(
    store: Any,
    plan: PrunePlan,
    originals: dict[str, Any],
    on_view_written: Callable[[str], None] | None,
) -> None:
    import_feast()  # keeps our warning filters
    from feast import FeatureService

    registry, project = store.registry, plan.project
    written: list[Any] = []
    try:
        for view, features in plan.deprecate.items():
            fv = copy.deepcopy(originals[view])
            fv.tags = {**fv.tags, LAST_RUN: plan.run_id}
            fv.tags.update({deprecation_tag(f): plan.run_id for f in features})
            registry.apply_feature_view(fv, project, commit=False)
            written.append(originals[view])
            if on_view_written is not None:
                on_view_written(view)
        kept = [originals[view][features] for view, features in plan.keep.items()]
        service = FeatureService(
            name=plan.feature_service,
            features=kept,
            tags={LAST_RUN: plan.run_id},
            description=_service_description(plan),
        )
        registry.apply_feature_service(service, project, commit=False)
        registry.commit()
    except BaseException:
        # A registry that writes eagerly (SQL) already holds part of it: put the views back.
        for fv in written:
            registry.apply_feature_view(fv, project, commit=False)
        registry.refresh(project)  # a file registry drops the uncommitted changes
        raise


def _service_description(plan: PrunePlan) -> str:
    return f"The {sum(map(len, plan.keep.values()))} features cae-ray kept in run {plan.run_id}"


def _record_in_repo(repo: Path, plan: PrunePlan) -> None:
    """Add the prune to the repo's overlay, so the next ``feast apply`` keeps its marks."""
    overlay = read_overlay(repo)
    overlay["runs"][plan.run_id] = {
        # Microseconds: the overlay orders runs by this, and prunes can follow within a second.
        "at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "deprecate": plan.deprecate,
        "feature_service": {
            "name": plan.feature_service,
            "features": plan.keep,
            "description": _service_description(plan),
        },
        "validation": plan.validation,
        "forced_reason": plan.forced_reason,
    }
    write_overlay(repo, overlay)


# --- restore and check ------------------------------------------------------------------------


def restore(repo: str, run_id: str) -> dict[str, Any]:
    """Undo the prune ``run_id`` in the registry of ``repo``, from its audit record, as one
    journaled transaction. Returns what it changed: ``removed`` (view -> tags taken off),
    ``reset`` (view -> tags given back an earlier run's value), ``service_removed``; with
    ``restored`` False (and nothing changed) when that prune is no longer applied."""
    store = open_store(repo)
    check_writable(Path(repo), store)
    with repo_lock(Path(repo)):
        recovered = recover(Path(repo), store)
        return {**_restore(Path(repo), store, run_id), "recovered": recovered}


def _restore(repo: Path, store: Any, run_id: str) -> dict[str, Any]:
    record, undone = find_prune(repo, run_id)  # UnknownRunIdError if never pruned
    if run_id in undone:
        return {**record, "restored": False, "removed": {}, "reset": {}, "service_removed": False}
    registry, project = store.registry, record["project"]
    registry.refresh(project)
    service = record["feature_service"]
    services = {s.name for s in registry.list_feature_services(project)}
    drop_service = not record["previous"]["service_existed"] and service in services
    views = list(record["previous"]["tags"])
    entry = journal.snapshot(store, "restore", run_id, project, views, [service])
    changes = {
        v: _undone_tags(registry.get_any_feature_view(v, project), record, undone) for v in views
    }
    journal.begin(repo, entry)
    for fv, _, _ in changes.values():
        registry.apply_feature_view(fv, project, commit=False)
    if drop_service:
        registry.delete_feature_service(service, project, commit=False)
    registry.commit()
    overlay = read_overlay(repo)
    if overlay["runs"].pop(run_id, None) is not None:
        write_overlay(repo, overlay)
    removed = {v: removed for v, (_, removed, _) in changes.items() if removed}
    reset = {v: reset for v, (_, _, reset) in changes.items() if reset}
    done = {**record, "restored": True, "removed": removed, "reset": reset}
    done["service_removed"] = drop_service
    append_audit(repo, "restore", done, entry.id)
    journal.end(repo)
    return done


def _undone_tags(
    fv: Any, record: dict[str, Any], undone: set[str]
) -> tuple[Any, list[str], dict[str, str]]:
    """(the view without the prune's marks, the tags taken off, the tags set back to an earlier
    run's value). Only tags that still hold this run's id are touched: a later prune's stay."""
    run_id, view = record["run_id"], fv.name
    previous = record["previous"]["tags"][view]
    ours = {deprecation_tag(f) for f in record["deprecate"].get(view, [])} | {LAST_RUN}
    removed, reset = [], {}
    for key in sorted(ours):
        if fv.tags.get(key) != run_id:
            continue  # gone already, or a later prune marked it since: that mark stays
        before = previous.get(key)
        if before is None or before in undone:  # nothing, or a prune restored since
            fv.tags.pop(key)
            removed.append(key)
        else:
            fv.tags[key] = before
            reset[key] = before
    return fv, removed, reset


def check(repo: str) -> list[str]:
    """Where the registry and the repo's overlay disagree on cae-ray's marks (empty: agree).
    An interrupted prune or restore is finished or rolled back first (and said so)."""
    store = open_store(repo)
    if journal.pending(Path(repo)) is not None:
        check_writable(Path(repo), store)
        with repo_lock(Path(repo)):
            recover(Path(repo), store)
        store = open_store(repo)
    overlay = read_overlay(Path(repo))
    problems = []
    for view in store.registry.list_feature_views(store.project):
        ours = {k: v for k, v in view.tags.items() if k.startswith(TAG_PREFIX)}
        wanted = tags_of_view(overlay, view.name)
        for key in sorted(set(ours) | set(wanted)):
            if ours.get(key) != wanted.get(key):
                problems.append(
                    f"{view.name}: tag {key} is {ours.get(key)!r} in the registry and "
                    f"{wanted.get(key)!r} in the repo overlay"
                )
    services = {s.name for s in store.registry.list_feature_services(store.project)}
    for run_id, run in overlay["runs"].items():
        if run["feature_service"]["name"] not in services:
            problems.append(
                f"run {run_id}: FeatureService {run['feature_service']['name']} is in the repo "
                "overlay but not in the registry"
            )
    return problems
