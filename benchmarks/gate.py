"""The validation gate against a stock learner: does it pass a good selection and fail a weak one?

    .venv/bin/python benchmarks/gate.py [--rows 20000] [--before DIR] [--work-dir DIR]

Two Madelon-style tables (cae_ray.demo.make_demo_data, seed 0): the demo's (1,000 columns, 10
informative, selected with the demo's settings, K=10) and a wide one (2,000 columns, 20
informative, K=20). Each is selected through the Ray pipeline with the defaults; the wide one
also with a deliberately weak recipe (2 epochs, no spare rows, no refine, no early stop). Each
selection is validated at tolerance 0.01 with `model: mlp` and `model: gbdt` (the default).

The table: informative columns found, each model's baseline on all features, the selected
value, the stock reference (HistGradientBoosting, default parameters, on all features), the
verdict, and the validate step's seconds (every model fitted afresh, the reference included).
With ``--before DIR`` (a checkout of an earlier cae-ray, e.g. ``git worktree add /tmp/before
866dfed``) the same selections are also validated by that version's gate, in a subprocess, for
the time ratio measured in this one run.
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
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

DEMO = {  # configs/demo.yaml's selection settings
    "selector": {"method": "ipcae", "k": 10},
    "training": {"epochs": 40, "batch_size": 128, "learning_rate": 0.003},
}
WIDE = {"selector": {"k": 20}}
WEAK = {
    "selector": {"k": 20, "search_factor": 1, "refine": False, "early_stop": False},
    "training": {"epochs": 2},
}
TABLES: dict[str, tuple[int, int, dict[str, dict[str, Any]]]] = {
    "demo": (1_000, 10, {"default": DEMO}),
    "wide": (2_000, 20, {"default": WIDE, "weak": WEAK}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--before", type=Path, default=None, help="an earlier cae-ray checkout")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cae-gate-"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(
        f"tables: {args.rows:,} rows, make_demo_data seed 0; tolerance 0.01; seeds: training.seed 0"
    )
    print("| table | selection | found | model | baseline | selected | reference | passed | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (features, informative, recipes) in TABLES.items():
        table, names = write_table(work / name, args.rows, features, informative)
        for label, recipe in recipes.items():
            run = work / name / label
            found = select(table, run, recipe, names)
            models = ["mlp", "gbdt"] + (["before"] if args.before else [])
            for model in models:
                head = (
                    f"| {name} ({features:,} cols) | {label} | {found} of {informative} | {model}"
                )
                if model == "before":
                    print(before_row(table, run, recipe, args.before, head), flush=True)
                else:
                    print(validate_row(table, run, recipe, model, head), flush=True)


def write_table(work: Path, rows: int, features: int, informative: int) -> tuple[Path, list[str]]:
    from cae_ray.demo import make_demo_data

    data = make_demo_data(rows=rows, features=features, informative=informative, seed=0)
    table = pa.Table.from_pandas(data.frame, preserve_index=False).append_column(
        "label", pa.array(data.target)
    )
    (work / "table").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, work / "table" / "part-0.parquet")
    return work / "table", data.informative


def sections(table: Path, recipe: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = {
        "data": {"path": str(table), "features": "f_*", "target": "label"},
        "scaling": {"num_workers": 1},
        "validation": {"tolerance": 0.01, **validation},
    }
    for name, values in recipe.items():
        plain[name] = {**plain.get(name, {}), **values}
    return plain


def config(table: Path, recipe: dict[str, Any], validation: dict[str, Any]) -> Any:
    from cae_ray.config import validate_config

    return validate_config(sections(table, recipe, validation))


def select(table: Path, run: Path, recipe: dict[str, Any], informative: list[str]) -> int:
    from cae_ray.pipeline import select as select_step

    selection = select_step(config(table, recipe, {}), run)
    return len(set(selection.selected_features) & set(informative))


def validate_row(table: Path, run: Path, recipe: dict[str, Any], model: str, head: str) -> str:
    from cae_ray.gate import models as gate_models
    from cae_ray.pipeline import validate

    gate_models._ALL_FEATURES.clear()  # time every fit: no predictions kept from the last row
    fresh = fresh_copy(run, model)
    started = time.perf_counter()
    v = validate(config(table, recipe, {"model": model}), fresh)
    seconds = time.perf_counter() - started
    reference = v.reference.value if v.reference is not None else float("nan")
    return (
        f"{head} | {v.baseline.value:.4f} | {v.selected.value:.4f} | "
        f"{reference:.4f} | {v.passed} | {seconds:.0f} |"
    )


BEFORE = """
import json, sys, time
from cae_ray.config import validate_config
from cae_ray.pipeline import validate
config = validate_config(json.loads(sys.argv[1]))
started = time.perf_counter()
v = validate(config, sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - started, "baseline": v["baseline"]["value"],
                  "selected": v["selected"]["value"], "passed": v["passed"]}))
"""


def before_row(table: Path, run: Path, recipe: dict[str, Any], before: Path, head: str) -> str:
    """The earlier version's gate (its MLP heads on Ray) on a copy of the same selection."""
    fresh = fresh_copy(run, "before")
    plain = json.dumps(sections(table, recipe, {}))
    env = {**os.environ, "PYTHONPATH": str(before.resolve())}
    done = subprocess.run(  # in the checkout: `python -c` looks in the working dir first
        [sys.executable, "-c", BEFORE, plain, str(fresh.resolve())],
        cwd=before,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    v = json.loads(done.stdout.strip().splitlines()[-1])
    return (
        f"{head} | {v['baseline']:.4f} | {v['selected']:.4f} | | {v['passed']} | "
        f"{v['seconds']:.0f} |"
    )


def fresh_copy(run: Path, model: str) -> Path:
    """The run's prepared data and selection, without any verdict or Ray storage."""
    to = run.parent / f"{run.name}-validate-{model}"
    shutil.rmtree(to, ignore_errors=True)
    shutil.copytree(run / "data", to / "data")
    shutil.copy(run / "selection.json", to / "selection.json")
    return to


if __name__ == "__main__":
    main()
