"""Set a Feast registry's deprecation marks to what the models sharing it decided, and take a
change back.

    plan_prune(config, run)            -> the plan (which features, which views, the kept service)
    prune(config, run, apply=...)      -> RUN_DIR/prune.json (+ the registry, + the audit log)
    restore(repo, run_id)              -> the registry as it was before that change

Each config's ``feast.kept_service`` names its model. An applied prune sets its model's state
in the repo's overlay (:mod:`cae_ray.feast.overlay`) to this run's selection and its kept
FeatureService to the selected features; the marks are then derived from every model's state
(:func:`cae_ray.feast.models.derive_marks`): a feature is marked only when every model whose
candidates include it leaves it unselected, so one model's run never marks a feature another
model keeps. Marks are view-level tags (no new view version, no online-table switch,
docs/lifecycle.md): ``cae-ray/deprecated.<feature>`` = ``<run id>@<UTC time the last model stopped
keeping it>``, ``cae-ray/read-by.<feature>`` naming the team's FeatureServices that still read
a marked feature, and ``cae-ray/last-run``.

A prune and a restore are each one transaction (:mod:`cae_ray.feast.sync`): under the repo
lock, a journal of what they touch is written first, then the registry, then the overlay, then
an audit record in ``cae_ray_audit.jsonl`` (who, when, run id, model, the marks added and
removed, the model's state before, validation figures). Each model's applied runs are a stack:
only a model's latest change can be restored (the audit record holds its state before), and
restoring it recomputes the marks from every model's state, so the other models' stay as
they are.
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
from cae_ray.feast import retire
from cae_ray.feast.errors import (
    MissingFeastConfigError,
    ModelLabelConflictError,
    NotLatestRunError,
    PruneRefusedError,
)
from cae_ray.feast.models import after_prune, candidates, keepers, mark_changes, next_order
from cae_ray.feast.overlay import HOOK, has_hook, marks, pack, read_overlay, services, unpack
from cae_ray.feast.refs import column_refs
from cae_ray.feast.repo import (
    blocking_actions,
    check_writable,
    find_action,
    latest_of_model,
    recover,
    repo_lock,
    utc_stamp,
)
from cae_ray.feast.store import open_store
from cae_ray.feast.sync import Change, Written, marked_readers, write_state
from cae_ray.records import ExportManifest, Selection, Verdict, checked_selection

logger = logging.getLogger(__name__)


@dataclass
class PrunePlan:
    run_id: str
    project: str
    deprecate: dict[str, list[str]]
    """Per feature view: the candidates this run leaves unselected (marked deprecated unless
    another model keeps them: ``kept_by_others``)."""
    keep: dict[str, list[str]]
    """Per feature view: the selected features (they go into the kept feature service)."""
    feature_service: str
    """The kept FeatureService (``feast.kept_service``), set to the kept features: it names the
    model whose state this run sets."""
    validation: dict[str, Any]
    forced_reason: str | None = None
    label: str | None = None
    """The model's label (``data.target``; None: reconstruction)."""
    added: dict[str, list[str]] = field(default_factory=dict)
    """Per view: features marked that were not (on apply: as found under the lock)."""
    removed: dict[str, list[str]] = field(default_factory=dict)
    """Per view: features whose mark this prune takes off (this model keeps them now)."""
    kept_by_others: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """Per view: each feature this run leaves unselected that other models keep (not marked),
    and which."""
    others: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The other models sharing these views: label, run, date, and what each keeps on them."""
    readers: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """Per view: each feature marked after this prune that the team's FeatureServices read."""
    applied: bool = False
    already_applied: bool = False
    """True when this very prune is its model's latest applied one: nothing was written."""
    recovered: str | None = None
    """What was done first about an earlier transaction that had been interrupted."""
    hook_missing: bool = False
    """True when the repo's definitions lack the overlay hook (marks die on `feast apply`)."""
    at: str = ""
    """When it was applied (UTC): the date of the marks it adds."""
    previous: dict[str, Any] = field(default_factory=dict)
    """Filled on apply: the model's state before it (restore puts it back)."""

    @property
    def model(self) -> str:
        return self.feature_service

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
        kept_by_others = sum(map(len, self.kept_by_others.values()))
        return {
            "run_id": self.run_id,
            "applied": self.applied,
            "feature_service": self.feature_service,
            "hook_missing": self.hook_missing,
            # left out here and kept by no other model; the others' keep theirs
            "deprecated": sum(map(len, self.deprecate.values())) - kept_by_others,
            "kept_by_others": kept_by_others,
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
        label=config.data.target if config.data is not None else None,
    )
    after = marked(read_overlay(Path(config.feast.repo)), plan)
    present = {s.name: s for s in store.registry.list_feature_services(store.project)}
    plan.readers = marked_readers(after, present, set(services(after)))
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


