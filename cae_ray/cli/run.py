"""`cae-ray demo` and `cae-ray run`: the whole pipeline, with a live line per step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cae_ray.artifacts import REPORT, RunDir
from cae_ray.cli.app import app
from cae_ray.cli.output import (
    ConfigArgument,
    JsonOption,
    RunDirOption,
    WaitOption,
    errors,
    exits_on_error,
    fail,
    out,
    print_json,
    quiet_ray,
    run_dir_for,
    writing_run_dir,
)
from cae_ray.config import Config, load_config
from cae_ray.gate.errors import ValidationGateFailedError
from cae_ray.records import RunRecord, Selection


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo's Feast repo and run go.")
    ] = Path("runs/demo"),
    rows: Annotated[int, typer.Option(help="Entities (rows) of the demo feature view.")] = 20_000,
    features: Annotated[int, typer.Option(help="Features of the demo feature view.")] = 1_000,
) -> None:
    """The whole pipeline on a generated local Feast repo: export a wide feature view, select
    10 features on a local Ray cluster, validate them, mark the rest deprecated, and report."""
    from cae_ray.demo import demo_config, make_demo_repo

    with exits_on_error():
        out.print(f"Creating the demo Feast repo in {directory / 'feature_repo'} ...")
        made = make_demo_repo(directory, rows=rows, features=features)
        config_path, cfg = demo_config(directory)
    out.print(
        f"Feature view customer_wide: {rows:,} customers x {features:,} features; "
        f"{len(made.informative)} carry the label's signal. Config: {config_path}"
    )
    run_dir = str(directory / "run")
    run_with_display(cfg, run_dir)
    selection = Selection.read(RunDir(run_dir))
    assert selection is not None  # the run succeeded
    found = set(made.informative) & set(selection.selected_features)
    out.print(
        f"Found {len(found)} of the {len(made.informative)} informative features. Look at:\n"
        f"  the report:   {RunDir(run_dir).path(REPORT)}\n"
        f"  the registry: cd {made.repo} && feast feature-views describe customer_wide\n"
        f"  run again:    cae-ray run {config_path} --run-dir {directory / 'run'}"
    )


@app.command()
def run(
    config: ConfigArgument,
    run_dir: RunDirOption = None,
    as_json: JsonOption = False,
    wait: WaitOption = False,
) -> None:
    """Run every step: export (from Feast) -> prepare -> select -> validate -> prune -> report.

    Running again with the same run dir resumes at the first unfinished step (an interrupted
    training from its last checkpoint). Exits with 5, before pruning, when the gate fails.
    """
    with exits_on_error():
        cfg = load_config(config)
    record = run_with_display(cfg, run_dir_for(run_dir, config), as_json, wait)
    if as_json:
        print_json(record.as_json())


def run_with_display(
    cfg: Config, run_dir: str, as_json: bool = False, wait: bool = False
) -> RunRecord:
    """``pipeline.run`` with its live display and the summary table at the end (on stderr with
    --json); a failed gate still shows what the run made."""
    from cae_ray.cli.console import step_display, summary_table
    from cae_ray.pipeline import run as run_all

    shown = errors if as_json else out
    quiet_ray()
    with exits_on_error(), writing_run_dir(run_dir, wait):
        try:
            with step_display(shown, cfg) as display:
                record = run_all(cfg, run_dir, on_event=display)
        except ValidationGateFailedError as e:  # the run dir works: show what was made
            recorded = RunRecord.read(RunDir(run_dir))
            if recorded is not None:
                shown.print(summary_table(recorded, run_dir, cfg))
            raise fail(e, recorded.as_json() if recorded is not None else None) from e
    shown.print(summary_table(record, run_dir, cfg))
    return record
