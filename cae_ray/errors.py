"""One exception class per failure; every message names the bad value and the fix.

Errors about the user's data or parameters also subclass ``ValueError``, so code written for
scikit-learn (which expects ``ValueError`` for bad input) keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence


def _preview(names: Sequence[object], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    more = len(names) - limit
    return f"{shown} and {more} more" if more > 0 else shown


class CaeRayError(Exception):
    """Base class of every error cae-ray raises on purpose."""


# --- configuration -----------------------------------------------------------------------------


class ConfigFileError(CaeRayError):
    """A config file cannot be read or is not valid YAML."""

    def __init__(self, path: str, problem: str, fix: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}. Fix: {fix}.")


class UndefinedEnvVarError(ConfigFileError):
    """A config file refers to ``${NAME}`` and NAME is not set."""

    def __init__(self, path: str, name: str, line: int) -> None:
        self.name = name
        super().__init__(
            path,
            f"line {line} uses ${{{name}}} but the environment variable {name} is not set",
            f"export {name}=..., or write ${{{name}:-default}} to give a default",
        )


class ConfigValidationError(CaeRayError, ValueError):
    """Config values are missing, of the wrong type, out of range or unknown keys."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source, self.problems = source, list(problems)
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: invalid configuration\n{lines}")


# --- input data --------------------------------------------------------------------------------


class InvalidInputError(CaeRayError, ValueError):
    """Base class for problems with the data passed to a selector."""


class EmptyInputError(InvalidInputError):
    def __init__(self, n_rows: int, n_features: int) -> None:
        super().__init__(
            f"X has {n_rows} sample(s) and {n_features} feature(s) (shape=({n_rows}, "
            f"{n_features})) while a minimum of 2 is required for each. Fix: pass the full "
            "training table."
        )


class InvalidKError(InvalidInputError):
    def __init__(self, k: int, n_features: int) -> None:
        self.k, self.n_features = k, n_features
        if k < 1:
            msg = f"k={k}: at least one feature must be selected. Fix: set k >= 1."
        else:
            msg = (
                f"k={k} but X has only {n_features} candidate features; selecting all of them "
                f"(or more) selects nothing. Fix: set k between 1 and {n_features - 1}."
            )
        super().__init__(msg)


class NonNumericColumnsError(InvalidInputError):
    def __init__(self, columns: Sequence[object], dtypes: Sequence[object]) -> None:
        self.columns = list(columns)
        pairs = ", ".join(f"{c!r} ({d})" for c, d in list(zip(columns, dtypes, strict=True))[:8])
        more = f" and {len(columns) - 8} more" if len(columns) > 8 else ""
        if any(str(d).startswith("complex") for d in dtypes):
            more += " (Complex data not supported)"
        super().__init__(
            f"{len(columns)} column(s) are not numeric: {pairs}{more}. Fix: drop them or encode "
            "them as numbers (e.g. one-hot or ordinal) before selection."
        )


class NonFiniteInputError(InvalidInputError):
    def __init__(self, columns: Sequence[object], n_nan: int, n_inf: int) -> None:
        self.columns = list(columns)
        super().__init__(
            f"X contains NaN ({n_nan} values) or inf ({n_inf} values) in {len(columns)} "
            f"column(s): {_preview(columns)}. Fix: impute or drop them first, e.g. with "
            "sklearn.impute.SimpleImputer in a Pipeline."
        )


class TargetLengthError(InvalidInputError):
    def __init__(self, n_rows: int, n_targets: int) -> None:
        super().__init__(
            f"y has {n_targets} values but X has {n_rows} rows. Fix: pass one target per row "
            "of X, in the same order."
        )


class TargetTaskMismatchError(InvalidInputError):
    def __init__(self, task: str, target_kind: str, fix: str) -> None:
        self.task, self.target_kind = task, target_kind
        super().__init__(f"task={task!r} does not fit the target y: {target_kind}. Fix: {fix}.")


class FeatureMismatchError(InvalidInputError):
    def __init__(self, expected: int, got: int, estimator: str) -> None:
        super().__init__(
            f"X has {got} features, but {estimator} is expecting {expected} features as input "
            "(the number it was fitted with). Fix: pass the same columns, in the same order, "
            "as in fit."
        )


