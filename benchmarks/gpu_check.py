"""The Python half of benchmarks/gpu_check.sh: the selection's table and config, and the summary.

    python benchmarks/gpu_check.py setup --rows 200000 --features 2000 --dir WORK/select \\
        --set scaling.use_gpu=true --set scaling.num_workers=2 ...
    python benchmarks/gpu_check.py summary WORK

``setup`` writes DIR/table (standard-normal float32 columns f_00000..., an ``id`` column; as
benchmarks/throughput.py) and DIR/config.yaml: an unsupervised IP-CAE selection of that table,
with each ``--set SECTION.KEY=VALUE`` (VALUE read as YAML) applied, validated before it is
written. ``summary`` reads what the shell script left in WORK (steps.tsv, each step's log and
sampled GPU memory, the selection's run dir) and prints one table; it exits 1 when a step
failed or ran out of time.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BASE_CONFIG: dict[str, Any] = {
    "selector": {"k": 50, "early_stop": False},
    "training": {"epochs": 5, "batch_size": 1024},
    "scaling": {"num_workers": 1},
}
SELECT_STEP, QUALITY_STEP, TESTS_STEP = "select", "quality", "gpu-tests"
NO_TESTS = 5  # pytest's exit code when no test was collected (none is marked gpu)
TIMED_OUT = {124, 137}  # timeout(1): the limit was reached (137: killed after --kill-after)


# --- setup -------------------------------------------------------------------------------------


def apply_settings(config: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    """``section.key=value`` pairs into the nested config; values are YAML (true, 2, {CPU: 4})."""
    import yaml

    for item in settings:
        path, sep, raw = item.partition("=")
        if not sep or "." not in path:
            raise SystemExit(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. scaling.bf16=true")
        *sections, key = path.split(".")
        node = config
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = yaml.safe_load(raw)
    return config


def setup(rows: int, features: int, directory: Path, settings: list[str]) -> None:
    import yaml

    from benchmarks.throughput import write_table
    from cae_ray.config import validate_config
    from cae_ray.errors import CaeRayError

    table = directory / "table"
    config = json.loads(json.dumps(BASE_CONFIG))  # a deep copy
    config["data"] = {"path": str(table), "features": "f_*", "target": None, "row_key": "id"}
    apply_settings(config, settings)
    try:  # a bad --set fails here, not minutes later
        validate_config(config, source="gpu_check.py setup")
    except CaeRayError as e:
        raise SystemExit(f"error: {e}") from e
    write_table(table, rows, features)
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    size = sum(p.stat().st_size for p in table.glob("*.parquet")) / 1e9
    print(f"table: {rows:,} rows x {features:,} features, {size:.2f} GB in {table}")
    print(f"config: {directory / 'config.yaml'}: {json.dumps(config['scaling'])}")


# --- summary -----------------------------------------------------------------------------------


def read_steps(work: Path) -> list[dict[str, str]]:
    """steps.tsv: one line per step, tab-separated: name, exit code (or skip/cached), ms, limit,
    a note."""
    fields = ("name", "rc", "ms", "limit", "note")
    steps_file = work / "steps.tsv"
    if not steps_file.exists():
        return []
    lines = steps_file.read_text().splitlines()
    return [dict(zip(fields, line.split("\t"), strict=False)) for line in lines if line]


def status(step: dict[str, str]) -> tuple[str, bool]:
    """(what the table says, whether the step failed)."""
    rc, note = step["rc"], step.get("note", "")
    if rc in ("skip", "cached"):
        return ("skipped" if rc == "skip" else "cached") + (f": {note}" if note else ""), False
    code = int(rc)
    if code == 0:
        return "ok", False
    if step["name"] == TESTS_STEP and code == NO_TESTS:
        return "none: no test is marked gpu", False
    if code in TIMED_OUT:
        return f"timeout (> {step['limit']} s)", True
    return f"failed (exit {code})", True


def peak_gpu_memory(work: Path, name: str) -> str:
    """The highest memory.used of the busiest GPU while the step ran (nvidia-smi every 0.5 s)."""
    samples = work / f"{name}.gpumem"
    peaks: dict[str, int] = {}
    if samples.exists():
        for line in samples.read_text().splitlines():
            index, _, used = line.partition(",")
            if used.strip().isdigit():
                peaks[index.strip()] = max(peaks.get(index.strip(), 0), int(used))
    if not peaks:
        return "-"
    busiest = max(peaks, key=lambda gpu: peaks[gpu])
    where = f" (GPU {busiest} of {len(peaks)})" if len(peaks) > 1 else ""
    return f"{peaks[busiest] / 1024:.1f} GiB{where}"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def selection_figures(work: Path) -> tuple[str, str, str]:
    """(rows/s, s/epoch, what was selected) of the selection, medians over the epochs after the
    first (which includes start-up), as benchmarks/throughput.py."""
    run = work / SELECT_STEP / "run"
    selection, prepared = read_json(run / "selection.json"), read_json(run / "data/prepared.json")
    if selection is None or prepared is None or not selection.get("history"):
        return "-", "-", "-"
    seconds = [float(record["seconds"]) for record in selection["history"]]
    per_epoch = median(seconds[1:] or seconds)
    rows = int(prepared["rows"]["train"])
    picked = f"{len(selection['selected_features'])} distinct of {len(prepared['features']):,}"
    workers = selection.get("num_workers", "?")
    note = f"{picked}; {len(seconds)} epochs, {workers} worker(s)"
    return f"{rows / per_epoch:,.0f}", f"{per_epoch:.2f}", note


def quality_figures(log: Path) -> str:
    """The cae-ray rows of benchmarks/quality.py's MNIST table: lr_mse and et_acc medians."""
    if not log.exists():
        return "-"
    found = []
    for line in log.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0].startswith("cae-ray defaults"):
            kind = "sup." if cells[1] == "yes" else "unsup."
            mse, acc = cells[2].split()[0], cells[3].split()[0]
            found.append(f"{kind} lr_mse {mse}, et_acc {acc}, fit {cells[4]} s")
    return "; ".join(found) + " (reference IP-CAE: 0.0181, 0.923)" if found else "-"


