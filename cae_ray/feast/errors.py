"""The Feast integration's errors: one class per failure, each naming the bad value and the fix.
Every one is a usage error (exit code 2) except entity rows that lack a column or any feature
value (bad input, 3) and a registry that disagrees with the repo overlay (a finding of
`feast check`, 6).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from cae_ray.errors import EXIT_CONFIG, EXIT_DISAGREE, CaeRayError, InvalidInputError, preview
from cae_ray.feast import restore_command


class FeastError(CaeRayError):
    """Base class for problems with the Feast repo or what is asked of it."""

    exit_code = EXIT_CONFIG


class MissingFeastConfigError(FeastError):
    def __init__(self, source: str, missing: str) -> None:
        super().__init__(
            f"{source} has no {missing}. Fix: add feast: {{repo: path/to/feature_repo, "
            "features: [my_view], entities: entity_rows.parquet}."
        )


class FeastRepoError(FeastError):
    def __init__(self, repo: str, problem: str) -> None:
        self.repo = repo
        super().__init__(
            f"cannot open the Feast repo at {repo!r}: {problem}. Fix: point feast.repo at the "
            "directory that holds feature_store.yaml (and run `feast apply` there once)."
        )


class UnknownFeatureViewError(FeastError, ValueError):
    def __init__(self, name: str, available: Sequence[str], kind: str = "feature view") -> None:
        self.name = name
        close = difflib.get_close_matches(name, list(available), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(
            f"the Feast registry has no {kind} {name!r}.{hint} Known: "
            f"{preview(sorted(available)) or 'none'}. Fix: correct the name, or `feast apply` "
            "the repo that defines it."
        )


class UnknownFeatureError(FeastError, ValueError):
    def __init__(self, view: str, feature: str, available: Sequence[str]) -> None:
        self.view, self.feature = view, feature
        close = difflib.get_close_matches(feature, list(available), n=1)
        hint = f" Did you mean {view}:{close[0]}?" if close else ""
        super().__init__(
            f"feature view {view!r} has no feature {feature!r}.{hint} Its features: "
            f"{preview(available)}. Fix: correct the reference (view:feature)."
        )


class AmbiguousFeatureError(FeastError, ValueError):
    def __init__(self, feature: str, views: Sequence[str]) -> None:
        super().__init__(
            f"feature {feature!r} exists in several feature views ({preview(views)}), so the "
            "selection cannot say which one to mark. Fix: export through `cae-ray export` (its "
            "columns are view__feature), or rename the column to view__feature."
        )


class PruneRefusedError(FeastError):
    def __init__(self, run_dir: str, problem: str) -> None:
        self.problem = problem
        super().__init__(
            f"refusing to prune from {run_dir}: {problem}. Fix: run `cae-ray validate` on this "
            'selection until it passes, or pass --force --reason "..." to prune anyway (the '
            "reason is recorded in the audit log)."
        )


class UnknownRunIdError(FeastError, ValueError):
    def __init__(self, run_id: str, log: str, known: Sequence[str]) -> None:
        super().__init__(
            f"no prune or retirement with run id {run_id!r} is recorded in {log}. Known run ids: "
            f"{preview(known) or 'none'}. Fix: pass one of those to --run-id."
        )


class FeastTooOldError(FeastError):
    """The installed Feast cannot do what the repo asks of it; a later Feast can."""

    exit_code = EXIT_CONFIG  # the fix is in the repo's definitions or the install, not the data

    def __init__(self, installed: str, needed: str, what: str, fix: str) -> None:
        self.installed, self.needed = installed, needed
        super().__init__(
            f"Feast {installed} cannot {what} (Feast {needed} or later can). Fix: {fix}, or "
            f"upgrade Feast to {needed} or later (every service of the registry together)."
        )


class MissingFeastExtraError(FeastError):
    def __init__(self, repo: str, what: str, missing: Sequence[str], extra: str) -> None:
        self.repo, self.missing, self.extra = repo, list(missing), extra
        super().__init__(
            f"the Feast repo at {repo!r} uses {what}, which needs the Python package(s) "
            f"{preview(missing)}, not installed here. Fix: pip install 'cae-ray[{extra}]'."
        )


class EmptyTimeRangeError(FeastError):
    """A time range in which the views have no feature rows: nothing to export."""

    def __init__(self, views: Sequence[str], start: object, end: object) -> None:
        super().__init__(
            f"the feature views {', '.join(map(repr, views))} have no feature rows from {start} "
            f"to {end}, so there are no entity rows to export. Fix: widen feast.start / "
            "feast.end, or give feast.entities (a file of entity rows)."
        )


class TimeRangeJoinKeysError(FeastError):
    """Entity rows from a time range need one set of join keys for every view."""

    def __init__(self, keys_by_view: dict[str, list[str]]) -> None:
        shown = "; ".join(f"{view}: {', '.join(keys)}" for view, keys in keys_by_view.items())
        super().__init__(
            f"a time range makes the entity rows from the views' own rows, but the views join "
            f"on different keys ({shown}). Fix: export views with the same join keys, or give "
            "feast.entities (a file of entity rows with every key)."
        )


class RayStoreStoragePathError(FeastError):
    """Feast's ray offline store needs a staging path, and says so only after the retrieval."""

    def __init__(self, repo: str) -> None:
        self.repo = repo
        super().__init__(
            f"the Feast repo at {repo!r} uses the ray offline store without a storage_path, "
            "which Feast needs for staging (it would fail only after the whole retrieval). "
            "Fix: add `storage_path: data/ray_storage` (or any path or URI the cluster can "
            "write) under offline_store in its feature_store.yaml."
        )


