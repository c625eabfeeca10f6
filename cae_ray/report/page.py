"""The run report: one self-contained HTML page showing what a run did, from its artifacts.

    write_report(run, config) -> RUN_DIR/report/report.html, beside the PNGs it embeds
                                 (training, temperature, confidence, scores, selection,
                                 validation, gate: see
                                 :mod:`cae_ray.report.figures`) and features.csv

It only reads the JSON the steps wrote (``selection.json``; when present ``validation.json``,
``prune.json``, ``retire.json``, ``data/prepared.json`` and ``run.json``), so it works on a
finished, failed or copied run without Ray. Images are data URIs, the CSS and the script of the
feature table are inline, and the table's CSV is made in the page: it opens offline, as a CI
artifact or a mail attachment.
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cae_ray.artifacts import (
    FEATURES_CSV,
    PREPARED,
    PRUNE_PLAN,
    REPORT,
    REPORT_DIR,
    RETIRE_PLAN,
    RUN_RECORD,
    SELECTION,
    VALIDATION,
    RunDir,
)
from cae_ray.errors import NoSelectionError
from cae_ray.feast import restore_command
from cae_ray.feast.registry import PrunePlan
from cae_ray.feast.retire import RetirePlan
from cae_ray.records import ExportManifest, Prepared, RunRecord, Score, Selection, Verdict
from cae_ray.report import figures
from cae_ray.report.prune_section import column_refs, feature_status, mark_changes, prune_section
from cae_ray.report.shown import chips, utc

if TYPE_CHECKING:
    import jinja2
    from matplotlib.figure import Figure

    from cae_ray.config import Config

Json = dict[str, Any]
SCORE_MEANING = (
    "the largest probability with which one of the selector's K rows picks the feature at the "
    "end of training (1: surely picked)"
)
CSV_COLUMNS = ("rank", "name", "view", "status", "score", "change")


@dataclass(frozen=True)
class Run:
    """Everything the page shows: the run dir's records."""

    dir: RunDir
    selection: Selection
    validation: Verdict | None
    prune: PrunePlan | None
    retire: RetirePlan | None
    prepared: Prepared | None
    steps: RunRecord | None
    """``run.json`` of ``cae-ray run``: each step's status and seconds."""


def load_run(run_dir: RunDir) -> Run:
    selection = Selection.read(run_dir)
    if selection is None:
        raise NoSelectionError(str(run_dir))
    return Run(
        run_dir,
        selection,
        Verdict.read(run_dir),
        PrunePlan.read(run_dir),
        RetirePlan.read(run_dir),
        Prepared.read(run_dir),
        RunRecord.read(run_dir),
    )


def write_report(run_dir: RunDir, config: Config | None = None) -> str:
    """Write ``RUN_DIR/report/report.html`` (its PNGs and ``features.csv``) from the run's
    artifacts; ``config`` (the run's) adds its YAML and the repo path of the restore command.

    Raises :class:`NoSelectionError` when the run dir holds no ``selection.json``.
    """
    run = load_run(run_dir)
    features = feature_rows(run)
    drawn: dict[str, Figure | None] = {
        "training": None,
        "temperature": None,
        "confidence": None,
        **figures.training_figures(run.selection),
        "k_curve": figures.k_curve_figure(run.selection),
        "scores": figures.scores_figure(features),
        "selection": figures.selection_figure(run.selection, run.prepared),
        "validation": figures.validation_figure(run.validation) if run.validation else None,
        "gate": figures.gate_figure(run.validation) if run.validation else None,
    }
    for name, fig in drawn.items():
        if fig is None:  # a report written before, say, validation ran must not keep its plot
            run_dir.remove(f"{REPORT_DIR}/{name}.png")
    images = {
        name: _save(fig, run_dir, f"{REPORT_DIR}/{name}.png") for name, fig in drawn.items() if fig
    }
    run_dir.write_text(FEATURES_CSV, features_csv(features))
    run_dir.write_text(REPORT, render_html(run, images, features, config))
    return run_dir.path(REPORT)


def _save(fig: Figure, run_dir: RunDir, name: str) -> str:
    """Write the PNG; return it as a data URI for the page."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=144, bbox_inches="tight", facecolor="white")
    run_dir.write_bytes(name, png.getvalue())
    return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode("ascii")


# --- every feature, ranked ------------------------------------------------------------------


def feature_rows(run: Run) -> list[Json]:
    """One row per candidate feature, in rank order: the K picks first (by score), then the
    others by score, constant features last; ties by name. The score alone does not order the
    picks: a polish or a refinement may keep a feature the search's rows did not favour."""
    s = run.selection
    names, scores = s.candidate_features, s.scores
    chosen, constant = set(s.selected_features), set(s.dropped_constant)
    refs, changes = column_refs(run.prune), mark_changes(run.prune)
    order = sorted(
        range(len(names)),
        key=lambda i: (names[i] not in chosen, names[i] in constant, -scores[i], names[i]),
    )
    rows = []
    for rank, i in enumerate(order, 1):
        name = names[i]
        view, feature = refs.get(name, ("", name))
        rows.append(
            {
                "rank": rank,
                "name": name,
                "view": view,
                "status": feature_status(name in chosen, run.prune, (view, feature)),
                "score": round(float(scores[i]), 4),
                "score_text": "constant" if name in constant else _score(scores[i]),
                "change": changes.get((view, feature), ""),
                "selected": name in chosen,
            }
        )
    return rows


