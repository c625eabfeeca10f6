"""`prune` and `restore` against real Feast registries (file and SQL), from a real run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cae_ray.artifacts import EXPORT_DIR, PRUNE_PLAN, VALIDATION, RunDir
from cae_ray.config import Config, validate_config
from cae_ray.feast.entities import ROW_ID
from cae_ray.feast.errors import PruneRefusedError, UnknownRunIdError
from cae_ray.feast.journal import JOURNAL
from cae_ray.feast.overlay import LAST_RUN, deprecation_tag, parse_mark
from cae_ray.feast.registry import prune, restore
from cae_ray.feast.repo import AUDIT_LOG, audit_records
from cae_ray.feast.status import check
from cae_ray.pipeline import export, select, validate
from tests.feast_repo import FeastRepo, feast_plan, make_definitions_repo, make_feast_repo

pytestmark = [pytest.mark.feast, pytest.mark.ray]


def run_config(repo: FeastRepo, run: Path, **validation: Any) -> Config:
    return validate_config(
        {
            "feast": {
                "repo": str(repo.path),
                "entities": str(repo.entities),
                "features": ["driver_stats", "driver_extra"],
            },
            "data": {
                "path": str(run / EXPORT_DIR),
                "features": "driver_*__*",
                "target": "label",
                "row_key": ROW_ID,
            },
            "selector": {"k": 3},
            "training": {"epochs": 3, "batch_size": 32},
            "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": 1}},
            "validation": {"tolerance": 1.0, "bootstrap": 100, "epochs": 3, **validation},
        }
    )


@pytest.fixture(scope="module", params=["file", "sql"])
def validated_run(request, ray_cluster, tmp_path_factory) -> tuple[Config, Path, FeastRepo]:
    """A Feast repo (file or SQL registry) and a run dir with a passed validation."""
    directory = tmp_path_factory.mktemp(f"prune-{request.param}")
    repo = make_feast_repo(directory, n_drivers=200, registry=request.param)
    run = directory / "run"
    config = run_config(repo, run)
    export(config, run)
    select(config, run)
    assert validate(config, run).passed
    return config, run, repo


def registry_state(repo: FeastRepo) -> dict[str, Any]:
    """What a prune may change, read by a fresh FeatureStore: view tags and features, services."""
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo.path))
    views = {
        fv.name: {"tags": dict(fv.tags), "features": [(f.name, str(f.dtype)) for f in fv.features]}
        for fv in store.list_feature_views()
    }
    services = {
        s.name: sorted(f"{p.name}:{f.name}" for p in s.feature_view_projections for f in p.features)
        for s in store.list_feature_services()
    }
    return {"views": views, "services": services}


def fresh_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("ray"))
    return to


def test_plan_only_changes_nothing(validated_run, tmp_path) -> None:
    config, run, repo = validated_run
    before = registry_state(repo)
    plan = prune(config, RunDir(fresh_run(run, tmp_path / "run")))

    assert registry_state(repo) == before
    saved = json.loads((tmp_path / "run" / PRUNE_PLAN).read_text())
    assert saved["applied"] is False
    deprecated = sum(len(v) for v in plan.deprecate.values())
    assert deprecated == 8 - 3 and sum(len(v) for v in plan.keep.values()) == 3


def test_apply_marks_then_restore_gives_the_original_back(validated_run, tmp_path) -> None:
    config, run, repo = validated_run
    before = registry_state(repo)
    plan = prune(config, RunDir(fresh_run(run, tmp_path / "run")), apply=True)

    after = registry_state(repo)
    for view, features in plan.deprecate.items():
        tags = after["views"][view]["tags"]
        assert tags[LAST_RUN] == plan.run_id
        assert all(parse_mark(tags[deprecation_tag(f)])["run"] == plan.run_id for f in features)
        assert after["views"][view]["features"] == before["views"][view]["features"]
    kept = sorted(f"{v}:{f}" for v, features in plan.keep.items() for f in features)
    assert after["services"][plan.feature_service] == kept
    records = [json.loads(line) for line in (repo.path / AUDIT_LOG).read_text().splitlines()]
    assert records[-1]["action"] == "prune" and records[-1]["run_id"] == plan.run_id
    assert records[-1]["validation"]["metric"] == "accuracy"

    restore(str(repo.path), plan.run_id)
    assert registry_state(repo) == before


def test_a_prune_failing_half_way_leaves_the_registry_as_it_was(validated_run, tmp_path) -> None:
    config, run, repo = validated_run
    before = registry_state(repo)

    def fail_after(view: str) -> None:
        raise RuntimeError(f"injected failure after {view}")

    with pytest.raises(RuntimeError, match="injected failure"):
        prune(
            config, RunDir(fresh_run(run, tmp_path / "run")), apply=True, on_view_written=fail_after
        )
    assert registry_state(repo) == before


def test_no_prune_without_a_passed_validation_unless_forced(validated_run, tmp_path) -> None:
    config, run, repo = validated_run
    before = registry_state(repo)
    unvalidated = fresh_run(run, tmp_path / "run")
    (unvalidated / VALIDATION).unlink()

    with pytest.raises(PruneRefusedError, match="never validated"):
        prune(config, RunDir(unvalidated), apply=True)
    assert registry_state(repo) == before

    plan = prune(config, RunDir(unvalidated), apply=True, force_reason="urgent cost cut")
    records = [json.loads(line) for line in (repo.path / AUDIT_LOG).read_text().splitlines()]
    assert records[-1]["forced_reason"] == "urgent cost cut"
    assert "never validated" in records[-1]["validation"]["forced_despite"]
    restore(str(repo.path), plan.run_id)
    assert registry_state(repo) == before


def test_restore_of_an_unknown_run_id(validated_run) -> None:
    _, _, repo = validated_run
    with pytest.raises(UnknownRunIdError, match="no prune or retirement with run id 'nope'"):
        restore(str(repo.path), "nope")


def test_the_cli_plans_by_default_and_force_needs_a_reason(validated_run, tmp_path) -> None:
    from typer.testing import CliRunner

    from cae_ray.cli import app
    from cae_ray.errors import EXIT_CONFIG

    config, run, repo = validated_run
    before = registry_state(repo)
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())
    args = ["prune", str(path), "--run-dir", str(fresh_run(run, tmp_path / "run"))]

    planned = CliRunner().invoke(app, args)
    assert planned.exit_code == 0, planned.output
    assert "Plan only, nothing written" in " ".join(planned.output.split())
    forced = CliRunner().invoke(app, [*args, "--apply", "--force"])
    assert forced.exit_code == EXIT_CONFIG
    assert "--force needs --reason" in forced.output
    checked = CliRunner().invoke(app, [*args, "--check"])
    assert checked.exit_code == 0, checked.output
    assert "agree" in checked.output
    # --json: one JSON document on stdout and nothing else there, for scripts.
    plan = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    assert plan["applied"] is False and plan["deprecate"] and plan["run_id"]
    verdict = CliRunner().invoke(app, ["validate", *args[1:], "--json"])
    assert verdict.exit_code == 0, verdict.output
    assert json.loads(verdict.stdout)["passed"] is True
    assert registry_state(repo) == before


def test_marks_survive_feast_apply_through_the_repo_overlay(validated_run, tmp_path) -> None:
    from tests.feast_repo import feast_apply, make_definitions_repo

    config, run, repo = validated_run
    defined = FeastRepo(make_definitions_repo(tmp_path, repo), repo.entities, repo.n_drivers)
    before = registry_state(defined)
    assert config.feast is not None
    feast = {**config.feast.model_dump(), "repo": str(defined.path)}
    in_defined_repo = validate_config({**config.model_dump(mode="json"), "feast": feast})

    plan = prune(in_defined_repo, RunDir(fresh_run(run, tmp_path / "run")), apply=True)
    assert not plan.hook_missing
    marked = registry_state(defined)
    feast_apply(defined.path)  # the team's next apply, from the repo
    assert registry_state(defined) == marked
    assert check(in_defined_repo).disagreements == []
    assert plan.feature_service in marked["services"]

    restore(str(defined.path), plan.run_id)
    feast_apply(defined.path)
    assert registry_state(defined) == before


def test_a_repo_without_the_hook_gets_a_warning(validated_run, tmp_path, caplog) -> None:
    config, run, repo = validated_run
    before = registry_state(repo)
    plan = prune(config, RunDir(fresh_run(run, tmp_path / "run")), apply=True)

    assert plan.hook_missing  # the fixture's repo is applied from code, with no definitions
    assert "the next `feast apply` will remove these marks" in caplog.text
    assert check(config).disagreements == []
    (repo.path / "cae_ray_deprecations.yaml").rename(tmp_path / "overlay.yaml")
    # the marks are only in the registry now
    assert any("in the registry" in p for p in check(config).disagreements)
    (tmp_path / "overlay.yaml").rename(repo.path / "cae_ray_deprecations.yaml")
    restore(str(repo.path), plan.run_id)
    assert registry_state(repo) == before


def test_two_prunes_at_the_same_time_both_keep_their_marks(validated_run, tmp_path) -> None:
    import threading
    import time

    config, run, repo = validated_run
    before = registry_state(repo)
    first = fresh_run(run, tmp_path / "first")
    second = fresh_run(run, tmp_path / "second")
    selection = json.loads((second / "selection.json").read_text())
    selection["selected_features"] = selection["candidate_features"][:3]  # another selection
    (second / "selection.json").write_text(json.dumps(selection))
    plans = {}

    def run_prune(run_dir: Path, **kwargs: Any) -> None:
        # Hold each prune inside its read-modify-write so the two would overlap without a lock.
        plans[run_dir.name] = prune(
            config,
            RunDir(run_dir),
            apply=True,
            on_view_written=lambda view: time.sleep(0.5),
            **kwargs,
        )

    threads = [
        threading.Thread(target=run_prune, args=(first,)),
        threading.Thread(target=run_prune, args=(second,), kwargs={"force_reason": "test"}),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # One after the other, whole: the registry holds exactly the later one's marks.
    state = registry_state(repo)
    order = [r["run_id"] for r in audit_records(repo.path) if r["action"] == "prune"][-2:]
    later = next(plan for plan in plans.values() if plan.run_id == order[-1])
    assert later.feature_service in state["services"]
    for view, fv in state["views"].items():
        marked = {k.removeprefix("cae-ray/deprecated.") for k in fv["tags"] if "deprecated." in k}
        assert marked == set(later.deprecate.get(view, []))
    assert check(config).disagreements == []
    for run_id in reversed(order):
        restore(str(repo.path), run_id)
    assert registry_state(repo) == before


def unprivileged(command: list[str]) -> list[str]:
    """``command`` run so that file modes bind it: root (as tests run here and in CI) writes
    through any chmod, so as root it runs with no capabilities (util-linux setpriv)."""
    import os

    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("as root this needs setpriv (util-linux) to drop the capabilities")
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--", *command]


def repo_files(repo: FeastRepo) -> dict[str, bytes]:
    """Every file of the repo (registry, overlay, audit log, lock) with its bytes."""
    return {str(p): p.read_bytes() for p in sorted(repo.path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("read_only", ["registry file", "repo directory"])
def test_a_read_only_registry_is_named_and_left_unchanged(
    validated_run, tmp_path, read_only: str
) -> None:
    import os
    import subprocess
    import sys

    from cae_ray.errors import EXIT_CONFIG

    config, run, repo = validated_run
    registry = next((repo.path / "data").glob("registry.*"))  # registry.db or registry.sqlite
    target = registry if read_only == "registry file" else repo.path
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())
    run_dir = fresh_run(run, tmp_path / "run")
    cli = str(Path(sys.executable).parent / "cae-ray")
    before = repo_files(repo)
    mode = target.stat().st_mode
    target.chmod(0o555 if target.is_dir() else 0o444)
    try:
        done = subprocess.run(
            unprivileged([cli, "prune", str(path), "--run-dir", str(run_dir), "--apply"]),
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "1000"},  # rich: the error on one line
            check=False,
            timeout=300,
        )
    finally:
        target.chmod(mode)

    assert done.returncode == EXIT_CONFIG, done.stdout + done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, done.stderr
    assert f"{target} (Permission denied), so nothing was changed" in error[0]
    assert (
        f"Fix: run as a user who may write there, or make it writable (e.g. chmod u+w {target}"
        in error[0]
    )
    assert repo_files(repo) == before
    assert not (run_dir / PRUNE_PLAN).exists()


def test_prune_apply_twice_from_the_cli_applies_once(validated_run, tmp_path) -> None:
    from typer.testing import CliRunner

    from cae_ray.cli import app

    config, run, repo = validated_run
    before = registry_state(repo)
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())
    args = ["prune", str(path), "--run-dir", str(fresh_run(run, tmp_path / "run")), "--apply"]

    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "Applied." in " ".join(first.output.split())
    marked, audit = registry_state(repo), (repo.path / AUDIT_LOG).read_text()
    second = CliRunner().invoke(app, args)

    said = " ".join(second.output.split())  # rich wraps long lines
    assert second.exit_code == 0, second.output
    assert "Already applied" in said and "nothing changed" in said
    assert registry_state(repo) == marked
    assert (repo.path / AUDIT_LOG).read_text() == audit  # no second prune record
    run_id = json.loads((tmp_path / "run" / PRUNE_PLAN).read_text())["run_id"]
    assert f"cae-ray restore --repo {repo.path} --run-id {run_id}" in said
    restore(str(repo.path), run_id)
    assert registry_state(repo) == before


def test_a_selection_made_under_another_config_is_not_applied(validated_run, tmp_path) -> None:
    from typer.testing import CliRunner

    from cae_ray.cli import app
    from cae_ray.errors import EXIT_CONFIG

    config, run, repo = validated_run
    before = registry_state(repo)
    changed = config.model_copy(update={"selector": config.selector.model_copy(update={"k": 2})})
    path = tmp_path / "config.json"
    path.write_text(changed.model_dump_json())
    run_dir = fresh_run(run, tmp_path / "run")

    for forced in ([], ["--force", "--reason", "test"]):  # --force skips validation, not this
        done = CliRunner().invoke(
            app, ["prune", str(path), "--run-dir", str(run_dir), "--apply", *forced]
        )
        assert done.exit_code == EXIT_CONFIG, done.output
        assert "was made with a different config" in " ".join(done.output.split())
    assert registry_state(repo) == before
    assert not (run_dir / PRUNE_PLAN).exists()


def test_restore_says_what_it_changed_and_a_second_restore_has_nothing_to_do(
    validated_run, tmp_path
) -> None:
    from typer.testing import CliRunner

    from cae_ray.cli import app

    config, run, repo = validated_run
    before = registry_state(repo)
    plan = prune(config, RunDir(fresh_run(run, tmp_path / "run")), apply=True)
    read = sum(len(f) for f in plan.readers.values())  # driver_model reads some: read-by tags
    marks = sum(len(f) for f in plan.deprecate.values()) + len(plan.views) + read  # + last-run
    args = ["restore", "--repo", str(repo.path), "--run-id", plan.run_id]

    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    said = " ".join(first.output.split())
    assert f"{marks} tag(s) removed" in said and f"{plan.feature_service} removed" in said
    assert registry_state(repo) == before
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "Nothing to restore" in " ".join(second.output.split())
    third = CliRunner().invoke(app, [*args, "--json"])
    assert third.exit_code == 0 and json.loads(third.stdout)["restored"] is False
    assert registry_state(repo) == before


# --- kills at every step boundary ------------------------------------------------------------
# A prune (or restore) SIGKILLed right after each step of its transaction, on a repo defined in
# Python: whatever command comes next finishes or rolls it back, so the registry is either as
# before it or as after it (never a third state), and `feast plan` is clean.

KILL_AFTER = {
    "journal": ("cae_ray.feast.journal", "begin"),
    "registry": ("cae_ray.feast.sync", "_write_registry"),
    "overlay": ("cae_ray.feast.sync", "_record_in_repo"),
    "audit": ("cae_ray.feast.sync", "append_audit"),
}
"""Each boundary of the prune's transaction: the process dies right after that step."""

