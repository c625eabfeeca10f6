"""One cae-ray run, step by step, over one config and one run directory.

:func:`run` is the whole pipeline, read top to bottom::

    export -> prepare -> select -> validate -> prune -> retire -> report

Each step is also a function of its own, which the CLI's commands call; each takes the config
and the run dir, returns its typed record (:mod:`cae_ray.records`, or the Feast plans), and
reuses its finished output when that is up to date for the config
(:meth:`cae_ray.artifacts.RunDir.reusable`), so running again resumes at the first unfinished
step (and an interrupted ``select`` at its last checkpoint). The step bodies live below this
hub: :mod:`cae_ray.feast.export`, :mod:`cae_ray.steps.prepare`, :mod:`cae_ray.steps.select`,
:mod:`cae_ray.steps.validate`, :mod:`cae_ray.feast.registry`, :mod:`cae_ray.feast.retire` and
:mod:`cae_ray.report.page`. Only the CLI and the adapters in ``pipelines/`` import this module.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from cae_ray.artifacts import STEP_ARTIFACTS, RunDir, config_hash
from cae_ray.config import Config
from cae_ray.extras import require_train
from cae_ray.gate.errors import gate_failure
from cae_ray.records import (
    ExportManifest,
    Prepared,
    RunRecord,
    Selection,
    StepOutcome,
    Verdict,
)
from cae_ray.runtime import signals
from cae_ray.runtime.progress import OnProgress
from cae_ray.storage import DiskFullError
from cae_ray.version import __version__

if TYPE_CHECKING:
    from cae_ray.feast.forget import ForgetPlan
    from cae_ray.feast.registry import PrunePlan
    from cae_ray.feast.retire import RetirePlan
    from cae_ray.feast.status import Findings, RepoStatus

logger = logging.getLogger(__name__)

RunDirLike = str | os.PathLike[str] | RunDir


class StepResult(Protocol):
    """What a step returns: a typed record with its JSON and its figures for ``run.json``."""

    def as_json(self) -> dict[str, Any]: ...

    def summary(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StepEvent:
    """What ``run`` tells its caller: a step ``started``, finished (``done``: it worked,
    ``reused``: its output was up to date; ``result`` is its record), was ``skipped``
    (``reason``) or ``failed``; or made ``progress``: ``progress`` is then an epoch record of
    select's training, or ``{"rows": done, "total": total}`` of export's entity rows."""

    step: str
    status: Literal["started", "progress", "done", "reused", "skipped", "failed"]
    result: StepResult | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    """Why it was skipped, or the error it failed with."""
    seconds: float | None = None
    """How long it took (done, reused, failed)."""


OnEvent = Callable[[StepEvent], None]


def run(config: Config, run_dir: RunDirLike, on_event: OnEvent | None = None) -> RunRecord:
    """Every step in order; returns (and writes) ``run.json``. When the validation gate fails,
    prune is skipped, the report is still written, and :class:`ValidationGateFailedError` is
    raised."""
    require_train("a run")
    with hold_run_dir(run_dir) as where:
        steps = RunSteps(config, where, on_event)
        export_rows = steps.rows("export")
        steps.run("export", lambda: export(config, where, export_rows), _no_export(config))
        steps.run("prepare", lambda: prepare(config, where))
        steps.run("select", lambda: select(config, where, steps.epochs("select")))
        verdict = steps.run("validate", lambda: validate(config, where))
        assert verdict is None or isinstance(verdict, Verdict)
        apply = config.feast is not None and config.feast.prune == "apply"
        steps.run("prune", lambda: prune(config, where, apply=apply), _no_prune(config, verdict))
        steps.run("retire", lambda: retire_in_run(config, where), _no_retire(config, verdict))
        steps.run("report", lambda: report(config, where))
        return steps.finish(verdict)


def stopping_on_signals() -> AbstractContextManager[None]:
    """SIGTERM and SIGINT stop the block cleanly (:mod:`cae_ray.runtime.signals`): Ray shut
    down, ``run.json`` saying which step was interrupted, and
    :class:`~cae_ray.errors.RunInterruptedError` (exit 143 or 130). For the CLI and the Ray
    Job entry point, which own their process and its signals."""
    return signals.stopping_on_signals()


@contextmanager
def hold_run_dir(run_dir: RunDirLike, *, wait: bool = False) -> Iterator[RunDir]:
    """The run dir, checked and held for this thread (:meth:`RunDir.locked`) while the block
    runs: every step takes it, so two commands never write one run dir at once; another
    command's hold is refused with :class:`~cae_ray.errors.RunDirLockedError`, or with
    ``wait`` waited for. Re-entrant: ``run`` holds it through its steps."""
    where = _writable(run_dir)
    with where.locked(wait=wait):
        yield where


# --- the steps ----------------------------------------------------------------------------------


def export(
    config: Config, run_dir: RunDirLike, on_rows: Callable[[int, int], None] | None = None
) -> ExportManifest:
    """Training rows from a Feast feature store (:mod:`cae_ray.feast.export`)."""
    require_train("the export step")
    from cae_ray.feast.export import export as export_step

    with hold_run_dir(run_dir) as where:
        return export_step(config, where, on_rows)


def prepare(config: Config, run_dir: RunDirLike) -> Prepared:
    """The packed train and validation splits and their statistics
    (:mod:`cae_ray.steps.prepare`)."""
    require_train("the prepare step")
    from cae_ray.steps.prepare import prepare as prepare_step

    with hold_run_dir(run_dir) as where:
        return prepare_step(config, where)


def select(config: Config, run_dir: RunDirLike, on_epoch: OnProgress | None = None) -> Selection:
    """Prepare if needed, then train the selector with Ray Train (:mod:`cae_ray.steps.select`).
    ``on_epoch(record)`` is called on the driver as epochs finish (for progress bars)."""
    require_train("the select step")
    from cae_ray.steps.select import select as select_step

    with hold_run_dir(run_dir) as where:
        prepare(config, where)
        return select_step(config, where, on_epoch, previous=_applied_selection(config))


def _applied_selection(config: Config) -> list[str] | None:
    """The columns the model's latest applied prune kept: ``k: auto`` keeps its K while it still
    passes, and the run keeps the features themselves unless this run's are better beyond noise
    (:mod:`cae_ray.gate.incumbent`), so a weekly selection moves only when the data does."""
    if config.feast is None:
        return None
    from cae_ray.feast.overlay import applied_columns

    return applied_columns(Path(config.feast.repo), config.feast.kept_service)


def validate(config: Config, run_dir: RunDirLike) -> Verdict:
    """The validation gate on the selection in the run dir (:mod:`cae_ray.steps.validate`)."""
    require_train("the validate step")
    from cae_ray.steps.validate import validate as validate_step

    with hold_run_dir(run_dir) as where:
        return validate_step(config, where)


def prune(
    config: Config, run_dir: RunDirLike, *, apply: bool = False, force_reason: str | None = None
) -> PrunePlan:
    """Plan, and with ``apply`` write, the deprecation marks (:mod:`cae_ray.feast.registry`)."""
    from cae_ray.feast.registry import prune as prune_step

    with hold_run_dir(run_dir) as where:
        return prune_step(config, where, apply=apply, force_reason=force_reason)


def retire(
    config: Config, run_dir: RunDirLike, *, apply: bool = False, force: bool = False
) -> RetirePlan:
    """Plan, and with ``apply`` carry out, the retirement of features deprecated for longer
    than ``feast.grace_period`` (:mod:`cae_ray.feast.retire`)."""
    from cae_ray.feast.retire import retire as retire_step

    with hold_run_dir(run_dir) as where:
        return retire_step(config, where, apply=apply, force=force)


@dataclass(frozen=True)
class RetireNotPossible:
    """``retire`` in a run's plan mode on a repo that cannot retire yet (no prune applied, no
    overlay hook): a reason recorded, not a failure."""

    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"count": 0, "applied": False, "not_possible": self.reason}

    def summary(self) -> dict[str, Any]:
        return self.as_json()


def retire_in_run(config: Config, run_dir: RunDirLike) -> RetirePlan | RetireNotPossible:
    """``retire`` as a step of ``run`` (``feast.retire``)."""
    from cae_ray.feast.errors import NoPruneYetError, RetireNeedsHookError

    assert config.feast is not None
    apply = config.feast.retire == "apply"
    try:
        return retire(config, run_dir, apply=apply)
    except (NoPruneYetError, RetireNeedsHookError) as e:
        if apply:
            raise
        return RetireNotPossible(str(e))


def restore(repo: str, run_id: str) -> dict[str, Any]:
    """Undo the latest prune or retirement in the Feast repo ``repo``."""
    from cae_ray.feast.registry import restore as restore_step

    return restore_step(repo, run_id)


def check_marks(config: Config) -> Findings:
    """Where the Feast registry and the repo's overlay disagree on cae-ray's marks, and the
    FeatureServices older versions left."""
    from cae_ray.feast.status import check

    return check(config)


def feature_status(config: Config, model: str | None = None) -> RepoStatus:
    """The feature lifecycle in the Feast repo: the models sharing it, per view how many
    features are kept, deprecated, due to retire, and each feature's state, the models that
    keep it and the services that read it; with ``model``, only that model's candidates."""
    from cae_ray.feast.status import repo_status

    return repo_status(config, model)


