"""Typed records of a run's steps: what each step writes to the run directory, read back with
one JSON round trip (``Record.read(run)``, ``record.write(run)``), and the decisions read from
them.

    ExportManifest  export/_manifest.json   the Feast export (cae_ray.feast.export)
    Prepared        data/prepared.json      the packed splits (cae_ray.steps.prepare)
    Selection       selection.json          the K selected features (cae_ray.steps.select)
    Verdict         validation.json         the gate's verdict (cae_ray.steps.validate)
    RunRecord       run.json                the whole run, step by step (cae_ray.pipeline)

The prune's and the retirement's plans (``PrunePlan``, ``RetirePlan``) are Feast's, in
:mod:`cae_ray.feast`. Every record reads files written by earlier versions of the same format
(unknown keys are ignored). pydantic and the standard library only: Ray workers and Feast's
import of a repo's definitions may load this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import Self

from cae_ray.artifacts import (
    EXPORT_MANIFEST,
    PREPARED,
    RUN_RECORD,
    SELECTION,
    VALIDATION,
    RunDir,
    config_hash,
    selection_digest,
    selection_inputs,
)
from cae_ray.config import Config
from cae_ray.errors import NoSelectionError, SelectionConfigMismatchError, SelectionEditedError


class Record(BaseModel):
    """One artifact of the run dir, as a frozen typed record."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    artifact: ClassVar[str]
    """Its name in the run dir (:mod:`cae_ray.artifacts`)."""

    @classmethod
    def read(cls, run: RunDir) -> Self | None:
        """The record in ``run``, or None when the step has not written it."""
        found = run.read_json(cls.artifact)
        return None if found is None else cls.model_validate(found)

    @classmethod
    def reusable(cls, run: RunDir, made_from: Mapping[str, Any]) -> Self | None:
        """The record in ``run`` if it is up to date (:meth:`RunDir.reusable`); one of another
        format is not (the step makes it again)."""
        done = run.reusable(cls.artifact, made_from)
        if done is None:
            return None
        try:
            return cls.model_validate(done)
        except ValidationError:
            return None

    def write(self, run: RunDir) -> None:
        run.write_json(self.artifact, self.as_json())

    def as_json(self) -> dict[str, Any]:
        """The record as its JSON file holds it (and ``--json`` prints it)."""
        return self.model_dump(mode="json")

    def summary(self) -> dict[str, Any]:
        """The few figures ``run.json`` keeps of this step, for people reading it."""
        return {}


# --- export and prepare -----------------------------------------------------------------------


class ExportLabel(BaseModel):
    """The label fetched beside the features (``data.target`` naming ``view:field``)."""

    model_config = ConfigDict(frozen=True)
    ref: str
    """Its feature reference, ``view:field``."""
    column: str
    """The column that holds it in the export."""


class ExportManifest(Record):
    """The Feast export: written last, so a manifest means a whole export."""

    artifact = EXPORT_MANIFEST
    config_hash: str
    entities_fingerprint: str
    registry: str
    repo: str
    project: str
    offline_store: str
    columns: dict[str, str]
    """Each exported column -> its feature reference (``view:feature``)."""
    value_bytes: dict[str, int] = {}
    """Each exported column of a fixed-width type -> the bytes of one value (the report's
    estimate of what a pruned feature costs per entity row)."""
    label: ExportLabel | None = None
    """The label fetched beside the features (not a candidate), if the config names one."""
    entity_columns: list[str]
    row_key: str
    rows: int
    parts: int
    feast_version: str
    seconds: float
    files: dict[str, int]

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "features": len(self.columns)}


class SplitRows(BaseModel):
    model_config = ConfigDict(frozen=True)
    train: int
    validation: int


class Prepared(Record):
    """The packed train and validation splits and what they were made from."""

    artifact = PREPARED
    config: str
    """The hash of the config sections that decide the splits."""
    fingerprint: str
    """The source data's fingerprint."""
    path: str
    candidate_features: list[str]
    features: list[str]
    """The candidates less the constant ones: the splits' feature columns, in order."""
    dropped_constant: list[str]
    target: dict[str, Any]
    """The target column and its encoding (:class:`cae_ray.selector.targets.TargetInfo`)."""
    rows: SplitRows
    stats: dict[str, Any]
    files: dict[str, int]

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows.model_dump(), "features": len(self.features)}


# --- select ------------------------------------------------------------------------------------


class CurvePoint(BaseModel):
    """One K of the curve ``k: auto`` chooses from (:mod:`cae_ray.gate.auto_k`)."""

    model_config = ConfigDict(frozen=True)

    k: int
    score: float
    """The first K picks' score on the inner held-out rows."""
    difference: float
    """score - baseline; its interval below."""
    low: float
    high: float
    passed: bool
    """Within the tolerance of the baseline (at the interval's pessimistic end) and of the best
    rung (its score); without a target, within the tolerance of all ``k_max`` picks."""
    on_ladder: bool
    """A rung of the geometric ladder (else a step of the bisection or the knee's search)."""


