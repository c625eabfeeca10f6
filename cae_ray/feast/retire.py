"""Retire features deprecated for longer than ``feast.grace_period``: they leave the repo's
Python definitions, reviewably (a plan with the unified diff) and reversibly (``restore``).

    plan_retire(config)                  -> which features are due, how each goes, the diff
    retire(config, run, apply=...)       -> RUN_DIR/retire.json (+ the files, the registry, audit)
    restore_retirement(repo, store, rec) -> the files back byte for byte, re-applied

A literal ``Field(name=...)`` in a view's ``schema=[...]`` is removed from the source
(:mod:`cae_ray.feast.definitions`); a field built by code is dropped by the overlay hook (the
overlay's ``retired``). Either way the features leave the marks the overlay derives, and
``feast apply`` makes the registry match. The retirement is one journaled transaction, like a
prune: files, overlay, ``feast apply``, audit record; a kill or a failed apply leaves
everything as before.

A feature is due when it has been deprecated (left unselected by every model whose candidates
include it) for the grace period, counted from when the last model stopped keeping it. A due
feature that the team still reads (a FeatureService, an on-demand or stream feature view) is
skipped and named in the plan; the others retire.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cae_ray.artifacts import RETIRE_PLAN, RunDir, write_bytes
from cae_ray.config import Config
from cae_ray.feast import journal
from cae_ray.feast.definitions import SourceEdits, plan_source_edits
from cae_ray.feast.errors import (
    DirtyWorkTreeError,
    FeastApplyError,
    MissingFeastConfigError,
    NoPruneYetError,
    PlanOutdatedError,
    RetireBeyondItsFeaturesError,
    RetireNeedsHookError,
)
from cae_ray.feast.overlay import has_hook, marks, read_overlay, services, write_overlay
from cae_ray.feast.repo import (
    append_audit,
    audit_records,
    check_writable,
    live_actions,
    parse_stamp,
    recover,
    repo_lock,
    utc_stamp,
)
from cae_ray.feast.store import feast_apply, feast_plan_changes, open_store


@dataclass
class RetirePlan:
    run_id: str
    """``retire-`` and a digest of what retires from which files: the id restore takes."""
    project: str
    grace_period: str
    due: dict[str, dict[str, dict[str, str]]]
    """Per view: each feature deprecated for longer than the grace period and read by nothing
    of the team's, with its mark: those retire."""
    literal: dict[str, list[str]]
    """Per view: the features removed from the source (literal ``Field`` entries)."""
    by_code: dict[str, list[str]]
    """Per view: the features the overlay hook drops (their fields are built by code)."""
    files: dict[str, str]
    """Each definitions file rewritten: its sha256 when planned (apply refuses a changed one)."""
    diff: str
    planned_at: str
    skipped: dict[str, list[str]] = field(default_factory=dict)
    """Each feature due but still read (``view:feature``): what reads it. These stay."""
    next_due: str | None = None
    """The day (UTC) the first mark not yet due becomes due; None when every mark is due."""
    applied: bool = False
    recovered: str | None = None
    previous: dict[str, Any] = field(default_factory=dict)
    """Filled on apply: the files' bytes before (base64), for restore."""

    @property
    def count(self) -> int:
        return sum(map(len, self.due.values()))

    @property
    def headline(self) -> str:
        """The plan in a few words, with the next date when nothing is due yet."""
        if self.applied:
            return f"{self.count:,} retired"
        if self.count:
            return f"{self.count:,} due after {self.grace_period} (plan)"
        if self.next_due:
            return f"none due yet; the first on {self.next_due} (grace {self.grace_period})"
        return "none due: no feature is marked deprecated"

    def as_json(self) -> dict[str, Any]:
        """As ``retire.json`` (and the audit log) hold it."""
        return {**asdict(self), "count": self.count}

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> RetirePlan:
        """A plan as ``retire.json`` holds it (``count`` and keys of other versions ignored)."""
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})

    @classmethod
    def read(cls, run: RunDir) -> RetirePlan | None:
        """The run's ``retire.json``, if the retire step wrote one."""
        saved = run.read_json(RETIRE_PLAN)
        return None if saved is None else cls.from_json(saved)

    def summary(self) -> dict[str, Any]:
        """The figures ``run.json`` keeps."""
        keys = ("run_id", "applied", "count", "grace_period", "next_due")
        return {key: self.as_json()[key] for key in keys}


def plan_retire(config: Config) -> RetirePlan:
    """What would retire now; raises the typed errors of a repo that cannot retire."""
    return _planned(config)[0]


