"""`selector.k: auto` and ConcreteFeatureSelectorCV: the smallest K that matches all features,
chosen on held-out training rows with the gate's own model and interval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cae_ray.config import validate_config
from cae_ray.errors import EXIT_CONFIG, EXIT_GATE, EXIT_INPUT, ConfigValidationError
from cae_ray.gate.auto_k import GateRule, k_curve, knee_curve, ladder
from cae_ray.gate.inner import MIN_HELD_OUT, inner_folds
from cae_ray.gate.selector_cv import ConcreteFeatureSelectorCV
from cae_ray.selector.estimator import ConcreteFeatureSelector
from tests.conftest import RAY_TEST_ENV
from tests.wide_data import write_wide_parquet

ROOT = Path(__file__).resolve().parent.parent


# --- the ladder and the choice, on a curve known in advance -----------------------------------


def test_the_ladder_climbs_by_half_from_k_min_to_k_max() -> None:
    assert ladder(1, 64) == [1, 2, 3, 5, 8, 12, 18, 27, 41, 62, 64]
    assert ladder(5, 5) == [5]
    assert ladder(4, 7) == [4, 6, 7]


@dataclass
class KnownCurve:
    """A scorer whose per-row scores are 1 on the first ``good(K)`` rows of 1,000 and 0 after,
    against a baseline of 0.9: K passes when ``good(K)`` reaches the baseline's."""

    good: dict[int, int]
    metric: str = "accuracy"
    baseline_source: str = "a known baseline"

    @property
    def n_rows(self) -> int:
        return 1000

    @property
    def baseline_rows(self) -> int:
        return 1000

    def baseline(self, rows: np.ndarray) -> float:
        return float(np.mean(rows < 900))

    def score(self, columns: list[int], rows: np.ndarray) -> float:
        return float(np.mean(rows < self.good[len(columns)]))


def known(passing_from: int, k_max: int = 64) -> KnownCurve:
    """Every K from ``passing_from`` on scores as the baseline (900 good rows); below, 500."""
    return KnownCurve({k: 900 if k >= passing_from else 500 for k in range(1, k_max + 1)})


RULE = GateRule(tolerance=0.01, resamples=200)


def test_the_smallest_passing_k_is_found_by_bisection_between_rungs() -> None:
    curve = k_curve(list(range(64)), known(10), RULE, 1, 64)
    assert curve.chosen == 10 and curve.passed
    rungs = [p.k for p in curve.points if p.on_ladder]
    assert rungs == ladder(1, 64)
    bisected = sorted(p.k for p in curve.points if not p.on_ladder)
    assert bisected and all(8 < k < 12 for k in bisected)  # between the rungs 8 and 12
    assert curve.reason.startswith("K=10: the smallest K within 0.01 of the accuracy 0.9000")


def test_no_passing_k_chooses_k_max_and_says_so() -> None:
    curve = k_curve(list(range(64)), known(100), RULE, 1, 64)
    assert curve.chosen == 64 and not curve.passed
    assert "no K up to k_max=64" in curve.reason


@dataclass
class Disagreeing(KnownCurve):
    """From K=``tie_from`` on, right on 900 rows of 1,000 as the baseline is, but not the same
    rows (100 each way): every interval of the difference is about +-0.03, wider than the
    tolerance, so even a tie cannot pass. Below ``tie_from``: right on 500 rows."""

    tie_from: int = 20

    def score(self, columns: list[int], rows: np.ndarray) -> float:
        return float(np.mean(rows >= (100 if len(columns) >= self.tie_from else 500)))


def test_when_the_rows_cannot_confirm_a_tie_k_is_the_smallest_that_ties() -> None:
    curve = k_curve(list(range(64)), Disagreeing({}), RULE, 1, 64)
    assert curve.chosen == 20 and not curve.passed  # not k_max: 64 features for 20
    assert not any(p.passed for p in curve.points)
    assert "no K was confirmed within 0.01" in curve.reason
    assert "K=20 is the smallest that scores at least as well as all features" in curve.reason
    # A scheduled run keeps last week's K while it still ties and no smaller rung does.
    kept = k_curve(list(range(64)), Disagreeing({}), RULE, 1, 64, previous=24)
    assert kept.chosen == 24 and kept.kept_previous and not kept.passed
    assert "the previous run's K, which still scores at least as well" in kept.reason