class KCurve(BaseModel):
    """Quality against K on the inner held-out rows, and the K chosen from it (``k: auto``)."""

    model_config = ConfigDict(frozen=True)

    metric: str
    baseline: float
    baseline_source: str
    tolerance: float
    relative: bool
    confidence: float
    rows: int
    """Inner held-out rows the curve is scored on."""
    points: list[CurvePoint]
    chosen: int
    reason: str
    """The chosen K in one sentence."""
    passed: bool
    """Whether any K passed (else the chosen K is the smallest that ties all features, or
    ``k_max``, and the gate decides)."""
    kept_previous: bool = False


class IncumbentCheck(BaseModel):
    """The previous applied selection (the incumbent) against this run's own (the challenger),
    and which one the run keeps (:mod:`cae_ray.gate.incumbent`)."""

    model_config = ConfigDict(frozen=True)

    previous: list[str]
    """The features the model's latest applied prune kept."""
    challenger: list[str]
    """The features this run's search and final choice selected."""
    kept: bool
    """Whether the previous selection stays (else the challenger replaces it)."""
    reason: str
    metric: str | None = None
    """What compared them, when they were compared (the gate's metric, or explained variance)."""
    gain: float | None = None
    """The challenger's score minus the previous one's, positive when the challenger is better."""
    low: float | None = None
    high: float | None = None
    rows: int | None = None
    """Inner held-out training rows they were compared on."""

    @property
    def churn(self) -> float:
        """Share of the kept selection that the previous run did not keep (0 = unchanged)."""
        final = self.previous if self.kept else self.challenger
        return len(set(final) - set(self.previous)) / max(1, len(final))

    @property
    def sentence(self) -> str:
        """The churn and why, for the console and the report."""
        changed = f"{100 * self.churn:.0f}% of the selection changed since the previous run"
        return f"{changed}: {self.reason}"


class LeakingFeature(BaseModel):
    """A candidate that alone predicts the target (almost) perfectly on rows it was not fitted
    on: a copy of the label or computed from it (:mod:`cae_ray.selector.leakage`)."""

    name: str
    score: float
    test: str
    """What scored it, in words."""


class Selection(Record):
    """The K selected features, each candidate's score, and what decided them."""

    artifact = SELECTION
    selected_features: list[str]
    selected_indices: list[int]
    """Positions in ``candidate_features``."""
    scores: list[float]
    """One per candidate feature."""
    candidate_features: list[str]
    dropped_constant: list[str]
    k: int
    """How many features were selected (``selector.k``, or the K ``k: auto`` chose)."""
    k_curve: KCurve | None = None
    """``k: auto``: quality against K on inner held-out training rows, and the chosen K in one
    sentence (:class:`KCurve`, :mod:`cae_ray.gate.auto_k`)."""
    incumbent: IncumbentCheck | None = None
    """The model's previous applied selection against this run's, when there was one
    (``selector.keep_incumbent``)."""
    method: str
    task: str
    chosen_by: Literal["search", "f_statistic"] = "search"
    collisions: int
    converged: bool
    history: list[dict[str, Any]]
    """The search's epoch records (empty when no search was trained)."""
    resumed_from_epoch: int = 0
    leaking_features: list[LeakingFeature] = Field(default_factory=list)
    """Candidates that alone predict the target: the gate fails while one is a candidate."""
    num_workers: int
    config_hash: str
    data_fingerprint: str
    seconds: float
    cae_ray_version: str
    selection_hash: str = ""
    """:func:`cae_ray.artifacts.selection_digest` of what it decides, set when it is made: a
    file edited since no longer matches it."""

    def digest(self) -> str:
        """What this selection decides, hashed now."""
        return selection_digest(self.as_json())

    def sealed(self) -> Selection:
        """This selection with its ``selection_hash``."""
        return self.model_copy(update={"selection_hash": self.digest()})

    @property
    def edited(self) -> bool:
        return self.selection_hash != self.digest()

    @property
    def leaks(self) -> tuple[list[str], list[str]]:
        """The candidates that give the target away (:attr:`leaking_features`), and those of
        them selected."""
        names = [leak.name for leak in self.leaking_features]
        return names, [name for name in names if name in self.selected_features]

    @property
    def since_previous(self) -> str:
        """How the selection moved since the model's previous applied one, in one sentence
        (empty when there was none)."""
        return self.incumbent.sentence if self.incumbent is not None else ""

    @property
    def searched(self) -> bool:
        """Whether a search was trained (else the F statistic chose: few rows per feature)."""
        return self.chosen_by == "search"

    def summary(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "selected_features": self.selected_features,
            "converged": self.converged,
            "resumed_from_epoch": self.resumed_from_epoch,
            "selection_hash": self.selection_hash,
            "epochs": len(self.history),
            "churn": self.incumbent.churn if self.incumbent else None,
        }