PRUNE_THEN_DIE = """
import importlib, json, os, signal, sys
from cae_ray.artifacts import RunDir
from cae_ray.config import validate_config
from cae_ray.feast import registry

config_path, run_dir, module_name, function = sys.argv[1:]
module = importlib.import_module(module_name)
step = getattr(module, function)

def then_die(*args, **kwargs):
    step(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

setattr(module, function, then_die)
registry.prune(validate_config(json.load(open(config_path))), RunDir(run_dir), apply=True)
"""


def in_repo(config: Config, repo: Path) -> Config:
    assert config.feast is not None
    feast = {**config.feast.model_dump(), "repo": str(repo)}
    return validate_config({**config.model_dump(mode="json"), "feast": feast})


@pytest.fixture(scope="module")
def defined_repo(validated_run, tmp_path_factory) -> Path:
    """One repo defined in Python over the data of the run's repo; each test below leaves its
    registry as it found it (they assert so), so they share it."""
    return make_definitions_repo(tmp_path_factory.mktemp("defined"), validated_run[2])


def clean(plan_output: str) -> bool:
    return "No changes to registry" in plan_output


@pytest.mark.parametrize("validated_run", ["file"], indirect=True)  # a repo defined in Python
@pytest.mark.parametrize("point", list(KILL_AFTER))
def test_a_prune_killed_after_each_step_is_finished_or_rolled_back(
    validated_run, defined_repo, tmp_path, point: str
) -> None:
    config, run, data = validated_run
    repo = defined_repo
    defined = FeastRepo(repo, data.entities, data.n_drivers)
    config = in_repo(config, repo)
    before = registry_state(defined)
    config_path = tmp_path / "config.json"
    config_path.write_text(config.model_dump_json())
    run_dir = fresh_run(run, tmp_path / "run")

    module, function = KILL_AFTER[point]
    args = [str(config_path), str(run_dir), module, function]
    died = subprocess.run(
        [sys.executable, "-c", PRUNE_THEN_DIE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert died.returncode == -signal.SIGKILL, died.stdout + died.stderr
    assert (repo / JOURNAL).exists()  # the transaction did not end

    assert check(config).disagreements == []  # the next command recovers first: they agree
    assert not (repo / JOURNAL).exists()
    after = registry_state(defined)
    assert clean(feast_plan(repo)), feast_plan(repo)
    if point != "audit":  # rolled back: as if it never ran
        assert after == before
        return
    # Everything had been written: the prune stands, as the audit log says, and restores.
    pruned = audit_records(repo)[-1]
    for view, features in pruned["deprecate"].items():
        tags = after["views"][view]["tags"]
        assert all(
            parse_mark(tags[deprecation_tag(f)])["run"] == pruned["run_id"] for f in features
        )
    assert pruned["feature_service"] in after["services"]
    assert not (run_dir / PRUNE_PLAN).exists()  # the run dir's record comes after the repo's
    restore(str(repo), pruned["run_id"])
    assert registry_state(defined) == before
    assert clean(feast_plan(repo))


@pytest.mark.parametrize("validated_run", ["file"], indirect=True)
def test_a_restore_killed_half_way_is_rolled_back_to_the_pruned_state(
    validated_run, defined_repo, tmp_path
) -> None:
    config, run, data = validated_run
    repo = defined_repo
    defined = FeastRepo(repo, data.entities, data.n_drivers)
    config = in_repo(config, repo)
    before = registry_state(defined)
    plan = prune(config, RunDir(fresh_run(run, tmp_path / "run")), apply=True)
    pruned = registry_state(defined)
    code = (
        "import os, signal, sys\n"
        "from cae_ray.feast import journal, registry\n"
        "begin = journal.begin\n"
        "def then_die(*a, **k):\n"
        "    begin(*a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "journal.begin = then_die\n"
        "registry.restore(sys.argv[1], sys.argv[2])\n"
    )
    died = subprocess.run(
        [sys.executable, "-c", code, str(repo), plan.run_id], capture_output=True, timeout=300
    )
    assert died.returncode == -signal.SIGKILL

    assert check(config).disagreements == []
    assert registry_state(defined) == pruned
    restored = restore(str(repo), plan.run_id)
    assert restored["restored"] and restored["service_removed"]
    assert registry_state(defined) == before
    again = restore(str(repo), plan.run_id)
    assert again["restored"] is False  # nothing to restore, no traceback
    assert registry_state(defined) == before


# --- a full disk ------------------------------------------------------------------------------
# Feast rewrites a file registry in place: on a full disk the write stops half way and the
# registry no longer decodes. cae-ray checks the room first, copies the registry beside the
# journal, and puts the copy back when a write was cut short.


def prune_cli(config: Config, run_dir: Path, tmp_path: Path) -> Any:
    from typer.testing import CliRunner

    from cae_ray.cli import app

    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())
    return CliRunner().invoke(app, ["prune", str(path), "--run-dir", str(run_dir), "--apply"])


@pytest.mark.parametrize("validated_run", ["file"], indirect=True)
@pytest.mark.parametrize("on_the_disk", ["repo", "registry"])
def test_a_full_disk_refuses_the_prune_and_leaves_the_registry_byte_for_byte(
    validated_run, small_disk, tmp_path, on_the_disk: str
) -> None:
    """The whole repo on the full disk (no room for the registry's copy), or the registry alone
    (the copy fits, the registry's own write would not): refused, and nothing changes."""
    config, run, data = validated_run
    mount, fill = small_disk
    repo = make_definitions_repo(mount if on_the_disk == "repo" else tmp_path, data)
    registry = repo / "data" / "registry.db"
    if on_the_disk == "registry":
        registry = Path(shutil.copy(registry, mount / "registry.db"))
        yaml = (repo / "feature_store.yaml").read_text()
        yaml = yaml.replace("registry: data/registry.db", f"registry: {registry}")
        (repo / "feature_store.yaml").write_text(yaml)
    config = in_repo(config, repo)
    before = registry.read_bytes()
    filler = fill()

    refused = prune_cli(config, fresh_run(run, tmp_path / "run"), tmp_path)
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2, refused.output
    assert "bytes free" in said and "Fix: free space" in said and "Traceback" not in said
    assert registry.read_bytes() == before
    assert not any(
        (repo / name).exists() for name in (JOURNAL, ".cae_ray_registry.copy", ".cae_ray.yaml")
    )

    filler.unlink()  # space freed: the same command now works
    done = prune_cli(config, fresh_run(run, tmp_path / "run2"), tmp_path)
    assert done.exit_code == 0, done.output
    assert not (repo / ".cae_ray_registry.copy").exists()
    assert clean(feast_plan(repo)), feast_plan(repo)


@pytest.mark.parametrize("validated_run", ["file"], indirect=True)
def test_a_registry_write_cut_short_is_put_back_by_the_next_command(
    validated_run, defined_repo, tmp_path
) -> None:
    """The registry's write stops half way (what a full disk does to Feast's in-place write),
    then the process dies: the registry no longer decodes, and the next command puts it back."""
    config, run, data = validated_run
    repo = defined_repo
    defined = FeastRepo(repo, data.entities, data.n_drivers)
    config = in_repo(config, repo)
    before = registry_state(defined)
    config_path = tmp_path / "config.json"
    config_path.write_text(config.model_dump_json())
    code = (
        "import json, os, signal, sys\n"
        "from cae_ray.artifacts import RunDir\n"
        "from cae_ray.config import validate_config\n"
        "from cae_ray.feast import registry, sync\n"
        "def cut_short(repo, store):\n"
        "    file = repo / 'data' / 'registry.db'\n"
        "    data = store.registry.cached_registry_proto.SerializeToString()\n"
        "    file.write_bytes(data[: len(data) // 2 + 1])\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "sync._commit = cut_short\n"
        "config = validate_config(json.load(open(sys.argv[1])))\n"
        "registry.prune(config, RunDir(sys.argv[2]), apply=True)\n"
    )
    run_dir = fresh_run(run, tmp_path / "run")
    died = subprocess.run(
        [sys.executable, "-c", code, str(config_path), str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert died.returncode == -signal.SIGKILL, died.stdout + died.stderr
    assert (repo / JOURNAL).exists() and (repo / ".cae_ray_registry.copy").exists()

    assert check(config).disagreements == []  # the next command: put back, rolled back
    assert registry_state(defined) == before
    assert not (repo / JOURNAL).exists() and not (repo / ".cae_ray_registry.copy").exists()
    assert clean(feast_plan(repo)), feast_plan(repo)


@pytest.mark.parametrize("validated_run", ["file"], indirect=True)
def test_restore_skips_a_view_deleted_since_and_restores_the_rest(validated_run, tmp_path) -> None:
    """A colleague deletes one of the pruned views with the Python SDK: restore puts the other
    back, names the gone one, and ends without a traceback."""
    from feast import FeatureStore
    from typer.testing import CliRunner

    from cae_ray.cli import app

    config, run, data = validated_run
    repo = Path(shutil.copytree(data.path, tmp_path / "repo"))
    config = in_repo(config, repo)
    copied = FeastRepo(repo, data.entities, data.n_drivers)
    before = registry_state(copied)
    plan = prune(config, RunDir(fresh_run(run, tmp_path / "run")), apply=True)
    assert set(plan.views) == {"driver_stats", "driver_extra"}
    FeatureStore(repo_path=str(repo)).delete_feature_view("driver_extra")

    done = CliRunner().invoke(app, ["restore", "--repo", str(repo), "--run-id", plan.run_id])
    said = " ".join(done.output.split())
    assert done.exit_code == 0, done.output
    assert "feature view driver_extra is no longer in the registry" in said
    after = registry_state(copied)
    assert "driver_extra" not in after["views"]
    assert after["views"]["driver_stats"] == before["views"]["driver_stats"]
    assert plan.feature_service not in after["services"]
    assert not (repo / JOURNAL).exists()
