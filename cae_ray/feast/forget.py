"""Forget a model that no longer runs: its kept FeatureService leaves the registry, and the marks
are recomputed from the models that remain.

    forget_model(config, name, apply=...) -> the plan (marks it adds and removes), applied or not

A model retired by its team would otherwise keep its features alive for ever (a feature kept by
any model is kept). Forgetting it is one journaled transaction like a prune
(:mod:`cae_ray.feast.sync`), audited, and restorable with ``cae-ray restore`` (its run id is
``forget-`` and a digest), which puts the model's state and its service back.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cae_ray.config import Config
from cae_ray.feast.errors import MissingFeastConfigError, UnknownModelError
from cae_ray.feast.models import mark_changes
from cae_ray.feast.overlay import marks, pack, read_overlay
from cae_ray.feast.repo import check_writable, recover, repo_lock, utc_stamp
from cae_ray.feast.store import open_store
from cae_ray.feast.sync import Change, Written, write_state


@dataclass
class ForgetPlan:
    model: str
    run_id: str
    """``forget-`` and a digest of the model and its latest run: the id restore takes."""
    project: str
    label: str | None
    last_run: str
    """The model's latest applied run, which it forgets."""
    added: dict[str, list[str]]
    """Per view: features only this model kept, marked once it is forgotten."""
    removed: dict[str, list[str]]
    """Per view: marks that go (features this model alone still listed as candidates)."""
    applied: bool = False
    at: str = ""
    recovered: str | None = None
    previous: dict[str, Any] = field(default_factory=dict)
    """Filled on apply: the model's state (restore puts it back)."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def forget_model(config: Config, name: str, *, apply: bool = False) -> ForgetPlan:
    """Plan (and with ``apply``, carry out) forgetting model ``name`` (a kept service).
    ``UnknownModelError``, and nothing changed, when no model of that name stands."""
    if config.feast is None:
        raise MissingFeastConfigError("the config", "`feast:` section")
    repo = Path(config.feast.repo)
    store = open_store(str(repo))
    plan, _ = _planned(repo, store.project, name)
    if not apply:
        return plan
    check_writable(repo, store)
    with repo_lock(repo):
        recovered = recover(repo, store)
        plan, after = _planned(repo, store.project, name)  # again, under the lock
        plan.recovered, plan.at = recovered, utc_stamp()
        overlay = read_overlay(repo)
        plan.previous = {"model": pack(overlay["models"][name]), "legacy_service": None}

        def record(_: Written) -> dict[str, Any]:
            plan.applied = True
            return asdict(plan)

        change = Change("forget-model", plan.run_id, plan.project, overlay, after, record)
        write_state(repo, store, change)
    return plan


def _planned(repo: Path, project: str, name: str) -> tuple[ForgetPlan, dict[str, Any]]:
    """The plan, and the overlay after it."""
    overlay = read_overlay(repo)
    state = overlay["models"].get(name)
    if state is None:
        raise UnknownModelError(name, list(overlay["models"]))
    after = copy.deepcopy(overlay)
    del after["models"][name]
    added, removed = mark_changes(marks(overlay), marks(after))
    digest = hashlib.sha256(f"{name} {state['run']} {state.get('at')}".encode()).hexdigest()
    plan = ForgetPlan(
        model=name,
        run_id=f"forget-{digest[:12]}",
        project=project,
        label=state["label"],
        last_run=state["run"],
        added=added,
        removed=removed,
    )
    return plan, after
