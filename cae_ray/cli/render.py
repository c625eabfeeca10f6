"""What the step commands print: a table or a few lines per result. Holds no logic: every figure
comes from the step's result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from cae_ray.feast import restore_command
from cae_ray.gate.figures import figures
from cae_ray.records import ExportManifest, Selection, Verdict

if TYPE_CHECKING:
    from cae_ray.feast.forget import ForgetPlan
    from cae_ray.feast.registry import PrunePlan
    from cae_ray.feast.retire import RetirePlan
    from cae_ray.feast.status import FeatureState, ModelSummary, ViewSummary

HOOK_MISSING = (
    "[bold yellow]warning:[/] the repo's definitions lack the overlay hook, so the next "
    "`feast apply` removes these marks. Add this line to a definitions module: "
    "from cae_ray.feast.overlay import annotate_all; annotate_all(globals())"
)


def names(listed: list[str], shown: int = 6) -> str:
    """The first few of ``listed``, then `...`."""
    return ", ".join(listed[:shown]) + (" ..." if len(listed) > shown else "")


def exported(manifest: ExportManifest, where: str) -> str:
    return (
        f"Exported {manifest.rows:,} rows x {len(manifest.columns):,} features from Feast "
        f"project {manifest.project!r} to {where} ({manifest.parts} parts, _manifest.json)."
    )


def selection_table(selection: Selection) -> Table:
    table = Table(title=f"{selection.k} selected features ({selection.method})")
    table.add_column("feature")
    table.add_column("score", justify="right")
    scores = dict(zip(selection.candidate_features, selection.scores, strict=True))
    for name in selection.selected_features:
        table.add_row(name, f"{scores[name]:.3f}")
    return table


def selection_summary(selection: Selection, where: str) -> str:
    written = f"Written: {where}"
    if selection.k_curve is not None:
        written = f"{selection.k_curve.reason}. {written}"
    if selection.incumbent is not None:
        written = f"{selection.since_previous}. {written}"
    if not selection.searched:  # fewer than one row per 20 features: the F statistic chose
        return (
            "Chosen by the F statistic against the target: with under one training row per 20 "
            f"features no search was trained (its head would memorise the rows). {written}"
        )
    last = selection.history[-1]
    return (
        f"{len(selection.history)} epochs, final loss {last['loss']:.4f}, "
        f"{'converged' if selection.converged else 'NOT converged'}, "
        f"{selection.collisions} collisions resolved. {written}"
    )


def verdict_figures(verdict: Verdict) -> dict[str, str]:
    """The verdict's numbers in the one format its reason uses (:func:`figures`): baseline,
    selected, reference (or ""), difference and the interval's ends, signed."""
    interval, reference = verdict.interval, verdict.reference
    values = [verdict.baseline.value, verdict.selected.value, verdict.difference]
    values += [interval.low, interval.high, *([reference.value] if reference else [])]
    shown = figures(*values)
    signed = [text if text.startswith("-") else f"+{text}" for text in shown[2:5]]
    return {
        "baseline": shown[0],
        "selected": shown[1],
        "difference": signed[0],
        "low": signed[1],
        "high": signed[2],
        "reference": shown[5] if reference else "",
    }


def validation_table(verdict: Verdict) -> Table:
    table = Table(title=f"Validation gate: {verdict.metric} on {verdict.validation_rows:,} rows")
    for column in ("model", "features", verdict.metric):
        table.add_column(column, justify="right")
    shown = verdict_figures(verdict)
    baseline = f"baseline ({verdict.baseline.source})"
    table.add_row(baseline, f"{verdict.n_features:,}", shown["baseline"])
    table.add_row("selected", f"{verdict.k:,}", shown["selected"])
    if verdict.reference is not None:
        reference = shown["reference"]
        table.add_row("stock reference (all features)", f"{verdict.n_features:,}", reference)
    return table


def validation_lines(verdict: Verdict, where: str) -> list[str]:
    shown = verdict_figures(verdict)
    lines = [
        f"selected - baseline: {shown['difference']}, "
        f"{100 * verdict.interval.confidence:.0f}% interval [{shown['low']}, {shown['high']}]"
    ]
    for warning in (verdict.perfect_warning, verdict.weak_baseline_warning):
        if warning is not None:
            lines.append(f"[yellow]Warning:[/] {warning}")
    mark = "[bold green]PASSED[/]" if verdict.passed else "[bold red]FAILED[/]"
    lines.append(f"{mark}: {verdict.reason} Written: {where}")
    return lines


def prune_table(plan: PrunePlan) -> Table:
    model, project = plan.feature_service, plan.project
    table = Table(title=f"Prune plan for run {plan.run_id} of model {model} (project {project})")
    columns = ("feature view", "unselected", "kept by other models", "newly marked")
    for column in (*columns, "back in use", "keep"):
        table.add_column(column)
    for view in plan.views:
        marked, kept = plan.deprecate.get(view, []), plan.keep.get(view, [])
        table.add_row(
            view,
            f"{len(marked)}: {names(marked)}",
            str(len(plan.kept_by_others.get(view, {}))),
            str(len(plan.added.get(view, []))),
            names(plan.removed.get(view, [])),
            ", ".join(kept),
        )
    return table


