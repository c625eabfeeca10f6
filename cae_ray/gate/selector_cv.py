"""``ConcreteFeatureSelectorCV``: the scikit-learn selector with K chosen for you.

Like scikit-learn's ``RFECV`` beside ``RFE``: it wraps a
:class:`~cae_ray.selector.estimator.ConcreteFeatureSelector` (its settings for the search), trains
one search with ``k_max`` selector rows, and keeps the smallest K between ``k_min`` and ``k_max``
whose selection matches the gate's model on all features within ``tolerance``, on a held-out part
of the training rows (:mod:`cae_ray.gate.auto_k`), exactly as ``selector.k: auto`` does in the
pipeline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone

from cae_ray.config import Config, validate_config
from cae_ray.gate.auto_k import choose_auto_k
from cae_ray.selector.concrete import converged, feature_scores
from cae_ray.selector.estimator import ConcreteFeatureSelector, SelectedColumns, as_table


class ConcreteFeatureSelectorCV(SelectedColumns):
    """Select the smallest K of the input features that matches all of them.

    ``selector`` (default ``ConcreteFeatureSelector()``) gives the search's settings; its ``k``
    is replaced by ``k_max`` (None: 64, or one fewer than the features). ``model``,
    ``model_params``, ``metric``, ``tolerance``, ``relative``, ``confidence`` and ``bootstrap``
    mean what the ``validation`` section's keys of the same names mean: the K chosen is the
    smallest whose selection, fitted with ``model``, loses at most ``tolerance`` against the same
    model on all features at the pessimistic end of the ``confidence`` interval, and scores
    within ``tolerance`` of the best K tried, on a seeded quarter of the training rows (every
    row, by 4-fold cross-validation, below 2,000 rows). Without ``y`` the curve is the linear
    reconstruction of all features, and K is its knee.

    Fitted attributes: ``k_`` (the chosen K), ``curve_`` (quality against K, with the reason in
    ``curve_.reason``), ``selected_indices_``, ``scores_``, ``selector_`` (the search, trained
    with ``k_max`` rows), ``converged_``, ``n_features_in_`` and ``feature_names_in_``.
    """

    def __init__(
        self,
        selector: ConcreteFeatureSelector | None = None,
        *,
        k_min: int = 1,
        k_max: int | None = None,
        model: str = "auto",
        model_params: dict[str, Any] | None = None,
        metric: str = "auto",
        tolerance: float = 0.01,
        relative: bool = False,
        confidence: float = 0.95,
        bootstrap: int = 1000,
    ) -> None:
        self.selector = selector
        self.k_min = k_min
        self.k_max = k_max
        self.model = model
        self.model_params = model_params
        self.metric = metric
        self.tolerance = tolerance
        self.relative = relative
        self.confidence = confidence
        self.bootstrap = bootstrap

    def fit(self, X: Any, y: Any = None) -> ConcreteFeatureSelectorCV:
        base = clone(self.selector) if self.selector is not None else ConcreteFeatureSelector()
        config = self._config(base)
        n_features = as_table(X).shape[1]
        config.selector.check_fits(n_features)
        _, k_max = config.selector.k_range(n_features)
        search = base.set_params(k=k_max, search_factor=1.0).search(X, y)
        choice, self.curve_ = choose_auto_k(search.model, config, search.task, search.x, search.y)
        self.selector_ = base
        self.k_ = self.curve_.chosen
        self.selected_indices_ = np.sort(choice.indices.numpy())
        self.scores_ = feature_scores(choice.probabilities).numpy()
        self.converged_ = converged(search.confident, choice.collisions)
        self.n_features_in_ = base.n_features_in_
        if hasattr(base, "feature_names_in_"):
            self.feature_names_in_ = base.feature_names_in_
        return self

    def _config(self, base: ConcreteFeatureSelector) -> Config:
        """The search's config with ``k: auto`` and the gate's settings."""
        dumped = base.to_config().model_dump()
        dumped["selector"] |= {"k": "auto", "k_min": self.k_min, "k_max": self.k_max}
        dumped["validation"] |= {
            "model": self.model,
            "model_params": self.model_params or {},
            "metric": self.metric,
            "tolerance": self.tolerance,
            "relative": self.relative,
            "confidence": self.confidence,
            "bootstrap": self.bootstrap,
        }
        return validate_config(dumped, source=type(self).__name__)