class FeastRetrievalError(FeastError):
    """The offline store did not answer each entity row exactly once."""

    def __init__(self, store: str, asked: int, got: int, distinct: int) -> None:
        super().__init__(
            f"the {store!r} offline store answered {asked} entity rows with {got} rows "
            f"({distinct} distinct), so features cannot be matched to rows. Fix: report it with "
            "the Feast version and feature_store.yaml; export with another offline_store type "
            "meanwhile."
        )


class EntityRowsWithoutFeaturesError(InvalidInputError):
    """Entity rows for which the offline store has no feature value within the views' TTL (a
    timestamp before the views' history, or in the future): the file store leaves them out."""

    def __init__(
        self, count: int, total: int, examples: Sequence[str], ttls: dict[str, str]
    ) -> None:
        self.count, self.total, self.examples = count, total, list(examples)
        windows = ", ".join(f"{view}: {ttl}" for view, ttl in ttls.items())
        super().__init__(
            f"{count:,} of the {total:,} entity rows have no feature value within the views' "
            f"TTL ({windows}) before their event timestamp, so the offline store returned no "
            f"row for them; for example {' and '.join(self.examples)}. Fix: drop those rows or "
            "give them event timestamps inside the views' history (a feature row at most one "
            "TTL earlier), or lengthen the views' ttl."
        )


class RegistryNotWritableError(FeastError):
    """A prune or restore would fail part way: something it writes cannot be written."""

    def __init__(self, path: str, reason: str, directory: bool = False) -> None:
        self.path = path
        what = "create files in the directory" if directory else "write"
        super().__init__(
            f"cannot {what} {path} ({reason}), so nothing was changed (the registry, the "
            "repo's cae_ray_deprecations.yaml and its audit log are written together). Fix: run "
            f"as a user who may write there, or make it writable (e.g. chmod u+w {path}, or "
            "remount it read-write)."
        )


class EntityColumnsMissingError(InvalidInputError):
    def __init__(self, path: str, missing: Sequence[str], present: Sequence[str]) -> None:
        self.missing = list(missing)
        super().__init__(
            f"the entity rows in {path} lack column(s) {preview(missing)} that the feature "
            f"views join on or read as of (present: {preview(present)}). Fix: add them, or set "
            "feast.timestamp_column to the rows' event time column."
        )


