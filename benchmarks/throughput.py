"""Throughput of the distributed path, printed as one table.

    .venv/bin/python benchmarks/throughput.py [--parts a b c d] [--work-dir DIR]

(a) data path: the packed train split (Parquet) to shuffled batch tensors, as a Train worker
    reads it, in rows/s and as a fraction of a plain memory copy of the same bytes measured in
    the same process; references: pyarrow reading the same files without Ray, and Ray's own
    tensor column with its local shuffle buffer (what we used before).
(b) training rows/s and peak memory for N in {784, 2000, 10000}, K=50, 1 and 2 Ray workers.
(c) Ray's overhead: seconds per epoch through Ray Train (local mode and 1 worker) against the
    in-memory estimator on the same 100k training rows, N=784.
(d) the memory goal: N=10,000 features x 200,000 rows, one epoch.

Training is unsupervised IP-CAE (K=50, exactly K selector rows, the default [200] decoder),
batch 512, early stop off; rows/s and s/epoch are medians over the epochs after the first (the
first includes start-up). Every measured run is a fresh process with its own local Ray cluster
(4 logical CPUs on this 2-core machine, so Ray Data can read while workers train; part d: Ray's
default, as `cae-ray select` starts it). Peak memory
is the machine's: the highest (total - available) seen every 0.2 s, minus the value before the
run started, so it counts the driver, every Ray process and the object store.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import hardware  # after the line above: run as a script

K, BATCH, EPOCHS = 50, 512, 3
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "1",
}


# --- the parent: data, runs, table --------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["a", "b", "c", "d"])
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cae-throughput-"))
    print(machine())
    print()
    print("| part | case | N | rows | workers | rows/s | ratio | s/epoch | peak GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for part in args.parts:
        PARTS[part](work)
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


def machine() -> str:
    import torch

    return (
        f"Machine: {hardware()}; Python "
        f"{platform.python_version()}, torch {torch.__version__}, ray {_ray_version()}"
    )


def _ray_version() -> str:
    from importlib.metadata import version

    return version("ray")


def row(part: str, case: str, n: int, rows: int, workers: Any, result: dict[str, Any]) -> None:
    cells = [
        part,
        case,
        f"{n:,}",
        f"{rows:,}",
        str(workers),
        f"{result['rows_per_s']:,.0f}" if "rows_per_s" in result else "",
        result.get("ratio", ""),
        f"{result['s_per_epoch']:.2f}" if "s_per_epoch" in result else "",
        f"{result['peak_gb']:.1f}" if "peak_gb" in result else "",
    ]
    print("| " + " | ".join(cells) + " |", flush=True)


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **RAY_ENV})
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    raise RuntimeError(f"{job['kind']} failed:\n{done.stderr[-3000:]}")


def write_table(directory: Path, rows: int, n_features: int, seed: int = 0) -> Path:
    """Standard-normal float32 features f_00000..., one file per 10,000 rows."""
    if (directory / "_done").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"f_{j:05d}" for j in range(n_features)]
    for part, start in enumerate(range(0, rows, 10_000)):
        count = min(10_000, rows - start)
        block = rng.standard_normal((n_features, count), dtype=np.float32)
        table = pa.table(dict(zip(names, block, strict=True)))
        table = table.append_column("id", pa.array(np.arange(start, start + count)))
        pq.write_table(table, directory / f"part-{part:04d}.parquet", row_group_size=count)
    (directory / "_done").touch()
    return directory


def prepared_run(work: Path, rows: int, n_features: int) -> tuple[Path, int]:
    """A run dir with the packed splits for this table (prepared once, in a child process)."""
    source = write_table(work / f"table-{n_features}x{rows}", rows, n_features)
    base = work / f"prepared-{n_features}x{rows}"
    if not (base / "data" / "prepared.json").exists():
        run_child({"kind": "prepare", "config": config(source, 1), "run_dir": str(base)})
    prepared = json.loads((base / "data" / "prepared.json").read_text())
    return base, int(prepared["rows"]["train"])


def fresh_run_dir(base: Path, name: str) -> Path:
    """A new run dir sharing the prepared data (hard links), so select only trains."""
    run = base.parent / f"{base.name}-{name}"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(base / "data", run / "data", copy_function=os.link)
    return run


def config(source: Path, workers: int, epochs: int = EPOCHS) -> dict[str, Any]:
    cpus = 2.0 / max(workers, 1)
    return {
        "data": {"path": str(source), "features": "f_*", "target": None, "row_key": "id"},
        "selector": {"k": K, "early_stop": False},
        "training": {"epochs": epochs, "batch_size": BATCH},
        "scaling": {"num_workers": workers, "resources_per_worker": {"CPU": cpus}},
    }


def train_rows(
    work: Path, part: str, n: int, rows: int, workers: int, case: str, reference: float = 0.0
) -> dict[str, Any]:
    """Train on a fresh copy of the prepared table; ``reference``: the estimator's s/epoch."""
    base, n_train = prepared_run(work, rows, n)
    source = work / f"table-{n}x{rows}"
    run = fresh_run_dir(base, f"w{workers}")
    result = run_child({"kind": "select", "config": config(source, workers), "run_dir": str(run)})
    if reference:
        result["ratio"] = f"{result['s_per_epoch'] / reference:.2f}x estimator"
    row(part, case, n, n_train, workers, result)
    shutil.rmtree(run, ignore_errors=True)
    return result


