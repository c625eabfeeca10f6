"""What `cae-ray run` and `cae-ray demo` show: a live line per step (a bar for training epochs)
and a summary table at the end. Fed by :class:`cae_ray.pipeline.StepEvent` s and the run dir's
records; holds no logic."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from cae_ray.artifacts import REPORT, RunDir
from cae_ray.cli.render import verdict_figures
from cae_ray.config import Config
from cae_ray.feast import restore_command
from cae_ray.pipeline import ReportWritten, RetireNotPossible, StepEvent, StepResult
from cae_ray.records import ExportManifest, Prepared, RunRecord, Selection, Verdict

if TYPE_CHECKING:
    pass


class MarkColumn(SpinnerColumn):
    """A spinner while a step works, then its mark: done, failed or skipped."""

    def render(self, task: Task) -> RenderableType:
        mark = task.fields.get("mark")
        return Text.from_markup(mark) if mark else super().render(task)


MARKS = {
    "done": "[green]✓[/]",
    "reused": "[green]✓[/]",
    "failed": "[red]✗[/]",
    "skipped": "[dim]-[/]",
}


def make_console(stderr: bool = False) -> Console:
    """A console that never hard-wraps: messages stay one line in a terminal, and in a CI log or
    `kubectl logs` (no terminal) tables get all the width they need."""
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console = Console(stderr=stderr, soft_wrap=True, width=400)
    return console


class RunDisplay:
    """A rich Progress with one row per step; use as a context manager and pass it as
    ``on_event`` to :func:`cae_ray.pipeline.run`. Without a terminal, :func:`step_display`
    gives :class:`LogLines` instead."""

    def __init__(self, console: Console, config: Config) -> None:
        self.progress = Progress(
            MarkColumn(),
            TextColumn("{task.fields[step]:<9}"),
            BarColumn(bar_width=16),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.epochs = {"select": config.training.epochs}
        self.rows: dict[str, TaskID] = {}

    def __enter__(self) -> RunDisplay:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def __call__(self, event: StepEvent) -> None:
        step, status = event.step, event.status
        if status == "started":
            self.rows[step] = self.progress.add_task(
                step, total=self.epochs.get(step), step=step, status="[dim]working...[/]", mark=""
            )
        elif status == "progress":
            self._epoch(step, event.progress)
        elif status == "skipped":
            row = self.progress.add_task(step, total=1, step=step, status="", mark=MARKS[status])
            self.progress.update(row, completed=1, status=f"[dim]skipped: {event.reason}[/]")
            self.progress.stop_task(row)
        else:  # done, reused or failed
            row = self.rows[step]
            text = describe(event.result) if status != "failed" else "[red]failed[/]"
            if status == "reused":
                text += " [dim](reused)[/]"
            total = self.progress.tasks[row].total or 1
            completed = total if status != "failed" else self.progress.tasks[row].completed
            self.progress.update(
                row, total=total, completed=completed, status=text, mark=MARKS[status]
            )
            self.progress.stop_task(row)

    def _epoch(self, step: str, record: dict[str, Any]) -> None:
        if "rows" in record:  # export: entity rows retrieved so far
            done, total = record["rows"], record["total"]
            status = f"{done:,} of {total:,} entity rows"
            self.progress.update(self.rows[step], completed=done, total=total, status=status)
            return
        row, epoch = self.rows[step], int(record["epoch"]) + 1
        text = (
            f"epoch {epoch}/{self.epochs[step]}  loss {record['loss']:.4f}  "
            f"mean max prob {record['mean_max']:.3f}"
        )
        self.progress.update(row, completed=epoch, status=text)


def baseline_name(source: str) -> str:
    """What the gate compared with, in a word or two: "all" (a model on all features),
    "given" (validation.baseline), "PCA" (the top-K principal components)."""
    if source == "given":
        return "given"
    return "PCA" if "principal components" in source else "all"


def describe(result: StepResult | None) -> str:
    """A few words on what a finished step did, from its record."""
    from cae_ray.feast.registry import PrunePlan
    from cae_ray.feast.retire import RetirePlan

    if isinstance(result, ExportManifest):
        return f"{result.rows:,} rows x {len(result.columns):,} features"
    if isinstance(result, Prepared):
        rows = result.rows
        return f"{rows.train:,} + {rows.validation:,} rows x {len(result.features):,}"
    if isinstance(result, Selection):
        state = "converged" if result.converged else "[yellow]not converged[/]"
        return f"k={result.k}, {len(result.history)} epochs, {state}"
    if isinstance(result, Verdict):
        verdict = "[green]passed[/]" if result.passed else "[red]FAILED[/]"
        source = baseline_name(result.baseline.source)
        shown = verdict_figures(result)
        return f"{verdict}: {shown['selected']} vs {shown['baseline']} ({source})"
    if isinstance(result, PrunePlan):
        action = "marked deprecated" if result.applied else "to deprecate (plan)"
        figures = result.summary()
        back, others = figures["undeprecated"], figures["kept_by_others"]
        said = f"{figures['deprecated']:,} {action}"
        said += f", {others:,} kept by other models" if others else ""
        return said + (f", {back:,} back in use" if back else "")
    if isinstance(result, RetireNotPossible):
        return "[dim]nothing can retire yet[/]"
    if isinstance(result, RetirePlan):
        return result.headline
    if isinstance(result, ReportWritten):
        return Path(result.path).name
    return ""


def summary_table(record: RunRecord, run_dir: str, config: Config) -> Table:
    """The end of a run: features kept and deprecated, the gate's figures, where to look. The
    figures are the run dir's records (its artifacts), read afresh."""
    from cae_ray.feast.registry import PrunePlan
    from cae_ray.feast.retire import RetirePlan

    run = RunDir(run_dir)
    steps = record.steps
    table = Table(title=f"cae-ray run: {record.status}", show_header=False, min_width=60)
    table.add_column(style="bold")
    table.add_column()
    selection = Selection.read(run) if "select" in steps else None
    if selection is not None:
        kept = selection.selected_features
        preview = ", ".join(kept[:8]) + (" ..." if len(kept) > 8 else "")
        table.add_row("kept", f"{selection.k} features: {preview}")
    verdict = Verdict.read(run) if "validate" in steps else None
    if verdict is not None:
        shown = verdict_figures(verdict)
        table.add_row(
            "validation",
            f"{verdict.metric}: selected {shown['selected']}, {verdict.baseline.source} "
            f"{shown['baseline']}; difference {shown['difference']} [{shown['low']}, "
            f"{shown['high']}] -> {'passed' if verdict.passed else 'FAILED'}",
        )
    repo = config.feast.repo if config.feast else "REPO"
    prune = steps.get("prune")
    plan = PrunePlan.read(run) if prune is not None and prune.status != "skipped" else None
    if plan is not None:
        state = "marked deprecated in the registry" if plan.applied else "planned only"
        figures = plan.summary()
        table.add_row("deprecated", f"{figures['deprecated']:,} features, {state}")
        if figures["kept_by_others"]:
            table.add_row("kept by other models", f"{figures['kept_by_others']:,} features")
        table.add_row("feature service", plan.feature_service)
        if plan.applied:
            table.add_row("undo", restore_command(repo, plan.run_id))
    elif prune is not None and prune.reason:
        table.add_row("deprecated", f"none ({prune.reason})")
    retirement = RetirePlan.read(run) if "retire" in steps else None
    if retirement is not None and retirement.count:
        state = "retired from the definitions" if retirement.applied else "due (plan only)"
        table.add_row("retire", f"{retirement.count:,} features {state}")
        if retirement.applied:
            table.add_row("undo retire", restore_command(repo, retirement.run_id))
    if "report" in steps and run.exists(REPORT):
        table.add_row("report", run.path(REPORT))
    table.add_row("run dir", str(run_dir))
    return table


