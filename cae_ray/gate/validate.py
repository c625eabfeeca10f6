"""The validation gate: does a model on the K selected features match the all-features baseline?

    validate(config, run) -> RUN_DIR/validation.json

The flow: check that ``selection.json`` is the selection this config made and was not edited
(:func:`cae_ray.artifacts.checked_selection`); fit the same model (``validation.model``:
gradient-boosted trees by default, the fair ``mlp`` of :mod:`cae_ray.gate.mlp`, or any
scikit-learn estimator; :mod:`cae_ray.gate.models`) with the same seeds on all features, the
*baseline*, and on the K selected; score both on the held-out split; put a paired bootstrap
interval on the difference; and pass only when even the pessimistic end of it is within the
tolerance (:mod:`cae_ray.gate.metrics`). A stock reference (HistGradientBoosting, default
parameters) on all features checks that the baseline is not a straw man. Without a target there is
nothing to fit: the selected columns' linear reconstruction of all features is compared with the
top-K principal components.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cae_ray.artifacts import (
    RAY_STORAGE,
    TRAIN_SPLIT,
    VALIDATION,
    VALIDATION_INPUTS,
    VALIDATION_SPLIT,
    RunDir,
    checked_selection,
    config_hash,
)
from cae_ray.config import Config
from cae_ray.errors import TooFewValidationRowsError
from cae_ray.gate.metrics import (
    MIN_ROWS_FOR_INTERVAL,
    Interval,
    bootstrap,
    check_metric,
    default_metric,
    explained_variance,
    gate,
    higher_is_better,
    linear_reconstruction_rows,
    pca_reconstruction_rows,
    per_row_metric,
)
from cae_ray.gate.models import (
    REFERENCE,
    Fitted,
    fit_and_predict,
    gate_model,
    make_estimator,
    model_params,
)
from cae_ray.gate.xgboost_ray import xgboost_predictions
from cae_ray.runtime.batches import FEATURES, unpack
from cae_ray.runtime.cluster import cached, connect
from cae_ray.runtime.data import read_ordered, read_split, split_files
from cae_ray.selector.memory import available_memory
from cae_ray.selector.targets import TargetInfo
from cae_ray.version import __version__

logger = logging.getLogger(__name__)

RECONSTRUCTION_ROWS = 20_000
"""Rows of each split used for the (closed-form) reconstruction comparison."""
IN_MEMORY_COPIES = 3
"""The train split, its column subset and HistGradientBoosting's binned copy."""
SAMPLE_ROWS = 200_000
"""Training rows fitted in memory beside XGBoost on Ray (the reference), and by ``mlp``: its
capacity is chosen on held-out rows, and a sample this large decides as well as all of them."""


def validate(config: Config, run: RunDir) -> dict[str, Any]:
    """Run the gate on the selection in ``run_dir``; write and return ``validation.json``.

    Raises before any training when the selection is missing, edited or stale, the metric or
    the model does not fit the task, or the validation split is too small; nothing is written
    then.
    """
    selection, prepared = checked_selection(config, run)
    target = TargetInfo.from_dict(prepared["target"])
    v = config.validation
    metric = default_metric(target.task) if v.metric == "auto" else v.metric
    check_metric(metric, target.task, len(target.classes) if target.classes else None)
    model = gate_model(v, target.task)
    params = model_params(config, model)
    if model != "linear" and not on_ray(config, run, model):
        # A bad path or bad params: refused before any work (XGBoost's params when it runs).
        make_estimator(model, params, target.task, config.training.seed)
    n_validation = int(prepared["rows"]["validation"])
    if n_validation < MIN_ROWS_FOR_INTERVAL:
        raise TooFewValidationRowsError(n_validation, MIN_ROWS_FOR_INTERVAL)

    made_from = {
        "selection_hash": selection["selection_hash"],
        "validation_config_hash": config_hash(config, *VALIDATION_INPUTS),
        "data_fingerprint": prepared["fingerprint"],
    }
    done = run.reusable(VALIDATION, made_from)
    if done is not None:
        logger.info("validate: %s is up to date", run.path(VALIDATION))
        return done

    started = time.perf_counter()
    features = prepared["features"]
    selected = [features.index(name) for name in selection["selected_features"]]
    if model == "linear":
        connect(config)
        scores = _reconstruction_scores(run, config, len(features), selected)
    else:
        in_memory_or_ray = (run, config, target, model, params, prepared, selected)
        predictions = _fitted_predictions(*in_memory_or_ray)
        scores = _scores(metric, model, predictions, v.baseline)
    result = {
        **_decide(config, metric, scores),
        "model": {"name": model, "params": params},
        "task": target.task,
        "k": len(selected),
        "n_features": len(features),
        "validation_rows": scores.n_rows,
        "repeats": len(scores.selected_values),
        **made_from,
        "seconds": time.perf_counter() - started,
        "cae_ray_version": __version__,
    }
    run.write_json(VALIDATION, result)
    return result


