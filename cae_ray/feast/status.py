"""What the registry says about each feature, whether it agrees with the repo, and the leftovers
of older cae-ray versions.

    feature_status(config, model)    -> per feature: state, the models that keep it, the team's
                                        services that read it, since when, due to retire
    view_summaries(states)           -> per view: kept / deprecated / due / retired / active
    repo_status(config, model)       -> the models sharing the repo, the views, the features
    check(config)                    -> where the registry and the overlay disagree; notes
                                        (migrated models, deprecated features still read)
    remove_services(config, names)   -> FeatureServices of older versions, gone (audited)

Each reads the registry only after finishing or rolling back a transaction a kill left
(:func:`cae_ray.feast.repo.recover`): a half-written state is never reported as the truth.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from cae_ray.config import Config
from cae_ray.feast import journal
from cae_ray.feast.errors import (
    MissingFeastConfigError,
    NotCaeRayServiceError,
    UnknownModelError,
)
from cae_ray.feast.models import candidates
from cae_ray.feast.overlay import (
    LAST_RUN,
    SERVICE_AT,
    all_view_tags,
    deprecation_tag,
    marks,
    ours,
    parse_mark,
    read_overlay,
    services,
    write_overlay,
)
from cae_ray.feast.repo import (
    STAMP,
    append_audit,
    check_writable,
    parse_stamp,
    recover,
    repo_lock,
    utc_stamp,
)
from cae_ray.feast.store import open_store
from cae_ray.feast.sync import service_readers

LEGACY_SERVICE = re.compile(r"cae_ray_[0-9a-f]{8,}")
"""The name older versions gave each run's FeatureService (``cae_ray_<run id>``)."""


def _recovered_store(config: Config) -> tuple[Path, Any]:
    if config.feast is None:
        raise MissingFeastConfigError("the config", "`feast:` section")
    repo = Path(config.feast.repo)
    store = open_store(str(repo))
    if journal.pending(repo) is not None:
        check_writable(repo, store)
        with repo_lock(repo):
            recover(repo, store)
        store = open_store(str(repo))
    return repo, store


# --- status -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureState:
    view: str
    feature: str
    state: str
    """``kept`` (in a model's kept service), ``deprecated``, ``retired`` or ``active`` (in no
    model's candidates)."""
    since: str | None = None
    run: str | None = None
    retire_after: str | None = None
    """For a deprecated feature: when it becomes due to retire (``feast.grace_period``)."""
    models: list[str] = field(default_factory=list)
    """The models (kept services) that keep it."""
    readers: list[str] = field(default_factory=list)
    """The team's FeatureServices that read it (cae-ray's own kept services aside)."""

    @property
    def due(self) -> bool:
        return self.retire_after is not None and self.retire_after <= utc_stamp()


def feature_status(config: Config, model: str | None = None) -> list[FeatureState]:
    """Every feature of the repo's feature views (and those cae-ray retired), as the registry
    says now: which models keep it, which of the team's services read it; deprecated features
    with the date they become due to retire. With ``model``, only that model's candidates."""
    repo, store = _recovered_store(config)
    assert config.feast is not None
    registry, project = store.registry, store.project
    overlay = read_overlay(repo)
    if model is not None and model not in overlay["models"]:
        raise UnknownModelError(model, list(overlay["models"]))
    present = {s.name: s for s in registry.list_feature_services(project)}
    names = set(overlay["models"]) | {config.feast.kept_service}
    kept_services = [present[n] for n in sorted(names & set(present))]
    kept_by: dict[tuple[str, str], list[Any]] = {}
    for service in kept_services:
        for ref in _refs(service):
            kept_by.setdefault(ref, []).append(service)
    readers = service_readers(present, names | set(services(overlay)))
    wanted = candidates(overlay["models"][model]) if model is not None else None
    states = []
    for view in sorted(registry.list_feature_views(project), key=lambda v: v.name):
        for f in view.features:
            if wanted is not None and f.name not in wanted.get(view.name, set()):
                continue
            ref = (view.name, f.name)
            states.append(_state(view, f.name, kept_by.get(ref, []), readers.get(ref, []), config))
    for view, features in sorted(overlay["retired"].items()):
        for feature, mark in features.items():
            if wanted is None or feature in wanted.get(view, set()):
                states.append(FeatureState(view, feature, "retired", mark["retired"], mark["by"]))
    return states


