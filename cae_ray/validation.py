"""The validation gate: does a model on the K selected features match the all-features baseline?

    validate(config, run_dir) -> run_dir/validation.json

The flow: check that ``selection.json`` is the selection this config made and was not edited;
train a *baseline* head on all features and a *selected* head on the K selected ones, from
scratch, side by side on the same batches (same head, budget and seeds), with Ray Train like
selection itself; score both on the held-out split; put a paired bootstrap interval on the
difference; and pass only when even the pessimistic end of it is within the tolerance
(:mod:`cae_ray.metrics`). Without a target there is nothing to train: the selected columns'
linear reconstruction of all features is compared with the top-K principal components.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cae_ray import __version__
from cae_ray.batches import FEATURES, TARGET, unpack
from cae_ray.config import Config
from cae_ray.data import TargetInfo, read_ordered, rows_per_slice
from cae_ray.errors import (
    NoSelectionError,
    SelectionConfigMismatchError,
    SelectionEditedError,
    TooFewValidationRowsError,
)
from cae_ray.heads import ResolvedTask, build_head, task_loss
from cae_ray.loop import train_epoch
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
from cae_ray.pipeline import (
    PREPARED,
    SELECTION,
    cached,
    config_hash,
    read_json,
    selection_digest,
    write_json,
)
from cae_ray.training import (
    EpochReporter,
    connect,
    mean_over_ranks,
    restore,
    run_on_ray,
    shard_batches,
    shuffled_windows,
    worker_threads,
)

logger = logging.getLogger(__name__)

VALIDATION = "validation.json"
RECONSTRUCTION_ROWS = 20_000
"""Rows of each split used for the (closed-form) reconstruction comparison."""


def validate(
    config: Config,
    run_dir: str | os.PathLike[str],
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the gate on the selection in ``run_dir``; write and return ``validation.json``.

    Raises before any training when the selection is missing, edited or stale, the metric does
    not fit the task, or the validation split is too small; nothing is written then.
    ``on_epoch(record)`` is called on the driver as the validation models' epochs finish.
    """
    run = Path(run_dir).resolve()  # Ray workers have their own working directory
    selection, prepared = _checked_selection(config, run)
    target = TargetInfo(**{k: v for k, v in prepared["target"].items() if k != "column"})
    v = config.validation
    metric = default_metric(target.task) if v.metric == "auto" else v.metric
    check_metric(metric, target.task, len(target.classes) if target.classes else None)
    n_validation = int(prepared["rows"]["validation"])
    if n_validation < MIN_ROWS_FOR_INTERVAL:
        raise TooFewValidationRowsError(n_validation, MIN_ROWS_FOR_INTERVAL)

    wanted = {
        "selection_hash": selection["selection_hash"],
        "validation_config_hash": config_hash(config, "validation"),
        "data_fingerprint": prepared["fingerprint"],
    }
    done = read_json(run / VALIDATION)
    if done is not None and all(done.get(k) == value for k, value in wanted.items()):
        logger.info("validate: %s is up to date", run / VALIDATION)
        return done

    started = time.perf_counter()
    features = prepared["features"]
    selected = [features.index(name) for name in selection["selected_features"]]
    connect(config)
    if target.task == "reconstruction":
        scores = _reconstruction_scores(run, config, len(features), selected)
    else:
        scores = _trained_scores(
            run, config, target, metric, len(features), selected, wanted, on_epoch
        )
    verdict_fields = _decide(config, metric, scores)
    result = {
        **verdict_fields,
        "task": target.task,
        "k": len(selected),
        "n_features": len(features),
        "validation_rows": scores.n_rows,
        "repeats": len(scores.selected_values),
        **wanted,
        "seconds": time.perf_counter() - started,
        "cae_ray_version": __version__,
    }
    write_json(run / VALIDATION, result)
    return result


def _checked_selection(config: Config, run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's selection and prepared data, refused when missing, edited or stale."""
    path = run / SELECTION
    selection = read_json(path)
    prepared = read_json(run / PREPARED)
    if selection is None or prepared is None:
        raise NoSelectionError(str(run))
    actual = selection_digest(selection)
    if selection.get("selection_hash") != actual:
        raise SelectionEditedError(str(path), selection.get("selection_hash"), actual)
    current = config_hash(config, "data", "selector", "training", "head")
    if selection["config_hash"] != current:
        raise SelectionConfigMismatchError(
            str(path), "config", f"hash {selection['config_hash']}", f"hash {current}"
        )
    if selection["data_fingerprint"] != prepared["fingerprint"]:
        raise SelectionConfigMismatchError(
            str(path),
            "dataset",
            f"fingerprint {selection['data_fingerprint']}",
            f"fingerprint {prepared['fingerprint']}",
        )
    return selection, prepared


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
    run: Path, config: Config, n_features: int, selected: list[int]
) -> Scores:
    """Explained variance of all features from the selected ones (least squares) against the
    top-K principal components, on up to ``RECONSTRUCTION_ROWS`` rows of each split."""
    x_train = _head_rows(run / "data" / "train", n_features)
    x_eval = _head_rows(run / "data" / "validation", n_features)
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
    run: Path,
    config: Config,
    target: TargetInfo,
    metric: str,
    n_features: int,
    selected: list[int],
    wanted: dict[str, str],
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> Scores:
    v = config.validation
    repeats = range(v.repeats)
    column_sets: list[list[int] | None] = [None] * v.repeats if v.baseline == "train" else []
    column_sets += [selected] * v.repeats
    seeds = [config.training.seed + r for r in repeats] * (2 if v.baseline == "train" else 1)
    spec = HeadsSpec(
        n_features=n_features,
        task=target.task,
        n_outputs=target.n_outputs,
        threads=worker_threads(config),
        column_sets=column_sets,
        seeds=seeds,
    )
    train_split = run / "data" / "train"
    train_data = cached(config, read_ordered(str(train_split)), train_split)
    name = f"validate-{wanted['selection_hash']}-{wanted['validation_config_hash']}"
    state, _ = run_on_ray(
        heads_loop_per_worker,
        {"spec": asdict(spec)},
        config,
        train_data,
        run / "ray",
        name,
        on_epoch,
    )
    heads = HeadSet(config, spec)
    heads.load_state_dict(state["model"])
    y_true, predictions = predict(heads.eval(), run / "data" / "validation", spec, target)
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
    return Scores(len(y_true), baseline_values, selected_values, score, source, state["history"])


