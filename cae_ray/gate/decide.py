"""The gate's decision, from the two models' scores: a paired bootstrap interval on their
difference, the tolerance, and whether the baseline is fair (:func:`decide`). Every rule of the
verdict lives here; the record it makes says what was decided (``passed``, ``reason``, and in
``baseline_check`` whether a weak baseline failed the gate or only warns). Candidates that give
the target away fail the gate whatever the scores: the baseline (and the selection, if it holds
one) reads the label, so the comparison says nothing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from cae_ray.config import Config
from cae_ray.errors import preview
from cae_ray.gate.metrics import Interval, bootstrap, figures, gate, higher_is_better
from cae_ray.gate.models import Scores

logger = logging.getLogger(__name__)

REFERENCE_MODEL = "HistGradientBoosting, default parameters"


def decide(
    config: Config,
    metric: str,
    scores: Scores,
    leaking: Sequence[str] = (),
    selected_leaks: Sequence[str] = (),
) -> dict[str, Any]:
    """The verdict's figures: passed, reason, both scores and the reference with their
    intervals, the difference's interval, the tolerance, and the baseline check. ``leaking``:
    the candidates that alone predict the target (``Selection.leaking_features``), of which
    the selection holds ``selected_leaks``."""
    v, seed = config.validation, config.training.seed

    def scored(rows: np.ndarray) -> dict[str, float]:
        baseline, selected = scores.score(rows)
        both = {"baseline": baseline, "selected": selected, "difference": selected - baseline}
        return both if scores.reference is None else {**both, "reference": scores.reference(rows)}

    # One set of resamples for all: the difference stays paired, each row scored once per draw.
    intervals = bootstrap(scored, scores.n_rows, v.bootstrap, seed, v.confidence)
    interval = intervals.pop("difference")
    baseline = float(np.mean(scores.baseline_values))
    selected = float(np.mean(scores.selected_values))
    verdict = gate(metric, baseline, interval, v.tolerance, v.relative)
    check = _baseline_check(config, metric, baseline, intervals.get("reference"))
    failed_as_weak = check is not None and check["weak"] and check["required"]
    reason = check["reason"] if check and failed_as_weak else verdict.reason
    if leaking:
        reason = _leak_reason(leaking, selected_leaks)
        logger.warning("validate: %s", reason)
    return {
        "metric": metric,
        "passed": verdict.passed and not failed_as_weak and not leaking,
        "reason": reason,
        "leaking_features": list(leaking),
        "perfect": _perfect(metric, baseline) and _perfect(metric, selected),
        "baseline": {
            "source": scores.baseline_source,
            "value": baseline,
            **_ends(intervals["baseline"]),
        },
        "selected": {"value": selected, **_ends(intervals["selected"])},
        "reference": None
        if "reference" not in intervals
        else {"value": intervals["reference"].estimate, **_ends(intervals["reference"])},
        "baseline_check": check,
        "values_per_repeat": {
            "baseline": scores.baseline_values,
            "selected": scores.selected_values,
        },
        "difference": interval.estimate,
        "interval": {
            "low": interval.low,
            "high": interval.high,
            "confidence": v.confidence,
            "resamples": v.bootstrap,
        },
        "tolerance": v.tolerance,
        "relative": v.relative,
        "allowed_loss": verdict.allowed,
        "worst_loss": verdict.worst_shortfall,
        "fits": scores.fits,
    }


def _ends(interval: Interval) -> dict[str, float]:
    return {"low": interval.low, "high": interval.high}


def _baseline_check(
    config: Config, metric: str, baseline: float, reference: Interval | None
) -> dict[str, Any] | None:
    """Whether the baseline trails the stock reference by more than ``baseline_slack``, and
    whether that fails the gate (``validation.require_fair_baseline``)."""
    if reference is None:
        return None
    v = config.validation
    trails_by = reference.estimate - baseline
    if not higher_is_better(metric):
        trails_by = -trails_by
    weak = bool(trails_by > v.baseline_slack)
    base, stock, by, slack = figures(baseline, reference.estimate, trails_by, v.baseline_slack)
    reason = (
        f"The baseline's {metric} {base} trails the stock reference (HistGradientBoosting with "
        f"default parameters, on all features) {stock} by {by}, more than "
        f"validation.baseline_slack {slack}."
    )
    if weak:
        logger.warning("validate: %s", reason)
    return {
        "reference_model": REFERENCE_MODEL,
        "trails_by": trails_by,
        "slack": v.baseline_slack,
        "weak": weak,
        "required": config.fair_baseline_required,
        "reason": reason if weak else "",
    }


def _perfect(metric: str, value: float) -> bool:
    """Whether ``value`` is the metric's best: 1 for the scores, 0 for an error (rmse)."""
    best = 1.0 if higher_is_better(metric) else 0.0
    return abs(value - best) < 1e-9


def _leak_reason(leaking: Sequence[str], selected: Sequence[str]) -> str:
    held = f"the selection holds {preview(selected)}" if selected else "none is selected"
    return (
        f"The candidates hold {len(leaking)} feature(s) that alone predict the target on rows "
        f"they were not fitted on: {preview(leaking)} ({held}). Each is a copy of the label or "
        "computed from it: the baseline reads the answer, so the comparison says nothing (and "
        "a kept FeatureService holding one would serve the label). Fix: leave them out of the "
        "candidates (data.features, or feast.features) and run again; if one is truly known "
        'when the model predicts, prune with --force --reason "...".'
    )
