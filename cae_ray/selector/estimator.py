"""A scikit-learn selector for in-memory data: ``ConcreteFeatureSelector(k=50).fit(X, y)``.

It follows scikit-learn's conventions (keyword-only ``__init__`` that only stores, fitted
attributes ending in ``_``, :class:`~sklearn.feature_selection.SelectorMixin` for ``transform``,
``get_support`` and ``get_feature_names_out``) and trains through the one loop in
:mod:`cae_ray.selector.loop`. Like other scikit-learn estimators it does not rescale X: put a
``StandardScaler`` in front of it when features have different units.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import SelectorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from cae_ray.config import Config, validate_config
from cae_ray.errors import (
    CaeRayError,
    ConfigValidationError,
    EmptyInputError,
    FeatureMismatchError,
    NonFiniteInputError,
    NonNumericColumnsError,
)
from cae_ray.selector.choose import SAMPLE_ROWS, FinalChoice, choose_k, searches
from cae_ray.selector.concrete import converged, feature_scores
from cae_ray.selector.errors import DeviceUnavailableError
from cae_ray.selector.loop import EpochRecord, fit_in_memory
from cae_ray.selector.memory import check_memory
from cae_ray.selector.model import SelectorModel, build_model
from cae_ray.selector.targets import ResolvedTask, Target, prepare_target

EpochCallback = Callable[[EpochRecord], None]

CONFIG_KEYS: dict[str, tuple[str, str]] = {
    "k": ("selector", "k"),
    "method": ("selector", "method"),
    "task": ("head", "task"),
    "dim_ip": ("selector", "dim_ip"),
    "hidden": ("head", "hidden"),
    "dropout": ("head", "dropout"),
    "head_weight_decay": ("head", "weight_decay"),
    "search_factor": ("selector", "search_factor"),
    "selector_learning_rate_ratio": ("selector", "learning_rate_ratio"),
    "refine": ("selector", "refine"),
    "polish": ("selector", "polish"),
    "epochs": ("training", "epochs"),
    "batch_size": ("training", "batch_size"),
    "learning_rate": ("training", "learning_rate"),
    "start_temperature": ("selector", "start_temperature"),
    "end_temperature": ("selector", "end_temperature"),
    "sampling": ("selector", "sampling"),
    "early_stop": ("selector", "early_stop"),
    "convergence_threshold": ("selector", "convergence_threshold"),
    "device": ("training", "device"),
    "random_state": ("training", "seed"),
}
"""Each parameter (but ``n_jobs`` and ``verbose``) -> its config section and key: the one place
the estimator and the config are mapped onto each other (:meth:`from_config`, :meth:`to_config`,
and errors, which name the parameter, not the key: :func:`in_estimator_terms`)."""

PARAMETERS = {f"{section}.{key}": param for param, (section, key) in CONFIG_KEYS.items()}
_CONFIG_KEY = re.compile(r"\b(?:" + "|".join(re.escape(k) for k in PARAMETERS) + r")\b")


@dataclass(frozen=True)
class Search:
    """A trained search (or none, with few rows per feature) and the sample it is judged on."""

    config: Config
    task: ResolvedTask
    model: SelectorModel | None
    x: torch.Tensor
    y: torch.Tensor | None
    confident: bool
    """The search converged (its rows' mean max probability reached the threshold)."""


class SelectedColumns(SelectorMixin, BaseEstimator):
    """What a fitted selector of cae-ray does with its ``selected_indices_``: the support mask,
    ``transform`` (a table of another width is refused, naming both widths) and the tags (no
    target required, no NaN). Shared by :class:`ConcreteFeatureSelector` and
    :class:`cae_ray.gate.selector_cv.ConcreteFeatureSelectorCV`."""

    n_features_in_: int
    selected_indices_: np.ndarray

    def transform(self, X: Any) -> Any:
        check_is_fitted(self)
        X = as_table(X)
        n_columns = X.shape[1] if X.ndim == 2 else None
        if n_columns is not None and n_columns != self.n_features_in_:
            raise FeatureMismatchError(self.n_features_in_, n_columns, type(self).__name__)
        return super().transform(X)

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self)
        mask = np.zeros(self.n_features_in_, dtype=bool)
        mask[self.selected_indices_] = True
        return mask

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.input_tags.allow_nan = False
        return tags


