"""`cae-ray`: the command line. Thin: it parses, calls the library, and prints.

Exit codes: 0 success, 1 unexpected failure, 2 bad configuration or usage (also: no, an
edited or a stale selection in the run dir), 3 bad input data,
4 the Ray cluster is unreachable or lacks the resources asked for, 5 the validation gate
failed (the selected features lose more than the tolerance allows).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from cae_ray.config import Config, load_config
from cae_ray.console import make_console
from cae_ray.errors import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_GATE,
    CaeRayError,
    ValidationGateFailedError,
    exit_code,
    exit_codes_help,
)
from cae_ray.feast import restore_command
from cae_ray.storage import join

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
console = make_console()
errors = make_console(stderr=True)


def _print_version(asked: bool) -> None:
    if asked:
        from cae_ray.version import __version__

        console.print(f"cae-ray {__version__}", highlight=False)
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


def _quiet_ray() -> None:
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


JsonOption = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the result as one JSON document on stdout, and nothing else there."
    ),
]


def _print_json(document: Any) -> None:
    """One JSON document on stdout (progress and messages go to stderr)."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def _fail(error: CaeRayError) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
    return typer.Exit(exit_code(error))


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo's Feast repo and run go.")
    ] = Path("runs/demo"),
    rows: Annotated[int, typer.Option(help="Entities (rows) of the demo feature view.")] = 20_000,
    features: Annotated[int, typer.Option(help="Features of the demo feature view.")] = 1_000,
) -> None:
    """The whole pipeline on a generated local Feast repo: export a wide feature view, select
    10 features on a local Ray cluster, validate them, mark the rest deprecated, and report."""
    from cae_ray.demo import demo_config, make_demo_repo

    try:
        console.print(f"Creating the demo Feast repo in {directory / 'feature_repo'} ...")
        made = make_demo_repo(directory, rows=rows, features=features)
        config_path, cfg = demo_config(directory)
    except CaeRayError as e:
        raise _fail(e) from e
    console.print(
        f"Feature view customer_wide: {rows:,} customers x {features:,} features; "
        f"{len(made.informative)} carry the label's signal. Config: {config_path}"
    )
    record = _run_with_display(cfg, str(directory / "run"))
    found = set(made.informative) & set(record["steps"]["select"]["selected_features"])
    console.print(
        f"Found {len(found)} of the {len(made.informative)} informative features. Look at:\n"
        f"  the report:   {record['steps']['report']['path']}\n"
        f"  the registry: cd {made.repo} && feast feature-views describe customer_wide\n"
        f"  run again:    cae-ray run {config_path} --run-dir {directory / 'run'}"
    )