def marked(overlay: dict[str, Any], plan: PrunePlan) -> dict[str, Any]:
    """The overlay after ``plan`` (its model's state set to this run's selection); fills in
    the plan's mark changes and what the other models on its views keep. Refuses a plan whose
    model is recorded with another label."""
    state = overlay["models"].get(plan.model)
    if state is not None and not state.get("migrated") and state["label"] != plan.label:
        raise ModelLabelConflictError(plan.model, state["label"], state["run"], plan.label)
    after = copy.deepcopy(overlay)
    after["models"][plan.model] = after_prune(
        state,
        run_id=plan.run_id,
        at=plan.at or utc_stamp(),
        label=plan.label,
        keep=plan.keep,
        unselected=plan.deprecate,
        description=_service_description(plan),
        order=next_order(overlay["models"]),
    )
    after["legacy_services"].pop(plan.model, None)
    plan.added, plan.removed = mark_changes(marks(overlay), marks(after))
    others = {name: s for name, s in after["models"].items() if name != plan.model}
    kept = keepers(others)
    plan.kept_by_others = {}
    for view, features in plan.deprecate.items():
        for feature in features:
            if (view, feature) in kept:
                plan.kept_by_others.setdefault(view, {})[feature] = kept[(view, feature)]
    plan.others = {
        name: _summary(state, plan.views)
        for name, state in sorted(others.items())
        if set(candidates(state)) & set(plan.views)
    }
    return after


def _summary(state: dict[str, Any], views: list[str]) -> dict[str, Any]:
    """Another model, as a prune plan and the report show it: what it keeps on ``views``."""
    kept = {v: state["kept"][v] for v in views if v in state["kept"]}
    return {"label": state["label"], "run": state["run"], "at": state.get("at"), "keep": kept}


def _service_description(plan: PrunePlan) -> str:
    label = f" for {plan.label}" if plan.label else ""
    count = sum(map(len, plan.keep.values()))
    return f"The {count} features cae-ray kept{label} in run {plan.run_id}"


# --- apply ----------------------------------------------------------------------------------


