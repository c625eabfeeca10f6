"""The registry side without torch and Ray: `pip install cae-ray` with no extra, as the CI of a
Feast repo that cae-ray prunes installs it (its definitions import the overlay hook).

The first test runs here. The others use a venv with only that light install in it
(``.venv-light``, which `make test` makes; ``CAE_RAY_LIGHT_VENV`` names another): a run trained
in this venv is pruned, applied, checked and restored there, through the real `cae-ray` and
`feast` commands, as a Feast repo's CI and a platform's registry job would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.feast_repo import FeastRepo, make_definitions_repo, make_feast_repo

REGISTRY_SIDE = [
    "cae_ray",
    "cae_ray.cli",
    "cae_ray.pipeline",
    "cae_ray.feast.overlay",
    "cae_ray.feast.registry",
    "cae_ray.feast.retire",
    "cae_ray.feast.status",
]
"""What the overlay hook and the registry-side commands import."""
TRAIN_ONLY = ["torch", "ray", "sklearn", "scipy", "matplotlib"]
"""What only the train extra brings."""


def test_the_registry_side_imports_nothing_of_the_train_extra() -> None:
    code = (
        f"import sys, {', '.join(REGISTRY_SIDE)}\n"
        f"print(sorted(m for m in {TRAIN_ONLY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def light() -> Path:
    venv = ROOT / os.environ.get("CAE_RAY_LIGHT_VENV", ".venv-light")
    if not (venv / "bin" / "cae-ray").exists():
        pytest.skip(f"no light install at {venv}: `make test` (or `make test-light`) makes it")
    return venv


def command(venv: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``args[0]`` from ``venv``'s bin folder (``cae-ray``, ``feast``, ``python``)."""
    program = str(venv / "bin" / args[0])
    return subprocess.run(
        [program, *args[1:]], cwd=cwd, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def trained(ray_cluster, tmp_path_factory) -> tuple[Path, Path, FeastRepo]:
    """A config file, a validated run dir (trained in this venv, with torch and Ray) and the
    Feast repo it selects from: defined in Python, with the overlay hook."""
    from cae_ray.pipeline import export, select, validate
    from tests.test_feast_prune import run_config

    directory = tmp_path_factory.mktemp("light")
    data = make_feast_repo(directory, n_drivers=200)
    repo = FeastRepo(make_definitions_repo(directory, data), data.entities, data.n_drivers)
    run = directory / "run"
    config = run_config(repo, run)
    export(config, run)
    select(config, run)
    assert validate(config, run).passed
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path, run, repo


@pytest.mark.feast
def test_the_light_install_has_no_torch_and_no_ray(light) -> None:
    code = f"import importlib.util as u; print([m for m in {TRAIN_ONLY!r} if u.find_spec(m)])"
    done = command(light, "python", "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def marks(repo: Path) -> dict[str, Any]:
    """The registry's view tags and services, read by a fresh FeatureStore in this venv."""
    from tests.test_feast_prune import registry_state

    return registry_state(FeastRepo(repo, repo, 0))


@pytest.mark.feast
@pytest.mark.ray
def test_prune_apply_check_and_restore_in_the_light_install(light, trained) -> None:
    config, run, repo = trained
    before = marks(repo.path)

    pruned = command(light, "cae-ray", "prune", str(config), "--run-dir", str(run), "--apply")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    plan = json.loads((run / "prune.json").read_text())
    assert plan["applied"] and any(plan["deprecate"].values())
    marked = marks(repo.path)
    assert marked != before

    # The repo's own CI: `feast apply` then `feast plan`, with only the light install.
    applied = command(light, "feast", "apply", cwd=repo.path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    planned = command(light, "feast", "plan", cwd=repo.path)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "No changes to registry" in planned.stdout
    assert marks(repo.path) == marked
    checked = command(light, "cae-ray", "feast", "check", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    undone = command(
        light, "cae-ray", "restore", "--repo", str(repo.path), "--run-id", plan["run_id"]
    )
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert command(light, "feast", "apply", cwd=repo.path).returncode == 0
    assert marks(repo.path) == before


@pytest.mark.feast
def test_training_commands_name_the_train_extra(light, tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": str(tmp_path), "target": "y"}}))
    fix = "pip install 'cae-ray[train]'"
    for args in (
        ["select", str(config), "--run-dir", str(tmp_path / "run")],
        ["run", str(config), "--run-dir", str(tmp_path / "run")],
        ["demo", "--dir", str(tmp_path / "demo")],
    ):
        done = command(light, "cae-ray", *args)
        said = " ".join(done.stderr.split())  # rich wraps long lines
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert fix in said and "'torch'" in said, (args, said)
    code = "import cae_ray; cae_ray.ConcreteFeatureSelector"
    done = command(light, "python", "-c", code)
    assert "MissingExtraError" in done.stderr and fix in done.stderr
    assert not (tmp_path / "demo").exists()
