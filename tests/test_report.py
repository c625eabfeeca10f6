"""The run report, written from real run dirs: the 8x8 digits served by a real Feast repo and run
through export -> select -> validate -> prune, and a plain selection on a wide table."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cae_ray.artifacts import EXPORT_DIR, PRUNE_PLAN, VALIDATION, RunDir
from cae_ray.config import Config, validate_config
from cae_ray.errors import NoSelectionError
from cae_ray.feast.entities import ROW_ID
from cae_ray.pipeline import export, prune, select, validate
from cae_ray.report import pixel_grid, write_report
from tests.feast_repo import REGISTRIES, store_yaml

PNG = b"\x89PNG\r\n\x1a\n"
# Train local mode (no worker group to start) and a few epochs: the report needs artifacts,
# not a good selection.
FAST: dict[str, Any] = {
    "selector": {"k": 6},
    "training": {"epochs": 3, "batch_size": 64},
    "scaling": {"num_workers": 0},
}


def make_digits_repo(directory: Path, X: np.ndarray, y: np.ndarray, run: Path) -> Config:
    """A Feast repo with one view of the 64 pixels `px_00`..`px_63`, and a config that exports
    them into ``run`` and selects from there."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32

    repo = directory / "repo"
    (repo / "data").mkdir(parents=True)
    yaml_text = store_yaml() + REGISTRIES["file"]
    (repo / "feature_store.yaml").write_text(yaml_text)
    names = [f"px_{j:02d}" for j in range(X.shape[1])]
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    frame = pd.DataFrame(X, columns=names).assign(image_id=np.arange(len(y)), event_timestamp=when)
    frame.to_parquet(repo / "data" / "digits.parquet")
    image = Entity(name="image", join_keys=["image_id"], value_type=ValueType.INT64)
    source = FileSource(
        path=str(repo / "data" / "digits.parquet"), timestamp_field="event_timestamp"
    )
    schema = [Field(name=n, dtype=Float32) for n in names]
    view = FeatureView(name="digits", entities=[image], schema=schema, source=source)
    FeatureStore(repo_path=str(repo)).apply([image, view])
    entities = directory / "entities.parquet"
    rows = {"image_id": np.arange(len(y)), "event_timestamp": when + timedelta(days=1), "label": y}
    pd.DataFrame(rows).to_parquet(entities)
    return validate_config(
        {
            "feast": {"repo": str(repo), "entities": str(entities), "features": ["digits"]},
            "data": {
                "path": str(run / EXPORT_DIR),
                "features": "digits__*",
                "target": "label",
                "row_key": ROW_ID,
            },
            **FAST,
            "validation": {"tolerance": 1.0, "bootstrap": 100, "epochs": 2},
        }
    )


@pytest.fixture(scope="module")
def pixel_run(ray_cluster, digits, tmp_path_factory) -> Path:
    """Every artifact of a real run: Feast export, selection, a passed gate, applied marks."""
    directory = tmp_path_factory.mktemp("report")
    run = directory / "run"
    X, y = digits
    config = make_digits_repo(directory, X, y, run)
    export(config, run)
    select(config, run)
    assert validate(config, run)["passed"]  # a loss of at most 1.0 always passes
    prune(config, run, apply=True)
    return run


def artifact(run: Path, name: str) -> dict:
    return json.loads((run / name).read_text())


@pytest.mark.ray
@pytest.mark.feast
def test_report_of_a_full_run_is_self_contained_and_complete(pixel_run) -> None:
    page_path = Path(write_report(RunDir(pixel_run)))
    page = page_path.read_text()
    selection, verdict = artifact(pixel_run, "selection.json"), artifact(pixel_run, VALIDATION)
    plan = artifact(pixel_run, PRUNE_PLAN)

    assert page_path == pixel_run / "report" / "report.html"
    # Opens offline: no remote URL, script or stylesheet; every image is an embedded PNG, the
    # very bytes of the file written beside the page.
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    files = {p.name: p.read_bytes() for p in (pixel_run / "report").glob("*.png")}
    assert set(files) == {"training.png", "scores.png", "selection.png", "validation.png"}
    assert all(data.startswith(PNG) for data in files.values())
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    embedded = [base64.b64decode(s.removeprefix("data:image/png;base64,")) for s in sources]
    assert sorted(embedded) == sorted(files.values())

    assert "PASSED" in page and "FAILED" not in page
    assert all(name in page for name in selection["selected_features"])
    assert f"{selection['k']} of 64" in page
    assert verdict["metric"] in page
    for value in (verdict["baseline"]["value"], verdict["selected"]["value"]):
        assert f"{value:.4g}" in page
    deprecated = plan["deprecate"]["digits"]
    assert len(deprecated) == 64 - selection["k"] and all(f in page for f in deprecated)
    assert plan["feature_service"] in page
    # The 8x8 digits have blank corner pixels: dropped as constant, and said so.
    assert f"{len(selection['dropped_constant'])} constant dropped" in page


