"""K chosen for you (``selector.k: auto``): the smallest K whose selection matches the
all-features baseline within the gate's tolerance, on inner held-out rows of the training sample
(:mod:`cae_ray.gate.inner`).

One search at ``k_max`` ranks its picks, most useful first. The gate's own model is then fitted
on the first K of them for a ladder of K (geometric from ``k_min``, then a bisection between the
last rung that failed and the first that passed), and scored against the same model on all
features, with the gate's own rule: a K passes only when the pessimistic end of the paired
bootstrap interval of the difference is within the tolerance, so a K that passes by luck is not
chosen. A K must also be within the tolerance of the best rung of the ladder, within noise:
where a few features do better than all of them (noise columns hurt the model, few rows), the
smallest K that merely matches all features stops short of the features that make the
difference. When no K passes but some tie all features on the point estimate, the inner rows
are too few for the interval of a tie to fit within the tolerance: K is then the smallest K
that ties (not ``k_max``), and the curve says that none passed. The gate's held-out split is not
touched here; it scores the chosen K once, exactly as it scores a fixed K.

Without a target (reconstruction) there is nothing to match: the curve is the share of all
features' variance the first K picks explain linearly, and K is its knee (Satopaa et al., 2011,
"Kneedle"): the K furthest above the straight line from the first rung to ``k_max``, beyond
which each pick adds less than the picks do on average.

A scheduled run keeps the K of the previous applied run (``previous``) while it still passes and
no smaller rung of the ladder passes (without a target: while the knee is within one rung of
it), so K does not wander by one or two from week to week.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from cae_ray.config import Config
from cae_ray.gate.inner import Scorer, inner_scorer
from cae_ray.gate.metrics import gate, higher_is_better, paired_bootstrap
from cae_ray.records import CurvePoint, KCurve
from cae_ray.selector.choose import FinalChoice, choose_k, ranked_picks
from cae_ray.selector.model import SelectorModel
from cae_ray.selector.targets import ResolvedTask, TargetInfo

logger = logging.getLogger(__name__)

LADDER_STEP = 1.5
"""Each rung of the ladder is about this many times the one below (at least one more)."""


@dataclass(frozen=True)
class GateRule:
    """What "matches" means: the gate's settings (``validation`` section)."""

    tolerance: float
    relative: bool = False
    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0


# --- the ladder and the choice ----------------------------------------------------------------


def ladder(k_min: int, k_max: int) -> list[int]:
    """k_min, then about LADDER_STEP times the last, up to k_max (always included)."""
    rungs, k = [], k_min
    while k < k_max:
        rungs.append(k)
        k = max(k + 1, math.ceil(k * LADDER_STEP))
    return [*rungs, k_max]


class _Curve:
    """The points scored so far (each K once): the score on every held-out row, the interval of
    the difference with the baseline on the baseline's rows (:mod:`cae_ray.gate.inner`)."""

    def __init__(self, order: Sequence[int], scorer: Scorer, rule: GateRule) -> None:
        self.order, self.scorer, self.rule = order, scorer, rule
        self.baseline = scorer.baseline(np.arange(scorer.baseline_rows))
        self.points: dict[int, CurvePoint] = {}

    def point(self, k: int, on_ladder: bool = False) -> CurvePoint:
        if k not in self.points:
            self.points[k] = _scored(k, list(self.order[:k]), self, on_ladder)
        return self.points[k]

    def record(self, chosen: int, reason: str, passed: bool, kept: bool) -> KCurve:
        r = self.rule
        return KCurve(
            metric=self.scorer.metric,
            baseline=self.baseline,
            baseline_source=self.scorer.baseline_source,
            tolerance=r.tolerance,
            relative=r.relative,
            confidence=r.confidence,
            rows=self.scorer.n_rows,
            points=sorted(self.points.values(), key=lambda p: p.k),
            chosen=chosen,
            reason=reason,
            passed=passed,
            kept_previous=kept,
        )


