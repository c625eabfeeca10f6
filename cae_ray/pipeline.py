"""The steps of a run, as plain functions over one config and one run directory.

    export(config, run_dir)   -> run_dir/export/ (Feast -> Parquet, see cae_ray.feast.export)
    prepare(config, run_dir)  -> run_dir/data/{train,validation}/ + prepared.json
    select(config, run_dir)   -> run_dir/selection.json
    validate(config, run_dir) -> run_dir/validation.json (see cae_ray.validation)
    prune(config, run_dir)    -> run_dir/prune.json, and marks in the Feast registry
                                 (see cae_ray.feast.registry; restore undoes one prune)
    report(config, run_dir)   -> run_dir/report/report.html (see cae_ray.report)
    run(config, run_dir)      -> all of them in order, resuming (see cae_ray.run)

Each step is idempotent: finished work is detected (by config hash and data fingerprint) and
reused; an interrupted ``select`` resumes from its last checkpoint in ``run_dir/ray``. The CLI
and every entry point call these functions and hold no logic of their own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cae_ray import __version__
from cae_ray.batches import FEATURES, TARGET, unpack
from cae_ray.config import AllNumericExcept, Config, DataConfig
from cae_ray.data import (
    TargetInfo,
    check_nulls,
    compute_stats,
    inspect_dataset,
    read_ordered,
    resolve_target,
    write_packed,
)
from cae_ray.errors import (
    MissingDataConfigError,
    NoExportError,
    TooFewFeaturesError,
)
from cae_ray.memory import check_memory_for_ray
from cae_ray.refine import final_selection
from cae_ray.selectors import feature_scores
from cae_ray.training import TrainSpec, connect, run_trainer, worker_threads

logger = logging.getLogger(__name__)

PREPARED, SELECTION = "data/prepared.json", "selection.json"
_IMPORTANCE_SAMPLE = 20_000


def config_hash(config: Config, *sections: str) -> str:
    """A short hash of the named config sections (all of them when none is named)."""
    dumped = config.model_dump(mode="json")
    chosen = {s: dumped[s] for s in sections} if sections else dumped
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


_DECIDED = (
    "selected_features",
    "selected_indices",
    "candidate_features",
    "k",
    "method",
    "task",
    "config_hash",
    "data_fingerprint",
)


def selection_digest(selection: dict[str, Any]) -> str:
    """A hash of what a selection decides, kept in ``selection.json`` itself, so a later step
    (validation, pruning) can tell that the file was edited since it was made."""
    decided = {key: selection.get(key) for key in _DECIDED}
    return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()[:16]


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(payload, indent=2, default=_jsonable))
    os.replace(partial, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


# --- prepare ------------------------------------------------------------------------------------


def prepare(config: Config, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Check the dataset, compute per-feature statistics, and write the packed splits."""

    run = Path(run_dir).resolve()  # Ray workers have their own working directory
    data = source_data(config, run)
    info = inspect_dataset(data)
    wanted = {"config": config_hash(config, "data", "head"), "fingerprint": info.fingerprint}
    done = read_json(run / PREPARED)
    if done is not None and all(done.get(k) == v for k, v in wanted.items()):
        logger.info("prepare: reusing %s", run / "data")
        return done

    connect(config)
    source = read_ordered(str(data.path))
    columns = [*info.features, *(c for c in (data.target, data.row_key) if c)]
    # Ray's Parquet reader matches every leaf column against every selected name (quadratic:
    # two minutes a pass at 10,000 columns), so the read is narrowed only where that saves
    # real work; otherwise the UDFs just take their columns by name.
    if len(columns) <= info.n_columns // 2:
        source = source.select_columns(columns)
    logger.info("prepare: statistics of %d features over %d rows", len(info.features), info.n_rows)
    stats = compute_stats(source, info.features)
    check_nulls(stats, data.null_policy)
    constant = stats.constant()
    keep = [n for n in info.features if n not in set(constant)]
    if config.selector.k >= len(keep):
        raise TooFewFeaturesError(config.selector.k, len(keep), constant)
    target = resolve_target(source, data.target, config.head.task, info.target_type)
    counts = write_packed(source, data, stats, keep, target, run / "data")
    prepared = {
        **wanted,
        "path": data.path,
        "candidate_features": info.features,
        "features": keep,
        "dropped_constant": constant,
        "target": {"column": data.target, **target.__dict__},
        "rows": counts,
        "stats": stats.as_dict(),
    }
    write_json(run / PREPARED, prepared)
    return prepared


def source_data(config: Config, run: Path) -> DataConfig:
    """The dataset to select from: ``data.path``, or else the Feast export in the run dir, whose
    exported feature columns are the candidates (unless ``data.features`` names others)."""
    data = config.data
    if data is not None and data.path is not None:
        if "://" in data.path:
            return data
        # Relative to the driver's working directory, which Ray workers do not share.
        return data.model_copy(update={"path": str(Path(data.path).resolve())})
    if config.feast is None or not config.feast.has_entity_rows:
        raise MissingDataConfigError("the config")
    from cae_ray.feast.export import EXPORT_DIR, MANIFEST

    manifest = read_json(run / EXPORT_DIR / MANIFEST)
    if manifest is None:
        raise NoExportError(str(run))
    data = data or DataConfig()
    update: dict[str, Any] = {"path": str(run / EXPORT_DIR)}
    update["row_key"] = data.row_key or manifest["row_key"]
    if data.features == AllNumericExcept():
        update["features"] = list(manifest["columns"])
    return data.model_copy(update=update)