# --- scores of both models on the validation rows ----------------------------------------------


@dataclass
class Predictions:
    """The validation rows' targets and each model's predictions, in the target's own units:
    class probabilities (one column per class code) or values."""

    y_true: np.ndarray
    baseline: list[np.ndarray]
    """One per repeat; empty when the baseline is a given number."""
    selected: list[np.ndarray]
    reference: np.ndarray | None
    """The stock reference (:data:`cae_ray.gate.models.REFERENCE`) on all features."""
    fits: dict[str, list[dict[str, Any]]] | None = None
    """Per model ("all features", "selected features", "reference"), one entry per repeat:
    its held-out curve and what the held-out rows chose (:class:`cae_ray.gate.models.Fitted`)."""


@dataclass
class Scores:
    """What the gate needs: scorers over validation-row indices, and the values on all rows."""

    n_rows: int
    baseline_values: list[float]
    selected_values: list[float]
    score: Callable[[np.ndarray], tuple[float, float]]
    """``score(indices) -> (baseline, selected)``, averaged over repeats."""
    baseline_source: str
    reference: Callable[[np.ndarray], float] | None = None
    fits: dict[str, list[dict[str, Any]]] | None = None
    """As :attr:`Predictions.fits`."""


def _scores(metric: str, model: str, p: Predictions, given: str | float) -> Scores:
    y, everything = p.y_true, np.arange(len(p.y_true))

    def mean_score(outputs: list[np.ndarray], rows: np.ndarray) -> float:
        return float(np.mean([per_row_metric(metric, y, out, rows) for out in outputs]))

    def per_repeat(outputs: list[np.ndarray]) -> list[float]:
        return [per_row_metric(metric, y, out, everything) for out in outputs]

    if given == "train":

        def score(rows: np.ndarray) -> tuple[float, float]:
            return mean_score(p.baseline, rows), mean_score(p.selected, rows)

        baseline_values, source = per_repeat(p.baseline), f"{model} on all features"
    else:

        def score(rows: np.ndarray) -> tuple[float, float]:
            return float(given), mean_score(p.selected, rows)

        baseline_values, source = [float(given)], "given"
    reference = None
    if p.reference is not None:
        fitted = p.reference

        def reference(rows: np.ndarray) -> float:
            return per_row_metric(metric, y, fitted, rows)

    return Scores(len(y), baseline_values, per_repeat(p.selected), score, source, reference, p.fits)


