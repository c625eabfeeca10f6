"""``python -m cae_ray.cli``."""

from cae_ray.cli import app

app()
