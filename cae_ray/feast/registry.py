"""Mark the unselected features deprecated in a Feast registry, and take the marks back.

    plan_prune(config, run_dir)            -> the plan (which features, which views, which service)
    prune(config, run_dir, apply=...)      -> run_dir/prune.json (+ the registry, + the audit log)
    restore(repo, run_id)                  -> the registry as it was before that prune

Marks are view-level tags (no new view version, no online-table switch; see README): one key
per deprecated feature, ``cae-ray/deprecated.<feature>`` = run id, plus ``cae-ray/last-run``.
A prune also registers a FeatureService of the K kept features for models to switch to.
Everything is read fresh, changed in memory and written in one commit; on a registry that
writes eagerly (SQL) a failure re-applies the objects as they were. Each prune and restore
appends a record (who, when, run id, features, validation figures) to ``cae_ray_audit.jsonl``
in the repo, which ``restore`` reads to undo exactly what the prune did. Before either writes
anything, a pre-flight opens everything it will write for writing: a registry changed without its
overlay and audit record could be neither kept by ``feast apply`` nor restored.
"""

from __future__ import annotations

import copy
import getpass
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from cae_ray.artifacts import (
    EXPORT_MANIFEST,
    PRUNE_PLAN,
    SELECTION,
    VALIDATION,
    RunDir,
    selection_digest,
)
from cae_ray.config import Config
from cae_ray.errors import NoSelectionError
from cae_ray.feast import import_feast
from cae_ray.feast.errors import (
    MissingFeastConfigError,
    PruneRefusedError,
    RegistryNotWritableError,
    UnknownRunIdError,
)
from cae_ray.feast.overlay import (
    HOOK,
    OVERLAY,
    has_hook,
    read_overlay,
    tags_of_view,
    write_overlay,
)
from cae_ray.feast.refs import column_refs
from cae_ray.feast.store import open_store

logger = logging.getLogger(__name__)

TAG_PREFIX = "cae-ray/"
LAST_RUN = TAG_PREFIX + "last-run"
AUDIT_LOG = "cae_ray_audit.jsonl"
LOCK_FILE = ".cae_ray.lock"


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
    selection = run.read_json(SELECTION)
    if selection is None:
        raise NoSelectionError(str(run))
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
            if _is_live(repo, plan.run_id):
                plan.applied = plan.already_applied = True
            else:
                _apply(repo, store, plan, on_view_written)
    saved = run.read_json(PRUNE_PLAN)
    if not (plan.already_applied and saved and saved.get("applied")):
        run.write_json(PRUNE_PLAN, asdict(plan))
    return plan


def check_writable(repo: Path, store: Any) -> None:
    """Raise ``RegistryNotWritableError`` unless everything a prune or restore writes can be
    written: the registry, and the lock, overlay and audit log in the repo. Opens files for
    writing without writing (bytes and modification times stay) rather than asking
    ``os.access``, which says yes to root on any mode."""
    for path in _registry_files(repo, store):
        _probe_file(path)
    _probe_directory(repo)  # the lock and audit log may be new; the overlay is replaced
    for path in (repo / LOCK_FILE, repo / AUDIT_LOG, repo / OVERLAY):
        _probe_file(path)


def _registry_files(repo: Path, store: Any) -> list[Path]:
    """The local files a registry commit writes: the file registry, or a SQLite database (with
    its directory, for the journal). Remote registries (s3://, postgres, ...) answer at commit."""
    config = store.config.registry
    path = str(config.path)
    if config.registry_type == "sql":
        if not path.startswith("sqlite:///"):
            return []
        database = Path(path.removeprefix("sqlite:///"))
        return [database, database.parent]
    if "://" in path:
        return []
    local = Path(path)
    return [local if local.is_absolute() else repo / local]


def _probe_file(path: Path) -> None:
    if path.is_dir():
        _probe_directory(path)
        return
    if not path.exists():
        _probe_directory(path.parent)  # it will be created there
        return
    try:
        with path.open("r+b"):  # open for writing, write nothing
            pass
    except OSError as e:
        raise RegistryNotWritableError(str(path), e.strerror or str(e)) from e


def _probe_directory(path: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".cae_ray-probe-"):
            pass
    except OSError as e:
        raise RegistryNotWritableError(str(path), e.strerror or str(e), directory=True) from e


@contextmanager
def repo_lock(repo: Path) -> Iterator[None]:
    """One prune or restore at a time per repo: a file registry is rewritten whole, so two
    overlapping read-modify-writes would lose the first one's marks."""
    with FileLock(repo / LOCK_FILE):
        yield