class ConcreteFeatureSelector(SelectedColumns):
    """Select ``k`` of the input features with a Concrete Autoencoder (CAE or IP-CAE).

    Without ``y`` (or with ``task="reconstruction"``) it selects the features from which all
    features can be reconstructed; with ``y`` it selects the features a classifier or regressor
    needs; supervised selection trains ``search_factor * k`` rows (None: 2k, or 4k above 2,048
    features) and keeps the k features the head relies on most; for a regression, above 1,000
    features or with ``refine=True``, those k are then re-chosen after a screen of every feature
    (:mod:`cae_ray.selector.refine`); with fewer than one row per 20 features they are the features
    with the best F statistic against y, and no search is trained. Without ``y`` the k picks are
    then polished: swapped for outside features while a linear reconstruction of every feature
    improves (:mod:`cae_ray.selector.polish`; ``polish=None``: up to 4,096 features). Parameters
    mirror the ``selector``, ``training`` and ``head`` config sections (``head_weight_decay`` is
    ``head.weight_decay``, ``selector_learning_rate_ratio`` is ``selector.learning_rate_ratio``,
    ``random_state`` is ``training.seed``).

    ``random_state`` follows scikit-learn: an int gives the same selection on every fit; None
    (the default) draws each fit's seed from numpy's global random state (so
    ``np.random.seed`` makes it repeatable); a ``RandomState`` draws it from that state. The
    CLI's runs keep ``training.seed`` (0 by default): a weekly job must not move by chance.

    ``n_jobs`` is torch's thread count for the fit, with scikit-learn's meaning: None is 1
    unless inside a ``joblib.parallel_backend`` context that says more, -1 all CPUs this
    process may use, -2 all but one. One thread by default because torch's threads spin-wait
    for each other: on a machine shared with other work (a grid search with ``n_jobs``, a Ray
    node) a fit with every core's threads is slower than a one-thread fit. The caller's own
    thread count is restored after the fit.

    ``verbose`` prints progress to stdout the scikit-learn way: 1 about ten epochs of a fit, 2
    every epoch.

    Fitted attributes: ``selected_indices_`` (K distinct indices, ascending), ``scores_`` (one per
    input feature: its largest selection probability), ``collisions_`` (selector rows that had to
    give way to a more confident row), ``converged_``, ``task_``, ``history_`` (per-epoch metrics),
    ``model_`` (the trained torch module of the search over all features), ``n_features_in_``
    and ``feature_names_in_``. With fewer than one row per 20 features no search is trained:
    ``model_`` is None and ``history_`` empty.
    """

    def __init__(
        self,
        *,
        k: int = 10,
        method: str = "ipcae",
        task: str = "auto",
        dim_ip: int | None = None,
        hidden: tuple[int, ...] = (200,),
        dropout: float = 0.0,
        head_weight_decay: float = 1.0,
        search_factor: float | None = None,
        selector_learning_rate_ratio: float = 1.0,
        refine: bool | None = None,
        polish: bool | None = None,
        epochs: int = 200,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        start_temperature: float = 10.0,
        end_temperature: float = 0.01,
        sampling: str = "shared",
        early_stop: bool = True,
        convergence_threshold: float = 0.998,
        device: str = "cpu",
        random_state: int | np.random.RandomState | None = None,
        n_jobs: int | None = None,
        verbose: int = 0,
    ) -> None:
        self.k = k
        self.method = method
        self.task = task
        self.dim_ip = dim_ip
        self.hidden = hidden
        self.dropout = dropout
        self.head_weight_decay = head_weight_decay
        self.search_factor = search_factor
        self.selector_learning_rate_ratio = selector_learning_rate_ratio
        self.refine = refine
        self.polish = polish
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.start_temperature = start_temperature
        self.end_temperature = end_temperature
        self.sampling = sampling
        self.early_stop = early_stop
        self.convergence_threshold = convergence_threshold
        self.device = device
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    # --- configuration -------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Config) -> ConcreteFeatureSelector:
        """The estimator with the selector, training and head settings of ``config``."""
        dumped = config.model_dump()
        params = {p: dumped[section][key] for p, (section, key) in CONFIG_KEYS.items()}
        return cls(**{**params, "hidden": tuple(params["hidden"])})

    def to_config(self) -> Config:
        """The parameters as a validated :class:`~cae_ray.config.Config` (bad values raise,
        naming the parameter). ``random_state=None`` or a ``RandomState`` draws the seed."""
        sections: dict[str, dict[str, Any]] = {}
        for param, (section, key) in CONFIG_KEYS.items():
            value = getattr(self, param)
            if isinstance(value, np.generic):  # a numpy scalar from a parameter grid
                value = value.item()
            if param == "random_state" and not isinstance(value, int):
                value = int(check_random_state(value).randint(np.iinfo(np.int32).max))
            sections.setdefault(section, {})[key] = list(value) if param == "hidden" else value
        with in_estimator_terms():
            return validate_config(sections, source=type(self).__name__)

    # --- scikit-learn API ----------------------------------------------------------------------

    def fit(
        self, X: Any, y: Any = None, *, on_epoch_end: EpochCallback | None = None
    ) -> ConcreteFeatureSelector:
        """Train the selector; ``on_epoch_end(record)`` is called after every epoch."""
        search = self.search(X, y, on_epoch_end=on_epoch_end)
        choice = choose_k(search.model, search.config, search.task, search.x, search.y)
        self._selected(choice, confident=search.confident)
        if not self.converged_:
            warnings.warn(
                f"the selection did not converge in {search.config.training.epochs} epochs "
                f"(mean max probability {self.history_[-1]['mean_max']:.3f}, threshold "
                f"{search.config.selector.convergence_threshold}); "
                f"{self.collisions_} duplicate pick(s) were resolved. Fix: raise epochs.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def search(self, X: Any, y: Any = None, *, on_epoch_end: EpochCallback | None = None) -> Search:
        """The first half of :meth:`fit`: check the input and train the search (none with
        fewer than one row per 20 features); sets ``task_``, ``model_``, ``history_`` and the
        input attributes. :class:`cae_ray.gate.selector_cv.ConcreteFeatureSelectorCV` chooses
        its K from the search this returns."""
        config = self.to_config()
        if config.selector.auto:
            raise ConfigValidationError(
                type(self).__name__,
                ["k: 'auto' chooses K with the gate's model: use ConcreteFeatureSelectorCV"],
            )
        features = self._check_X(X, reset=True)
        with in_estimator_terms(), torch_threads(self.n_jobs):
            return self._fit(config, features, y, on_epoch_end)

    def _fit(
        self, config: Config, features: np.ndarray, y: Any, on_epoch_end: EpochCallback | None
    ) -> Search:
        n_rows, n_features = features.shape
        config.selector.check_fits(n_features)
        target = prepare_target(config.head.task, y, n_rows)
        self.task_: ResolvedTask = target.task
        self.model_: SelectorModel | None = None
        self.history_: list[dict[str, Any]] = []
        x, y_sample = _sample(config, features, target)
        if not searches(config, target.task, n_rows, n_features):
            return Search(config, target.task, None, x, y_sample, confident=True)

        device = _resolve_device(config.training.device)
        check_memory(config, n_features, target.task, target.n_outputs)  # refuse before allocating
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
            torch.manual_seed(config.training.seed)
            model = build_model(config, n_features, target.task, target.n_outputs)
            report = _progress_printer(self.verbose, config.training.epochs, on_epoch_end)
            result = fit_in_memory(
                model, config, target.task, *_tensors(features, target), device, report
            )
        self.model_ = model.cpu().eval()
        self.history_ = [record.as_dict() for record in result.history]
        return Search(config, target.task, self.model_, x, y_sample, result.converged)

    def _selected(self, choice: FinalChoice, *, confident: bool) -> None:
        self.selected_indices_ = np.sort(choice.indices.numpy())
        self.scores_ = feature_scores(choice.probabilities).numpy()
        self.collisions_ = choice.collisions
        # Converged: confident rows (mean max probability) that chose K distinct features.
        self.converged_ = converged(confident, self.collisions_)

    # --- input checks --------------------------------------------------------------------------

    def _check_X(self, X: Any, *, reset: bool) -> np.ndarray:
        X = as_table(X)
        _reject_non_numeric(X)
        if X.ndim == 2 and (X.shape[0] < 2 or X.shape[1] < 2):
            raise EmptyInputError(X.shape[0], X.shape[1])
        array = validate_data(
            self, X, reset=reset, dtype=np.float32, ensure_all_finite=False, ensure_min_samples=2
        )
        _reject_non_finite(array, getattr(self, "feature_names_in_", None))
        return np.ascontiguousarray(array)


# --- helpers -----------------------------------------------------------------------------------


@contextmanager
def in_estimator_terms() -> Iterator[None]:
    """A cae-ray error raised inside names the estimator's parameters, not the config keys they
    map to (``k``, not ``selector.k``): the same class, exit code and attributes."""
    try:
        yield
    except CaeRayError as e:
        message = _CONFIG_KEY.sub(lambda m: PARAMETERS[m.group(0)], str(e))
        if message == str(e):
            raise
        renamed = copy.copy(e)
        renamed.args = (message,)
        raise renamed.with_traceback(e.__traceback__) from None


def torch_threads_for(n_jobs: int | None) -> int:
    """torch threads for ``n_jobs``, read as scikit-learn reads it (joblib's rules)."""
    from joblib import effective_n_jobs

    return max(1, int(effective_n_jobs(n_jobs)))


@contextmanager
def torch_threads(n_jobs: int | None) -> Iterator[None]:
    """torch's intra-op thread count set from ``n_jobs`` for the block, then set back: the
    setting is the process's, and the caller's must not change."""
    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads_for(n_jobs))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def as_table(X: Any) -> Any:
    """A pandas DataFrame (keeps column names; pyarrow tables become one) or a numpy array."""
    if isinstance(X, pa.RecordBatch):
        X = pa.Table.from_batches([X])
    if isinstance(X, pa.Table):
        return X.to_pandas()
    if isinstance(X, pd.DataFrame) or sparse.issparse(X):
        return X  # sparse input is refused by validate_data with scikit-learn's message
    return np.asarray(X)