# --- the validation models: heads trained side by side -----------------------------------------


@dataclass(frozen=True)
class HeadsSpec:
    """What a worker needs to build the validation heads: shapes, inputs and seeds."""

    n_features: int
    task: ResolvedTask
    n_outputs: int
    threads: int
    column_sets: list[list[int] | None]
    """Input columns of each head; None: all features (the baseline)."""
    seeds: list[int]
    """Initialisation seed of each head."""


class HeadSet(nn.Module):
    """Independent heads, one per (input columns, seed), trained on the same batches by THE
    loop (:func:`cae_ray.loop.train_epoch`).

    Summing their losses trains each exactly as if alone (no parameter is shared, and Adam is
    per parameter) while the data is read once for all of them.
    """

    def __init__(self, config: Config, spec: HeadsSpec) -> None:
        super().__init__()
        heads = []
        for columns, seed in zip(spec.column_sets, spec.seeds, strict=True):
            torch.manual_seed(seed)
            width = spec.n_features if columns is None else len(columns)
            heads.append(build_head(config.head, width, spec.n_outputs))
        self.heads = nn.ModuleList(heads)
        self.columns = [None if c is None else torch.tensor(c) for c in spec.column_sets]

    def forward(self, x: Tensor) -> list[Tensor]:
        return [
            head(x if columns is None else x[:, columns.to(x.device)])
            for head, columns in zip(self.heads, self.columns, strict=True)
        ]


def heads_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    config = Config.model_validate(loop_config["config"])
    spec = HeadsSpec(**loop_config["spec"])
    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(spec.threads)
    # Plain Adam: the head's weight decay is a selection-time device (see HeadConfig).
    model = ray.train.torch.prepare_model(HeadSet(config, spec))
    inner = getattr(model, "module", model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.training.learning_rate)
    local_dir = loop_config.get("local_checkpoint_dir")
    start_epoch, step, history = restore(inner, optimizer, local_dir)
    reporter = EpochReporter(
        rank, inner, optimizer, history, start_epoch, local_dir, loop_config["progress"]
    )
    torch.manual_seed(config.training.seed + 7919 * (rank + 1) + start_epoch)
    shard = ray.train.get_dataset_shard("train")
    device = ray.train.torch.get_device()

    def loss_at(x: Tensor, y: Tensor | None, step: int) -> Tensor:
        # Independent heads: minimising the sum trains each as if it were alone.
        return torch.stack([task_loss(spec.task, out, x, y) for out in model(x)])

    windows = shuffled_windows(config, spec.n_features, spec.task)
    for epoch in range(start_epoch, config.validation.epochs):
        started = time.perf_counter()
        batches = shard_batches(shard, windows, config.training.seed + epoch)
        losses, step = train_epoch(model, optimizer, batches, loss_at, step=step, device=device)
        record = {
            "epoch": epoch,
            "step": step,
            "losses": [mean_over_ranks(loss) for loss in losses.reshape(-1).tolist()],
            "seconds": time.perf_counter() - started,
        }
        logger.info("validation epoch %d: losses %s", epoch, record["losses"])
        reporter.epoch_done(record)
    reporter.finish()


@torch.no_grad()
def predict(
    model: HeadSet, split: Path, spec: HeadsSpec, target: TargetInfo
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(targets, each head's predictions) over the whole split, in file order: class
    probabilities for classification, values in the target's own units for regression."""
    outputs: list[list[np.ndarray]] = [[] for _ in spec.column_sets]
    targets = []
    dataset = read_ordered(str(split))
    for batch in dataset.iter_batches(
        batch_size=rows_per_slice(spec.n_features), batch_format="pyarrow"
    ):
        x = torch.from_numpy(unpack(batch[FEATURES], spec.n_features))
        targets.append(batch[TARGET].to_numpy())
        for collected, out in zip(outputs, model(x), strict=True):
            collected.append(_as_prediction(out, spec.task, target))
    y_true = np.concatenate(targets)
    if spec.task == "regression":
        y_true = y_true.astype(np.float64) * target.std + target.mean
    return y_true, [np.concatenate(parts) for parts in outputs]


def _as_prediction(output: Tensor, task: ResolvedTask, target: TargetInfo) -> np.ndarray:
    if task == "classification":
        return torch.softmax(output.float(), dim=1).numpy()
    return output.float().reshape(-1).numpy().astype(np.float64) * target.std + target.mean