class NotLatestRunError(FeastError):
    """Only the latest prune or retirement can be restored exactly."""

    def __init__(self, repo: str, run_id: str, later: Sequence[str]) -> None:
        self.later = list(later)
        first = restore_command(repo, later[0])
        super().__init__(
            f"run {run_id} is not the latest change to the registry of {repo!r}: "
            f"{preview(later)} came after it (latest first), and restoring {run_id} under them "
            f"would leave a state no run made. Fix: restore those first, latest first ({first})."
        )


class NoPruneYetError(FeastError):
    def __init__(self, repo: str) -> None:
        super().__init__(
            f"nothing to retire in {repo!r}: no applied prune stands there, so no feature is "
            "deprecated. Fix: run `cae-ray prune CONFIG --run-dir RUN --apply` (or a run with "
            "feast.prune: apply) first; features retire once deprecated for feast.grace_period."
        )


class RetireNeedsHookError(FeastError):
    def __init__(self, repo: str) -> None:
        super().__init__(
            f"the Feast repo at {repo!r} has no definitions module that calls "
            "annotate_all(globals()), so its next `feast apply` would strip every mark and "
            "keep the fields built by code. "
            "Fix: add `from cae_ray.feast.overlay import annotate_all; annotate_all(globals())` "
            "at the end of each definitions module, then `feast apply`."
        )


class PlanOutdatedError(FeastError):
    def __init__(self, plan: str, what: str) -> None:
        super().__init__(
            f"the retirement plan {plan} is outdated: {what}. Nothing was changed. Fix: run "
            "`cae-ray retire` without --apply to plan again, review it, then --apply."
        )


class DirtyWorkTreeError(FeastError):
    def __init__(self, repo: str, files: Sequence[str]) -> None:
        self.files = list(files)
        super().__init__(
            f"the definitions to rewrite have changes git does not hold ({preview(files)} in "
            f"{repo!r}): a retirement on top of them could not be told apart from them. Fix: "
            "commit or stash them, or pass --allow-dirty to rewrite anyway."
        )


class FeastApplyError(FeastError):
    def __init__(self, repo: str, output: str) -> None:
        last = " / ".join(output.strip().splitlines()[-3:]) or "no output"
        super().__init__(
            f"`feast apply` failed in {repo!r} ({last}); the definitions, the overlay and the "
            "registry were put back as they were. Fix: run `feast plan` there to see why."
        )


