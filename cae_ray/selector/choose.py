"""The final K features: one decision, for the scikit-learn estimator and the pipeline alike.

    searches(config, task, n_rows, n_features)  -> whether a search is trained at all
    choose_k(model, config, task, x, y)         -> the K, from the search (or without one)

With fewer than one sample row per 20 features (:data:`FEW_ROWS_PER_FEATURE`) no search is
trained: the K are the features with the best F statistic against the target. Otherwise the
search's own k (:func:`cae_ray.selector.ranking.search_selection`), polished for a
reconstruction (:mod:`cae_ray.selector.polish`) or refined by a screen for a regression or a
wide classification table (:mod:`cae_ray.selector.refine`). Both run on an in-memory sample of the
training rows, at most :data:`SAMPLE_ROWS` of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cae_ray.config import Config
from cae_ray.selector.concrete import distinct_selection
from cae_ray.selector.model import SelectorModel
from cae_ray.selector.polish import linear_order, polish_reconstruction, polishes
from cae_ray.selector.ranking import rows_by_importance, search_selection
from cae_ray.selector.refine import refined, refines
from cae_ray.selector.targets import ResolvedTask

logger = logging.getLogger(__name__)

SAMPLE_ROWS = 20_000
"""Training rows held in memory after the search: to rank its rows, to refine or polish its
picks, or to screen without one. Sampled at random by the estimator; the pipeline's train split
is in hashed order, so its first rows are a random sample."""
FEW_ROWS_PER_FEATURE = 1 / 20
"""With fewer sample rows than this per feature (the gene-expression shape: ~100 rows x 12,000
columns) the search's head memorises its rows: its residual and its importance ratings carry no
signal, and on 100 x 12,000 with 30 informative columns the search's K scored like random
columns (5-fold accuracy 0.55 where 50 random columns score 0.53, benchmarks/quality.py). There
the K are the features with the best F statistic against the target alone, and no search is
trained (:func:`searches`)."""


@dataclass(frozen=True)
class FinalChoice:
    indices: Tensor
    """The K distinct feature indices."""
    probabilities: Tensor
    """K x N: each pick's row of selection probabilities (one-hot where no search chose)."""
    collisions: int
    """Selector rows that had to give way to a more confident row for the same feature."""


def searches(config: Config, task: ResolvedTask, n_rows: int, n_features: int) -> bool:
    """Whether a search is trained: not for a selection that :func:`~cae_ray.selector.refine.
    refines` on a sample of fewer than FEW_ROWS_PER_FEATURE rows per feature. Decided before
    training, since the search's head would memorise so few rows and its choice be overridden
    anyway (on 100 x 12,000 it was 13-21 s of a fit)."""
    sample = min(n_rows, SAMPLE_ROWS)
    return not (refines(config, n_features, task) and sample < n_features * FEW_ROWS_PER_FEATURE)


def choose_k(
    model: SelectorModel | None,
    config: Config,
    task: ResolvedTask,
    x: Tensor,
    y: Tensor | None,
) -> FinalChoice:
    """The final K from a trained search ``model`` (None: no search, see :func:`searches`), on
    the in-memory sample ``x``, ``y`` (``x`` may be empty for a reconstruction that is not
    polished)."""
    k = config.selector.fixed_k
    if model is None:
        return screened_selection(task, k, x, y)
    model = model.cpu()
    kept, probs, collisions = search_selection(model, task, k, x, y)
    n_features = probs.shape[1]
    if polishes(config.selector.polish, n_features, task):
        kept = polish_reconstruction(x, kept)
    elif refines(config, n_features, task):
        kept, probs = refined(model, config, task, x, y, kept)
    return FinalChoice(kept, probs, collisions)


@torch.no_grad()
def screened_selection(task: ResolvedTask, k: int, x: Tensor, y: Tensor | None) -> FinalChoice:
    """The k features with the largest univariate F statistic against the target (ANOVA F for
    classes, the regression F summed over outputs), each with a one-hot row of
    "probabilities" (it was chosen outright). On so few rows it did at least as well as the
    robust score test in 10 of 12 generated tables (docs/benchmarks.md)."""
    n_features = x.shape[1]
    chosen = torch.topk(f_statistics(task, x, y), k).indices
    logger.info(
        "select: %d rows for %d features: the K are the best by the F statistic against the "
        "target; no search is trained (its head would memorise so few rows)",
        x.shape[0],
        n_features,
    )
    return FinalChoice(chosen, nn.functional.one_hot(chosen, n_features).float(), 0)


def f_statistics(task: ResolvedTask, x: Tensor, y: Tensor | None) -> Tensor:
    """Each feature's univariate F statistic against the target (-inf for constant ones)."""
    from sklearn.feature_selection import f_classif, f_regression

    assert y is not None, "supervised tasks need a target"
    features = x.float().numpy()  # float32: no copy of the sample
    if task == "classification":
        f_values, _ = f_classif(features, y.numpy())
    else:
        targets = y.reshape(len(y), -1).double().numpy()
        f_values = sum(f_regression(features, t)[0] for t in targets.T)
    return torch.nan_to_num(torch.as_tensor(f_values), nan=-torch.inf)  # constant columns


@torch.no_grad()
def ranked_picks(
    model: SelectorModel | None, config: Config, task: ResolvedTask, x: Tensor, y: Tensor | None
) -> Tensor:
    """A search's picks, one distinct feature per selector row, most useful first: by the
    loss the model loses without each (supervised), by the variance each adds to a linear
    reconstruction of all features from those before it (reconstruction), or, where no search
    was trained, the ``selector.k`` best by the F statistic. ``k: auto`` scores their prefixes.
    (A reconstruction too wide to polish is ordered by the loss, like a supervised search.)"""
    if model is None:
        return torch.topk(f_statistics(task, x, y), config.selector.fixed_k).indices
    model = model.cpu()
    picks = distinct_selection(model.selector.probabilities()).indices
    if polishes(config.selector.polish, x.shape[1], task):  # C and G fit in memory
        return linear_order(x, picks)
    return picks[rows_by_importance(model, task, x, y, picks)]
