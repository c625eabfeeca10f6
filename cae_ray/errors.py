"""One exception class per failure; every message names the bad value and the fix.

This module holds the base class, the exit-code table, and the errors of the configuration, of
the input data and of the run dir. The other errors live beside their folder:
:mod:`cae_ray.selector.errors` (training), :mod:`cae_ray.runtime.errors` (the Ray cluster),
:mod:`cae_ray.gate.errors` (the validation gate), :mod:`cae_ray.feast.errors` and
:mod:`cae_ray.storage.errors`.

Errors about the user's data or parameters also subclass ``ValueError``, so code written for
scikit-learn (which expects ``ValueError`` for bad input) keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence


def preview(names: Sequence[object], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    more = len(names) - limit
    return f"{shown} and {more} more" if more > 0 else shown


EXIT_FAILURE, EXIT_CONFIG, EXIT_INPUT, EXIT_CLUSTER, EXIT_GATE = 1, 2, 3, 4, 5
"""Of `cae-ray` and the Ray Job entry point, so a scheduler tells failure kinds apart."""
EXIT_DISAGREE = 6
"""`feast check` / `prune --check` found a disagreement: not a failure of the command, a finding
a CI job acts on, so it is told apart from 1 (a bug)."""
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
"""A run stopped by a signal ends as shells and schedulers expect: 128 + the signal's number."""
EXIT_CODES = {
    0: "success",
    EXIT_FAILURE: "unexpected failure",
    EXIT_CONFIG: "bad configuration or usage (also: no, an edited or a stale selection; a missing "
    "extra; a Feast too old for the repo)",
    EXIT_INPUT: "bad input data",
    EXIT_CLUSTER: "Ray cluster unreachable, short of the resources asked for, or workers lost",
    EXIT_GATE: "the validation gate failed",
    EXIT_DISAGREE: "the Feast registry and the repo overlay disagree (feast check, prune --check)",
    EXIT_SIGINT: "stopped by SIGINT (Ctrl-C); the same command resumes it",
    EXIT_SIGTERM: "stopped by SIGTERM (a scheduler); the same command resumes it",
}
"""What each exit code means: the one list that --help texts and the docs (errors.md) show."""


def exit_codes_help() -> str:
    return "Exit codes: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items()) + "."


class CaeRayError(Exception):
    """Base class of every error cae-ray raises on purpose.

    Errors cross process boundaries (a Ray worker raises, the driver reports): each pickles as
    its class, message and attributes, whatever its ``__init__`` takes."""

    exit_code = EXIT_FAILURE

    @property
    def fix(self) -> str:
        """What to do about it: the message's "Fix: ..." part ("" where it has none)."""
        _, found, fix = str(self).partition("Fix: ")
        return fix.strip().removesuffix(".") if found else ""

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuilt, (type(self), self.args, self.__dict__))


def _rebuilt(cls: type[CaeRayError], args: tuple[object, ...], state: dict[str, object]) -> object:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


# --- configuration -----------------------------------------------------------------------------


class ConfigFileError(CaeRayError):
    """A config file cannot be read or is not valid YAML."""

    exit_code = EXIT_CONFIG

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


class ConfigTooLargeError(ConfigFileError):
    """A config file is larger than cae-ray reads, its YAML aliases expand past the limit (an
    alias bomb), or it nests deeper than a parser can follow."""

    def __init__(self, path: str, problem: str, limit: str, fix: str) -> None:
        self.limit = limit
        super().__init__(path, f"{problem} (the limit: {limit})", fix)


class ConfigValidationError(CaeRayError, ValueError):
    """Config values are missing, of the wrong type, out of range or unknown keys."""

    exit_code = EXIT_CONFIG

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source, self.problems = source, list(problems)
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: invalid configuration\n{lines}")


# --- input data --------------------------------------------------------------------------------


class InvalidInputError(CaeRayError, ValueError):
    """Base class for problems with the data passed to a selector."""

    exit_code = EXIT_INPUT


