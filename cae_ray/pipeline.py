"""One cae-ray run, step by step, over one config and one run directory.

:func:`run` is the whole pipeline, read top to bottom::

    export -> prepare -> select -> validate -> prune -> retire -> report

Each step is also a function of its own, which the CLI's commands call; each takes the config
and the run dir, and reuses its finished output when that is up to date for the config
(:meth:`cae_ray.artifacts.RunDir.reusable`), so running again resumes at the first unfinished
step (and an interrupted ``select`` at its last checkpoint). The step bodies live below this
hub: :mod:`cae_ray.feast.export`, :mod:`cae_ray.runtime.prepare`, :mod:`cae_ray.runtime.select`,
:mod:`cae_ray.gate.validate`, :mod:`cae_ray.feast.registry`, :mod:`cae_ray.feast.retire` and
:mod:`cae_ray.report.page`. Only the
CLI and the adapters in ``pipelines/`` import this module.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from cae_ray.artifacts import RUN_RECORD, STEP_ARTIFACTS, RunDir, config_hash
from cae_ray.config import Config
from cae_ray.errors import ValidationGateFailedError, WeakBaselineError
from cae_ray.runtime.progress import OnProgress, StepEvent, step_summary
from cae_ray.version import __version__

if TYPE_CHECKING:
    from cae_ray.feast.status import Findings

RunDirLike = str | os.PathLike[str] | RunDir
OnEvent = Callable[[StepEvent], None]


def run(config: Config, run_dir: RunDirLike, on_event: OnEvent | None = None) -> dict[str, Any]:
    """Every step in order; returns (and writes) ``run.json``. When the validation gate fails,
    prune is skipped, the report is still written, and :class:`ValidationGateFailedError` is
    raised."""
    where = _writable(run_dir)
    steps = RunRecord(config, where, on_event)
    steps.run("export", lambda: export(config, where, steps.rows("export")), _no_export(config))
    steps.run("prepare", lambda: prepare(config, where))
    steps.run("select", lambda: select(config, where, steps.epochs("select")))
    gate = steps.run("validate", lambda: validate(config, where))
    apply = config.feast is not None and config.feast.prune == "apply"
    steps.run("prune", lambda: prune(config, where, apply=apply), _no_prune(config, gate))
    steps.run("retire", lambda: retire_in_run(config, where), _no_retire(config, gate))
    steps.run("report", lambda: report(config, where))
    return steps.finish(gate)


# --- the steps ----------------------------------------------------------------------------------


def export(
    config: Config, run_dir: RunDirLike, on_rows: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Training rows from a Feast feature store (:mod:`cae_ray.feast.export`)."""
    from cae_ray.feast.export import export as export_step

    return export_step(config, _writable(run_dir), on_rows)


def prepare(config: Config, run_dir: RunDirLike) -> dict[str, Any]:
    """The packed train and validation splits and their statistics
    (:mod:`cae_ray.runtime.prepare`)."""
    from cae_ray.runtime.prepare import prepare as prepare_step

    return prepare_step(config, _writable(run_dir))


def select(
    config: Config, run_dir: RunDirLike, on_epoch: OnProgress | None = None
) -> dict[str, Any]:
    """Prepare if needed, then train the selector with Ray Train (:mod:`cae_ray.runtime.select`).
    ``on_epoch(record)`` is called on the driver as epochs finish (for progress bars)."""
    from cae_ray.runtime.select import select as select_step

    prepare(config, run_dir)
    return select_step(config, _writable(run_dir), on_epoch)


def validate(config: Config, run_dir: RunDirLike) -> dict[str, Any]:
    """The validation gate on the selection in the run dir (:mod:`cae_ray.gate.validate`)."""
    from cae_ray.gate.validate import validate as validate_step

    return validate_step(config, _writable(run_dir))


def prune(
    config: Config, run_dir: RunDirLike, *, apply: bool = False, force_reason: str | None = None
) -> dict[str, Any]:
    """Plan, and with ``apply`` write, the deprecation marks (:mod:`cae_ray.feast.registry`)."""
    from cae_ray.feast.registry import prune as prune_step

    plan = prune_step(config, _writable(run_dir), apply=apply, force_reason=force_reason)
    return asdict(plan)


def retire(
    config: Config, run_dir: RunDirLike, *, apply: bool = False, force: bool = False
) -> dict[str, Any]:
    """Plan, and with ``apply`` carry out, the retirement of features deprecated for longer
    than ``feast.grace_period`` (:mod:`cae_ray.feast.retire`)."""
    from cae_ray.feast.retire import retire as retire_step

    return retire_step(config, _writable(run_dir), apply=apply, force=force).record()


def retire_in_run(config: Config, run_dir: RunDirLike) -> dict[str, Any]:
    """``retire`` as a step of ``run`` (``feast.retire``). In ``plan`` mode a repo that cannot
    retire yet (no prune applied, no overlay hook) is a reason recorded, not a failure."""
    from cae_ray.feast.errors import NoPruneYetError, RetireNeedsHookError

    assert config.feast is not None
    apply = config.feast.retire == "apply"
    try:
        return retire(config, run_dir, apply=apply)
    except (NoPruneYetError, RetireNeedsHookError) as e:
        if apply:
            raise
        return {"count": 0, "applied": False, "not_possible": str(e)}


def restore(repo: str, run_id: str) -> dict[str, Any]:
    """Undo the latest prune or retirement in the Feast repo ``repo``."""
    from cae_ray.feast.registry import restore as restore_step

    return restore_step(repo, run_id)


def check_marks(config: Config) -> Findings:
    """Where the Feast registry and the repo's overlay disagree on cae-ray's marks, and the
    FeatureServices older versions left."""
    from cae_ray.feast.status import check

    return check(config)