def _decide(config: Config, metric: str, scores: Scores) -> dict[str, Any]:
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
    return {
        "metric": metric,
        "passed": verdict.passed and not failed_as_weak,
        "reason": check["reason"] if check and failed_as_weak else verdict.reason,
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
    """Whether the baseline trails the stock reference by more than ``baseline_slack``."""
    if reference is None:
        return None
    v = config.validation
    trails_by = reference.estimate - baseline
    if not higher_is_better(metric):
        trails_by = -trails_by
    weak = bool(trails_by > v.baseline_slack)
    reason = (
        f"The baseline's {metric} {baseline:.4g} trails the stock reference "
        f"(HistGradientBoosting with default parameters, on all features) {reference.estimate:.4g} "
        f"by {trails_by:.4g}, more than validation.baseline_slack {v.baseline_slack:.4g}."
    )
    if weak:
        logger.warning("validate: %s", reason)
    return {
        "reference_model": "HistGradientBoosting, default parameters",
        "trails_by": trails_by,
        "slack": v.baseline_slack,
        "weak": weak,
        "required": config.fair_baseline_required,
        "reason": reason if weak else "",
    }


# --- fitted in memory: gbdt and scikit-learn estimators ----------------------------------------


def _fitted_predictions(
    run: RunDir,
    config: Config,
    target: TargetInfo,
    model: str,
    params: dict[str, Any],
    prepared: dict[str, Any],
    selected: list[int],
) -> Predictions:
    """The model (made with ``params``) fitted on all features and on the selected ones, once
    per repeat (seed ``training.seed + repeat``): in memory, or XGBoost on Ray
    (:func:`on_ray`); and the reference."""
    v, n_features = config.validation, len(prepared["features"])
    ray = on_ray(config, run, model)
    limit = SAMPLE_ROWS if ray or model == "mlp" else None
    x_train, y_train = read_split(run.path(TRAIN_SPLIT), n_features, limit=limit)
    x_eval, y_eval = read_split(run.path(VALIDATION_SPLIT), n_features)
    assert y_train is not None and y_eval is not None, "supervised splits carry the target"
    n_classes = target.n_outputs if target.task == "classification" else 0
    sets: dict[str, list[int] | None] = {"selected features": selected}
    if v.baseline == "train":
        sets["all features"] = None
    if ray:
        connect(config)
        train_split = run.path(TRAIN_SPLIT)
        train_data = cached(config, read_ordered(train_split), train_split)
    fitted: dict[str, list[Fitted]] = {which: [] for which in sets}
    for repeat in range(v.repeats):
        seed = config.training.seed + repeat
        if ray:
            name = f"validate-xgboost-{config_hash(config)}-{repeat}"
            storage = run.path(RAY_STORAGE)
            on_cluster = (config, target, train_data, n_features, sets, x_eval, storage, name, seed)
            outputs = xgboost_predictions(*on_cluster)
        else:

            def make(seed: int = seed) -> Any:
                return make_estimator(model, params, target.task, seed)

            made_from = _made_from(prepared, params, seed)
            in_memory = (make, model, sets, x_train, y_train, x_eval, n_classes, made_from)
            outputs = fit_and_predict(*in_memory)
        for which, out in outputs.items():
            fitted[which].append(out)
    if model == REFERENCE and not params and "all features" in fitted and not ray:
        reference = fitted["all features"][0]  # the reference is this very model
    else:
        seed = config.training.seed
        made_from = _made_from(prepared, {}, seed)
        reference = _reference(target, x_train, y_train, x_eval, seed, made_from)
    fits = {which: [_fit_record(f) for f in outs] for which, outs in fitted.items()}
    fits["reference"] = [_fit_record(reference)]
    baseline = [f.predictions for f in fitted.get("all features", [])]
    selected_outputs = [f.predictions for f in fitted["selected features"]]
    predictions = Predictions(y_eval, baseline, selected_outputs, reference.predictions, fits)
    return _in_target_units(predictions, target)


def _fit_record(fitted: Fitted) -> dict[str, Any]:
    return {"chosen": fitted.chosen, "held_out_curve": fitted.curve}


def on_ray(config: Config, run: RunDir, model: str) -> bool:
    """Whether ``gbdt`` trains XGBoost with Ray Train: with several workers, or when the train
    split would not fit in this process's memory (with room for the model's copies of it)."""
    if model != "gbdt":
        return False
    if config.scaling.num_workers > 1:
        return True
    size = sum(split_files(run.path(TRAIN_SPLIT)).values())
    return IN_MEMORY_COPIES * size > available_memory() // 2


def _reference(
    target: TargetInfo,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: np.ndarray,
    seed: int,
    made_from: str,
) -> Fitted:
    """The stock reference, fitted on all features."""
    n_classes = target.n_outputs if target.task == "classification" else 0

    def make() -> Any:
        return make_estimator(REFERENCE, {}, target.task, seed)

    sets: dict[str, list[int] | None] = {"reference": None}
    reference = fit_and_predict(
        make, REFERENCE, sets, x_train, y_train, x_eval, n_classes, made_from
    )
    return reference["reference"]


def _made_from(prepared: dict[str, Any], params: dict[str, Any], seed: int) -> str:
    """What all-features predictions depend on: the prepared data, the parameters, the seed."""
    data = f"{prepared['fingerprint']}|{prepared['config']}"
    return f"{data}|{json.dumps(params, sort_keys=True)}|{seed}"


def _in_target_units(p: Predictions, target: TargetInfo) -> Predictions:
    """Regression targets and predictions back in the target's own units."""
    if target.task != "regression":
        return p

    def units(values: np.ndarray) -> np.ndarray:
        return values.astype(np.float64) * target.std + target.mean

    return Predictions(
        units(p.y_true),
        [units(b) for b in p.baseline],
        [units(s) for s in p.selected],
        None if p.reference is None else units(p.reference),
        p.fits,
    )


# --- reconstruction: linear, against principal components ---------------------------------------


def _reconstruction_scores(
    run: RunDir, config: Config, n_features: int, selected: list[int]
) -> Scores:
    """Explained variance of all features from the selected ones (least squares) against the
    top-K principal components, on up to ``RECONSTRUCTION_ROWS`` rows of each split."""
    x_train = _head_rows(run.path(TRAIN_SPLIT), n_features)
    x_eval = _head_rows(run.path(VALIDATION_SPLIT), n_features)
    residual, total = linear_reconstruction_rows(x_train, x_eval, selected)
    given = config.validation.baseline
    if given == "train":
        pca_residual, _ = pca_reconstruction_rows(x_train, x_eval, len(selected))

        def score(rows: np.ndarray) -> tuple[float, float]:
            return (
                explained_variance(pca_residual, total, rows),
                explained_variance(residual, total, rows),
            )

        source = f"top-{len(selected)} principal components"
    else:

        def score(rows: np.ndarray) -> tuple[float, float]:
            return float(given), explained_variance(residual, total, rows)

        source = "given"
    everything = np.arange(len(x_eval))
    baseline, value = score(everything)
    return Scores(len(x_eval), [baseline], [value], score, source)


def _head_rows(split: str, n_features: int) -> np.ndarray:
    dataset = read_ordered(split).limit(RECONSTRUCTION_ROWS)
    batch = dataset.take_batch(batch_size=RECONSTRUCTION_ROWS, batch_format="pyarrow")
    return unpack(batch[FEATURES], n_features)