# --- training ----------------------------------------------------------------------------------


class DeviceUnavailableError(CaeRayError):
    def __init__(self, device: str) -> None:
        super().__init__(
            f"device={device!r} was asked for but torch sees no such device here. Fix: set "
            "device='cpu', or run on a machine with a CUDA build of torch and a GPU."
        )


class TrainingDivergedError(CaeRayError):
    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(
            f"the training loss became {loss} in epoch {epoch}. Fix: lower the learning rate, "
            "or scale the features (e.g. StandardScaler) so their values are of order 1."
        )


# --- datasets ------------------------------------------------------------------------------------


class DatasetNotFoundError(InvalidInputError):
    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"cannot open the Parquet dataset at {path!r} ({reason}). Fix: check data.path; it "
            "must be a Parquet file or a directory of them, local or a pyarrow URI (s3://...)."
        )


class EmptyDatasetError(InvalidInputError):
    def __init__(self, path: str) -> None:
        super().__init__(
            f"the dataset at {path!r} has no rows. Fix: point data.path at the exported data."
        )


class MissingColumnError(InvalidInputError):
    def __init__(
        self, column: str, role: str, available: Sequence[str], also: Sequence[str] = ()
    ) -> None:
        import difflib

        self.column, self.role = column, role
        close = difflib.get_close_matches(column, list(available), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        others = f" (and {len(also)} more: {_preview(also)})" if also else ""
        super().__init__(
            f"the {role} column {column!r}{others} is not in the dataset, which has "
            f"{len(available)} columns: {_preview(available)}. Fix: {hint}check data.{role}"
            f"{'s' if role == 'feature' else ''}."
        )


class NoFeaturesMatchedError(InvalidInputError):
    def __init__(self, spec: str, available: Sequence[str]) -> None:
        super().__init__(
            f"no feature column matched {spec}; the dataset has {len(available)} columns: "
            f"{_preview(available)}. Fix: change data.features (a list, a glob such as 'f_*', "
            "or {all_numeric_except: [...]})."
        )


class NullValuesRefusedError(InvalidInputError):
    def __init__(self, columns: Sequence[str], counts: Sequence[int]) -> None:
        self.columns = list(columns)
        pairs = ", ".join(
            f"{c!r} ({n} nulls)" for c, n in list(zip(columns, counts, strict=True))[:8]
        )
        super().__init__(
            f"{len(columns)} feature column(s) have missing values and data.null_policy is "
            f"'refuse': {pairs}. Fix: fill them upstream, or set data.null_policy to 'mean' "
            "or 'zero'."
        )


class TooFewFeaturesError(InvalidInputError):
    def __init__(self, k: int, usable: int, dropped: Sequence[str]) -> None:
        extra = f" after dropping {len(dropped)} constant column(s) ({_preview(dropped)})"
        super().__init__(
            f"selector.k={k} but only {usable} usable candidate features remain"
            f"{extra if dropped else ''}. Fix: set selector.k below {usable}, or add features."
        )


# --- Ray ----------------------------------------------------------------------------------------


class RayUnreachableError(CaeRayError):
    def __init__(
        self, address: str, reason: str, source: str = "scaling.address / RAY_ADDRESS"
    ) -> None:
        self.address, self.reason = address, reason
        super().__init__(
            f"cannot connect to the Ray cluster at {address!r} ({reason}). Fix: check "
            f"{source}, or unset it to start a local cluster."
        )


class GpuUnavailableError(CaeRayError):
    def __init__(self, wanted: float, available: float) -> None:
        super().__init__(
            f"scaling.use_gpu asks for {wanted:g} GPU(s) but the Ray cluster has "
            f"{available:g}. Fix: set scaling.use_gpu: false, lower scaling.num_workers, or "
            "add GPU nodes."
        )


class MissingDataConfigError(CaeRayError):
    def __init__(self, source: str) -> None:
        super().__init__(
            f"{source} names no dataset: neither `data.path` nor `feast.entities` (or a time "
            "range, `feast.start`) is set. Fix: add data: {path: ..., features: ...}, or a "
            "feast: section with entities to export."
        )


class NoExportError(CaeRayError):
    """The config selects from the Feast export, but the run dir holds none yet."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        super().__init__(
            f"{run_dir} has no Feast export, and data.path is not set, so the config selects "
            f"from it. Fix: run `cae-ray export CONFIG --run-dir {run_dir}` first (or `cae-ray "
            "run`, which does every step), or set data.path."
        )


# --- validation gate -----------------------------------------------------------------------------


class MetricTaskMismatchError(InvalidInputError):
    """A validation metric that cannot score this task (or is unknown, or the task is)."""

    def __init__(
        self, metric: str, task: str | None, allowed: Sequence[str], n_classes: int | None = None
    ) -> None:
        self.metric, self.task, self.allowed = metric, task, list(allowed)
        if task is None:
            problem = f"metric={metric!r} is not one of the metrics computed here"
        else:
            classes = f" with {n_classes} classes" if n_classes is not None else ""
            problem = f"metric={metric!r} does not fit task={task!r}{classes}"
        fix = (
            f"use one of {_preview(allowed)}"
            if allowed
            else "resolve the task to 'classification', 'regression' or 'reconstruction' first"
        )
        super().__init__(f"{problem}. Fix: {fix}.")


class TooFewValidationRowsError(InvalidInputError):
    def __init__(self, n_rows: int, minimum: int) -> None:
        self.n_rows, self.minimum = n_rows, minimum
        super().__init__(
            f"the validation split has {n_rows} row(s), fewer than the {minimum} needed for a "
            "meaningful confidence interval. Fix: raise data.validation_fraction, or use more "
            "rows."
        )


class InvalidToleranceError(InvalidInputError):
    def __init__(self, tolerance: float) -> None:
        super().__init__(
            f"tolerance={tolerance} but the gate's tolerance is how much worse than the baseline "
            "the selected features may be, so it cannot be negative. Fix: set a tolerance >= 0 "
            "(0 demands no loss at all)."
        )


class InvalidBootstrapError(InvalidInputError):
    def __init__(self, setting: str, value: float, allowed: str) -> None:
        super().__init__(
            f"bootstrap {setting}={value} is out of range. Fix: set {setting} {allowed}."
        )


class NoSelectionError(CaeRayError):
    """Validation (or pruning) was asked for, but the run dir holds no selection."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        super().__init__(
            f"{run_dir} has no selection.json. Fix: run `cae-ray select CONFIG --run-dir "
            f"{run_dir}` first, or point --run-dir at the run that made the selection."
        )


