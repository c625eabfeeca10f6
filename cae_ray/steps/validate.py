"""The validate step: does a model on the K selected features match the all-features baseline?

    validate(config, run) -> RUN_DIR/validation.json

Read top to bottom: the selection must be the one this config made and unedited
(:func:`cae_ray.artifacts.checked_selection`); the metric must fit the task; the gate's model is
chosen once (:func:`gate_model_for`: gradient-boosted trees by default, in memory or on Ray, the
fair ``mlp``, any scikit-learn estimator, or for reconstruction the linear check against
principal components) and refused before any work if it cannot be made; the model is fitted with
the same seeds on all features (the baseline) and on the K selected and scored on the held-out
split; and :func:`cae_ray.gate.decide.decide` puts a paired bootstrap interval on the difference
and passes only when even its pessimistic end is within the tolerance, and the baseline is not a
straw man next to a stock reference.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from cae_ray.artifacts import (
    RAY_STORAGE,
    TRAIN_SPLIT,
    VALIDATION,
    VALIDATION_INPUTS,
    VALIDATION_SPLIT,
    RunDir,
    config_hash,
)
from cae_ray.config import Config
from cae_ray.gate.decide import decide
from cae_ray.gate.errors import TooFewValidationRowsError, ValidationModelError
from cae_ray.gate.linear import LinearCheck
from cae_ray.gate.metrics import MIN_ROWS_FOR_INTERVAL, check_metric, default_metric
from cae_ray.gate.models import (
    GateData,
    GateModel,
    InMemoryModel,
    fitted_model_name,
    model_params,
)
from cae_ray.records import Prepared, Verdict, checked_selection
from cae_ray.runtime.data import read_split, split_files
from cae_ray.runtime.xgboost import XGBoostOnRay
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


def validate(config: Config, run: RunDir) -> Verdict:
    """Run the gate on the selection in ``run``; write and return ``validation.json``.

    Raises before any training when the selection is missing, edited or stale, the metric or
    the model does not fit the task, or the validation split is too small; nothing is written
    then.
    """
    selection, prepared = checked_selection(config, run)
    target = TargetInfo.from_dict(prepared.target)
    metric = gate_metric(config, target)
    model = gate_model_for(config, run, target, metric)
    if prepared.rows.validation < MIN_ROWS_FOR_INTERVAL:
        raise TooFewValidationRowsError(prepared.rows.validation, MIN_ROWS_FOR_INTERVAL)

    made_from = {
        "selection_hash": selection.selection_hash,
        "validation_config_hash": config_hash(config, *VALIDATION_INPUTS),
        "data_fingerprint": prepared.fingerprint,
    }
    done = Verdict.reusable(run, made_from)
    if done is not None:
        logger.info("validate: %s is up to date", run.path(VALIDATION))
        return done

    started = time.perf_counter()
    features = prepared.features
    selected = [features.index(name) for name in selection.selected_features]
    scores = model.scores(selected)
    verdict = Verdict.model_validate(
        {
            **decide(config, metric, scores, *selection.leaks),
            "model": {"name": model.name, "params": model.params},
            "task": target.task,
            "k": len(selected),
            "n_features": len(features),
            "validation_rows": scores.n_rows,
            "repeats": len(scores.selected_values),
            **made_from,
            "seconds": time.perf_counter() - started,
            "cae_ray_version": __version__,
        }
    )
    verdict.write(run)
    return verdict


def gate_metric(config: Config, target: TargetInfo) -> str:
    """``validation.metric``, or the task's default for ``auto``; refused if it does not fit."""
    chosen = config.validation.metric
    metric = default_metric(target.task) if chosen == "auto" else chosen
    check_metric(metric, target.task, len(target.classes) if target.classes else None)
    return metric


def gate_model_for(config: Config, run: RunDir, target: TargetInfo, metric: str) -> GateModel:
    """The model this run's gate fits: decided here, and only here. Reconstruction: the linear
    check (no model). ``validation.model``: ``auto`` and ``gbdt`` are gradient-boosted trees,
    on Ray (:func:`on_ray`) or in memory; ``mlp`` and import paths are fitted in memory. Bad
    parameters are refused now, before any data is read."""
    v = config.validation
    if target.task == "reconstruction":
        if v.model != "auto":
            raise ValidationModelError(
                v.model,
                "reconstruction is validated by the linear reconstruction of all features "
                "from the K selected, against the top-K principal components, not by a model",
                "leave validation.model at auto for reconstruction",
            )
        return LinearCheck(lambda: _reconstruction_rows(run), v.baseline)
    name = fitted_model_name(config)
    params = model_params(config, name)
    if name == "gbdt" and on_ray(config, run):
        rows = _rows_loader(run, SAMPLE_ROWS)
        train_split, storage = run.path(TRAIN_SPLIT), run.path(RAY_STORAGE)
        return XGBoostOnRay(params, rows, target, config, metric, train_split, storage)
    rows = _rows_loader(run, SAMPLE_ROWS if name == "mlp" else None)
    return InMemoryModel(name, params, rows, target, config, metric)


def on_ray(config: Config, run: RunDir) -> bool:
    """Whether ``gbdt`` trains XGBoost with Ray Train: with several workers, or when the train
    split would not fit in this process's memory (with room for the model's copies of it)."""
    if config.scaling.num_workers > 1:
        return True
    size = sum(split_files(run.path(TRAIN_SPLIT)).values())
    return IN_MEMORY_COPIES * size > available_memory() // 2


def _rows_loader(run: RunDir, limit: int | None) -> Any:
    """Reads the splits in memory, at most ``limit`` training rows, when called."""

    def rows() -> GateData:
        prepared = Prepared.read(run)
        assert prepared is not None
        n_features = len(prepared.features)
        x_train, y_train = read_split(run.path(TRAIN_SPLIT), n_features, limit=limit)
        x_eval, y_eval = read_split(run.path(VALIDATION_SPLIT), n_features)
        assert y_train is not None and y_eval is not None, "supervised splits carry the target"
        identity = f"{prepared.fingerprint}|{prepared.config}|{len(x_train)}"
        return GateData(x_train, y_train, x_eval, y_eval, identity)

    return rows


def _reconstruction_rows(run: RunDir) -> tuple[Any, Any]:
    """The first RECONSTRUCTION_ROWS rows of each split (the rows are in hashed order)."""
    prepared = Prepared.read(run)
    assert prepared is not None
    n_features = len(prepared.features)
    x_train, _ = read_split(run.path(TRAIN_SPLIT), n_features, limit=RECONSTRUCTION_ROWS)
    x_eval, _ = read_split(run.path(VALIDATION_SPLIT), n_features, limit=RECONSTRUCTION_ROWS)
    return x_train, x_eval