def _score(value: float) -> str:
    # Below 0.001 a float32 softmax gives digits of no meaning (1e-12 and the like).
    return f"{value:.3f}" if value >= 0.0005 else "<0.001"


def features_csv(rows: list[Json]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    # Scores as the page's script writes them (1, not 1.0), so both CSVs hold the same text.
    writer.writerows(
        [format(row[c], "g") if c == "score" else row[c] for c in CSV_COLUMNS] for row in rows
    )
    return out.getvalue()


# --- the page --------------------------------------------------------------------------------

TEMPLATE = "report.html.j2"
"""In ``cae_ray/report/templates``, beside the ``report.css`` and ``report.js`` it includes."""
BADGES = {"none": "not validated", "pass": "PASSED", "fail": "FAILED"}


def render_html(
    run: Run, images: dict[str, str], features: list[Json], config: Config | None = None
) -> str:
    """The page: Python formats every value, the template lays them out and escapes them."""
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=f"cae-ray report: {run.dir.name}",
            where=str(run.dir),
            header=_header(run),
            dates=_dates(run),
            gate=_gate(run.validation),
            cards=_cards(run),
            selected=chips((run.selection.selected_features, "on")),
            k_reason=run.selection.k_curve.reason if run.selection.k_curve else "",
            since_previous=run.selection.since_previous,
            images=images,
            validation=_validation(run.validation),
            prune=prune_section(run.prune, _grace(config), _value_bytes(run.dir)),
            restore=_restore_commands(run, config),
            features=[{k: row[k] for k in (*CSV_COLUMNS, "score_text")} for row in features],
            score_meaning=SCORE_MEANING,
            config_yaml=_config_yaml(config),
            steps=_steps(run),
            artifacts=_artifacts(run),
        )
    )


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2  # here, not at the top: `import cae_ray.report.page` stays cheap

    return jinja2.Environment(
        loader=jinja2.PackageLoader("cae_ray.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _num(value: Any, spec: str = ",") -> str:
    """``value`` formatted, or "?" when a (hand-edited, older) artifact lacks it."""
    return format(value, spec) if isinstance(value, (int, float)) else "?"


def _header(run: Run) -> Json:
    v = run.validation
    kind = "none" if v is None else "pass" if v.passed else "fail"
    return {"kind": kind, "label": BADGES[kind], "run_id": run.selection.selection_hash}


def _dates(run: Run) -> list[tuple[str, str]]:
    """When each part of the run happened, in UTC."""
    dates = [
        ("run started", utc(run.steps.started_at if run.steps else None)),
        ("selection made", utc(run.dir.modified(SELECTION))),
        ("validated", utc(run.dir.modified(VALIDATION))),
        ("marks applied", utc(run.prune.at if run.prune else None)),
        ("report written", utc(time.time_ns())),
    ]
    return [(label, when) for label, when in dates if when]


def _gate(v: Verdict | None) -> Json:
    """The gate's sentence (why it passed or failed), and the weak-baseline and perfect-score
    warnings if any."""
    if v is None:
        return {"kind": "none", "sentence": "", "weak": "", "perfect": ""}
    check = v.baseline_check
    weak = ""
    if check is not None and check.weak:
        weak = check.reason or "The baseline trails the stock reference."
        if not check.required:
            weak += (
                " The gate compared the selection with this weak baseline, so its pass says "
                "less than it seems; set validation.require_fair_baseline to fail such runs."
            )
    kind = "pass" if v.passed else "fail"
    return {"kind": kind, "sentence": v.reason, "weak": weak, "perfect": v.perfect_warning or ""}


def _cards(run: Run) -> list[tuple[str, str, str]]:
    s, v = run.selection, run.validation
    kept, n = s.k, len(s.candidate_features)
    dropped, epochs = len(s.dropped_constant), len(s.history)
    state = "converged" if s.converged else "not converged"
    cards = [
        ("features kept", f"{kept:,} of {n:,}", f"{dropped:,} constant dropped"),
        ("selector", s.method, f"{s.task} · {state}"),
        ("time", _duration(run), f"{_how_chosen(s, epochs)} · {_workers(s.num_workers)}"),
    ]
    if v is not None:
        value, baseline = v.selected.value, v.baseline.value
        cards.insert(2, (v.metric, f"{value:.4g}", f"baseline {baseline:.4g}"))
    if run.prepared is not None:
        rows, column = run.prepared.rows, run.prepared.target.get("column")
        counts = f"{rows.train:,} / {rows.validation:,}"
        cards.append(("rows", counts, f"train / validation · target {column}"))
    return cards


def _how_chosen(selection: Selection, epochs: int) -> str:
    """The search's epochs, or the screen that chose without a search (few rows)."""
    return f"{epochs} epochs" if selection.searched else "F statistic, no search"


def _workers(n: int) -> str:
    return "Train local mode" if n == 0 else f"{n:,} Ray worker(s)"


def _duration(run: Run) -> str:
    steps = run.steps.steps if run.steps is not None else {}
    seconds = sum(step.seconds or 0.0 for step in steps.values())
    if not seconds:  # no run.json: the steps' own timings
        seconds = run.selection.seconds + (run.validation.seconds if run.validation else 0.0)
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def _validation(v: Verdict | None) -> Json | None:
    """The metric and the table beside the validation figure, or None when not validated."""
    if v is None:
        return None
    i, baseline = v.interval, v.baseline
    rows = [
        ("model", f"{v.model.name} {v.model.params or ''}".strip()),
        ("baseline", f"{baseline.value:.4g}{_ends(baseline)} ({baseline.source})"),
        ("selected", f"{v.selected.value:.4g}{_ends(v.selected)}"),
        ("difference", f"{v.difference:+.4g}"),
        (f"{100 * i.confidence:.3g}% interval", f"{i.low:+.4g} to {i.high:+.4g}"),
        ("allowed loss", f"{v.allowed_loss:.4g}"),
        ("rows", f"{v.validation_rows:,} validation, {v.repeats} repeat(s)"),
    ]
    chosen = _chosen(v.fits or {})
    if chosen:
        rows.insert(1, ("chosen on held-out rows", chosen))
    reference, check = v.reference, v.baseline_check
    if reference is not None and check is not None:
        strength = "WEAK: " if check.weak else ""
        trails = f"trails the reference by {check.trails_by:+.4g} (slack {check.slack:.4g})"
        rows.insert(3, ("reference", f"{reference.value:.4g}{_ends(reference)} (stock gbdt)"))
        rows.insert(4, ("baseline strength", strength + trails))
    return {"metric": v.metric, "rows": rows}


def _chosen(fits: Json) -> str:
    """What the held-out training rows decided for each model (first repeat), in short."""
    parts = []
    for which in ("all features", "selected features"):
        choice = (fits.get(which) or [{}])[0].get("chosen") or {}
        if choice:
            said = ", ".join(
                f"{key.replace('_', ' ')} {_num(value, '.3g' if isinstance(value, float) else ',')}"
                for key, value in choice.items()
            )
            parts.append(f"{which}: {said}")
    return "; ".join(parts)


def _ends(score: Score) -> str:
    """`` [low, high]`` of a score's interval."""
    return f" [{score.low:.4g}, {score.high:.4g}]"


def _restore_commands(run: Run, config: Config | None) -> list[tuple[str, str]]:
    """(what it undoes, the command) for each change this run applied, latest first: restore
    takes the latest change first (an earlier one raises NotLatestRunError)."""
    repo = config.feast.repo if config is not None and config.feast is not None else "REPO"
    applied: list[tuple[str, str]] = []
    if run.retire is not None and run.retire.applied:
        applied.append(("the retirement", run.retire.run_id))
    if run.prune is not None and run.prune.applied:
        applied.append(("the deprecation marks", run.prune.run_id))
    return [(what, restore_command(repo, run_id)) for what, run_id in applied]


def _grace(config: Config | None) -> timedelta | None:
    return config.feast.grace if config is not None and config.feast is not None else None


def _value_bytes(run_dir: RunDir) -> dict[str, int]:
    """Each exported column's bytes per value, from the export's manifest (if the run has one)."""
    manifest = ExportManifest.read(run_dir)
    return manifest.value_bytes if manifest is not None else {}


def _config_yaml(config: Config | None) -> str:
    """The run's config as YAML (``${VAR}`` already resolved), passwords in URLs masked."""
    if config is None:
        return ""
    import yaml

    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    return re.sub(r"(://[^/\s:@]*):[^/\s@]+@", r"\1:***@", text)


def _steps(run: Run) -> list[tuple[str, str, str, str]]:
    """The rows of ``run.json``'s step table (``cae-ray run``): name, status, seconds, and why
    a step failed or was skipped (the retirement: what is due, or when the first will be)."""
    steps = run.steps.steps if run.steps is not None else {}
    retired = run.retire.headline if run.retire is not None else ""
    return [
        (
            name,
            step.status,
            _num(step.seconds, ".1f"),
            step.error or step.reason or (retired if name == "retire" else ""),
        )
        for name, step in steps.items()
    ]


def _artifacts(run: Run) -> list[str]:
    names = [SELECTION, VALIDATION, PRUNE_PLAN, RETIRE_PLAN, PREPARED, RUN_RECORD]
    return [n for n in names if run.dir.exists(n)] + [f"{REPORT_DIR}/*.png", FEATURES_CSV]
