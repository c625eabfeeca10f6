"""cae-ray: Concrete Autoencoder feature selection (CAE, IP-CAE) for wide feature tables."""

from typing import Any

from cae_ray.config import Config, load_config
from cae_ray.errors import CaeRayError
from cae_ray.estimator import ConcreteFeatureSelector

__all__ = [
    "CaeRayError",
    "ConcreteFeatureSelector",
    "Config",
    "export",
    "load_config",
    "prepare",
    "run",
    "select",
    "validate",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The run steps import Ray; load them on first use so `import cae_ray` stays light.
    if name in ("export", "prepare", "run", "select", "validate"):
        from cae_ray import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'cae_ray' has no attribute {name!r}")