class EmptyInputError(InvalidInputError):
    def __init__(self, n_rows: int, n_features: int) -> None:
        super().__init__(
            f"X has {n_rows} sample(s) and {n_features} feature(s) (shape=({n_rows}, "
            f"{n_features})) while a minimum of 2 is required for each. Fix: pass the full "
            "training table."
        )


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
            f"column(s): {preview(columns)}. Fix: impute or drop them first, e.g. with "
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

        self.column, self.role = column, role
        close = difflib.get_close_matches(column, list(available), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        others = f" (and {len(also)} more: {preview(also)})" if also else ""
        super().__init__(
            f"the {role} column {column!r}{others} is not in the dataset, which has "
            f"{len(available)} columns: {preview(available)}. Fix: {hint}check data.{role}"
            f"{'s' if role == 'feature' else ''}."
        )


class NoFeaturesMatchedError(InvalidInputError):
    def __init__(self, spec: str, available: Sequence[str]) -> None:
        super().__init__(
            f"no feature column matched {spec}; the dataset has {len(available)} columns: "
            f"{preview(available)}. Fix: change data.features (a list, a glob such as 'f_*', "
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


class InfiniteValuesError(InvalidInputError):
    """Feature columns of a dataset hold +inf or -inf."""

    def __init__(self, columns: Sequence[str], counts: Sequence[int]) -> None:
        self.columns = list(columns)
        pairs = ", ".join(f"{c!r} ({n})" for c, n in list(zip(columns, counts, strict=True))[:8])
        more = f" and {len(columns) - 8} more" if len(columns) > 8 else ""
        super().__init__(
            f"{len(columns)} feature column(s) hold infinite values: {pairs}{more}. Fix: "
            "replace them upstream (clip them, or make them null for data.null_policy to fill), "
            "or leave those columns out of data.features."
        )


class TooFewFeaturesError(InvalidInputError):
    """k is not below the number of usable candidate features: selecting all selects nothing."""

    def __init__(
        self, k: int, usable: int, dropped: Sequence[str] = (), setting: str = "selector.k"
    ) -> None:
        self.k, self.usable, self.setting = k, usable, setting
        extra = f" after dropping {len(dropped)} constant column(s) ({preview(dropped)})"
        fix = f"set {setting} between 1 and {usable - 1}, or add features"
        if usable <= 1:
            fix = "add candidate features"
        name = setting.rsplit(".", 1)[-1]
        super().__init__(
            f"{name}={k} but only {usable} usable candidate features remain"
            f"{extra if dropped else ''}; selecting all of them (or more) selects nothing. "
            f"Fix: {fix}."
        )


# --- the run dir and what it holds ---------------------------------------------------------------


class RunDirError(CaeRayError):
    """The run directory cannot hold the run's artifacts."""

    exit_code = EXIT_CONFIG

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        super().__init__(
            f"the run dir {path} {problem}. Fix: pass --run-dir (or run_dir) a directory this "
            "user may write, or a new path (it is created)."
        )


class RunDirLockedError(CaeRayError):
    """Another command is writing the run dir (two schedulers, or a run started twice)."""

    exit_code = EXIT_CONFIG

    def __init__(self, path: str, holder: str) -> None:
        self.path, self.holder = path, holder
        super().__init__(
            f"the run dir {path} is in use by {holder}, and two commands writing one run dir "
            "would overwrite each other's artifacts. Fix: wait for it to finish, pass --wait to "
            "start when it does, or give this run another --run-dir."
        )


class MissingDataConfigError(CaeRayError):
    exit_code = EXIT_CONFIG

    def __init__(self, source: str) -> None:
        super().__init__(
            f"{source} names no dataset: neither `data.path` nor `feast.entities` (or a time "
            "range, `feast.start`) is set. Fix: add data: {path: ..., features: ...}, or a "
            "feast: section with entities to export."
        )


class NoExportError(CaeRayError):
    """The config selects from the Feast export, but the run dir holds none yet."""

    exit_code = EXIT_CONFIG

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        super().__init__(
            f"{run_dir} has no Feast export, and data.path is not set, so the config selects "
            f"from it. Fix: run `cae-ray export CONFIG --run-dir {run_dir}` first (or `cae-ray "
            "run`, which does every step), or set data.path."
        )


class LabelNotExportedError(CaeRayError):
    """``data.target`` names a Feast feature that the run dir's export did not fetch."""

    exit_code = EXIT_CONFIG

    def __init__(self, run_dir: str, label: str, exported: str | None) -> None:
        held = f"the label {exported!r}" if exported else "no label"
        super().__init__(
            f"data.target {label!r} names a Feast feature, which the export fetches beside the "
            f"features, but the export in {run_dir} holds {held}. Fix: run `cae-ray export "
            f"CONFIG --run-dir {run_dir}` with this config (or `cae-ray run`, which does every "
            "step)."
        )


class MissingExtraError(CaeRayError):
    """A setting needs a Python package that is an extra of cae-ray, not installed here."""

    exit_code = EXIT_CONFIG

    def __init__(self, setting: str, package: str, extra: str) -> None:
        self.package, self.extra = package, extra
        super().__init__(
            f"{setting} needs the Python package {package!r}, which is not installed here. "
            f"Fix: pip install 'cae-ray[{extra}]'."
        )


class NoSelectionError(CaeRayError):
    """Validation (or pruning) was asked for, but the run dir holds no selection."""

    exit_code = EXIT_CONFIG

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        super().__init__(
            f"{run_dir} has no selection.json. Fix: run `cae-ray select CONFIG --run-dir "
            f"{run_dir}` first, or point --run-dir at the run that made the selection."
        )


class SelectionEditedError(CaeRayError):
    """``selection.json`` no longer hashes to the ``selection_hash`` written with it."""

    exit_code = EXIT_CONFIG

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

    exit_code = EXIT_CONFIG

    def __init__(self, path: str, what: str, recorded: str, current: str) -> None:
        self.path, self.what = path, what
        super().__init__(
            f"{path} was made with a different {what} ({recorded}) than the current one "
            f"({current}). Fix: run `cae-ray select` with this config and run dir first, so the "
            "selection validated is the one this config describes."
        )


# --- signals -------------------------------------------------------------------------------------


class RunInterruptedError(CaeRayError):
    """SIGTERM (a scheduler: Kubernetes, Airflow, Dagster) or SIGINT stopped the command; it
    stopped cleanly and the same command resumes it."""

    exit_code = EXIT_SIGTERM

    def __init__(self, signal_name: str) -> None:
        self.signal_name = signal_name
        if signal_name == "SIGINT":
            self.exit_code = EXIT_SIGINT
        super().__init__(
            f"stopped by {signal_name}: Ray was shut down and no artifact was left half "
            "written (run.json says which step was interrupted). Fix: run the same command "
            "with the same run dir to go on: finished steps are reused and the training resumes "
            "from its last checkpoint, to the same selection as an uninterrupted run."
        )


# --- exit codes ----------------------------------------------------------------------------------


def exit_code(error: BaseException) -> int:
    """The exit code of `cae-ray` and the Ray Job entry point for ``error``: each class says
    its own (:data:`EXIT_FAILURE` for anything that is not a cae-ray error)."""
    return error.exit_code if isinstance(error, CaeRayError) else EXIT_FAILURE
