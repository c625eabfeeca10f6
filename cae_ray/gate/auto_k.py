"""K chosen for you (``selector.k: auto``): the smallest K whose selection matches the
all-features baseline within the gate's tolerance, on an inner split of the training rows.

One search at ``k_max`` ranks its picks, most useful first. The gate's own model is then fitted
on the first K of them for a ladder of K (geometric from ``k_min``, then a bisection between the
last rung that failed and the first that passed), and scored against the same model on all
features on the inner split's held-out rows, with the gate's own rule: a K passes only when the
pessimistic end of the paired bootstrap interval of the difference is within the tolerance, so a
K that passes by luck is not chosen. The gate's held-out split is not touched here; it scores
the chosen K once, exactly as it scores a fixed K.

Without a target (reconstruction) the curve is the share of all features' variance the first K
picks explain linearly, and a K "matches" when it explains within the tolerance of what all
``k_max`` picks explain: the knee of that curve.

A scheduled run keeps the K of the previous applied run (``previous``) while it still passes and
no smaller rung of the ladder passes, so K does not wander by one or two from week to week.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from torch import Tensor

from cae_ray.config import Config
from cae_ray.gate.metrics import (
    default_metric,
    explained_variance,
    gate,
    linear_reconstruction_rows,
    paired_bootstrap,
    per_row_metric,
)
from cae_ray.gate.models import (
    Estimator,
    fitted_model_name,
    make_estimator,
    model_params,
    predicted,
)
from cae_ray.records import CurvePoint, KCurve
from cae_ray.selector.choose import FinalChoice, choose_k, ranked_picks
from cae_ray.selector.model import SelectorModel
from cae_ray.selector.targets import ResolvedTask, TargetInfo

logger = logging.getLogger(__name__)

LADDER_STEP = 1.5
"""Each rung of the ladder is about this many times the one below (at least one more)."""
INNER_FRACTION = 0.25
"""Share of the in-memory training sample held out to score the ladder on."""


@dataclass(frozen=True)
class GateRule:
    """What "matches" means: the gate's settings (``validation`` section)."""

    tolerance: float
    relative: bool = False
    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0


# --- what one K scores ------------------------------------------------------------------------


class Scorer(Protocol):
    """Per-row scores of the first K picks against a baseline, on inner held-out rows."""

    metric: str
    baseline_source: str

    @property
    def n_rows(self) -> int: ...

    def baseline(self, rows: np.ndarray) -> float: ...

    def score(self, columns: list[int], rows: np.ndarray) -> float: ...


@dataclass
class FittedScorer:
    """The gate's model (made by ``make(seed)``) on the first K picks and on all features."""

    make: Callable[[int], Estimator]
    x_fit: np.ndarray
    y_fit: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    metric: str
    n_classes: int
    seed: int
    units: Callable[[np.ndarray], np.ndarray] = lambda values: values
    """Regression predictions back in the target's units (``y_eval`` is in them)."""
    baseline_source: str = "the gate's model on all features"
    _outputs: dict[tuple[int, ...] | None, np.ndarray] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return len(self.y_eval)

    def _predictions(self, columns: list[int] | None) -> np.ndarray:
        key = None if columns is None else tuple(columns)
        if key not in self._outputs:
            x_fit = self.x_fit if columns is None else self.x_fit[:, columns]
            x_eval = self.x_eval if columns is None else self.x_eval[:, columns]
            estimator = self.make(self.seed)
            estimator.fit(x_fit, self.y_fit)
            self._outputs[key] = self.units(predicted(estimator, x_eval, self.n_classes))
        return self._outputs[key]

    def baseline(self, rows: np.ndarray) -> float:
        return per_row_metric(self.metric, self.y_eval, self._predictions(None), rows)

    def score(self, columns: list[int], rows: np.ndarray) -> float:
        return per_row_metric(self.metric, self.y_eval, self._predictions(columns), rows)


