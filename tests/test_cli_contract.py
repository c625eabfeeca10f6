"""The command line as a contract for scripts and CI (issue 40), through the real `cae-ray`
program in a subprocess: one JSON document on stdout in every case, an exit code per outcome,
the app's options wherever they stand, environment-variable defaults, one meaning per option
name, and help without Typer's placeholders."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cae_ray.cli import app
from cae_ray.cli.app import hoisted
from cae_ray.errors import EXIT_CODES, EXIT_CONFIG, EXIT_DISAGREE
from tests.conftest import ROOT

MNIST = ROOT / "configs" / "mnist.yaml"


def cae_ray(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`cae-ray ARGS` as a user runs it (the program's own entry point, in a new process)."""
    return subprocess.run(
        [sys.executable, "-m", "cae_ray.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=600,
    )


def document(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """stdout as the one JSON document it must be (nothing before or after it)."""
    parsed = json.loads(done.stdout)
    assert isinstance(parsed, dict), done.stdout
    return parsed


def assert_error(done: subprocess.CompletedProcess[str], kind: str, code: int) -> dict[str, Any]:
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    found = document(done)
    assert found["ok"] is False, found
    error = found["error"]
    assert set(error) == {"type", "message", "fix", "exit_code"}, error
    assert error["type"] == kind and error["exit_code"] == code, error
    assert error["message"] and error["fix"], error
    assert "Traceback" not in done.stderr
    return found


# --- --json: one document, failures included ---------------------------------------------------


def test_json_on_a_failing_command_prints_the_error_document(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("selector: {k: 5\n")
    found = assert_error(cae_ray("config", "check", str(bad), "--json"), "ConfigFileError", 2)
    assert str(bad) in found["error"]["message"] and "YAML" in found["error"]["fix"]

    missing = cae_ray("run", str(tmp_path / "nope.yaml"), "--json")
    assert_error(missing, "ConfigFileError", EXIT_CONFIG)

    # click refuses the arguments before any command runs: still one document.
    usage = assert_error(cae_ray("run", "--json"), "MissingParameter", EXIT_CONFIG)
    assert "cae-ray run --help" in usage["error"]["fix"]
    unknown = cae_ray("config", "check", str(MNIST), "--json", "--bogus")
    assert_error(unknown, "NoSuchOption", EXIT_CONFIG)


def test_json_on_success_says_ok_beside_the_result() -> None:
    done = cae_ray("config", "check", str(MNIST), "--json")
    assert done.returncode == 0, done.stderr
    found = document(done)
    assert found["ok"] is True and "error" not in found
    assert found["selector"]["k"] == 50


# --- exit codes ---------------------------------------------------------------------------------


def test_a_disagreement_has_its_own_exit_code_and_document(tmp_path: Path) -> None:
    """`feast check` exited 1 (unexpected failure) when it found the registry and the overlay
    disagreeing: a CI job could not tell a finding from a crash."""
    from tests.feast_repo import make_feast_repo

    repo = make_feast_repo(tmp_path)
    config = feast_config(tmp_path, repo.path, repo.entities)
    # A mark the overlay holds and the registry does not: as after `feast apply` from a
    # checkout without the overlay hook.
    mark = {"run": "r1", "since": "2026-01-01T00:00:00Z"}
    overlay = {"version": 2, "marks": {"driver_stats": {"s_00": mark}}}
    (repo.path / "cae_ray_deprecations.yaml").write_text(yaml.safe_dump(overlay))

    found = assert_error(
        cae_ray("feast", "check", str(config), "--json"), "RegistryDisagreesError", EXIT_DISAGREE
    )
    assert found["disagreements"] and "driver_stats" in found["disagreements"][0]
    assert "feast apply" in found["error"]["fix"]
    text = cae_ray("prune", str(config), "--check")
    assert text.returncode == EXIT_DISAGREE and "disagree:" in text.stderr
    assert EXIT_CODES[EXIT_DISAGREE] in " ".join(cae_ray("--help").stdout.replace("│", "").split())


# --- the app's options, anywhere ----------------------------------------------------------------


def test_verbose_quiet_and_log_level_before_and_after_the_command() -> None:
    for args in (["-v", "config", "check", str(MNIST)], ["config", "check", str(MNIST), "-v"]):
        done = cae_ray(*args)
        assert done.returncode == 0, (args, done.stderr)
    after = cae_ray("config", "check", str(MNIST), "--log-level", "error", "-q")
    assert after.returncode == 0, after.stderr
    runner = CliRunner()
    for args, level in (
        (["config", "check", str(MNIST), "-vv"], logging.DEBUG),
        (["config", "check", str(MNIST), "--log-level=info"], logging.INFO),
        (["-q", "config", "check", str(MNIST)], logging.ERROR),
        (["config", "check", str(MNIST)], logging.WARNING),
    ):
        assert runner.invoke(app, args).exit_code == 0, args
        assert logging.getLogger().level == level, args
    assert runner.invoke(app, ["config", "check", str(MNIST)], env={"CAE_RAY_LOG_LEVEL": "debug"})
    assert logging.getLogger().level == logging.DEBUG
    logging.getLogger().setLevel(logging.WARNING)


def test_hoisting_stops_at_a_double_dash() -> None:
    assert hoisted(["run", "c.yaml", "-v", "--log-level", "info"]) == [
        "-v",
        "--log-level",
        "info",
        "run",
        "c.yaml",
    ]
    assert hoisted(["run", "--", "-v"]) == ["run", "--", "-v"]


# --- defaults from the environment, and one run dir default for every command --------------------


def test_config_and_run_dir_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, not a directory")
    env = {"CAE_RAY_CONFIG": str(MNIST), "CAE_RAY_RUN_DIR": str(tmp_path / "taken")}
    done = cae_ray("validate", "--json", env=env)
    found = assert_error(done, "RunDirError", EXIT_CONFIG)
    assert str(tmp_path / "taken") in found["error"]["message"]


def test_every_step_defaults_to_the_run_dir_run_uses(tmp_path: Path) -> None:
    """`validate CONFIG` (like select, prune, retire) needed --run-dir where `run` did not."""
    config = tmp_path / "tiny.yaml"
    config.write_text(MNIST.read_text())
    done = cae_ray("validate", str(config), "--json", cwd=tmp_path)
    found = assert_error(done, "NoSelectionError", EXIT_CONFIG)
    assert str(Path("runs") / "tiny") in found["error"]["message"]


# --- restore takes CONFIG; --force has one meaning ----------------------------------------------


def test_restore_takes_the_config_or_the_repo(tmp_path: Path) -> None:
    from tests.feast_repo import make_feast_repo

    repo = make_feast_repo(tmp_path)
    config = feast_config(tmp_path, repo.path, repo.entities)
    by_config = assert_error(
        cae_ray("restore", str(config), "--run-id", "nope", "--json"), "UnknownRunIdError", 2
    )
    by_repo = cae_ray("restore", "--repo", str(repo.path), "--run-id", "nope", "--json")
    assert document(by_repo)["error"] == by_config["error"]
    assert_error(cae_ray("restore", str(config), "--json"), "UsageError", EXIT_CONFIG)


def test_retire_says_allow_dirty_and_force_still_works_with_a_warning(tmp_path: Path) -> None:
    from tests.feast_repo import make_definitions_repo, make_feast_repo

    repo = make_feast_repo(tmp_path / "code")
    defined = make_definitions_repo(tmp_path, repo)
    config = feast_config(tmp_path, defined, repo.entities)
    run_dir = str(tmp_path / "run")
    # No prune stands in the repo: both spellings reach the step, which says so.
    new = cae_ray("retire", str(config), "--run-dir", run_dir, "--allow-dirty")
    assert new.returncode == EXIT_CONFIG and "nothing to retire" in new.stderr, new.stderr
    assert "deprecated and will be removed" not in new.stderr
    old = cae_ray("retire", str(config), "--run-dir", run_dir, "--force")
    assert old.returncode == EXIT_CONFIG and "nothing to retire" in old.stderr, old.stderr
    assert "`retire --force` is deprecated" in " ".join(old.stderr.split())
    assert "--allow-dirty" in cae_ray("retire", "--help").stdout


# --- help -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [[], ["prune"], ["restore"], ["run"], ["feast", "check"], ["init"]]
)
def test_help_shows_no_typer_placeholders(command: list[str]) -> None:
    shown = cae_ray(*command, "--help", env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    for placeholder in ("{config}", "<bool>", "<str>", "<path>", "<int>"):
        assert placeholder not in shown.stdout, (command, placeholder)


def feast_config(directory: Path, repo: Path, entities: Path) -> Path:
    config = directory / "feast.yaml"
    feast = {"repo": str(repo), "entities": str(entities), "features": ["driver_stats"]}
    config.write_text(yaml.safe_dump({"feast": feast, "data": {"target": "label"}}))
    return config
