"""The `feast:` section of a run's config: the feature repo, what to export, how to prune and
retire."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import (
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from cae_ray.config.sections import Section

_UNITS = {"d": "days", "h": "hours", "w": "weeks"}


_ISO_OR_CLOCK: TypeAdapter[timedelta] = TypeAdapter(timedelta)


def parse_duration(text: str) -> timedelta:
    """A duration as Feast users write one (for a view's ``ttl``, say): ``30d``, ``12h``,
    ``2w``, ISO 8601 (``P30D``, ``PT12H``, ``P1DT6H``) or ``[D days, ]HH:MM:SS``; ValueError
    saying how to write one otherwise. ISO 8601 and the clock form are pydantic's parsing."""
    text = text.strip()
    number, unit = text[:-1], text[-1:]
    if number.isdigit() and unit in _UNITS:
        return timedelta(**{_UNITS[unit]: int(number)})
    try:  # a bare number would read as seconds: say the unit instead
        duration = None if _is_number(text) else _ISO_OR_CLOCK.validate_python(text)
    except ValidationError:
        duration = None
    if duration is None or duration < timedelta(0):
        raise ValueError(
            f"{text!r} is not a duration: write a whole number and a unit, d (days), h (hours) "
            "or w (weeks), e.g. 30d, 12h or 0d, or ISO 8601, e.g. P30D or PT12H"
        )
    return duration


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class FeastConfig(Section):
    repo: str
    """The Feast feature repo: the directory that holds `feature_store.yaml`."""

    features: list[str] = Field(default_factory=list)
    """What to export: feature view names (all their features) and `view:feature` refs."""

    feature_service: str | None = None
    """Export the features of this FeatureService instead of `features`."""

    entities: str | None = None
    """Parquet file or directory of entity rows: every join key of the views, the event
    timestamp column, and any other columns to carry along (a label, say). Export needs these
    or a time range (`start`, `end`)."""

    start: datetime | None = None
    """Instead of `entities`: export every (join keys, event timestamp) of the views' feature
    rows from `start` to `end` (both included), as of its own timestamp. Naive times are UTC."""

    end: datetime | None = None
    """The end of the time range (default: now)."""

    timestamp_column: str = "event_timestamp"
    """The event timestamp column of `entities`: features are read as of this time."""

    chunk_rows: int = Field(50_000, ge=1)
    """Entity rows per point-in-time retrieval; each chunk becomes one Parquet part. Lower it
    when a chunk of rows x features does not fit in the driver's memory. Not used with Feast's
    ray offline store, which retrieves on the cluster and writes from there."""

    prune: Literal["plan", "apply"] = "plan"
    """What `cae-ray run` does after a passed validation: `plan` saves the prune plan only (like
    `cae-ray prune` without --apply); `apply` records this run's selection as its model's
    (`kept_service`) and marks deprecated the features that no model keeps."""

    kept_service: str = Field("cae_ray_selected", min_length=1)
    """The model this config trains for, and its FeatureService: each applied prune sets it to
    the run's selected features (tagged with the run id and date); the model reads its features
    from it. Configs of different models (labels) sharing a repo need different names: a
    feature is marked deprecated only when no model keeps it."""

    grace_period: str = "30d"
    """How long a feature stays deprecated before `cae-ray retire` removes it from the repo's
    definitions: a number and a unit, `d` (days), `h` (hours) or `w` (weeks), or ISO 8601
    (`P30D`, `PT12H`), as Feast users write a view's `ttl`; `0d` retires every deprecated
    feature."""

    retire: Literal["off", "plan", "apply"] = "plan"
    """What `cae-ray run` does after the prune: `plan` saves what would retire (RUN_DIR/
    retire.json, with the diff) without doing it; `apply` retires (like `cae-ray retire
    --apply`); `off` skips it."""

    @field_validator("grace_period", mode="before")
    @classmethod
    def _a_timedelta_as_text(cls, value: Any) -> Any:
        """A ``timedelta`` (from Python, as a view's ``ttl`` is) is kept as its ISO 8601 text."""
        if isinstance(value, timedelta):
            return _ISO_OR_CLOCK.dump_python(value, mode="json")
        return value

    @field_validator("grace_period")
    @classmethod
    def _a_duration(cls, value: str) -> str:
        parse_duration(value)  # raises ValueError with the fix
        return value

    @property
    def grace(self) -> timedelta:
        return parse_duration(self.grace_period)

    @model_validator(mode="after")
    def _kept_service_is_not_the_source(self) -> FeastConfig:
        if self.feature_service is not None and self.feature_service == self.kept_service:
            raise ValueError(
                f"feast.feature_service and feast.kept_service are both {self.kept_service!r}: "
                "exporting from the service cae-ray rewrites would shrink the candidates to the "
                "last selection every run. Export from the views (feast.features) or from a "
                "service of your own"
            )
        return self

    @model_validator(mode="after")
    def _one_source_of_features(self) -> FeastConfig:
        if bool(self.features) == bool(self.feature_service):
            raise ValueError(
                "give either feast.features (views or view:feature refs) or "
                "feast.feature_service, not both and not neither"
            )
        return self

    @field_validator("start", "end")
    @classmethod
    def _naive_is_utc(cls, moment: datetime | None) -> datetime | None:
        if moment is None or moment.tzinfo is not None:
            return moment
        return moment.replace(tzinfo=timezone.utc)

    @property
    def has_entity_rows(self) -> bool:
        """Whether export has entity rows to retrieve: a file of them, or a time range."""
        return self.entities is not None or self.start is not None

    @model_validator(mode="after")
    def _entity_rows_or_a_time_range(self) -> FeastConfig:
        if self.entities is not None and self.start is not None:
            raise ValueError(
                "give either feast.entities (a file of entity rows) or a time range "
                "(feast.start, feast.end), not both"
            )
        if self.end is not None and self.start is None:
            raise ValueError("feast.end needs feast.start (the time range's beginning)")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"feast.start ({self.start}) is after feast.end ({self.end})")
        return self
