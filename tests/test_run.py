"""The whole run end to end: `cae-ray demo` on a real local Feast repo and Ray cluster, and a
failed validation gate that stops the run before the registry is touched."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cae_ray.cli import app
from cae_ray.demo import VIEW, demo_config
from cae_ray.errors import EXIT_GATE
from cae_ray.feast.overlay import TAG_PREFIX

pytestmark = [pytest.mark.ray, pytest.mark.feast]
runner = CliRunner()
ROWS, FEATURES = 3000, 100
DEPRECATED_PREFIX = TAG_PREFIX + "deprecated."


def deprecation_tags(repo: Path) -> dict[str, str]:
    from feast import FeatureStore

    view = FeatureStore(repo_path=str(repo)).get_feature_view(VIEW)
    return {k: v for k, v in view.tags.items() if k.startswith(DEPRECATED_PREFIX)}


@pytest.fixture(scope="module")
def demo_dir(ray_cluster, tmp_path_factory) -> tuple[Path, str]:
    """`cae-ray demo` on a smaller table (3,000 x 100, 10 informative): its dir and output.
    Run from the dir's parent with a relative --dir, as `make demo` does (runs/demo)."""
    directory = tmp_path_factory.mktemp("demo")
    args = ["demo", "--dir", directory.name, "--rows", str(ROWS), "--features", str(FEATURES)]
    cwd = os.getcwd()
    os.chdir(directory.parent)
    try:
        result = runner.invoke(app, args)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    return directory, " ".join(result.output.split())


def test_demo_marks_the_unselected_features_and_writes_a_report(demo_dir) -> None:
    directory, output = demo_dir
    record = json.loads((directory / "run" / "run.json").read_text())
    assert record["status"] == "succeeded"
    statuses = {name: step["status"] for name, step in record["steps"].items()}
    assert statuses == dict.fromkeys(
        ("export", "prepare", "select", "validate", "prune", "retire", "report"), "done"
    )
    retire = record["steps"]["retire"]  # planned: nothing deprecated for 30 days yet
    assert (retire["count"], retire["applied"]) == (0, False)
    in_30_days = datetime.now(timezone.utc) + timedelta(days=30)
    assert retire["next_due"] in {f"{in_30_days - timedelta(1):%Y-%m-%d}", f"{in_30_days:%Y-%m-%d}"}
    page = (directory / "run" / "report" / "report.html").read_text()
    assert f"none due yet; the first on {retire['next_due']} (grace 30d)" in page
    kept = record["steps"]["select"]["selected_features"]
    tags = deprecation_tags(directory / "feature_repo")
    assert len(tags) == FEATURES - 10
    assert not {f"{DEPRECATED_PREFIX}{name.split('__')[1]}" for name in kept} & set(tags)
    assert (directory / "run" / "report" / "report.html").is_file()
    found = int(output.split("Found ")[1].split(" of ")[0])
    assert found >= 7, output  # 10 informative of 100: chance finds 1
    assert "cae-ray restore --repo" in output


def test_a_second_demo_reuses_every_step_and_marks_nothing_twice(demo_dir) -> None:
    directory, _ = demo_dir
    audit = (directory / "feature_repo" / "cae_ray_audit.jsonl").read_text().splitlines()
    result = runner.invoke(
        app, ["demo", "--dir", str(directory), "--rows", str(ROWS), "--features", str(FEATURES)]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((directory / "run" / "run.json").read_text())
    reused = [name for name, step in record["steps"].items() if step["status"] == "reused"]
    assert reused == ["export", "prepare", "select", "validate", "prune"]
    after = (directory / "feature_repo" / "cae_ray_audit.jsonl").read_text().splitlines()
    assert after == audit


def test_a_failed_gate_stops_before_prune_and_says_why(demo_dir, tmp_path) -> None:
    directory, _ = demo_dir
    _, config = demo_config(directory)
    # One feature cannot match all 100: the gate must fail.
    failing = config.model_copy(update={"selector": config.selector.model_copy(update={"k": 1})})
    path = tmp_path / "k1.json"
    path.write_text(failing.model_dump_json())
    registry = directory / "feature_repo" / "data" / "registry.db"
    before = registry.read_bytes()

    result = runner.invoke(app, ["run", str(path), "--run-dir", str(tmp_path / "run")])

    assert result.exit_code == EXIT_GATE, result.output
    assert "the validation gate failed" in " ".join(result.output.split())
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "gate_failed"
    assert record["steps"]["prune"] == {"status": "skipped", "reason": "the validation gate failed"}
    assert not (tmp_path / "run" / "prune.json").exists()
    assert registry.read_bytes() == before
    assert (tmp_path / "run" / "report" / "report.html").is_file()
