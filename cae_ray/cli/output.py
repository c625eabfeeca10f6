"""What every command shares: the two consoles, the one JSON printer, the one wrapper that turns
a cae-ray error into its message and exit code, the options they repeat, and quiet Ray logs.

The JSON contract (``--json``): every command prints exactly one JSON object on stdout, whatever
happens. ``"ok"`` is true exactly when the exit code is 0. On success the command's result
fields stand beside it (``{"ok": true, "selected_features": [...], ...}``); on failure an
``"error"`` object says what went wrong (``{"ok": false, "error": {"type", "message", "fix",
"exit_code"}}``), and a command that has a result despite failing (a failed gate's verdict,
the disagreements `feast check` found) prints its fields too.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
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

_json = {"asked": False}
"""Whether the command being run was given --json: set while its options are read, reset by
the app's callback before each command (one process may run several: tests)."""


def note_json(value: bool) -> bool:
    _json["asked"] = bool(value)
    return value


def json_asked() -> bool:
    """Whether the command being run was given --json (for the one error wrapper)."""
    return _json["asked"]


JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        callback=note_json,
        help="Print the result as one JSON document on stdout, and nothing else there "
        '(`"ok"`, and the result or an `"error"`).',
    ),
]
RunDirOption = Annotated[
    str | None,
    typer.Option(
        "--run-dir",
        envvar="CAE_RAY_RUN_DIR",
        show_default=False,
        help="Where this run's artifacts go: a path or a URI (s3://...). Default: runs/ and the "
        "config file's name without .yaml.",
    ),
]
ConfigArgument = Annotated[
    Path,
    typer.Argument(envvar="CAE_RAY_CONFIG", show_default=False, help="The run's YAML config file."),
]
WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="When another command is writing the run dir, wait for it to finish (default: "
        "refuse, naming it).",
    ),
]


@contextmanager
def writing_run_dir(run_dir: str, wait: bool) -> Iterator[None]:
    """Around every command that writes the run dir: SIGTERM and SIGINT stop it cleanly (Ray
    shut down, exit 143 or 130), and with --wait it holds the run dir (waiting for it) from
    the start; without, each step takes it and another command's hold is refused."""
    from cae_ray.pipeline import hold_run_dir, stopping_on_signals

    with stopping_on_signals(), hold_run_dir(run_dir, wait=True) if wait else nullcontext():
        yield


def run_dir_for(run_dir: str | None, config: Path) -> str:
    """--run-dir, else ``runs/<config name>``: the same default for every command, so
    ``cae-ray select CONFIG`` then ``cae-ray validate CONFIG`` work on one run dir."""
    return run_dir or str(Path("runs") / config.stem)


class Problem(Exception):
    """A failure that is not one of cae-ray's errors (click refused the arguments, a bug), as
    the JSON error object's fields."""

    def __init__(self, kind: str, message: str, fix: str, code: int) -> None:
        super().__init__(message)
        self.kind, self.fix, self.code = kind, fix, code


def error_json(error: BaseException) -> dict[str, Any]:
    """An error as the JSON contract's ``"error"`` object."""
    if isinstance(error, Problem):
        return {
            "type": error.kind,
            "message": str(error),
            "fix": error.fix,
            "exit_code": error.code,
        }
    return {
        "type": type(error).__name__,
        "message": str(error),
        "fix": error.fix if isinstance(error, CaeRayError) else "",
        "exit_code": exit_code(error),
    }


def print_json(result: Mapping[str, Any], error: BaseException | None = None) -> None:
    """The one JSON document of --json on stdout: ``"ok"``, then ``"error"`` when there is
    one, then the result's fields (progress and messages go to stderr)."""
    document: dict[str, Any] = {"ok": error is None}
    if error is not None:
        document["error"] = error_json(error)
    document.update(result)
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def fail(
    error: CaeRayError | Problem, result: Mapping[str, Any] | None = None, *, say: bool = True
) -> typer.Exit:
    """Print ``error``'s message on stderr (``say``) and, with --json, its document (with the
    ``result`` the command has despite failing); the exit to raise, with its code."""
    if json_asked():
        print_json(result or {}, error)
    if say:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
    return typer.Exit(error.code if isinstance(error, Problem) else exit_code(error))


@contextmanager
def exits_on_error() -> Iterator[None]:
    """A cae-ray error raised inside becomes its one-line message (and with --json its
    document) and its exit code: the one place the CLI turns errors into exit codes (anything
    else is a bug, with its traceback; :func:`cae_ray.cli.main` prints its document)."""
    try:
        yield
    except CaeRayError as e:
        raise fail(e) from e


def quiet_ray() -> None:
    """Ray's own loggers at :func:`~cae_ray.runtime.cluster.ray_log_level` (at the default
    level, errors only): Ray Data logs every dataset's progress and Ray warns about its own
    settings; the CLI's progress display says what matters (`-v` brings it all back). Ray sets
    up its loggers and warning filters when imported, so this comes after the import."""
    if importlib.util.find_spec("ray") is None:  # a light install: the step names the extra
        return
    import warnings

    from cae_ray.runtime.cluster import ray_log_level

    level = ray_log_level()
    if level <= logging.INFO:
        return
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray.data
    import ray.train  # noqa: F401

    from cae_ray.runtime.compat import quiet_old_notices

    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.")
    quiet_old_notices()
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(level)
    # Ray Data warns, once per process, that the progress bars we just turned off are off.
    logging.getLogger("ray.data._internal.progress").setLevel(max(level, logging.ERROR))