def test_a_scheduled_run_keeps_its_k_unless_a_smaller_rung_passes_or_it_fails() -> None:
    # Last week's K (11) still passes and no smaller rung does: K stays, though 10 would do.
    kept = k_curve(list(range(64)), known(10), RULE, 1, 64, previous=11)
    assert kept.chosen == 11 and kept.kept_previous
    assert "previous run's K" in kept.reason
    # A smaller rung (8) passes now: K moves down to the smallest that passes.
    moved = k_curve(list(range(64)), known(7), RULE, 1, 64, previous=11)
    assert moved.chosen == 7 and not moved.kept_previous
    # Last week's K fails now: K moves up.
    failing = k_curve(list(range(64)), known(20), RULE, 1, 64, previous=11)
    assert failing.chosen == 20 and not failing.kept_previous


def test_a_k_that_passes_only_by_luck_is_not_chosen() -> None:
    """A K at 0.005 below the baseline, on so few rows that the interval is wide, fails: the
    pessimistic end of the interval decides, as in the gate."""
    lucky = KnownCurve({k: 895 for k in range(1, 9)})
    curve = k_curve(list(range(8)), lucky, GateRule(tolerance=0.01, resamples=300), 1, 8)
    assert not curve.passed


def test_a_k_must_also_come_within_the_tolerance_of_the_best_rung() -> None:
    """When fewer features do better than all of them (0.96 from K=20 on, all features 0.90),
    the smallest K that matches all features (10, at 0.92) stops short: K is the smallest
    within the tolerance of the best rung."""
    good = {k: 500 if k < 10 else 920 if k < 20 else 960 for k in range(1, 65)}
    curve = k_curve(list(range(64)), KnownCurve(good), RULE, 1, 64)
    assert curve.chosen == 20 and curve.passed
    assert "and, within noise, of the best K on the ladder (0.9600 at K=27)" in curve.reason
    assert all(p.passed == (p.k >= 20) for p in curve.points)


@dataclass
class Saturating:
    """Explained variance that rises by 0.1 a pick up to ``knee`` picks, then by 0.002."""

    knee: int
    metric: str = "explained_variance"
    baseline_source: str = "all k_max picks"

    @property
    def n_rows(self) -> int:
        return 100

    @property
    def baseline_rows(self) -> int:
        return 100

    def value(self, k: int) -> float:
        return 0.1 * min(k, self.knee) + 0.002 * max(0, k - self.knee)

    def baseline(self, rows: np.ndarray) -> float:
        return self.value(64)

    def score(self, columns: list[int], rows: np.ndarray) -> float:
        return self.value(len(columns))


@pytest.mark.parametrize("knee", [4, 7, 9, 19])
def test_without_a_target_k_is_the_knee_of_the_reconstruction_curve(knee) -> None:
    curve = knee_curve(list(range(64)), Saturating(knee), RULE, 1, 64)
    assert curve.chosen == knee, curve.reason
    assert curve.reason.startswith(f"K={knee}: the knee of the reconstruction curve")
    # A weekly run keeps last week's K while the knee is within one rung of it.
    assert knee_curve(list(range(64)), Saturating(knee), RULE, 1, 64, previous=knee + 1).chosen == (
        knee + 1
    )
    assert knee_curve(list(range(64)), Saturating(knee), RULE, 1, 64, previous=2 * knee).chosen == (
        knee
    )


def test_small_samples_are_scored_on_every_row_by_cross_validation() -> None:
    few = 4 * MIN_HELD_OUT - 400
    folds = inner_folds(few, seed=0)
    assert len(folds) == 4
    held_out = np.concatenate([h for _, h in folds])
    assert sorted(held_out) == list(range(few))  # every row once
    assert all(not set(f) & set(h) for f, h in folds)  # never scored by a model that saw it
    many = inner_folds(4 * MIN_HELD_OUT, seed=0)
    assert len(many) == 1 and len(many[0][1]) == MIN_HELD_OUT


# --- the estimator ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    from cae_ray.demo import make_demo_data

    data = make_demo_data(rows=3000, features=100, informative=10, seed=0)
    frame = (data.frame - data.frame.mean()) / data.frame.std(ddof=0)
    return frame, data.target, data.informative


def test_the_cv_estimator_chooses_about_the_informative_count(table) -> None:
    X, y, informative = table
    selector = ConcreteFeatureSelectorCV(ConcreteFeatureSelector(epochs=60)).fit(X, y)
    assert 7 <= selector.k_ <= 13, selector.curve_.reason
    names = list(selector.get_feature_names_out())
    assert len(names) == selector.k_ and len(set(names) & set(informative)) >= 7
    assert selector.transform(X).shape == (len(X), selector.k_)
    assert selector.curve_.metric == "accuracy" and selector.curve_.passed
    assert selector.curve_.reason.startswith(f"K={selector.k_}: the smallest K")
    assert selector.selector_.k == 64  # the search trained k_max rows


