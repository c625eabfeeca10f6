"""Many models on one feature store, on a real Feast repo defined in Python (with the overlay
hook), with the real `feast` CLI and real runs: two models with different labels (both in a
label view of the store) select from the same two views; a feature is deprecated only when
neither keeps it; each model's changes restore on their own; retirement and bad inputs."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cae_ray.artifacts import EXPORT_DIR, EXPORT_MANIFEST, PREPARED, RunDir
from cae_ray.cli import app
from cae_ray.config import Config, validate_config
from cae_ray.errors import EXIT_CONFIG
from cae_ray.feast.errors import (
    LabelLeakError,
    ModelLabelConflictError,
    NonNumericLabelError,
    NotLatestRunError,
    UnknownLabelError,
    UnknownModelError,
)
from cae_ray.feast.forget import forget_model
from cae_ray.feast.overlay import LAST_RUN, OVERLAY, deprecation_tag, read_overlay, readers_tag
from cae_ray.feast.registry import PrunePlan, prune, restore
from cae_ray.feast.retire import plan_retire, retire
from cae_ray.feast.status import check, feature_status
from cae_ray.pipeline import export, report
from tests.feast_repo import (
    EXTRA,
    LABELLED_READ,
    STATS,
    FeastRepo,
    entities_without_label,
    feast_apply,
    feast_cli,
    feast_plan,
    make_feast_repo,
    make_labelled_repo,
)
from tests.test_feast_prune import fresh_run, registry_state
from tests.test_lifecycle import choosing, marks

pytestmark = [pytest.mark.feast, pytest.mark.ray]

Ref = tuple[str, str]
CANDIDATES: set[Ref] = {("driver_stats", s) for s in STATS} | {("driver_extra", e) for e in EXTRA}
CHURN, UPSELL = "churn_selected", "upsell_selected"


@dataclass(frozen=True)
class Models:
    data: FeastRepo
    base: Path
    """The labelled repo as applied, before any prune: each test prunes a copy of it."""
    configs: dict[str, dict[str, Any]]
    runs: dict[str, Path]
    """Per config: a run dir of a whole `cae-ray run` (validated, prune planned only)."""


def model_config(repo: Path, entities: Path, target: str, kept_service: str, k: int) -> dict:
    return {
        "feast": {
            "repo": str(repo),
            "entities": str(entities),
            "features": ["driver_stats", "driver_extra"],
            "kept_service": kept_service,
            "retire": "off",
        },
        "data": {"target": target},
        "selector": {"k": k},
        "training": {"epochs": 3, "batch_size": 32},
        "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": 1}},
        "validation": {"tolerance": 1.0, "bootstrap": 100, "epochs": 3},
    }


@pytest.fixture(scope="module")
def models(ray_cluster, tmp_path_factory) -> Models:
    """Three whole `cae-ray run` s on the labelled repo: model A (churn, its label read from the
    store, entity rows without a label column), the same model with the label as an entity
    rows' column, and model B (upsell, another label from the store)."""
    directory = tmp_path_factory.mktemp("models")
    data = make_feast_repo(directory, n_drivers=200)
    base = make_labelled_repo(directory, data)
    bare = entities_without_label(data, directory / "entity_rows.parquet")
    configs = {
        "A": model_config(base, bare, "driver_labels:churned", CHURN, k=3),
        "A_column": model_config(base, data.entities, "label", "churn_from_column", k=3),
        "B": model_config(base, bare, "driver_labels:upsell", UPSELL, k=2),
    }
    runs = {}
    for name, config in configs.items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(config))
        runs[name] = directory / f"run_{name}"
        done = CliRunner().invoke(app, ["run", str(path), "--run-dir", str(runs[name])])
        assert done.exit_code == 0, done.output
    return Models(data, base, configs, runs)


def copy_repo(models: Models, to: Path) -> Path:
    """A fresh copy of the labelled repo (its registry is a file in it; sources are absolute)."""
    return Path(shutil.copytree(models.base, to / "repo"))