def _state(
    view: Any, feature: str, keepers: list[Any], readers: list[str], config: Config
) -> FeatureState:
    assert config.feast is not None
    mark = view.tags.get(deprecation_tag(feature))
    if mark is not None:
        parsed = parse_mark(mark)
        due = _plus(parsed["since"], config.feast.grace)
        since, run = parsed["since"], parsed["run"]
        return FeatureState(view.name, feature, "deprecated", since, run, due, [], readers)
    if keepers:
        latest = max(keepers, key=lambda s: (s.tags.get(SERVICE_AT) or "", s.name))
        since, run = latest.tags.get(SERVICE_AT), latest.tags.get(LAST_RUN)
        models = sorted(s.name for s in keepers)
        return FeatureState(view.name, feature, "kept", since, run, None, models, readers)
    return FeatureState(view.name, feature, "active", readers=readers)


def _plus(since: str | None, grace: timedelta) -> str | None:
    return None if since is None else (parse_stamp(since) + grace).strftime(STAMP)


@dataclass(frozen=True)
class ViewSummary:
    view: str
    kept: int
    deprecated: int
    due: int
    """Deprecated for the grace period: ``cae-ray retire`` would take them (unless read)."""
    retired: int
    active: int
    first_due: str | None
    """When the first deprecated feature of the view becomes (or became) due."""


def view_summaries(states: list[FeatureState]) -> list[ViewSummary]:
    """Per view, in name order: how many features are in each state."""
    by_view: dict[str, list[FeatureState]] = {}
    for state in states:
        by_view.setdefault(state.view, []).append(state)
    summaries = []
    for view, rows in sorted(by_view.items()):
        count = {kind: sum(r.state == kind for r in rows) for kind in _KINDS}
        dates = [r.retire_after for r in rows if r.retire_after is not None]
        due = sum(r.due for r in rows)
        summaries.append(ViewSummary(view, **count, due=due, first_due=min(dates, default=None)))
    return summaries


_KINDS = ("kept", "deprecated", "retired", "active")


@dataclass(frozen=True)
class ModelSummary:
    """A model sharing the repo (its kept FeatureService), as ``feast status`` shows it."""

    label: str | None
    label_known: bool
    """False for a model migrated from an older overlay format, which did not record it."""
    run: str
    at: str | None
    kept: int
    candidates: int


def models_summary(config: Config) -> dict[str, ModelSummary]:
    """Per model sharing the repo: its label, latest run and date, and how many it keeps."""
    if config.feast is None:
        raise MissingFeastConfigError("the config", "`feast:` section")
    overlay = read_overlay(Path(config.feast.repo))
    return {
        name: ModelSummary(
            label=state["label"],
            label_known=not state.get("migrated"),
            run=state["run"],
            at=state.get("at"),
            kept=sum(map(len, state["kept"].values())),
            candidates=sum(map(len, candidates(state).values())),
        )
        for name, state in sorted(overlay["models"].items())
    }


@dataclass(frozen=True)
class RepoStatus:
    """``cae-ray feast status``: the models, each view's counts, each feature's state."""

    models: dict[str, ModelSummary]
    views: list[ViewSummary]
    features: list[FeatureState]

    def as_json(self) -> dict[str, Any]:
        return {
            "models": {name: asdict(model) for name, model in self.models.items()},
            "views": [asdict(view) for view in self.views],
            "features": [{**asdict(state), "due": state.due} for state in self.features],
        }


def repo_status(config: Config, model: str | None = None) -> RepoStatus:
    """The models sharing the repo, and the features (only ``model``'s candidates, if given)."""
    states = feature_status(config, model)
    return RepoStatus(models_summary(config), view_summaries(states), states)


# --- check --------------------------------------------------------------------------------------


@dataclass
class Findings:
    disagreements: list[str] = field(default_factory=list)
    """Where the registry and the repo's overlay disagree on cae-ray's marks or services."""
    leftovers: list[str] = field(default_factory=list)
    """FeatureServices of older cae-ray versions (one per run), for `feast remove-services`."""
    readers: list[str] = field(default_factory=list)
    """Deprecated features that the team's FeatureServices still read, and which."""
    notes: list[str] = field(default_factory=list)
    """What else a user should know: models read from an overlay of an earlier version."""


