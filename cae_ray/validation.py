"""The validation gate: does a model on the K selected features match the all-features baseline?

    validate(config, run) -> RUN_DIR/validation.json

The flow: check that ``selection.json`` is the selection this config made and was not edited
(:func:`cae_ray.artifacts.checked_selection`); train a *baseline* head on all features and a
*selected* head on the K selected ones, from scratch, side by side on the same batches (same
head, budget and seeds), through the same Ray Train worker function and loop as the selector
(:func:`cae_ray.training.train_heads`); score both on the held-out split; put a paired
bootstrap interval on the difference; and pass only when even the pessimistic end of it is
within the tolerance (:mod:`cae_ray.metrics`). Without a target there is nothing to train: the
selected columns' linear reconstruction of all features is compared with the top-K principal
components.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

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
from cae_ray.batches import FEATURES, TARGET, unpack
from cae_ray.cluster import cached, connect, worker_threads
from cae_ray.config import Config
from cae_ray.data import read_ordered, rows_per_slice
from cae_ray.errors import TooFewValidationRowsError
from cae_ray.heads import HeadSet
from cae_ray.metrics import (
    MIN_ROWS_FOR_INTERVAL,
    Interval,
    check_metric,
    default_metric,
    explained_variance,
    gate,
    linear_reconstruction_rows,
    paired_bootstrap,
    pca_reconstruction_rows,
    per_row_metric,
)
from cae_ray.progress import OnProgress
from cae_ray.targets import ResolvedTask, TargetInfo
from cae_ray.training import TrainSpec, train_heads
from cae_ray.version import __version__

logger = logging.getLogger(__name__)

RECONSTRUCTION_ROWS = 20_000
"""Rows of each split used for the (closed-form) reconstruction comparison."""


def validate(config: Config, run: RunDir, on_epoch: OnProgress | None = None) -> dict[str, Any]:
    """Run the gate on the selection in ``run_dir``; write and return ``validation.json``.

    Raises before any training when the selection is missing, edited or stale, the metric does
    not fit the task, or the validation split is too small; nothing is written then.
    ``on_epoch(record)`` is called on the driver as the validation models' epochs finish.
    """
    selection, prepared = checked_selection(config, run)
    target = TargetInfo.from_dict(prepared["target"])
    v = config.validation
    metric = default_metric(target.task) if v.metric == "auto" else v.metric
    check_metric(metric, target.task, len(target.classes) if target.classes else None)
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
    connect(config)
    if target.task == "reconstruction":
        scores = _reconstruction_scores(run, config, len(features), selected)
    else:
        scores = _trained_scores(
            run,
            config,
            target,
            metric,
            prepared["rows"],
            len(features),
            selected,
            made_from,
            on_epoch,
        )
    verdict_fields = _decide(config, metric, scores)
    result = {
        **verdict_fields,
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
class Scores:
    """What the gate needs: a scorer over validation-row indices, and the values on all rows."""

    n_rows: int
    baseline_values: list[float]
    selected_values: list[float]
    score: Any
    """``score(indices) -> (baseline, selected)``, averaged over repeats."""
    baseline_source: str
    history: list[dict[str, Any]] | None = None
    """Per-epoch training losses of the heads (baseline heads first), when heads were trained."""


def _decide(config: Config, metric: str, scores: Scores) -> dict[str, Any]:
    v = config.validation
    interval: Interval = paired_bootstrap(
        scores.score, scores.n_rows, v.bootstrap, config.training.seed, v.confidence
    )
    baseline = float(np.mean(scores.baseline_values))
    selected = float(np.mean(scores.selected_values))
    verdict = gate(metric, baseline, interval, v.tolerance, v.relative)
    return {
        "metric": metric,
        "passed": verdict.passed,
        "reason": verdict.reason,
        "baseline": {"source": scores.baseline_source, "value": baseline},
        "selected": {"value": selected},
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
        "history": scores.history,
    }


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


def _head_rows(split: Path, n_features: int) -> np.ndarray:
    dataset = read_ordered(str(split)).limit(RECONSTRUCTION_ROWS)
    batch = dataset.take_batch(batch_size=RECONSTRUCTION_ROWS, batch_format="pyarrow")
    return unpack(batch[FEATURES], n_features)


def _trained_scores(
    run: RunDir,
    config: Config,
    target: TargetInfo,
    metric: str,
    rows: dict[str, int],
    n_features: int,
    selected: list[int],
    made_from: dict[str, str],
    on_epoch: OnProgress | None,
) -> Scores:
    v = config.validation
    repeats = range(v.repeats)
    column_sets: list[list[int] | None] = [None] * v.repeats if v.baseline == "train" else []
    column_sets += [selected] * v.repeats
    seeds = [config.training.seed + r for r in repeats] * (2 if v.baseline == "train" else 1)
    spec = TrainSpec(
        n_features=n_features,
        task=target.task,
        n_outputs=target.n_outputs,
        n_train_rows=rows["train"],
        threads=worker_threads(config),
        column_sets=column_sets,
        seeds=seeds,
    )
    train_split = run.path(TRAIN_SPLIT)
    train_data = cached(config, read_ordered(str(train_split)), train_split)
    name = f"validate-{made_from['selection_hash']}-{made_from['validation_config_hash']}"
    heads, history = train_heads(config, spec, train_data, run.path(RAY_STORAGE), name, on_epoch)
    y_true, predictions = predict(heads, run.path(VALIDATION_SPLIT), n_features, target)
    baseline_predictions = predictions[: v.repeats] if v.baseline == "train" else []
    selected_predictions = predictions[-v.repeats :]

    def mean_score(outputs: list[np.ndarray], rows: np.ndarray) -> float:
        return float(np.mean([per_row_metric(metric, y_true, p, rows) for p in outputs]))

    def per_repeat(outputs: list[np.ndarray]) -> list[float]:
        everything = np.arange(len(y_true))
        return [per_row_metric(metric, y_true, p, everything) for p in outputs]

    if v.baseline == "train":

        def score(rows: np.ndarray) -> tuple[float, float]:
            return mean_score(baseline_predictions, rows), mean_score(selected_predictions, rows)

        baseline_values, source = per_repeat(baseline_predictions), "trained on all features"
    else:
        given = float(v.baseline)

        def score(rows: np.ndarray) -> tuple[float, float]:
            return given, mean_score(selected_predictions, rows)

        baseline_values, source = [given], "given"
    selected_values = per_repeat(selected_predictions)
    return Scores(len(y_true), baseline_values, selected_values, score, source, history)


# --- predictions of the trained heads ----------------------------------------------------------


@torch.no_grad()
def predict(
    model: HeadSet, split: Path, n_features: int, target: TargetInfo
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(targets, each head's predictions) over the whole split, in file order: class
    probabilities for classification, values in the target's own units for regression."""
    outputs: list[list[np.ndarray]] = [[] for _ in model.heads]
    targets = []
    dataset = read_ordered(str(split))
    batches = dataset.iter_batches(batch_size=rows_per_slice(n_features), batch_format="pyarrow")
    for batch in batches:
        x = torch.from_numpy(unpack(batch[FEATURES], n_features))
        targets.append(batch[TARGET].to_numpy())
        for collected, out in zip(outputs, model(x), strict=True):
            collected.append(_as_prediction(out, target.task, target))
    y_true = np.concatenate(targets)
    if target.task == "regression":
        y_true = y_true.astype(np.float64) * target.std + target.mean
    return y_true, [np.concatenate(parts) for parts in outputs]


def _as_prediction(output: Tensor, task: ResolvedTask, target: TargetInfo) -> np.ndarray:
    if task == "classification":
        return torch.softmax(output.float(), dim=1).numpy()
    return output.float().reshape(-1).numpy().astype(np.float64) * target.std + target.mean