def checked_selection(
    config: Config, run: RunDir, *, edited_ok: bool = False
) -> tuple[Selection, Prepared]:
    """The run's selection and prepared data, refused when missing, edited (unless
    ``edited_ok``: a forced prune), or made from another config or other data than ``config``
    describes: what validation and pruning act on."""
    selection, prepared = Selection.read(run), Prepared.read(run)
    if selection is None or prepared is None:
        raise NoSelectionError(str(run))
    where = run.path(SELECTION)
    if selection.edited and not edited_ok:
        raise SelectionEditedError(where, selection.selection_hash, selection.digest())
    current = config_hash(config, *selection_inputs(config))
    if selection.config_hash != current:
        recorded = f"hash {selection.config_hash}"
        raise SelectionConfigMismatchError(where, "config", recorded, f"hash {current}")
    if selection.data_fingerprint != prepared.fingerprint:
        raise SelectionConfigMismatchError(
            where,
            "dataset",
            f"fingerprint {selection.data_fingerprint}",
            f"fingerprint {prepared.fingerprint}",
        )
    return selection, prepared


# --- validate ----------------------------------------------------------------------------------


class Score(BaseModel):
    """A model's score on the validation rows and its bootstrap interval."""

    model_config = ConfigDict(frozen=True)
    value: float
    low: float
    high: float


class BaselineScore(Score):
    source: str
    """What the baseline is: the model on all features, principal components, or given."""


class DifferenceInterval(BaseModel):
    model_config = ConfigDict(frozen=True)
    low: float
    high: float
    confidence: float
    resamples: int


class BaselineCheck(BaseModel):
    """The baseline against a stock reference on all features."""

    model_config = ConfigDict(frozen=True)
    reference_model: str
    trails_by: float
    slack: float
    weak: bool
    """The baseline trails the reference by more than the slack."""
    required: bool
    """A weak baseline fails the gate (``validation.require_fair_baseline``)."""
    reason: str


class GateModelUsed(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    params: dict[str, Any]


class Verdict(Record):
    """The gate's verdict on a selection: does a model on it match the all-features baseline?
    Decided by :func:`cae_ray.gate.decide.decide`; this record only says what was decided."""

    artifact = VALIDATION
    passed: bool
    reason: str
    metric: str
    baseline: BaselineScore
    selected: Score
    reference: Score | None = None
    baseline_check: BaselineCheck | None = None
    values_per_repeat: dict[str, list[float]]
    difference: float
    """selected - baseline, on all validation rows."""
    interval: DifferenceInterval
    tolerance: float
    relative: bool
    allowed_loss: float
    worst_loss: float
    fits: dict[str, list[dict[str, Any]]] | None = None
    leaking_features: list[str] = Field(default_factory=list)
    """Candidates that alone predict the target: the gate fails on them."""
    perfect: bool = False
    """Both models scored the metric's best value: something may give the target away."""
    model: GateModelUsed
    task: str
    k: int
    n_features: int
    validation_rows: int
    repeats: int
    selection_hash: str
    validation_config_hash: str
    data_fingerprint: str
    seconds: float
    cae_ray_version: str

    @property
    def failed_for_weak_baseline(self) -> bool:
        """The gate failed because its baseline is weak and a fair one is required."""
        check = self.baseline_check
        return not self.passed and check is not None and check.weak and check.required

    @property
    def perfect_warning(self) -> str | None:
        """What to tell the user when both models score perfectly."""
        if not self.perfect:
            return None
        return (
            f"Both models score a perfect {self.metric}: a feature may give the target away "
            "(a copy of the label or computed from it), and a gate between two perfect models "
            "says nothing. Check the features that predict it alone."
        )

    @property
    def weak_baseline_warning(self) -> str | None:
        """What to tell the user when the baseline is weak but not required to be fair."""
        check = self.baseline_check
        if check is None or not check.weak or check.required:
            return None
        return (
            f"{check.reason} Any selection may seem to match a weak baseline: choose a stronger "
            "validation.model (gbdt)."
        )

    def summary(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "metric": self.metric,
            "difference": self.difference,
            "interval": self.interval.model_dump(),
            "reason": self.reason,
            "baseline": self.baseline.value,
            "baseline_source": self.baseline.source,
            "selected": self.selected.value,
        }


# --- the run -------------------------------------------------------------------------------------


StepStatus = Literal["done", "reused", "skipped", "failed", "interrupted"]


class StepOutcome(BaseModel):
    """One step of ``cae-ray run`` in ``run.json``: its status, its seconds, why it was skipped
    or how it failed, and beside them its record's :meth:`Record.summary` (for people)."""

    model_config = ConfigDict(frozen=True, extra="allow")
    status: StepStatus
    seconds: float | None = None
    reason: str | None = None
    """Why it was skipped."""
    error: str | None = None
    """How it failed (the error's class and message), or what interrupted it."""


RunStatus = Literal["running", "succeeded", "failed", "gate_failed", "interrupted"]


class RunRecord(Record):
    """``run.json``: the whole run, rewritten as each step ends."""

    artifact = RUN_RECORD
    config_hash: str
    run_dir: str
    started_at: str
    status: RunStatus = "running"
    steps: dict[str, StepOutcome] = Field(default_factory=dict)
    cae_ray_version: str

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def with_step(self, name: str, outcome: StepOutcome) -> RunRecord:
        return self.model_copy(update={"steps": {**self.steps, name: outcome}})

    def with_status(self, status: RunStatus) -> RunRecord:
        return self.model_copy(update={"status": status})
