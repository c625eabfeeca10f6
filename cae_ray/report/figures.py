"""The report's figures, drawn from a run's artifacts with matplotlib (no pyplot, no display).

    training_figures  the selector's loss, temperature and selection confidence by epoch
    scores_figure     the K picks and the best runners-up, by rank
    selection_figure  the picks on the mean image, when the features are an image's pixels
    validation_figure both models' metric, and the difference's interval against the allowed loss
    gate_figure       the gate models' held-out and training loss as they were fitted

Each takes the run's records (:mod:`cae_ray.records`) or the page's feature rows and returns a
Figure, or None when the run has nothing to draw for it.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from cae_ray.gate.metrics import higher_is_better
from cae_ray.records import Prepared, Selection, Verdict

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Json = dict[str, Any]
TOP_FEATURES, RUNNERS_UP = 30, 8
SCORE_FLOOR = 1e-4
"""Where the scores figure's log axis starts: smaller scores are drawn there."""
BLUE, GREY, RED, GREEN, INK = "#2563eb", "#94a3b8", "#dc2626", "#16a34a", "#334155"


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    # A bare Figure, not pyplot: no global backend switch, no figure registry to leak into.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.25)
    return fig, list(axes)


def training_figures(selection: Selection) -> dict[str, Figure]:
    """The selector's training by epoch, one small figure per quantity so that a narrow
    screen shows them one below the other at a readable size: ``training`` (its loss),
    ``temperature`` and ``confidence`` (the rows' largest selection probability)."""
    history = selection.history
    if not history:
        return {}
    epochs = [r["epoch"] + 1 for r in history]
    drawn = {name: _figure(3.6, 2.7) for name in ("training", "temperature", "confidence")}
    loss = drawn["training"][1][0]
    loss.plot(epochs, [r["loss"] for r in history], color=BLUE)
    loss.set(title="selector training loss", xlabel="epoch")
    temperatures = [r["temperature"] for r in history]
    temperature = drawn["temperature"][1][0]
    temperature.plot(epochs, temperatures, color=INK)
    temperature.set(title="temperature (log scale)", xlabel="epoch", yscale="log")
    # Ticks at the start, the end and between, as plain numbers: a short run spans less than a
    # decade, where the default log ticks are one label or "6×10⁻¹".
    ticks = [min(temperatures) ** (1 - f) * max(temperatures) ** f for f in (0, 1 / 3, 2 / 3, 1)]
    temperature.set_yticks(ticks, [f"{t:.2g}" for t in ticks], minor=False)
    temperature.minorticks_off()
    sure = drawn["confidence"][1][0]
    sure.plot(epochs, [r["mean_max"] for r in history], color=BLUE, label="mean over K rows")
    sure.plot(epochs, [r["min_max"] for r in history], color=BLUE, ls=":", label="least sure")
    sure.set(title="max selection probability", xlabel="epoch", ylim=(0, 1.03))
    sure.legend(frameon=False, loc="upper left")
    for _, (ax,) in drawn.values():
        ax.xaxis.set_major_locator(_integer_ticks())
    return {name: fig for name, (fig, _) in drawn.items()}


def k_curve_figure(selection: Selection) -> Figure | None:
    """``k: auto``: quality against K on the inner split, the baseline and its tolerance band,
    each K's interval, and the K chosen; None for a fixed K."""
    curve = selection.k_curve
    if curve is None:
        return None
    fig, (ax,) = _figure(7.2, 3.2)
    points, baseline = curve.points, curve.baseline
    allowed = curve.tolerance * (abs(baseline) if curve.relative else 1.0)
    if not higher_is_better(curve.metric):
        allowed = -allowed
    ks = [p.k for p in points]
    scores = [p.score for p in points]
    # The interval of each K's difference with the baseline, drawn around its score (with
    # cross-validation the baseline is scored on the first fold's rows, the score on all rows).
    below = [max(0.0, p.difference - p.low) for p in points]
    above = [max(0.0, p.high - p.difference) for p in points]
    colors = [GREEN if p.passed else RED for p in points]
    ax.axhspan(baseline - allowed, baseline, color=GREEN, alpha=0.08, label="within the tolerance")
    ax.axhline(baseline, color=INK, lw=0.8, label=curve.baseline_source)
    ax.errorbar(ks, scores, yerr=[below, above], fmt="none", ecolor=GREY, capsize=3)
    ax.scatter(ks, scores, c=colors, zorder=3, s=22)
    ax.plot(ks, scores, color=BLUE, lw=1)
    ax.axvline(curve.chosen, color=BLUE, ls="--", label=f"K = {curve.chosen}")
    ax.set(xscale="log", xlabel="K (first K picks)", ylabel=curve.metric)
    rungs = [p.k for p in points if p.on_ladder]
    ax.set_xticks(rungs, [str(k) for k in rungs], fontsize=8)
    ax.minorticks_off()
    ax.set_title("quality against K, on held-out training rows", fontsize=10)
    ax.legend(frameon=False, loc="lower right", fontsize=8)
    return fig


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def gate_figure(validation: Verdict) -> Figure | None:
    """The gate models' loss while they were fitted (the first repeat): on the held-out training
    rows that stopped them (solid) and on the rows they were fitted on (dashed). Epochs along the
    decay path for ``mlp``, boosting iterations for the trees; None for a model without a curve
    (a fixed number of rounds, a given estimator)."""
    fits = {
        which: runs[0]["held_out_curve"]
        for which, runs in (validation.fits or {}).items()
        if which != "reference" and runs and runs[0].get("held_out_curve")
    }
    if not fits:
        return None
    fig, (ax,) = _figure(6, 3)
    colors = {"selected features": BLUE, "all features": INK}
    for which, curve in fits.items():
        steps = range(1, len(curve) + 1)
        color = colors.get(which, GREY)
        ax.plot(steps, [p["held_out_loss"] for p in curve], color=color, label=f"{which}, held out")
        train = [p.get("train_loss") for p in curve]
        if all(value is not None for value in train):
            ax.plot(steps, train, color=color, ls="--", lw=1, label=f"{which}, training")
    unit = "epoch" if any("decay" in curve[0] for curve in fits.values()) else "iteration"
    ax.set(title="gate models' loss while fitting", xlabel=f"{unit} (all, in order)")
    ax.set_ylabel("loss")
    ax.legend(frameon=False, fontsize=8)
    return fig


