"""The documentation site's hooks (docs/hooks/): the generated pages cover the code, and the
stale-reference check tells a name that is there from one that moved. `make docs` builds the
whole site strictly; these hold the hooks' own logic."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from cae_ray.config import Config
from tests.conftest import ROOT


def _hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "hooks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_reference_has_every_key_with_its_docstring() -> None:
    generated = _hook("generated")
    page = generated.config_reference()
    for name, field in Config.model_fields.items():
        (section,) = generated._models(field.annotation)
        for key, setting in section.model_fields.items():
            row = next(line for line in page.splitlines() if line.startswith(f"| `{name}.{key}` |"))
            assert " ".join(setting.description.split())[:40] in row.replace("\\|", "|"), key


def test_the_error_table_has_every_error_class_with_its_exit_code() -> None:
    from cae_ray.errors import CaeRayError
    from cae_ray.feast.errors import FeastError
    from cae_ray.storage.errors import StorageError

    table = _hook("generated").errors()
    for cls in (CaeRayError, FeastError, StorageError):
        for error in cls.__subclasses__():
            assert f"| `{error.__name__}` <br>" in table, error
            row = next(line for line in table.splitlines() if f"`{error.__name__}`" in line)
            assert f"| {error.exit_code} (" in row, row


@pytest.mark.parametrize(
    ("name", "there"),
    [
        ("cae_ray.pipeline.run", True),
        ("cae_ray.ConcreteFeatureSelector", True),  # lazy: only in __all__ and TYPE_CHECKING
        ("cae_ray.config.SelectorConfig.check_fits", True),
        ("cae_ray.feast.overlay", True),
        ("cae_ray.pipeline.walk", False),
        ("cae_ray.config.SelectorConfig.nothing", False),
        ("cae_ray.selector_that_moved.loop", False),
    ],
)
def test_a_stale_reference_is_told_from_a_current_one(name: str, there: bool) -> None:
    assert _hook("references").resolves(name) is there
