"""The whole run: every step of :mod:`cae_ray.pipeline` in order over one config and one run
directory, recorded in ``run_dir/run.json``. The CLI (`cae-ray run`, `cae-ray demo`), the Ray Job
entry point and the orchestrator adapters call :func:`run` and nothing else.

    export -> prepare -> select -> validate -> prune -> report

A step whose output is up to date is reused, so running again with the same run dir resumes at
the first unfinished step (and an interrupted ``select`` at its last checkpoint).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cae_ray import __version__
from cae_ray.config import Config
from cae_ray.errors import ValidationGateFailedError
from cae_ray.pipeline import (
    PREPARED,
    SELECTION,
    config_hash,
    export,
    prepare,
    prune,
    read_json,
    report,
    select,
    validate,
    write_json,
)

# --- the whole run ------------------------------------------------------------------------------

RUN_FILE = "run.json"
STEPS = ("export", "prepare", "select", "validate", "prune", "report")
ARTIFACTS = {
    "export": "export/_manifest.json",
    "prepare": PREPARED,
    "select": SELECTION,
    "validate": "validation.json",
    "prune": "prune.json",
    "report": "report/report.html",
}


@dataclass(frozen=True)
class StepEvent:
    """What ``run`` tells its caller: a step ``started``, finished (``done``: it worked,
    ``reused``: its output was up to date), was ``skipped`` or ``failed``; or made
    ``progress``: ``detail`` is then an epoch record of select's or validate's training, or
    ``{"rows": done, "total": total}`` of export's entity rows."""

    step: str
    status: str
    detail: dict[str, Any]


def run(
    config: Config,
    run_dir: str | os.PathLike[str],
    on_event: Callable[[StepEvent], None] | None = None,
) -> dict[str, Any]:
    """Every step in order over one config and one run dir; returns (and writes) ``run.json``.

    Each step reuses its finished output, so running again with the same run dir resumes at
    the first unfinished step (and an interrupted ``select`` at its last checkpoint). When the
    validation gate fails, the prune step is skipped, the report is still written, and
    :class:`ValidationGateFailedError` is raised.
    """
    run_path = Path(run_dir).resolve()
    emit = on_event or (lambda event: None)
    record: dict[str, Any] = {
        "config_hash": config_hash(config),
        "run_dir": str(run_path.resolve()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "running",
        "steps": {},
        "cae_ray_version": __version__,
    }
    gate: dict[str, Any] | None = None
    for name in STEPS:
        skip = _skip_reason(name, config, gate)
        if skip is not None:
            record["steps"][name] = {"status": "skipped", "reason": skip}
            emit(StepEvent(name, "skipped", record["steps"][name]))
            continue
        emit(StepEvent(name, "started", {}))
        outcome = _run_step(name, config, run_path, record, emit)
        if name == "validate":
            gate = outcome
    passed = gate is None or bool(gate["passed"])
    record["status"] = "succeeded" if passed else "gate_failed"
    write_json(run_path / RUN_FILE, record)
    if not passed:
        assert gate is not None
        raise ValidationGateFailedError(str(run_path), gate["reason"])
    return record


def _skip_reason(name: str, config: Config, gate: dict[str, Any] | None) -> str | None:
    feast = config.feast
    if name == "export":
        if feast is None or not feast.has_entity_rows:
            return "no feast.entities or feast.start to export"
        if config.data is not None and config.data.path is not None:
            return "data.path is set: selecting from it"
    if name == "prune":
        if feast is None:
            return "no feast section"
        if gate is not None and not gate["passed"]:
            return "the validation gate failed"
    return None


def _run_step(
    name: str,
    config: Config,
    run_path: Path,
    record: dict[str, Any],
    emit: Callable[[StepEvent], None],
) -> dict[str, Any]:
    """One step, timed and recorded in ``run.json`` whatever happens."""
    artifact = run_path / ARTIFACTS[name]
    before = artifact.stat().st_mtime_ns if artifact.exists() else None
    started = time.perf_counter()
    try:
        outcome = _STEP_FUNCTIONS[name](
            config, run_path, lambda r: emit(StepEvent(name, "progress", r))
        )
    except Exception as e:
        record["steps"][name] = {
            "status": "failed",
            "error": f"{type(e).__name__}: {e}",
            "seconds": time.perf_counter() - started,
        }
        record["status"] = "failed"
        write_json(run_path / RUN_FILE, record)
        emit(StepEvent(name, "failed", record["steps"][name]))
        raise
    reused = before is not None and artifact.stat().st_mtime_ns == before
    record["steps"][name] = {
        "status": "reused" if reused else "done",
        "seconds": time.perf_counter() - started,
        **step_summary(name, outcome),
    }
    write_json(run_path / RUN_FILE, record)
    emit(StepEvent(name, record["steps"][name]["status"], record["steps"][name]))
    return outcome


def _prune_step(config: Config, run_path: Path) -> dict[str, Any]:
    """``prune`` as ``feast.prune`` says; a prune this selection already applied is kept
    (applying it again would record the marks as their own originals)."""
    assert config.feast is not None
    apply = config.feast.prune == "apply"
    done = read_json(run_path / "prune.json")
    selection = read_json(run_path / SELECTION) or {}
    if done and done.get("applied") and done.get("run_id") == selection.get("selection_hash"):
        return done
    return prune(config, run_path, apply=apply)


_STEP_FUNCTIONS: dict[str, Callable[[Config, Path, Callable[[dict[str, Any]], None]], Any]] = {
    "export": lambda config, run_path, on_progress: export(
        config, run_path, lambda done, total: on_progress({"rows": done, "total": total})
    ),
    "prepare": lambda config, run_path, on_epoch: prepare(config, run_path),
    "select": select,
    "validate": validate,
    "prune": lambda config, run_path, on_epoch: _prune_step(config, run_path),
    "report": lambda config, run_path, on_epoch: report(config, run_path),
}


_SUMMARY_KEYS = {
    "select": ("k", "selected_features", "converged", "resumed_from_epoch", "selection_hash"),
    "validate": ("passed", "metric", "difference", "interval", "reason"),
    "prune": ("run_id", "applied", "feature_service", "hook_missing"),
    "report": ("path",),
}


def step_summary(name: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """The few figures of a step's outcome that ``run.json`` and the CLI show."""
    figures = {key: outcome[key] for key in _SUMMARY_KEYS.get(name, ())}
    if name == "export":
        figures |= {"rows": outcome["rows"], "features": len(outcome["columns"])}
    elif name == "prepare":
        figures |= {"rows": outcome["rows"], "features": len(outcome["features"])}
    elif name == "select":
        figures["epochs"] = len(outcome["history"])
    elif name == "validate":
        figures["baseline"] = outcome["baseline"]["value"]
        figures["selected"] = outcome["selected"]["value"]
    elif name == "prune":
        figures["deprecated"] = sum(len(marked) for marked in outcome["deprecate"].values())
    return figures