def _planned(config: Config) -> tuple[RetirePlan, SourceEdits]:
    """The plan, and the source edits it was made from (what apply writes)."""
    if config.feast is None:
        raise MissingFeastConfigError("the config", "`feast:` section")
    repo = Path(config.feast.repo)
    store = open_store(str(repo))
    if not has_hook(repo):
        raise RetireNeedsHookError(str(repo))
    if not any(r["action"] == "prune" for r in live_actions(audit_records(repo))):
        raise NoPruneYetError(str(repo))
    overlay, now = read_overlay(repo), datetime.now(timezone.utc)
    due: dict[str, dict[str, Any]] = {}
    waiting: list[datetime] = []
    for view, features in marks(overlay).items():
        for feature, mark in features.items():
            if _older(mark, now, config.feast.grace):
                due.setdefault(view, {})[feature] = mark
            else:
                waiting.append(_since(mark) + config.feast.grace)
    skipped = _users(store, due, set(services(overlay)))
    for ref in skipped:
        view, _, feature = ref.partition(":")
        del due[view][feature]
    due = {view: features for view, features in due.items() if features}
    edits = plan_source_edits(repo, {view: list(marks) for view, marks in due.items()})
    files = {str(p): _digest(before.encode()) for p, (before, _) in edits.files.items()}
    identity = json.dumps([due, files], sort_keys=True).encode()
    plan = RetirePlan(
        run_id="retire-" + hashlib.sha256(identity).hexdigest()[:12],
        project=store.project,
        grace_period=config.feast.grace_period,
        due=due,
        literal=edits.literal,
        by_code=edits.by_code,
        files=files,
        diff=edits.diff(repo),
        planned_at=utc_stamp(),
        skipped=skipped,
        next_due=f"{min(waiting):%Y-%m-%d}" if waiting else None,
    )
    return plan, edits


def _older(mark: dict[str, Any], now: datetime, grace: timedelta) -> bool:
    return now - _since(mark) >= grace


def _since(mark: dict[str, Any]) -> datetime:
    # A mark of cae-ray before 0.2 has no date: it counts from the epoch (long deprecated).
    return parse_stamp(mark.get("since") or "1970-01-01T00:00:00Z")


def _users(store: Any, due: dict[str, dict[str, Any]], ours: set[str]) -> dict[str, list[str]]:
    """Each due feature (``view:feature``) that something other than the models' kept services
    reads: a FeatureService (the team's, or an older cae-ray's), an on-demand feature view, or
    a stream feature view that holds it."""
    registry, project = store.registry, store.project
    users: dict[str, list[str]] = {}

    def used(view: str, feature: str, by: str) -> None:
        if feature in due.get(view, {}):
            users.setdefault(f"{view}:{feature}", []).append(by)

    for service in registry.list_feature_services(project):
        if service.name not in ours:
            for p in service.feature_view_projections:
                for f in p.features:
                    used(p.name, f.name, f"FeatureService {service.name}")
    for odfv in registry.list_on_demand_feature_views(project):
        for p in odfv.source_feature_view_projections.values():
            for f in p.features:
                used(p.name, f.name, f"on-demand feature view {odfv.name}")
    for sfv in registry.list_stream_feature_views(project):
        for f in sfv.features:
            used(sfv.name, f.name, f"stream feature view {sfv.name}")
    return users


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- apply ----------------------------------------------------------------------------------


def retire(config: Config, run: RunDir, *, apply: bool = False, force: bool = False) -> RetirePlan:
    """Plan (and with ``apply``, carry out) the retirement; save ``RUN_DIR/retire.json``.

    With ``apply`` and a plan saved in ``run`` that was not applied, that reviewed plan is what
    is applied: ``PlanOutdatedError`` if a file or the due features changed since. A dirty git
    work tree under the files to rewrite is refused unless ``force``."""
    plan, edits = _planned(config)
    if apply and plan.count:
        assert config.feast is not None
        _check_against_saved(run, plan)
        repo = Path(config.feast.repo)
        if not force:
            _refuse_dirty(repo, list(plan.files))
        store = open_store(str(repo))
        check_writable(repo, store, [Path(p) for p in plan.files])
        with repo_lock(repo):
            plan.recovered = recover(repo, store)
            _check_files(plan, str(run.path(RETIRE_PLAN)))
            _apply(repo, store, plan, edits)
    run.write_json(RETIRE_PLAN, plan.as_json())
    return plan


