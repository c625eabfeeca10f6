"""cae-ray against what practitioners use, one protocol: fixed K, selection on the training rows.

    .venv/bin/python benchmarks/peers.py
        [--tables mnist madelon demo correlated regression friedman] [--methods ...]
        [--seeds 0 1 2]

Tables and selectors: benchmarks/peer_tables.py (MNIST K=50; Madelon-style 2,000 columns, 20
informative, K=20; the demo's generator, 1,000 columns, 10 informative, K=10; a correlated
table of 10 informative columns, 10 linear combinations and 10 exact copies among 1,000, K=20;
a regression table, 10 informative of 1,000, K=10; scikit-learn's make_friedman1, 5 of 1,000,
K=5). Methods: cae-ray's estimator with default
parameters (supervised: given y; unsupervised: not), LightGBM gain top-K (default
LGBMClassifier / LGBMRegressor), random-forest impurity importance top-K (100 trees), mRMR
(the ``mrmr_selection`` package, F relevance, correlation redundancy), SelectKBest(f_classif /
f_regression), pivoted QR (scipy.linalg.qr with pivoting on the standardised training rows).

Scores on the held-out rows: HistGradientBoosting with default parameters (the gate's default
model) and ExtraTrees (100 trees), accuracy or R^2; "found": informative columns picked (on the
correlated table directly or through an exact copy); select seconds. Medians over the seeds
(the table's generator and the method's random_state; MNIST: the method's only), per-seed
values in brackets. Everything runs on one thread (torch.set_num_threads(1), OMP_NUM_THREADS=1):
the machine is shared. Selections are kept in .cache/selections (delete it to re-select).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import peer_tables as pt  # first: it sets OMP_NUM_THREADS
from benchmarks.machine import hardware

ORDER = ["correlated", "demo", "regression", "friedman", "madelon", "mnist"]


def run_table(name: str, methods: list[str], seeds: list[int]) -> None:
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in ["all features", *methods]}
    for seed in seeds:
        t = pt.TABLES[name](seed)
        rows["all features"].append(all_features(t))
        for method in methods:
            picks, seconds = pt.timed(method, t, t.train, seed)
            found = t.found(picks)
            rows[method].append(
                {
                    "hgb": pt.gate_score(t, picks, t.train),
                    "et": pt.gate_score(t, picks, t.train, "et"),
                    "found": float("nan") if found is None else found,
                    "s": seconds,
                }
            )
            print(
                f"  [{name} seed {seed}] {method}: {rows[method][-1]}", file=sys.stderr, flush=True
            )
    metric = "accuracy" if t.task == "classification" else "R^2"
    print(f"\n## {name}: {pt.SIZES[name]}; held-out {metric}; seeds {seeds}\n")
    print("| method | HGB (gate) | ExtraTrees | found | select s |")
    print("|---|---|---|---|---|")
    for method, results in rows.items():
        print(
            f"| {method} | "
            + " | ".join(cell(results, key) for key in ("hgb", "et", "found", "s"))
            + " |"
        )
    sys.stdout.flush()


def all_features(t: pt.Table) -> dict[str, float]:
    """Both models on every column (kept in .cache/selections beside the selections)."""
    path = pt.CACHE / f"{t.name}-t{t.seed}-all-features.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    every = pt.np.arange(t.X.shape[1])
    scores = {"hgb": pt.gate_score(t, every, t.train), "et": pt.gate_score(t, every, t.train, "et")}
    pt.CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scores))
    return scores


def cell(results: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in results if key in r and r[key] == r[key]]
    if not values:
        return ""
    if key == "found":
        return f"{median(values):.0f} ({'/'.join(f'{v:.0f}' for v in values)})"
    if key == "s":
        return f"{median(values):.1f}"
    spread = f" ({'/'.join(f'{v:.4f}' for v in values)})" if len(values) > 1 else ""
    return f"{median(values):.4f}{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", choices=list(pt.TABLES), default=ORDER)
    parser.add_argument("--methods", nargs="+", choices=list(pt.METHODS), default=list(pt.METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # the machine is shared: see the module docstring
    print(
        f"# machine: {hardware()}; torch {torch.__version__}, 1 torch thread, OMP_NUM_THREADS="
        f"{pt.os.environ['OMP_NUM_THREADS']}; seeds {args.seeds}; medians, per-seed in brackets"
    )
    for name in args.tables:
        run_table(name, args.methods, args.seeds)


if __name__ == "__main__":
    main()