def _scored(k: int, columns: list[int], curve: _Curve, on_ladder: bool) -> CurvePoint:
    scorer, rule = curve.scorer, curve.rule

    def both(rows: np.ndarray) -> tuple[float, float]:
        return scorer.baseline(rows), scorer.score(columns, rows)

    interval = paired_bootstrap(
        both, scorer.baseline_rows, rule.resamples, rule.seed, rule.confidence
    )
    verdict = gate(scorer.metric, curve.baseline, interval, rule.tolerance, rule.relative)
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
    ``previous``, see the module docstring). When none passes, the smallest K that ties all
    features (its point estimate), else ``k_max``; the curve then says it did not pass."""
    k_max = min(k_max, len(order))
    curve = _Curve(order, scorer, rule)
    rungs = [curve.point(k, on_ladder=True) for k in ladder(k_min, k_max)]
    higher = higher_is_better(scorer.metric)
    best = (max if higher else min)(rungs, key=lambda p: p.score)
    near_best = _NearBest(curve, best)

    def passes(point: CurvePoint) -> bool:
        """Matches all features (the gate's interval rule) and the best rung."""
        return point.passed and near_best(point)

    def ties(point: CurvePoint) -> bool:
        """Scores at least what all features score (the point estimate) and near the best."""
        tied = point.difference >= 0 if higher else point.difference <= 0
        return tied and near_best(point)

    passing = [p.k for p in rungs if passes(p)]
    # When no K passes, the inner rows may be too few to confirm even a tie within the
    # tolerance (its interval is wider): then the smallest K that ties all features, not
    # k_max, and the gate decides.
    acceptable = passes if passing or not any(ties(p) for p in rungs) else ties
    chosen = _smallest(curve, rungs, acceptable) if any(acceptable(p) for p in rungs) else k_max
    kept = False
    if previous is not None and k_min <= previous <= k_max and chosen != previous:
        smaller_rung_passes = any(p.k < previous for p in rungs if acceptable(p))
        if acceptable(curve.point(previous)) and not smaller_rung_passes:
            chosen, kept = previous, True
    curve.points = {k: p.model_copy(update={"passed": passes(p)}) for k, p in curve.points.items()}
    beaten = best.score > curve.baseline if higher else best.score < curve.baseline
    tied = acceptable is ties  # then no K passed
    reason = _reason(chosen, bool(passing), kept, curve, best if beaten else None, tied)
    logger.info("select: %s", reason)
    confirmed = acceptable is passes and (bool(passing) or kept)
    return curve.record(chosen, reason, passed=confirmed, kept=kept)


def _smallest(
    curve: _Curve, rungs: list[CurvePoint], acceptable: Callable[[CurvePoint], bool]
) -> int:
    """The smallest acceptable K: the first acceptable rung, then a bisection between it and
    the rung below."""
    first = next(p.k for p in rungs if acceptable(p))
    failed = [p.k for p in rungs if p.k < first]
    low, high = (failed[-1] if failed else first), first
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if acceptable(curve.point(middle)) else (middle, high)
    return high


class _NearBest:
    """Whether a K is not confidently worse than the best rung by more than the tolerance: the
    optimistic end of the paired interval of their difference (at the gate's confidence) is
    within it. The gate's rule turned around: the best of a dozen noisy rungs is luckier than
    its K deserves, and on a few hundred rows one row is worth more than the tolerance, so a
    K that the rows cannot tell from the best is as good as the best (in the spirit of the
    "one standard error" rule, Hastie et al., ESL 7.10)."""

    def __init__(self, curve: _Curve, best: CurvePoint) -> None:
        self.curve, self.best = curve, best
        rule = curve.rule
        self.allowed = rule.tolerance * (abs(best.score) if rule.relative else 1.0)
        self.higher = higher_is_better(curve.scorer.metric)
        self.known: dict[int, bool] = {best.k: True}

    def __call__(self, point: CurvePoint) -> bool:
        if point.k not in self.known:
            self.known[point.k] = self._near(point.k)
        return self.known[point.k]

    def _near(self, k: int) -> bool:
        scorer, rule, order = self.curve.scorer, self.curve.rule, self.curve.order

        def both(rows: np.ndarray) -> tuple[float, float]:
            best = scorer.score(list(order[: self.best.k]), rows)
            return best, scorer.score(list(order[:k]), rows)

        interval = paired_bootstrap(both, scorer.n_rows, rule.resamples, rule.seed, rule.confidence)
        least_short = -interval.high if self.higher else interval.low
        return least_short <= self.allowed


def _reason(
    chosen: int,
    passed: bool,
    kept: bool,
    curve: _Curve,
    best: CurvePoint | None,
    tied: bool = False,
) -> str:
    rule, scorer = curve.rule, curve.scorer
    within = f"{100 * rule.tolerance:.3g}% of" if rule.relative else f"{rule.tolerance:.4g} of"
    of = f"the {scorer.metric} {curve.baseline:.4f} of {scorer.baseline_source}"
    if best is not None:
        of += f" and, within noise, of the best K on the ladder ({best.score:.4f} at K={best.k})"
    where = f"on {scorer.n_rows:,} held-out training rows"
    if tied:
        unconfirmed = (
            f"no K was confirmed within {within} {of} {where} (the interval of a tie is wider "
            "than the tolerance there)"
        )
        which = (
            "the previous run's K, which still scores at least as well as all features while no "
            "smaller rung does"
            if kept
            else f"K={chosen} is the smallest that scores at least as well as all features"
        )
        verdict = "the gate will say whether it is good enough"
        return f"K={chosen}: {unconfirmed}; {which}, and {verdict}"
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


# --- without a target: the knee of the reconstruction curve -------------------------------------


def knee_curve(
    order: Sequence[int],
    scorer: Scorer,
    rule: GateRule,
    k_min: int,
    k_max: int,
    previous: int | None = None,
) -> KCurve:
    """Score the ladder of K, then the integers around its best rung; choose the knee, the K
    furthest above the chord from the first rung to ``k_max`` (or keep ``previous`` while the
    knee is within one rung of it)."""
    k_max = min(k_max, len(order))
    curve = _Curve(order, scorer, rule)
    rungs = [curve.point(k, on_ladder=True).k for k in ladder(k_min, k_max)]
    first, last = curve.point(k_min).score, curve.point(k_max).score
    span = last - first

    def above_chord(k: int) -> float:
        if span <= 0 or k_max == k_min:
            return -float(k)  # a flat curve: the fewest picks
        return (curve.point(k).score - first) / span - (k - k_min) / (k_max - k_min)

    i = max(range(len(rungs)), key=lambda j: above_chord(rungs[j]))
    chosen = _peak(above_chord, rungs[max(i - 1, 0)], rungs[min(i + 1, len(rungs) - 1)])
    kept = False
    near = previous is not None and previous / LADDER_STEP <= chosen <= previous * LADDER_STEP
    if previous is not None and near and k_min <= previous <= k_max and previous != chosen:
        chosen, kept = curve.point(previous).k, True  # within one rung of the knee
    share = curve.point(chosen).score
    reason = (
        f"K={chosen}: the knee of the reconstruction curve, where the first {chosen} picks explain "
        f"{share:.4f} of all features' variance and all {k_max} explain {last:.4f} on "
        f"{scorer.n_rows:,} held-out training rows; beyond it each pick adds less than the "
        "average pick"
    )
    if kept:
        reason = (
            f"K={chosen}: the previous run's K, within one rung of the knee of the reconstruction "
            "curve"
        )
    logger.info("select: %s", reason)
    return curve.record(chosen, reason, passed=True, kept=kept)


def _peak(value: Callable[[int], float], low: int, high: int) -> int:
    """The integer in [low, high] where a single-peaked ``value`` is largest (ternary search;
    the smallest such integer on a tie)."""
    while high - low > 2:
        third = (high - low) // 3
        if value(low + third) < value(high - third):
            low += third + 1
        else:
            high -= third + 1
    return max(range(low, high + 1), key=value)


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
    no search was trained): its picks ranked, the curve on the inner folds of the sample ``x``,
    ``y``, and the final choice at the chosen K. ``target`` turns regression values back into
    the target's units (scores such as rmse are in them); ``previous`` is the K of the previous
    applied run, which a scheduled run keeps while it passes."""
    s, v = config.selector, config.validation
    k_min, k_max = s.k_range(x.shape[1])
    search = config.model_copy(update={"selector": s.resolved(k_max)})
    order = ranked_picks(model, search, task, x, y).tolist()
    scorer = inner_scorer(config, task, x, y, order, target)
    rule = GateRule(v.tolerance, v.relative, v.confidence, v.bootstrap, config.training.seed)
    choose = knee_curve if task == "reconstruction" else k_curve
    curve = choose(order, scorer, rule, k_min, k_max, previous)
    logger.info("select: k: auto chose %d features (%s)", curve.chosen, scorer.metric)
    resolved = config.model_copy(update={"selector": s.resolved(curve.chosen)})
    return choose_k(model, resolved, task, x, y), curve