@dataclass
class ReconstructionScorer:
    """Explained variance of all features from the first K picks; the baseline is all
    ``reference`` picks (the search's ``k_max``)."""

    x_fit: np.ndarray
    x_eval: np.ndarray
    reference: list[int]
    metric: str = "explained_variance"
    baseline_source: str = "all k_max picks"
    _rows: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return len(self.x_eval)

    def score(self, columns: list[int], rows: np.ndarray) -> float:
        key = tuple(columns)
        if key not in self._rows:
            self._rows[key] = linear_reconstruction_rows(self.x_fit, self.x_eval, columns)
        residual, total = self._rows[key]
        return explained_variance(residual, total, rows)

    def baseline(self, rows: np.ndarray) -> float:
        return self.score(self.reference, rows)


def inner_split(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows) of the in-memory sample: a seeded random INNER_FRACTION."""
    order = np.random.default_rng(seed).permutation(n_rows)
    cut = n_rows - max(1, int(INNER_FRACTION * n_rows))
    return np.sort(order[:cut]), np.sort(order[cut:])


# --- the ladder and the choice ----------------------------------------------------------------


def ladder(k_min: int, k_max: int) -> list[int]:
    """k_min, then about LADDER_STEP times the last, up to k_max (always included)."""
    rungs, k = [], k_min
    while k < k_max:
        rungs.append(k)
        k = max(k + 1, math.ceil(k * LADDER_STEP))
    return [*rungs, k_max]


def k_curve(
    order: Sequence[int],
    scorer: Scorer,
    rule: GateRule,
    k_min: int,
    k_max: int,
    previous: int | None = None,
) -> KCurve:
    """Score the first K of ``order`` (the picks, most useful first) for the ladder of K and the
    bisection near where it first passes; choose the smallest K that passes (or keep
    ``previous``, see the module docstring)."""
    k_max = min(k_max, len(order))
    everything = np.arange(scorer.n_rows)
    baseline = scorer.baseline(everything)
    points: dict[int, CurvePoint] = {}

    def point(k: int, on_ladder: bool) -> CurvePoint:
        if k not in points:
            points[k] = _scored(k, list(order[:k]), scorer, baseline, rule, on_ladder)
        return points[k]

    rungs = [point(k, on_ladder=True) for k in ladder(k_min, k_max)]
    passing = [p.k for p in rungs if p.passed]
    if not passing:
        chosen = k_max
    else:
        high = passing[0]
        failed = [p.k for p in rungs if p.k < high]
        low = failed[-1] if failed else high
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if point(middle, on_ladder=False).passed else (middle, high)
        chosen = high
    kept_previous = False
    if previous is not None and k_min <= previous <= k_max and chosen != previous:
        smaller_rung_passes = any(p.passed and p.k < previous for p in rungs)
        if point(previous, on_ladder=False).passed and not smaller_rung_passes:
            chosen, kept_previous = previous, True
    curve = sorted(points.values(), key=lambda p: p.k)
    reason = _reason(chosen, bool(passing), kept_previous, scorer, baseline, rule)
    logger.info("select: %s", reason)
    return KCurve(
        metric=scorer.metric,
        baseline=baseline,
        baseline_source=scorer.baseline_source,
        tolerance=rule.tolerance,
        relative=rule.relative,
        confidence=rule.confidence,
        rows=scorer.n_rows,
        points=curve,
        chosen=chosen,
        reason=reason,
        passed=bool(passing) or kept_previous,
        kept_previous=kept_previous,
    )


def _scored(
    k: int, columns: list[int], scorer: Scorer, baseline: float, rule: GateRule, on_ladder: bool
) -> CurvePoint:
    def both(rows: np.ndarray) -> tuple[float, float]:
        return scorer.baseline(rows), scorer.score(columns, rows)

    interval = paired_bootstrap(both, scorer.n_rows, rule.resamples, rule.seed, rule.confidence)
    verdict = gate(scorer.metric, baseline, interval, rule.tolerance, rule.relative)
    score = scorer.score(columns, np.arange(scorer.n_rows))
    return CurvePoint(
        k=k,
        score=score,
        difference=interval.estimate,
        low=interval.low,
        high=interval.high,
        passed=verdict.passed,
        on_ladder=on_ladder,
    )


def _reason(
    chosen: int, passed: bool, kept: bool, scorer: Scorer, baseline: float, rule: GateRule
) -> str:
    within = f"{100 * rule.tolerance:.3g}% of" if rule.relative else f"{rule.tolerance:.4g} of"
    of = f"the {scorer.metric} {baseline:.4f} of {scorer.baseline_source}"
    where = f"on {scorer.n_rows:,} held-out training rows"
    if kept:
        return (
            f"K={chosen}: the previous run's K, which still passes (within {within} {of} {where})"
            " while no smaller rung of the ladder does"
        )
    if not passed:
        return (
            f"K={chosen}: no K up to k_max={chosen} came within {within} {of} {where}; the gate "
            "will say whether this K is good enough"
        )
    return f"K={chosen}: the smallest K within {within} {of} {where}"


# --- the whole choice, after a search at k_max -------------------------------------------------


def choose_auto_k(
    model: SelectorModel | None,
    config: Config,
    task: ResolvedTask,
    x: Tensor,
    y: Tensor | None,
    target: TargetInfo | None = None,
    previous: int | None = None,
) -> tuple[FinalChoice, KCurve]:
    """``k: auto`` after a search trained with ``k_max`` selector rows (``model``; None where
    no search was trained): its picks ranked, the curve on an inner split of the sample ``x``,
    ``y``, and the final choice at the chosen K. ``target`` turns regression values back into
    the target's units (scores such as rmse are in them); ``previous`` is the K of the previous
    applied run, which a scheduled run keeps while it passes."""
    s, v = config.selector, config.validation
    k_min, k_max = s.k_range(x.shape[1])
    search = config.model_copy(update={"selector": s.resolved(k_max)})
    order = ranked_picks(model, search, task, x, y).tolist()
    fit, held_out = inner_split(len(x), config.training.seed)
    features = x.float().numpy()
    if task == "reconstruction":
        scorer: Scorer = ReconstructionScorer(features[fit], features[held_out], order)
        metric = "explained_variance"
    else:
        assert y is not None, "supervised tasks need a target"
        scorer, metric = fitted_scorer(config, task, features, y.numpy(), fit, held_out, target)
    tolerance = v.tolerance
    rule = GateRule(tolerance, v.relative, v.confidence, v.bootstrap, config.training.seed)
    curve = k_curve(order, scorer, rule, k_min, k_max, previous)
    logger.info("select: k: auto chose %d features (%s)", curve.chosen, metric)
    resolved = config.model_copy(update={"selector": s.resolved(curve.chosen)})
    return choose_k(model, resolved, task, x, y), curve


def fitted_scorer(
    config: Config,
    task: ResolvedTask,
    x: np.ndarray,
    y: np.ndarray,
    fit: np.ndarray,
    held_out: np.ndarray,
    target: TargetInfo | None,
) -> tuple[FittedScorer, str]:
    name = fitted_model_name(config)
    params = model_params(config, name)
    chosen = config.validation.metric
    metric = default_metric(task) if chosen == "auto" else chosen
    units = target.to_units if target is not None else (lambda values: values)
    n_classes = 0
    if task == "classification":
        n_classes = target.n_outputs if target is not None else int(y.max()) + 1

    def make(seed: int) -> Estimator:
        return make_estimator(name, params, task, seed)

    scorer = FittedScorer(
        make,
        x[fit],
        y[fit],
        x[held_out],
        units(y[held_out]),
        metric,
        n_classes,
        config.training.seed,
        units=units,
        baseline_source=f"{name} on all features",
    )
    return scorer, metric
