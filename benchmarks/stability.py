"""Week after week: how much does a re-selection on fresh rows of the same distribution move?

    .venv/bin/python benchmarks/stability.py [--tables correlated demo mnist]
        [--methods ...] [--seeds 0 1 2] [--weeks 5]

Five "weekly" re-selections per method and seed, each on a fresh 80% subsample (without
replacement) of the table's training rows; the method's random_state stays the seed every week,
as a scheduled job's config does. Tables and methods: benchmarks/peer_tables.py (the correlated
table, the demo's, MNIST; cae-ray supervised and unsupervised with default parameters and the
peers of benchmarks/peers.py).

Per method: Nogueira stability of the weekly selections (Nogueira, Sechidis and Brown, JMLR
18(174), 2018; 1 = the same K every week, ~0 = random), churn (the share of the K picks that
changed from one week to the next, mean of the four changes, and the largest), the gate's
model's held-out score (HistGradientBoosting, default parameters, fitted on that week's rows,
scored on the table's held-out rows; median of the weeks), select seconds (median). Medians over
the seeds, per-seed values in brackets. One thread everywhere (the machine is shared).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import peer_tables as pt  # first: it sets OMP_NUM_THREADS
from benchmarks.machine import hardware

np = pt.np
STABILITY_TABLES = ["correlated", "demo", "mnist"]
SHARE = 0.8


def weekly_rows(t: pt.Table, weeks: int) -> list[np.ndarray]:
    """Each week's rows: a fresh 80% of the training rows (seeded by the table's seed)."""
    rng = np.random.default_rng(10_000 + t.seed)
    size = int(SHARE * len(t.train))
    return [np.sort(rng.choice(t.train, size, replace=False)) for _ in range(weeks)]


@dataclass(frozen=True)
class Weekly:
    """One method's weeks on one seed."""

    picks: list[np.ndarray]
    scores: list[float]
    seconds: list[float]

    def figures(self, n_features: int) -> dict[str, float]:
        changes = pt.churn(self.picks)
        return {
            "nogueira": pt.nogueira(self.picks, n_features),
            "churn": float(np.mean(changes)),
            "churn_max": float(np.max(changes)),
            "hgb": float(median(self.scores)),
            "s": float(median(self.seconds)),
        }


WeeklySelector = Callable[[pt.Table, list[np.ndarray], int], tuple[list[np.ndarray], list[float]]]
"""(table, each week's rows, seed) -> (each week's picks, each week's select seconds)."""


def peer_weeks(method: str) -> WeeklySelector:
    """A method of peer_tables.METHODS run afresh every week (kept in .cache/selections)."""

    def run(
        t: pt.Table, weeks: list[np.ndarray], seed: int
    ) -> tuple[list[np.ndarray], list[float]]:
        done = [pt.timed(method, t, rows, seed, tag=f"w{w}") for w, rows in enumerate(weeks)]
        return [p for p, _ in done], [s for _, s in done]

    return run


def evaluate(t: pt.Table, weeks: list[np.ndarray], run: WeeklySelector, seed: int) -> Weekly:
    picks, seconds = run(t, weeks, seed)
    scores = [pt.gate_score(t, p, rows) for p, rows in zip(picks, weeks, strict=True)]
    return Weekly(picks, scores, seconds)


def print_table(
    name: str, t: pt.Table, seeds: list[int], figures: dict[str, list[dict[str, float]]]
) -> None:
    metric = "accuracy" if t.task == "classification" else "R^2"
    print(
        f"\n## {name}: {pt.SIZES[name]}; {len(next(iter(figures.values())))} seed(s) {seeds}; "
        f"weekly {SHARE:.0%} subsamples; HGB held-out {metric}\n"
    )
    print("| method | Nogueira | churn per run (mean) | churn, largest | HGB (gate) | select s |")
    print("|---|---|---|---|---|---|")
    for method, per_seed in figures.items():
        cells = [cell(per_seed, key) for key in ("nogueira", "churn", "churn_max", "hgb", "s")]
        print(f"| {method} | " + " | ".join(cells) + " |")
    sys.stdout.flush()


def cell(per_seed: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in per_seed]
    if key == "s":
        return f"{median(values):.1f}"
    if key.startswith("churn"):
        text = f"{median(values):.0%}"
        return text + (f" ({'/'.join(f'{v:.0%}' for v in values)})" if len(values) > 1 else "")
    spread = f" ({'/'.join(f'{v:.3f}' for v in values)})" if len(values) > 1 else ""
    return f"{median(values):.3f}{spread}"


def run_table(name: str, runs: dict[str, WeeklySelector], seeds: list[int], weeks: int) -> None:
    figures: dict[str, list[dict[str, float]]] = {m: [] for m in runs}
    for seed in seeds:
        t = pt.TABLES[name](seed)
        rows = weekly_rows(t, weeks)
        for method, run in runs.items():
            figures[method].append(evaluate(t, rows, run, seed).figures(t.X.shape[1]))
            print(
                f"  [{name} seed {seed}] {method}: {figures[method][-1]}",
                file=sys.stderr,
                flush=True,
            )
    print_table(name, t, seeds, figures)


def header(seeds: list[int], weeks: int) -> None:
    import torch

    torch.set_num_threads(1)  # the machine is shared: see the module docstring
    print(
        f"# machine: {hardware()}; torch {torch.__version__}, 1 torch thread, OMP_NUM_THREADS="
        f"{pt.os.environ['OMP_NUM_THREADS']}; seeds {seeds}; {weeks} weeks"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", choices=list(pt.TABLES), default=STABILITY_TABLES)
    parser.add_argument("--methods", nargs="+", choices=list(pt.METHODS), default=list(pt.METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--weeks", type=int, default=5)
    args = parser.parse_args()
    header(args.seeds, args.weeks)
    for name in args.tables:
        run_table(name, {m: peer_weeks(m) for m in args.methods}, args.seeds, args.weeks)


if __name__ == "__main__":
    main()