def prune(
    config: Config,
    run: RunDir,
    *,
    apply: bool = False,
    force_reason: str | None = None,
    on_view_written: Callable[[str], None] | None = None,
) -> PrunePlan:
    """Plan (and with ``apply``, write) the model's state and the marks it leads to; save
    ``RUN_DIR/prune.json``.

    Every caller (the CLI, ``cae-ray run``, the adapters) gets both guards: no prune without a
    passed validation of this very selection (:func:`plan_prune`), and a prune that is its
    model's latest applied one is not applied again: it says so and changes nothing.
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
            latest = latest_of_model(repo, plan.model)
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
    overlay = read_overlay(repo)
    plan.at = utc_stamp()
    after = marked(overlay, plan)
    state = overlay["models"].get(plan.model)
    plan.previous = {
        "model": None if state is None else pack(state),
        "legacy_service": overlay["legacy_services"].get(plan.model),
    }

    def record(_: Written) -> dict[str, Any]:
        plan.applied = True
        plan.readers = after["readers"]  # as found in the registry under the lock
        return {**asdict(plan), "model": plan.model}

    change = Change(
        "prune", plan.run_id, plan.project, overlay, after, record, plan.views, on_view_written
    )
    write_state(repo, store, change)


# --- restore ----------------------------------------------------------------------------------


def restore(repo: str, run_id: str) -> dict[str, Any]:
    """Undo ``run_id``: a model's latest prune or ``forget-model``, or the latest retirement,
    as one journaled transaction: the model's state (or for a retirement the definitions
    files) back as before it, and the marks recomputed from every model's state. Returns what
    it changed; ``restored`` False (and nothing changed) when it was undone already.
    ``NotLatestRunError`` when a later change of that model (or a later retirement) stands on
    it."""
    store = open_store(repo)
    check_writable(Path(repo), store)
    with repo_lock(Path(repo)):
        recovered = recover(Path(repo), store)
        record, live = find_action(Path(repo), run_id)  # UnknownRunIdError if never applied
        if run_id not in [r["run_id"] for r in live]:
            return {**record, "restored": False, "changed": {}, "recovered": recovered}
        later = blocking_actions(live, run_id)
        if later:
            raise NotLatestRunError(repo, run_id, [r["run_id"] for r in later][::-1])
        if record["action"] == "retire":
            done = retire.restore_retirement(Path(repo), store, record)
        else:
            done = _restore_model(Path(repo), store, record)
        return {**done, "recovered": recovered}


def _restore_model(repo: Path, store: Any, record: dict[str, Any]) -> dict[str, Any]:
    """A prune or a ``forget-model`` undone: its model's state back as the record says it was
    before, every mark recomputed."""
    overlay = read_overlay(repo)
    model = record.get("model") or record["feature_service"]
    previous = record["previous"]
    if "model" in previous:
        state = None if previous["model"] is None else unpack(previous["model"])
    else:
        state = _state_before_v2(overlay, record)
    after = copy.deepcopy(overlay)
    if state is None:
        after["models"].pop(model, None)
    else:
        after["models"][model] = state
    if previous.get("legacy_service") is not None:
        after["legacy_services"][model] = previous["legacy_service"]

    def done(written: Written) -> dict[str, Any]:
        return {
            **record,
            "restored": True,
            "feature_service": model,
            "changed": written.changed,
            "service_removed": model in written.services_removed,
            "gone": written.gone,
        }

    change = Change("restore", record["run_id"], record["project"], overlay, after, done)
    return done(write_state(repo, store, change))


def _state_before_v2(overlay: dict[str, Any], record: dict[str, Any]) -> dict[str, Any] | None:
    """The model's state before a prune an earlier version (format 2) applied, from its audit
    record: the kept service and the marks on its views as they were; None when that leaves
    the model nothing."""
    previous, run_id = record["previous"], record["run_id"]
    state = copy.deepcopy(overlay["models"].get(record["feature_service"])) or {
        "label": None,
        "run": run_id,
        "at": None,
        "description": "",
        "kept": {},
        "dropped": {},
        "migrated": 2,
    }
    service = previous["kept_service"]
    state["kept"] = {v: list(f) for v, f in (service or {}).get("features", {}).items()}
    state["run"] = service["run"] if service else run_id
    state["at"] = (service or {}).get("at") or state.get("at")
    state["description"] = (service or {}).get("description", "")
    view_runs = state.setdefault("view_runs", {})
    for view, marks_before in previous["marks"].items():
        state["dropped"].pop(view, None)
        if marks_before:
            state["dropped"][view] = marks_before
    for view, run in previous["last_run"].items():
        view_runs.pop(view, None)
        if run is not None:
            view_runs[view] = run
    state["migrated"] = 2
    return state if (state["kept"] or state["dropped"] or view_runs) else None