def config_in(models: Models, name: str, repo: Path, **feast: Any) -> Config:
    config = models.configs[name]
    return validate_config({**config, "feast": {**config["feast"], "repo": str(repo), **feast}})


def apply(models: Models, name: str, repo: Path, to: Path, **feast: Any) -> PrunePlan:
    """Model ``name``'s validated run, pruned with --apply into ``repo`` (from a copy)."""
    run = fresh_run(models.runs[name], to / f"run_{name}")
    return prune(config_in(models, name, repo, **feast), RunDir(run), apply=True)


def state(repo: Path) -> dict[str, Any]:
    return registry_state(FeastRepo(repo, repo / "none", 0))


def refs(per_view: dict[str, list[str]]) -> set[Ref]:
    return {(view, f) for view, features in per_view.items() for f in features}


def clean(repo: Path) -> bool:
    return "No changes to registry" in feast_plan(repo)


def config_file(models: Models, name: str, repo: Path, to: Path) -> Path:
    path = to / f"{name}-config.json"
    path.write_text(config_in(models, name, repo).model_dump_json())
    return path


def said(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines


def test_a_label_from_the_store_selects_as_an_entity_rows_column_does(models) -> None:
    from_store = json.loads((models.runs["A"] / "selection.json").read_text())
    from_column = json.loads((models.runs["A_column"] / "selection.json").read_text())

    assert from_store["selected_features"] == from_column["selected_features"]
    assert from_store["candidate_features"] == from_column["candidate_features"]
    manifest = json.loads((models.runs["A"] / EXPORT_MANIFEST).read_text())
    assert manifest["entity_columns"] == ["driver_id", "event_timestamp"]  # no label column
    assert manifest["label"] == {"ref": "driver_labels:churned", "column": "driver_labels__churned"}
    assert sorted(manifest["columns"]) == sorted(f"{v}__{f}" for v, f in CANDIDATES)
    prepared = json.loads((models.runs["A"] / PREPARED).read_text())
    assert prepared["target"]["column"] == "driver_labels__churned"
    assert prepared["target"]["classes"] == [0, 1]
    record = json.loads((models.runs["A"] / "run.json").read_text())
    assert record["status"] == "succeeded"


def test_two_models_each_keep_their_features_and_restore_on_their_own(models, tmp_path) -> None:
    repo = copy_repo(models, tmp_path)
    a = apply(models, "A", repo, tmp_path)
    after_a = state(repo)
    b = apply(models, "B", repo, tmp_path)
    after_b = state(repo)

    # The marks are exactly the features neither keeps; each model's service holds its own.
    kept_a, kept_b = refs(a.keep), refs(b.keep)
    neither = CANDIDATES - kept_a - kept_b
    assert set(marks(after_b)) == neither
    assert after_b["services"][CHURN] == sorted(f"{v}:{f}" for v, f in kept_a)
    assert after_b["services"][UPSELL] == sorted(f"{v}:{f}" for v, f in kept_b)
    assert after_b["services"]["driver_model"] == after_a["services"]["driver_model"]
    assert refs({v: list(fs) for v, fs in b.kept_by_others.items()}) == refs(b.deprecate) & kept_a
    assert all(m == [CHURN] for fs in b.kept_by_others.values() for m in fs.values())
    for view, feature in neither:
        mark = after_b["views"][view]["tags"][deprecation_tag(feature)]
        if (view, feature) in refs(a.deprecate):  # left out by both: dated by B, the later
            run, _, since = mark.partition("@")
            runs = {b.run_id} if a.at < b.at else {a.run_id, b.run_id}  # stamps are seconds
            assert since == b.at and run in runs
        read = view == "driver_stats" and feature in LABELLED_READ
        assert after_b["views"][view]["tags"].get(readers_tag(feature)) == (
            "driver_model" if read else None
        )
    assert after_b["views"]["driver_stats"]["tags"][LAST_RUN] == b.run_id
    assert clean(repo)
    feast_apply(repo)  # the team's next apply, from the repo, keeps it all
    assert state(repo) == after_b
    assert check(config_in(models, "B", repo)).disagreements == []

    # `feast status --json` lists per feature the models that keep it.
    path = config_file(models, "B", repo, tmp_path)
    shown = CliRunner().invoke(app, ["feast", "status", str(path), "--json"])
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.stdout)
    rows = {(r["view"], r["feature"]): r for r in status["features"]}
    for ref in CANDIDATES:
        keep = [m for m, kept in ((CHURN, kept_a), (UPSELL, kept_b)) if ref in kept]
        assert rows[ref]["models"] == keep
        assert rows[ref]["state"] == ("kept" if keep else "deprecated")
    assert set(status["models"]) == {CHURN, UPSELL}
    assert status["models"][UPSELL]["label"] == "driver_labels:upsell"
    views = {v["view"]: v for v in status["views"]}
    assert views["driver_stats"]["deprecated"] == sum(v == "driver_stats" for v, _ in neither)
    only_b = CliRunner().invoke(app, ["feast", "status", str(path), "--model", UPSELL, "--json"])
    listed = {(r["view"], r["feature"]) for r in json.loads(only_b.stdout)["features"]}
    assert listed == kept_b | refs(b.deprecate)  # B's candidates

    # The report of B's run names the other model and what it keeps.
    report(config_in(models, "B", repo), tmp_path / "run_B")
    page = (tmp_path / "run_B" / "report" / "report.html").read_text()
    assert "Other models sharing these views" in page and CHURN in page

    # A third run of A (another selection) changes nothing of B's state.
    b_state = read_overlay(repo)["models"][UPSELL]
    other = sorted(CANDIDATES - kept_a)[:3]
    third = prune(
        config_in(models, "A", repo),
        choosing(models.runs["A"], tmp_path / "third", [f"{v}__{f}" for v, f in other]),
        apply=True,
        force_reason="test",
    )
    assert read_overlay(repo)["models"][UPSELL] == b_state
    assert state(repo)["services"][UPSELL] == after_b["services"][UPSELL]
    assert set(marks(state(repo))) == CANDIDATES - set(other) - kept_b

    # Restoring B's run (once A's later run is undone) gives the registry as after A's run.
    assert restore(str(repo), third.run_id)["restored"]
    assert state(repo) == after_b
    assert restore(str(repo), b.run_id)["restored"]
    assert state(repo) == after_a
    assert clean(repo)

    # forget-model B: the same.
    apply(models, "B", repo, tmp_path / "again")
    planned = CliRunner().invoke(app, ["feast", "forget-model", str(path), UPSELL])
    assert planned.exit_code == 0, planned.output
    assert "Plan only, nothing changed" in said(planned.output)
    forgot = CliRunner().invoke(app, ["feast", "forget-model", str(path), UPSELL, "--apply"])
    assert forgot.exit_code == 0, forgot.output
    assert state(repo) == after_a
    assert clean(repo)
    assert check(config_in(models, "A", repo)).disagreements == []
    forget_id = said(forgot.output).split("--run-id ")[1].split()[0]
    assert restore(str(repo), forget_id)["restored"]  # restorable: B is back
    assert state(repo)["services"][UPSELL] == after_b["services"][UPSELL]
    assert set(marks(state(repo))) == neither


