"""What `cae-ray run` and `cae-ray demo` show: a live line per step (a bar for training epochs)
and a summary table at the end. Fed by :class:`cae_ray.runtime.progress.StepEvent` s; holds no
logic."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

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

from cae_ray.config import Config
from cae_ray.feast import restore_command
from cae_ray.runtime.progress import StepEvent


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
        step, status, detail = event.step, event.status, event.detail
        if status == "started":
            self.rows[step] = self.progress.add_task(
                step, total=self.epochs.get(step), step=step, status="[dim]working...[/]", mark=""
            )
        elif status == "progress":
            self._epoch(step, detail)
        elif status == "skipped":
            row = self.progress.add_task(step, total=1, step=step, status="", mark=MARKS[status])
            self.progress.update(row, completed=1, status=f"[dim]skipped: {detail['reason']}[/]")
            self.progress.stop_task(row)
        else:  # done, reused or failed
            row = self.rows[step]
            text = describe(step, detail) if status != "failed" else "[red]failed[/]"
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


def describe(step: str, figures: dict[str, Any]) -> str:
    """A few words on what a finished step did, from its ``run.json`` figures."""
    if step in ("export", "prepare"):
        rows = figures["rows"]
        if isinstance(rows, dict):  # prepare: the two splits
            return f"{rows['train']:,} + {rows['validation']:,} rows x {figures['features']:,}"
        return f"{rows:,} rows x {figures['features']:,} features"
    if step == "select":
        state = "converged" if figures["converged"] else "[yellow]not converged[/]"
        return f"k={figures['k']}, {figures['epochs']} epochs, {state}"
    if step == "validate":
        verdict = "[green]passed[/]" if figures["passed"] else "[red]FAILED[/]"
        source = baseline_name(figures.get("baseline_source", "all features"))
        return f"{verdict}: {figures['selected']:.3f} vs {figures['baseline']:.3f} ({source})"
    if step == "prune":
        action = "marked deprecated" if figures["applied"] else "to deprecate (plan)"
        back, others = figures.get("undeprecated"), figures.get("kept_by_others")
        said = f"{figures['deprecated']:,} {action}"
        said += f", {others:,} kept by other models" if others else ""
        return said + (f", {back:,} back in use" if back else "")
    if step == "retire":
        if figures.get("not_possible"):
            return "[dim]nothing can retire yet[/]"
        action = "retired" if figures["applied"] else f"due after {figures['grace_period']} (plan)"
        return f"{figures['count']:,} {action}"
    if step == "report":
        return Path(figures["path"]).name
    return ""


def summary_table(record: dict[str, Any], run_dir: str, config: Config) -> Table:
    """The end of a run: features kept and deprecated, the gate's figures, where to look."""
    steps = record["steps"]
    table = Table(title=f"cae-ray run: {record['status']}", show_header=False, min_width=60)
    table.add_column(style="bold")
    table.add_column()
    select = steps.get("select", {})
    if "k" in select:
        kept = select["selected_features"]
        preview = ", ".join(kept[:8]) + (" ..." if len(kept) > 8 else "")
        table.add_row("kept", f"{select['k']} features: {preview}")
    validate = steps.get("validate", {})
    if "passed" in validate:
        low, high = validate["interval"]["low"], validate["interval"]["high"]
        table.add_row(
            "validation",
            f"{validate['metric']}: selected {validate['selected']:.4f}, "
            f"{validate.get('baseline_source', 'all features')} "
            f"{validate['baseline']:.4f}; difference {validate['difference']:+.4f} "
            f"[{low:+.4f}, {high:+.4f}] -> {'passed' if validate['passed'] else 'FAILED'}",
        )
    prune = steps.get("prune", {})
    if "deprecated" in prune:
        state = "marked deprecated in the registry" if prune["applied"] else "planned only"
        table.add_row("deprecated", f"{prune['deprecated']:,} features, {state}")
        if prune.get("kept_by_others"):
            table.add_row("kept by other models", f"{prune['kept_by_others']:,} features")
        table.add_row("feature service", prune["feature_service"])
        if prune["applied"]:
            repo = config.feast.repo if config.feast else "REPO"
            table.add_row("undo", restore_command(repo, prune["run_id"]))
    elif "reason" in prune:
        table.add_row("deprecated", f"none ({prune['reason']})")
    retire = steps.get("retire", {})
    if retire.get("count"):
        state = "retired from the definitions" if retire["applied"] else "due (plan only)"
        table.add_row("retire", f"{retire['count']:,} features {state}")
        if retire["applied"]:
            repo = config.feast.repo if config.feast else "REPO"
            table.add_row("undo retire", restore_command(repo, retire["run_id"]))
    if "path" in steps.get("report", {}):
        table.add_row("report", steps["report"]["path"])
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
        step, status, detail = event.step, event.status, event.detail
        if status == "progress":
            line = self._progress(step, detail)
        elif status == "skipped":
            line = f"skipped: {detail['reason']}"
        elif status in ("done", "reused"):
            line = f"{status}: {Text.from_markup(describe(step, detail)).plain}"
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
