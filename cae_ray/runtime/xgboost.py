"""``validation.model: gbdt`` on Ray (:class:`XGBoostOnRay`): XGBoost trained by Ray Train's
``XGBoostTrainer`` on the packed train split, for tables that do not fit in the driver's memory
or runs that train with several workers. Each worker reads its shard and XGBoost's collective
joins the histograms, so no process holds more than its share; the driver only predicts the
validation rows. The stock reference is fitted in memory on a sample of the training rows.

Needs the ``xgboost`` extra (``pip install 'cae-ray[xgboost]'``).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import numpy as np

from cae_ray.artifacts import config_hash
from cae_ray.config import Config
from cae_ray.errors import MissingExtraError
from cae_ray.gate.errors import ModelFitError
from cae_ray.gate.models import ColumnSets, Fitted, FittedModel, LoadRows, Scores
from cae_ray.runtime.batches import FEATURES, TARGET, unpack
from cae_ray.runtime.cluster import cached, connect, worker_threads
from cae_ray.runtime.data import read_ordered
from cae_ray.runtime.signals import fit_interruptibly
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


class XGBoostOnRay(FittedModel):
    """The gate's ``gbdt`` trained on Ray (see the module docstring). ``data`` holds the
    validation rows and a sample of the training rows (for the reference); the training rows
    themselves are read by the workers from ``train_split``."""

    def __init__(
        self,
        params: dict[str, Any],
        rows: LoadRows,
        target: TargetInfo,
        config: Config,
        metric: str,
        train_split: str,
        storage: str,
    ) -> None:
        super().__init__("gbdt", params, rows, target, config, metric)
        if importlib.util.find_spec("xgboost") is None:
            raise MissingExtraError("validation.model: gbdt on Ray", "xgboost", "xgboost")
        self.train_split, self.storage = train_split, storage
        self.train_data: Any = None
        """The train split as a Ray dataset, made when training starts."""

    def scores(self, selected: list[int]) -> Scores:
        connect(self.config)
        self.train_data = cached(self.config, read_ordered(self.train_split), self.train_split)
        return super().scores(selected)

    def fit_predict(self, column_sets: ColumnSets, seed: int) -> dict[str, Fitted]:
        """For each named column set (None: all features), XGBoost trained with Ray Train and its
        predictions on the validation rows: class probabilities, or the (standardised) target.
        It trains a fixed number of rounds, so it keeps no held-out curve."""
        import xgboost
        from ray.train import RunConfig, ScalingConfig, TrainingFailedError
        from ray.train.xgboost import RayTrainReportCallback, XGBoostTrainer

        s, target, n_features = self.config.scaling, self.target, self.data.x_eval.shape[1]
        params = xgboost_params(self.config, target, seed, worker_threads(self.config))
        repeat = seed - self.config.training.seed
        name = f"validate-xgboost-{config_hash(self.config)}-{repeat}"
        predictions = {}
        for which, columns in column_sets.items():
            trainer = XGBoostTrainer(
                train_loop_per_worker,
                train_loop_config={"n_features": n_features, "columns": columns, "params": params},
                scaling_config=ScalingConfig(
                    num_workers=max(s.num_workers, 1), resources_per_worker=s.resources_per_worker
                ),
                run_config=RunConfig(
                    name=f"{name}-{which.replace(' ', '-')}", **ray_storage(self.storage)
                ),
                datasets={"train": self.train_data},
            )
            try:
                result = fit_interruptibly(trainer.fit)
            except TrainingFailedError as e:
                raise ModelFitError("gbdt (XGBoost on Ray)", which, str(e).splitlines()[-1]) from e
            assert result.checkpoint is not None
            booster = RayTrainReportCallback.get_model(result.checkpoint)
            evaluate = self.data.x_eval if columns is None else self.data.x_eval[:, columns]
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
