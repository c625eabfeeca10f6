"""`cae-ray config ...`: check a config file, print the schema of every key."""

from __future__ import annotations

import json

from cae_ray.cli.app import config_app
from cae_ray.cli.output import ConfigArgument, JsonOption, exits_on_error, out, print_json
from cae_ray.config import Config, load_config


@config_app.command("check")
def config_check(path: ConfigArgument, as_json: JsonOption = False) -> None:
    """Validate a config file and print it with every default filled in."""
    with exits_on_error():
        cfg = load_config(path)
    if as_json:
        print_json(cfg.model_dump(mode="json"))
        return
    out.print(f"[green]{path}: valid[/]")
    out.print_json(cfg.model_dump_json())


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of the config file (every key, default and description)."""
    out.print_json(json.dumps(Config.model_json_schema()))