def test_without_a_target_the_estimator_keeps_one_column_per_hidden_factor() -> None:
    """8 hidden factors, each behind 6 noisy columns, and 16 columns of noise: the
    reconstruction curve bends where every factor has a column."""
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((2000, 8))
    copies = np.repeat(factors, 6, axis=1) + 0.3 * rng.standard_normal((2000, 48))
    X = np.hstack([copies, 0.5 * rng.standard_normal((2000, 16))]).astype("float32")
    selector = ConcreteFeatureSelectorCV(ConcreteFeatureSelector(epochs=40), k_max=32).fit(X)
    assert selector.curve_.metric == "explained_variance"
    assert 7 <= selector.k_ <= 10, selector.curve_.reason
    covered = {int(i) // 6 for i in selector.selected_indices_ if i < 48}
    assert len(covered) >= 7, selector.selected_indices_


def test_k_auto_in_the_plain_estimator_points_at_the_cv_one(table) -> None:
    X, y, _ = table
    with pytest.raises(ConfigValidationError, match="ConcreteFeatureSelectorCV"):
        ConcreteFeatureSelector(k="auto").fit(X, y)  # type: ignore[arg-type]


# --- through the command line -----------------------------------------------------------------


def cae_ray(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **RAY_TEST_ENV}
    return subprocess.run(
        [sys.executable, "-m", "cae_ray.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def write_config(where: Path, table: Path, **selector: object) -> Path:
    config = {
        "data": {"path": str(table), "features": "f_*", "target": "label", "row_key": "id"},
        "selector": {"k": "auto", **selector},
        "training": {"epochs": 40, "batch_size": 64},
        "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": 1}},
    }
    where.write_text(yaml.safe_dump(config))
    return where


@pytest.fixture(scope="module")
def wide_table(tmp_path_factory) -> tuple[Path, list[str]]:
    directory = tmp_path_factory.mktemp("auto-k")
    informative = write_wide_parquet(directory / "table", rows=3000, features=100, informative=10)
    return directory / "table", informative


@pytest.mark.ray
def test_select_with_k_auto_prints_the_chosen_k_and_the_run_passes(wide_table, tmp_path) -> None:
    table, informative = wide_table
    config = write_config(tmp_path / "auto.yaml", table)
    selected = cae_ray("select", str(config), "--run-dir", "run", "--json", cwd=tmp_path)
    assert selected.returncode == 0, selected.stderr[-3000:]
    selection = json.loads(selected.stdout)
    assert 7 <= selection["k"] <= 13, selection["k_curve"]["reason"]
    assert selection["k_curve"]["chosen"] == selection["k"] and selection["k_curve"]["passed"]
    assert len(set(selection["selected_features"]) & set(informative)) >= 7
    done = cae_ray("run", str(config), "--run-dir", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "K chosen for you" in page and selection["k_curve"]["reason"] in page
    assert (tmp_path / "run" / "report" / "k_curve.png").exists()


@pytest.mark.ray
def test_when_no_k_up_to_k_max_passes_the_run_fails_the_gate_with_the_curve(
    wide_table, tmp_path
) -> None:
    table, _ = wide_table
    config = write_config(tmp_path / "short.yaml", table, k_max=3)
    done = cae_ray("run", str(config), "--run-dir", "run", cwd=tmp_path)
    assert done.returncode == EXIT_GATE, done.stderr[-3000:]
    selection = json.loads((tmp_path / "run" / "selection.json").read_text())
    assert selection["k"] == 3 and not selection["k_curve"]["passed"]
    assert "no K up to k_max=3" in selection["k_curve"]["reason"]
    assert (tmp_path / "run" / "report" / "k_curve.png").exists()


def test_bad_k_ranges_are_refused_before_any_work(wide_table, tmp_path) -> None:
    table, _ = wide_table
    swapped = write_config(tmp_path / "swapped.yaml", table, k_min=10, k_max=5)
    checked = cae_ray("config", "check", str(swapped), cwd=tmp_path)
    assert checked.returncode == EXIT_CONFIG
    assert "k_min=10 is above k_max=5" in checked.stderr
    too_many = write_config(tmp_path / "many.yaml", table, k_max=500)
    selected = cae_ray("select", str(too_many), "--run-dir", "run", cwd=tmp_path)
    assert selected.returncode == EXIT_INPUT, selected.stderr[-3000:]
    assert "k_max=500 but only 100 usable candidate features" in selected.stderr
    assert "set selector.k_max between 1 and 99" in selected.stderr
    assert not (tmp_path / "run" / "selection.json").exists()


def test_k_auto_is_the_default() -> None:
    config = validate_config({})
    assert config.selector.auto and config.selector.k_range(1000) == (1, 64)
    assert config.selector.k_range(20) == (1, 19)