def forget_model(config: Config, name: str, *, apply: bool = False) -> ForgetPlan:
    """Plan, and with ``apply`` carry out, forgetting model ``name`` (a kept service): its
    service leaves the registry and the marks are recomputed (:mod:`cae_ray.feast.forget`)."""
    from cae_ray.feast.forget import forget_model as forget

    return forget(config, name, apply=apply)


def remove_services(config: Config, names: list[str]) -> list[str]:
    """Remove FeatureServices older cae-ray versions made (one per run)."""
    from cae_ray.feast.status import remove_services as remove

    return remove(config, names)


@dataclass(frozen=True)
class ReportWritten:
    """Where the report step wrote the page."""

    path: str

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path}

    def summary(self) -> dict[str, Any]:
        return self.as_json()


def report(config: Config, run_dir: RunDirLike) -> ReportWritten:
    """The run's report: ``RUN_DIR/report/report.html`` and its PNGs
    (:mod:`cae_ray.report.page`)."""
    require_train("the report step")
    from cae_ray.report.page import write_report

    with hold_run_dir(run_dir) as where:
        return ReportWritten(str(write_report(where, config)))


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


def _no_prune(config: Config, verdict: Verdict | None) -> str | None:
    """Why ``run`` skips prune, if it does."""
    if config.feast is None:
        return "no feast section"
    if verdict is not None and not verdict.passed:
        return "the validation gate failed"
    return None


