"""Reproduce the CAE paper's MNIST protocol (K=50) with CAE and IP-CAE, unsupervised and supervised.

    .venv/bin/python benchmarks/paper_mnist.py [--seeds 0 1 2] [--epochs 200]

Protocol (Abid et al. 2019, Tables 1 and 2): select K=50 pixels on the training split, then on
held-out digits score (a) the MSE of an unregularised LinearRegression from the 50 pixels to all
784, and (b) the accuracy of ExtraTreesClassifier(50 trees) on the 50 pixels. References: all
784 pixels, 50 random pixels, and 50 PCA components. Each selector run happens in a fresh
process so its peak memory (max RSS, including the Python/torch runtime) is its own. The table
shows medians over seeds.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.mnist_data import load_mnist

K = 50
RUNS = [  # (label, method, supervised)
    ("IP-CAE", "ipcae", False),
    ("CAE", "cae", False),
    ("IP-CAE", "ipcae", True),
    ("CAE", "cae", True),
]


def split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    from sklearn.model_selection import train_test_split

    X, y, source = load_mnist()
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=seed, stratify=y
    )
    return X_train, X_test, y_train, y_test, source


def score(columns: Any, X_train, X_test, y_train, y_test, seed: int) -> tuple[float, float]:
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.linear_model import LinearRegression

    A_train, A_test = columns(X_train), columns(X_test)
    decoder = LinearRegression().fit(A_train, X_train)
    mse = float(((decoder.predict(A_test) - X_test) ** 2).mean())
    trees = ExtraTreesClassifier(n_estimators=50, random_state=seed, n_jobs=-1)
    accuracy = float(trees.fit(A_train, y_train).score(A_test, y_test))
    return mse, accuracy


def run_one(method: str, supervised: bool, seed: int, epochs: int) -> dict[str, Any]:
    """Runs in a child process: fit one selector, print its result as JSON."""
    from cae_ray.selector.estimator import ConcreteFeatureSelector

    X_train, X_test, y_train, y_test, _ = split(seed)
    selector = ConcreteFeatureSelector(k=K, method=method, epochs=epochs, random_state=seed)
    started = time.perf_counter()
    selector.fit(X_train, y_train if supervised else None)
    seconds = time.perf_counter() - started
    idx = selector.selected_indices_
    mse, accuracy = score(lambda A: A[:, idx], X_train, X_test, y_train, y_test, seed)
    return {
        "mse": mse,
        "accuracy": accuracy,
        "epochs": len(selector.history_),
        "seconds": seconds,
        "seconds_per_epoch": seconds / len(selector.history_),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "collisions": selector.collisions_,
        "converged": selector.converged_,
    }


def references(seed: int) -> dict[str, tuple[float, float]]:
    from sklearn.decomposition import PCA

    X_train, X_test, y_train, y_test, _ = split(seed)
    data = (X_train, X_test, y_train, y_test, seed)
    rng = np.random.default_rng(seed)
    random = [rng.choice(784, K, replace=False) for _ in range(5)]
    random_scores = [score(lambda A, r=r: A[:, r], *data) for r in random]
    pca = PCA(n_components=K, random_state=seed).fit(X_train)
    return {
        "all 784 pixels": score(lambda A: A, *data),
        f"{K} random pixels (mean of 5)": (
            float(np.mean([s[0] for s in random_scores])),
            float(np.mean([s[1] for s in random_scores])),
        ),
        f"PCA, {K} components (not a selection)": score(pca.transform, *data),
    }


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (
        f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "SUPERVISED", "SEED"))
    args = parser.parse_args()
    if args.one:
        method, supervised, seed = args.one
        print(json.dumps(run_one(method, supervised == "1", int(seed), args.epochs)))
        return

    _, X_test, *_, source = split(args.seeds[0])
    print(f"# MNIST, K={K}: {source}; 80/20 stratified split ({len(X_test):,} held out)")
    print(f"# machine: {machine()}; seeds {args.seeds}; up to {args.epochs} epochs, early stop")
    rows = []
    for label, method, supervised in RUNS:
        results = []
        for seed in args.seeds:
            command = [sys.executable, __file__, "--epochs", str(args.epochs), "--one"]
            command += [method, "1" if supervised else "0", str(seed)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
        rows.append((label, "supervised" if supervised else "unsupervised", results))
        print(f"  done: {label} {rows[-1][1]}", file=sys.stderr)

    print()
    print("| selector | mode | recon. MSE | ExtraTrees acc. | epochs | s/epoch | fit s | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for label, mode, results in rows:

        def med(key: str, results: list[dict[str, Any]] = results) -> float:
            return median(r[key] for r in results)

        print(
            f"| {label} | {mode} | {med('mse'):.4f} | {med('accuracy'):.3f} | "
            f"{med('epochs'):.0f} | {med('seconds_per_epoch'):.2f} | {med('seconds'):.1f} | "
            f"{med('peak_mb'):.0f} |"
        )
    refs = [references(seed) for seed in args.seeds]
    for name in refs[0]:
        mse = median(r[name][0] for r in refs)
        accuracy = median(r[name][1] for r in refs)
        print(f"| {name} | reference | {mse:.4f} | {accuracy:.3f} | | | | |")
    print("| CAE paper (Abid et al. 2019), MNIST | unsupervised | 0.026 | 0.906 | | | | |")


if __name__ == "__main__":
    main()