def step_display(console: Console, config: Config) -> RunDisplay | LogLines:
    """Live rows in a terminal; in a CI log or `kubectl logs` (no terminal, where live rows only
    show at the end) a line per step event and per tenth of the epochs, as they happen."""
    return RunDisplay(console, config) if console.is_terminal else LogLines(console, config)


class LogLines:
    """What :class:`RunDisplay` shows, as log lines printed when they happen."""

    def __init__(self, console: Console, config: Config) -> None:
        self.console, self.epochs = console, {"select": config.training.epochs}

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self, event: StepEvent) -> None:
        step, status = event.step, event.status
        if status == "progress":
            line = self._progress(step, event.progress)
        elif status == "skipped":
            line = f"skipped: {event.reason}"
        elif status in ("done", "reused"):
            line = f"{status}: {Text.from_markup(describe(event.result)).plain}"
        else:  # started, failed
            line = status
        if line:
            self.console.print(f"cae-ray {step:<9} {line}", markup=False, highlight=False)

    def _progress(self, step: str, record: dict[str, Any]) -> str | None:
        if "rows" in record:
            return f"{record['rows']:,} of {record['total']:,} entity rows"
        epoch, total = int(record["epoch"]) + 1, self.epochs.get(step)
        every = max(1, (total or 10) // 10)
        if epoch % every and epoch != 1:
            return None
        of = f"/{total}" if total else ""
        loss, confidence = record["loss"], record["mean_max"]
        return f"epoch {epoch}{of}  loss {loss:.4f}  mean max prob {confidence:.3f}"
