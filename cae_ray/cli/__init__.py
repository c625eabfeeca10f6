"""`cae-ray`: the command line. Thin: each command parses, calls :mod:`cae_ray.pipeline`, and
prints. One module per command group, like Feast's CLI: :mod:`~cae_ray.cli.run` (demo, run),
:mod:`~cae_ray.cli.steps` (export, select, validate, prune, retire, restore),
:mod:`~cae_ray.cli.feast` (feast status, check, remove-services), :mod:`~cae_ray.cli.config`.
Errors become exit codes in one place (:func:`cae_ray.cli.output.exits_on_error`); the codes
are :data:`cae_ray.errors.EXIT_CODES`.
"""

from cae_ray.cli import config, feast, run, steps
from cae_ray.cli.app import app

__all__ = ["app", "config", "feast", "run", "steps"]
