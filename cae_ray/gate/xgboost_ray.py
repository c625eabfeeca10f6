"""``validation.model: gbdt`` on Ray: XGBoost trained by Ray Train's ``XGBoostTrainer`` on the
packed train split, for tables that do not fit in the driver's memory or runs that train with
several workers. Each worker reads its shard and XGBoost's collective joins the histograms, so
no process holds more than its share; the driver only predicts the validation rows.

Needs the ``xgboost`` extra (``pip install 'cae-ray[xgboost]'``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cae_ray.config import Config
from cae_ray.errors import MissingExtraError, ModelFitError
from cae_ray.gate.models import Fitted
from cae_ray.runtime.batches import FEATURES, TARGET, unpack
from cae_ray.selector.targets import TargetInfo
from cae_ray.storage import ray_storage

logger = logging.getLogger(__name__)

ROUNDS = 100
"""Boosting rounds unless ``model_params`` says ``num_boost_round`` (HistGradientBoosting's
default number of iterations)."""


def xgboost_params(config: Config, target: TargetInfo, seed: int, threads: int) -> dict[str, Any]:
    """XGBoost's training parameters for the task, overridden by ``validation.model_params``."""
    if target.task == "classification" and target.n_outputs > 2:
        task: dict[str, Any] = {"objective": "multi:softprob", "num_class": target.n_outputs}
    elif target.task == "classification":
        task = {"objective": "binary:logistic"}
    else:
        task = {"objective": "reg:squarederror"}
    params = {"tree_method": "hist", "seed": seed, "nthread": threads, **task}
    return {**params, **config.validation.model_params}


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """One worker: its shard of the packed train split as a DMatrix, then ``xgboost.train``."""
    import ray.train
    import xgboost
    from ray.train.xgboost import RayTrainReportCallback

    shard = ray.train.get_dataset_shard("train")
    x_parts, y_parts = [], []
    for batch in shard.iter_batches(batch_format="pyarrow", batch_size=None):
        x_parts.append(unpack(batch[FEATURES], loop_config["n_features"]))
        y_parts.append(batch[TARGET].to_numpy())
    x = np.concatenate(x_parts)
    columns = loop_config["columns"]
    train = xgboost.DMatrix(x if columns is None else x[:, columns], label=np.concatenate(y_parts))
    params = dict(loop_config["params"])
    rounds = int(params.pop("num_boost_round", ROUNDS))
    xgboost.train(params, train, num_boost_round=rounds, callbacks=[RayTrainReportCallback()])


def xgboost_predictions(
    config: Config,
    target: TargetInfo,
    train_data: Any,
    n_features: int,
    column_sets: dict[str, list[int] | None],
    x_eval: np.ndarray,
    storage: str,
    name: str,
    seed: int,
) -> dict[str, Fitted]:
    """For each named column set (None: all features), XGBoost trained with Ray Train and its
    predictions on ``x_eval``: class probabilities, or the (standardised) target. It trains a
    fixed number of rounds, so it keeps no held-out curve."""
    try:
        import xgboost
        from ray.train import RunConfig, ScalingConfig, TrainingFailedError
        from ray.train.xgboost import RayTrainReportCallback, XGBoostTrainer
    except ModuleNotFoundError as e:
        raise MissingExtraError("validation.model: gbdt on Ray", "xgboost", "xgboost") from e

    from cae_ray.runtime.cluster import worker_threads

    s = config.scaling
    params = xgboost_params(config, target, seed, worker_threads(config))
    predictions = {}
    for which, columns in column_sets.items():
        trainer = XGBoostTrainer(
            train_loop_per_worker,
            train_loop_config={"n_features": n_features, "columns": columns, "params": params},
            scaling_config=ScalingConfig(
                num_workers=max(s.num_workers, 1), resources_per_worker=s.resources_per_worker
            ),
            run_config=RunConfig(name=f"{name}-{which.replace(' ', '-')}", **ray_storage(storage)),
            datasets={"train": train_data},
        )
        try:
            result = trainer.fit()
        except TrainingFailedError as e:
            raise ModelFitError("gbdt (XGBoost on Ray)", which, str(e).splitlines()[-1]) from e
        assert result.checkpoint is not None
        booster = RayTrainReportCallback.get_model(result.checkpoint)
        evaluate = x_eval if columns is None else x_eval[:, columns]
        outputs = _predicted(booster.predict(xgboost.DMatrix(evaluate)), target)
        predictions[which] = Fitted(outputs, None, {"rounds": booster.num_boosted_rounds()})
        logger.info("validate: XGBoost on %s trained with %d worker(s)", which, s.num_workers)
    return predictions


def _predicted(raw: np.ndarray, target: TargetInfo) -> np.ndarray:
    if target.task != "classification":
        return np.asarray(raw, np.float64).reshape(-1)
    if raw.ndim == 1:  # binary:logistic gives P(class 1)
        return np.stack([1.0 - raw, raw], axis=1).astype(np.float64)
    return np.asarray(raw, np.float64)
