"""Scale: time per step, peak memory and FLOP rate for N up to 64,000; low-rank quality.

    .venv/bin/python benchmarks/scale.py [--parts speed quality supervised] [--threads T]

speed: unsupervised IP-CAE, K=100, batch 128, shared sampling, for N in {1,000, 4,000, 16,000,
    64,000}, full rank (d = N) and low rank (d = 256, the automatic choice above 2,048
    features). Each run is a fresh process: it measures this machine's fp32 matmul peak (best
    of square 1024-4096 products, same thread count, before and after the steps), then runs
    training steps through the training loop (cae_ray.selector.loop.train_epoch) on random batches;
    s/step is the median of the steps after two warm-up steps. After each step a small probe
    matmul checks that no other work took the cores: a run whose probe fell below 75% of the
    fastest probe seen is "disturbed" and retried; the faster of two undisturbed runs is kept
    (after five tries the best run is shown, marked "disturbed"). Peak RSS is the
    process's high-water mark (getrusage), Python, torch and the batches included; "estimate"
    is cae_ray.selector.memory's figure for the training state alone. A full-rank case the estimate
    says cannot fit is skipped and its estimate printed. FLOP/step is counted analytically
    (multiply-adds x 2): logits 2*K*d*N forward, x3 with the gradients of Psi and W; the
    selection x @ M^T 2*B*K*N, x2 (the batch needs no gradient); each head Linear(a, b)
    2*B*a*b, x3. Then the growth exponent of the low-rank s/step from 4,000 to 64,000, and the
    sampling modes at N=4,000 and 16,000.
quality: MNIST (6,000 training / 2,000 held-out digits, K=50, 50 epochs without early stop):
    held-out MSE of a linear regression from the 50 selected pixels to all 784 (the CAE paper's
    protocol), full rank (d = 784) against low rank (d = 256, 128), seeds 0-2, and the three
    sampling modes (seed 0), with shared sampling also given 400 epochs (about per_example's
    time).
supervised: selections of 20 of 2,000, 5,000 and 20,000 columns (seeds 0-2 at
    20,000) with 20 known informative ones (scikit-learn's make_classification, as
    cae_ray.demo): found with the defaults, found by the search alone (its own k, before
    cae_ray.selector.refine's screen and second searches), and the number a univariate F-test's top
    20 finds for reference.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

K, BATCH = 100, 128
SIZES = (1_000, 4_000, 16_000, 64_000)
LOW_RANK = 256
WARMUP_STEPS, MIN_STEPS, MAX_STEPS, MIN_SECONDS = 2, 5, 30, 4.0
REPEATS, TRIES, PAUSE_S, CLEAN_PROBE = 2, 5, 20.0, 0.75
SYNTHETIC: dict[str, Any] = {
    "rows": 4_000,
    "widths": (2_000, 5_000, 20_000),
    "seeds": (0, 1, 2),
    "informative": 20,
    "k": 20,
}


# --- the parent: cases, tables ------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["speed", "quality", "supervised"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(CHILD_JOBS[json.loads(args.child)["kind"]](args.child)))
        return
    threads = args.threads or os.cpu_count() or 1
    print(machine(threads))
    for part in args.parts:
        PARTS[part](threads)


def machine(threads: int) -> str:
    import torch

    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM; Python "
        f"{platform.python_version()}, torch {torch.__version__}, {threads} torch threads; "
        f"{time.strftime('%Y-%m-%d')}"
    )


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    raise RuntimeError(f"{job['kind']} failed:\n{done.stderr[-3000:]}")


def part_speed(threads: int) -> None:
    print("\n## Training step, K=100, batch 128, shared sampling\n")
    print(
        "| N | IP rank d | s/step | steps | peak RSS GB | estimate GB | GFLOP/step | GFLOP/s "
        "| matmul peak GFLOP/s | % of peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    low: dict[int, float] = {}
    for n in SIZES:
        for d in (n, LOW_RANK):
            if d == LOW_RANK and n <= LOW_RANK:
                continue
            result = step_case(n, d, "shared", threads)
            if d == LOW_RANK:
                low[n] = result.get("s_per_step", math.nan)
    print_growth(low)
    print("\n## Sampling modes, low rank (d = 256), K=100, batch 128\n")
    print(
        "| N | sampling | s/step | steps | peak RSS GB | estimate GB | GFLOP/step | GFLOP/s "
        "| matmul peak GFLOP/s | % of peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in (4_000, 16_000):
        for sampling in ("shared", "per_example", "chunked"):
            step_case(n, LOW_RANK, sampling, threads, label=sampling)


def step_case(n: int, d: int, sampling: str, threads: int, label: str = "") -> dict[str, Any]:
    """Run (or skip) one case and print its row."""
    from cae_ray.selector.memory import estimate_memory, memory_limit

    config = step_config(n, d, sampling)
    estimate = estimate_memory(config, n, "reconstruction", n).total
    limit, source = memory_limit(config)
    name = label or ("full (d = N)" if d == n else f"{d}")
    if estimate > limit:
        print(
            f"| {n:,} | {name} | skipped: estimate {estimate / 1e9:.1f} GB > "
            f"{limit / 1e9:.1f} GB ({source}) | | | {estimate / 1e9:.2f} | | | | |",
            flush=True,
        )
        return {}
    job = {"kind": "step", "n": n, "d": d, "sampling": sampling, "threads": threads}
    result = undisturbed_run(job)
    rate = result["flops"] / result["s_per_step"]
    mark = "" if result["clean"] else " (disturbed)"
    print(
        f"| {n:,} | {name} | {result['s_per_step']:.4f}{mark} | {result['steps']} | "
        f"{result['peak_gb']:.2f} | {estimate / 1e9:.2f} | {result['flops'] / 1e9:.2f} | "
        f"{rate / 1e9:.1f} | {result['peak_flops'] / 1e9:.1f} | "
        f"{100 * rate / result['peak_flops']:.0f}% |",
        flush=True,
    )
    return dict(result)


BEST_PROBE = [0.0]
"""The fastest probe matmul seen in this benchmark: the machine undisturbed."""


def undisturbed_run(job: dict[str, Any]) -> dict[str, Any]:
    """The faster of two runs the machine's other work did not slow down, each in a fresh
    process. A run is disturbed when a probe matmul after one of its steps ran below
    CLEAN_PROBE of the fastest probe seen; it is retried (up to TRIES runs, pausing between)."""
    clean: list[dict[str, Any]] = []
    tried: list[dict[str, Any]] = []
    for attempt in range(TRIES):
        if attempt and not clean:
            time.sleep(PAUSE_S)  # let a burst of other work pass
        result = run_child(job)
        BEST_PROBE[0] = max(BEST_PROBE[0], result["probe_max"])
        result["clean"] = result["probe_min"] >= CLEAN_PROBE * BEST_PROBE[0]
        (clean if result["clean"] else tried).append(result)
        if len(clean) == REPEATS:
            break
    return min(clean or tried, key=lambda r: r["s_per_step"])


def print_growth(low: dict[int, float]) -> None:
    """Least-squares exponent b of s/step ~ N^b over the low-rank cases from 4,000 up."""
    points = [(math.log(n), math.log(t)) for n, t in low.items() if n >= 4_000 and t > 0]
    if len(points) < 2:
        return
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    ends = f"{low[4_000]:.4f} s at 4,000 -> {low[64_000]:.4f} s at 64,000"
    verdict = "within" if slope <= 1.2 else "ABOVE"
    print(f"\nLow-rank growth: s/step ~ N^{slope:.2f} ({ends}); {verdict} the N^1.2 goal.")


def part_quality(threads: int) -> None:
    print("\n## MNIST, K=50, no early stop, held-out linear-regression MSE\n")
    print(
        "| IP rank d | sampling | epochs | seeds | MSE (median) | MSE per seed | vs full rank "
        "| fit s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    full = mnist_row(784, "shared", (0, 1, 2), threads, None)
    for d in (LOW_RANK, 128):
        mnist_row(d, "shared", (0, 1, 2), threads, full)
    for sampling in ("per_example", "chunked"):
        mnist_row(784, sampling, (0,), threads, full)
    # Quality per second: shared sampling given about per_example's time.
    mnist_row(784, "shared", (0,), threads, full, epochs=400)


def part_supervised(threads: int) -> None:
    s = SYNTHETIC
    print(
        f"\n## Supervised, {s['informative']} informative columns, {s['rows']:,} rows, "
        f"k={s['k']}, defaults (200 epochs at most, early stop)\n"
    )
    print(
        "| columns | seed | IP rank d (auto) | informative found | search alone | "
        "univariate top-20 (F-test) | epochs | fit s | of which refine s | peak RSS GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in s["widths"]:
        for seed in s["seeds"] if n == max(s["widths"]) else s["seeds"][:1]:
            job = {"kind": "synthetic", "n": n, "seed": seed, "threads": threads}
            result = run_child(job)
            print(
                f"| {n:,} | {seed} | {result['dim_ip']} | {result['found']} of "
                f"{s['informative']} | {result['found_by_search']} | {result['univariate']} | "
                f"{result['epochs']} | {result['seconds']:.0f} | {result['refine_seconds']:.0f} | "
                f"{result['peak_gb']:.2f} |",
                flush=True,
            )


def mnist_row(
    d: int,
    sampling: str,
    seeds: tuple[int, ...],
    threads: int,
    full: float | None,
    epochs: int = 50,
) -> float:
    job = {"kind": "mnist", "d": d, "sampling": sampling, "epochs": epochs, "threads": threads}
    results = [run_child({**job, "seed": s}) for s in seeds]
    mse = median(r["mse"] for r in results)
    versus = "reference" if full is None else f"{100 * (mse / full - 1):+.1f}%"
    name = "784 (full)" if d == 784 else str(d)
    per_seed = ", ".join(f"{r['mse']:.5f}" for r in results)
    seconds = median(r["seconds"] for r in results)
    print(
        f"| {name} | {sampling} | {epochs} | {len(seeds)} | {mse:.5f} | {per_seed} | {versus} | "
        f"{seconds:.1f} |",
        flush=True,
    )
    return mse


PARTS = {"speed": part_speed, "quality": part_quality, "supervised": part_supervised}


# --- the children: one measured case per fresh process ------------------------------------------


def step_config(n: int, d: int, sampling: str) -> Any:
    from cae_ray.config import validate_config

    return validate_config(
        {
            "selector": {"k": K, "dim_ip": d, "sampling": sampling, "early_stop": False},
            "training": {"batch_size": BATCH},
        }
    )


def matmul_peak() -> float:
    """This process's best fp32 square-matmul rate, FLOP/s."""
    import torch

    best = 0.0
    for size in (1024, 2048, 4096):
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        for _ in range(3):
            started = time.perf_counter()
            a @ b
            best = max(best, 2 * size**3 / (time.perf_counter() - started))
    return best


