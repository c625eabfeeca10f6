"""Research, not the package: candidate ways to make a weekly selection stable, wrapped around the
selections of benchmarks/peer_tables.py (kept in .cache/selections, so the base rows are the very
selections benchmarks/stability.py and peers.py show).

    .venv/bin/python benchmarks/stability_experiments.py weekly [--tables correlated demo mnist]
        [--bases "cae-ray supervised" ...] [--seeds 0]
    .venv/bin/python benchmarks/stability_experiments.py single [--tables ...] [--seeds 0 1 2]
    .venv/bin/python benchmarks/stability_experiments.py anatomy [--seeds 0]

Candidates (each a function of a week's base picks, the week's rows and last week's kept set):

- ``twins->rep``: each pick is replaced by the representative of its near-twins (the columns
  whose |Pearson r| with it on the week's rows is at least TWIN_R): the member with the
  largest univariate F statistic against y (ties: the lowest column index; unsupervised: the
  lowest index). Only K x N correlations: it scales to wide tables.
- ``twins->incumbent``: a pick that is a near-twin of one of last week's kept features is
  replaced by that feature (no held-out test).
- ``incumbent``: last week's kept set stays unless the week's new set scores better on an inner
  split of the week's rows (the gate's model, HistGradientBoosting, fitted on 75%, per-row
  log loss or squared error on the other 25%) by more than twice the standard error of the
  paired per-row differences.
- ``twins->incumbent + incumbent``: both, in that order.
- ``keep_incumbent (the package's rule)``: ``incumbent`` as the package does it
  (cae_ray/gate/incumbent.py): the gate's metric and its paired bootstrap interval instead of
  per-row losses and two standard errors.
- ``spare-fill`` (single selections): picks whose permutation importance for the gate's model
  (fitted on 75% of the training rows, scored on the other 25%) is not above twice its noise
  are replaced by the outside features with the largest univariate F that are not near-twins
  of a kept pick.

``anatomy``: what cae-ray's picks on the correlated table are (informative, linear
combinations, copies, noise), beside LightGBM gain's.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import peer_tables as pt  # first: it sets OMP_NUM_THREADS
from benchmarks import stability as st

np = pt.np
TWIN_R = 0.95
"""|Pearson r| at or above which two columns count as near-twins."""
INNER_SHARE = 0.25
NOISE_SE = 2.0

Wrapper = Callable[[pt.Table, np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
"""(table, the week's rows, the week's base picks, last week's kept set or None) -> kept set."""


# --- building blocks -------------------------------------------------------------------------


def standardised(X: np.ndarray) -> np.ndarray:
    Z = X.astype(np.float64) - X.mean(axis=0)
    norm = np.sqrt((Z**2).sum(axis=0))
    return Z / np.where(norm > 0, norm, np.inf)  # constant columns: r = 0 with everything


def twin_matrix(X: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """K x N |r| of each pick with every column."""
    Z = standardised(X)
    return np.abs(Z[:, picks].T @ Z)


def relevance(t: pt.Table, rows: np.ndarray, supervised: bool) -> np.ndarray:
    """Univariate F against y (supervised), else zeros (ties then go to the lowest index)."""
    if not supervised:
        return np.zeros(t.X.shape[1])
    from sklearn.feature_selection import f_classif, f_regression

    score = f_classif if t.task == "classification" else f_regression
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f_values, _ = score(t.X[rows], t.y[rows])
    return np.nan_to_num(f_values, nan=-np.inf)


def to_representatives(
    t: pt.Table, rows: np.ndarray, picks: np.ndarray, supervised: bool
) -> np.ndarray:
    r = twin_matrix(t.X[rows], picks)
    score = relevance(t, rows, supervised)
    chosen: list[int] = []
    for i in range(len(picks)):
        members = np.flatnonzero(r[i] >= TWIN_R)
        # best score, ties by lowest index (lexsort: last key first)
        best = int(members[np.lexsort((members, -score[members]))[0]])
        chosen.append(best if best not in chosen else int(picks[i]))
    return fill(t, rows, np.asarray(chosen), score)


def to_incumbent(t: pt.Table, rows: np.ndarray, picks: np.ndarray, kept: np.ndarray) -> np.ndarray:
    r = twin_matrix(t.X[rows], picks)
    chosen: list[int] = []
    for i, p in enumerate(picks):
        twins = [int(q) for q in kept if r[i, q] >= TWIN_R and int(q) not in chosen]
        chosen.append(int(p) if int(p) in kept or not twins else twins[0])
    return np.unique(chosen)


def fill(t: pt.Table, rows: np.ndarray, chosen: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``chosen`` made K distinct: gaps filled by the best-scored columns not yet chosen."""
    out = list(dict.fromkeys(int(c) for c in chosen))
    for j in np.lexsort((np.arange(len(score)), -score)):
        if len(out) >= t.k:
            break
        if int(j) not in out:
            out.append(int(j))
    return np.sort(np.asarray(out))


def row_losses(t: pt.Table, rows: np.ndarray, picks: np.ndarray, seed: int) -> np.ndarray:
    """Per-row loss of the gate's model on the inner held-out share of ``rows``."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    order = np.random.default_rng(seed).permutation(rows)
    cut = int(len(rows) * (1 - INNER_SHARE))
    fit_rows, held = order[:cut], order[cut:]
    X_fit, X_held = t.X[fit_rows][:, picks], t.X[held][:, picks]
    if t.task == "classification":
        model = HistGradientBoostingClassifier(random_state=0).fit(X_fit, t.y[fit_rows])
        proba = model.predict_proba(X_held)
        column = np.searchsorted(model.classes_, t.y[held])
        return -np.log(np.clip(proba[np.arange(len(held)), column], 1e-12, None))
    model = HistGradientBoostingRegressor(random_state=0).fit(X_fit, t.y[fit_rows])
    return (model.predict(X_held) - t.y[held]) ** 2


def keep_incumbent(
    t: pt.Table, rows: np.ndarray, picks: np.ndarray, kept: np.ndarray, supervised: bool
) -> np.ndarray:
    """The package's own rule (``selector.keep_incumbent``, cae_ray/gate/incumbent.py) on the
    week's rows: last week's set stays unless the gate's model scores the new one better beyond
    its bootstrap interval on the inner split."""
    import torch

    from cae_ray.config import validate_config
    from cae_ray.gate.incumbent import challenge
    from cae_ray.selector.targets import ResolvedTask

    names = [str(j) for j in range(t.X.shape[1])]
    task = cast(ResolvedTask, t.task if supervised else "reconstruction")
    x = torch.from_numpy(t.X[rows].astype(np.float32))
    y = torch.from_numpy(t.y[rows]) if supervised else None
    config = validate_config({"selector": {"k": len(picks)}})
    check = challenge([names[j] for j in kept], picks.tolist(), names, config, task, x, y)
    return kept if check.kept else picks


def challenger_wins(
    t: pt.Table, rows: np.ndarray, kept: np.ndarray, new: np.ndarray, seed: int
) -> bool:
    if set(kept.tolist()) == set(new.tolist()):
        return False
    diff = row_losses(t, rows, kept, seed) - row_losses(t, rows, new, seed)
    return bool(diff.mean() > NOISE_SE * diff.std(ddof=1) / np.sqrt(len(diff)))


# --- candidates ------------------------------------------------------------------------------


def candidates(supervised: bool, seed: int) -> dict[str, Wrapper]:
    def rep(t, rows, picks, kept):
        return to_representatives(t, rows, picks, supervised)

    def twin_inc(t, rows, picks, kept):
        return picks if kept is None else to_incumbent(t, rows, picks, kept)

    def incumbent(t, rows, picks, kept):
        if kept is None:
            return picks
        return picks if challenger_wins(t, rows, kept, picks, seed) else kept

    def both(t, rows, picks, kept):
        return incumbent(t, rows, twin_inc(t, rows, picks, kept), kept)

    def spare(t, rows, picks, kept):
        return spare_fill(t, rows, picks, seed)

    def package(t, rows, picks, kept):
        return picks if kept is None else keep_incumbent(t, rows, picks, kept, supervised)

    def spare_both(t, rows, picks, kept):
        return both(t, rows, spare(t, rows, picks, kept), kept)

    supervised_only: dict[str, Wrapper] = {
        "spare-fill": spare,
        "spare-fill + twins->incumbent + incumbent": spare_both,
    }
    return {
        **(supervised_only if supervised else {}),
        "twins->rep": rep,
        "twins->incumbent": twin_inc,
        "incumbent": incumbent,
        "twins->incumbent + incumbent": both,
        "keep_incumbent (the package's rule)": package,
    }


def wrapped(base: str, wrapper: Wrapper) -> st.WeeklySelector:
    def run(
        t: pt.Table, weeks: list[np.ndarray], seed: int
    ) -> tuple[list[np.ndarray], list[float]]:
        picks, seconds = st.peer_weeks(base)(t, weeks, seed)
        kept: list[np.ndarray] = []
        for week, rows in enumerate(weeks):
            started = pt.time.perf_counter()
            kept.append(np.sort(wrapper(t, rows, picks[week], kept[-1] if kept else None)))
            seconds[week] += pt.time.perf_counter() - started
        return kept, seconds

    return run


def weekly(
    tables: list[str], bases: list[str], seeds: list[int], weeks: int, only: list[str] | None
) -> None:
    for name in tables:
        runs: dict[str, st.WeeklySelector] = {}
        for base in bases:
            supervised = "unsupervised" not in base and base != "pivoted QR"
            runs[base] = st.peer_weeks(base)
            for label, wrapper in candidates(supervised, seeds[0]).items():
                if only is None or label in only:
                    runs[f"{base} + {label}"] = wrapped(base, wrapper)
        st.run_table(name, runs, seeds, weeks)


# --- single selections: spare-fill and twins->rep on the peers' protocol ----------------------


def permutation_spares(t: pt.Table, rows: np.ndarray, picks: np.ndarray, seed: int) -> np.ndarray:
    """The picks whose permutation importance (the gate's model, inner split) is within noise."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.inspection import permutation_importance

    order = np.random.default_rng(seed).permutation(rows)
    cut = int(len(rows) * (1 - INNER_SHARE))
    fit_rows, held = order[:cut], order[cut:]
    model_class = (
        HistGradientBoostingClassifier
        if t.task == "classification"
        else HistGradientBoostingRegressor
    )
    model = model_class(random_state=0).fit(t.X[fit_rows][:, picks], t.y[fit_rows])
    result = permutation_importance(
        model, t.X[held][:, picks], t.y[held], n_repeats=5, random_state=seed
    )
    noise = NOISE_SE * result.importances_std
    return picks[result.importances_mean <= noise]


def spare_fill(t: pt.Table, rows: np.ndarray, picks: np.ndarray, seed: int) -> np.ndarray:
    spares = permutation_spares(t, rows, picks, seed)
    kept = np.setdiff1d(picks, spares)
    if len(spares) == 0:
        return picks
    score = relevance(t, rows, True)
    r = twin_matrix(t.X[rows], kept) if len(kept) else np.zeros((0, t.X.shape[1]))
    blocked = (r >= TWIN_R).any(axis=0)
    score = np.where(blocked, -np.inf, score)
    score[kept] = -np.inf
    return fill(t, rows, kept, score)


def single(tables: list[str], bases: list[str], seeds: list[int]) -> None:
    for name in tables:
        results: dict[str, list[dict[str, float]]] = {}
        for seed in seeds:
            t = pt.TABLES[name](seed)
            for base in bases:
                picks, _ = pt.timed(base, t, t.train, seed)
                supervised = "unsupervised" not in base and base != "pivoted QR"
                variants = {
                    base: picks,
                    f"{base} + twins->rep": to_representatives(t, t.train, picks, supervised),
                }
                if supervised:
                    variants[f"{base} + spare-fill"] = spare_fill(t, t.train, picks, seed)
                for label, chosen in variants.items():
                    hits = t.found(chosen)
                    results.setdefault(label, []).append(
                        {
                            "hgb": pt.gate_score(t, chosen, t.train),
                            "found": float("nan") if hits is None else hits,
                            "changed": float(len(set(chosen.tolist()) - set(picks.tolist()))),
                        }
                    )
                    print(
                        f"  [{name} {seed}] {label}: {results[label][-1]}",
                        file=sys.stderr,
                        flush=True,
                    )
        print(f"\n## {name} (single selection, peers' protocol): {pt.SIZES[name]}; seeds {seeds}\n")
        print("| selection | HGB (gate) | found | picks changed |")
        print("|---|---|---|---|")
        for label, rs in results.items():
            hgb = [r["hgb"] for r in rs]
            found = [r["found"] for r in rs if r["found"] == r["found"]]
            changed = [r["changed"] for r in rs]
            spread = "/".join(f"{v:.4f}" for v in hgb)
            found_text = f"{median(found):.0f}" if found else ""
            print(
                f"| {label} | {median(hgb):.4f} ({spread}) | {found_text} | {median(changed):.0f} |"
            )
        sys.stdout.flush()


# --- anatomy of the correlated table's picks -------------------------------------------------


def anatomy(seeds: list[int], methods: list[str]) -> None:
    print("\n## correlated: what the K=20 picks are (training rows of the peers' protocol)\n")
    print("| method | seed | informative | linear combinations | copies | noise | HGB |")
    print("|---|---|---|---|---|---|---|")
    for seed in seeds:
        t = pt.TABLES["correlated"](seed)
        position = np.argsort(np.random.default_rng(seed).permutation(t.X.shape[1]))
        kinds = {
            "informative": range(0, 10),
            "combinations": range(10, 20),
            "copies": range(20, 30),
        }
        sets = {kind: {int(position[c]) for c in cols} for kind, cols in kinds.items()}
        for method in methods:
            picks, _ = pt.timed(method, t, t.train, seed)
            counts = [len(sets[kind] & set(picks.tolist())) for kind in kinds]
            noise = len(picks) - sum(counts)
            hgb = pt.gate_score(t, picks, t.train)
            print(
                f"| {method} | {seed} | "
                + " | ".join(map(str, counts))
                + f" | {noise} | {hgb:.4f} |"
            )
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["weekly", "single", "anatomy"])
    parser.add_argument("--tables", nargs="+", choices=list(pt.TABLES), default=None)
    parser.add_argument("--bases", nargs="+", choices=list(pt.METHODS), default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--weeks", type=int, default=5)
    parser.add_argument("--candidates", nargs="+", default=None, help="weekly: these only")
    args = parser.parse_args()
    st.header(args.seeds, args.weeks)
    bases = args.bases or ["cae-ray supervised", "cae-ray unsupervised"]
    if args.part == "weekly":
        weekly(args.tables or st.STABILITY_TABLES, bases, args.seeds, args.weeks, args.candidates)
    elif args.part == "single":
        single(args.tables or list(pt.TABLES), bases, args.seeds)
    else:
        anatomy(args.seeds, args.bases or list(pt.METHODS))


if __name__ == "__main__":
    main()
