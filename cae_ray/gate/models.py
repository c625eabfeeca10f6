"""The models the validation gate fits: the same model, with the same seeds, on all features
(the *baseline*) and on the K selected, scored on the same validation rows.

    GateModel.scores(selected) -> Scores: per-row scorers of the baseline and of the selection
                                  (and of a stock reference), for the gate's paired interval

Every kind of model answers that one question: :class:`InMemoryModel` (``gbdt``: scikit-learn's
HistGradientBoosting, ``mlp``: :mod:`cae_ray.gate.mlp`, or any scikit-learn estimator by import
path), :class:`cae_ray.gate.linear.LinearCheck` (reconstruction: no model is trained) and
:class:`cae_ray.runtime.xgboost.XGBoostOnRay` (``gbdt`` for tables beyond this process's
memory). Which one a run uses is decided once, in :func:`cae_ray.steps.validate.gate_model_for`.

Predictions are class probabilities (one column per class code) for classification, and values
in the target's own units for regression. The stock reference for the baseline strength check is
:data:`REFERENCE` with default parameters, fitted in memory the same way.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from cae_ray.config import Config
from cae_ray.errors import MissingExtraError
from cae_ray.gate.errors import ModelFitError, ValidationModelError
from cae_ray.gate.metrics import per_row_metric
from cae_ray.selector.targets import ResolvedTask, TargetInfo

logger = logging.getLogger(__name__)

REFERENCE = "gbdt"
"""The baseline strength check's stock model: HistGradientBoosting with default parameters."""
_EXTRAS = {"xgboost": "xgboost", "lightgbm": "lightgbm"}
"""Top-level package of a model path -> the cae-ray extra that installs it."""

Estimator = Any
ColumnSets = dict[str, list[int] | None]
"""Named column sets to fit on: ``"all features"`` (None), ``"selected features"``, ..."""


@dataclass(frozen=True)
class Fitted:
    """One model's predictions on the validation rows, and what it chose on held-out rows."""

    predictions: np.ndarray
    curve: list[dict[str, float]] | None
    """Its loss on held-out training rows as it trained, when it keeps one: ``mlp`` (per decay
    and epoch) and HistGradientBoosting when it stops early (per iteration)."""
    chosen: dict[str, Any]
    """What the held-out rows decided: ``mlp``'s decay, epochs and input columns used, the
    trees' iterations, XGBoost's rounds."""


@dataclass
class Scores:
    """What the gate decides on: scorers over validation-row indices, and the values on all
    rows."""

    n_rows: int
    baseline_values: list[float]
    """One per repeat (a given baseline: that one number)."""
    selected_values: list[float]
    score: Callable[[np.ndarray], tuple[float, float]]
    """``score(indices) -> (baseline, selected)``, averaged over repeats."""
    baseline_source: str
    reference: Callable[[np.ndarray], float] | None = None
    fits: dict[str, list[dict[str, Any]]] | None = None
    """Per model ("all features", "selected features", "reference"), one entry per repeat: its
    held-out curve and what the held-out rows chose (:class:`Fitted`)."""


class GateModel(Protocol):
    """A model the gate compares the K selected features with all features by."""

    name: str
    params: dict[str, Any]

    def scores(self, selected: list[int]) -> Scores:
        """The baseline's and the selection's scores on the validation rows."""
        ...