def check(config: Config) -> Findings:
    """Where the registry and the repo's overlay disagree (nothing: they agree), and the
    FeatureServices older versions left."""
    repo, store = _recovered_store(config)
    assert config.feast is not None
    overlay = read_overlay(repo)
    registry, project = store.registry, store.project
    findings = Findings()
    tags = all_view_tags(overlay)
    for view in registry.list_feature_views(project):
        held, wanted = ours(view.tags), tags.get(view.name, {})
        for key in sorted(set(held) | set(wanted)):
            if held.get(key) != wanted.get(key):
                findings.disagreements.append(
                    f"{view.name}: tag {key} is {held.get(key)!r} in the registry and "
                    f"{wanted.get(key)!r} in the repo overlay"
                )
    present = {s.name: s for s in registry.list_feature_services(project)}
    for name, service in services(overlay).items():
        if name not in present:
            findings.disagreements.append(
                f"FeatureService {name} is in the repo overlay but not in the registry"
            )
        elif _refs(present[name]) != {(v, f) for v, fs in service["features"].items() for f in fs}:
            findings.disagreements.append(
                f"FeatureService {name} has other features in the registry than in the overlay"
            )
    findings.leftovers = sorted(removable_services(config, present, overlay))
    findings.readers = _still_read(config, overlay, present)
    findings.notes = [
        f"model {name} was read from an overlay of an earlier cae-ray version (format "
        f"{state['migrated']}) as one model, named after its kept service; its label is "
        "unknown until its next applied prune records it (any later change rewrites the "
        "overlay as format 3)"
        for name, state in sorted(overlay["models"].items())
        if state.get("migrated")
    ]
    return findings


def _still_read(config: Config, overlay: dict[str, Any], present: dict[str, Any]) -> list[str]:
    """Each deprecated feature the team's FeatureServices read now, in words."""
    assert config.feast is not None
    ours_names = set(services(overlay)) | {config.feast.kept_service}
    readers = service_readers(present, ours_names)
    said = []
    for view, features in sorted(marks(overlay).items()):
        for feature in sorted(features):
            names = readers.get((view, feature))
            if names:
                said.append(
                    f"{view}:{feature} is deprecated (no model keeps it) and still read by "
                    f"FeatureService {', '.join(names)}"
                )
    return said


def _refs(service: Any) -> set[tuple[str, str]]:
    return {(p.name, f.name) for p in service.feature_view_projections for f in p.features}


def removable_services(
    config: Config, present: dict[str, Any], overlay: dict[str, Any]
) -> set[str]:
    """FeatureServices older versions made, one per run, that are still in the registry."""
    assert config.feast is not None
    named = {name for name in present if LEGACY_SERVICE.fullmatch(name)}
    models = set(overlay["models"]) | {config.feast.kept_service}
    return (named | (set(overlay["legacy_services"]) & set(present))) - models


def remove_services(config: Config, names: list[str]) -> list[str]:
    """Remove FeatureServices of older cae-ray versions from the registry and the overlay (one
    journaled transaction, audited). Refuses any other service by name."""
    repo, store = _recovered_store(config)
    registry, project = store.registry, store.project
    overlay = read_overlay(repo)
    present = {s.name: s for s in registry.list_feature_services(project)}
    removable = removable_services(config, present, overlay)
    for name in names:
        if name not in removable:
            raise NotCaeRayServiceError(name, sorted(removable))
    check_writable(repo, store)
    with repo_lock(repo):
        registry.refresh(project)
        overlay = read_overlay(repo)
        entry = journal.snapshot(store, "remove-services", "-", project, [], list(names))
        journal.begin(repo, entry)
        for name in names:
            registry.delete_feature_service(name, project, commit=False)
            overlay["legacy_services"].pop(name, None)
        registry.commit()
        write_overlay(repo, overlay)
        append_audit(repo, "remove-services", {"run_id": "-", "services": names}, entry.id)
        journal.end(repo)
    return names