# --- select -------------------------------------------------------------------------------------


def select(
    config: Config,
    run_dir: str | os.PathLike[str],
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train the selector with Ray Train and write ``selection.json``; resumes if interrupted.
    ``on_epoch(record)`` is called on the driver as epochs finish (for progress bars)."""

    run = Path(run_dir).resolve()  # Ray workers have their own working directory
    prepared = prepare(config, run)
    selection_hash = config_hash(config, "data", "selector", "training", "head")
    done = read_json(run / SELECTION)
    if (
        done is not None
        and done.get("config_hash") == selection_hash
        and done.get("data_fingerprint") == prepared["fingerprint"]
    ):
        logger.info("select: %s is up to date", run / SELECTION)
        return done

    started = time.perf_counter()
    target = TargetInfo(**{k: v for k, v in prepared["target"].items() if k != "column"})
    features = prepared["features"]
    spec = TrainSpec(
        n_features=len(features),
        task=target.task,
        n_outputs=target.n_outputs,
        n_train_rows=prepared["rows"]["train"],
        threads=worker_threads(config),
    )
    # Refuse an oversized model before Ray starts workers that would be killed for memory.
    check_memory_for_ray(config, spec.n_features, spec.task, spec.n_outputs)
    connect(config)
    train_data = cached(config, read_ordered(str(run / "data" / "train")), run / "data" / "train")
    outcome = run_trainer(
        config, spec, train_data, storage=(run / "ray").resolve(), on_progress=on_epoch
    )

    x, y = _sample(train_data, target, len(features))
    indices, probs, collisions = final_selection(outcome.model, config, target.task, x, y)
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
        "collisions": collisions,
        "converged": outcome.converged,
        "history": outcome.history,
        "resumed_from_epoch": outcome.resumed_from_epoch,
        "num_workers": config.scaling.num_workers,
        "config_hash": selection_hash,
        "data_fingerprint": prepared["fingerprint"],
        "seconds": time.perf_counter() - started,
        "cae_ray_version": __version__,
    }
    selection["selection_hash"] = selection_digest(selection)
    write_json(run / SELECTION, selection)
    return selection


def cached(config: Config, dataset: Any, path: Path) -> Any:
    """The dataset, materialized in the object store when ``scaling.cache_train_split`` says so:
    Ray Data then skips the Parquet read (and its start-up) on every later epoch."""
    import ray

    policy = config.scaling.cache_train_split
    size = sum(f.stat().st_size for f in path.glob("*.parquet"))
    room = float(ray.cluster_resources().get("object_store_memory", 0.0)) / 2
    if policy == "always" or (policy == "auto" and size <= room):
        logger.info("select: caching the train split (%.0f MB) in the object store", size / 1e6)
        return dataset.materialize()
    return dataset


def _sample(
    train_data: Any, target: TargetInfo, n_features: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows for ranking the spare selector rows of a supervised search (unused otherwise)."""
    if target.task == "reconstruction":
        return torch.empty(0), None
    batch = train_data.limit(_IMPORTANCE_SAMPLE).take_batch(
        batch_size=_IMPORTANCE_SAMPLE, batch_format="pyarrow"
    )
    x = torch.from_numpy(unpack(batch[FEATURES], n_features))
    y = torch.tensor(batch[TARGET].to_numpy())
    return x, y


# --- the steps that live in their own modules ---------------------------------------------------


def validate(
    config: Config,
    run_dir: str | os.PathLike[str],
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The validation gate on the selection in ``run_dir`` (:mod:`cae_ray.validation`)."""
    from cae_ray.validation import validate as validate_step

    return validate_step(config, run_dir, on_epoch)


def export(
    config: Config,
    run_dir: str | os.PathLike[str],
    on_rows: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Training rows from a Feast feature store (:mod:`cae_ray.feast.export`)."""
    from cae_ray.feast.export import export as export_step

    return export_step(config, run_dir, on_rows)


def prune(
    config: Config,
    run_dir: str | os.PathLike[str],
    *,
    apply: bool = False,
    force_reason: str | None = None,
) -> dict[str, Any]:
    """Plan, and with ``apply`` write, the deprecation marks (:mod:`cae_ray.feast.registry`)."""
    from dataclasses import asdict

    from cae_ray.feast.registry import prune as prune_step

    return asdict(prune_step(config, run_dir, apply=apply, force_reason=force_reason))


def restore(repo: str, run_id: str) -> dict[str, Any]:
    """Undo one prune in the Feast registry of ``repo``."""
    from cae_ray.feast.registry import restore as restore_step

    return restore_step(repo, run_id)


def check_marks(config: Config) -> list[str]:
    """Where the Feast registry and the repo's overlay disagree on cae-ray's marks."""
    from cae_ray.errors import MissingFeastConfigError
    from cae_ray.feast.registry import check

    if config.feast is None:
        raise MissingFeastConfigError("the config", "`feast:` section")
    return check(config.feast.repo)


def report(config: Config, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's report: ``run_dir/report/report.html`` and its PNGs (:mod:`cae_ray.report`)."""
    from cae_ray.report import write_report

    return {"path": str(write_report(run_dir))}


def run(
    config: Config,
    run_dir: str | os.PathLike[str],
    on_event: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Every step above in order, resuming at the first unfinished one (:mod:`cae_ray.run`)."""
    from cae_ray.run import run as run_all

    return run_all(config, run_dir, on_event)