def test_retirement_takes_what_every_model_left_out_and_skips_what_a_service_reads(
    models, tmp_path
) -> None:
    repo = copy_repo(models, tmp_path)
    # Chosen selections (forced), so that the team's service reads some of what neither keeps.
    keep_a = ["driver_stats__s_01", "driver_stats__s_02", "driver_extra__trips"]
    keep_b = ["driver_stats__s_02", "driver_stats__s_03"]
    config_a = config_in(models, "A", repo, grace_period="0d")
    config_b = config_in(models, "B", repo, grace_period="0d")
    prune(
        config_a, choosing(models.runs["A"], tmp_path / "a", keep_a), apply=True, force_reason="t"
    )
    prune(
        config_b, choosing(models.runs["B"], tmp_path / "b", keep_b), apply=True, force_reason="t"
    )
    pruned, files = state(repo), (repo / "definitions.py").read_bytes()

    # Not due for an hour: the grace period counts from the last model's run.
    waiting = plan_retire(config_in(models, "A", repo, grace_period="1h"))
    assert waiting.due == {}
    in_an_hour = datetime.now(timezone.utc) + timedelta(hours=1)
    assert waiting.next_due in {f"{in_an_hour:%Y-%m-%d}", f"{in_an_hour + timedelta(1):%Y-%m-%d}"}
    assert waiting.headline == f"none due yet; the first on {waiting.next_due} (grace 1h)"
    plan = plan_retire(config_a)
    # s_01 and trips (kept by A, left out by B) and s_03 (kept by B) are not due; of what
    # neither keeps, s_00 and s_04 are read by the team's driver_model: skipped, named.
    assert {v: sorted(fs) for v, fs in plan.due.items()} == {
        "driver_extra": ["rating"],
        "driver_stats": ["s_05"],
    }
    assert plan.skipped == {
        "driver_stats:s_00": ["FeatureService driver_model"],
        "driver_stats:s_04": ["FeatureService driver_model"],
    }
    done = retire(config_a, RunDir(tmp_path / "retire"), apply=True)
    assert done.applied and done.count == 2
    assert clean(repo)
    listed = feast_cli(repo, "features list")
    assert "s_00" in listed and "s_01" in listed and "s_05" not in listed
    retired = {(s.view, s.feature) for s in feature_status(config_a) if s.state == "retired"}
    assert retired == {("driver_stats", "s_05"), ("driver_extra", "rating")}
    assert check(config_a).readers == [
        f"driver_stats:{f} is deprecated (no model keeps it) and still read by FeatureService "
        "driver_model"
        for f in ("s_00", "s_04")
    ]

    assert restore(str(repo), done.run_id)["restored"]
    assert (repo / "definitions.py").read_bytes() == files
    assert state(repo) == pruned
    assert clean(repo)


