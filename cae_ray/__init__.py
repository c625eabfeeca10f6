"""cae-ray: Concrete Autoencoder feature selection (CAE, IP-CAE) for wide feature tables."""

from cae_ray.config import Config, load_config
from cae_ray.errors import CaeRayError
from cae_ray.estimator import ConcreteFeatureSelector

__all__ = ["CaeRayError", "ConcreteFeatureSelector", "Config", "load_config"]
__version__ = "0.1.0"
