"""`cae-ray init` on real Feast repos (the demo's, and one with two views and a label view),
and the three commands of the README's quickstart through the real program: init, config
check, run. The run also shows that a default run prints only cae-ray's lines: Ray's token
authentication stays on, and its notice shows from -v on."""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cae_ray.config import load_config
from tests.test_cli_contract import assert_error, cae_ray, document

pytestmark = pytest.mark.feast


def test_init_on_the_demo_repo_then_check_and_run_it(tmp_path: Path) -> None:
    from cae_ray.demo import make_demo_repo

    made = make_demo_repo(tmp_path / "demo", rows=400, features=24, informative=3)
    config = tmp_path / "cae-ray.yaml"
    done = cae_ray(
        "init", str(made.repo), "-o", str(config), "--entities", str(made.entities),
        "--target", "label",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = yaml.safe_load(config.read_text())
    assert written["feast"]["features"] == ["customer_wide"]
    assert written["feast"]["prune"] == "plan" and written["data"]["target"] == "label"
    assert "annotate_all(globals()): marks survive apply" in config.read_text()
    assert cae_ray("config", "check", str(config)).returncode == 0
    # init never overwrites.
    again = cae_ray("init", str(made.repo), "-o", str(config), "--json")
    assert_error(again, "ConfigFileError", 2)

    cfg = yaml.safe_load(config.read_text())
    cfg["training"] = {"epochs": 15}  # a short run: the test is about the commands
    config.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "run"
    with tempfile.TemporaryDirectory(prefix="cr-", dir="/tmp") as ray_tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
        ran = cae_ray(
            "run", str(config), "--run-dir", str(run_dir), env={**env, "RAY_TMPDIR": ray_tmp}
        )
    assert ran.returncode in (0, 5), ran.stderr[-3000:]  # 5: the gate may refuse a tiny table
    assert (run_dir / "selection.json").exists()
    for line in (ran.stdout + ran.stderr).splitlines():
        # Ray's notice that token authentication is on (and any Ray log line) stays out.
        assert "Token authentication" not in line and " -- " not in line, line


def test_init_on_a_repo_with_two_views_and_a_label_view(tmp_path: Path) -> None:
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Int64

    from tests.feast_repo import T0, make_feast_repo

    repo = make_feast_repo(tmp_path)
    labels = pd.DataFrame({"driver_id": range(repo.n_drivers), "event_timestamp": T0, "churned": 0})
    labels.to_parquet(repo.path / "data" / "driver_labels.parquet")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    label_view = FeatureView(
        name="driver_labels",
        entities=[driver],
        ttl=timedelta(days=365),
        schema=[Field(name="churned", dtype=Int64)],
        source=FileSource(
            path=str(repo.path / "data" / "driver_labels.parquet"),
            timestamp_field="event_timestamp",
        ),
    )
    FeatureStore(repo_path=str(repo.path)).apply([driver, label_view])

    config = tmp_path / "cae-ray.yaml"
    done = cae_ray("init", str(repo.path), "--output", str(config), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = document(done)
    assert found["ok"] is True
    assert found["candidates"] == ["driver_extra", "driver_stats"]
    assert found["label_views"] == ["driver_labels"] and found["features"] == 8
    assert found["has_hook"] is False

    text = config.read_text()
    written = yaml.safe_load(text)
    assert written["feast"]["features"] == ["driver_extra", "driver_stats"]  # no label view
    assert "# - driver_labels" in text and "a label among the candidates leaks" in text
    assert "#   from cae_ray.feast.overlay import annotate_all; annotate_all(globals())" in text
    assert "FILL IN" in text and "driver_id, event_timestamp" in text
    assert written["data"]["target"] is None and written["feast"]["prune"] == "plan"
    assert 1 <= written["selector"]["k"] < 8
    checked = load_config(config)  # valid as written: it selects without a label until filled
    assert checked.feast is not None and checked.feast.prune == "plan"


def test_init_names_a_directory_that_is_no_feast_repo(tmp_path: Path) -> None:
    done = cae_ray("init", str(tmp_path), "-o", str(tmp_path / "c.yaml"), "--json")
    found = assert_error(done, "FeastRepoError", 2)
    assert "feature_store.yaml" in found["error"]["message"]
    assert not (tmp_path / "c.yaml").exists()
