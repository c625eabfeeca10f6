"""The feature lifecycle across scheduled runs, on real Feast repos defined in Python: marks that
follow the latest run, one kept service, status, retirement and its undo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cae_ray.artifacts import EXPORT_MANIFEST, RETIRE_PLAN, RunDir
from cae_ray.config import Config, validate_config
from cae_ray.errors import EXIT_CONFIG
from cae_ray.feast.errors import (
    DirtyWorkTreeError,
    NoPruneYetError,
    NotLatestRunError,
    PlanOutdatedError,
)
from cae_ray.feast.journal import JOURNAL
from cae_ray.feast.overlay import TAG_PREFIX, mark_value
from cae_ray.feast.registry import prune, restore
from cae_ray.feast.repo import audit_records
from cae_ray.feast.retire import plan_retire, retire
from cae_ray.feast.status import check, feature_status
from cae_ray.pipeline import export, select, validate
from tests.feast_repo import (
    STATS,
    FeastRepo,
    feast_apply,
    feast_cli,
    feast_plan,
    make_definitions_repo,
    make_feast_repo,
    make_two_module_repo,
)
from tests.test_feast_prune import fresh_run, registry_state, run_config, unprivileged

pytestmark = [pytest.mark.feast, pytest.mark.ray]

DEPRECATED = TAG_PREFIX + "deprecated."


@pytest.fixture(scope="module")
def selected(ray_cluster, tmp_path_factory) -> tuple[Config, Path, FeastRepo]:
    """A run dir with a passed validation over a file-registry repo's data."""
    directory = tmp_path_factory.mktemp("lifecycle")
    data = make_feast_repo(directory, n_drivers=200)
    run = directory / "run"
    config = run_config(data, run)
    export(config, run)
    select(config, run)
    assert validate(config, run).passed
    return config, run, data


def in_repo(config: Config, repo: Path, **feast: Any) -> Config:
    assert config.feast is not None
    settings = {**config.feast.model_dump(), "repo": str(repo), **feast}
    return validate_config({**config.model_dump(mode="json"), "feast": settings})


def choosing(run: Path, to: Path, kept: list[str]) -> RunDir:
    """A copy of ``run`` whose selection keeps ``kept`` (``view__feature`` columns); pruned
    with --force, since no validation is of it."""
    fresh_run(run, to)
    selection = json.loads((to / "selection.json").read_text())
    selection["selected_features"] = kept
    (to / "selection.json").write_text(json.dumps(selection))
    return RunDir(to)