def tests_figures(log: Path) -> str:
    """pytest's last summary line (``3 passed, 1 skipped in 4.2s``)."""
    if not log.exists():
        return "-"
    counts = re.compile(r"\d+ (passed|failed|skipped|deselected|errors?)")
    lines = [ln.strip("= ") for ln in log.read_text().splitlines() if counts.search(ln)]
    return lines[-1] if lines else "-"


def machine() -> str:
    try:
        import torch
    except ImportError:
        return "Machine: torch is not installed"
    cuda = torch.cuda.is_available()
    count = torch.cuda.device_count() if cuda else 0
    names = [torch.cuda.get_device_name(i) for i in range(count)]
    driver = "-"
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        driver = subprocess.run(query, capture_output=True, text=True, check=True).stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        pass
    return (
        f"Machine: torch {torch.__version__} (CUDA {torch.version.cuda or '-'}), CUDA available: "
        f"{cuda}, devices: {', '.join(names) or 'none'}; driver {driver}"
    )


def summary(work: Path) -> int:
    print(f"\n## cae-ray GPU check ({work})\n\n{machine()}\n")
    print("| step | status | seconds | throughput rows/s | epoch s | peak GPU memory | quality |")
    print("|---|---|---|---|---|---|---|")
    failed = False
    for step in read_steps(work):
        text, bad = status(step)
        failed |= bad
        seconds = f"{int(step['ms']) / 1000:.1f}" if step["ms"].isdigit() else "-"
        rows_per_s, per_epoch, quality = "-", "-", "-"
        if step["name"] == SELECT_STEP:
            rows_per_s, per_epoch, quality = selection_figures(work)
        elif step["name"] == QUALITY_STEP:
            quality = quality_figures(work / f"{QUALITY_STEP}.log")
        elif step["name"] == TESTS_STEP:
            quality = tests_figures(work / f"{TESTS_STEP}.log")
        memory = peak_gpu_memory(work, step["name"])
        cells = [step["name"], text, seconds, rows_per_s, per_epoch, memory, quality]
        print("| " + " | ".join(cells) + " |")
    print(f"\nLogs: {work}/STEP.log. " + ("Some steps FAILED." if failed else "No step failed."))
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("setup", help="write the selection's table and config")
    made.add_argument("--rows", type=int, required=True)
    made.add_argument("--features", type=int, required=True)
    made.add_argument("--dir", type=Path, required=True, help="gets table/ and config.yaml")
    made.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    shown = commands.add_parser("summary", help="print the table of a finished check")
    shown.add_argument("work", type=Path)
    args = parser.parse_args()
    if args.command == "setup":
        setup(args.rows, args.features, args.dir, args.set)
    else:
        sys.exit(summary(args.work))


if __name__ == "__main__":
    main()
