"""Object storage: the same cae-ray work with the run dir on S3 against a local directory.

    .venv/bin/python benchmarks/object_store.py [--cases demo table] [--repeats 1]
        [--rows 20000 --features 2000 --epochs 5] [--demo-rows 20000 --demo-features 1000]
        [--keep]

Prints the machine, then one table: per case the median wall seconds of ``--repeats`` runs
with the run dir in a local directory and on S3, the ratio of the medians s3/local (the goal:
within 1.5x), the objects and bytes the S3 run wrote (and the files and bytes of the local
one), and whether both runs selected the same features.

- **demo**: the demo-sized run. The demo's Feast repo (cae_ray.demo.make_demo_repo, 20,000
  customers x 1,000 features by default) and its config, with ``feast.prune: plan`` so that no
  run depends on an earlier one's marks, and ``validation.tolerance: 1.0`` so that the gate
  (computed as ever) passes at any size and every step runs; timed: `cae-ray run CONFIG
  --run-dir RUN_DIR` (export -> prepare -> select -> validate -> prune plan -> retire plan ->
  report).
- **table**: a synthetic Parquet table (tests/wide_data.py: make_classification, 20 informative
  columns ``f_*``, ``label``, ``id``; 20,000 rows x 2,000 features by default), read from the
  same local files by both runs; timed: `cae-ray select CONFIG --run-dir RUN_DIR` (prepare,
  then a supervised selection of K=20, ``--epochs`` epochs, batch 256, one Ray worker).

S3 is moto's server on localhost (tests/object_store.py), so the ratio is the cost of the
storage layer (requests, server-side moves, serialisation) rather than of a network. Every run
is a fresh `cae-ray` process with a fresh run dir (``WORK/<case>-local-N`` against
``s3://BUCKET/bench/<case>-N``) and its own local Ray cluster, whose temp files go to a new
directory under ``$RAY_TMPDIR`` (or /tmp) that is removed afterwards; the local and S3 runs of
each repeat go one after the other, so a slower moment of the machine hits both. Wall seconds
include the process's and Ray's start-up, the same for both.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import hardware
from tests.object_store import BUCKET, CREDENTIALS, S3Server, environment, s3_server

GOAL = 1.5
"""s3 / local wall time this benchmark checks against."""
SEED = 0
TABLE_K, TABLE_BATCH, TABLE_INFORMATIVE = 20, 256, 20
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
}
CLI = Path(sys.executable).with_name("cae-ray")


@dataclass
class Case:
    name: str
    command: str
    """The `cae-ray` subcommand timed: ``run`` or ``select``."""
    config: Path
    sizes: str
    local: list[float] = field(default_factory=list)
    s3: list[float] = field(default_factory=list)
    objects: list[int] = field(default_factory=list)
    s3_bytes: list[int] = field(default_factory=list)
    files: list[int] = field(default_factory=list)
    local_bytes: list[int] = field(default_factory=list)
    same_selection: list[bool] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=["demo", "table"], default=["demo", "table"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rows", type=int, default=20_000, help="table case")
    parser.add_argument("--features", type=int, default=2_000, help="table case")
    parser.add_argument("--epochs", type=int, default=5, help="table case")
    parser.add_argument("--demo-rows", type=int, default=20_000)
    parser.add_argument("--demo-features", type=int, default=1_000)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (and say where)")
    args = parser.parse_args()
    if not CLI.exists():
        raise SystemExit(f"no cae-ray CLI beside {sys.executable}: install the package first")

    work = Path(tempfile.mkdtemp(prefix="cae-object-store-"))
    try:
        print(machine())
        print()
        cases = [BUILD[name](work, args) for name in args.cases]
        with s3_server() as server:
            env = {**os.environ, **RAY_ENV, **server.env}
            env.pop("RAY_ADDRESS", None)  # every run starts its own local cluster
            header()
            for case in cases:
                measure(case, work, server, env, args.repeats)
                line(case, args.repeats)
    finally:
        if args.keep:
            print(f"\nwork dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def machine() -> str:
    from importlib.metadata import version

    return (
        f"Machine: {platform.platform()}, {hardware()}; "
        f"Python {platform.python_version()}, ray {version('ray')}, pyarrow {version('pyarrow')}, "
        f"S3: moto {version('moto')} server on localhost"
    )


# --- the cases: data and configs ----------------------------------------------------------------


def demo_case(work: Path, args: argparse.Namespace) -> Case:
    from cae_ray.demo import demo_config, make_demo_repo

    directory = work / "demo"
    started = time.perf_counter()
    make_demo_repo(directory, rows=args.demo_rows, features=args.demo_features)
    written, _ = demo_config(directory)
    settings = yaml.safe_load(written.read_text())
    settings["feast"]["prune"] = "plan"  # apply would make each run depend on the last's marks
    settings["training"]["seed"] = SEED
    # The same work as the demo's gate, but a verdict that always passes: at small sizes the
    # interval is wide and the gate can fail, which skips prune and retire (and exits 5).
    settings["validation"]["tolerance"] = 1.0
    config = directory / "bench.yaml"
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    print(f"demo repo: {time.perf_counter() - started:.1f} s", flush=True)
    training = settings["training"]
    sizes = (
        f"{args.demo_rows:,} x {args.demo_features:,}, K={settings['selector']['k']}, "
        f"{training['epochs']} epochs, batch {training['batch_size']}"
    )
    return Case("demo (`cae-ray run`)", "run", config, sizes)


def table_case(work: Path, args: argparse.Namespace) -> Case:
    from tests.wide_data import write_wide_parquet

    source = work / "table"
    started = time.perf_counter()
    write_wide_parquet(
        source,
        rows=args.rows,
        features=args.features,
        informative=min(TABLE_INFORMATIVE, args.features),
        files=max(1, args.rows // 10_000),
        seed=SEED,
    )
    settings: dict[str, Any] = {
        "data": {"path": str(source), "features": "f_*", "target": "label", "row_key": "id"},
        "selector": {"k": TABLE_K},
        "training": {"epochs": args.epochs, "batch_size": TABLE_BATCH, "seed": SEED},
        "scaling": {"num_workers": 1},
    }
    config = work / "table.yaml"
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    print(f"table: {time.perf_counter() - started:.1f} s", flush=True)
    sizes = f"{args.rows:,} x {args.features:,}, K={TABLE_K}, {args.epochs} epochs, batch 256"
    return Case("table (`cae-ray select`)", "select", config, sizes)


BUILD = {"demo": demo_case, "table": table_case}


# --- the runs -----------------------------------------------------------------------------------


def measure(case: Case, work: Path, server: S3Server, env: dict[str, str], repeats: int) -> None:
    short = "table" if case.command == "select" else "demo"
    for n in range(repeats):
        local = work / f"{short}-local-{n}"
        remote = server.uri(f"bench/{short}-{n}")
        case.local.append(timed(case, str(local), env))
        case.s3.append(timed(case, remote, env))
        count, size = stored(server, f"bench/{short}-{n}/")
        case.objects.append(count)
        case.s3_bytes.append(size)
        files = [p for p in local.rglob("*") if p.is_file()]
        case.files.append(len(files))
        case.local_bytes.append(sum(p.stat().st_size for p in files))
        case.same_selection.append(selected(str(local), server) == selected(remote, server))


def timed(case: Case, run_dir: str, env: dict[str, str]) -> float:
    """Wall seconds of one `cae-ray` process; exits with its output's tail when it fails."""
    base = os.environ.get("RAY_TMPDIR") or "/tmp"
    Path(base).mkdir(parents=True, exist_ok=True)
    temp = tempfile.mkdtemp(prefix="r-", dir=base)  # short: Ray's socket paths live under it
    command = [str(CLI), case.command, str(case.config), "--run-dir", run_dir]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**env, "RAY_TMPDIR": temp})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        print(f"\n`{' '.join(command)}` failed with exit code {done.returncode}:", file=sys.stderr)
        print((done.stdout + done.stderr)[-4000:], file=sys.stderr)
        print(f"(Ray's logs kept: {temp})", file=sys.stderr)
        sys.exit(1)
    shutil.rmtree(temp, ignore_errors=True)
    return seconds


