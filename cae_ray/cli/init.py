"""`cae-ray init`: a commented config for an existing Feast repo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cae_ray.cli.app import app
from cae_ray.cli.output import JsonOption, exits_on_error, fail, out, print_json
from cae_ray.errors import ConfigFileError


@app.command()
def init(
    repo: Annotated[
        Path, typer.Argument(help="The Feast repo: the directory with feature_store.yaml.")
    ] = Path("."),
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the config.")
    ] = Path("cae-ray.yaml"),
    entities: Annotated[
        str | None,
        typer.Option(help="The entity rows (Parquet) to select on; else filled in later."),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(help="The label column of the entity rows; else filled in later."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write a commented config for an existing Feast repo: its feature views as the
    candidates (label-like views left out), the label and entity rows to fill in, the hook line
    its definitions need, and `prune: plan`. Never overwrites a file."""
    from cae_ray.feast.init import config_text, describe, read_repo

    if output.exists():
        raise fail(
            ConfigFileError(str(output), "exists already", "pass --output a new path, or remove it")
        )
    with exits_on_error():
        summary = read_repo(repo)
    output.write_text(config_text(summary, entities, target))
    if as_json:
        print_json({**describe(summary), "config": str(output)})
        return
    found = describe(summary)
    out.print(
        f"Wrote {output}: {len(found['candidates'])} feature view(s), {found['features']:,} "
        f"candidate features from {summary.repo}.",
        highlight=False,
    )
    steps = [] if target and entities else [f"fill in the entity rows and the label in {output}"]
    if not summary.has_hook:
        steps.append("add the hook line it shows to a definitions module of the repo")
    steps += [f"cae-ray config check {output}", f"cae-ray run {output}"]
    for number, step in enumerate(steps, 1):
        out.print(f"  {number}. {step}", highlight=False)