@pytest.mark.ray
def test_report_of_a_plain_selection_with_a_partial_run_json(
    ray_cluster, wide_dataset, tmp_path
) -> None:
    path, _ = wide_dataset
    data = {"path": str(path), "features": "f_*", "target": "label", "row_key": "id"}
    selection = select(validate_config({"data": data, **FAST}), tmp_path)
    # `cae-ray run` writes run.json; tolerate missing keys, and escape every name from it.
    steps = {
        "select": {"status": "done", "seconds": 1.5},
        "prune": {"status": "skipped", "reason": "the gate failed"},
        "<b>odd</b>": {},
    }
    (tmp_path / "run.json").write_text(json.dumps({"steps": steps}))

    page = Path(write_report(RunDir(tmp_path))).read_text()
    assert "not validated" in page and "PASSED" not in page
    assert "no <code>prune.json</code>" in page
    assert all(name in page for name in selection["selected_features"])
    assert "&lt;b&gt;odd&lt;/b&gt;" in page and "<b>odd</b>" not in page
    assert "the gate failed" in page
    files = {p.name for p in (tmp_path / "report").glob("*.png")}
    assert files == {"training.png", "scores.png"}  # 200 features are not a square image


def test_feature_names_are_escaped_on_the_page(tmp_path) -> None:
    odd = "<script>alert(1)</script>"
    names = [odd, "age", "income"]
    sure = {"mean_max": 0.5, "min_max": 0.4}
    history = [{"epoch": e, "loss": 1 / (e + 1), "temperature": 0.5**e, **sure} for e in range(3)]
    selection = {
        "selected_features": [odd, "age"],
        "candidate_features": names,
        "scores": [0.9, 0.8, 0.1],
        "k": 2,
        "method": "cae",
        "task": "classification",
        "history": history,
        "selection_hash": "0123abcd",
        "converged": True,
        "dropped_constant": [],
    }
    (tmp_path / "selection.json").write_text(json.dumps(selection))

    page = Path(write_report(RunDir(tmp_path))).read_text()
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "2 of 3" in page and "not validated" in page


def test_a_run_dir_without_selection_says_what_to_run(tmp_path) -> None:
    with pytest.raises(NoSelectionError, match=r"has no selection\.json.*cae-ray select"):
        write_report(RunDir(tmp_path))
    assert not (tmp_path / "report").exists()


def test_pixel_grid_reads_square_and_row_column_names() -> None:
    mnist = pixel_grid([f"f_{p:03d}" for p in range(784)])
    assert mnist is not None and mnist[:2] == (28, 28) and mnist[2][29] == (1, 1)
    one_based = pixel_grid([f"mnist__pixel{p}" for p in range(1, 65)])
    assert one_based is not None and one_based[2][0] == (0, 0)
    rows_cols = pixel_grid([f"p_{r}_{c}" for r in range(6) for c in range(5)])
    assert rows_cols is not None and rows_cols[:2] == (6, 5)

    assert pixel_grid([f"f_{j:04d}" for j in range(200)]) is None  # not a square
    assert pixel_grid([f"f_{j}" for j in range(9)]) is None  # too small to be an image
    assert pixel_grid([f"f_{j}" for j in range(1, 64)] + ["g_0"]) is None  # two prefixes
    assert pixel_grid([f"f_{j}" for j in range(63)] + ["f_99"]) is None  # a gap
    assert pixel_grid(["age", "income", *[f"f_{j}" for j in range(14)]]) is None
