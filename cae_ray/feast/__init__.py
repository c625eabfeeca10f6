"""Feast integration: export training rows from a feature store; mark unselected features."""

from __future__ import annotations

import warnings
from types import ModuleType

from cae_ray.versions import warn_if_untested


def import_feast() -> ModuleType:
    """``import feast``, keeping the warning filters as they were: feast's modules call
    ``warnings.simplefilter("once", DeprecationWarning)`` when imported, which made every
    library's deprecation warnings (Ray Data's own among them) show in the CLI's output."""
    with warnings.catch_warnings():
        import feast
    warn_if_untested("feast")
    return feast


def restore_command(repo: object, run_id: str) -> str:
    """The command that undoes run ``run_id``'s prune or retirement in the Feast repo ``repo``:
    what the CLI, the run's summary, the report and the errors tell a user to type."""
    return f"cae-ray restore --repo {repo} --run-id {run_id}"