@dataclass(frozen=True)
class GateData:
    """The rows a model is trained and scored on, in memory."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    identity: str
    """What the rows are (the prepared data, how many training rows): all-features fits are
    remembered under it."""


LoadRows = Callable[[], GateData]
"""Reads the rows when the model first needs them: a model is made (and its parameters
checked) before any data is read."""


# --- a model trained on the training rows ----------------------------------------------------


class FittedModel(ABC):
    """A model trained once per repeat (seed ``training.seed + repeat``) on all features and on
    the K selected; the stock reference once on all features. Subclasses say how one model is
    fitted on a set of columns (:meth:`fit_predict`)."""

    def __init__(
        self,
        name: str,
        params: dict[str, Any],
        rows: LoadRows,
        target: TargetInfo,
        config: Config,
        metric: str,
    ) -> None:
        self.name, self.params, self.target = name, params, target
        self.config, self.metric = config, metric
        self._rows = rows
        self._data: GateData | None = None

    @property
    def data(self) -> GateData:
        if self._data is None:
            self._data = self._rows()
        return self._data

    @abstractmethod
    def fit_predict(self, column_sets: ColumnSets, seed: int) -> dict[str, Fitted]:
        """For each named column set (None: all features), a model trained on the training rows
        with ``seed``, and its predictions on the validation rows (standardised units)."""

    def scores(self, selected: list[int]) -> Scores:
        v = self.config.validation
        sets: ColumnSets = {"selected features": selected}
        if v.baseline == "train":
            sets["all features"] = None
        fitted: dict[str, list[Fitted]] = {which: [] for which in sets}
        for repeat in range(v.repeats):
            for which, out in self.fit_predict(sets, self.config.training.seed + repeat).items():
                fitted[which].append(out)
        reference = self._reference(fitted)
        fits = {which: [_fit_record(f) for f in outs] for which, outs in fitted.items()}
        fits["reference"] = [_fit_record(reference)]
        units = self.target.to_units
        y = units(self.data.y_eval)
        baseline = [units(f.predictions) for f in fitted.get("all features", [])]
        chosen = [units(f.predictions) for f in fitted["selected features"]]
        source = f"{self.name} on all features"
        paired = paired_scores(self.metric, source, y, baseline, chosen, v.baseline)
        reference_outputs = units(reference.predictions)

        def reference_score(rows: np.ndarray) -> float:
            return per_row_metric(self.metric, y, reference_outputs, rows)

        return replace(paired, reference=reference_score, fits=fits)

    def _reference(self, fitted: dict[str, list[Fitted]]) -> Fitted:
        """The stock reference on all features: this very model's baseline when it is the
        reference, else one fitted in memory on the same rows."""
        if self.is_reference and "all features" in fitted:
            return fitted["all features"][0]
        stock = InMemoryModel(
            REFERENCE, {}, lambda: self.data, self.target, self.config, self.metric
        )
        return stock.fit_predict({"reference": None}, self.config.training.seed)["reference"]

    @property
    def is_reference(self) -> bool:
        return False


def _fit_record(fitted: Fitted) -> dict[str, Any]:
    return {"chosen": fitted.chosen, "held_out_curve": fitted.curve}


def paired_scores(
    metric: str,
    source: str,
    y: np.ndarray,
    baseline: list[np.ndarray],
    selected: list[np.ndarray],
    given: str | float,
) -> Scores:
    """The scorers of the baseline (trained: averaged over repeats; or a given number) and of
    the selection, on the same rows."""
    everything = np.arange(len(y))

    def mean_score(outputs: list[np.ndarray], rows: np.ndarray) -> float:
        return float(np.mean([per_row_metric(metric, y, out, rows) for out in outputs]))

    def per_repeat(outputs: list[np.ndarray]) -> list[float]:
        return [per_row_metric(metric, y, out, everything) for out in outputs]

    if given == "train":

        def score(rows: np.ndarray) -> tuple[float, float]:
            return mean_score(baseline, rows), mean_score(selected, rows)

        return Scores(len(y), per_repeat(baseline), per_repeat(selected), score, source)

    def given_score(rows: np.ndarray) -> tuple[float, float]:
        return float(given), mean_score(selected, rows)

    return Scores(len(y), [float(given)], per_repeat(selected), given_score, "given")


# --- in memory: gbdt, mlp and any scikit-learn estimator ---------------------------------------


_ALL_FEATURES: dict[str, Fitted] = {}
"""Models on all features, by what made them (data, model, parameters, seed): they do not
depend on the selection, so validating another selection of the same data in the same process
(another k, a random control) does not fit them again."""
_REMEMBERED = 8


class InMemoryModel(FittedModel):
    """``gbdt``, ``mlp`` or a scikit-learn estimator by import path, fitted in this process."""

    def __init__(
        self,
        name: str,
        params: dict[str, Any],
        rows: LoadRows,
        target: TargetInfo,
        config: Config,
        metric: str,
    ) -> None:
        super().__init__(name, params, rows, target, config, metric)
        self.make(seed=config.training.seed)  # bad parameters are refused before any data

    @property
    def is_reference(self) -> bool:
        return self.name == REFERENCE and not self.params

    def make(self, seed: int) -> Estimator:
        return make_estimator(self.name, self.params, self.target.task, seed)

    def fit_predict(self, column_sets: ColumnSets, seed: int) -> dict[str, Fitted]:
        d = self.data
        n_classes = self.target.n_outputs if self.target.task == "classification" else 0
        fitted = {}
        for which, columns in column_sets.items():
            key = f"{d.identity}|{json.dumps(self.params, sort_keys=True)}|{seed}|{self.name}"
            if columns is None and key in _ALL_FEATURES:
                fitted[which] = _ALL_FEATURES[key]
                continue
            started = time.perf_counter()
            train = d.x_train if columns is None else d.x_train[:, columns]
            evaluate = d.x_eval if columns is None else d.x_eval[:, columns]
            estimator = self.make(seed)
            try:
                estimator.fit(train, d.y_train)
                predictions = predicted(estimator, evaluate, n_classes)
            except (ValueError, TypeError) as e:  # scikit-learn's InvalidParameterError included
                raise ModelFitError(self.name, which, f"{type(e).__name__}: {e}") from e
            fitted[which] = Fitted(predictions, *_held_out(estimator))
            if columns is None:
                if len(_ALL_FEATURES) >= _REMEMBERED:
                    del _ALL_FEATURES[next(iter(_ALL_FEATURES))]  # the oldest
                _ALL_FEATURES[key] = fitted[which]
            logger.info(
                "validate: %s on %s fitted in %.1f s",
                self.name,
                which,
                time.perf_counter() - started,
            )
        return fitted


def fitted_model_name(config: Config) -> str:
    """The model the gate fits for a target: ``validation.model``, gbdt for ``auto``."""
    return "gbdt" if config.validation.model == "auto" else config.validation.model


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


def predicted(estimator: Estimator, x: np.ndarray, n_classes: int) -> np.ndarray:
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
