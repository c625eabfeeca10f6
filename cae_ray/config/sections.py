"""The sections of a run's config that configure the selection and the gate: one pydantic
model each (the `feast:` section is in :mod:`cae_ray.config.feast`)."""

from __future__ import annotations

import numbers
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)

from cae_ray.errors import TooFewFeaturesError

AUTO_K_MAX = 64
"""``selector.k_max`` when null (see its description)."""

Method = Literal["ipcae", "cae"]
Task = Literal["auto", "reconstruction", "classification", "regression"]
Sampling = Literal["shared", "per_example", "chunked"]
Device = Literal["cpu", "cuda", "auto"]


class Section(BaseModel):
    """Common settings: unknown keys are errors and field docstrings become descriptions."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, frozen=True, allow_inf_nan=False
    )


class SelectorConfig(Section):
    method: Method = "ipcae"
    """`ipcae`: indirectly parameterized logits L = Psi W^T + b (Nilsson et al. 2024), which
    converges faster and to better selections; `cae`: free K x N logits (Abid et al. 2019)."""

    k: StrictInt | Literal["auto"] = "auto"
    """How many features to select: a number smaller than the number of candidate features, or
    `auto`: the smallest K between `k_min` and `k_max` whose selection matches the all-features
    baseline within `validation.tolerance` (and the best K tried), chosen on held-out rows of
    the training sample with the gate's own model and interval, or without a target the knee of
    the reconstruction curve (cae_ray.gate.auto_k); the gate then scores it once on its
    held-out rows, as it would a fixed K."""

    @field_validator("k", mode="before")
    @classmethod
    def _k_is_a_count_or_auto(cls, value: object) -> object:
        # One message for both spellings, instead of one per member of the union.
        if isinstance(value, str) and value == "auto":
            return value
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 1:
            return int(value)  # numpy's integers too (a GridSearchCV grid of np.arange)
        raise ValueError("should be a whole number of features (1 or more) or 'auto'")

    k_min: StrictInt = Field(1, ge=1)
    """`k: auto` only: the smallest K considered."""

    k_max: StrictInt | None = Field(None, ge=1)
    """`k: auto` only: the largest K considered; the search trains this many selector rows and
    ranks their features. `null`: 64, or one fewer than the candidate features if there are
    fewer: enough for tables whose useful features number up to ~50 (the chosen K lands within
    a rung of the ladder); a larger selection needs a larger `k_max` (and a longer search)."""

    keep_incumbent: bool = True
    """A scheduled run keeps the model's previous applied selection (its kept feature service)
    unless this run's own selection scores better on an inner split of the training rows, beyond
    the gate's interval: on tables full of near-twins a fresh search swaps one twin for another
    from week to week, and each swap is a mark added and removed in a shared registry
    (cae_ray.gate.incumbent). `false`: every run acts on its own selection."""

    dim_ip: int | None = Field(None, ge=1)
    """IP-CAE only: width d of the indirect parameterization (Psi is K x d, W is N x d).
    `null` chooses it from N: d = N (full rank, as in the paper) up to N = 2,048 features, where
    W with its gradient and Adam state stays under 64 MiB; above that d = 256 (low rank), so
    memory and time per step grow linearly in N instead of as N^2 (the logits K x N have rank
    <= d + 1, so d = 256 restricts nothing up to 256 selector rows). Set N for full rank."""

    start_temperature: float = Field(10.0, gt=0)
    """Gumbel-softmax temperature at the first training step."""

    end_temperature: float = Field(0.01, gt=0)
    """Temperature at the last step; it decays exponentially in between, once per step."""

    sampling: Sampling = "shared"
    """`shared`: one Gumbel noise draw per batch (K x N values, fast); `per_example`: one draw per
    row (batch x K x N values, the papers' choice, slower and heavier); `chunked`: the same
    per-example draws made a few rows at a time and redrawn in the backward pass, so the samples
    take ~16 MB whatever the batch and width (per_example's results, in about its time)."""

    early_stop: bool = True
    """Stop training once the selection has converged (see `convergence_threshold`)."""

    search_factor: float | None = Field(None, ge=1)
    """Supervised tasks only: train ceil(search_factor * k) selector rows, then keep the k rows
    whose feature the head relies on most (largest training-loss increase when the feature is
    replaced by its mean). Spare rows let features that only help in combination be found;
    1 disables it. `null`: 2 up to 2,048 features, 4 above (wider tables hide more such
    features). Reconstruction always trains exactly k rows."""

    learning_rate_ratio: float = Field(1.0, gt=0, le=10)
    """The selector's learning rate as a multiple of `training.learning_rate` (the head keeps
    that rate). Below 1 the selector keeps exploring longer while the head learns: 0.3 raised
    supervised MNIST's ExtraTrees accuracy by ~0.004 but found 17 of Madelon's 20 informative
    columns where 1 finds 19 (docs/benchmarks.md), so the default is 1 for every task."""

    refine: bool | None = None
    """Supervised tasks only: after the search, score every feature by how much it would add
    beside the search's picks (alone, squared and in interaction with each), and re-choose the k
    from the search's features and as many best-scored ones by second, small searches and a
    model fed all of them, on an in-memory sample. Finds features whose signal is only in
    combination, which a search over many thousands of columns misses, and symmetric effects,
    which a search misses at any width. `null`: on for a classification above 1,000 features
    and for every regression."""

    polish: bool | None = None
    """Unsupervised (reconstruction) only: after training, swap picks for outside features while
    a linear reconstruction of every feature from the K picks improves (closed form, on an
    in-memory sample of the training rows; see cae_ray.selector.polish). On MNIST it lowers the
    held-out reconstruction error by ~3% in ~2 s. `null`: on up to 4,096 features (it holds two N x
    N float64 matrices)."""

    convergence_threshold: float = Field(0.998, gt=0, le=1)
    """Converged when the mean over selector rows of the largest selection probability reaches
    this value (the CAE paper uses 0.998)."""

    @property
    def auto(self) -> bool:
        """Whether K is chosen for the user (``k: auto``)."""
        return self.k == "auto"

    @property
    def fixed_k(self) -> int:
        """``k`` as a number: every reader of it after ``k: auto`` was resolved to a number
        (:meth:`resolved`) before any training."""
        if self.k == "auto":
            raise TypeError("selector.k is auto here: resolve it with SelectorConfig.resolved")
        return self.k

    def k_range(self, n_features: int) -> tuple[int, int]:
        """(k_min, k_max) of ``k: auto`` for ``n_features`` usable candidate features."""
        k_max = self.k_max if self.k_max is not None else min(AUTO_K_MAX, n_features - 1)
        return self.k_min, k_max

    def resolved(self, k: int) -> SelectorConfig:
        """This section with the number ``k`` for ``k``."""
        return self.model_copy(update={"k": k})

    def for_search(self, n_features: int) -> SelectorConfig:
        """The section the search trains with: this one for a fixed K; for ``k: auto``,
        ``k_max`` selector rows and no more (the chosen K then has ``k_max / K`` spare rows)."""
        if not self.auto:
            return self
        _, k_max = self.k_range(n_features)
        return self.resolved(k_max).model_copy(update={"search_factor": 1.0})

    def check_fits(self, n_features: int, dropped_constant: list[str] | None = None) -> None:
        """Refuse a ``k`` (or ``k: auto``'s range) that is not below the number of usable
        candidate features (known only once the data is: the one check of ``k`` beyond this
        model's own)."""
        dropped = dropped_constant or []
        if not self.auto:
            if self.fixed_k >= n_features:
                raise TooFewFeaturesError(self.fixed_k, n_features, dropped)
            return
        k_min, k_max = self.k_range(n_features)
        for name, value in (("k_min", k_min), ("k_max", k_max)):
            if value >= n_features:
                raise TooFewFeaturesError(value, n_features, dropped, setting=f"selector.{name}")

    @model_validator(mode="after")
    def _k_range_is_a_range(self) -> SelectorConfig:
        if self.k_max is not None and self.k_min > self.k_max:
            raise ValueError(
                f"k_min={self.k_min} is above k_max={self.k_max}: k: auto searches between "
                "them. Fix: swap them, or leave k_max out (64)"
            )
        return self

    @model_validator(mode="after")
    def _temperatures_decrease(self) -> SelectorConfig:
        if self.end_temperature > self.start_temperature:
            raise ValueError(
                f"end_temperature={self.end_temperature} is above start_temperature="
                f"{self.start_temperature}; the temperature anneals downwards. Swap them."
            )
        return self


class TrainingConfig(Section):
    epochs: int = Field(200, ge=1)
    """Passes over the training data (an upper bound when early_stop is on)."""

    batch_size: int = Field(128, ge=1)
    """Rows per optimizer step (per worker when training with Ray)."""

    learning_rate: float = Field(1e-3, gt=0)
    """Adam learning rate for the selector and the head."""

    seed: int = 0
    """Seed for initialisation, shuffling and Gumbel noise: same seed, same data, same selection."""

    device: Device = "cpu"
    """`cpu`, `cuda`, or `auto` (cuda when available)."""

    memory_limit_gb: float | None = Field(None, gt=0)
    """Memory training may use on one machine, in GB (all its workers together). Before training
    the memory need is estimated (parameters, Adam state, gradients, Gumbel samples, activations)
    and the run is refused, naming the setting to change, if it exceeds this. `null`: 90% of the
    memory the OS reports available (MemAvailable) when training starts."""


class HeadConfig(Section):
    task: Task = "auto"
    """What the K selected features must predict. `reconstruction`: all N features (unsupervised);
    `classification` / `regression`: the target y. `auto`: reconstruction without a target,
    otherwise classification for discrete targets and regression for continuous ones."""

    hidden: list[int] = Field(default_factory=lambda: [200])
    """Hidden layer widths of the head (Linear, LayerNorm, LeakyReLU(0.2) per layer, as in the
    IP-CAE paper). An empty list gives a linear head."""

    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout after each hidden layer."""

    weight_decay: float = Field(1.0, ge=0)
    """Supervised tasks only: decoupled (AdamW) weight decay on the head. It keeps the head from
    memorising the training rows, which would zero the gradient that finds the last features."""

    @model_validator(mode="after")
    def _positive_widths(self) -> HeadConfig:
        if any(w < 1 for w in self.hidden):
            raise ValueError(f"hidden={self.hidden}: every layer width must be >= 1")
        return self


class AllNumericExcept(Section):
    all_numeric_except: list[str] = Field(default_factory=list)
    """Every numeric column except these (the target and the row key are always excluded)."""


class DataConfig(Section):
    path: str | None = None
    """A Parquet file or directory: a local path or any pyarrow filesystem URI
    (`s3://...`, `gs://...`, `file:///...`). Relative paths are relative to the working dir.
    Leave it out to select from the Feast export of the `feast:` section (RUN_DIR/export): the
    candidates are then the exported features and the row key is the export's row number."""

    features: list[str] | str | AllNumericExcept = Field(default_factory=AllNumericExcept)
    """The candidate features: a list of column names, a glob pattern such as `"f_*"`, or
    `{all_numeric_except: [id, ts]}` (the default: every numeric column)."""

    target: str | None = None
    """The column the selected features must predict; `null` selects for reconstruction. With a
    `feast:` section it may name a feature view field instead, `view:field` (e.g.
    `customer_labels:churned`): the export fetches it point in time with the features and
    leaves it out of the candidates (its view may not be one of the candidate views)."""

    row_key: str | None = None
    """A column that identifies rows (e.g. an entity id). The train/validation split hashes it,
    so a row stays on its side whatever the file order. Without it the feature values are
    hashed (identical rows always share a side)."""

    validation_fraction: float = Field(0.2, ge=0, lt=1)
    """Share of rows held out for validation (by the hashed row key)."""

    null_policy: Literal["mean", "zero", "refuse"] = "mean"
    """Missing values: replace with the column mean, with 0, or refuse the dataset naming the
    columns. Columns that are entirely null are dropped (and reported) under mean and zero."""

    scaling: Literal["standard", "none"] = "standard"
    """`standard`: subtract each feature's mean and divide by its standard deviation (from one
    pass of statistics), so features in different units weigh alike; `none`: use raw values."""


class ScalingConfig(Section):
    num_workers: int = Field(1, ge=0)
    """Ray Train workers (data-parallel, DDP). 0 runs the loop in the driver (Train local mode)."""

    use_gpu: bool = False
    """One GPU per worker, NCCL between them, pinned-memory host-to-device copies."""

    resources_per_worker: dict[str, float] | None = None
    """Ray resources each worker reserves, e.g. `{CPU: 0.5}`. Default: 1 CPU (and 1 GPU with
    use_gpu). On a 2-CPU machine give workers less than 1 CPU so Ray Data can still read."""

    address: str | None = None
    """Ray cluster to join (`ray://host:10001` or `host:6379`). Default: `RAY_ADDRESS` from the
    environment, else a local cluster started for this run."""

    max_failures: int = Field(2, ge=-1)
    """Worker-group restarts from the last checkpoint before the run fails (-1: no limit)."""

    bf16: bool = False
    """Autocast the forward pass to bfloat16 (GPU only; CPU runs stay in float32)."""

    cache_train_split: Literal["auto", "always", "never"] = "auto"
    """Keep the packed train split in Ray's object store after the first read, so later epochs
    skip Parquet. `auto`: when it takes at most half of the cluster's object store memory."""

    prepare_in: Literal["auto", "driver", "ray"] = "auto"
    """Where the prepare step reads the table and writes the packed splits: `ray` (Ray Data
    tasks, in parallel across the cluster), `driver` (this process, with pyarrow: no start-up
    cost, one core). `auto`: the driver for tables of up to 32 million cells (rows x features,
    e.g. 32,000 x 1,000), where Ray Data's start-up (seconds per pass) costs more than the
    work. Both write the same rows, values and splits."""


ValidationMetric = Literal[
    "auto", "accuracy", "macro_f1", "roc_auc", "rmse", "r2", "explained_variance"
]


class ValidationConfig(Section):
    metric: ValidationMetric = "auto"
    """What the gate compares. Classification: `accuracy`, `macro_f1`, `roc_auc` (two classes);
    regression: `rmse`, `r2`; reconstruction: `explained_variance` (share of the variance of all
    N features explained from the K selected, against the top-K principal components). `auto`:
    accuracy, r2 or explained_variance by task."""

    tolerance: float = Field(0.01, ge=0)
    """How much worse than the baseline the selected features may be, in the metric's units (or
    as a fraction of the baseline with `relative`). 0 demands no loss at all."""

    relative: bool = False
    """Read `tolerance` as a fraction of |baseline| instead of an absolute amount."""

    bootstrap: int = Field(1000, ge=0)
    """Resamples of the validation rows for the confidence interval of the difference; the gate
    passes only if the pessimistic end of the interval is within the tolerance. 0: no interval."""

    confidence: float = Field(0.95, gt=0, lt=1)
    """Level of that interval."""

    baseline: Literal["train"] | float = "train"
    """`train`: train a model on all candidate features as the baseline; a number: your own
    figure (e.g. the production model's metric), and no baseline training."""

    repeats: int = Field(1, ge=1)
    """Train both models with this many seeds and average, for a steadier comparison."""

    epochs: int = Field(30, ge=1)
    """`model: mlp` only: the most epochs per weight decay on its path; each fit stops early on
    held-out training rows well before, as a rule (baseline and selected get the same)."""

    model: str = "auto"
    """The model the gate fits, the same one on all features (the baseline) and on the K
    selected, with the same seeds. `gbdt`: gradient-boosted trees (scikit-learn's
    HistGradientBoosting when the table fits in memory, else XGBoost through Ray Train, extra
    `cae-ray[xgboost]`); `mlp`: the selector's head shape, its epochs and input-column weight
    decay chosen on held-out training rows (cae_ray.gate.mlp); or the import
    path of any scikit-learn estimator (`sklearn.linear_model.LogisticRegression`,
    `lightgbm.LGBMClassifier`, ...) with `model_params`. `auto`: gbdt for classification and
    regression (a strong learner on tables with little tuning), and for reconstruction the
    linear reconstruction against principal components (no model is trained)."""

    model_params: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the model: `gbdt` in memory, of HistGradientBoosting* (`max_iter`,
    `learning_rate`, ...); `gbdt` on Ray, of `xgboost.train` (`num_boost_round`, `max_depth`,
    `eta`, ...); `mlp`: `hidden`, `max_epochs`, `learning_rate`, `batch_size`, `patience`; an
    import path, of that class."""

    baseline_slack: float = Field(0.02, ge=0)
    """How far the baseline may trail a stock reference on all features (HistGradientBoosting
    with default parameters), in the metric's units, before the run says the baseline is weak:
    a weak baseline makes almost any selection "match" it."""

    require_fair_baseline: bool | None = None
    """Fail the gate when the baseline is weak (see `baseline_slack`). `null`: true when
    `feast.prune: apply` (features are deleted on the gate's word), else false."""

    @model_validator(mode="after")
    def _a_model_name(self) -> ValidationConfig:
        if self.model not in ("auto", "mlp", "gbdt") and "." not in self.model:
            raise ValueError(
                f"model={self.model!r}: use auto, gbdt, mlp, or the import path of a "
                "scikit-learn estimator (e.g. sklearn.linear_model.LogisticRegression)"
            )
        return self
