"""The models the validation gate fits: what ``validation.model`` names, and one model of it
fitted on all features (the baseline) and one on the K selected, with the same seed, in memory.

    gate_model(config, task)           -> "gbdt", "mlp", an import path, or "linear"
    model_params(config, name)         -> the keyword arguments the model is made with
    make_estimator(name, params, ...)  -> an unfitted scikit-learn estimator
    fit_and_predict(...)               -> each column set's predictions on the validation rows,
                                          and the model's held-out curve where it keeps one

The stock reference for the baseline strength check is :data:`REFERENCE`, fitted the same way.
Predictions are class probabilities (one column per class code) for classification, and the
standardised target for regression (the caller turns them back into the target's units).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cae_ray.config import Config, ValidationConfig
from cae_ray.errors import MissingExtraError, ModelFitError, ValidationModelError
from cae_ray.selector.targets import ResolvedTask

logger = logging.getLogger(__name__)

REFERENCE = "gbdt"
"""The baseline strength check's stock model: HistGradientBoosting with default parameters."""
_EXTRAS = {"xgboost": "xgboost", "lightgbm": "lightgbm"}
"""Top-level package of a model path -> the cae-ray extra that installs it."""

Estimator = Any


def gate_model(config: ValidationConfig, task: ResolvedTask) -> str:
    """The model the gate fits for ``task``: ``linear`` for reconstruction (no model trained:
    the linear reconstruction is compared with principal components), else ``gbdt`` for
    ``auto``, or what ``validation.model`` names."""
    if task == "reconstruction":
        if config.model != "auto":
            raise ValidationModelError(
                config.model,
                "reconstruction is validated by the linear reconstruction of all features "
                "from the K selected, against the top-K principal components, not by a model",
                "leave validation.model at auto for reconstruction",
            )
        return "linear"
    return "gbdt" if config.model == "auto" else config.model


def model_params(config: Config, name: str) -> dict[str, Any]:
    """``validation.model_params``; for ``mlp`` over its defaults: the selector's head widths
    (``head.hidden``) and at most ``validation.epochs`` epochs per decay."""
    if name != "mlp":
        return dict(config.validation.model_params)
    defaults = {"hidden": list(config.head.hidden), "max_epochs": config.validation.epochs}
    return {**defaults, **config.validation.model_params}


def make_estimator(name: str, params: dict[str, Any], task: ResolvedTask, seed: int) -> Estimator:
    """An unfitted estimator: ``gbdt``, ``mlp`` or a class by import path, with ``params``,
    seeded with ``seed`` where it takes a ``random_state`` and ``params`` does not set one."""
    from sklearn.base import is_classifier, is_regressor

    cls = _builtin(name, task) if name in ("gbdt", "mlp") else _imported(name)
    try:
        estimator = cls(**params)
    except TypeError as e:  # an unknown keyword
        raise ValidationModelError(name, f"model_params {params} ({e})", _params_fix(cls)) from e
    fits = is_classifier(estimator) if task == "classification" else is_regressor(estimator)
    if not fits:
        kind = "classifier" if task == "classification" else "regressor"
        raise ValidationModelError(
            name, f"is not a {kind}, and the task is {task}", f"give the import path of a {kind}"
        )
    if "random_state" in estimator.get_params() and "random_state" not in params:
        estimator.set_params(random_state=seed)
    return estimator


def _builtin(name: str, task: ResolvedTask) -> type:
    if name == "mlp":
        from cae_ray.gate.mlp import MLPGateClassifier, MLPGateRegressor

        return MLPGateClassifier if task == "classification" else MLPGateRegressor
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if task == "classification":
        return HistGradientBoostingClassifier
    return HistGradientBoostingRegressor


def _imported(path: str) -> type:
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        package = (e.name or module_name).split(".")[0]
        extra = _EXTRAS.get(package)
        if extra is not None:
            raise MissingExtraError(f"validation.model {path!r}", package, extra) from e
        raise ValidationModelError(
            path, f"no module {e.name!r} can be imported", "check the path and that it is installed"
        ) from e
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        known = ", ".join(n for n in dir(module) if n[:1].isupper())[:300]
        raise ValidationModelError(
            path, f"module {module_name!r} has no class {class_name!r}", f"one of: {known}"
        )
    return cls


