"""Feast integration: export training rows from a feature store; mark unselected features."""

from __future__ import annotations

import warnings
from types import ModuleType


def import_feast() -> ModuleType:
    """``import feast``, keeping the warning filters as they were: feast's modules call
    ``warnings.simplefilter("once", DeprecationWarning)`` when imported, which made every
    library's deprecation warnings (Ray Data's own among them) show in the CLI's output."""
    with warnings.catch_warnings():
        import feast
    return feast