def _check_against_saved(run: RunDir, plan: RetirePlan) -> None:
    saved = run.read_json(RETIRE_PLAN)
    if saved is None or saved.get("applied"):
        return
    where = str(run.path(RETIRE_PLAN))
    changed = [p for p, digest in saved["files"].items() if plan.files.get(p) != digest]
    changed += [p for p in plan.files if p not in saved["files"]]
    if changed:
        raise PlanOutdatedError(where, f"{', '.join(sorted(set(changed)))} changed since")
    if saved["due"] != plan.due:
        raise PlanOutdatedError(where, "the features due to retire changed since (a prune ran)")


def _check_files(plan: RetirePlan, where: str) -> None:
    """The files still hold what the plan rewrites (checked again under the lock)."""
    for path, digest in plan.files.items():
        if _digest(Path(path).read_bytes()) != digest:
            raise PlanOutdatedError(where, f"{path} changed while retiring")


def _refuse_dirty(repo: Path, files: list[str]) -> None:
    if not files:
        return
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", *files],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return  # no git here: nothing to compare with
    dirty = [line[3:] for line in done.stdout.splitlines()] if done.returncode == 0 else []
    if dirty:
        raise DirtyWorkTreeError(str(repo), dirty)


def _apply(repo: Path, store: Any, plan: RetirePlan, edits: SourceEdits) -> None:
    """Files, overlay, ``feast apply``, audit record: one journaled transaction (the files
    still hold what ``edits`` was planned from: checked under the lock)."""
    registry = store.registry
    registry.refresh(plan.project)
    paths = [Path(p) for p in plan.files]
    entry = journal.snapshot(store, "retire", plan.run_id, plan.project, list(plan.due), [], paths)
    plan.previous = {"files": {str(p): entry.files[str(p)] for p in paths}}
    journal.begin(repo, entry)
    for path, (_, after) in edits.files.items():
        write_bytes(path, after.encode())
    overlay = read_overlay(repo)
    for view, due in plan.due.items():
        for feature, mark in due.items():
            retired = {**mark, "retired": plan.planned_at, "by": plan.run_id}
            overlay["retired"].setdefault(view, {})[feature] = retired
    write_overlay(repo, overlay)  # the models' states keep them: the marks derive the rest
    beyond = _beyond_retirement(repo, plan)
    if beyond:
        journal.roll_back(store, entry)
        journal.end(repo)
        said = [f"{transition.lower()} {kind} {name!r}" for kind, name, transition in beyond]
        raise RetireBeyondItsFeaturesError(str(repo), said)
    _feast_apply(repo, store, entry)
    plan.applied = True
    append_audit(repo, "retire", asdict(plan), entry.id)
    journal.end(repo)


def _beyond_retirement(repo: Path, plan: RetirePlan) -> list[tuple[str, str, str]]:
    """What `feast apply` would change besides the views losing their retired fields: a view
    applied with the SDK and absent from the definitions would be deleted, for one."""
    return [
        (kind, name, transition)
        for kind, name, transition in feast_plan_changes(repo)
        if not (kind == "feature view" and name in plan.due and transition == "UPDATE")
    ]


def _feast_apply(repo: Path, store: Any, entry: journal.Entry) -> None:
    """The real ``feast apply`` in the repo; on failure everything goes back (then raise)."""
    done = feast_apply(repo)
    if done.returncode != 0:
        journal.roll_back(store, entry)
        journal.end(repo)
        raise FeastApplyError(str(repo), done.stdout + done.stderr)


def restore_retirement(repo: Path, store: Any, record: dict[str, Any]) -> dict[str, Any]:
    """The files back byte for byte, the marks back in the overlay, then ``feast apply``."""
    files = record["previous"]["files"]
    entry = journal.snapshot(
        store,
        "restore",
        record["run_id"],
        record["project"],
        list(record["due"]),
        [],
        [Path(p) for p in files],
    )
    journal.begin(repo, entry)
    for path, blob in files.items():
        write_bytes(Path(path), base64.b64decode(blob))
    overlay = read_overlay(repo)
    for view, due in record["due"].items():
        retired = overlay["retired"].get(view, {})
        for feature in due:
            retired.pop(feature, None)  # its mark comes back from the models' states
        if not retired:
            overlay["retired"].pop(view, None)
    write_overlay(repo, overlay)
    _feast_apply(repo, store, entry)
    count = sum(map(len, record["due"].values()))
    done = {**record, "restored": True, "count": count, "files_restored": sorted(files)}
    append_audit(repo, "restore", done, entry.id)
    journal.end(repo)
    return done