def step_flops(model: Any, n: int, d: int) -> float:
    """Multiply-add FLOPs of one training step (forward and backward), see the docstring."""
    from torch import nn

    logits = 3 * 2 * K * d * n
    selection = 2 * 2 * BATCH * K * n
    head = sum(
        3 * 2 * BATCH * m.in_features * m.out_features
        for m in model.head.modules()
        if isinstance(m, nn.Linear)
    )
    return float(logits + selection + head)


def child_step(raw: str) -> dict[str, Any]:
    import torch

    from cae_ray.selector.loop import train_epoch
    from cae_ray.selector.model import build_model, build_optimizer, task_loss

    job = json.loads(raw)
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    peak = matmul_peak()
    n, d = job["n"], job["d"]
    config = step_config(n, d, job["sampling"])
    model = build_model(config, n, "reconstruction", n)
    optimizer = build_optimizer(model, config, "reconstruction")
    data = torch.randn(4 * BATCH, n)
    probe = Probe()
    times: list[float] = []

    def batches() -> Iterator[tuple[torch.Tensor, None]]:
        started = time.perf_counter()
        for step in range(WARMUP_STEPS + MAX_STEPS):
            rows = torch.randint(0, len(data), (BATCH,))
            batch = data[rows]
            begun = time.perf_counter()
            yield batch, None  # train_epoch runs the step, then asks for the next batch
            times.append(time.perf_counter() - begun)
            if step >= WARMUP_STEPS:
                probe.measure()  # was other work running? (not counted in the step)
            if step - WARMUP_STEPS >= MIN_STEPS and time.perf_counter() - started > MIN_SECONDS:
                return

    def loss_at(x: torch.Tensor, y: torch.Tensor | None, step: int) -> torch.Tensor:
        return task_loss("reconstruction", model(x, 1.0), x, y)

    train_epoch(model, optimizer, batches(), loss_at, step=0, device=torch.device("cpu"))
    steps = times[WARMUP_STEPS:]
    return {
        "s_per_step": median(steps),
        "steps": len(steps),
        "flops": step_flops(model, n, d),
        "peak_flops": max(peak, matmul_peak()),  # before and after: the better of the two
        "peak_gb": peak_rss_gb(),
        "probe_min": min(probe.rates),
        "probe_max": max(max(probe.rates), probe.calibrate()),
    }