class DefinitionsParseError(FeastError):
    def __init__(self, path: object, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(
            f"cannot parse the Feast definitions file {path}: {problem}. Fix: make it valid "
            f"Python (`python -m py_compile {path}`), then run again."
        )


class NotCaeRayServiceError(FeastError, ValueError):
    def __init__(self, name: str, removable: Sequence[str]) -> None:
        super().__init__(
            f"{name!r} is not a FeatureService of an older cae-ray version, so cae-ray will not "
            f"remove it. Removable: {preview(removable) or 'none'}. Fix: name only those (the "
            "kept service goes with `cae-ray restore`)."
        )


class ModelLabelConflictError(FeastError):
    """Two configs claim one kept service (one model) for different labels."""

    def __init__(self, model: str, recorded: str | None, run: str, label: str | None) -> None:
        self.model = model

        def said(label: str | None) -> str:
            return repr(label) if label is not None else "none (reconstruction)"

        super().__init__(
            f"the kept service {model!r} is the model of label {said(recorded)} (its run "
            f"{run}), and this config's label (data.target) is {said(label)}: two models "
            "would overwrite each other's selection. Nothing was changed. Fix: give this config "
            "its own feast.kept_service (one per model), or, if the model's label really "
            f"changed, `cae-ray feast forget-model CONFIG {model} --apply` first."
        )


class UnknownModelError(FeastError, ValueError):
    def __init__(self, model: str, known: Sequence[str]) -> None:
        self.model = model
        close = difflib.get_close_matches(model, list(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        fix = (
            "name one of those (`cae-ray feast status CONFIG` lists them)"
            if known
            else "a model appears once a run of its config applies a prune (`cae-ray prune "
            "CONFIG --run-dir RUN --apply`, or feast.prune: apply)"
        )
        super().__init__(
            f"no model {model!r} has applied a prune in this repo.{hint} Known models (their "
            f"kept services): {preview(sorted(known)) or 'none'}. Nothing was changed. Fix: "
            f"{fix}."
        )


class LabelLeakError(FeastError):
    """The label's feature view is also a source of candidate features."""

    def __init__(self, label: str, view: str) -> None:
        super().__init__(
            f"data.target {label!r} comes from feature view {view!r}, which is also among the "
            "candidate features (feast.features or feast.feature_service): its other fields "
            "are typically made from the same outcome, so a selection would leak the label. "
            "Nothing was exported. Fix: take the label's view out of the candidates, or keep "
            "the label in a view of its own."
        )


class UnknownLabelError(FeastError, ValueError):
    """``data.target`` names a Feast feature that the registry does not have."""

    def __init__(self, label: str, problem: str, known: Sequence[str]) -> None:
        self.label = label
        close = difflib.get_close_matches(label, list(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(
            f"data.target {label!r}: {problem}.{hint} Fix: name a field of a feature view as "
            f"view:field (known: {preview(sorted(known)) or 'none'}), or a column of the "
            "entity rows."
        )


class NonNumericLabelError(FeastError, ValueError):
    def __init__(self, label: str, dtype: str) -> None:
        super().__init__(
            f"data.target {label!r} is of type {dtype}, not a number or a boolean, so no model "
            "can be trained on it. Fix: store the label as an integer class, a boolean or a "
            "number (a categorical label as Int64 codes), or choose another field."
        )


class RetireBeyondItsFeaturesError(FeastError):
    """`feast apply` after the retirement would change registry objects other than the views
    that lose the retired fields (objects the definitions do not hold)."""

    def __init__(self, repo: str, changes: Sequence[str]) -> None:
        """``changes``: what `feast apply` would also do, e.g. "delete feature view 'x'"."""
        self.repo, self.changes = repo, list(changes)
        super().__init__(
            f"retiring in {repo} runs `feast apply`, which would also {preview(changes, 5)}: "
            "objects the repo's definitions do not hold as the registry does (applied with the "
            "Python SDK, edited since the last `feast apply`, or hidden by .feastignore). "
            "Nothing was changed. Fix: bring the definitions in line with the registry (add "
            "those objects, or remove them on purpose with `feast apply`; `feast plan` shows "
            "the difference), then retire again."
        )


class RegistryDiskFullError(FeastError):
    """The disk of the Feast registry (or of the repo, for the registry's copy) cannot hold
    the write: refused before it, or found cut short after it and put back."""

    def __init__(self, path: str, needed: int, free: int) -> None:
        self.path, self.needed, self.free = path, needed, free
        super().__init__(
            f"the disk holding {path} has {free:,} bytes free and writing it safely needs "
            f"{needed:,}: nothing was changed (the registry is as it was; a write that was "
            "cut short is put back from cae-ray's copy). Fix: free space on that disk (or move "
            "the registry), then run the command again."
        )


class RegistryDisagreesError(CaeRayError):
    """`feast check` / `prune --check` found the registry and the repo overlay disagreeing."""

    exit_code = EXIT_DISAGREE

    def __init__(self, repo: str, disagreements: Sequence[str]) -> None:
        self.repo, self.disagreements = repo, list(disagreements)
        super().__init__(
            f"the registry of {repo!r} and its repo overlay disagree in "
            f"{len(self.disagreements)} place(s): {preview(self.disagreements, 3)}. Fix: run "
            "`feast apply` in the repo (the repo is the source of truth), then check again."
        )
