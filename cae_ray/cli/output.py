"""What every command shares: the two consoles, the one JSON printer, the one wrapper that turns
a cae-ray error into its message and exit code, the options they repeat, and quiet Ray logs."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from cae_ray.cli.console import make_console
from cae_ray.errors import CaeRayError, exit_code

out = make_console()
"""stdout: results (tables, or the one JSON document of --json)."""
errors = make_console(stderr=True)
"""stderr: errors, warnings and progress when stdout carries JSON."""

JsonOption = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the result as one JSON document on stdout, and nothing else there."
    ),
]
RunDirOption = Annotated[
    str,
    typer.Option("--run-dir", help="Where this run's artifacts go: a path or a URI (s3://...)."),
]
ConfigArgument = Annotated[Path, typer.Argument(help="The run's YAML config file.")]
WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="When another command is writing the run dir, wait for it to finish (default: "
        "refuse, naming it).",
    ),
]


@contextmanager
def run_dir_held(run_dir: str, wait: bool) -> Iterator[None]:
    """With --wait, hold the run dir (waiting for it) through the command. Without, each step
    takes it itself and another command's hold is refused."""
    if not wait:
        yield
        return
    from cae_ray.pipeline import hold_run_dir

    with hold_run_dir(run_dir, wait=True):
        yield


def print_json(document: Any) -> None:
    """One JSON document on stdout (progress and messages go to stderr)."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def fail(error: CaeRayError) -> typer.Exit:
    """Print ``error``'s message on stderr; the exit to raise, with its code."""
    errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
    return typer.Exit(exit_code(error))


@contextmanager
def exits_on_error() -> Iterator[None]:
    """A cae-ray error raised inside becomes its one-line message and its exit code: the one
    place the CLI turns errors into exit codes (anything else is a bug, with its traceback)."""
    try:
        yield
    except CaeRayError as e:
        raise fail(e) from e


def quiet_ray() -> None:
    """Ray Data logs every dataset's progress and warns about its own deprecated settings;
    the CLI's progress display says what matters (`-v` brings it all back). Ray sets up its
    loggers and warning filters when imported, so this comes after the import."""
    if logging.getLogger("cae_ray").isEnabledFor(logging.INFO):
        return
    import warnings

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray.data
    import ray.train  # noqa: F401

    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.")
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Ray Data warns, once per process, that the progress bars we just turned off are off.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
