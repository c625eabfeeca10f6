"""What a bad day must not break: errors that cross Ray, checkpoints that hold code or come
from another config, run dirs that cannot be written, deleted artifacts, values that are not
numbers, and environment variables in a config. Each was a finding of a fault sweep."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cae_ray.config import load_config, validate_config
from cae_ray.errors import (
    EXIT_CONFIG,
    EXIT_INPUT,
    CaeRayError,
    InfiniteValuesError,
    RunDirError,
    exit_code,
)
from cae_ray.pipeline import prepare, select, validate
from cae_ray.runtime.errors import CheckpointRejectedError
from tests.conftest import RAY_TEST_ENV

ROOT = Path(__file__).resolve().parent.parent


def error_modules() -> list[Any]:
    """``cae_ray.errors`` and every folder's own ``errors`` module (errors live beside their
    folder): found on disk, so a new one is checked too."""
    names = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in sorted((ROOT / "cae_ray").rglob("errors.py"))
    ]
    assert "cae_ray.feast.errors" in names and "cae_ray.errors" in names
    return [importlib.import_module(name) for name in names]


def every_error_class() -> list[type[CaeRayError]]:
    found = []
    for module in error_modules():
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, CaeRayError) and value.__module__ == module.__name__:
                found.append(value)
    return found


def placeholder(annotation: Any) -> Any:
    """A value of the annotated type, to build any error without knowing its arguments."""
    text = str(annotation)
    if "dict" in text:
        return {"view": ["f"]}
    if "Sequence" in text or "list" in text:
        return ["a", "b"]
    if text in ("int", "float") or "int |" in text or "float" in text:
        return 3
    if text == "bool":
        return True
    return "x"


def build(cls: type[CaeRayError]) -> CaeRayError:
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    arguments = [placeholder(p.annotation) for p in parameters if p.default is p.empty]
    return cls(*arguments)


def test_every_error_survives_pickling_with_its_message_and_exit_code() -> None:
    """Ray hands a worker's exception to the driver pickled; a custom __init__ broke that."""
    classes = every_error_class()
    assert len(classes) > 30
    for cls in classes:
        error = build(cls)
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is cls
        assert str(again) == str(error) and again.__dict__ == error.__dict__
        assert exit_code(again) == exit_code(error)


def table(rows: int = 200, **extra: Any) -> pa.Table:
    rng = np.random.default_rng(0)
    columns = {f"f_{j}": rng.normal(size=rows) for j in range(6)}
    return pa.table({**columns, "label": rng.integers(0, 2, rows), **extra})


