"""One command per step of a run: export, select, validate, prune, retire, restore. Each loads
the config, calls the step through :mod:`cae_ray.pipeline`, and prints what
:mod:`cae_ray.cli.render` makes of the result (or the result as JSON)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from cae_ray.cli import render
from cae_ray.cli.app import app
from cae_ray.cli.feast import check_marks
from cae_ray.cli.output import (
    ConfigArgument,
    JsonOption,
    Problem,
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
from cae_ray.errors import EXIT_CONFIG
from cae_ray.storage import join

if TYPE_CHECKING:
    from cae_ray.pipeline import StepResult

Result = TypeVar("Result", bound="StepResult")


@app.command()
def export(
    config: ConfigArgument,
    run_dir: RunDirOption = None,
    as_json: JsonOption = False,
    wait: WaitOption = False,
) -> None:
    """Export the config's Feast features for its entity rows to RUN_DIR/export/ (Parquet,
    point-in-time correct, one column per feature, plus _manifest.json)."""
    from cae_ray.pipeline import export as export_step

    run_dir = run_dir_for(run_dir, config)
    with exits_on_error(), writing_run_dir(run_dir, wait):
        manifest = export_step(load_config(config), run_dir)
    if as_json:
        print_json(manifest.as_json())
        return
    out.print(render.exported(manifest, join(run_dir, "export")))
    out.print(
        "Select from it with `cae-ray select/run` and the same config: leave data.path out and "
        "the export's features are the candidates.",
        highlight=False,
    )


@app.command()
def select(
    config: ConfigArgument,
    run_dir: RunDirOption = None,
    as_json: JsonOption = False,
    wait: WaitOption = False,
) -> None:
    """Train the selector with Ray Train on the config's dataset; writes RUN_DIR/selection.json.

    Re-running with the same run dir reuses finished work and resumes an interrupted training
    from its last checkpoint.
    """
    from cae_ray.pipeline import select as select_step

    run_dir = run_dir_for(run_dir, config)
    with exits_on_error(), writing_run_dir(run_dir, wait):
        cfg = load_config(config)
        selection = with_progress(
            "select", cfg, lambda on_epoch: select_step(cfg, run_dir, on_epoch), as_json
        )
    if as_json:
        print_json(selection.as_json())
        return
    out.print(render.selection_table(selection))
    out.print(render.selection_summary(selection, join(run_dir, "selection.json")))


@app.command()
def validate(
    config: ConfigArgument,
    run_dir: RunDirOption = None,
    as_json: JsonOption = False,
    wait: WaitOption = False,
) -> None:
    """Check that a model on the K selected features matches one on all features; writes
    RUN_DIR/validation.json. Exits with 5 when the gate fails, so a pipeline stops there."""
    from cae_ray.gate.errors import gate_failure
    from cae_ray.pipeline import validate as validate_step

    run_dir = run_dir_for(run_dir, config)
    with exits_on_error(), writing_run_dir(run_dir, wait):
        cfg = load_config(config)
        verdict = with_progress("validate", cfg, lambda _: validate_step(cfg, run_dir), as_json)
    if not as_json:
        out.print(render.validation_table(verdict))
        for line in render.validation_lines(verdict, join(run_dir, "validation.json")):
            out.print(line, highlight=False)
    if not verdict.passed:  # the lines above said why
        raise fail(gate_failure(run_dir, verdict), verdict.as_json(), say=False)
    if as_json:
        print_json(verdict.as_json())


@app.command()
def prune(
    config: ConfigArgument,
    run_dir: RunDirOption = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Write the marks (default: plan only).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Prune without a passed validation.")
    ] = False,
    reason: Annotated[
        str | None, typer.Option(help="Why --force (recorded in the audit log).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only tell whether the registry and the repo agree.")
    ] = False,
    as_json: JsonOption = False,
    wait: WaitOption = False,
) -> None:
    """Record this run's selection as its model's (`feast.kept_service`, set to the selected
    features) and mark deprecated (view tags) the features that no model sharing the repo keeps
    (features kept again lose their marks). Without --apply, only prints and saves the plan."""
    from cae_ray.pipeline import prune as prune_step

    if check:
        check_marks(config, as_json)
        return
    if force and not reason:
        needs = Problem(
            "UsageError",
            "--force needs --reason",
            'pass --reason "..." (it goes in the audit log)',
            EXIT_CONFIG,
        )
        raise fail(needs)
    run_dir = run_dir_for(run_dir, config)
    with exits_on_error(), writing_run_dir(run_dir, wait):
        cfg = load_config(config)
        plan = prune_step(cfg, run_dir, apply=apply, force_reason=reason if force else None)
    if as_json:
        print_json(plan.as_json())
        return
    assert cfg.feast is not None  # prune_step refuses a config without one
    out.print(render.prune_table(plan))
    for line in render.prune_lines(plan, cfg.feast.repo, join(run_dir, "prune.json")):
        out.print(line, highlight=False)
    for line in render.still_read(plan):
        errors.print(line, highlight=False)
    if plan.hook_missing:
        errors.print(render.HOOK_MISSING, highlight=False)


@app.command()
def retire(
    config: ConfigArgument,
    run_dir: RunDirOption = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Rewrite the definitions and `feast apply`.")
    ] = False,
    allow_dirty: Annotated[
        bool,
        typer.Option("--allow-dirty", help="Rewrite files that have uncommitted git changes."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", hidden=True, help="Deprecated: --allow-dirty.")
    ] = False,
    as_json: JsonOption = False,
    wait: WaitOption = False,
) -> None:
    """Remove features deprecated for longer than `feast.grace_period` from the repo's Python
    definitions. Without --apply, prints the plan and its diff and saves RUN_DIR/retire.json;
    with it, applies that reviewed plan (or a fresh one). Undo with `cae-ray restore`."""
    from cae_ray.pipeline import retire as retire_step

    if force:  # --force means "without a passed gate" on prune: one name, one meaning
        errors.print(
            "[yellow]warning:[/] `retire --force` is deprecated and will be removed: it is "
            "`--allow-dirty` now (`--force` is prune's, for a selection without a passed gate).",
            highlight=False,
        )
    run_dir = run_dir_for(run_dir, config)
    with exits_on_error(), writing_run_dir(run_dir, wait):
        cfg = load_config(config)
        plan = retire_step(cfg, run_dir, apply=apply, force=allow_dirty or force)
    if as_json:
        print_json(plan.as_json())
        return
    assert cfg.feast is not None
    if not plan.count:
        out.print(f"Nothing to retire: no feature has been deprecated for {plan.grace_period}.")
        return
    out.print(render.retire_table(plan))
    if plan.diff:
        out.print(plan.diff, markup=False, highlight=False)
    for line in render.retire_lines(plan, cfg.feast.repo, join(run_dir, "retire.json")):
        out.print(line)


@app.command()
def restore(
    config: Annotated[
        Path | None,
        typer.Argument(
            envvar="CAE_RAY_CONFIG",
            show_default=False,
            help="The run's YAML config file: its feast.repo is the repo (or pass --repo).",
        ),
    ] = None,
    run_id: Annotated[
        str, typer.Option("--run-id", help="The run id a prune or retirement printed.")
    ] = "",
    repo: Annotated[
        Path | None,
        typer.Option("--repo", show_default=False, help="The Feast repo (feature_store.yaml)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Undo the latest prune or retirement: the registry's marks and kept FeatureService (and
    a retirement's definitions files, byte for byte) as they were before it."""
    from cae_ray.pipeline import restore as restore_step

    with exits_on_error():
        where = _restore_repo(config, repo)
    if not run_id:
        raise fail(Problem("UsageError", "no --run-id", _RUN_ID_FIX, EXIT_CONFIG))
    with exits_on_error():
        record = restore_step(where, run_id)
    if as_json:
        print_json(record)
        return
    if not record["restored"]:
        out.print(f"Nothing to restore: run {run_id}'s {record['action']} was already undone.")
        return
    out.print(f"Restored run {run_id}: {render.restored(record)}.", highlight=False)