def repo_files(repo: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}


def test_bad_inputs_are_typed_errors_that_change_nothing(models, tmp_path) -> None:
    repo = copy_repo(models, tmp_path)
    apply(models, "A", repo, tmp_path)
    files = repo_files(repo)

    # Two configs claiming one kept service with different labels.
    clash = config_in(models, "B", repo, kept_service=CHURN)
    run_b = RunDir(fresh_run(models.runs["B"], tmp_path / "run_B"))
    with pytest.raises(ModelLabelConflictError, match="'driver_labels:churned'"):
        prune(clash, run_b, apply=True)
    path = tmp_path / "clash.json"
    path.write_text(clash.model_dump_json())
    refused = CliRunner().invoke(app, ["prune", str(path), "--run-dir", str(run_b.path(""))])
    assert refused.exit_code == EXIT_CONFIG, refused.output
    assert "give this config its own feast.kept_service" in said(refused.output)

    # forget-model of a model that never ran here.
    with pytest.raises(UnknownModelError, match="Did you mean 'churn_selected'"):
        forget_model(config_in(models, "A", repo), "churn_selectd", apply=True)
    path = config_file(models, "A", repo, tmp_path)
    unknown = CliRunner().invoke(app, ["feast", "forget-model", str(path), "nope", "--apply"])
    assert unknown.exit_code == EXIT_CONFIG and "no model 'nope'" in said(unknown.output)
    assert repo_files(repo) == files

    # A label that is not there, not a number, or in a candidate view: nothing is exported.
    bad = [
        ("driver_labels:nope", UnknownLabelError, "has no field 'nope'", None),
        ("driver_lables:churned", UnknownLabelError, "no feature view 'driver_lables'", None),
        ("driver_labels:segment", NonNumericLabelError, "not a number or a boolean", None),
        ("driver_labels:churned", LabelLeakError, "would leak the label", "driver_labels"),
    ]
    for i, (target, error, message, also) in enumerate(bad):
        config = models.configs["A"]
        features = [*config["feast"]["features"], *([also] if also else [])]
        feast = {**config["feast"], "repo": str(repo), "features": features}
        bad_config = validate_config({**config, "feast": feast, "data": {"target": target}})
        with pytest.raises(error, match=message):
            export(bad_config, tmp_path / f"bad{i}")
        assert not (tmp_path / f"bad{i}" / EXPORT_DIR).exists()
    assert repo_files(repo) == files


