"""The run report: one self-contained HTML page showing what a run did, from its artifacts.

    write_report(run) -> RUN_DIR/report/report.html, beside the PNGs it embeds:
                             training.png, scores.png, validation.png (when validated) and
                             selection.png (when the features are the pixels of an image)

It only reads the JSON the steps wrote (``selection.json``; when present ``validation.json``,
``prune.json``, ``data/prepared.json`` and ``run.json``), so it works on a finished, failed or
copied run without Ray. Images are data URIs and the CSS is inline: the page opens offline, as
a CI artifact or a mail attachment.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cae_ray.artifacts import (
    PREPARED,
    PRUNE_PLAN,
    REPORT,
    REPORT_DIR,
    RUN_RECORD,
    SELECTION,
    VALIDATION,
    RunDir,
)
from cae_ray.errors import NoSelectionError
from cae_ray.metrics import higher_is_better

if TYPE_CHECKING:
    import jinja2
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Json = dict[str, Any]
TOP_FEATURES, RUNNERS_UP = 30, 8
OPEN_LIST_UP_TO = 64
"""Longer feature lists start collapsed, so the page stays one screen at the top."""
BLUE, GREY, RED, GREEN, INK = "#2563eb", "#cbd5e1", "#dc2626", "#16a34a", "#334155"


@dataclass(frozen=True)
class Run:
    dir: RunDir
    selection: Json
    validation: Json | None
    prune: Json | None
    prepared: Json | None
    steps: Json | None
    """``run.json`` of ``cae-ray run``: each step's status and seconds."""


def load_run(run_dir: RunDir) -> Run:
    selection = run_dir.read_json(SELECTION)
    if selection is None:
        raise NoSelectionError(str(run_dir))
    names = (VALIDATION, PRUNE_PLAN, PREPARED, RUN_RECORD)
    return Run(run_dir, selection, *(run_dir.read_json(name) for name in names))


def write_report(run_dir: RunDir) -> str:
    """Write ``RUN_DIR/report/report.html`` (and its PNGs) from the run's artifacts.

    Raises :class:`NoSelectionError` when the run dir holds no ``selection.json``.
    """
    run = load_run(run_dir)
    figures = {
        "training": training_figure(run),
        "scores": scores_figure(run.selection),
        "selection": selection_figure(run),
        "validation": validation_figure(run.validation) if run.validation else None,
    }
    for name, fig in figures.items():
        if fig is None:  # a report written before, say, validation ran must not keep its plot
            run_dir.remove(f"{REPORT_DIR}/{name}.png")
    images = {
        name: _save(fig, run_dir, f"{REPORT_DIR}/{name}.png")
        for name, fig in figures.items()
        if fig
    }
    run_dir.write_text(REPORT, render_html(run, images))
    return run_dir.path(REPORT)


