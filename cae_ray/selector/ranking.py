"""After a search: which of its selector rows the model relies on most.

A supervised search trains more selector rows than the user's k (:func:`cae_ray.selector.model.
search_rows`); each row's feature is rated by how much the head's loss rises when that feature is
replaced by its mean (:func:`importance`), and the k most important are kept
(:func:`search_selection`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cae_ray.selector.concrete import distinct_selection
from cae_ray.selector.model import SelectorModel, task_loss
from cae_ray.selector.targets import ResolvedTask


def rows_by_importance(
    model: SelectorModel, task: ResolvedTask, x: Tensor, y: Tensor | None, indices: Tensor
) -> Tensor:
    """Selector rows, most important first (see :func:`importance`)."""
    rises = importance(model, task, x, y, indices)
    return torch.argsort(rises, descending=True, stable=True)


@torch.no_grad()
def importance(
    model: SelectorModel, task: ResolvedTask, x: Tensor, y: Tensor | None, indices: Tensor
) -> Tensor:
    """Per selector row, how much the head's loss rises when the row's feature (``indices``,
    one per row) is replaced by its mean."""
    head = model.head.eval()
    picked = x[:, indices.to(x.device)]
    base = task_loss(task, head(picked), x, y)  # x: what a reconstruction reconstructs
    rises = torch.empty(picked.shape[1])
    for row in range(picked.shape[1]):
        column = picked[:, row].clone()
        picked[:, row] = column.mean()
        rises[row] = task_loss(task, head(picked), x, y) - base
        picked[:, row] = column
    return rises


@torch.no_grad()
def search_selection(
    model: SelectorModel, task: ResolvedTask, k: int, x: Tensor, y: Tensor | None
) -> tuple[Tensor, Tensor, int]:
    """The search's own k: (k distinct feature indices, the kept rows' probabilities, collisions
    resolved).

    After a supervised search over spare rows, keeps the k features the head relies on most,
    measured on the sample ``x``, ``y`` (unused when the selector has exactly k rows).
    """
    probs = model.selector.probabilities().cpu()
    selection = distinct_selection(probs)
    if probs.shape[0] == k:
        return selection.indices, probs, selection.collisions
    keep = rows_by_importance(model.cpu(), task, x, y, selection.indices)[:k]
    return selection.indices[keep], probs[keep], selection.collisions
