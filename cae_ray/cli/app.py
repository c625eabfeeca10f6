"""The `cae-ray` Typer app and its command groups; every command module registers on these."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.logging import RichHandler

from cae_ray.cli.output import errors, out
from cae_ray.errors import exit_codes_help

app = typer.Typer(
    help="Concrete Autoencoder feature selection (CAE / IP-CAE) for wide feature tables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    epilog=exit_codes_help(),
)
config_app = typer.Typer(help="Inspect and check configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
feast_app = typer.Typer(
    help="The feature lifecycle in the Feast repo: status, consistency, leftovers.",
    no_args_is_help=True,
)
app.add_typer(feast_app, name="feast")


def _print_version(asked: bool) -> None:
    if asked:
        from cae_ray.version import __version__

        out.print(f"cae-ray {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every epoch.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=errors, show_path=False)],
    )
