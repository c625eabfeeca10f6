"""The model behind the selector: a decoder (reconstruction), a classifier or a regressor.

All three share one shape, the IP-CAE paper's decoder: per hidden layer Linear, LayerNorm,
LeakyReLU(0.2), Dropout; then a Linear to the outputs. Only the output size and the loss differ.
The validation gate's ``mlp`` fits the same head without a selector (:mod:`cae_ray.gate.mlp`).

``k`` is always the user's K. A supervised search trains more selector rows than that
(:func:`search_rows`, decided here and nowhere else); :mod:`cae_ray.selector.ranking` keeps the k
the head relies on most, and :func:`cae_ray.selector.choose.choose_k` returns the final K.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cae_ray.config import Config, HeadConfig
from cae_ray.selector.concrete import FULL_RANK_MAX_FEATURES, BaseConcreteSelector, build_selector
from cae_ray.selector.targets import ResolvedTask


def build_head(config: HeadConfig, n_inputs: int, n_outputs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_inputs
    for hidden in config.hidden:
        layers += [
            nn.Linear(width, hidden),
            nn.LayerNorm(hidden),
            nn.LeakyReLU(0.2),
            nn.Dropout(config.dropout),
        ]
        width = hidden
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


class SelectorModel(nn.Module):
    """Selector followed by a head; ``forward(x, temperature)`` returns the head's output."""

    def __init__(self, selector: BaseConcreteSelector, head: nn.Module) -> None:
        super().__init__()
        self.selector: BaseConcreteSelector = selector
        self.head = head

    def forward(self, x: Tensor, temperature: float = 1.0) -> Tensor:
        return self.head(self.selector(x, temperature))


def task_loss(task: ResolvedTask, output: Tensor, x: Tensor, y: Tensor | None) -> Tensor:
    """Mean loss of one batch: MSE to x (reconstruction) or to y (regression), CE for classes."""
    if task == "reconstruction":
        return nn.functional.mse_loss(output, x)
    assert y is not None, "supervised tasks need a target"
    if task == "classification":
        return nn.functional.cross_entropy(output, y)
    return nn.functional.mse_loss(output, y.reshape(output.shape))


def search_rows(config: Config, n_features: int, task: ResolvedTask) -> int:
    """Selector rows to train: k for reconstruction, ceil(search_factor * k) when supervised.

    Spare rows let a supervised selector find features that only help in combination with
    others; :func:`cae_ray.selector.ranking.rows_by_importance` then keeps the k the head relies
    on most.
    """
    k = config.selector.fixed_k
    if task == "reconstruction":
        return k
    factor = config.selector.search_factor or auto_search_factor(n_features)
    return min(math.ceil(factor * k), n_features)


def auto_search_factor(n_features: int) -> float:
    """``search_factor`` when null: 2 up to 2,048 features, 4 above. With 20 informative of
    20,000 columns (9 of them with no signal on their own) 4 found 13-15 where 2 found 11-12
    (benchmarks/scale.py); on MNIST's 784 pixels 2 is better (see docs/how-it-works.md)."""
    return 2.0 if n_features <= FULL_RANK_MAX_FEATURES else 4.0


def build_model(
    config: Config, n_features: int, task: ResolvedTask, n_outputs: int, rows: int | None = None
) -> SelectorModel:
    """The selector (``rows`` selector rows; default :func:`search_rows`) and its head."""
    rows = search_rows(config, n_features, task) if rows is None else rows
    selector = build_selector(config.selector, n_features, rows)
    outputs = n_features if task == "reconstruction" else n_outputs
    return SelectorModel(selector, build_head(config.head, rows, outputs))


def build_optimizer(
    model: SelectorModel, config: Config, task: ResolvedTask
) -> torch.optim.Optimizer:
    """Adam; for supervised tasks the head gets decoupled weight decay (AdamW) so it cannot
    memorise the training rows, which would starve the selector of gradient. The selector learns
    at ``selector.learning_rate_ratio`` times the head's rate.

    The multi-tensor (``foreach``) implementation gives bit-identical results to PyTorch's CPU
    default (one parameter at a time) in about a third of the time: on a 16,000 x 256 W the
    default's step took a quarter of the training step. (The fused one is ~10x faster still
    but rounds differently from the default, so documented selections would change.)"""
    decay = 0.0 if task == "reconstruction" else config.head.weight_decay
    rate = config.training.learning_rate
    return torch.optim.AdamW(
        [
            {
                "params": model.selector.parameters(),
                "weight_decay": 0.0,
                "lr": rate * config.selector.learning_rate_ratio,
            },
            {"params": model.head.parameters(), "weight_decay": decay},
        ],
        lr=rate,
        foreach=True,
    )