class SelectionEditedError(CaeRayError):
    """``selection.json`` no longer hashes to the ``selection_hash`` written with it."""

    def __init__(self, path: str, recorded: str | None, actual: str) -> None:
        self.path, self.recorded, self.actual = path, recorded, actual
        super().__init__(
            f"{path} was changed after it was made: its selection_hash is {recorded!r} but "
            f"its contents hash to {actual!r}, so it is not the selection that was trained. "
            "Fix: run `cae-ray select` again to make a fresh selection (edit the config, not "
            "the file, to change what is selected)."
        )


class SelectionConfigMismatchError(CaeRayError):
    """The selection in the run dir was made from another config or other data."""

    def __init__(self, path: str, what: str, recorded: str, current: str) -> None:
        self.path, self.what = path, what
        super().__init__(
            f"{path} was made with a different {what} ({recorded}) than the current one "
            f"({current}). Fix: run `cae-ray select` with this config and run dir first, so the "
            "selection validated is the one this config describes."
        )


# --- Feast ---------------------------------------------------------------------------------------


class ValidationGateFailedError(CaeRayError):
    """The validation gate failed, so ``cae-ray run`` stops before touching the registry."""

    def __init__(self, run_dir: str, reason: str) -> None:
        self.run_dir, self.reason = run_dir, reason
        super().__init__(
            f"the validation gate failed ({reason}), so nothing was pruned. Fix: read "
            f"{run_dir}/report/report.html; raise selector.k, train longer (training.epochs), or "
            "loosen validation.tolerance if the loss is acceptable."
        )