def prune_others(plan: PrunePlan) -> list[str]:
    """The other models sharing the plan's views, a line each."""
    lines = []
    for other, summary in plan.others.items():
        count = sum(map(len, summary["keep"].values()))
        lines.append(
            f"  model {other} (label {summary['label'] or 'none'}, run {summary['run']}) keeps "
            f"{count} of these views' features"
        )
    return lines


def still_read(plan: PrunePlan) -> list[str]:
    """Deprecated features (after the plan) that the team's FeatureServices still read."""
    return [
        f"[bold yellow]still read:[/] {view}:{feature} (deprecated) by FeatureService "
        f"{', '.join(services)}"
        for view, features in sorted(plan.readers.items())
        for feature, services in sorted(features.items())
    ]


def prune_lines(plan: PrunePlan, repo: str, where: str) -> list[str]:
    lines = [
        f"The kept FeatureService {plan.feature_service} gets the kept features. A feature is "
        "marked deprecated only when no model keeps it.",
        *prune_others(plan),
    ]
    undo = restore_command(repo, plan.run_id)
    if plan.already_applied:
        lines.append(
            f"[yellow]Already applied:[/] run {plan.run_id}'s marks are in the registry; "
            f"nothing changed. Undo with: {undo}"
        )
    elif plan.applied:
        lines.append(f"[green]Applied.[/] Undo with: {undo}")
    else:
        lines.append(
            f"Plan only, nothing written to the registry (saved: {where}). Re-run with --apply."
        )
    return lines


def retire_table(plan: RetirePlan) -> Table:
    table = Table(title=f"Retirement {plan.run_id}: deprecated for {plan.grace_period}+")
    for column in ("feature view", "features", "deprecated since", "how"):
        table.add_column(column)
    for view, marks in sorted(plan.due.items()):
        literal = set(plan.literal.get(view, []))
        for feature, mark in marks.items():
            how = "removed from the source" if feature in literal else "dropped by the hook"
            table.add_row(view, feature, mark["since"], how)
    return table


def retire_lines(plan: RetirePlan, repo: str, where: str) -> list[str]:
    lines = []
    if any(plan.by_code.values()):
        lines.append(
            "Fields built by code (comprehensions, helpers) stay in the source; the overlay "
            "hook drops them when Feast imports the repo."
        )
    undo = restore_command(repo, plan.run_id)
    if not plan.count:
        lines.append(f"Nothing to retire: {plan.headline}.")
    if plan.applied:
        lines.append(f"[green]Retired {plan.count} features.[/] Undo with: {undo}")
    else:
        lines.append(f"Plan only, nothing changed (saved: {where}). Re-run with --apply.")
    return lines


def restored(record: dict[str, Any]) -> str:
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
    for view in record.get("gone") or []:
        said.append(f"feature view {view} is no longer in the registry, so it was left alone")
    return ", ".join(said)


def models_table(models: dict[str, ModelSummary]) -> Table:
    table = Table(title="Models sharing the Feast repo (each a kept FeatureService)")
    for column in ("model", "label", "latest run", "applied", "kept / candidates"):
        table.add_column(column)
    for name, m in models.items():
        label = m.label or ("unknown (earlier version)" if not m.label_known else "none")
        table.add_row(name, label, m.run, m.at or "", f"{m.kept:,} / {m.candidates:,}")
    return table


def view_line(view: ViewSummary) -> str:
    deprecated = f"{view.deprecated:,} deprecated"
    if view.due:
        deprecated += f" ({view.due:,} due to retire)"
    elif view.first_due:
        deprecated += f" (the first due to retire on {view.first_due})"
    counts = f"{view.kept:,} kept, {deprecated}, {view.retired:,} retired"
    return f"{view.view}: {counts}, {view.active:,} active"


def status_table(states: list[FeatureState]) -> Table:
    table = Table(title="Features in the Feast repo")
    columns = ("feature view", "feature", "state", "kept by", "read by", "since", "run")
    for column in (*columns, "retire after"):
        table.add_column(column)
    for s in states:
        cells = [s.view, s.feature, s.state, ", ".join(s.models), ", ".join(s.readers)]
        table.add_row(*(c or "" for c in (*cells, s.since, s.run, s.retire_after)))
    return table


def forget_lines(plan: ForgetPlan, repo: str) -> list[str]:
    added = sum(map(len, plan.added.values()))
    removed = sum(map(len, plan.removed.values()))
    lines = [
        f"Model {plan.model} (label {plan.label or 'none'}, latest run {plan.last_run}): its "
        f"FeatureService {plan.model} goes; {added:,} feature(s) only it kept become "
        f"deprecated, {removed:,} mark(s) go."
    ]
    for view, features in sorted(plan.added.items()):
        lines.append(f"  {view}: newly deprecated {names(features)}")
    if plan.applied:
        lines.append(f"[green]Forgotten.[/] Undo with: {restore_command(repo, plan.run_id)}")
    else:
        lines.append("Plan only, nothing changed. Re-run with --apply.")
    return lines
