"""Griffe extension for the API reference: the package's docstrings use Sphinx roles
(:class:`Config`, :mod:`cae_ray.selector.refine`), which Markdown would show as written; each
becomes the code span it stands for."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`")


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