def part_a(work: Path) -> None:
    base, n_train = prepared_run(work, 100_000, 2000)
    train = str(base / "data" / "train")
    for kind, case in [
        ("read_packed", "Parquet -> shuffled batch tensors (ours)"),
        ("read_cached", "the same, split cached in the object store (ours, auto)"),
        ("read_tensor_column", "Ray tensor column + local shuffle buffer (before)"),
        ("read_pyarrow", "pyarrow.parquet.read_table, no Ray (reference)"),
    ]:
        result = run_child({"kind": kind, "train": train, "n": 2000, "work": str(work)})
        row("a", case, 2000, n_train, "-", result)


def part_b(work: Path) -> None:
    for n, rows in [(784, 100_000), (2000, 100_000), (10_000, 20_000)]:
        for workers in (1, 2):
            train_rows(work, "b", n, rows, workers, "training")


def part_c(work: Path) -> None:
    base, n_train = prepared_run(work, 125_000, 784)
    estimator = run_child({"kind": "estimator", "train": str(base / "data" / "train"), "n": 784})
    row("c", "in-memory estimator", 784, n_train, "-", estimator)
    for workers, case in [(0, "Ray Train local mode"), (1, "Ray Train, 1 worker")]:
        train_rows(work, "c", 784, 125_000, workers, case, reference=estimator["s_per_epoch"])


def part_d(work: Path) -> None:
    source = write_table(work / "table-10000x200000", 200_000, 10_000)
    run = work / "big-run"
    # Ray's own CPU count, as `cae-ray select` starts it: prepare runs a task per CPU, each
    # holding about 5x a row group (2.3 GB at 400 MB), so 4 logical CPUs would add two more.
    settings = config(source, 1, epochs=1)
    settings["scaling"]["resources_per_worker"] = {"CPU": 1.0}  # one left for Ray Data
    job = {"kind": "select", "config": settings, "run_dir": str(run), "ray_cpus": None}
    result = run_child(job)
    result["ratio"] = f"whole run {result['seconds'] / 60:.0f} min"
    row("d", "prepare + 1 epoch, goal: peak <= 8 GB", 10_000, result["n_train"], 1, result)
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(source, ignore_errors=True)


PARTS = {"a": part_a, "b": part_b, "c": part_c, "d": part_d}


# --- the child: one measured run in a fresh process ---------------------------------------------


class PeakMemory:
    """The machine's used memory (total - available), sampled every 0.2 s, above a baseline."""

    def __init__(self) -> None:
        self.baseline = self._used()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def _used() -> int:
        memory = psutil.virtual_memory()
        return int(memory.total - memory.available)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._used())

    def gigabytes(self) -> float:
        self._stop.set()
        self._thread.join()
        return (max(self.peak, self._used()) - self.baseline) / 1e9


