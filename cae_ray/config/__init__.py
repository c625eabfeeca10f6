"""The configuration of a run: one pydantic model per section (:mod:`cae_ray.config.sections`,
:mod:`cae_ray.config.feast`), the whole :class:`Config`, and the loader (the file itself is read
by :mod:`cae_ray.config.file`).

A YAML file maps onto :class:`Config` one to one. Unknown keys are rejected (with a suggestion
for the nearest known key), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, get_args

from pydantic import BaseModel, Field, ValidationError, model_validator

from cae_ray.config.feast import FeastConfig, parse_duration
from cae_ray.config.file import read_config_file
from cae_ray.config.sections import (
    AUTO_K_MAX,
    AllNumericExcept,
    DataConfig,
    Device,
    HeadConfig,
    Method,
    Sampling,
    ScalingConfig,
    Section,
    SelectorConfig,
    Task,
    TrainingConfig,
    ValidationConfig,
)
from cae_ray.errors import ConfigValidationError

__all__ = [
    "AUTO_K_MAX",
    "AllNumericExcept",
    "Config",
    "DataConfig",
    "Device",
    "FeastConfig",
    "HeadConfig",
    "Method",
    "Sampling",
    "ScalingConfig",
    "Section",
    "SelectorConfig",
    "Task",
    "TrainingConfig",
    "ValidationConfig",
    "describe_problem",
    "load_config",
    "parse_duration",
    "ray_address",
    "validate_config",
]


class Config(Section):
    """A whole run. Each section is optional and has sensible defaults."""

    data: DataConfig | None = None
    """The dataset to select from (required by `cae-ray select`, not by the estimator)."""

    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    """How many Ray Train workers, on which hardware."""

    selector: SelectorConfig = Field(default_factory=SelectorConfig)
    """Which selector, how many features, and its Gumbel-softmax schedule."""

    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Optimisation budget and reproducibility."""

    head: HeadConfig = Field(default_factory=HeadConfig)
    """The model that sits behind the selector during training."""

    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    """The gate: does a model on the K selected features match the all-features baseline?"""

    feast: FeastConfig | None = None
    """The Feast feature repo to export training data from (`cae-ray export`)."""

    @model_validator(mode="before")
    @classmethod
    def _one_device(cls, data: Any) -> Any:
        """`scaling.use_gpu` decides the device; `training.device` (the in-memory estimator's)
        follows it when not given, and may not contradict it when given."""
        if not isinstance(data, dict):
            return data
        scaling, training = data.get("scaling") or {}, data.get("training") or {}
        if not isinstance(scaling, dict) or not isinstance(training, dict):
            return data  # the sections' own validation reports it
        use_gpu, device = scaling.get("use_gpu"), training.get("device")
        if use_gpu is True and device is None:
            return {**data, "training": {**training, "device": "cuda"}}
        if (use_gpu is True and device == "cpu") or (use_gpu is False and device == "cuda"):
            raise ValueError(
                f"training.device: {device} and scaling.use_gpu: {str(use_gpu).lower()} "
                "disagree. Fix: set scaling.use_gpu alone (training.device follows it), or make "
                "them agree"
            )
        return data

    @property
    def feast_label(self) -> str | None:
        """``data.target`` when it names a Feast feature (``view:field``, with a `feast:`
        section): the export fetches it beside the features."""
        target = self.data.target if self.data is not None else None
        if self.feast is None or target is None or ":" not in target:
            return None
        return target

    @property
    def fair_baseline_required(self) -> bool:
        """Whether a weak baseline fails the gate (``validation.require_fair_baseline``)."""
        required = self.validation.require_fair_baseline
        if required is not None:
            return required
        return self.feast is not None and self.feast.prune == "apply"


def ray_address(config: Config) -> str | None:
    """The cluster to join: ``scaling.address``, else ``RAY_ADDRESS``; None starts a local one."""
    return config.scaling.address or os.environ.get("RAY_ADDRESS")


# --- loading -----------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read a YAML config file into a :class:`Config`; errors name the file, key and fix."""
    return validate_config(read_config_file(path), str(path))


def validate_config(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a plain dict (e.g. parsed YAML) into a :class:`Config`."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigValidationError(source, [describe_problem(err) for err in e.errors()]) from e


def describe_problem(err: Any) -> str:
    """One line per pydantic error: the dotted key, what is wrong and, for typos, a suggestion."""
    loc = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key{_suggestion(err['loc'])}"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}{shown}" if loc else f"{message}{shown}"


def _suggestion(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        candidates = (field.annotation, *get_args(field.annotation)) if field else ()
        models = [t for t in candidates if isinstance(t, type) and issubclass(t, BaseModel)]
        if not models:
            return ""
        model = models[0]
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known keys here: {', '.join(known)}"
