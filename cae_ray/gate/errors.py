"""Errors of the validation gate: a metric or model that does not fit the task, too few rows for
an interval, a failed fit, and the gate's own "no": a failed gate, a weak baseline or a leaked
target (:func:`gate_failure` says which)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cae_ray.errors import EXIT_CONFIG, EXIT_GATE, CaeRayError, InvalidInputError, preview

if TYPE_CHECKING:
    from cae_ray.records import Verdict


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
            f"use one of {preview(allowed)}"
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


class ValidationModelError(CaeRayError):
    """``validation.model`` cannot be made into a model for this task."""

    exit_code = EXIT_CONFIG

    def __init__(self, model: str, problem: str, fix: str) -> None:
        self.model = model
        super().__init__(f"validation.model {model!r}: {problem}. Fix: {fix}.")


class ModelFitError(CaeRayError):
    """The validation model failed while fitting or predicting: the gate has no verdict."""

    def __init__(self, model: str, which: str, reason: str) -> None:
        self.model = model
        super().__init__(
            f"validation.model {model!r} failed on the {which}: {reason}. Nothing was pruned. "
            "Fix: check validation.model_params, or choose another validation.model."
        )


class WeakBaselineError(CaeRayError):
    """The gate's baseline trails a stock model on all features by more than the slack."""

    exit_code = EXIT_GATE

    def __init__(self, run_dir: str, reason: str) -> None:
        self.run_dir, self.reason = run_dir, reason
        super().__init__(
            f"{reason} A selection that matches a weak baseline may be far from the best all "
            "features can do, so nothing was pruned. Fix: choose a stronger validation.model "
            "(gbdt), give it model_params, or set validation.require_fair_baseline: false to "
            "accept this baseline."
        )


class ValidationGateFailedError(CaeRayError):
    """The validation gate failed, so ``cae-ray run`` stops before touching the registry."""

    exit_code = EXIT_GATE

    def __init__(self, run_dir: str, reason: str) -> None:
        self.run_dir, self.reason = run_dir, reason
        super().__init__(
            f"the validation gate failed ({reason}), so nothing was pruned. Fix: read "
            f"{run_dir}/report/report.html; raise selector.k, train longer (training.epochs), or "
            "loosen validation.tolerance if the loss is acceptable."
        )


class LeakingFeaturesError(ValidationGateFailedError):
    """The gate failed because candidates give the target away: its comparison says nothing
    (the reason names them and the fix; training longer would not help)."""

    def __init__(self, run_dir: str, reason: str) -> None:
        self.run_dir, self.reason = run_dir, reason
        CaeRayError.__init__(self, f"{reason} Nothing was pruned.")


def gate_failure(run_dir: str, verdict: Verdict) -> CaeRayError:
    """The error of a failed gate: a leaked target, a weak baseline, or the selection's loss."""
    if verdict.leaking_features:
        return LeakingFeaturesError(run_dir, verdict.reason)
    if verdict.failed_for_weak_baseline:
        return WeakBaselineError(run_dir, verdict.reason)
    return ValidationGateFailedError(run_dir, verdict.reason)