def stored(server: S3Server, prefix: str) -> tuple[int, int]:
    """(objects, bytes) under ``prefix`` in the bucket; directory markers do not count."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    items = [item for page in pages for item in page.get("Contents", [])]
    items = [item for item in items if not item["Key"].endswith("/")]
    return len(items), sum(int(item["Size"]) for item in items)


def selected(run_dir: str, server: S3Server) -> list[str] | None:
    from cae_ray.artifacts import SELECTION, RunDir

    with environment(server.env):
        selection = RunDir(run_dir).read_json(SELECTION)
    return None if selection is None else sorted(selection["selected_features"])


# --- the table ----------------------------------------------------------------------------------


def header() -> None:
    print(
        "| case | sizes | seed | repeats | local s | s3 s | s3/local | within 1.5x "
        "| S3 objects | S3 MB | local files | local MB | same selection |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def seconds_cell(values: list[float]) -> str:
    text = f"{median(values):.1f}"
    if len(values) > 1:  # the spread next to the median
        text += " (" + "/".join(f"{v:.1f}" for v in values) + ")"
    return text


def line(case: Case, repeats: int) -> None:
    ratio = median(case.s3) / median(case.local)
    same = "yes" if all(case.same_selection) else f"{sum(case.same_selection)}/{repeats}"
    cells = [
        case.name,
        case.sizes,
        str(SEED),
        str(repeats),
        seconds_cell(case.local),
        seconds_cell(case.s3),
        f"{ratio:.2f}x",
        "yes" if ratio <= GOAL else "no",
        f"{median(case.objects):.0f}",
        f"{median(case.s3_bytes) / 1e6:.1f}",
        f"{median(case.files):.0f}",
        f"{median(case.local_bytes) / 1e6:.1f}",
        same,
    ]
    print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