def _save(fig: Figure, run_dir: RunDir, name: str) -> str:
    """Write the PNG; return it as a data URI for the page."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=144, bbox_inches="tight", facecolor="white")
    run_dir.write_bytes(name, png.getvalue())
    return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode("ascii")


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    # A bare Figure, not pyplot: no global backend switch, no figure registry to leak into.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.25)
    return fig, list(axes)


# --- figures ---------------------------------------------------------------------------------


def training_figure(run: Run) -> Figure | None:
    from matplotlib.ticker import MaxNLocator

    history = run.selection.get("history") or []
    if not history:
        return None
    fits = {
        which: runs[0]["held_out_curve"]
        for which, runs in ((run.validation or {}).get("fits") or {}).items()
        if which != "reference" and runs and runs[0]["held_out_curve"]
    }
    fig, axes = _figure(13, 3, 4 if fits else 3)
    epochs = [r["epoch"] + 1 for r in history]
    axes[0].plot(epochs, [r["loss"] for r in history], color=BLUE)
    axes[0].set(title="selector training loss", xlabel="epoch")
    temperatures = [r["temperature"] for r in history]
    axes[1].plot(epochs, temperatures, color=INK)
    axes[1].set(title="temperature (log scale)", xlabel="epoch", yscale="log")
    # Ticks at the start, the end and between, as plain numbers: a short run spans less than a
    # decade, where the default log ticks are one label or "6×10⁻¹".
    ticks = [min(temperatures) ** (1 - f) * max(temperatures) ** f for f in (0, 1 / 3, 2 / 3, 1)]
    axes[1].set_yticks(ticks, [f"{t:.2g}" for t in ticks], minor=False)
    axes[1].minorticks_off()
    axes[2].plot(epochs, [r["mean_max"] for r in history], color=BLUE, label="mean over K rows")
    axes[2].plot(epochs, [r["min_max"] for r in history], color=BLUE, ls=":", label="least sure")
    axes[2].set(title="max selection probability", xlabel="epoch", ylim=(0, 1.03))
    axes[2].legend(frameon=False, loc="upper left")
    if fits:
        _held_out_curves(axes[3], fits)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _held_out_curves(ax: Axes, fits: dict[str, list[Json]]) -> None:
    """The gate's models' loss on held-out training rows as they trained (the first repeat):
    epochs along the decay path for ``mlp``, boosting iterations for the trees."""
    colors = {"selected features": BLUE, "all features": GREY, "reference": INK}
    for which, curve in fits.items():
        values = [point["held_out_loss"] for point in curve]
        style = ":" if which == "reference" else "-"
        ax.plot(
            range(1, len(values) + 1), values, color=colors.get(which, GREY), ls=style, label=which
        )
    unit = "epoch" if any("decay" in curve[0] for curve in fits.values()) else "iteration"
    ax.set(title="held-out loss while fitting", xlabel=f"{unit} (all, in order)")
    ax.legend(frameon=False)


def scores_figure(selection: Json) -> Figure:
    names, scores = selection["candidate_features"], selection["scores"]
    chosen = set(selection["selected_features"])
    ranked = sorted(range(len(names)), key=lambda i: -scores[i])
    # The best features, and always the best RUNNERS_UP unselected ones: with K >= 30 the top
    # would be all selected, and the gap to the runners-up shows how clear the choice was.
    top = ranked[: TOP_FEATURES - RUNNERS_UP]
    top += [i for i in ranked if names[i] not in chosen and i not in top][:RUNNERS_UP]
    top = sorted(top, key=lambda i: -scores[i])
    fig, (ax,) = _figure(5, 0.8 + 0.17 * len(top))
    colors = [BLUE if names[i] in chosen else GREY for i in top]
    bars = ax.barh(range(len(top)), [scores[i] for i in top], color=colors, height=0.75)
    ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2, color=INK)
    ax.set_yticks(range(len(top)), [_short(names[i]) for i in top], fontsize=8.5)
    ax.set(xlim=(0, 1.1), ylim=(len(top) - 0.5, -0.5), xlabel="largest selection probability")
    title = f"highest scores of {len(names)} features\nblue: selected, grey: best not selected"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", visible=False)
    return fig


def _short(name: str, width: int = 34) -> str:
    return name if len(name) <= width else "…" + name[1 - width :]


def pixel_grid(names: list[str]) -> tuple[int, int, list[tuple[int, int]]] | None:
    """(rows, cols, each name's cell) when the names are the pixels of one image, else None.

    Two forms, each with one prefix shared by all names: ``<prefix><row><sep><col>`` covering a
    full grid (``p_3_7``), or indices 0..N-1 (or 1..N) with N a perfect square (``f_000`` to
    ``f_783`` in the MNIST tests). Any table of 16, 25, ... numbered columns passes the second
    test too, so the figure says that the grid was read from the names.
    """
    pairs = [re.fullmatch(r"(.*?)(\d+)\D+(\d+)", n) for n in names]
    if all(pairs) and len({m.group(1) for m in pairs if m}) == 1:
        cells = [(int(m.group(2)), int(m.group(3))) for m in pairs if m]
        rows, cols = max(r for r, _ in cells) + 1, max(c for _, c in cells) + 1
        if len(set(cells)) == len(names) == rows * cols and min(rows, cols) >= 4:
            return rows, cols, cells
    ends = [re.fullmatch(r"(.*?)(\d+)", n) for n in names]
    if not all(ends) or len({m.group(1) for m in ends if m}) != 1:
        return None
    indices = [int(m.group(2)) for m in ends if m]
    side, start = math.isqrt(len(names)), min(indices)
    square = side >= 4 and side * side == len(names)
    if not square or sorted(indices) != list(range(start, start + len(names))):
        return None
    return side, side, [divmod(i - start, side) for i in indices]


def selection_figure(run: Run) -> Figure | None:
    """The selected pixels on the mean image, and every pixel's score (features are pixels)."""
    import numpy as np
    from matplotlib import colormaps

    names = run.selection["candidate_features"]
    grid = pixel_grid(names)
    if grid is None:
        return None
    rows, cols, cells = grid
    where = dict(zip(names, cells, strict=True))
    mean, score = np.full((rows, cols), np.nan), np.full((rows, cols), np.nan)
    stats = (run.prepared or {}).get("stats") or {}
    for name, value in zip(stats.get("names", []), stats.get("mean", []), strict=False):
        if name in where:
            mean[where[name]] = value
    dropped = set(run.selection.get("dropped_constant") or [])
    for name, value in zip(names, run.selection["scores"], strict=True):
        score[where[name]] = np.nan if name in dropped else value
    picked = np.array([where[n] for n in run.selection["selected_features"]]).reshape(-1, 2)
    fig, axes = _figure(6.2, 3.4, 2)
    panels = [(mean, "Greys", "on the mean image", RED), (score, "viridis", "scores", "none")]
    for ax, (image, cmap, title, face) in zip(axes, panels, strict=True):
        colors = colormaps[cmap].with_extremes(bad="#e2e8f0")  # NaN: constant, dropped pixels
        shown = ax.imshow(np.ma.masked_invalid(image), cmap=colors, interpolation="nearest")
        size = 2000 / max(rows, cols)  # a marker about one cell wide at this figure size
        ax.scatter(picked[:, 1], picked[:, 0], s=size, marker="s", c=face, edgecolors=RED)
        ax.set(title=title, xticks=[], yticks=[])
        ax.axis("off")
    fig.colorbar(shown, ax=axes[1], shrink=0.75)
    where_from = f"the {rows}×{cols} grid read from the feature names"
    fig.suptitle(f"the K={len(picked)} selected pixels (red) on {where_from}", fontsize=10)
    return fig


def validation_figure(v: Json) -> Figure:
    """Both models' metric, and the difference's interval against the allowed loss."""
    metric, interval = v["metric"], v["interval"]
    baseline, selected = v["baseline"]["value"], v["selected"]["value"]
    low, high, estimate = interval["low"], interval["high"], v["difference"]
    allowed = float(v["allowed_loss"])
    limit = -allowed if higher_is_better(metric) else allowed  # the difference may not cross it
    fig, (left, right) = _figure(9, 2.2, 2)
    bars = left.barh([0, 1], [baseline, selected], color=[GREY, BLUE], height=0.6)
    left.bar_label(bars, fmt="%.4g", padding=3)
    left.set_yticks([0, 1], [f"baseline\n({v['baseline']['source']})", "selected features"])
    lo, hi = min(0.0, baseline, selected), max(0.0, baseline, selected)
    pad = 0.25 * (hi - lo) or 1.0  # room for the value labels
    left.set(title=metric, xlim=(lo - pad * (lo < 0), hi + pad), ylim=(1.6, -0.6))
    span = 1.3 * max(abs(low), abs(high), abs(limit)) or 1.0
    right.axvspan(*sorted((limit, math.copysign(span, limit))), color=RED, alpha=0.08)
    right.axvline(limit, color=RED, ls="--", label=f"allowed loss ({allowed:.3g})")
    right.axvline(0, color=INK, lw=0.8)
    color = GREEN if v.get("passed") else RED
    label = f"difference, {100 * interval['confidence']:.3g}% interval"
    error = [[estimate - low], [high - estimate]]
    right.errorbar([estimate], [0], xerr=error, fmt="o", capsize=6, color=color, label=label)
    right.set(xlim=(-span, span), ylim=(-1, 1), yticks=[], title="selected − baseline")
    right.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2)
    return fig