def write_config(tmp_path: Path, data: pa.Table, **sections: Any) -> tuple[Path, dict[str, Any]]:
    pq.write_table(data, tmp_path / "data.parquet")
    config = {
        "data": {"path": str(tmp_path / "data.parquet"), "features": "f_*", "target": "label"},
        "selector": {"k": 2},
        "training": {"epochs": 3, "batch_size": 32},
        "scaling": {"num_workers": 0},
        "validation": {"bootstrap": 50, "epochs": 2, "tolerance": 1.0},
        **sections,
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))  # YAML reads JSON
    return path, config


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cae_ray.cli", *args],
        cwd=cwd,
        env={**os.environ, **RAY_TEST_ENV, "COLUMNS": "1000", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_k_above_the_features_is_refused_before_ray_starts(tmp_path) -> None:
    # An unreachable cluster: had the check waited for Ray, this would exit 4, not 3.
    path, _ = write_config(tmp_path, table(), selector={"k": 6})
    done = cli("select", str(path), "--run-dir", "run", cwd=tmp_path, RAY_ADDRESS="127.0.0.1:1")
    assert done.returncode == EXIT_INPUT, done.stderr
    assert "k=6 but only 6 usable candidate features" in done.stderr
    assert not (tmp_path / "run" / "data").exists()


@pytest.mark.parametrize("problem", ["a file", "read-only"])
def test_a_run_dir_that_cannot_hold_the_run_is_exit_2_with_its_path(tmp_path, problem) -> None:
    path, _ = write_config(tmp_path, table())
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "cae_ray.cli", "select", str(path), "--run-dir", str(run_dir)]
    if problem == "a file":
        run_dir.write_text("not a directory")
    else:
        from tests.test_feast_prune import unprivileged

        run_dir.mkdir()
        run_dir.chmod(0o555)
        command = unprivileged(command)
    try:
        done = subprocess.run(
            command,
            env={**os.environ, **RAY_TEST_ENV, "COLUMNS": "1000", "RAY_ADDRESS": "127.0.0.1:1"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        if run_dir.is_dir():
            run_dir.chmod(0o755)
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert f"the run dir {run_dir}" in done.stderr and "Traceback" not in done.stderr
    assert exit_code(RunDirError(str(run_dir), "x")) == EXIT_CONFIG


@pytest.mark.ray
def test_infinite_values_are_named_by_the_statistics_pass(ray_cluster, tmp_path) -> None:
    values = np.zeros(200)
    values[[3, 7]] = np.inf
    _, config = write_config(tmp_path, table(f_inf=values))
    with pytest.raises(InfiniteValuesError, match=r"'f_inf' \(2\).*Fix: replace them"):
        prepare(validate_config(config), tmp_path / "run")
    assert not (tmp_path / "run" / "data" / "train").exists()


@pytest.mark.ray
def test_a_deleted_split_is_prepared_again_not_reused(ray_cluster, tmp_path) -> None:
    _, config = write_config(tmp_path, table())
    cfg = validate_config(config)
    first = prepare(cfg, tmp_path / "run")
    for part in (tmp_path / "run" / "data" / "train").iterdir():
        part.unlink()
    again = prepare(cfg, tmp_path / "run")
    assert again.rows == first.rows
    assert any((tmp_path / "run" / "data" / "train").glob("*.parquet"))
    select(cfg, tmp_path / "run")
    assert validate(cfg, tmp_path / "run").passed


@pytest.mark.ray
def test_a_changed_config_trains_afresh_instead_of_resuming(ray_cluster, tmp_path, caplog) -> None:
    _, config = write_config(tmp_path, table(), selector={"k": 3})
    select(validate_config(config), tmp_path / "run")
    config["selector"] = {"k": 2}
    with caplog.at_level("WARNING", logger="cae_ray"):
        selection = select(validate_config(config), tmp_path / "run")
    assert selection.k == 2 and len(selection.selected_features) == 2
    assert "starting afresh" in caplog.text
    assert len(list((tmp_path / "run" / "ray").glob("select-*"))) == 1


@pytest.mark.ray
@pytest.mark.parametrize("workers", [0, 1])
def test_a_checkpoint_that_holds_code_is_refused_and_never_run(
    ray_cluster, tmp_path, workers: int
) -> None:
    """Train local mode reads our own copy of the checkpoint; a worker group, Ray's (and the
    worker's error reaches the driver as itself, not wrapped by Ray)."""
    scaling: dict[str, Any] = {"num_workers": workers, "max_failures": 0}
    if workers:
        scaling["resources_per_worker"] = {"CPU": 1}
    _, config = write_config(tmp_path, table(), scaling=scaling)
    cfg = validate_config(config)
    select(cfg, tmp_path / "run")
    (tmp_path / "run" / "selection.json").unlink()  # so select trains (and resumes) again
    states = list((tmp_path / "run" / "ray").glob("select-*/**/state.pt"))
    assert states
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    for state in states:
        state.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(CheckpointRejectedError, match="tensors and plain data only"):
        select(cfg, tmp_path / "run")
    assert not marker.exists()


def test_environment_values_are_substituted_after_parsing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CAE_REPO", "repo #1\nk: 7")
    monkeypatch.setenv("CAE_K", "4")
    path = tmp_path / "c.yaml"
    path.write_text("feast:\n  repo: ${CAE_REPO}\n  features: [v]\nselector:\n  k: ${CAE_K}\n")
    config = load_config(path)
    assert config.feast is not None and config.feast.repo == "repo #1\nk: 7"
    assert config.selector.k == 4


@pytest.mark.parametrize(
    ("yaml_text", "problem"),
    [
        ("selector: {k: true}", "selector.k: should be a whole number of features"),
        ("selector: {k: 2.0}", "selector.k: should be a whole number of features"),
        ("validation: {tolerance: .inf}", "validation.tolerance: Input should be a finite"),
        ("validation: {baseline: .nan}", "validation.baseline"),
    ],
)
def test_values_that_are_not_what_they_look_like_are_refused(
    tmp_path, yaml_text: str, problem: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text + "\n")
    done = cli("config", "check", str(path), cwd=tmp_path)
    assert done.returncode == EXIT_CONFIG, done.stdout
    assert problem in done.stderr