def _reject_non_numeric(X: Any) -> None:
    if isinstance(X, pd.DataFrame):
        bad = [c for c, d in X.dtypes.items() if not pd.api.types.is_numeric_dtype(d)]
        if bad:
            raise NonNumericColumnsError(bad, [str(X.dtypes[c]) for c in bad])
        return
    if not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype.kind in "biuf":
        return
    if X.dtype.kind == "c":
        raise NonNumericColumnsError(list(range(X.shape[1])), [X.dtype] * X.shape[1])
    bad = [j for j in range(X.shape[1]) if not _column_is_numeric(X[:, j])]
    if bad:
        raise NonNumericColumnsError(bad, [X.dtype] * len(bad))


def _column_is_numeric(column: np.ndarray) -> bool:
    try:
        column.astype(np.float64)
    except (TypeError, ValueError):
        return False
    return True


def _reject_non_finite(array: np.ndarray, names: np.ndarray | None) -> None:
    finite = np.isfinite(array)
    if finite.all():
        return
    columns = np.flatnonzero(~finite.all(axis=0))
    labels = [names[j] for j in columns] if names is not None else columns.tolist()
    n_nan = int(np.isnan(array).sum())
    raise NonFiniteInputError(labels, n_nan, int((~finite).sum()) - n_nan)


