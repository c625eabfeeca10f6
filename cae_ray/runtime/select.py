"""The select step: train the selector with Ray Train on the prepared train split, choose the
final K features, and write ``selection.json``.

    select(config, run) -> RUN_DIR/selection.json

A selection records what decided it (the config hash of :data:`SELECTION_INPUTS` and the data
fingerprint) and a digest of itself; validation and pruning refuse one that no longer matches
(:func:`cae_ray.artifacts.checked_selection`). An interrupted training resumes from its last
checkpoint in ``RUN_DIR/ray/select-<hash>``; a changed config starts afresh.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from cae_ray import storage
from cae_ray.artifacts import (
    PREPARED,
    RAY_STORAGE,
    SELECTION,
    SELECTION_INPUTS,
    TRAIN_SPLIT,
    RunDir,
    config_hash,
    digest,
    selection_digest,
)
from cae_ray.config import Config
from cae_ray.runtime.batches import FEATURES, TARGET, unpack
from cae_ray.runtime.cluster import cached, connect, worker_threads
from cae_ray.runtime.data import read_ordered
from cae_ray.runtime.progress import OnProgress
from cae_ray.runtime.train import TrainOutcome, TrainSpec, train_selector
from cae_ray.selector.concrete import converged, feature_scores
from cae_ray.selector.memory import check_memory_for_ray
from cae_ray.selector.polish import polishes
from cae_ray.selector.refine import final_selection, screened_selection, screens_only
from cae_ray.selector.targets import ResolvedTask, TargetInfo
from cae_ray.version import __version__

logger = logging.getLogger(__name__)

IMPORTANCE_SAMPLE = 20_000
"""Training rows held in memory to rank a supervised search's rows (and to refine it)."""


def select(config: Config, run: RunDir, on_epoch: OnProgress | None = None) -> dict[str, Any]:
    """Train the selector and write ``selection.json``, unless the one there is up to date.
    ``on_epoch(record)`` is called on the driver as epochs finish (for progress bars)."""
    prepared = run.read_json(PREPARED)
    assert prepared is not None, "prepare runs before select"
    made_from = {
        "config_hash": config_hash(config, *SELECTION_INPUTS),
        "data_fingerprint": prepared["fingerprint"],
    }
    done = run.reusable(SELECTION, made_from)
    if done is not None:
        logger.info("select: %s is up to date", run.path(SELECTION))
        return done

    started = time.perf_counter()
    target = TargetInfo.from_dict(prepared["target"])
    features = prepared["features"]
    spec = TrainSpec(
        n_features=len(features),
        task=target.task,
        n_outputs=target.n_outputs,
        n_train_rows=prepared["rows"]["train"],
        threads=worker_threads(config),
    )
    outcome, (indices, probs, collisions) = _choose(config, run, spec, made_from, on_epoch)
    scores = dict(zip(features, feature_scores(probs).tolist(), strict=True))
    chosen = sorted(indices.tolist())
    candidates = prepared["candidate_features"]
    selection = {
        "selected_features": [features[i] for i in chosen],
        "selected_indices": [candidates.index(features[i]) for i in chosen],
        "scores": [scores.get(name, 0.0) for name in candidates],
        "candidate_features": candidates,
        "dropped_constant": prepared["dropped_constant"],
        "k": config.selector.k,
        "method": config.selector.method,
        "task": target.task,
        "chosen_by": "search" if outcome else "f_statistic",
        "collisions": collisions,
        "converged": converged(outcome.converged if outcome else True, collisions),
        "history": outcome.history if outcome else [],
        "resumed_from_epoch": outcome.resumed_from_epoch if outcome else 0,
        "num_workers": config.scaling.num_workers,
        **made_from,
        "seconds": time.perf_counter() - started,
        "cae_ray_version": __version__,
    }
    selection["selection_hash"] = selection_digest(selection)
    run.write_json(SELECTION, selection)
    return selection


def _choose(
    config: Config,
    run: RunDir,
    spec: TrainSpec,
    made_from: dict[str, str],
    on_epoch: OnProgress | None,
) -> tuple[TrainOutcome | None, tuple[torch.Tensor, torch.Tensor, int]]:
    """The search trained on Ray and the K chosen after it; or, where
    :func:`~cae_ray.selector.refine.screens_only` says so, no search (None) and the K by the
    screen."""
    sample_rows = min(spec.n_train_rows, IMPORTANCE_SAMPLE)
    search = not screens_only(config, spec.task, sample_rows, spec.n_features)
    if search:  # refuse an oversized model before Ray starts workers killed for memory
        check_memory_for_ray(config, spec.n_features, spec.task, spec.n_outputs)
    connect(config)
    train_split = run.path(TRAIN_SPLIT)
    train_data = cached(config, read_ordered(train_split), train_split)
    if not search:
        x, y = _sample(config, train_data, spec.task, spec.n_features)
        return None, screened_selection(spec.task, config.selector.k, x, y, spec.n_features)
    name = _training_name(run, made_from)
    outcome = train_selector(config, spec, train_data, run.path(RAY_STORAGE), name, on_epoch)
    x, y = _sample(config, train_data, spec.task, spec.n_features)
    return outcome, final_selection(outcome.model, config, spec.task, x, y)


def _training_name(run: RunDir, made_from: dict[str, str]) -> str:
    """Ray Train's name for this selection's training: bound to what decides it, so a changed
    config or dataset starts afresh instead of resuming a checkpoint of another model (whose
    shapes need not even fit). Trainings of earlier configs are removed, saying so."""
    name = f"select-{digest(made_from['config_hash'] + made_from['data_fingerprint'])}"
    trainings = run.path(RAY_STORAGE)
    for stale in storage.subdirectories(trainings):
        if stale.startswith("select") and stale != name:
            where = storage.join(trainings, stale)
            logger.warning("select: starting afresh; %s was trained for another config", where)
            storage.remove(where)
    return name


def _sample(
    config: Config, train_data: Any, task: ResolvedTask, n_features: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows for ranking the spare selector rows of a supervised search (or screening without
    one) and for the polish of a reconstruction (unused otherwise)."""
    polished = polishes(config.selector.polish, n_features, task)
    if task == "reconstruction" and not polished:
        return torch.empty(0), None
    batch = train_data.limit(IMPORTANCE_SAMPLE).take_batch(
        batch_size=IMPORTANCE_SAMPLE, batch_format="pyarrow"
    )
    x = torch.from_numpy(unpack(batch[FEATURES], n_features))
    if task == "reconstruction":
        return x, None
    return x, torch.tensor(batch[TARGET].to_numpy())
