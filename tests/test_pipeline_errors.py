"""Bad input to `select`: a typed error that names the problem, and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cae_ray.config import validate_config
from cae_ray.errors import (
    EXIT_CLUSTER,
    EXIT_CONFIG,
    CaeRayError,
    DatasetNotFoundError,
    EmptyDatasetError,
    MissingColumnError,
    MissingDataConfigError,
    NoFeaturesMatchedError,
    NonNumericColumnsError,
    NullValuesRefusedError,
    TargetTaskMismatchError,
    TooFewFeaturesError,
    exit_code,
)
from cae_ray.pipeline import select
from cae_ray.runtime.errors import GpuUnavailableError
from cae_ray.selector.errors import MemoryBudgetError
from tests.conftest import RAY_TEST_ENV


def table(rows: int = 50, **extra: Any) -> pa.Table:
    rng = np.random.default_rng(0)
    columns = {f"f_{j}": rng.normal(size=rows) for j in range(5)}
    return pa.table({**columns, "label": rng.integers(0, 2, rows), **extra})


def write(tmp_path: Path, data: pa.Table) -> Path:
    path = tmp_path / "data.parquet"
    pq.write_table(data, path)
    return path


def run(tmp_path: Path, data: dict[str, Any], **sections: Any) -> None:
    config = validate_config({"data": data, "selector": {"k": 2}, **sections})
    select(config, tmp_path / "run")


FAST_ERRORS = [
    ("missing path", None, {"path": "/nonexistent/wide"}, DatasetNotFoundError, "nonexistent"),
    ("empty", table(0), {}, EmptyDatasetError, "no rows"),
    ("no match", table(), {"features": "g_*"}, NoFeaturesMatchedError, "'g_\\*'.*f_0"),
    (
        "strings",
        table(city=["x"] * 50),
        {"features": ["f_0", "city"]},
        NonNumericColumnsError,
        "'city' \\(string\\)",
    ),
    ("no target", table(), {"target": "lable"}, MissingColumnError, "did you mean 'label'"),
    ("no feature", table(), {"features": ["f_0", "f_9"]}, MissingColumnError, "'f_9'"),
]


@pytest.mark.parametrize(
    ("data", "settings", "error", "match"),
    [case[1:] for case in FAST_ERRORS],
    ids=[case[0] for case in FAST_ERRORS],
)
def test_bad_dataset_is_refused_before_any_work(tmp_path, data, settings, error, match) -> None:
    path = write(tmp_path, data) if data is not None else None
    with pytest.raises(error, match=match):
        run(tmp_path, {"path": str(path), "target": "label", **settings})
    assert not (tmp_path / "run").exists()


def test_missing_data_section(tmp_path: Path) -> None:
    with pytest.raises(MissingDataConfigError, match="names no dataset"):
        select(validate_config({}), tmp_path / "run")


@pytest.mark.ray
@pytest.mark.parametrize(
    ("data", "sections", "error", "match"),
    [
        (
            table(f_9=pa.array([None] * 50, pa.float64())),
            {"data_policy": "refuse"},
            NullValuesRefusedError,
            "'f_9' \\(50 nulls\\).*null_policy",
        ),
        (table(), {"k": 5}, TooFewFeaturesError, "k=5 but only 5"),
        (
            table(f_const=np.ones(50)),
            {"k": 5},
            TooFewFeaturesError,
            "after dropping 1 constant column.*'f_const'",
        ),
        (table(), {"gpu": True}, GpuUnavailableError, "asks for 1 GPU"),
        (
            table(label=np.full(50, 3.5)),
            {},
            TargetTaskMismatchError,
            "regression.*a constant target \\(every row is 3.5\\).*varies between rows",
        ),
    ],
    ids=["nulls refused", "k too large", "k too large after constants", "no gpu", "constant y"],
)
def test_bad_dataset_found_by_statistics(ray_cluster, tmp_path, data, sections, error, match):
    path = write(tmp_path, data)
    config = validate_config(
        {
            "data": {
                "path": str(path),
                "target": "label",
                "null_policy": sections.get("data_policy", "mean"),
            },
            "selector": {"k": sections.get("k", 2)},
            "scaling": {"use_gpu": sections.get("gpu", False)},
        }
    )
    with pytest.raises(error, match=match):
        select(config, tmp_path / "run")
    assert not (tmp_path / "run" / "selection.json").exists()
    assert not (tmp_path / "run" / "data" / "train").exists()


def test_unreachable_ray_address_fails_fast_with_exit_4(tmp_path: Path) -> None:
    path = write(tmp_path, table())
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{path: {path}, target: label}}\nselector: {{k: 2}}\n")
    env = {**os.environ, **RAY_TEST_ENV, "RAY_ADDRESS": "127.0.0.1:1"}
    done = subprocess.run(
        [sys.executable, "-m", "cae_ray.cli", "select", str(config), "--run-dir", "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == EXIT_CLUSTER, done.stderr
    assert "cannot connect to the Ray cluster at '127.0.0.1:1'" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "data.parquet"]


def test_every_error_is_a_cae_ray_error() -> None:
    for _, _, _, error, _ in FAST_ERRORS:
        assert issubclass(error, CaeRayError)


def test_a_model_too_big_for_memory_is_refused_before_training(ray_cluster, tmp_path) -> None:
    path = write(tmp_path, table())
    config = validate_config(
        {
            "data": {"path": str(path), "target": "label"},
            "selector": {"k": 2, "dim_ip": 10**8},
            "training": {"memory_limit_gb": 1},
        }
    )
    with pytest.raises(MemoryBudgetError, match=r"more than the limit of 1\.00 GB.*dim_ip: 1024"):
        select(config, tmp_path / "run")
    assert not (tmp_path / "run" / "selection.json").exists()
    assert not (tmp_path / "run" / "ray").exists()  # no worker was started
    assert exit_code(MemoryBudgetError("", "", "", "", "", "")) == EXIT_CONFIG
