"""The select step: train the selector with Ray Train on the prepared train split, choose the
final K features, and write ``selection.json``.

    select(config, run) -> RUN_DIR/selection.json

A selection records what decided it (the config hash of :func:`~cae_ray.artifacts.selection_inputs`
and the data fingerprint) and a digest of itself; validation and pruning refuse one that no longer
matches (:func:`cae_ray.records.checked_selection`). An interrupted training resumes from its last
checkpoint in ``RUN_DIR/ray/select-<hash>``; a changed config starts afresh.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from cae_ray import storage
from cae_ray.artifacts import (
    RAY_STORAGE,
    SELECTION,
    TRAIN_SPLIT,
    RunDir,
    config_hash,
    digest,
    selection_inputs,
)
from cae_ray.config import Config
from cae_ray.gate.auto_k import choose_auto_k
from cae_ray.gate.incumbent import challenge
from cae_ray.records import IncumbentCheck, LeakingFeature, Prepared, Selection
from cae_ray.runtime.batches import FEATURES, TARGET, unpack
from cae_ray.runtime.cluster import cached, connect, worker_threads
from cae_ray.runtime.data import read_ordered
from cae_ray.runtime.progress import OnProgress
from cae_ray.runtime.train import TrainOutcome, TrainSpec, train_selector
from cae_ray.selector.choose import SAMPLE_ROWS, choose_k, searches
from cae_ray.selector.concrete import converged, feature_scores
from cae_ray.selector.leakage import leaking_features
from cae_ray.selector.memory import check_memory_for_ray
from cae_ray.selector.polish import polishes
from cae_ray.selector.targets import ResolvedTask, TargetInfo
from cae_ray.version import __version__

logger = logging.getLogger(__name__)


def select(
    config: Config,
    run: RunDir,
    on_epoch: OnProgress | None = None,
    previous: list[str] | None = None,
) -> Selection:
    """Train the selector and write ``selection.json``, unless the one there is up to date.
    ``on_epoch(record)`` is called on the driver as epochs finish (for progress bars);
    ``previous`` is the selection of the model's latest applied prune: ``k: auto`` keeps its K
    while it still passes (:mod:`cae_ray.gate.auto_k`), and the run keeps it unless its own is
    better beyond noise (:mod:`cae_ray.gate.incumbent`)."""
    prepared = Prepared.read(run)
    assert prepared is not None, "prepare runs before select"
    made_from = {
        "config_hash": config_hash(config, *selection_inputs(config)),
        "data_fingerprint": prepared.fingerprint,
    }
    done = Selection.reusable(run, made_from)
    if done is not None:
        logger.info("select: %s is up to date", run.path(SELECTION))
        return done

    started = time.perf_counter()
    target = TargetInfo.from_dict(prepared.target)
    features = prepared.features
    spec = TrainSpec(
        n_features=len(features),
        task=target.task,
        n_outputs=target.n_outputs,
        n_train_rows=prepared.rows.train,
        threads=worker_threads(config),
    )
    search = _search_config(config, spec.n_features)
    compare = bool(previous) and config.selector.keep_incumbent
    outcome, x, y = _search(search, run, spec, made_from, on_epoch, compare)
    model = outcome.model if outcome is not None else None
    curve = None
    if config.selector.auto:
        previous_k = len(previous) if previous else None
        choice, curve = choose_auto_k(model, config, spec.task, x, y, target, previous_k)
    else:
        choice = choose_k(model, config, spec.task, x, y)
    scores = dict(zip(features, feature_scores(choice.probabilities).tolist(), strict=True))
    chosen, incumbent = sorted(choice.indices.tolist()), None
    if compare:
        assert previous is not None
        chosen, incumbent = _against(previous, chosen, features, config, spec.task, x, y, target)
    candidates = prepared.candidate_features
    selection = Selection(
        selected_features=[features[i] for i in chosen],
        selected_indices=[candidates.index(features[i]) for i in chosen],
        scores=[scores.get(name, 0.0) for name in candidates],
        candidate_features=candidates,
        dropped_constant=prepared.dropped_constant,
        k=len(chosen),
        k_curve=curve,
        incumbent=incumbent,
        method=config.selector.method,
        task=target.task,
        chosen_by="search" if outcome else "f_statistic",
        collisions=choice.collisions,
        converged=converged(outcome.converged if outcome else True, choice.collisions),
        history=outcome.history if outcome else [],
        resumed_from_epoch=outcome.resumed_from_epoch if outcome else 0,
        leaking_features=_leaks(features, x, y, spec.task),
        num_workers=config.scaling.num_workers,
        **made_from,
        seconds=time.perf_counter() - started,
        cae_ray_version=__version__,
    ).sealed()
    selection.write(run)
    return selection


def _against(
    previous: list[str],
    chosen: list[int],
    features: list[str],
    config: Config,
    task: ResolvedTask,
    x: torch.Tensor,
    y: torch.Tensor | None,
    target: TargetInfo,
) -> tuple[list[int], IncumbentCheck]:
    """The previous applied selection or this run's (``chosen``), whichever
    :func:`~cae_ray.gate.incumbent.challenge` keeps, said on the console."""
    check = challenge(previous, chosen, features, config, task, x, y, target)
    logger.info("select: %s", check.sentence)
    if check.kept:
        return sorted(features.index(name) for name in previous), check
    return chosen, check


def _search_config(config: Config, n_features: int) -> Config:
    """The config the search trains with (:meth:`SelectorConfig.for_search`)."""
    return config.model_copy(update={"selector": config.selector.for_search(n_features)})


def _search(
    config: Config,
    run: RunDir,
    spec: TrainSpec,
    made_from: dict[str, str],
    on_epoch: OnProgress | None,
    compare: bool,
) -> tuple[TrainOutcome | None, torch.Tensor, torch.Tensor | None]:
    """The search trained on Ray (None where :func:`~cae_ray.selector.choose.searches` says no
    search), and the in-memory sample of the training rows the final choice is made on (and
    the previous selection compared on, when ``compare``)."""
    search = searches(config, spec.task, spec.n_train_rows, spec.n_features)
    if search:  # refuse an oversized model before Ray starts workers killed for memory
        check_memory_for_ray(config, spec.n_features, spec.task, spec.n_outputs)
    connect(config)
    train_split = run.path(TRAIN_SPLIT)
    train_data = cached(config, read_ordered(train_split), train_split)
    outcome = None
    if search:
        name = _training_name(run, made_from)
        outcome = train_selector(config, spec, train_data, run.path(RAY_STORAGE), name, on_epoch)
    x, y = _sample(config, train_data, spec.task, spec.n_features, compare)
    return outcome, x, y


def _leaks(
    features: list[str], x: torch.Tensor, y: torch.Tensor | None, task: ResolvedTask
) -> list[LeakingFeature]:
    """The candidates that alone predict the target on the sample's held-out half, said on
    the console too: the gate fails while one is a candidate."""
    if y is None:
        return []
    found = leaking_features(x.numpy(), y.numpy(), task)
    leaks = [LeakingFeature(name=features[f.index], score=f.score, test=f.test) for f in found]
    for leak in leaks:
        logger.warning(
            "select: %s alone predicts the target (%s %.4f): a copy of the label or computed "
            "from it? The gate fails while it is a candidate.",
            leak.name,
            leak.test,
            leak.score,
        )
    return leaks


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
    config: Config, train_data: Any, task: ResolvedTask, n_features: int, compare: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows for ranking the spare selector rows of a supervised search (or screening without
    one), for the polish of a reconstruction, for ``k: auto``'s curve and for comparing the
    previous selection (unused otherwise)."""
    needed = task != "reconstruction" or config.selector.auto or compare
    if not (needed or polishes(config.selector.polish, n_features, task)):
        return torch.empty(0), None
    batch = train_data.limit(SAMPLE_ROWS).take_batch(batch_size=SAMPLE_ROWS, batch_format="pyarrow")
    x = torch.from_numpy(unpack(batch[FEATURES], n_features))
    if task == "reconstruction":
        return x, None
    return x, torch.tensor(batch[TARGET].to_numpy())
