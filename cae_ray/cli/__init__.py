"""`cae-ray`: the command line. Thin: each command parses, calls :mod:`cae_ray.pipeline`, and
prints. One module per command group, like Feast's CLI: :mod:`~cae_ray.cli.run` (demo, run),
:mod:`~cae_ray.cli.steps` (export, select, validate, prune, retire, restore),
:mod:`~cae_ray.cli.feast` (feast status, check, remove-services), :mod:`~cae_ray.cli.config`,
:mod:`~cae_ray.cli.init`. Errors become exit codes in one place
(:func:`cae_ray.cli.output.exits_on_error`); the codes are :data:`cae_ray.errors.EXIT_CODES`.
"""

from __future__ import annotations

import sys
import traceback

import typer

from cae_ray.cli import config, feast, init, run, steps
from cae_ray.cli.app import app
from cae_ray.cli.output import Problem, print_json
from cae_ray.errors import EXIT_CONFIG, EXIT_FAILURE

try:  # Typer 0.29 and later parse with their own copy of click
    from typer import TyperException as ParseError
except ImportError:  # earlier Typer, with the click package
    from click import ClickException as ParseError  # type: ignore[assignment]

__all__ = ["app", "config", "feast", "init", "main", "run", "steps"]


def main(args: list[str] | None = None) -> None:
    """The `cae-ray` program: the app, and with --json one JSON document on stdout also when
    click refuses the arguments or a bug escapes (the commands print their own otherwise)."""
    argv = sys.argv[1:] if args is None else list(args)
    options = argv[: argv.index("--")] if "--" in argv else argv
    if "--json" not in options:
        app(args=argv, prog_name="cae-ray")
        return
    try:
        code = app(args=argv, prog_name="cae-ray", standalone_mode=False)
    except ParseError as e:  # click's UsageError and its kin: bad or missing arguments
        e.show()  # type: ignore[attr-defined]  # the usage and the problem, on stderr
        code = int(getattr(e, "exit_code", EXIT_CONFIG))
        print_json({}, Problem(type(e).__name__, e.format_message(), _usage_fix(e), code))
    except typer.Abort:
        print_json({}, Problem("Aborted", "interrupted", "run the command again", EXIT_FAILURE))
        code = EXIT_FAILURE
    except Exception as e:  # a bug: its traceback on stderr, its document on stdout
        traceback.print_exc()
        fix = "this is a bug in cae-ray: report it with the traceback printed on stderr"
        print_json({}, Problem(type(e).__name__, str(e), fix, EXIT_FAILURE))
        code = EXIT_FAILURE
    sys.exit(code if isinstance(code, int) else 0)


def _usage_fix(error: Exception) -> str:
    ctx = getattr(error, "ctx", None)
    return f"see `{ctx.command_path if ctx is not None else 'cae-ray'} --help`"
