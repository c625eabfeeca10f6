"""What the registry says about each feature, whether it agrees with the repo, and the leftovers
of older cae-ray versions.

    feature_status(config)           -> per feature: state, since when, which run, due to retire
    check(config)                    -> where the registry and the overlay disagree; leftovers
    remove_services(config, names)   -> FeatureServices of older versions, gone (audited)

Each reads the registry only after finishing or rolling back a transaction a kill left
(:func:`cae_ray.feast.repo.recover`): a half-written state is never reported as the truth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from cae_ray.config import Config
from cae_ray.feast import journal
from cae_ray.feast.errors import MissingFeastConfigError, NotCaeRayServiceError
from cae_ray.feast.overlay import (
    LAST_RUN,
    SERVICE_AT,
    deprecation_tag,
    ours,
    parse_mark,
    read_overlay,
    services,
    view_tags,
    write_overlay,
)
from cae_ray.feast.repo import (
    STAMP,
    append_audit,
    check_writable,
    parse_stamp,
    recover,
    repo_lock,
)
from cae_ray.feast.store import open_store

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
    """``kept`` (in the kept service), ``deprecated``, ``retired`` or ``active`` (never marked)."""
    since: str | None = None
    run: str | None = None
    retire_after: str | None = None
    """For a deprecated feature: when it becomes due to retire (``feast.grace_period``)."""


def feature_status(config: Config) -> list[FeatureState]:
    """Every feature of the repo's feature views (and those cae-ray retired), as the registry
    says now; deprecated features with the date they become due to retire."""
    repo, store = _recovered_store(config)
    assert config.feast is not None
    registry, project = store.registry, store.project
    kept = {s.name: s for s in registry.list_feature_services(project)}.get(
        config.feast.kept_service
    )
    kept_refs = _refs(kept) if kept is not None else set()
    if kept is not None:
        kept_run, kept_at = kept.tags.get(LAST_RUN), kept.tags.get(SERVICE_AT)
    states = []
    for view in sorted(registry.list_feature_views(project), key=lambda v: v.name):
        for f in view.features:
            mark = view.tags.get(deprecation_tag(f.name))
            if mark is not None:
                parsed = parse_mark(mark)
                due = _plus(parsed["since"], config.feast.grace)
                states.append(
                    FeatureState(
                        view.name, f.name, "deprecated", parsed["since"], parsed["run"], due
                    )
                )
            elif (view.name, f.name) in kept_refs:
                states.append(FeatureState(view.name, f.name, "kept", kept_at, kept_run))
            else:
                states.append(FeatureState(view.name, f.name, "active"))
    for view, features in sorted(read_overlay(repo)["retired"].items()):
        for feature, mark in features.items():
            states.append(FeatureState(view, feature, "retired", mark["retired"], mark["by"]))
    return states


def _plus(since: str | None, grace: timedelta) -> str | None:
    return None if since is None else (parse_stamp(since) + grace).strftime(STAMP)


# --- check --------------------------------------------------------------------------------------


@dataclass
class Findings:
    disagreements: list[str] = field(default_factory=list)
    """Where the registry and the repo's overlay disagree on cae-ray's marks or services."""
    leftovers: list[str] = field(default_factory=list)
    """FeatureServices of older cae-ray versions (one per run), for `feast remove-services`."""


def check(config: Config) -> Findings:
    """Where the registry and the repo's overlay disagree (nothing: they agree), and the
    FeatureServices older versions left."""
    repo, store = _recovered_store(config)
    assert config.feast is not None
    overlay = read_overlay(repo)
    registry, project = store.registry, store.project
    findings = Findings()
    for view in registry.list_feature_views(project):
        held, wanted = ours(view.tags), view_tags(overlay, view.name)
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
    return findings


def _refs(service: Any) -> set[tuple[str, str]]:
    return {(p.name, f.name) for p in service.feature_view_projections for f in p.features}


def removable_services(
    config: Config, present: dict[str, Any], overlay: dict[str, Any]
) -> set[str]:
    """FeatureServices older versions made, one per run, that are still in the registry."""
    assert config.feast is not None
    named = {name for name in present if LEGACY_SERVICE.fullmatch(name)}
    return (named | (set(overlay["legacy_services"]) & set(present))) - {config.feast.kept_service}


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
