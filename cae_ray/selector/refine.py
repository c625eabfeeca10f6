"""A second look after a supervised search, for features that only matter beside the picks.

On a wide table a supervised search misses features whose signal is only in interaction with
other features: at 20,000 columns their share of any selector row's soft mixture is too small
for the head to learn the interaction, so no gradient ever points at them. The search's picks
make them easy to test, though. With the search's head in place, the score test for adding a
feature j, alone, squared and multiplied by each pick i, needs only sums over rows of
``residual * x_i * x_j``: one matrix product per pick for all N features at once. The
best-scored features join the search's k in a pool of a few dozen, and three small second
searches over the pool (the same model, loop and importance ranking, trained on the in-memory
sample) and one head fed the whole pool rate them; the k with the best total are kept.

A regression search is refined at any width: with fewer features to miss it still misses
non-monotone effects (on scikit-learn's ``make_friedman1`` with 1,000 columns the search alone
kept 1 of its 5 informative columns, refined all 5; docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn

from cae_ray.config import Config
from cae_ray.selector.concrete import EveryColumn, distinct_selection
from cae_ray.selector.loop import fit_in_memory
from cae_ray.selector.model import SelectorModel, build_head, build_model
from cae_ray.selector.ranking import importance
from cae_ray.selector.targets import ResolvedTask

logger = logging.getLogger(__name__)

MAX_PICKS_SCREENED = 32
"""Interactions are tested with the search's most important picks, at most this many: the
screen's cost grows with them, and the first picks carry most of the head's signal."""
SECOND_SEARCHES = 3
"""Second searches whose importance ratings are summed. On the 20-of-20,000 tables of
benchmarks/scale.py (seeds 0-2, each with three row orders) 3 found 19-20 of 20, 1 found 15-20."""
SCREEN_COLUMNS = 512
"""Features scored per matrix product, so the screen needs no centred copy of the sample
(20,000 sample rows: ~40 MB a block)."""
REFINE_ABOVE_FEATURES = 1_000
"""``refine: null`` refines a classification above this many features (a regression at any
width). Measured: on 20 informative of 2,000 columns it finds 20 where the search alone finds
17 (4,000 rows, benchmarks/quality.py) and 15 (20,000 rows, benchmarks/gate.py), and 19-20 of
20,000 where it finds 11-15; on the 500-column Madelon table it found 18 where the search alone
finds 19 (interchangeable redundant columns)."""
SCREEN_TERMS = 1024
"""At most this many (multiplier, output) terms: with many classes fewer picks are screened,
so the term matrix (sample rows x terms) stays small."""


def refines(config: Config, n_features: int, task: ResolvedTask) -> bool:
    """Whether the final choice adds the interaction screen and second search (:func:`refined`)."""
    if task == "reconstruction":
        return False
    refine = config.selector.refine
    if refine is not None:
        return refine
    return task == "regression" or n_features > REFINE_ABOVE_FEATURES


def refined(
    model: SelectorModel,
    config: Config,
    task: ResolvedTask,
    x: Tensor,
    y: Tensor | None,
    kept: Tensor,
) -> tuple[Tensor, Tensor]:
    """(k distinct feature indices, their rows' probabilities over all features): the search's
    picks ``kept`` reconsidered beside the features an interaction screen scores best, by
    second searches over the pool. ``x``, ``y`` are the in-memory sample of the training rows."""
    k, n_features = config.selector.fixed_k, x.shape[1]
    searched = distinct_selection(model.selector.probabilities().cpu()).indices
    residual = head_residual(model, task, x[:, searched], y)
    screened = min(MAX_PICKS_SCREENED, max(SCREEN_TERMS // residual.shape[1] - 1, 1))
    scores = interaction_scores(x, residual, kept[:screened])
    scores[kept] = -torch.inf
    extra = min(max(len(searched) - k, k), n_features - k)
    pool = torch.cat([kept, torch.topk(scores, extra).indices]).unique()  # sorted
    logger.info("select: second searches over %d features (%d screened in)", len(pool), extra)
    chosen, pool_probs = second_searches(config, task, x[:, pool], y, residual.shape[1])
    probs = torch.zeros(k, n_features)
    probs[:, pool] = pool_probs
    added = len(set(pool[chosen].tolist()) - set(kept.tolist()))
    logger.info("select: the second searches changed %d of the %d features", added, k)
    return pool[chosen], probs


@torch.no_grad()
def head_residual(
    model: SelectorModel, task: ResolvedTask, picked: Tensor, y: Tensor | None
) -> Tensor:
    """Rows x outputs: what the head, fed the search's features, leaves unexplained (one-hot
    class minus predicted probability; target minus prediction for regression)."""
    assert y is not None, "supervised tasks need a target"
    output = model.head.eval()(picked).float()
    if task == "classification":
        classes = nn.functional.one_hot(y.long(), output.shape[1]).float()
        return classes - output.softmax(dim=1)
    return y.reshape(output.shape).float() - output


@torch.no_grad()
def interaction_scores(x: Tensor, residual: Tensor, picks: Tensor) -> Tensor:
    """One score per feature j: the sum over j alone, j squared and j times each pick i of the
    score statistic (sum of residual * term)^2 / sum of (residual * term)^2, over every output.
    The square finds a symmetric effect such as 20 (x_j - 0.5)^2, which has no linear part for
    the other terms to see."""
    centred = x[:, picks] - x[:, picks].mean(dim=0)
    multipliers = torch.cat([torch.ones(x.shape[0], 1), centred], dim=1)
    # One column per (multiplier, output): residual * 1 and residual * x_i.
    weights = (multipliers[:, :, None] * residual[:, None, :]).flatten(1)
    scores = torch.empty(x.shape[1])
    for start in range(0, x.shape[1], SCREEN_COLUMNS):
        block = x[:, start : start + SCREEN_COLUMNS].float()
        block = block - block.mean(dim=0)
        block_squared = block.square()
        squares = block_squared - block_squared.mean(dim=0)  # the term "j squared", centred
        numerator = torch.cat([(weights.T @ block).square(), (residual.T @ squares).square()])
        denominator = torch.cat(
            [weights.square().T @ block_squared, residual.square().T @ squares.square()]
        )
        scores[start : start + block.shape[1]] = (numerator / denominator.clamp_min(1e-12)).sum(0)
    return scores


def second_searches(
    config: Config, task: ResolvedTask, x: Tensor, y: Tensor | None, n_outputs: int
) -> tuple[Tensor, Tensor]:
    """(k pool columns, a row of probabilities over the pool for each).

    SECOND_SEARCHES supervised searches (seeds ``training.seed`` + 0, 1, ...; ``len(pool) / 2``
    selector rows each) over the pool, trained on the sample in memory. Each rates its rows'
    features by :func:`cae_ray.selector.ranking.importance`, and so does a head fed the whole
    pool (:func:`whole_pool_rises`); the k with the largest total are kept. One search's ranking
    is noisy here: the head has seen the very rows it is rated on, and the last few informative
    features add little each. Noise features it over-fits differ from seed to seed; informative
    ones rate high in every search.
    """
    k, width = config.selector.fixed_k, x.shape[1]
    rows_each = min(max(math.ceil(width / 2), k), width)
    selector = config.selector.model_copy(update={"dim_ip": None})  # full rank over the pool
    total = torch.zeros(width)
    rows: list[Tensor] = []
    epochs = 1
    for offset in range(SECOND_SEARCHES):
        training = config.training.model_copy(update={"seed": config.training.seed + offset})
        seeded = config.model_copy(update={"selector": selector, "training": training})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeded.training.seed)
            model = build_model(seeded, width, task, n_outputs, rows=rows_each)
            epochs = max(epochs, len(fit_in_memory(model, seeded, task, x, y).history))
        probs = model.selector.probabilities().detach()
        indices = distinct_selection(probs).indices
        # Below zero, the head never learned this row's feature (a row that gave way in a
        # collision and now feeds it a feature it was not trained on): that rates it 0.
        rises = importance(model.eval(), task, x, y, indices).clamp_min(0.0)
        total.index_add_(0, indices, rises)
        rows.append(probs)
    total += whole_pool_rises(config, task, x, y, n_outputs, epochs)
    chosen = torch.argsort(total, descending=True, stable=True)[:k]
    every_row = torch.cat(rows)
    best_rows = every_row[:, chosen].argmax(dim=0)
    return chosen, every_row[best_rows]


def whole_pool_rises(
    config: Config, task: ResolvedTask, x: Tensor, y: Tensor | None, n_outputs: int, epochs: int
) -> Tensor:
    """Each pool column's :func:`~cae_ray.selector.ranking.importance` (0 at least) to a head fed
    the whole pool, trained as long as the longest second search.

    A selector row finds a feature by the gradient of its soft mixture of features, and a
    symmetric effect gives that gradient nothing to follow: on the regression table of
    benchmarks/peers.py the screen put both columns of 20 (x - 0.5)^2 in the pool, and no second
    search ever picked one of them. A head that sees the column learns it, while the pool's noise
    columns rate 0 here as well.
    """
    width = x.shape[1]
    training = config.training.model_copy(
        update={"seed": config.training.seed + SECOND_SEARCHES, "epochs": epochs}
    )
    selector = config.selector.model_copy(update={"early_stop": False})  # nothing to converge
    seeded = config.model_copy(update={"selector": selector, "training": training})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training.seed)
        model = SelectorModel(EveryColumn(width), build_head(config.head, width, n_outputs))
        fit_in_memory(model, seeded, task, x, y)
    return importance(model.eval(), task, x, y, torch.arange(width)).clamp_min(0.0)
