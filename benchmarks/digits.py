"""The README's first example (`load_digits`, k=10) timed on a quiet and on a busy machine.

    .venv/bin/python benchmarks/digits.py [--seeds 0 1 2] [--busy-processes 2]

Fits `ConcreteFeatureSelector(k=10)` unsupervised and `ConcreteFeatureSelector(k=10,
method="ipcae")` supervised on the 1,797 x 64 digits, as docs/estimator.md shows them, with
`n_jobs=None` (one torch thread, the default) and `n_jobs=-1` (every core). "busy" runs the same
fits beside other work: as many processes as the machine has cores, each spinning a NumPy
matrix product, which is what a second job on a shared machine looks like. Each fit runs in
a fresh process (torch's thread pool is set once per process), so one fit's threads never
meet another's. Seconds are the median over the seeds of the fit alone (not the imports).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import hardware  # after the line above: run as a script

FIT = """
import json, sys, time
from sklearn.datasets import load_digits
from cae_ray import ConcreteFeatureSelector
X, y = load_digits(return_X_y=True)
X = X / 16.0
supervised, n_jobs, seed = sys.argv[1] == "supervised", json.loads(sys.argv[2]), int(sys.argv[3])
method = "ipcae" if supervised else "cae"
selector = ConcreteFeatureSelector(k=10, method=method, n_jobs=n_jobs, random_state=seed)
start = time.perf_counter()
selector.fit(X, y) if supervised else selector.fit(X)
print(json.dumps({"seconds": time.perf_counter() - start, "epochs": len(selector.history_)}))
"""


def spin(stop: multiprocessing.synchronize.Event) -> None:
    """Other work on the machine: NumPy matrix products until told to stop."""
    import numpy as np

    a = np.random.default_rng(0).random((400, 400))
    while not stop.is_set():
        a = (a @ a) / 400.0


def fit_once(task: str, n_jobs: int | None, seed: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "", "PYTHONWARNINGS": "ignore"}
    env.pop("OMP_NUM_THREADS")
    out = subprocess.run(
        [sys.executable, "-c", FIT, task, json.dumps(n_jobs), str(seed)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(seeds: list[int], busy: int) -> list[tuple[str, str, str, float, int]]:
    """Each fit (unsupervised, supervised) x n_jobs (None, -1): a table row, printed as it ends."""
    stop = multiprocessing.Event()
    others = [multiprocessing.Process(target=spin, args=(stop,)) for _ in range(busy)]
    for process in others:
        process.start()
    rows = []
    try:
        for task in ("unsupervised", "supervised"):
            for n_jobs in (None, -1):
                fits = [fit_once(task, n_jobs, seed) for seed in seeds]
                seconds = median(fit["seconds"] for fit in fits)
                epochs = int(median(fit["epochs"] for fit in fits))
                machine = f"busy ({busy} other processes)" if busy else "quiet"
                rows.append((machine, task, str(n_jobs), seconds, epochs))
                print(f"| {machine} | {task} | {n_jobs} | {seconds:.1f} | {epochs} |", flush=True)
    finally:
        stop.set()
        for process in others:
            process.join()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--busy-processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--parts", nargs="+", choices=["quiet", "busy"], default=["quiet", "busy"])
    args = parser.parse_args()
    print(f"Machine: {hardware()}; {time.strftime('%Y-%m-%d')}; seeds {args.seeds}")
    print("load_digits 1,797 x 64, k=10; median seconds of the fit over the seeds\n")
    print("| machine | fit | n_jobs | fit s | epochs |")
    print("|---|---|---|---|---|", flush=True)
    for busy in args.parts:
        measure(args.seeds, 0 if busy == "quiet" else args.busy_processes)


if __name__ == "__main__":
    main()
