"""``python -m cae_ray.cli``."""

from cae_ray.cli import main

main()