class FeastError(CaeRayError):
    """Base class for problems with the Feast repo or what is asked of it."""


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
            f"{_preview(sorted(available)) or 'none'}. Fix: correct the name, or `feast apply` "
            "the repo that defines it."
        )


class UnknownFeatureError(FeastError, ValueError):
    def __init__(self, view: str, feature: str, available: Sequence[str]) -> None:
        self.view, self.feature = view, feature
        close = difflib.get_close_matches(feature, list(available), n=1)
        hint = f" Did you mean {view}:{close[0]}?" if close else ""
        super().__init__(
            f"feature view {view!r} has no feature {feature!r}.{hint} Its features: "
            f"{_preview(available)}. Fix: correct the reference (view:feature)."
        )


class EntityColumnsMissingError(InvalidInputError):
    def __init__(self, path: str, missing: Sequence[str], present: Sequence[str]) -> None:
        self.missing = list(missing)
        super().__init__(
            f"the entity rows in {path} lack column(s) {_preview(missing)} that the feature "
            f"views join on or read as of (present: {_preview(present)}). Fix: add them, or set "
            "feast.timestamp_column to the rows' event time column."
        )


class AmbiguousFeatureError(FeastError, ValueError):
    def __init__(self, feature: str, views: Sequence[str]) -> None:
        super().__init__(
            f"feature {feature!r} exists in several feature views ({_preview(views)}), so the "
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
            f"no prune with run id {run_id!r} is recorded in {log}. Known run ids: "
            f"{_preview(known) or 'none'}. Fix: pass one of those to --run-id."
        )


class MissingFeastExtraError(FeastError):
    def __init__(self, repo: str, what: str, missing: Sequence[str], extra: str) -> None:
        self.repo, self.missing, self.extra = repo, list(missing), extra
        super().__init__(
            f"the Feast repo at {repo!r} uses {what}, which needs the Python package(s) "
            f"{_preview(missing)}, not installed here. Fix: pip install 'cae-ray[{extra}]'."
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


class MemoryBudgetError(CaeRayError):
    """Training would need more memory than the machine has free (or than allowed)."""

    def __init__(
        self, estimate: str, limit: str, source: str, setting: str, value: str, fixed: str
    ) -> None:
        self.estimate, self.limit, self.setting, self.value = estimate, limit, setting, value
        if setting:
            fix = (
                f"set {setting}: {value} (estimated {fixed}), or raise training.memory_limit_gb "
                "if more memory is free than the OS reports"
            )
        else:
            fix = "lower selector.k, training.batch_size or the head's hidden widths"
        super().__init__(
            f"training needs an estimated {estimate}, more than the limit of {limit} "
            f"({source}). Fix: {fix}."
        )


# --- exit codes ----------------------------------------------------------------------------------

EXIT_FAILURE, EXIT_CONFIG, EXIT_INPUT, EXIT_CLUSTER, EXIT_GATE = 1, 2, 3, 4, 5
"""Of `cae-ray` and the Ray Job entry point: a scheduler tells failure kinds apart by them."""

_CONFIG_ERRORS = (
    ConfigFileError,
    ConfigValidationError,
    MissingDataConfigError,
    NoExportError,
    NoSelectionError,
    SelectionEditedError,
    SelectionConfigMismatchError,
    FeastError,
    MemoryBudgetError,
)


def exit_code(error: BaseException) -> int:
    """2 bad configuration or usage (no, an edited or a stale selection included), 3 bad input
    data, 4 the Ray cluster unreachable or short of GPUs, 5 the validation gate failed, 1 else."""
    if isinstance(error, ValidationGateFailedError):
        return EXIT_GATE
    if isinstance(error, _CONFIG_ERRORS):
        return EXIT_CONFIG
    if isinstance(error, RayUnreachableError | GpuUnavailableError):
        return EXIT_CLUSTER
    if isinstance(error, InvalidInputError):
        return EXIT_INPUT
    return EXIT_FAILURE
