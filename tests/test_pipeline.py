"""`cae_ray.select` on a real local Ray cluster: workers, local mode, resume, bad input."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cae_ray.artifacts import selection_digest
from cae_ray.config import Config, validate_config
from cae_ray.pipeline import select
from cae_ray.runtime.batches import unpack
from cae_ray.selector.estimator import ConcreteFeatureSelector

pytestmark = pytest.mark.ray

K, EPOCHS, BATCH = 10, 20, 32


def make_config(path: Path, **sections: dict[str, Any]) -> Config:
    base: dict[str, Any] = {
        "data": {"path": str(path), "features": "f_*", "target": "label", "row_key": "id"},
        "selector": {"k": K},
        "training": {"epochs": EPOCHS, "batch_size": BATCH},
        "scaling": {"num_workers": 2, "resources_per_worker": {"CPU": 1}},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return validate_config(base)


def found(names: list[str], informative: list[str]) -> int:
    return len(set(names) & set(informative))


@pytest.fixture(scope="module")
def estimator_found(wide_dataset) -> int:
    """The in-memory estimator on the same (standardised) data and settings."""
    path, informative = wide_dataset
    table = pq.read_table(path).to_pandas()
    X = table.filter(like="f_")
    X = (X - X.mean()) / X.std(ddof=0)
    selector = ConcreteFeatureSelector(k=K, epochs=EPOCHS, batch_size=BATCH).fit(X, table["label"])
    return found(list(selector.get_feature_names_out()), informative)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_select_matches_the_in_memory_estimator(
    ray_cluster, wide_dataset, estimator_found, tmp_path, workers
) -> None:
    path, informative = wide_dataset
    selection = select(make_config(path, scaling={"num_workers": workers}), tmp_path)

    names = selection.selected_features
    assert len(names) == K and len(set(names)) == K
    # The estimator finds 7-9 of 10 depending on its seed; 10 random picks find 0.5 on average.
    assert found(names, informative) >= min(estimator_found, K) - 2, (names, estimator_found)
    assert found(names, informative) >= 7
    on_disk = json.loads((tmp_path / "selection.json").read_text())
    assert on_disk["selected_features"] == names
    assert len(on_disk["scores"]) == len(on_disk["candidate_features"]) == 200
    assert [on_disk["candidate_features"][i] for i in on_disk["selected_indices"]] == names
    assert (on_disk["k"], on_disk["method"], on_disk["task"]) == (K, "ipcae", "classification")
    assert on_disk["config_hash"] and on_disk["data_fingerprint"]
    assert on_disk["selection_hash"] == selection_digest(on_disk)
    unselected = next(c for c in on_disk["candidate_features"] if c not in names)
    edited = {**on_disk, "selected_features": [*names[:-1], unselected]}
    assert selection_digest(edited) != on_disk["selection_hash"]
    history = on_disk["history"]
    assert [h["epoch"] for h in history] == list(range(len(history)))
    assert {"loss", "temperature", "mean_max", "distinct"} <= set(history[0])
    assert on_disk["num_workers"] == workers
    # Each worker trains with as many torch threads as CPUs it was given (1 here), so workers
    # never oversubscribe a shared node; Train local mode (0 workers) has the machine's.
    assert {h["threads"] for h in history} == {os.cpu_count() if workers == 0 else 1}


def test_select_refines_a_supervised_search_on_request(
    ray_cluster, wide_dataset, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """The interaction screen and second searches (on by default above 2,048 features) run on
    the driver's sample after Ray training, and keep a selection as good as the search's."""
    path, informative = wide_dataset
    config = make_config(path, selector={"refine": True}, scaling={"num_workers": 0})
    with caplog.at_level(logging.INFO, logger="cae_ray.selector.refine"):
        selection = select(config, tmp_path)
    names = selection.selected_features
    assert len(names) == K and len(set(names)) == K
    assert found(names, informative) >= 7
    # The search's 10 and 10 screened-in features (as many as its 10 spare rows).
    assert "second searches over 20 features (10 screened in)" in caplog.text


def test_same_inputs_give_the_same_selection(ray_cluster, wide_dataset, tmp_path) -> None:
    """Block order is pinned and shuffles are seeded: two run dirs, one answer, whether the
    train split is cached in the object store or streamed from Parquet every epoch."""
    path, _ = wide_dataset
    cached = make_config(path, training={"epochs": 3}, scaling={"cache_train_split": "always"})
    streamed = make_config(path, training={"epochs": 3}, scaling={"cache_train_split": "never"})
    first, second = select(cached, tmp_path / "a"), select(streamed, tmp_path / "b")
    assert first.selected_features == second.selected_features
    assert [h["loss"] for h in first.history] == [h["loss"] for h in second.history]


def test_rerun_reuses_finished_work(ray_cluster, wide_dataset, tmp_path) -> None:
    path, _ = wide_dataset
    config = make_config(path, training={"epochs": 2}, scaling={"num_workers": 0})
    first = select(config, tmp_path)
    stamp = (tmp_path / "selection.json").stat().st_mtime_ns
    again = select(config, tmp_path)
    assert again == first
    assert (tmp_path / "selection.json").stat().st_mtime_ns == stamp
    assert (tmp_path / "data" / "train").is_dir() and (tmp_path / "data" / "validation").is_dir()


def test_prepare_standardises_and_splits_by_key(ray_cluster, wide_dataset, tmp_path) -> None:
    from cae_ray.pipeline import prepare

    path, _ = wide_dataset
    prepared = prepare(make_config(path), tmp_path)
    assert prepared.rows.train + prepared.rows.validation == 3000
    assert 0.15 < prepared.rows.validation / 3000 < 0.25
    train = ray_cluster.data.read_parquet(str(tmp_path / "data" / "train"))
    packed = train.take_batch(batch_size=5000, batch_format="pyarrow")["features"]
    features = unpack(packed, 200)
    assert features.shape[1] == 200
    assert np.allclose(features.mean(axis=0), 0, atol=0.15)
    again = prepare(make_config(path), tmp_path / "other")
    assert again.rows == prepared.rows  # the same rows land on the same side


@pytest.mark.parametrize("target", ["label", "id"])  # classes, and a regression target
def test_the_driver_prepares_what_ray_data_prepares(
    ray_cluster, wide_dataset, tmp_path, target
) -> None:
    """`scaling.prepare_in`: the driver's pyarrow passes (small tables) and Ray Data's tasks
    (large ones) give the same statistics, target encoding, rows and packed values."""
    from cae_ray.pipeline import prepare
    from cae_ray.runtime.data import read_split

    path, _ = wide_dataset
    runs = {}
    for where in ("ray", "driver"):
        config = make_config(path, data={"target": target}, scaling={"prepare_in": where})
        runs[where] = (prepare(config, tmp_path / where), tmp_path / where / "data")
    (by_ray, ray_dir), (by_driver, driver_dir) = runs["ray"], runs["driver"]
    assert by_driver.rows == by_ray.rows and by_driver.features == by_ray.features
    assert by_driver.target == by_ray.target
    for name, values in by_ray.stats.items():
        if name != "names":
            np.testing.assert_allclose(by_driver.stats[name], values, rtol=1e-12, err_msg=name)
    for split in ("train", "validation"):
        x_ray, y_ray = read_split(str(ray_dir / split), 200)
        x_driver, y_driver = read_split(str(driver_dir / split), 200)
        np.testing.assert_allclose(x_driver, x_ray, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(y_driver, y_ray)
    assert len(list((driver_dir / "train").glob("*.parquet"))) == 1


def test_a_few_columns_are_prepared_as_from_the_whole_table(
    ray_cluster, wide_dataset, tmp_path
) -> None:
    # With Ray Data, a handful of columns is read alone (a narrowed read); most of them from the
    # whole table: both give the same values.
    from cae_ray.pipeline import prepare

    path, _ = wide_dataset
    few = [f"f_{j:04d}" for j in (3, 7, 150, 42)]
    narrowed = make_config(
        path, data={"features": few}, selector={"k": 2}, scaling={"prepare_in": "ray"}
    )
    prepare(narrowed, tmp_path / "few")
    prepare(make_config(path, scaling={"prepare_in": "ray"}), tmp_path / "all")

    def packed(run: Path, n: int) -> np.ndarray:
        split = ray_cluster.data.read_parquet(str(run / "data" / "train"))
        return unpack(split.take_batch(5000, batch_format="pyarrow")["features"], n)

    whole = packed(tmp_path / "all", 200)[:, [3, 7, 150, 42]]
    np.testing.assert_array_equal(packed(tmp_path / "few", 4), whole)


def test_a_float_column_of_zeros_and_ones_is_classified_everywhere(ray_cluster, tmp_path) -> None:
    """`head.task: auto` is decided by one rule (cae_ray.selector.targets) for the estimator and the
    pipeline: a float target holding only 0.0 and 1.0 is two classes, not a regression."""
    from typer.testing import CliRunner

    from cae_ray.cli import app

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6)).astype(np.float32)
    label = (X[:, 0] > 0).astype(np.float64)  # 0.0 / 1.0
    table = {f"f_{j}": X[:, j] for j in range(6)} | {"label": label}
    path = tmp_path / "table.parquet"
    pq.write_table(pa.table(table), path)
    config = {
        "data": {"path": str(path), "features": "f_*", "target": "label"},
        "selector": {"k": 2},
        "training": {"epochs": 2, "batch_size": 64},
        "scaling": {"num_workers": 0},
    }
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))

    result = CliRunner().invoke(app, ["select", str(config_path), "--run-dir", str(tmp_path / "r")])

    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "selection.json").read_text())["task"] == "classification"
    prepared = json.loads((tmp_path / "r" / "data" / "prepared.json").read_text())
    assert prepared["target"]["classes"] == [0.0, 1.0]
    estimator = ConcreteFeatureSelector(k=2, epochs=2, batch_size=64).fit(X, label)
    assert estimator.task_ == "classification"


def test_few_rows_are_chosen_by_the_screen_with_no_training(ray_cluster, tmp_path) -> None:
    """100 rows of 2,000 columns (under one training row per 20 features): no search is trained
    on Ray, the K are the F statistic's best on the train split, and `cae-ray select` says so."""
    from sklearn.feature_selection import SelectKBest, f_classif
    from typer.testing import CliRunner

    from cae_ray.artifacts import RunDir
    from cae_ray.cli import app
    from cae_ray.report.page import write_report

    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2000)).astype(np.float32)
    label = rng.integers(0, 2, size=100)
    X[:, [3, 500, 1999]] += 2.0 * label[:, None]  # the class signal: three columns
    table = {"id": np.arange(100)} | {f"f_{j:04d}": X[:, j] for j in range(2000)}
    pq.write_table(pa.table(table | {"label": label}), tmp_path / "few.parquet")
    config = make_config(tmp_path / "few.parquet", selector={"k": 3})
    config_path = tmp_path / "config.json"
    config_path.write_text(config.model_dump_json())

    result = CliRunner().invoke(app, ["select", str(config_path), "--run-dir", str(tmp_path / "r")])

    assert result.exit_code == 0, result.output
    assert "Chosen by the F statistic against the target" in result.output
    selection = json.loads((tmp_path / "r" / "selection.json").read_text())
    assert selection["selected_features"] == ["f_0003", "f_0500", "f_1999"]
    assert selection["chosen_by"] == "f_statistic" and selection["history"] == []
    assert selection["converged"] and selection["collisions"] == 0
    assert not list((tmp_path / "r" / "ray").glob("select-*"))  # no training was started
    # The same K as SelectKBest on the rows the pipeline trains on (its standardised split).
    train = ray_cluster.data.read_parquet(str(tmp_path / "r" / "data" / "train"))
    batch = train.take_batch(batch_size=1000, batch_format="pyarrow")
    kbest = SelectKBest(f_classif, k=3).fit(unpack(batch["features"], 2000), batch["target"])
    assert np.flatnonzero(kbest.get_support()).tolist() == selection["selected_indices"]
    # The report says how the K were chosen, and draws no training curves.
    page = Path(write_report(RunDir(tmp_path / "r"))).read_text()
    assert "F statistic, no search" in page
    assert not (tmp_path / "r" / "report" / "training.png").exists()


def test_the_ordered_sink_keeps_the_rows_order(ray_cluster, tmp_path) -> None:
    """Ray's own Parquet sink writes a task's tables (and their chunks) in the order pyarrow's
    writer threads finish; the packed splits must keep the dataset's order, or the same
    inputs give another selection."""
    import pyarrow as pa

    from cae_ray.runtime.data import read_ordered
    from cae_ray.runtime.parquet_sink import OrderedParquetSink

    chunks = [pa.table({"row": np.arange(i * 500, (i + 1) * 500)}) for i in range(8)]
    source = tmp_path / "source"
    source.mkdir()
    pq.write_table(pa.concat_tables(chunks), source / "rows.parquet", row_group_size=500)
    dataset = read_ordered(str(source)).map_batches(
        lambda batch: pa.concat_tables([batch.slice(i, 100) for i in range(0, len(batch), 100)]),
        batch_format="pyarrow",
        batch_size=None,
    )
    dataset.write_datasink(OrderedParquetSink(tmp_path / "out"))
    files = sorted((tmp_path / "out").glob("*.parquet"))
    rows = np.concatenate([pq.read_table(f)["row"].to_numpy() for f in files])
    assert rows.tolist() == list(range(4000))