def marks(state: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(view, feature) -> mark, as the registry holds them."""
    return {
        (view, key.removeprefix(DEPRECATED)): value
        for view, fv in state["views"].items()
        for key, value in fv["tags"].items()
        if key.startswith(DEPRECATED)
    }


def clean(repo: Path) -> bool:
    return "No changes to registry" in feast_plan(repo)


def python_files(repo: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(repo.glob("*.py"))}


SELECTIONS = [
    ["driver_stats__s_00", "driver_stats__s_01", "driver_extra__trips"],
    ["driver_stats__s_02", "driver_stats__s_00", "driver_extra__rating"],
    ["driver_stats__s_03", "driver_stats__s_04", "driver_stats__s_05"],
]


def test_three_runs_in_a_row_marks_follow_the_latest_and_restore_steps_back(
    selected, tmp_path
) -> None:
    from typer.testing import CliRunner

    from cae_ray.cli import app

    config, run, data = selected
    repo = make_definitions_repo(tmp_path, data)
    defined = FeastRepo(repo, data.entities, data.n_drivers)
    config = in_repo(config, repo)
    states, plans = [registry_state(defined)], []
    for i, kept in enumerate(SELECTIONS):
        plan = prune(
            config, choosing(run, tmp_path / f"run{i}", kept), apply=True, force_reason="t"
        )
        state = registry_state(defined)
        unselected = {(v, f) for v, features in plan.deprecate.items() for f in features}
        assert set(marks(state)) == unselected  # exactly this run's, earlier ones gone
        ours = [name for name in state["services"] if name.startswith("cae_ray")]
        assert ours == ["cae_ray_selected"]
        assert state["services"]["cae_ray_selected"] == sorted(k.replace("__", ":") for k in kept)
        assert clean(repo)
        states.append(state)
        plans.append(plan)
        if i == 0:  # the next run's export still reads the deprecated features
            manifest = export(config, tmp_path / "next")
            assert len(manifest.columns) == len(STATS) + 2
            assert (tmp_path / "next" / EXPORT_MANIFEST).exists()

    # Deprecated by runs 1 and 2: the mark keeps run 1's id and first date.
    first, second = plans[0], plans[1]
    for feature in ("s_03", "s_04", "s_05"):
        mark = mark_value({"run": first.run_id, "since": first.at})
        assert marks(states[2])[("driver_stats", feature)] == mark
    assert second.removed == {"driver_stats": ["s_02"], "driver_extra": ["rating"]}
    assert second.added == {"driver_stats": ["s_01"], "driver_extra": ["trips"]}
    record = audit_records(repo)[-2]
    assert record["run_id"] == second.run_id and record["removed"] == second.removed

    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())
    shown = CliRunner().invoke(app, ["feast", "status", str(path), "--json"])
    assert shown.exit_code == 0, shown.output
    states_now = {(r["view"], r["feature"]): r for r in json.loads(shown.stdout)["features"]}
    third = plans[2]
    assert states_now[("driver_stats", "s_03")]["state"] == "kept"
    assert states_now[("driver_stats", "s_03")]["run"] == third.run_id
    s_01 = states_now[("driver_stats", "s_01")]
    assert (s_01["state"], s_01["run"], s_01["since"]) == ("deprecated", second.run_id, second.at)
    assert s_01["retire_after"] is not None

    with pytest.raises(NotLatestRunError, match=third.run_id):
        restore(str(repo), first.run_id)
    for plan, state in zip(reversed(plans), reversed(states[:-1]), strict=True):
        assert restore(str(repo), plan.run_id)["restored"]
        assert registry_state(defined) == state
        assert clean(repo)
    assert check(config).disagreements == []


def test_next_weeks_run_keeps_the_applied_selection_and_changes_no_mark(selected, tmp_path) -> None:
    """A week after an applied prune, a run on the same data whose own search (another seed)
    picks other features keeps the applied ones, as they are not worse beyond noise
    (gate/incumbent.py): the prune adds and removes no mark and `feast plan` stays clean."""
    config, run, data = selected
    repo = make_definitions_repo(tmp_path, data)
    defined = FeastRepo(repo, data.entities, data.n_drivers)
    first = prune(in_repo(config, repo), RunDir(fresh_run(run, tmp_path / "week1")), apply=True)
    applied = registry_state(defined)

    week2 = fresh_run(run, tmp_path / "week2")
    (week2 / "selection.json").unlink()
    training = {**config.training.model_dump(), "seed": WEEK2_SEED}
    config2 = validate_config(
        {**in_repo(config, repo).model_dump(mode="json"), "training": training}
    )
    selection = select(config2, week2)
    check = selection.incumbent
    kept = sorted(f"{view}__{f}" for view, features in first.keep.items() for f in features)
    assert check is not None and check.previous == kept
    assert check.challenger != check.previous, "the week's own search picked the same features"
    assert check.kept and check.churn == 0 and "within noise" in check.reason
    assert sorted(selection.selected_features) == check.previous
    assert validate(config2, week2).passed
    second = prune(config2, RunDir(week2), apply=True)
    assert (second.added, second.removed) == ({}, {})
    state = registry_state(defined)
    assert marks(state) == marks(applied) and state["services"] == applied["services"]
    assert clean(repo)


WEEK2_SEED = 1


def test_old_versions_services_are_reported_with_the_command_that_removes_them(
    selected, tmp_path
) -> None:
    from typer.testing import CliRunner

    from cae_ray.cli import app

    config, _, data = selected
    repo = make_definitions_repo(tmp_path, data)
    config = in_repo(config, repo)
    # What cae-ray before 0.2 left: an overlay of runs, each with a service cae_ray_<run id>.
    old = {
        "runs": {
            "0123abcd4567": {
                "at": "2026-01-05T10:00:00.000000+00:00",
                "deprecate": {"driver_stats": ["s_05"]},
                "feature_service": {
                    "name": "cae_ray_0123abcd4567",
                    "features": {"driver_stats": ["s_00"]},
                    "description": "old",
                },
                "validation": {},
                "forced_reason": None,
            }
        }
    }
    import yaml

    (repo / "cae_ray_deprecations.yaml").write_text(yaml.safe_dump(old))
    feast_apply(repo)
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())

    checked = CliRunner().invoke(app, ["feast", "check", str(path)])
    assert checked.exit_code == 0, checked.output
    said = " ".join(checked.output.split())
    assert f"cae-ray feast remove-services {path} cae_ray_0123abcd4567" in said
    status = {(s.view, s.feature): s for s in feature_status(config)}
    assert status[("driver_stats", "s_05")].since == "2026-01-05T10:00:00Z"

    refused = CliRunner().invoke(app, ["feast", "remove-services", str(path), "driver_model"])
    assert refused.exit_code == EXIT_CONFIG and "not a FeatureService of an older" in " ".join(
        refused.output.split()
    )
    removed = CliRunner().invoke(
        app, ["feast", "remove-services", str(path), "cae_ray_0123abcd4567"]
    )
    assert removed.exit_code == 0, removed.output
    assert (
        "cae_ray_0123abcd4567" not in registry_state(FeastRepo(repo, data.entities, 0))["services"]
    )
    assert check(config).leftovers == []
    assert clean(repo)


# --- retirement --------------------------------------------------------------------------------

KEEP = ["driver_stats__s_00", "driver_stats__s_01", "driver_extra__trips"]
"""Deprecates s_02 .. s_05 (built by a comprehension) and rating (a literal Field)."""


def git(repo: Path, *args: str) -> None:
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", *identity, "-C", str(repo), *args], check=True, capture_output=True)


def test_retirement_plans_a_diff_applies_refuses_and_restores_byte_for_byte(
    selected, tmp_path
) -> None:
    config, run, data = selected
    repo = make_two_module_repo(tmp_path, data, users=True)
    defined = FeastRepo(repo, data.entities, data.n_drivers)
    config = in_repo(config, repo, grace_period="0d")
    with pytest.raises(NoPruneYetError):
        plan_retire(config)
    prune(config, choosing(run, tmp_path / "run", KEEP), apply=True, force_reason="t")

    # Read by the user's FeatureService and on-demand view: skipped and named; the rest is due.
    read = plan_retire(config)
    assert read.skipped == {
        "driver_stats:s_02": ["FeatureService driver_model"],
        "driver_extra:rating": ["on-demand feature view rating_x2"],
    }
    assert {v: sorted(due) for v, due in read.due.items()} == {"driver_stats": STATS[3:]}
    (repo / "users.py").unlink()  # the user moves their readers off them
    feast_apply(repo)
    pruned, files = registry_state(defined), python_files(repo)

    plan = retire(config, RunDir(tmp_path / "plan"))
    assert plan.literal == {"driver_extra": ["rating"]}
    assert plan.by_code == {"driver_stats": ["s_02", "s_03", "s_04", "s_05"]}
    assert '-        Field(name="rating", dtype=Float32),  # the mean rating\n' in plan.diff
    assert plan.diff.startswith("--- a/extra.py\n+++ b/extra.py\n")
    assert (registry_state(defined), python_files(repo)) == (pruned, files)

    # A definitions file edited after the plan: the plan is refused, nothing changes.
    extra = repo / "extra.py"
    extra.write_text(extra.read_text() + "# edited after the plan\n")
    with pytest.raises(PlanOutdatedError, match=r"extra\.py changed since"):
        retire(config, RunDir(tmp_path / "plan"), apply=True)
    assert registry_state(defined) == pruned

    # Under git with uncommitted changes to a file it rewrites: refused unless forced.
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "definitions")
    extra.write_text(extra.read_text() + "# not committed\n")
    before = python_files(repo)
    with pytest.raises(DirtyWorkTreeError, match=r"extra\.py"):
        retire(config, RunDir(tmp_path / "dirty"), apply=True)
    done = retire(config, RunDir(tmp_path / "dirty"), apply=True, force=True)

    assert done.applied and done.count == 5
    assert "rating" not in extra.read_text() and "# not committed" in extra.read_text()
    assert (repo / "stats.py").read_bytes() == before["stats.py"]  # dropped by the hook
    assert clean(repo)
    listed = feast_cli(repo, "features list")
    assert "trips" in listed and "s_00" in listed
    assert not any(name in listed for name in ("rating", "s_02", "s_05"))
    retired = [s for s in feature_status(config) if s.state == "retired"]
    assert len(retired) == 5 and {s.run for s in retired} == {done.run_id}
    assert check(config).disagreements == []
    saved = json.loads((tmp_path / "dirty" / RETIRE_PLAN).read_text())
    assert saved["applied"] and saved["count"] == 5

    restored = restore(str(repo), done.run_id)
    assert restored["restored"]
    assert python_files(repo) == before  # byte for byte
    assert clean(repo)
    assert registry_state(defined) == pruned
    assert "rating" in feast_cli(repo, "features list")


def test_retire_in_the_cli_names_a_read_only_file_and_changes_nothing(selected, tmp_path) -> None:
    config, run, data = selected
    repo = make_two_module_repo(tmp_path, data)
    config = in_repo(config, repo, grace_period="0d")
    prune(config, choosing(run, tmp_path / "run", KEEP), apply=True, force_reason="t")
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())
    extra, files = repo / "extra.py", python_files(repo)
    cli = str(Path(sys.executable).parent / "cae-ray")
    extra.chmod(0o444)
    try:
        done = subprocess.run(
            unprivileged([cli, "retire", str(path), "--run-dir", str(tmp_path / "r"), "--apply"]),
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "1000"},
            check=False,
            timeout=300,
        )
    finally:
        extra.chmod(0o644)
    assert done.returncode == EXIT_CONFIG, done.stdout + done.stderr
    assert f"cannot write {extra} (Permission denied), so nothing was changed" in done.stderr
    assert python_files(repo) == files
    assert not (repo / JOURNAL).exists()


def test_retire_refuses_when_feast_apply_would_delete_what_the_definitions_lack(
    selected, tmp_path
) -> None:
    """A view applied with the Python SDK is not in the definitions: the `feast apply` of a
    retirement would delete it. Refused, naming it, and nothing changes."""
    import copy

    from feast import FeatureStore
    from typer.testing import CliRunner

    from cae_ray.cli import app

    config, run, data = selected
    repo = make_two_module_repo(tmp_path, data)
    defined = FeastRepo(repo, data.entities, data.n_drivers)
    config = in_repo(config, repo, grace_period="0d")
    prune(config, choosing(run, tmp_path / "run", KEEP), apply=True, force_reason="t")
    store = FeatureStore(repo_path=str(repo))
    sdk_view = copy.deepcopy(store.get_feature_view("driver_extra"))
    sdk_view.name = sdk_view.projection.name = "made_with_the_sdk"
    store.apply([sdk_view])
    pruned, files = registry_state(defined), python_files(repo)
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())

    args = ["retire", str(path), "--run-dir", str(tmp_path / "r"), "--apply"]
    done = CliRunner().invoke(app, args)
    said = " ".join(done.output.split())
    assert done.exit_code == EXIT_CONFIG, done.output
    assert "delete feature view 'made_with_the_sdk'" in said and "Nothing was changed" in said
    assert python_files(repo) == files
    assert registry_state(defined) == pruned
    assert "made_with_the_sdk" in pruned["views"]
    assert not (repo / JOURNAL).exists()


RETIRE_THEN_DIE = """
import importlib, json, os, signal, sys
from cae_ray.artifacts import RunDir
from cae_ray.config import validate_config
from cae_ray.feast import retire

config_path, run_dir, function = sys.argv[1:]
step = getattr(retire, function)

def then_die(*args, **kwargs):
    step(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

setattr(retire, function, then_die)
retire.retire(validate_config(json.load(open(config_path))), RunDir(run_dir), apply=True)
"""


@pytest.mark.parametrize("point", ["_feast_apply"])  # files and overlay written
def test_a_retirement_killed_part_way_is_rolled_back(selected, tmp_path, point: str) -> None:
    config, run, data = selected
    repo = make_two_module_repo(tmp_path, data)
    defined = FeastRepo(repo, data.entities, data.n_drivers)
    config = in_repo(config, repo, grace_period="0d")
    prune(config, choosing(run, tmp_path / "run", KEEP), apply=True, force_reason="t")
    pruned, files = registry_state(defined), python_files(repo)
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())

    died = subprocess.run(
        [sys.executable, "-c", RETIRE_THEN_DIE, str(path), str(tmp_path / "r"), point],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert died.returncode == -signal.SIGKILL, died.stdout + died.stderr
    assert (repo / JOURNAL).exists()

    assert check(config).disagreements == []  # recovers first: rolled back
    assert python_files(repo) == files
    assert registry_state(defined) == pruned
    assert clean(repo)


def test_bad_grace_periods_are_config_errors() -> None:
    from cae_ray.errors import ConfigValidationError

    def grace(period: object) -> timedelta:
        config = validate_config(
            {"feast": {"repo": "r", "features": ["v"], "grace_period": period}}
        )
        assert config.feast is not None
        return config.feast.grace

    for bad in ("thirty days", "30", "-1d", "1.5d", "d", "-P1D", "P"):
        with pytest.raises(ConfigValidationError, match=r"is not a duration.*P30D"):
            grace(bad)
    assert grace("0d").total_seconds() == 0
    # As Feast users write a view's ttl: ISO 8601, the clock form, or a timedelta from Python.
    assert grace("P30D") == grace("30d") == timedelta(days=30)
    assert grace("PT12H") == grace("12h") == grace("12:00:00") == timedelta(hours=12)
    assert grace("P1DT6H") == timedelta(days=1, hours=6)
    assert grace(timedelta(weeks=2)) == grace("2w")


def test_the_kept_service_cannot_be_the_export_source() -> None:
    from cae_ray.errors import ConfigValidationError

    with pytest.raises(ConfigValidationError, match="would shrink the candidates"):
        validate_config({"feast": {"repo": "r", "feature_service": "cae_ray_selected"}})


def test_a_run_reads_the_selection_of_the_models_latest_applied_prune(selected, tmp_path) -> None:
    """A weekly run keeps the registry's selection unless its own is better beyond noise, and a
    `k: auto` run keeps its K while it passes (gate/incumbent.py, gate/auto_k.py): both read
    the model's kept service after its latest applied prune, and no other model's."""
    from cae_ray.feast.overlay import applied_columns
    from cae_ray.pipeline import _applied_selection

    config, run, data = selected
    repo = make_definitions_repo(tmp_path, data)
    auto = validate_config(
        {**in_repo(config, repo).model_dump(mode="json"), "selector": {"k": "auto"}}
    )
    assert _applied_selection(auto) is None  # nothing applied yet: the run decides alone
    kept = choosing(run, tmp_path / "run0", SELECTIONS[0])
    prune(in_repo(config, repo), kept, apply=True, force_reason="t")
    applied = applied_columns(repo, "cae_ray_selected")
    assert applied is not None and sorted(applied) == sorted(SELECTIONS[0])
    assert _applied_selection(auto) == applied == _applied_selection(in_repo(config, repo))
    assert applied_columns(repo, "upsell_selected") is None