class Probe:
    """A small matmul (~2 GFLOP) timed between steps: its rate drops when other processes
    take the cores, which marks the steps around it as disturbed."""

    def __init__(self) -> None:
        import torch

        self.a, self.b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        self.rates: list[float] = []
        self.calibrate()

    def rate(self) -> float:
        started = time.perf_counter()
        self.a @ self.b
        return 2 * 1024**3 / (time.perf_counter() - started)

    def calibrate(self) -> float:
        return max(self.rate() for _ in range(5))

    def measure(self) -> None:
        self.rates.append(self.rate())


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def child_mnist(raw: str) -> dict[str, Any]:
    import numpy as np
    import torch
    from sklearn.linear_model import LinearRegression

    from benchmarks.mnist_data import load_mnist
    from cae_ray.selector.estimator import ConcreteFeatureSelector

    job = json.loads(raw)
    torch.set_num_threads(job["threads"])
    X, _, _ = load_mnist()
    order = np.random.default_rng(job["seed"]).permutation(len(X))
    train, test = X[order[:6000]], X[order[6000:8000]]
    selector = ConcreteFeatureSelector(
        k=50,
        dim_ip=job["d"],
        sampling=job["sampling"],
        epochs=job["epochs"],
        early_stop=False,
        random_state=job["seed"],
    )
    started = time.perf_counter()
    selector.fit(train)
    seconds = time.perf_counter() - started
    idx = selector.selected_indices_
    decoder = LinearRegression().fit(train[:, idx], train)
    mse = float(((decoder.predict(test[:, idx]) - test) ** 2).mean())
    return {"mse": mse, "seconds": seconds, "peak_gb": peak_rss_gb()}