def feature_status(config: Config, model: str | None = None) -> dict[str, Any]:
    """The feature lifecycle in the Feast repo: the models sharing it (``models``), per view
    how many features are kept, deprecated, due to retire (``views``), and each feature's
    state, the models that keep it and the services that read it (``features``); with
    ``model``, only that model's candidates."""
    from cae_ray.feast.status import feature_status as status
    from cae_ray.feast.status import models_summary, view_summaries

    states = status(config, model)
    return {
        "models": models_summary(config),
        "views": [asdict(summary) for summary in view_summaries(states)],
        "features": [{**asdict(state), "due": state.due} for state in states],
    }


def forget_model(config: Config, name: str, *, apply: bool = False) -> dict[str, Any]:
    """Plan, and with ``apply`` carry out, forgetting model ``name`` (a kept service): its
    service leaves the registry and the marks are recomputed (:mod:`cae_ray.feast.forget`)."""
    from cae_ray.feast.forget import forget_model as forget

    return asdict(forget(config, name, apply=apply))


def remove_services(config: Config, names: list[str]) -> list[str]:
    """Remove FeatureServices older cae-ray versions made (one per run)."""
    from cae_ray.feast.status import remove_services as remove

    return remove(config, names)


def report(config: Config, run_dir: RunDirLike) -> dict[str, Any]:
    """The run's report: ``RUN_DIR/report/report.html`` and its PNGs
    (:mod:`cae_ray.report.page`)."""
    from cae_ray.report.page import write_report

    return {"path": str(write_report(_writable(run_dir), config))}


def _writable(run_dir: RunDirLike) -> RunDir:
    """The run dir, checked once: a RunDir is one :func:`run` checked already (on an object
    store each check is a write and a delete, so not once per step)."""
    if isinstance(run_dir, RunDir):
        return run_dir
    return RunDir(run_dir).ensure_writable()


def _no_export(config: Config) -> str | None:
    """Why ``run`` skips export, if it does."""
    if config.feast is None or not config.feast.has_entity_rows:
        return "no feast.entities or feast.start to export"
    if config.data is not None and config.data.path is not None:
        return "data.path is set: selecting from it"
    return None


def _no_retire(config: Config, gate: dict[str, Any] | None) -> str | None:
    """Why ``run`` skips retire, if it does."""
    if config.feast is None:
        return "no feast section"
    if config.feast.retire == "off":
        return "feast.retire is off"
    if gate is not None and not gate["passed"]:
        return "the validation gate failed"
    return None


def _no_prune(config: Config, gate: dict[str, Any] | None) -> str | None:
    """Why ``run`` skips prune, if it does."""
    if config.feast is None:
        return "no feast section"
    if gate is not None and not gate["passed"]:
        return "the validation gate failed"
    return None


# --- the record of a run ------------------------------------------------------------------------


class RunRecord:
    """``run.json``: each step's status, seconds and figures, rewritten as each step ends, and
    the :class:`StepEvent` s that tell ``on_event`` (the CLI's display) what happens."""

    def __init__(self, config: Config, run_dir: RunDir, on_event: OnEvent | None) -> None:
        self.run_dir, self.emit = run_dir, on_event or (lambda event: None)
        self.record: dict[str, Any] = {
            "config_hash": config_hash(config),
            "run_dir": str(run_dir),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "status": "running",
            "steps": {},
            "cae_ray_version": __version__,
        }

    def epochs(self, step: str) -> OnProgress:
        """``on_epoch`` of a training step: each epoch record becomes a progress event."""
        return lambda record: self.emit(StepEvent(step, "progress", record))

    def rows(self, step: str) -> Callable[[int, int], None]:
        """``on_rows`` of export: rows retrieved so far become progress events."""
        return lambda done, total: self.emit(
            StepEvent(step, "progress", {"rows": done, "total": total})
        )

    def run(
        self, name: str, work: Callable[[], dict[str, Any]], skip: str | None = None
    ) -> dict[str, Any] | None:
        """Do one step (or record why it was skipped); its outcome, recorded whatever happens."""
        if skip is not None:
            self._ended(name, {"status": "skipped", "reason": skip})
            return None
        self.emit(StepEvent(name, "started", {}))
        artifact = STEP_ARTIFACTS[name]
        before = self.run_dir.modified(artifact)
        started = time.perf_counter()
        try:
            outcome = work()
        except Exception as e:
            self.record["status"] = "failed"
            error = f"{type(e).__name__}: {e}"
            seconds = time.perf_counter() - started
            self._ended(name, {"status": "failed", "error": error, "seconds": seconds})
            raise
        reused = before is not None and self.run_dir.modified(artifact) == before
        status = "reused" if reused else "done"
        seconds = time.perf_counter() - started
        self._ended(name, {"status": status, "seconds": seconds, **step_summary(name, outcome)})
        return outcome

    def finish(self, gate: dict[str, Any] | None) -> dict[str, Any]:
        passed = gate is None or bool(gate["passed"])
        self.record["status"] = "succeeded" if passed else "gate_failed"
        self.run_dir.write_json(RUN_RECORD, self.record)
        if gate is not None and not passed:
            check = gate.get("baseline_check") or {}
            if check.get("weak") and check.get("required"):
                raise WeakBaselineError(str(self.run_dir), gate["reason"])
            raise ValidationGateFailedError(str(self.run_dir), gate["reason"])
        return self.record

    def _ended(self, name: str, step: dict[str, Any]) -> None:
        self.record["steps"][name] = step
        if step["status"] != "skipped":
            self.run_dir.write_json(RUN_RECORD, self.record)
        self.emit(StepEvent(name, step["status"], step))