_RUN_ID_FIX = (
    "pass --run-id with the run id the prune or retirement printed (`cae-ray feast status "
    "CONFIG` shows the runs that marked each feature)"
)


def _restore_repo(config: Path | None, repo: Path | None) -> str:
    """The Feast repo to restore: --repo, else the config's feast.repo."""
    if repo is not None:
        return str(repo)
    if config is None:
        raise fail(
            Problem("UsageError", "no CONFIG and no --repo", "pass CONFIG or --repo", EXIT_CONFIG)
        )
    cfg = load_config(config)
    if cfg.feast is None:
        from cae_ray.feast.errors import MissingFeastConfigError

        raise MissingFeastConfigError(str(config), "feast: section")
    return str(cfg.feast.repo)


def with_progress(
    step: str,
    cfg: Config,
    work: Callable[[Callable[[dict[str, Any]], None]], Result],
    as_json: bool = False,
) -> Result:
    """One step with the same live line `cae-ray run` shows for it (on stderr with --json)."""
    from cae_ray.cli.console import step_display
    from cae_ray.pipeline import StepEvent

    quiet_ray()
    with step_display(errors if as_json else out, cfg) as display:
        display(StepEvent(step, "started"))
        try:
            outcome = work(lambda record: display(StepEvent(step, "progress", progress=record)))
        except BaseException:
            display(StepEvent(step, "failed"))
            raise
        display(StepEvent(step, "done", result=outcome))
    return outcome