@app.command()
def run(
    config: Path,
    run_dir: Annotated[
        str | None,
        typer.Option(
            "--run-dir",
            help="Where this run's artifacts go: a path or a URI (default: runs/CONFIG).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run every step: export (from Feast) -> prepare -> select -> validate -> prune -> report.

    Running again with the same run dir resumes at the first unfinished step (an interrupted
    training from its last checkpoint). Exits with 5, before pruning, when the gate fails.
    """
    try:
        cfg = load_config(config)
    except CaeRayError as e:
        raise _fail(e) from e
    record = _run_with_display(cfg, run_dir or str(Path("runs") / config.stem), as_json)
    if as_json:
        _print_json(record)


def _run_with_display(cfg: Config, run_dir: str, as_json: bool = False) -> dict[str, Any]:
    from cae_ray.artifacts import RUN_RECORD, RunDir
    from cae_ray.console import step_display, summary_table
    from cae_ray.pipeline import run as run_all

    out = errors if as_json else console
    _quiet_ray()
    try:
        with step_display(out, cfg) as display:
            record = run_all(cfg, run_dir, on_event=display)
    except CaeRayError as e:
        if isinstance(e, ValidationGateFailedError):  # the run dir works: show what was made
            recorded = RunDir(run_dir).read_json(RUN_RECORD)
            if recorded is not None:
                out.print(summary_table(recorded, run_dir, cfg))
                if as_json:
                    _print_json(recorded)
        raise _fail(e) from e
    out.print(summary_table(record, run_dir, cfg))
    return record


def _with_progress(
    step: str,
    cfg: Config,
    work: Callable[[Callable[[dict[str, Any]], None]], dict[str, Any]],
    as_json: bool = False,
) -> dict[str, Any]:
    """One step with the same live line `cae-ray run` shows for it (on stderr with --json)."""
    from cae_ray.console import step_display
    from cae_ray.runtime.progress import StepEvent, step_summary

    _quiet_ray()
    with step_display(errors if as_json else console, cfg) as display:
        display(StepEvent(step, "started", {}))
        try:
            outcome = work(lambda record: display(StepEvent(step, "progress", record)))
        except BaseException:
            display(StepEvent(step, "failed", {}))
            raise
        display(StepEvent(step, "done", step_summary(step, outcome)))
    return outcome


RunDirOption = Annotated[
    str,
    typer.Option("--run-dir", help="Where this run's artifacts go: a path or a URI (s3://...)."),
]


@app.command()
def select(config: Path, run_dir: RunDirOption, as_json: JsonOption = False) -> None:
    """Train the selector with Ray Train on the config's dataset; writes RUN_DIR/selection.json.

    Re-running with the same run dir reuses finished work and resumes an interrupted training
    from its last checkpoint.
    """
    from cae_ray.pipeline import select as select_step

    try:
        cfg = load_config(config)
        selection = _with_progress(
            "select", cfg, lambda on_epoch: select_step(cfg, run_dir, on_epoch), as_json
        )
    except CaeRayError as e:
        raise _fail(e) from e
    if as_json:
        _print_json(selection)
        return
    table = Table(title=f"{selection['k']} selected features ({selection['method']})")
    table.add_column("feature")
    table.add_column("score", justify="right")
    scores = dict(zip(selection["candidate_features"], selection["scores"], strict=True))
    for name in selection["selected_features"]:
        table.add_row(name, f"{scores[name]:.3f}")
    console.print(table)
    written = f"Written: {join(run_dir, 'selection.json')}"
    if not selection["history"]:  # screened, no search: fewer than one row per 20 features
        console.print(
            "Chosen by the F statistic against the target: with under one training row per 20 "
            f"features no search was trained (its head would memorise the rows). {written}"
        )
        return
    last = selection["history"][-1]
    console.print(
        f"{len(selection['history'])} epochs, final loss {last['loss']:.4f}, "
        f"{'converged' if selection['converged'] else 'NOT converged'}, "
        f"{selection['collisions']} collisions resolved. {written}"
    )


@app.command()
def validate(config: Path, run_dir: RunDirOption, as_json: JsonOption = False) -> None:
    """Check that a model on the K selected features matches one on all features; writes
    RUN_DIR/validation.json. Exits with 5 when the gate fails, so a pipeline stops there."""
    from cae_ray.pipeline import validate as validate_step

    try:
        cfg = load_config(config)
        result = _with_progress("validate", cfg, lambda _: validate_step(cfg, run_dir), as_json)
    except CaeRayError as e:
        raise _fail(e) from e
    if as_json:
        _print_json(result)
        if not result["passed"]:
            raise typer.Exit(EXIT_GATE)
        return
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
    if result["reference"] is not None:
        reference = f"{result['reference']['value']:.4f}"
        table.add_row("stock reference (all features)", f"{result['n_features']:,}", reference)
    console.print(table)
    low, high, level = (result["interval"][key] for key in ("low", "high", "confidence"))
    console.print(
        f"selected - baseline: {result['difference']:+.4f}, "
        f"{100 * level:.0f}% interval [{low:+.4f}, {high:+.4f}]"
    )
    check = result.get("baseline_check") or {}
    if check.get("weak") and not check.get("required"):
        console.print(
            f"[yellow]Warning:[/] {check['reason']} Any selection may seem to match a weak "
            "baseline: choose a stronger validation.model (gbdt).",
            highlight=False,
        )
    verdict = "[bold green]PASSED[/]" if result["passed"] else "[bold red]FAILED[/]"
    console.print(f"{verdict}: {result['reason']} Written: {join(run_dir, 'validation.json')}")
    if not result["passed"]:
        raise typer.Exit(EXIT_GATE)


@app.command()
def export(config: Path, run_dir: RunDirOption, as_json: JsonOption = False) -> None:
    """Export the config's Feast features for its entity rows to RUN_DIR/export/ (Parquet,
    point-in-time correct, one column per feature, plus _manifest.json)."""
    from cae_ray.pipeline import export as export_step

    try:
        manifest = export_step(load_config(config), run_dir)
    except CaeRayError as e:
        raise _fail(e) from e
    if as_json:
        _print_json(manifest)
        return
    out = join(run_dir, "export")
    console.print(
        f"Exported {manifest['rows']:,} rows x {len(manifest['columns']):,} features from Feast "
        f"project {manifest['project']!r} to {out} ({manifest['parts']} parts, _manifest.json)."
    )
    console.print(
        "Select from it with `cae-ray select/run` and the same config: leave data.path out and "
        "the export's features are the candidates.",
        highlight=False,
    )


@app.command()
def prune(
    config: Path,
    run_dir: RunDirOption,
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
) -> None:
    """Set the Feast registry's deprecation marks (view tags) to this run's unselected features
    (kept features lose earlier marks) and the kept FeatureService (`feast.kept_service`) to its
    selected ones. Without --apply, only prints and saves the plan."""
    from cae_ray.pipeline import prune as prune_step

    if check:
        _check_marks(config, as_json)
        return
    if force and not reason:
        errors.print('[bold red]error:[/] --force needs --reason "..." (it goes in the audit log).')
        raise typer.Exit(EXIT_CONFIG)
    try:
        cfg = load_config(config)
        plan = prune_step(cfg, run_dir, apply=apply, force_reason=reason if force else None)
    except CaeRayError as e:
        raise _fail(e) from e
    if as_json:
        _print_json(plan)
        return
    model = plan["feature_service"]
    table = Table(
        title=f"Prune plan for run {plan['run_id']} of model {model} (project {plan['project']})"
    )
    columns = ("feature view", "unselected", "kept by other models", "newly marked")
    for column in (*columns, "back in use", "keep"):
        table.add_column(column)
    for view in sorted({*plan["deprecate"], *plan["keep"]}):
        marked, kept = plan["deprecate"].get(view, []), plan["keep"].get(view, [])
        table.add_row(
            view,
            f"{len(marked)}: {_names(marked)}",
            str(len(plan["kept_by_others"].get(view, {}))),
            str(len(plan["added"].get(view, []))),
            _names(plan["removed"].get(view, [])),
            ", ".join(kept),
        )
    console.print(table)
    console.print(
        f"The kept FeatureService {model} gets the kept features. A feature is marked "
        "deprecated only when no model keeps it.",
        highlight=False,
    )
    for other, summary in plan["others"].items():
        count = sum(map(len, summary["keep"].values()))
        console.print(
            f"  model {other} (label {summary['label'] or 'none'}, run {summary['run']}) keeps "
            f"{count} of these views' features",
            highlight=False,
        )
    for view, features in sorted(plan["readers"].items()):
        for feature, services in sorted(features.items()):
            errors.print(
                f"[bold yellow]still read:[/] {view}:{feature} (deprecated) by FeatureService "
                f"{', '.join(services)}",
                highlight=False,
            )
    if plan["hook_missing"]:
        errors.print(
            "[bold yellow]warning:[/] the repo's definitions lack the overlay hook, so the next "
            "`feast apply` removes these marks. Add this line to a definitions module: "
            "from cae_ray.feast.overlay import annotate_all; annotate_all(globals())",
            highlight=False,
        )
    assert cfg.feast is not None  # prune_step refuses a config without one
    undo = restore_command(cfg.feast.repo, plan["run_id"])
    if plan["already_applied"]:
        console.print(
            f"[yellow]Already applied:[/] run {plan['run_id']}'s marks are in the registry; "
            f"nothing changed. Undo with: {undo}",
            highlight=False,
        )
    elif plan["applied"]:
        console.print(f"[green]Applied.[/] Undo with: {undo}", highlight=False)
    else:
        console.print(
            "Plan only, nothing written to the registry "
            f"(saved: {join(run_dir, 'prune.json')}). Re-run with --apply."
        )


def _names(names: list[str], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (" ..." if len(names) > shown else "")


def _check_marks(config: Path, as_json: bool = False) -> None:
    from dataclasses import asdict

    from cae_ray.pipeline import check_marks

    try:
        findings = check_marks(load_config(config))
    except CaeRayError as e:
        raise _fail(e) from e
    if as_json:
        print(json.dumps(asdict(findings)))
    elif not findings.disagreements:
        console.print("[green]The registry and the repo overlay agree on cae-ray's marks.[/]")
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
    if findings.disagreements:
        raise typer.Exit(EXIT_FAILURE)


@feast_app.command("check")
def feast_check(
    config: Path,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Tell whether the registry and the repo's overlay agree on cae-ray's marks and services,
    and name FeatureServices older cae-ray versions left. Exits 1 when they disagree."""
    _check_marks(config, as_json)


@feast_app.command("status")
def feast_status(
    config: Path,
    model: Annotated[
        str | None, typer.Option("--model", help="Only this model's (kept service's) features.")
    ] = None,
    features: Annotated[
        bool, typer.Option("--features", help="Also list every feature (one line each).")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print models, views and every feature as JSON.")
    ] = False,
) -> None:
    """The feature lifecycle: the models sharing the repo and what each keeps, then per view
    how many features are kept, deprecated, due to retire; with --features each feature's
    state, the models that keep it, the services that still read it, since when, due when."""
    from cae_ray.pipeline import feature_status

    try:
        status = feature_status(load_config(config), model)
    except CaeRayError as e:
        raise _fail(e) from e
    if as_json:
        _print_json(status)
        return
    if status["models"]:
        console.print(_models_table(status["models"]))
    else:
        console.print("No model has applied a prune in this repo yet.")
    for view in status["views"]:
        console.print(_view_line(view), highlight=False)
    if features:
        console.print(_features_table(status["features"]))
    elif status["features"]:
        console.print(f"Each feature: cae-ray feast status {config} --features", highlight=False)


def _models_table(models: dict[str, Any]) -> Table:
    table = Table(title="Models sharing the Feast repo (each a kept FeatureService)")
    for column in ("model", "label", "latest run", "applied", "kept / candidates"):
        table.add_column(column)
    for name, m in models.items():
        label = m["label"] or ("unknown (earlier version)" if not m["label_known"] else "none")
        table.add_row(name, label, m["run"], m["at"] or "", f"{m['kept']} / {m['candidates']}")
    return table


def _view_line(view: dict[str, Any]) -> str:
    deprecated = f"{view['deprecated']} deprecated"
    if view["due"]:
        deprecated += f" ({view['due']} due to retire)"
    elif view["first_due"]:
        deprecated += f" (the first due to retire on {view['first_due']})"
    counts = f"{view['kept']} kept, {deprecated}, {view['retired']} retired"
    return f"{view['view']}: {counts}, {view['active']} active"


def _features_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Features in the Feast repo")
    columns = ("feature view", "feature", "state", "kept by", "read by", "since", "run")
    for column in (*columns, "retire after"):
        table.add_column(column)
    for row in rows:
        cells = [row["view"], row["feature"], row["state"], ", ".join(row["models"])]
        cells += [", ".join(row["readers"]), row["since"], row["run"], row["retire_after"]]
        table.add_row(*(c or "" for c in cells))
    return table


@feast_app.command("forget-model")
def feast_forget_model(
    config: Path,
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

    try:
        cfg = load_config(config)
        plan = forget_model(cfg, name, apply=apply)
    except CaeRayError as e:
        raise _fail(e) from e
    if as_json:
        _print_json(plan)
        return
    added = sum(map(len, plan["added"].values()))
    removed = sum(map(len, plan["removed"].values()))
    console.print(
        f"Model {name} (label {plan['label'] or 'none'}, latest run {plan['last_run']}): its "
        f"FeatureService {name} goes; {added} feature(s) only it kept become deprecated, "
        f"{removed} mark(s) go.",
        highlight=False,
    )
    for view, features in sorted(plan["added"].items()):
        console.print(f"  {view}: newly deprecated {_names(features)}", highlight=False)
    if not plan["applied"]:
        console.print("Plan only, nothing changed. Re-run with --apply.")
        return
    assert cfg.feast is not None
    undo = restore_command(cfg.feast.repo, plan["run_id"])
    console.print(f"[green]Forgotten.[/] Undo with: {undo}", highlight=False)


@feast_app.command("remove-services")
def feast_remove_services(config: Path, names: list[str]) -> None:
    """Remove FeatureServices an older cae-ray version made (one per run, `cae_ray_<run id>`)
    from the registry and the repo overlay. Refuses any other service."""
    from cae_ray.pipeline import remove_services

    try:
        removed = remove_services(load_config(config), names)
    except CaeRayError as e:
        raise _fail(e) from e
    console.print(f"Removed {len(removed)} FeatureService(s): {', '.join(removed)}.")


@app.command()
def retire(
    config: Path,
    run_dir: RunDirOption,
    apply: Annotated[
        bool, typer.Option("--apply", help="Rewrite the definitions and `feast apply`.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Rewrite files that have uncommitted git changes.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove features deprecated for longer than `feast.grace_period` from the repo's Python
    definitions. Without --apply, prints the plan and its diff and saves RUN_DIR/retire.json;
    with it, applies that reviewed plan (or a fresh one). Undo with `cae-ray restore`."""
    from cae_ray.pipeline import retire as retire_step

    try:
        cfg = load_config(config)
        plan = retire_step(cfg, run_dir, apply=apply, force=force)
    except CaeRayError as e:
        raise _fail(e) from e
    if as_json:
        _print_json(plan)
        return
    assert cfg.feast is not None
    if not plan["count"]:
        console.print(
            f"Nothing to retire: no feature has been deprecated for {plan['grace_period']}."
        )
        return
    table = Table(title=f"Retirement {plan['run_id']}: deprecated for {plan['grace_period']}+")
    for column in ("feature view", "features", "deprecated since", "how"):
        table.add_column(column)
    for view, marks in sorted(plan["due"].items()):
        literal = set(plan["literal"].get(view, []))
        for feature, mark in marks.items():
            how = "removed from the source" if feature in literal else "dropped by the hook"
            table.add_row(view, feature, mark["since"], how)
    console.print(table)
    if plan["diff"]:
        console.print(plan["diff"], markup=False, highlight=False)
    if any(plan["by_code"].values()):
        console.print(
            "Fields built by code (comprehensions, helpers) stay in the source; the overlay "
            "hook drops them when Feast imports the repo."
        )
    undo = restore_command(cfg.feast.repo, plan["run_id"])
    if plan["applied"]:
        console.print(f"[green]Retired {plan['count']} features.[/] Undo with: {undo}")
    else:
        console.print(
            f"Plan only, nothing changed (saved: {join(run_dir, 'retire.json')}). "
            "Re-run with --apply."
        )


@app.command()
def restore(
    repo: Annotated[Path, typer.Option("--repo", help="The Feast repo (feature_store.yaml).")],
    run_id: Annotated[str, typer.Option("--run-id", help="The run id a prune printed.")],
    as_json: JsonOption = False,
) -> None:
    """Undo the latest prune or retirement: the registry's marks and kept FeatureService (and
    a retirement's definitions files, byte for byte) as they were before it."""
    from cae_ray.pipeline import restore as restore_step

    try:
        record = restore_step(str(repo), run_id)
    except CaeRayError as e:
        raise _fail(e) from e
    if as_json:
        _print_json(record)
        return
    if not record["restored"]:
        console.print(f"Nothing to restore: run {run_id}'s {record['action']} was already undone.")
        return
    console.print(f"Restored run {run_id}: {_restored(record)}.", highlight=False)


def _restored(record: dict[str, Any]) -> str:
    """What a restore changed, in words: counted from the registry, not from the audit."""
    if record["action"] == "retire":
        files = record["files_restored"]
        return f"{record['count']} features back; {len(files)} definitions file(s) put back"
    counts = {
        kind: sum(len(change[kind]) for change in record["changed"].values())
        for kind in ("removed", "added", "reset")
    }
    said = [f"{counts['removed']} tag(s) removed"]
    if counts["added"]:
        said.append(f"{counts['added']} put back")
    if counts["reset"]:
        said.append(f"{counts['reset']} set back to their earlier value")
    service = record["feature_service"]
    state = "removed" if record["service_removed"] else "set back as it was"
    said.append(f"FeatureService {service} {state}")
    return ", ".join(said)


@config_app.command("check")
def config_check(path: Path, as_json: JsonOption = False) -> None:
    """Validate a config file and print it with every default filled in."""
    try:
        cfg = load_config(path)
    except CaeRayError as e:
        raise _fail(e) from e
    if as_json:
        _print_json(cfg.model_dump(mode="json"))
        return
    console.print(f"[green]{path}: valid[/]")
    console.print_json(cfg.model_dump_json())


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of the config file (every key, default and description)."""
    console.print_json(json.dumps(Config.model_json_schema()))


if __name__ == "__main__":  # python -m cae_ray.cli
    app()