def test_an_overlay_of_the_previous_version_reads_as_one_model(models, tmp_path) -> None:
    import yaml

    repo = copy_repo(models, tmp_path)
    mark = {"run": "0123abcd4567", "since": "2026-01-05T10:00:00Z"}
    old = {  # as cae-ray 0.2 wrote it: one kept service, the marks of its latest run
        "version": 2,
        "marks": {"driver_stats": {"s_05": mark}},
        "last_run": {"driver_stats": "0123abcd4567", "driver_extra": "0123abcd4567"},
        "kept_service": {
            "name": "cae_ray_selected",
            "run": "0123abcd4567",
            "at": "2026-01-05T10:00:00Z",
            "features": {"driver_stats": ["s_01"]},
            "description": "The 1 features cae-ray kept in run 0123abcd4567",
        },
        "retired": {},
        "legacy_services": {},
    }
    pristine = state(repo)
    (repo / OVERLAY).write_text(yaml.safe_dump(old))
    # ... and the audit record of that prune, as 0.2 wrote it (what stood before: nothing).
    views = ["driver_stats", "driver_extra"]
    previous: dict[str, Any] = {"tags": {v: {} for v in views}, "kept_service": None}
    previous |= {"marks": dict.fromkeys(views), "last_run": dict.fromkeys(views), "service": None}
    record = {
        "action": "prune",
        "run_id": "0123abcd4567",
        "project": "cae_ray_test",
        "feature_service": "cae_ray_selected",
        "deprecate": {"driver_stats": ["s_05"]},
        "keep": {"driver_stats": ["s_01"]},
        "previous": {**previous, "legacy_service": None},
        "journal": "0" * 32,
    }
    (repo / "cae_ray_audit.jsonl").write_text(json.dumps(record) + "\n")
    feast_apply(repo)
    before = state(repo)
    tags = before["views"]["driver_stats"]["tags"]
    assert tags[deprecation_tag("s_05")] == "0123abcd4567@2026-01-05T10:00:00Z"
    assert tags[LAST_RUN] == "0123abcd4567"
    config = config_in(models, "A", repo, kept_service="cae_ray_selected")

    findings = check(config)
    assert findings.disagreements == []
    assert len(findings.notes) == 1 and "model cae_ray_selected" in findings.notes[0]
    assert "earlier cae-ray version (format 2)" in findings.notes[0]
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())
    checked = CliRunner().invoke(app, ["feast", "check", str(path)])
    assert checked.exit_code == 0, checked.output
    assert "note: model cae_ray_selected was read from an overlay" in said(checked.output)

    # Its next run records the label; a feature it still leaves out keeps its first date.
    a = apply(models, "A", repo, tmp_path, kept_service="cae_ray_selected")
    assert check(config).notes == []
    assert read_overlay(repo)["models"]["cae_ray_selected"]["label"] == "driver_labels:churned"
    if "s_05" in a.deprecate.get("driver_stats", []):
        marked = state(repo)["views"]["driver_stats"]["tags"][deprecation_tag("s_05")]
        assert marked == "0123abcd4567@2026-01-05T10:00:00Z"
    assert clean(repo)
    with pytest.raises(NotLatestRunError, match=a.run_id):  # the same model's later run
        restore(str(repo), "0123abcd4567")
    assert restore(str(repo), a.run_id)["restored"]
    assert state(repo) == before
    # The prune 0.2 applied restores too: the registry as before it.
    assert restore(str(repo), "0123abcd4567")["restored"]
    assert state(repo) == pristine
    assert clean(repo)
