"""The model behind the selector: a decoder (reconstruction), a classifier or a regressor.

All three share one shape, the IP-CAE paper's decoder: per hidden layer Linear, LayerNorm,
LeakyReLU(0.2), Dropout; then a Linear to the outputs. Only the output size and the loss differ.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from cae_ray.config import HeadConfig
from cae_ray.selectors import BaseConcreteSelector

ResolvedTask = Literal["reconstruction", "classification", "regression"]


def build_head(config: HeadConfig, k: int, n_outputs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = k
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