def _progress_printer(
    verbose: int, epochs: int, then: EpochCallback | None
) -> EpochCallback | None:
    """The scikit-learn way: ``verbose=1`` prints the first epoch and about ten more, ``2`` every
    one."""
    if verbose <= 0:
        return then
    every = 1 if verbose >= 2 else max(1, epochs // 10)

    def report(record: EpochRecord) -> None:
        if (record.epoch + 1) % every == 0 or record.epoch == 0:
            print(
                f"[ConcreteFeatureSelector] epoch {record.epoch + 1}/{epochs}: loss "
                f"{record.loss:.5f}, temperature {record.temperature:.4f}, mean max probability "
                f"{record.mean_max:.3f}, {record.distinct} distinct ({record.seconds:.2f} s)",
                flush=True,
            )
        if then is not None:
            then(record)

    return report


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(device)
    return torch.device(device)


def _sample(
    config: Config, features: np.ndarray, target: Target
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A random sample of up to SAMPLE_ROWS rows, for the final choice
    (:func:`~cae_ray.selector.choose.choose_k`)."""
    rows = np.random.default_rng(config.training.seed).permutation(len(features))[:SAMPLE_ROWS]
    y = None if target.values is None else torch.from_numpy(target.values[rows])
    return torch.from_numpy(features[rows]), y


def _tensors(features: np.ndarray, target: Target) -> tuple[torch.Tensor, torch.Tensor | None]:
    y = None if target.values is None else torch.from_numpy(target.values)
    return torch.from_numpy(features), y
