"""What the ``train`` extra adds, and the check that names it when it is missing.

``pip install cae-ray`` is the registry side: the Feast overlay hook and the commands that
read a run dir and write the registry (prune, restore, retire, ``feast ...``, ``config ...``).
Training, validation, export and the report need ``pip install "cae-ray[train]"`` (torch,
Ray, scikit-learn, matplotlib). Each of those entry points calls :func:`require_train` first,
so a light install fails with the fix, not with a ``ModuleNotFoundError`` from deep inside.
"""

from __future__ import annotations

import importlib.util

from cae_ray.errors import MissingExtraError

TRAIN_MODULES = {
    "torch": "torch",
    "ray": "ray",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
}
"""Module -> the distribution that provides it, for each package only the train extra brings."""


def missing_train_packages() -> list[str]:
    return [
        dist for module, dist in TRAIN_MODULES.items() if importlib.util.find_spec(module) is None
    ]


def require_train(what: str) -> None:
    """Raise :class:`MissingExtraError` naming ``cae-ray[train]`` when ``what`` (a command, a
    step, a class) cannot run here because the train extra is not installed."""
    missing = missing_train_packages()
    if missing:  # the first one named; the extra brings them all
        raise MissingExtraError(what, missing[0], "train")