def synthetic_table(n: int, seed: int) -> tuple[Any, Any, set[int]]:
    """make_classification (as cae_ray.demo) with shuffled columns; the informative indices."""
    from cae_ray.demo import make_demo_data

    s = SYNTHETIC
    data = make_demo_data(rows=s["rows"], features=n, informative=s["informative"], seed=seed)
    names = list(data.frame.columns)
    informative = {names.index(name) for name in data.informative}
    return data.frame.to_numpy(), data.target, informative


def child_synthetic(raw: str) -> dict[str, Any]:
    import numpy as np
    import torch
    from sklearn.feature_selection import f_classif

    from cae_ray.selector.estimator import ConcreteFeatureSelector
    from cae_ray.selector.ranking import search_selection

    job = json.loads(raw)
    torch.set_num_threads(job["threads"])
    X, y, informative = synthetic_table(job["n"], job["seed"])
    # How many informative columns carry a marginal signal: make_classification puts classes on
    # hypercube vertices, so some informative columns only matter jointly with others.
    top = np.argsort(-np.nan_to_num(f_classif(X, y)[0]))[: SYNTHETIC["k"]]
    selector = ConcreteFeatureSelector(k=SYNTHETIC["k"], epochs=200)
    started = time.perf_counter()
    selector.fit(X, y)
    seconds = time.perf_counter() - started
    # What the search alone would have kept (the selection before cae_ray.selector.refine's second
    # look).
    assert selector.model_ is not None, "4,000 rows of 20,000 columns train a search"
    by_search, _, _ = search_selection(
        selector.model_, "classification", SYNTHETIC["k"], torch.from_numpy(X), torch.from_numpy(y)
    )
    return {
        "found": len(set(selector.selected_indices_.tolist()) & informative),
        "found_by_search": len(set(by_search.tolist()) & informative),
        "univariate": len(set(top.tolist()) & informative),
        "epochs": len(selector.history_),
        "seconds": seconds,
        "refine_seconds": seconds - sum(record["seconds"] for record in selector.history_),
        "dim_ip": selector.model_.selector.dim_ip,
        "peak_gb": peak_rss_gb(),
    }


CHILD_JOBS = {"step": child_step, "mnist": child_mnist, "synthetic": child_synthetic}


if __name__ == "__main__":
    main()
