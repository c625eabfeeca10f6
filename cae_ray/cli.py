"""`cae-ray`: the command line. Thin: it parses, calls the library, and prints.

Exit codes: 0 success, 1 unexpected failure, 2 bad configuration or usage (also: no, an
edited or a stale selection in the run dir), 3 bad input data,
4 the Ray cluster is unreachable or lacks the resources asked for, 5 the validation gate
failed (the selected features lose more than the tolerance allows).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cae_ray.config import Config, load_config
from cae_ray.demo import DEMO_CONFIG, DemoData, make_demo_data
from cae_ray.errors import (
    CaeRayError,
    ConfigFileError,
    ConfigValidationError,
    FeastError,
    GpuUnavailableError,
    InvalidInputError,
    MissingDataConfigError,
    NoSelectionError,
    RayUnreachableError,
    SelectionConfigMismatchError,
    SelectionEditedError,
)
from cae_ray.loop import EpochRecord

EXIT_FAILURE, EXIT_CONFIG, EXIT_INPUT, EXIT_CLUSTER, EXIT_GATE = 1, 2, 3, 4, 5

app = typer.Typer(
    help="Concrete Autoencoder feature selection (CAE / IP-CAE) for wide feature tables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect and check configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
console = Console()
errors = Console(stderr=True)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every epoch.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=errors, show_path=False)],
    )


def _fail(error: CaeRayError) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {error}", highlight=False)
    if isinstance(error, ConfigFileError | ConfigValidationError | MissingDataConfigError):
        return typer.Exit(EXIT_CONFIG)
    if isinstance(
        error, NoSelectionError | SelectionEditedError | SelectionConfigMismatchError | FeastError
    ):
        return typer.Exit(EXIT_CONFIG)
    if isinstance(error, RayUnreachableError | GpuUnavailableError):
        return typer.Exit(EXIT_CLUSTER)
    if isinstance(error, InvalidInputError):
        return typer.Exit(EXIT_INPUT)
    return typer.Exit(EXIT_FAILURE)


@app.command()
def demo(
    config: Annotated[
        Path | None,
        typer.Option(help="A config file; default: the embedded demo (configs/demo.yaml)."),
    ] = None,
    rows: Annotated[int, typer.Option(help="Rows of the generated table.")] = 3000,
    features: Annotated[int, typer.Option(help="Columns of the generated table.")] = 500,
) -> None:
    """Select features on a generated table whose informative columns are known."""
    try:
        cfg = load_config(config) if config else DEMO_CONFIG
        data = make_demo_data(rows=rows, features=features, informative=cfg.selector.k)
        console.print(
            f"Generated {rows:,} rows x {features:,} features; {cfg.selector.k} are informative "
            f"({', '.join(data.informative[:5])}, ...). Selecting k={cfg.selector.k} with "
            f"{cfg.selector.method} ({cfg.head.task} head)."
        )
        selector, seconds = _fit_with_progress(cfg, data)
    except CaeRayError as e:
        raise _fail(e) from e
    _print_demo_result(selector, data, seconds)


def _fit_with_progress(cfg: Config, data: DemoData) -> tuple[Any, float]:
    from cae_ray.estimator import ConcreteFeatureSelector

    selector = ConcreteFeatureSelector.from_config(cfg)
    columns = [
        TextColumn("training"),
        BarColumn(),
        TextColumn("epoch {task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    ]
    started = time.perf_counter()
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("fit", total=cfg.training.epochs, status="")

        def on_epoch_end(record: EpochRecord) -> None:
            status = f"loss {record.loss:.4f}  mean max prob {record.mean_max:.3f}"
            progress.update(bar, completed=record.epoch + 1, status=status)

        selector.fit(data.frame, data.target, on_epoch_end=on_epoch_end)
    return selector, time.perf_counter() - started


def _print_demo_result(selector: Any, data: DemoData, seconds: float) -> None:
    informative = set(data.informative)
    table = Table(title="Selected features", show_lines=False)
    for column in ("feature", "score", "informative?"):
        table.add_column(column)
    names = selector.get_feature_names_out()
    for index, name in zip(selector.selected_indices_, names, strict=True):
        hit = "[green]yes[/]" if name in informative else "[red]no[/]"
        table.add_row(name, f"{selector.scores_[index]:.3f}", hit)
    console.print(table)
    found = len(informative.intersection(names))
    state = "converged" if selector.converged_ else "not converged"
    console.print(
        f"Found {found} of {len(informative)} informative features in {seconds:.1f} s "
        f"({len(selector.history_)} epochs, {state}, {selector.collisions_} collisions resolved)."
    )


RunDir = Annotated[Path, typer.Option("--run-dir", help="Where this run's artifacts go.")]


@app.command()
def select(config: Path, run_dir: RunDir) -> None:
    """Train the selector with Ray Train on the config's dataset; writes RUN_DIR/selection.json.

    Re-running with the same run dir reuses finished work and resumes an interrupted training
    from its last checkpoint.
    """
    from cae_ray.pipeline import select as select_step

    try:
        selection = select_step(load_config(config), run_dir)
    except CaeRayError as e:
        raise _fail(e) from e
    table = Table(title=f"{selection['k']} selected features ({selection['method']})")
    table.add_column("feature")
    table.add_column("score", justify="right")
    scores = dict(zip(selection["candidate_features"], selection["scores"], strict=True))
    for name in selection["selected_features"]:
        table.add_row(name, f"{scores[name]:.3f}")
    console.print(table)
    last = selection["history"][-1]
    console.print(
        f"{len(selection['history'])} epochs, final loss {last['loss']:.4f}, "
        f"{'converged' if selection['converged'] else 'NOT converged'}, "
        f"{selection['collisions']} collisions resolved. Written: {run_dir / 'selection.json'}"
    )


@app.command()
def validate(config: Path, run_dir: RunDir) -> None:
    """Check that a model on the K selected features matches one on all features; writes
    RUN_DIR/validation.json. Exits with 5 when the gate fails, so a pipeline stops there."""
    from cae_ray.pipeline import validate as validate_step

    try:
        result = validate_step(load_config(config), run_dir)
    except CaeRayError as e:
        raise _fail(e) from e
    table = Table(
        title=f"Validation gate: {result['metric']} on {result['validation_rows']:,} rows"
    )
    for column in ("model", "features", result["metric"]):
        table.add_column(column, justify="right")
    baseline = result["baseline"]
    table.add_row(
        f"baseline ({baseline['source']})", f"{result['n_features']:,}", f"{baseline['value']:.4f}"
    )
    table.add_row("selected", f"{result['k']:,}", f"{result['selected']['value']:.4f}")
    console.print(table)
    low, high, level = (result["interval"][key] for key in ("low", "high", "confidence"))
    console.print(
        f"selected - baseline: {result['difference']:+.4f}, "
        f"{100 * level:.0f}% interval [{low:+.4f}, {high:+.4f}]"
    )
    verdict = "[bold green]PASSED[/]" if result["passed"] else "[bold red]FAILED[/]"
    console.print(f"{verdict}: {result['reason']} Written: {run_dir / 'validation.json'}")
    if not result["passed"]:
        raise typer.Exit(EXIT_GATE)


@app.command()
def export(config: Path, run_dir: RunDir) -> None:
    """Export the config's Feast features for its entity rows to RUN_DIR/export/ (Parquet,
    point-in-time correct, one column per feature, plus _manifest.json)."""
    from cae_ray.pipeline import export as export_step

    try:
        manifest = export_step(load_config(config), run_dir)
    except CaeRayError as e:
        raise _fail(e) from e
    out = run_dir / "export"
    console.print(
        f"Exported {manifest['rows']:,} rows x {len(manifest['columns']):,} features from Feast "
        f"project {manifest['project']!r} to {out} ({manifest['parts']} parts, _manifest.json)."
    )
    console.print(
        f"To select from it: data: {{path: {out}, features: {{all_numeric_except: "
        f"[{', '.join(manifest['entity_columns'])}]}}, row_key: {manifest['row_key']}}}"
    )


@app.command()
def prune(
    config: Path,
    run_dir: RunDir,
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
) -> None:
    """Mark the unselected features deprecated in the Feast registry (view tags) and register a
    FeatureService of the kept ones. Without --apply, only prints and saves the plan."""
    from cae_ray.pipeline import prune as prune_step

    if check:
        _check_marks(config)
        return
    if force and not reason:
        errors.print('[bold red]error:[/] --force needs --reason "..." (it goes in the audit log).')
        raise typer.Exit(EXIT_CONFIG)
    try:
        plan = prune_step(
            load_config(config), run_dir, apply=apply, force_reason=reason if force else None
        )
    except CaeRayError as e:
        raise _fail(e) from e
    table = Table(title=f"Prune plan for run {plan['run_id']} (project {plan['project']})")
    for column in ("feature view", "deprecate", "keep"):
        table.add_column(column)
    for view in sorted({*plan["deprecate"], *plan["keep"]}):
        marked, kept = plan["deprecate"].get(view, []), plan["keep"].get(view, [])
        table.add_row(
            view,
            f"{len(marked)}: {', '.join(marked[:6])}{' ...' if len(marked) > 6 else ''}",
            ", ".join(kept),
        )
    console.print(table)
    console.print(f"FeatureService of the kept features: {plan['feature_service']}")
    if plan["hook_missing"]:
        errors.print(
            "[bold yellow]warning:[/] the repo's definitions lack the overlay hook, so the next "
            "`feast apply` removes these marks. Add this line to a definitions module: "
            "from cae_ray.feast.overlay import annotate_all; annotate_all(globals())",
            highlight=False,
        )
    if plan["applied"]:
        console.print(
            f"[green]Applied.[/] Undo with: cae-ray restore --repo REPO --run-id {plan['run_id']}"
        )
    else:
        console.print(
            "Plan only, nothing written to the registry "
            f"(saved: {run_dir / 'prune.json'}). Re-run with --apply."
        )


def _check_marks(config: Path) -> None:
    from cae_ray.pipeline import check_marks

    try:
        problems = check_marks(load_config(config))
    except CaeRayError as e:
        raise _fail(e) from e
    if not problems:
        console.print("[green]The registry and the repo overlay agree on cae-ray's marks.[/]")
        return
    for problem in problems:
        errors.print(f"[bold red]disagree:[/] {problem}", highlight=False)
    errors.print("Run `feast apply` in the repo (the repo is the source of truth) to align them.")
    raise typer.Exit(EXIT_FAILURE)


@app.command()
def restore(
    repo: Annotated[Path, typer.Option("--repo", help="The Feast repo (feature_store.yaml).")],
    run_id: Annotated[str, typer.Option("--run-id", help="The run id a prune printed.")],
) -> None:
    """Undo one prune: its tags leave the views and its FeatureService is removed."""
    from cae_ray.pipeline import restore as restore_step

    try:
        record = restore_step(str(repo), run_id)
    except CaeRayError as e:
        raise _fail(e) from e
    marked = sum(len(v) for v in record["deprecate"].values())
    console.print(
        f"Restored run {run_id}: {marked} deprecation marks and "
        f"{record['feature_service']} removed."
    )


@config_app.command("check")
def config_check(path: Path) -> None:
    """Validate a config file and print it with every default filled in."""
    try:
        cfg = load_config(path)
    except CaeRayError as e:
        raise _fail(e) from e
    console.print(f"[green]{path}: valid[/]")
    console.print_json(cfg.model_dump_json())


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of the config file (every key, default and description)."""
    console.print_json(json.dumps(Config.model_json_schema()))


if __name__ == "__main__":  # python -m cae_ray.cli
    app()