def _apply(
    repo: Path, store: Any, plan: PrunePlan, on_view_written: Callable[[str], None] | None
) -> None:
    if plan.hook_missing:
        logger.warning(
            "%s has no `%s` in its definitions: the next `feast apply` will remove these "
            "marks. Add `from cae_ray.feast.overlay import annotate_all; %s` to it.",
            repo,
            HOOK,
            HOOK,
        )
    _write_marks(store, plan, on_view_written)  # it reads the registry afresh, under the lock
    _record_in_repo(repo, plan)
    plan.applied = True
    _audit(repo, "prune", plan)


def _write_marks(
    store: Any, plan: PrunePlan, on_view_written: Callable[[str], None] | None
) -> None:
    import_feast()  # keeps our warning filters
    from feast import FeatureService

    registry, project = store.registry, plan.project
    # Read everything first: a registry getter re-reads the store by default, which would drop
    # the changes made so far in memory.
    registry.refresh(project)
    originals = {
        v: registry.get_any_feature_view(v, project) for v in {*plan.deprecate, *plan.keep}
    }
    services = {s.name for s in registry.list_feature_services(project)}
    plan.previous = {
        "tags": {v: dict(originals[v].tags) for v in plan.deprecate},
        "service_existed": plan.feature_service in services,
    }
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


def restore(repo: str, run_id: str) -> dict[str, Any]:
    """Undo the prune ``run_id`` in the registry of ``repo``, from its audit record."""
    store = open_store(repo)
    check_writable(Path(repo), store)
    with repo_lock(Path(repo)):
        return _restore(repo, store, run_id)


def _restore(repo: str, store: Any, run_id: str) -> dict[str, Any]:
    record, undone = _find_prune(Path(repo), run_id)
    registry, project = store.registry, record["project"]
    registry.refresh(project)
    views = {v: registry.get_any_feature_view(v, project) for v in record["previous"]["tags"]}
    for view, previous in record["previous"]["tags"].items():
        fv = views[view]
        ours = {deprecation_tag(f) for f in record["deprecate"].get(view, [])} | {LAST_RUN}
        for key in ours:
            if fv.tags.get(key) != run_id:
                continue  # a later prune marked it since: that mark stays
            before = previous.get(key)
            if before is None or before in undone:  # nothing, or a prune restored since
                fv.tags.pop(key, None)
            else:
                fv.tags[key] = before
        registry.apply_feature_view(fv, project, commit=False)
    if not record["previous"]["service_existed"]:
        registry.delete_feature_service(record["feature_service"], project, commit=False)
    registry.commit()
    overlay = read_overlay(Path(repo))
    if overlay["runs"].pop(run_id, None) is not None:
        write_overlay(Path(repo), overlay)
    restored = {**record, "restored": True}
    _audit(Path(repo), "restore", restored)
    return restored


def _audit_records(repo: Path) -> list[dict[str, Any]]:
    log = repo / AUDIT_LOG
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _restored_runs(records: list[dict[str, Any]]) -> set[str]:
    """Run ids whose last prune was restored since."""
    undone: set[str] = set()
    for r in records:  # in order: a run pruned again after its restore is live again
        if r["action"] == "restore":
            undone.add(r["run_id"])
        else:
            undone.discard(r["run_id"])
    return undone


def _is_live(repo: Path, run_id: str) -> bool:
    """Whether prune ``run_id`` is applied to the repo's registry (and not restored since)."""
    records = _audit_records(repo)
    pruned = any(r["action"] == "prune" and r["run_id"] == run_id for r in records)
    return pruned and run_id not in _restored_runs(records)


def _find_prune(repo: Path, run_id: str) -> tuple[dict[str, Any], set[str]]:
    """The audit record of prune ``run_id``, and the run ids restored since they were pruned."""
    records = _audit_records(repo)
    prunes = [r for r in records if r["action"] == "prune" and r["run_id"] == run_id]
    if not prunes:
        known = sorted({r["run_id"] for r in records if r["action"] == "prune"})
        raise UnknownRunIdError(run_id, str(repo / AUDIT_LOG), known)
    return dict(prunes[-1]), _restored_runs(records)


def _audit(repo: Path, action: str, plan: PrunePlan | dict[str, Any]) -> None:
    record = asdict(plan) if isinstance(plan, PrunePlan) else dict(plan)
    record.update(
        action=action,
        user=getpass.getuser(),
        at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    with (repo / AUDIT_LOG).open("a") as log:
        log.write(json.dumps(record) + "\n")


def check(repo: str) -> list[str]:
    """Where the registry and the repo's overlay disagree on cae-ray's marks (empty: agree)."""
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
