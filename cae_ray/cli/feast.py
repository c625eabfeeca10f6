"""`cae-ray feast ...`: the feature lifecycle in the Feast repo (status, consistency, leftovers)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape

from cae_ray.cli import render
from cae_ray.cli.app import feast_app
from cae_ray.cli.output import (
    ConfigArgument,
    JsonOption,
    errors,
    exits_on_error,
    fail,
    out,
    print_json,
)
from cae_ray.config import load_config


def check_marks(config: ConfigArgument, as_json: bool = False) -> None:
    """`feast check` and `prune --check`: where the registry and the overlay disagree."""
    from cae_ray.feast.errors import RegistryDisagreesError
    from cae_ray.pipeline import check_marks as find_disagreements

    with exits_on_error():
        cfg = load_config(config)
        findings = find_disagreements(cfg)
    if as_json and not findings.disagreements:
        print_json(asdict(findings))
    elif not findings.disagreements:
        out.print("[green]The registry and the repo overlay agree on cae-ray's marks.[/]")
    for problem in [] if as_json else findings.disagreements:
        errors.print(f"[bold red]disagree:[/] {escape(problem)}", highlight=False)
    if findings.disagreements and not as_json:
        errors.print("Run `feast apply` in the repo (the repo is the source of truth) to align.")
    for note in [] if as_json else findings.notes:
        errors.print(f"[bold yellow]note:[/] {escape(note)}", highlight=False)
    for read in [] if as_json else findings.readers:
        errors.print(f"[bold yellow]still read:[/] {escape(read)}", highlight=False)
    if findings.leftovers and not as_json:
        names = " ".join(findings.leftovers)
        errors.print(
            f"[bold yellow]leftover:[/] {len(findings.leftovers)} FeatureService(s) of an older "
            f"cae-ray version (one per run): {escape(names)}. cae-ray keeps one service now; "
            f"remove them with: cae-ray feast remove-services {config} {escape(names)}",
            highlight=False,
        )
    if findings.disagreements:  # the lines above named them
        assert cfg.feast is not None  # check refuses a config without one
        found = RegistryDisagreesError(str(cfg.feast.repo), findings.disagreements)
        raise fail(found, asdict(findings), say=False)


@feast_app.command("check")
def feast_check(config: ConfigArgument, as_json: JsonOption = False) -> None:
    """Tell whether the registry and the repo's overlay agree on cae-ray's marks and services,
    and name FeatureServices older cae-ray versions left. Exits 6 when they disagree."""
    check_marks(config, as_json)


@feast_app.command("status")
def feast_status(
    config: ConfigArgument,
    model: Annotated[
        str | None, typer.Option("--model", help="Only this model's (kept service's) features.")
    ] = None,
    features: Annotated[
        bool, typer.Option("--features", help="Also list every feature (one line each).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """The feature lifecycle: the models sharing the repo and what each keeps, then per view
    how many features are kept, deprecated, due to retire; with --features each feature's
    state, the models that keep it, the services that still read it, since when, due when."""
    from cae_ray.pipeline import feature_status

    with exits_on_error():
        status = feature_status(load_config(config), model)
    if as_json:
        print_json(status.as_json())
        return
    if status.models:
        out.print(render.models_table(status.models))
    else:
        out.print("No model has applied a prune in this repo yet.")
    for view in status.views:
        out.print(render.view_line(view), highlight=False)
    if features:
        out.print(render.status_table(status.features))
    elif status.features:
        out.print(f"Each feature: cae-ray feast status {config} --features", highlight=False)


@feast_app.command("forget-model")
def feast_forget_model(
    config: ConfigArgument,
    name: str,
    apply: Annotated[
        bool, typer.Option("--apply", help="Forget it (default: show what would change).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Forget model NAME (its kept FeatureService) that no longer runs: its service leaves the
    registry and the marks are recomputed from the models that remain (features only it kept
    become deprecated). Journaled and audited; undo with `cae-ray restore`."""
    from cae_ray.pipeline import forget_model

    with exits_on_error():
        cfg = load_config(config)
        plan = forget_model(cfg, name, apply=apply)
    if as_json:
        print_json(plan.as_json())
        return
    assert cfg.feast is not None  # forget_model refuses a config without one
    for line in render.forget_lines(plan, cfg.feast.repo):
        out.print(line, highlight=False)


@feast_app.command("remove-services")
def feast_remove_services(config: ConfigArgument, names: list[str]) -> None:
    """Remove FeatureServices an older cae-ray version made (one per run, `cae_ray_<run id>`)
    from the registry and the repo overlay. Refuses any other service."""
    from cae_ray.pipeline import remove_services

    with exits_on_error():
        removed = remove_services(load_config(config), names)
    out.print(f"Removed {len(removed)} FeatureService(s): {', '.join(removed)}.")