def _no_retire(config: Config, verdict: Verdict | None) -> str | None:
    """Why ``run`` skips retire, if it does."""
    if config.feast is None:
        return "no feast section"
    if config.feast.retire == "off":
        return "feast.retire is off"
    if verdict is not None and not verdict.passed:
        return "the validation gate failed"
    return None


# --- the record of a run ------------------------------------------------------------------------


class RunSteps:
    """Runs the steps and keeps ``run.json`` (:class:`cae_ray.records.RunRecord`), rewritten as
    each step ends, and tells ``on_event`` (the CLI's display) what happens."""

    def __init__(self, config: Config, run_dir: RunDir, on_event: OnEvent | None) -> None:
        self.run_dir, self.emit = run_dir, on_event or (lambda event: None)
        self.record = RunRecord(
            config_hash=config_hash(config),
            run_dir=str(run_dir),
            started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            cae_ray_version=__version__,
        )

    def epochs(self, step: str) -> OnProgress:
        """``on_epoch`` of a training step: each epoch record becomes a progress event."""
        return lambda record: self.emit(StepEvent(step, "progress", progress=record))

    def rows(self, step: str) -> Callable[[int, int], None]:
        """``on_rows`` of export: rows retrieved so far become progress events."""
        return lambda done, total: self.emit(
            StepEvent(step, "progress", progress={"rows": done, "total": total})
        )

    def run(
        self, name: str, work: Callable[[], StepResult], skip: str | None = None
    ) -> StepResult | None:
        """Do one step (or record why it was skipped); its outcome, recorded whatever happens."""
        if skip is not None:
            self._ended(name, StepOutcome(status="skipped", reason=skip))
            self.emit(StepEvent(name, "skipped", reason=skip))
            return None
        self.emit(StepEvent(name, "started"))
        artifact = STEP_ARTIFACTS[name]
        before = self.run_dir.modified(artifact)
        started = time.perf_counter()
        try:
            result = work()
        except (Exception, KeyboardInterrupt) as e:
            # KeyboardInterrupt: SIGTERM or SIGINT (runtime/signals.py), recorded as such.
            stopped = isinstance(e, KeyboardInterrupt)
            error = signals.interrupted_by() if stopped else f"{type(e).__name__}: {e}"
            seconds = time.perf_counter() - started
            status: Literal["failed", "interrupted"] = "interrupted" if stopped else "failed"
            self.record = self.record.with_status(status)
            try:
                self._ended(name, StepOutcome(status=status, error=error, seconds=seconds))
            except DiskFullError as full:  # the step's own error is the one to report
                logger.warning("could not record the failure in run.json: %s", full)
            self.emit(StepEvent(name, "failed", reason=error, seconds=seconds))
            raise
        reused = before is not None and self.run_dir.modified(artifact) == before
        finished: Literal["done", "reused"] = "reused" if reused else "done"
        seconds = time.perf_counter() - started
        self._ended(name, StepOutcome(status=finished, seconds=seconds, **result.summary()))
        self.emit(StepEvent(name, finished, result=result, seconds=seconds))
        return result

    def finish(self, verdict: Verdict | None) -> RunRecord:
        passed = verdict is None or verdict.passed
        self.record = self.record.with_status("succeeded" if passed else "gate_failed")
        self.record.write(self.run_dir)
        if verdict is not None and not passed:
            raise gate_failure(str(self.run_dir), verdict)
        return self.record

    def _ended(self, name: str, outcome: StepOutcome) -> None:
        self.record = self.record.with_step(name, outcome)
        if outcome.status != "skipped":
            self.record.write(self.run_dir)
