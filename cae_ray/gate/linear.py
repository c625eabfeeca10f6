"""The gate for reconstruction (no target, nothing to fit): the linear reconstruction of all
features from the K selected, least squares on the training rows, against the top-K principal
components, both scored by the share of the validation rows' variance they explain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cae_ray.gate.metrics import (
    explained_variance,
    linear_reconstruction_rows,
    pca_reconstruction_rows,
)
from cae_ray.gate.models import Scores


class LinearCheck:
    """The :class:`~cae_ray.gate.models.GateModel` of reconstruction."""

    name = "linear"

    def __init__(
        self, rows: Callable[[], tuple[np.ndarray, np.ndarray]], baseline: str | float
    ) -> None:
        """``rows()`` reads (training rows, validation rows) when the check needs them."""
        self.rows, self.baseline = rows, baseline
        self.params: dict[str, Any] = {}

    def scores(self, selected: list[int]) -> Scores:
        x_train, x_eval = self.rows()
        residual, total = linear_reconstruction_rows(x_train, x_eval, selected)
        given = self.baseline
        if given == "train":
            pca_residual, _ = pca_reconstruction_rows(x_train, x_eval, len(selected))

            def score(rows: np.ndarray) -> tuple[float, float]:
                return (
                    explained_variance(pca_residual, total, rows),
                    explained_variance(residual, total, rows),
                )

            source = f"top-{len(selected)} principal components"
        else:

            def score(rows: np.ndarray) -> tuple[float, float]:
                return float(given), explained_variance(residual, total, rows)

            source = "given"
        baseline, value = score(np.arange(len(x_eval)))
        return Scores(len(x_eval), [baseline], [value], score, source)