# --- the page --------------------------------------------------------------------------------

TEMPLATE = "report.html.j2"
"""In ``cae_ray/templates``, beside the ``report.css`` it includes."""
BADGES = {"none": "not validated", "pass": "PASSED", "fail": "FAILED"}


def render_html(run: Run, images: dict[str, str]) -> str:
    """The page: Python formats every value, the template lays them out and escapes them."""
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=f"cae-ray report: {run.dir.name}",
            where=str(run.dir),
            header=_header(run),
            cards=_cards(run),
            selected=_chips((run.selection["selected_features"], "on")),
            images=images,
            validation=_validation(run.validation),
            prune=_prune(run.prune),
            steps=_steps(run.steps),
            artifacts=_artifacts(run),
        )
    )


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2  # here, not at the top: `import cae_ray.report` stays cheap

    return jinja2.Environment(
        loader=jinja2.PackageLoader("cae_ray", "templates"),
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
    kind = "none" if v is None else "pass" if v.get("passed") else "fail"
    made = time.strftime("%Y-%m-%d %H:%M", time.localtime((run.dir.modified(SELECTION) or 0) / 1e9))
    reason = (v or {}).get("reason") or ""
    hash_ = run.selection.get("selection_hash", "?")
    return {"kind": kind, "label": BADGES[kind], "hash": hash_, "made": made, "reason": reason}


def _cards(run: Run) -> list[tuple[str, str, str]]:
    s, v = run.selection, run.validation
    kept, n = s["k"], len(s["candidate_features"])
    dropped, epochs = len(s.get("dropped_constant") or []), len(s.get("history") or [])
    state = "converged" if s.get("converged") else "not converged"
    cards = [
        ("features kept", f"{kept} of {n}", f"{dropped} constant dropped"),
        ("selector", str(s["method"]), f"{s['task']} · {state}"),
        ("time", _duration(run), f"{epochs} epochs · {_workers(s.get('num_workers'))}"),
    ]
    if v is not None:
        value, baseline = v["selected"]["value"], v["baseline"]["value"]
        cards.insert(2, (str(v["metric"]), f"{value:.4g}", f"baseline {baseline:.4g}"))
    if run.prepared:
        rows, target = run.prepared.get("rows") or {}, run.prepared.get("target") or {}
        counts = f"{_num(rows.get('train'))} / {_num(rows.get('validation'))}"
        cards.append(("rows", counts, f"train / validation · target {target.get('column')}"))
    return cards


def _workers(n: Any) -> str:
    return "Train local mode" if n == 0 else f"{_num(n)} Ray worker(s)"


def _duration(run: Run) -> str:
    steps = (run.steps or {}).get("steps") or {}
    seconds = sum(float(st.get("seconds") or 0) for st in steps.values() if isinstance(st, dict))
    if not seconds:  # no run.json: the steps' own timings
        seconds = sum(float((a or {}).get("seconds") or 0) for a in (run.selection, run.validation))
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def _chips(*groups: tuple[list[str], str]) -> Json:
    """Names and their chip kind ("on": kept, "off": deprecated); long lists start closed."""
    names = [(str(name), kind) for group, kind in groups for name in group]
    return {"names": names, "open": len(names) <= OPEN_LIST_UP_TO}


def _validation(v: Json | None) -> Json | None:
    """The metric and the table beside the validation figure, or None when not validated."""
    if v is None:
        return None
    i, allowed = v["interval"], float(v["allowed_loss"])
    model = v.get("model") or {}
    rows = [
        ("model", f"{model.get('name', '?')} {model.get('params') or ''}".strip()),
        (
            "baseline",
            f"{v['baseline']['value']:.4g}{_ends(v['baseline'])} ({v['baseline']['source']})",
        ),
        ("selected", f"{v['selected']['value']:.4g}{_ends(v['selected'])}"),
        ("difference", f"{v['difference']:+.4g}"),
        (f"{100 * i['confidence']:.3g}% interval", f"{i['low']:+.4g} to {i['high']:+.4g}"),
        ("allowed loss", f"{allowed:.4g}"),
        ("rows", f"{_num(v.get('validation_rows'))} validation, {v.get('repeats', 1)} repeat(s)"),
    ]
    chosen = _chosen(v.get("fits") or {})
    if chosen:
        rows.insert(1, ("chosen on held-out rows", chosen))
    reference, check = v.get("reference"), v.get("baseline_check")
    if reference and check:
        strength = "WEAK: " if check["weak"] else ""
        rows.insert(
            3,
            ("reference", f"{reference['value']:.4g}{_ends(reference)} (stock gbdt, all features)"),
        )
        rows.insert(
            4,
            (
                "baseline strength",
                f"{strength}trails the reference by {check['trails_by']:+.4g} "
                f"(slack {check['slack']:.4g})",
            ),
        )
    return {"metric": str(v["metric"]), "rows": rows}


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


def _ends(value: Json) -> str:
    """`` [low, high]`` of a recorded value's interval, when it has one."""
    if "low" not in value:
        return ""
    return f" [{value['low']:.4g}, {value['high']:.4g}]"


def _prune(p: Json | None) -> Json | None:
    """What ``prune.json`` planned or applied, view by view, or None when there is none."""
    if p is None:
        return None
    views = sorted(set(p.get("deprecate") or {}) | set(p.get("keep") or {}))
    return {
        "project": str(p.get("project", "?")),
        "state": "marks applied to the registry" if p.get("applied") else "planned, not applied",
        "feature_service": str(p.get("feature_service") or ""),
        "forced_reason": str(p.get("forced_reason") or ""),
        "hook_missing": bool(p.get("hook_missing")),
        "views": [_view(view, p) for view in views],
    }


def _view(view: str, p: Json) -> Json:
    gone, kept = (p.get("deprecate") or {}).get(view, []), (p.get("keep") or {}).get(view, [])
    chips = _chips((kept, "on"), (gone, "off"))
    return {"name": view, "gone": len(gone), "kept": len(kept), "chips": chips}


def _steps(info: Json | None) -> list[tuple[str, str, str, str]]:
    """The rows of ``run.json``'s step table (``cae-ray run``): name, status, seconds, and why
    a step failed or was skipped."""
    steps = {k: v for k, v in ((info or {}).get("steps") or {}).items() if isinstance(v, dict)}
    return [
        (name, str(st.get("status", "?")), _num(st.get("seconds"), ".1f"), _why(st))
        for name, st in steps.items()
    ]


def _why(step: Json) -> str:
    return str(step.get("error") or step.get("reason") or "")


def _artifacts(run: Run) -> list[str]:
    names = [SELECTION, VALIDATION, PRUNE_PLAN, PREPARED, RUN_RECORD]
    return [n for n in names if run.dir.exists(n)] + [f"{REPORT_DIR}/*.png"]