def child(job: dict[str, Any]) -> dict[str, Any]:
    memory = PeakMemory()
    if job["kind"] in ("estimator", "read_pyarrow"):
        result = CHILD_JOBS[job["kind"]](job)
    else:
        import ray

        temp = tempfile.mkdtemp(prefix="cr-", dir="/tmp")  # short: Ray's socket paths
        cpus = job.get("ray_cpus", 4)  # None: Ray's default, the machine's cores
        ray.init(num_cpus=cpus, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
        try:
            result = CHILD_JOBS[job["kind"]](job)
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
    return {**result, "peak_gb": memory.gigabytes()}


def child_prepare(job: dict[str, Any]) -> dict[str, Any]:
    from cae_ray.config import validate_config
    from cae_ray.pipeline import prepare

    prepare(validate_config(job["config"]), job["run_dir"])
    return {}


def child_select(job: dict[str, Any]) -> dict[str, Any]:
    from cae_ray.artifacts import PREPARED, RunDir
    from cae_ray.config import validate_config
    from cae_ray.pipeline import select

    started = time.perf_counter()
    selection = select(validate_config(job["config"]), job["run_dir"])
    prepared = RunDir(job["run_dir"]).read_json(PREPARED)
    assert prepared is not None
    n_train = int(prepared["rows"]["train"])
    seconds = [h["seconds"] for h in selection.history]
    per_epoch = median(seconds[1:] or seconds)
    return {
        "rows_per_s": n_train / per_epoch,
        "s_per_epoch": per_epoch,
        "n_train": n_train,
        "seconds": time.perf_counter() - started,
    }


def memcpy_bytes_per_s(nbytes: int) -> float:
    source = np.ones(nbytes // 4, np.float32)
    target = np.empty_like(source)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        np.copyto(target, source)
        times.append(time.perf_counter() - started)
    return nbytes / min(times)


def timed_pass(batches: Any, n_features: int) -> tuple[int, float, float]:
    """(rows, seconds for the pass, seconds until the first batch arrived)."""
    started, rows, first = time.perf_counter(), 0, 0.0
    for x, _ in batches:
        if rows == 0:
            first = time.perf_counter() - started
        rows += len(x)
    assert rows > 0 and x.shape[1] == n_features
    return rows, time.perf_counter() - started, first


def data_result(passes: list[tuple[int, float, float]], n_features: int) -> dict[str, Any]:
    """The fastest pass: rows/s over the whole pass; after the first batch, as a fraction of
    memcpy (a fixed start-up per pass is Ray Data's, and separate from its throughput)."""
    rows, seconds, first = min(passes, key=lambda p: p[1])
    steady = rows * n_features * 4 / max(seconds - first, 1e-9)
    fraction = steady / memcpy_bytes_per_s(rows * n_features * 4)
    return {
        "rows_per_s": rows / seconds,
        "fraction_of_memcpy": fraction,
        "ratio": f"{fraction:.2f} of memcpy after the first batch ({first:.1f} s)",
    }


def child_read_packed(job: dict[str, Any], cache: bool = False) -> dict[str, Any]:
    from cae_ray.runtime.batches import ShuffledWindows
    from cae_ray.runtime.data import read_ordered

    n, dataset = job["n"], read_ordered(job["train"])
    if cache:
        dataset = dataset.materialize()
    passes, windows = [], ShuffledWindows(n, BATCH, with_target=False)
    for epoch in range(3):  # as a worker's epochs: later passes find warm caches
        blocks = dataset.iter_batches(batch_size=None, batch_format="pyarrow")
        passes.append(timed_pass(windows.epoch(blocks, seed=epoch), n))
    return data_result(passes, n)


def child_read_tensor_column(job: dict[str, Any]) -> dict[str, Any]:
    import ray.data
    import torch
    from ray.data.extensions import ArrowTensorArray

    from cae_ray.runtime.batches import FEATURES, unpack

    n, converted = job["n"], Path(job["work"]) / "tensor-column"
    if not converted.exists():
        converted.mkdir()
        for path in sorted(Path(job["train"]).glob("*.parquet")):
            matrix = unpack(pq.read_table(path).column(FEATURES), n)
            table = pa.table({FEATURES: ArrowTensorArray.from_numpy(matrix)})
            pq.write_table(table, converted / path.name)
    passes = []
    for epoch in range(3):
        batches = ray.data.read_parquet(str(converted)).iter_torch_batches(
            batch_size=BATCH,
            dtypes=torch.float32,
            local_shuffle_buffer_size=10 * BATCH,
            local_shuffle_seed=epoch,
        )
        passes.append(timed_pass(((b[FEATURES], None) for b in batches), n))
    return data_result(passes, n)


def child_read_pyarrow(job: dict[str, Any]) -> dict[str, Any]:
    from cae_ray.runtime.batches import FEATURES

    passes = []
    for _ in range(3):
        started = time.perf_counter()
        table = pq.read_table(job["train"], columns=[FEATURES])
        passes.append((table.num_rows, time.perf_counter() - started, 0.0))
    return data_result(passes, job["n"])


def child_estimator(job: dict[str, Any]) -> dict[str, Any]:
    from cae_ray.runtime.batches import FEATURES, unpack
    from cae_ray.selector.estimator import ConcreteFeatureSelector

    x = unpack(pq.read_table(job["train"], columns=[FEATURES]).column(FEATURES), job["n"])
    selector = ConcreteFeatureSelector(k=K, epochs=EPOCHS, batch_size=BATCH, early_stop=False)
    selector.fit(x)
    seconds = [h["seconds"] for h in selector.history_]
    per_epoch = median(seconds[1:])
    return {"rows_per_s": len(x) / per_epoch, "s_per_epoch": per_epoch}


CHILD_JOBS = {
    "prepare": child_prepare,
    "select": child_select,
    "read_packed": child_read_packed,
    "read_cached": lambda job: child_read_packed(job, cache=True),
    "read_tensor_column": child_read_tensor_column,
    "read_pyarrow": child_read_pyarrow,
    "estimator": child_estimator,
}


if __name__ == "__main__":
    main()
