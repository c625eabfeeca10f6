"""The rules of many models on one feature store, on plain data (no Feast, no Ray): which
features are marked, since when, which run a view last saw, which change may be restored, and
how an overlay of the previous version reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cae_ray.feast.models import after_prune, derive_marks, keepers, last_runs, mark_changes
from cae_ray.feast.overlay import (
    OVERLAY,
    all_view_tags,
    empty,
    read_overlay,
    services,
    write_overlay,
)
from cae_ray.feast.repo import blocking_actions, live_actions

CANDIDATES = {"v": ["a", "b", "c", "d"]}


def model(
    run: str,
    at: str,
    keep: list[str],
    before: dict[str, Any] | None = None,
    label: str = "y",
    order: int = 1,
) -> dict[str, Any]:
    """A model's state after a run over view ``v`` that keeps ``keep``."""
    unselected = [f for f in CANDIDATES["v"] if f not in keep]
    return after_prune(
        before,
        run_id=run,
        at=at,
        label=label,
        keep={"v": keep},
        unselected={"v": unselected},
        description="",
        order=order,
    )


def test_a_feature_is_marked_only_when_no_model_keeps_it() -> None:
    models = {
        "churn": model("r1", "2026-01-01T00:00:00Z", ["a", "b"]),
        "upsell": model("r2", "2026-02-01T00:00:00Z", ["b", "c"]),
    }
    assert set(derive_marks(models)["v"]) == {"d"}
    assert keepers(models)[("v", "b")] == ["churn", "upsell"]
    # One model alone marks all it leaves out.
    assert set(derive_marks({"churn": models["churn"]})["v"]) == {"c", "d"}


def test_a_mark_dates_from_when_the_last_model_stopped_keeping_the_feature() -> None:
    churn = model("r1", "2026-01-01T00:00:00Z", ["a", "b"])
    upsell = model("r2", "2026-02-01T00:00:00Z", ["c", "d"])
    later = model("r3", "2026-03-01T00:00:00Z", ["a", "b"], before=upsell)  # stops keeping c, d
    marks = derive_marks({"churn": churn, "upsell": later})["v"]
    assert marks == {
        "c": {"run": "r3", "since": "2026-03-01T00:00:00Z"},
        "d": {"run": "r3", "since": "2026-03-01T00:00:00Z"},
    }
    # Left out again by the next run: the first date stays.
    again = model("r4", "2026-04-01T00:00:00Z", ["a", "b"], before=later)
    assert derive_marks({"churn": churn, "upsell": again})["v"] == marks


def test_retired_features_carry_no_mark_and_last_runs_follow_the_latest_model() -> None:
    churn = model("r1", "2026-01-01T00:00:00Z", ["a"])
    upsell = model("r2", "2026-02-01T00:00:00Z", ["a"])
    models = {"churn": churn, "upsell": upsell}
    assert set(derive_marks(models, {"v": {"d": {}}})["v"]) == {"b", "c"}
    assert last_runs(models) == {"v": "r2"}
    # Two runs stamped in the same second: the one applied later is the view's last run.
    same = "2026-02-01T00:00:00Z"
    first, second = model("r9", same, ["a"], order=1), model("r1", same, ["a"], order=2)
    assert last_runs({"churn": first, "upsell": second}) == {"v": "r1"}
    added, removed = mark_changes(derive_marks({"churn": churn}), derive_marks(models))
    assert (added, removed) == ({}, {})
    kept = model("r3", "2026-03-01T00:00:00Z", ["a", "b"], before=upsell)
    added, removed = mark_changes(derive_marks(models), derive_marks({**models, "upsell": kept}))
    assert (added, removed) == ({}, {"v": ["b"]})


def test_each_model_restores_its_own_latest_change() -> None:
    def record(action: str, run_id: str, model: str | None = None) -> dict[str, Any]:
        return {"action": action, "run_id": run_id, "model": model}

    records = [
        record("prune", "a1", "churn"),
        record("prune", "b1", "upsell"),
        record("prune", "a2", "churn"),
    ]
    live = live_actions(records)
    assert blocking_actions(live, "b1") == []  # churn's later run is not upsell's
    assert [r["run_id"] for r in blocking_actions(live, "a1")] == ["a2"]
    records += [record("retire", "retire-1"), record("forget-model", "forget-1", "churn")]
    live = live_actions(records)
    assert [r["run_id"] for r in blocking_actions(live, "b1")] == ["retire-1"]
    assert [r["run_id"] for r in blocking_actions(live, "retire-1")] == ["forget-1"]
    live = live_actions([*records, record("restore", "forget-1")])
    assert blocking_actions(live, "retire-1") == []


def test_an_overlay_of_the_previous_version_reads_as_one_model(tmp_path: Path) -> None:
    old = {
        "version": 2,
        "marks": {"v": {"c": {"run": "r0", "since": "2026-01-05T10:00:00Z"}}},
        "last_run": {"v": "r1", "w": "r0"},
        "kept_service": {
            "name": "churn_selected",
            "run": "r1",
            "at": "2026-01-06T10:00:00Z",
            "features": {"v": ["a"]},
            "description": "kept",
        },
        "retired": {},
        "legacy_services": {},
    }
    (tmp_path / OVERLAY).write_text(yaml.safe_dump(old))
    overlay = read_overlay(tmp_path)

    assert list(overlay["models"]) == ["churn_selected"]
    state = overlay["models"]["churn_selected"]
    assert (state["migrated"], state["label"]) == (2, None)
    # The registry tags the previous version wrote are the ones the state means now.
    assert all_view_tags(overlay) == {
        "v": {"cae-ray/deprecated.c": "r0@2026-01-05T10:00:00Z", "cae-ray/last-run": "r1"},
        "w": {"cae-ray/last-run": "r0"},
    }
    assert services(overlay)["churn_selected"]["features"] == {"v": ["a"]}


def test_the_overlay_file_holds_each_models_state_as_it_was(tmp_path: Path) -> None:
    first = model("r1", "2026-01-01T00:00:00Z", ["a"])
    later = model("r2", "2026-02-01T00:00:00Z", ["a", "b"], before=first)  # c, d: r1's marks
    other = model("r3", "2026-02-02T00:00:00Z", ["d"], label="z")
    overlay = {**empty(), "models": {"churn": later, "upsell": other}}
    write_overlay(tmp_path, overlay)

    assert read_overlay(tmp_path) == overlay
    # One group per mark in the file: the features a run left out share one entry.
    stored = yaml.safe_load((tmp_path / OVERLAY).read_text())
    assert stored["version"] == 3
    assert stored["models"]["churn"]["dropped"] == {
        "v": [{"run": "r1", "since": "2026-01-01T00:00:00Z", "features": ["c", "d"]}]
    }
