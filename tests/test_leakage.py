"""A feature that gives the target away (a copy of the label, or one computed from it) is
flagged by the select step and fails the gate, which also calls out two perfect scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cae_ray.artifacts import RunDir
from cae_ray.cli import render
from cae_ray.config import validate_config
from cae_ray.demo import make_demo_data
from cae_ray.errors import exit_code
from cae_ray.gate.decide import decide
from cae_ray.gate.errors import LeakingFeaturesError, gate_failure
from cae_ray.gate.models import Scores
from cae_ray.pipeline import prepare, select, validate
from cae_ray.selector.leakage import leaking_features
from tests.test_pipeline import make_config


@pytest.fixture(scope="module")
def demo() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """3,000 rows x 60 features, 8 of them informative (strongly so), and a binary label."""
    data = make_demo_data(rows=3000, features=60, informative=8, seed=3)
    return data.frame.to_numpy(np.float64), np.asarray(data.target), list(data.frame.columns)


def test_a_copy_of_the_label_and_one_computed_from_it_are_flagged(demo) -> None:
    x, y, _ = demo
    copy, computed = y.astype(np.float64), 3.0 * y - 1.0 + 0.01 * np.sin(np.arange(len(y)))
    found = leaking_features(np.column_stack([x, copy, computed]), y, "classification")
    assert [f.index for f in found] == [x.shape[1], x.shape[1] + 1]
    assert all(f.score == 1.0 and "held-out" in f.test for f in found)


def test_honest_informative_features_are_not_flagged(demo) -> None:
    x, y, _ = demo
    assert leaking_features(x, y, "classification") == []
    rng = np.random.default_rng(0)
    target = x[:, :8] @ rng.normal(size=8)
    noisy = target + rng.normal(scale=0.3 * target.std(), size=len(target))
    assert leaking_features(np.column_stack([x, noisy]), target, "regression") == []


def test_a_regression_target_and_a_monotone_function_of_it_are_flagged(demo) -> None:
    x, _, _ = demo
    target = x[:, 0] * 2.0 + x[:, 1]
    found = leaking_features(np.column_stack([x, target, np.exp(target)]), target, "regression")
    assert [f.index for f in found] == [x.shape[1], x.shape[1] + 1]


def test_nothing_is_flagged_without_a_target_or_enough_rows(demo) -> None:
    x, y, _ = demo
    assert leaking_features(x, y, "reconstruction") == []
    assert leaking_features(x[:30], y[:30], "classification") == []


def scores_of(baseline: float, selected: float) -> Scores:
    n = 50

    def score(rows: np.ndarray) -> tuple[float, float]:
        return baseline, selected

    return Scores(n, [baseline], [selected], score, "HistGradientBoosting")


def test_the_gate_fails_on_a_leaking_candidate_and_calls_out_two_perfect_scores() -> None:
    config = validate_config({"data": {"path": "d", "target": "y"}})
    honest = decide(config, "accuracy", scores_of(0.91, 0.905))
    assert honest["passed"] and not honest["perfect"] and honest["leaking_features"] == []

    leaked = decide(config, "accuracy", scores_of(1.0, 1.0), ["f_leak"], ["f_leak"])
    assert not leaked["passed"]
    assert leaked["perfect"]
    assert "'f_leak' (the selection holds 'f_leak')" in leaked["reason"]
    not_selected = decide(config, "accuracy", scores_of(1.0, 0.9), ["f_leak"])
    assert not not_selected["passed"] and not not_selected["perfect"]
    assert "(none is selected)" in not_selected["reason"]
    assert decide(config, "rmse", scores_of(0.0, 0.0))["perfect"]


@pytest.mark.ray
def test_a_leaked_label_is_named_and_fails_the_gate(ray_cluster, tiny_table, tmp_path) -> None:
    table = pq.read_table(tiny_table)
    leaked = table.append_column("f_leak", pc.cast(table["label"], "float64"))
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(leaked, data / "part-000.parquet")
    config = make_config(
        data,
        selector={"k": 3},
        training={"epochs": 3},
        scaling={"num_workers": 1},
        validation={"epochs": 3, "bootstrap": 200},
    )
    run = RunDir(tmp_path / "run")
    prepare(config, run)
    selection = select(config, run)
    assert [leak.name for leak in selection.leaking_features] == ["f_leak"]
    assert (
        json.loads(Path(run.path("selection.json")).read_text())["leaking_features"][0]["name"]
        == "f_leak"
    )

    verdict = validate(config, run)
    assert not verdict.passed
    assert verdict.leaking_features == ["f_leak"]
    assert "f_leak" in verdict.reason and "Fix: leave them out of the candidates" in verdict.reason
    assert verdict.baseline.value == 1.0
    selected = "f_leak" in selection.selected_features
    assert verdict.perfect == selected  # the selection scores perfectly only if it holds it
    lines = render.validation_lines(verdict, run.path("validation.json"))
    assert any("FAILED" in line and "f_leak" in line for line in lines)
    assert any("Both models score a perfect accuracy" in line for line in lines) == selected
    failure = gate_failure(str(tmp_path / "run"), verdict)  # what `run` and `validate` raise
    assert isinstance(failure, LeakingFeaturesError) and exit_code(failure) == 5
    assert "leave them out of the candidates" in str(failure)
    assert "selector.k" not in str(failure)  # training longer would not help
