"""cae-ray: Concrete Autoencoder feature selection (CAE, IP-CAE) for wide feature tables.

``import cae_ray`` is light (no torch, Ray, Feast or scikit-learn): the names below are loaded
on first use. ``pip install cae-ray`` is the registry side (the Feast overlay hook, prune,
restore, retire); training needs ``pip install "cae-ray[train]"`` (:mod:`cae_ray.extras`).
"""

from typing import TYPE_CHECKING, Any

from cae_ray.config import Config, load_config
from cae_ray.errors import CaeRayError
from cae_ray.version import __version__

if TYPE_CHECKING:
    from cae_ray.pipeline import export, prepare, run, select, validate
    from cae_ray.selector.estimator import ConcreteFeatureSelector

__all__ = [
    "CaeRayError",
    "ConcreteFeatureSelector",
    "ConcreteFeatureSelectorCV",
    "Config",
    "__version__",
    "export",
    "load_config",
    "prepare",
    "run",
    "select",
    "validate",
]


def __dir__() -> list[str]:
    """The public names (the lazy ones included), not this module's own imports."""
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    if name == "ConcreteFeatureSelector":
        from cae_ray.extras import require_train

        require_train("cae_ray.ConcreteFeatureSelector")
        from cae_ray.selector.estimator import ConcreteFeatureSelector

        return ConcreteFeatureSelector
    if name == "ConcreteFeatureSelectorCV":
        from cae_ray.extras import require_train

        require_train("cae_ray.ConcreteFeatureSelectorCV")
        from cae_ray.gate.selector_cv import ConcreteFeatureSelectorCV

        return ConcreteFeatureSelectorCV
    if name in ("export", "prepare", "run", "select", "validate"):
        from cae_ray import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'cae_ray' has no attribute {name!r}")