def scores_figure(features: list[Json]) -> Figure:
    """The features in rank order (picks first), with the best runners-up after the picks:
    with K >= 30 the top would be all picks, and the gap to the runners-up shows how clear the
    choice was. On a log scale (from :data:`SCORE_FLOOR`), so that picks near 1 and runners-up
    near 0 both show how far apart they are; a dashed line marks the best runner-up.
    ``features`` are the report's feature rows, in rank order."""
    kept = [f for f in features if f["selected"]]
    shown = kept[: TOP_FEATURES - RUNNERS_UP]
    shown += [f for f in features if not f["selected"]][: TOP_FEATURES - len(shown)]
    fig, (ax,) = _figure(5, 0.8 + 0.17 * len(shown))
    colors = [BLUE if f["selected"] else GREY for f in shown]
    widths = [max(f["score"], SCORE_FLOOR) for f in shown]
    bars = ax.barh(range(len(shown)), widths, color=colors, height=0.75, left=SCORE_FLOOR / 2)
    ax.bar_label(bars, labels=[f["score_text"] for f in shown], fontsize=7, padding=2, color=INK)
    ax.set_yticks(range(len(shown)), [_short(f["name"]) for f in shown], fontsize=8.5)
    ax.set_xscale("log")
    ax.set(xlim=(SCORE_FLOOR / 2, 8), ylim=(len(shown) - 0.5, -0.5))
    ax.set_xlabel("selection probability (log scale)")
    runners_up = [f["score"] for f in shown if not f["selected"]]
    if runners_up:
        ax.axvline(max(max(runners_up), SCORE_FLOOR), color=GREY, linestyle="--", linewidth=1)
    title = f"top ranks of {len(features)} features\nblue: selected, grey: best not selected"
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


def selection_figure(selection: Selection, prepared: Prepared | None) -> Figure | None:
    """The selected pixels on the mean image, and every pixel's score (features are pixels)."""
    import numpy as np
    from matplotlib import colormaps

    names = selection.candidate_features
    grid = pixel_grid(names)
    if grid is None:
        return None
    rows, cols, cells = grid
    where = dict(zip(names, cells, strict=True))
    mean, score = np.full((rows, cols), np.nan), np.full((rows, cols), np.nan)
    stats = prepared.stats if prepared is not None else {}
    for name, value in zip(stats.get("names", []), stats.get("mean", []), strict=False):
        if name in where:
            mean[where[name]] = value
    dropped = set(selection.dropped_constant)
    for name, value in zip(names, selection.scores, strict=True):
        score[where[name]] = np.nan if name in dropped else value
    picked = np.array([where[n] for n in selection.selected_features]).reshape(-1, 2)
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


def validation_figure(v: Verdict) -> Figure:
    """Both models' metric, and the difference's interval against the allowed loss."""
    metric, interval = v.metric, v.interval
    baseline, selected = v.baseline.value, v.selected.value
    low, high, estimate = interval.low, interval.high, v.difference
    allowed = v.allowed_loss
    limit = -allowed if higher_is_better(metric) else allowed  # the difference may not cross it
    fig, (left, right) = _figure(9, 2.2, 2)
    bars = left.barh([0, 1], [baseline, selected], color=["#cbd5e1", BLUE], height=0.6)
    left.bar_label(bars, fmt="%.4g", padding=3)
    left.set_yticks([0, 1], [f"baseline\n({v.baseline.source})", "selected features"])
    lo, hi = min(0.0, baseline, selected), max(0.0, baseline, selected)
    pad = 0.25 * (hi - lo) or 1.0  # room for the value labels
    left.set(title=metric, xlim=(lo - pad * (lo < 0), hi + pad), ylim=(1.6, -0.6))
    span = 1.3 * max(abs(low), abs(high), abs(limit)) or 1.0
    right.axvspan(*sorted((limit, math.copysign(span, limit))), color=RED, alpha=0.08)
    right.axvline(limit, color=RED, ls="--", label=f"allowed loss ({allowed:.3g})")
    right.axvline(0, color=INK, lw=0.8)
    color = GREEN if v.passed else RED
    label = f"difference, {100 * interval.confidence:.3g}% interval"
    error = [[estimate - low], [high - estimate]]
    right.errorbar([estimate], [0], xerr=error, fmt="o", capsize=6, color=color, label=label)
    right.set(xlim=(-span, span), ylim=(-1, 1), yticks=[], title="selected − baseline")
    right.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2)
    return fig
