from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cae_ray.cli import app
from cae_ray.errors import EXIT_CONFIG
from tests.conftest import ROOT

runner = CliRunner()


def test_config_check_prints_the_full_config() -> None:
    result = runner.invoke(app, ["config", "check", str(ROOT / "configs" / "mnist.yaml")])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    assert '"k": 50' in result.output


def test_config_schema_is_json_with_descriptions() -> None:
    result = runner.invoke(app, ["config", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    selector = schema["$defs"]["SelectorConfig"]["properties"]
    assert "distinct" not in selector  # fields only
    assert "Gumbel" in selector["sampling"]["description"]


def test_bad_config_exits_2_with_a_one_line_reason_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("selector: {k: 5\n")
    done = subprocess.run(
        [sys.executable, "-m", "cae_ray.cli", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == EXIT_CONFIG
    assert "not valid YAML" in done.stderr and str(bad) in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_unknown_key_stops_a_run_before_it_writes_anything(tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text("selector: {kk: 5}\n")
    result = runner.invoke(app, ["run", str(bad), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == EXIT_CONFIG
    assert "selector.kk: unknown key; did you mean 'k'?" in result.output
    assert not (tmp_path / "run").exists()


def test_importing_feast_keeps_the_cli_quiet_about_other_libraries_deprecations() -> None:
    """feast's modules call warnings.simplefilter("once", DeprecationWarning) on import, which
    printed Ray Data's own deprecation warnings in every `cae-ray run` that used Feast."""
    code = (
        "import warnings\n"
        "from cae_ray.cli.output import quiet_ray\n"
        "quiet_ray()\n"
        "import torch  # feast imports it; torch adds filters of its own, not at issue here\n"
        "before = list(warnings.filters)\n"
        "from cae_ray.feast.store import open_store\n"
        "from cae_ray.feast import import_feast\n"
        "import_feast()\n"
        "import ray.data\n"
        "if warnings.filters != before: raise SystemExit(warnings.filters[:3])\n"
        "with warnings.catch_warnings(record=True) as shown:\n"
        "    ray.data.DataContext.get_current().use_polars\n"
        "if shown: raise SystemExit([str(w.message) for w in shown])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_config_check_json_is_pure_json_on_stdout() -> None:
    result = runner.invoke(app, ["config", "check", str(ROOT / "configs" / "mnist.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # nothing but the document
    assert document["selector"]["k"] == 50 and "valid" not in result.stdout.split("{")[0]


def test_exit_codes_are_listed_in_help_and_the_docs() -> None:
    from cae_ray.errors import EXIT_CODES

    result = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    shown = " ".join(result.output.replace("│", " ").split())
    documented = (ROOT / "docs" / "errors.md").read_text()
    for code, meaning in EXIT_CODES.items():
        assert f"{code} {meaning}" in shown, (code, shown[-600:])
        assert f"| {code} | {meaning} |" in documented, code
