"""The `cae-ray` Typer app and its command groups; every command module registers on these.

The options of the whole app (``-v``, ``-q``, ``--log-level``) are accepted before and after
the command's name: ``cae-ray -v run CONFIG`` and ``cae-ray run CONFIG -v`` are the same.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from cae_ray.cli.output import errors, note_json, out
from cae_ray.errors import exit_codes_help


class Level(str, Enum):
    """--log-level's choices, Python's level names."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


FLAGS = {"-v", "--verbose", "-q", "--quiet"}
"""Options of the whole app that take no value (``-vv`` counts too)."""


def hoisted(args: list[str]) -> list[str]:
    """``args`` with the app's own options moved in front of the command's name, so that
    click, which reads a group's options only before it, reads them wherever they are. Stops
    at ``--`` (what follows is never an option)."""
    front: list[str] = []
    rest: list[str] = []
    tokens = iter(args)
    for token in tokens:
        if token == "--":
            rest += [token, *tokens]
            break
        if token in FLAGS or (len(token) > 2 and token[0] == "-" and set(token[1:]) == {"v"}):
            front.append(token)
        elif token == "--log-level":
            front += [token, next(tokens, "")]
        elif token.startswith("--log-level="):
            front.append(token)
        else:
            rest.append(token)
    return front + rest


class _PlainOption(TyperOption):
    """An option whose help shows its value's name (``PATH``), and nothing for a flag, where
    Typer shows its Python type (``<bool>``, ``<str>``)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        return self.metavar or (self.name or "").upper()


class _PlainArgument(TyperArgument):
    """An argument shown as ``CONFIG`` (``[CONFIG]`` when optional), not ``{config}``."""

    def _usage_display_name(self) -> str:
        name = (self.metavar or self.name or "").upper()
        return name if self.required else f"[{name}]"

    @property
    def display_name_raw(self) -> str:
        return (self.metavar or self.name or "").upper()

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _plain(param: Any) -> Any:
    if type(param) is TyperOption:
        param.__class__ = _PlainOption
    elif type(param) is TyperArgument:
        param.__class__ = _PlainArgument
    return param


class _PlainCommand(TyperCommand):
    """A command whose --help option is shown the plain way too."""

    def get_help_option(self, ctx: Any) -> Any:
        return _plain(super().get_help_option(ctx))


def plain_help(command: Any) -> Any:
    """``command``'s parameters shown the plain way in --help (:class:`_PlainOption`,
    :class:`_PlainArgument`), where Typer shows ``{config}`` and ``<bool>``; parsing is
    untouched (the classes only add display methods)."""
    for param in command.params:
        _plain(param)
    if type(command) is TyperCommand:
        command.__class__ = _PlainCommand
    return command


class CaeRayGroup(TyperGroup):
    """cae-ray's command groups: read the app's options wherever they stand (:func:`hoisted`),
    and show every command's parameters the plain way (:func:`plain_help`)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        plain_help(self)  # Typer adds its completion options after __init__
        super().format_help(ctx, formatter)

    def get_help_option(self, ctx: Any) -> Any:
        return _plain(super().get_help_option(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if ctx.parent is None:  # the app itself, not `config` or `feast`
            args = hoisted(args)
        return super().parse_args(ctx, args)

    def get_command(self, ctx: Any, cmd_name: str) -> Any | None:
        command = super().get_command(ctx, cmd_name)
        return None if command is None else plain_help(command)


app = typer.Typer(
    cls=CaeRayGroup,
    help="Concrete Autoencoder feature selection (CAE / IP-CAE) for wide feature tables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    epilog=exit_codes_help(),
)
config_app = typer.Typer(
    cls=CaeRayGroup, help="Inspect and check configuration files.", no_args_is_help=True
)
app.add_typer(config_app, name="config")
feast_app = typer.Typer(
    cls=CaeRayGroup,
    help="The feature lifecycle in the Feast repo: status, consistency, leftovers.",
    no_args_is_help=True,
)
app.add_typer(feast_app, name="feast")


def _print_version(asked: bool) -> None:
    if asked:
        from cae_ray.version import __version__

        out.print(f"cae-ray {__version__}", highlight=False)
        raise typer.Exit()


def log_level(verbose: int, quiet: bool, level: Level) -> int:
    """The level of cae-ray's log: ``-v`` INFO (every epoch), ``-vv`` DEBUG, ``-q`` ERROR,
    else ``--log-level`` (WARNING by default)."""
    if verbose:
        return logging.INFO if verbose == 1 else logging.DEBUG
    if quiet:
        return logging.ERROR
    return int(getattr(logging, level.value))


@app.callback()
def main(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            show_default=False,
            help="Log every epoch, and Ray's own lines (-vv: debug).",
        ),
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log errors only.")] = False,
    level: Annotated[
        Level,
        typer.Option(
            "--log-level",
            envvar="CAE_RAY_LOG_LEVEL",
            case_sensitive=False,
            help="DEBUG, INFO, WARNING, ERROR or CRITICAL; Ray's own lines show from INFO on.",
        ),
    ] = Level.WARNING,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    note_json(False)  # until the command's own --json says otherwise
    configure_logging(log_level(verbose, quiet, level))


class _Handler(RichHandler):
    """cae-ray's log handler on stderr (a class of its own, to be found and replaced)."""


def configure_logging(level: int) -> None:
    """The root logger at ``level``, into stderr through one handler of ours: a process that
    runs several commands (tests) keeps one handler, at the last command's level."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    root.addHandler(_Handler(console=errors, show_path=False))
    root.setLevel(level)