def _params_fix(cls: type) -> str:
    import inspect

    try:
        names = [p for p in inspect.signature(cls).parameters if p not in ("self", "kwargs")]
    except (TypeError, ValueError):
        return "check validation.model_params against the model's documentation"
    return f"use only its parameters: {', '.join(names)}"


@dataclass(frozen=True)
class Fitted:
    """One model's predictions on the validation rows, and what it chose on held-out rows."""

    predictions: np.ndarray
    curve: list[dict[str, float]] | None
    """Its loss on held-out training rows as it trained, when it keeps one: ``mlp`` (per decay
    and epoch) and HistGradientBoosting when it stops early (per iteration)."""
    chosen: dict[str, Any]
    """What the held-out rows decided: ``mlp``'s decay, epochs and input columns used, the
    trees' iterations."""


_ALL_FEATURES: dict[str, Fitted] = {}
"""Models on all features, by what made them (data, model, parameters, seed): they do not
depend on the selection, so validating another selection of the same data in the same process
(another k, a random control) does not fit them again."""
_REMEMBERED = 8


def fit_and_predict(
    make: Callable[[], Estimator],
    name: str,
    column_sets: dict[str, list[int] | None],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: np.ndarray,
    n_classes: int,
    made_from: str,
) -> dict[str, Fitted]:
    """For each named column set (None: all features), a fresh ``make()`` fitted on the
    training rows, and its predictions on the validation rows. ``made_from`` names the data,
    parameters and seed, under which the all-features fits are remembered."""
    fitted = {}
    for which, columns in column_sets.items():
        key = f"{made_from}|{name}|{len(x_train)}"
        if columns is None and key in _ALL_FEATURES:
            fitted[which] = _ALL_FEATURES[key]
            continue
        started = time.perf_counter()
        train = x_train if columns is None else x_train[:, columns]
        evaluate = x_eval if columns is None else x_eval[:, columns]
        estimator = make()
        try:
            estimator.fit(train, y_train)
            predictions = _predicted(estimator, evaluate, n_classes)
        except (ValueError, TypeError) as e:  # scikit-learn's InvalidParameterError included
            raise ModelFitError(name, which, f"{type(e).__name__}: {e}") from e
        fitted[which] = Fitted(predictions, *_held_out(estimator))
        if columns is None:
            if len(_ALL_FEATURES) >= _REMEMBERED:
                del _ALL_FEATURES[next(iter(_ALL_FEATURES))]  # the oldest
            _ALL_FEATURES[key] = fitted[which]
        logger.info(
            "validate: %s on %s fitted in %.1f s", name, which, time.perf_counter() - started
        )
    return fitted


def _held_out(estimator: Estimator) -> tuple[list[dict[str, float]] | None, dict[str, Any]]:
    """(held-out curve, what it chose) of a fitted ``mlp`` or HistGradientBoosting model."""
    if hasattr(estimator, "decay_"):  # mlp
        chosen = {
            "decay": estimator.decay_,
            "inner_loss": estimator.inner_loss_,
            "inputs_used": estimator.inputs_used_,
        }
        return estimator.curve_, chosen
    scores = getattr(estimator, "validation_score_", None)
    if scores is None or len(scores) == 0:  # trees without early stopping, any other model
        chosen = {"iterations": int(estimator.n_iter_)} if hasattr(estimator, "n_iter_") else {}
        return None, chosen
    # HistGradientBoosting's default scorer is the negated loss, on its own training rows too.
    train = getattr(estimator, "train_score_", [])
    curve = [
        {"iteration": i, "held_out_loss": -float(s)}
        | ({"train_loss": -float(train[i])} if i < len(train) else {})
        for i, s in enumerate(scores)
    ]
    return curve, {"iterations": int(estimator.n_iter_)}


def _predicted(estimator: Estimator, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities over every class code (classes absent from training get 0), or values."""
    if n_classes == 0:
        return np.asarray(estimator.predict(x), np.float64).reshape(-1)
    codes = np.asarray(estimator.classes_, np.int64)
    if hasattr(estimator, "predict_proba"):
        seen = np.asarray(estimator.predict_proba(x), np.float64)
    else:  # a classifier without probabilities: its picks, as certainties
        seen = (np.asarray(estimator.predict(x))[:, None] == codes[None, :]).astype(np.float64)
    full = np.zeros((len(x), n_classes))
    full[:, codes] = seen
    return full
