"""The Ray Job entry point: one whole cae-ray run on the Ray cluster it is submitted to.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python pipelines/ray_job.py --config configs/cluster-gpu.yaml \\
        --run-dir /mnt/shared/runs/2026-11-24

It runs :func:`cae_ray.pipeline.run` (export -> prepare -> select -> validate -> prune ->
report), which joins the cluster named by the config's ``scaling.address``, else
``RAY_ADDRESS`` (set by Ray for every submitted job), else starts a local one. Running it again
with the same ``--run-dir`` resumes at the first unfinished step, so a retried job (a RayJob's
``backoffLimit``, an orchestrator's retry) picks up where the last attempt stopped.

The last line on stdout is one JSON object, for whoever reads the job's logs::

    {"config": ..., "run_dir": ..., "ray_address": ..., "status": "succeeded",
     "result": {...the run's run.json: each step's status, seconds and figures...},
     "exit_code": 0, "seconds": ...}

``status`` is ``succeeded``, ``gate_failed``, ``failed`` (a cae-ray error: ``error`` and
``message`` say which), ``interrupted`` (SIGTERM or SIGINT: run the job again to resume) or
``error`` (an unexpected exception; its traceback goes to stderr).
Exit codes are those of ``cae-ray`` (``cae_ray.errors.EXIT_CODES``; ``--help`` lists them).

Submitted by the Dagster adapter (dagster-ray's ``PipesRayJobClient``, which sets
``DAGSTER_PIPES_CONTEXT``), it also speaks Dagster Pipes where ``dagster-pipes`` is installed:
each step's start and end go to the Dagster run's log as well. The summary line stays the last
line on stdout; the op reads it from the job's logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cae_ray.errors import exit_codes_help

EXIT_OK = 0

logger = logging.getLogger("cae_ray.ray_job")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ray_job.py",
        description="Run every cae-ray step (export, prepare, select, validate, prune, report) "
        "over one config and one run directory, on the Ray cluster this job runs in.",
        epilog=exit_codes_help(),
    )
    parser.add_argument("--config", required=True, type=Path, help="A cae-ray YAML config.")
    parser.add_argument(
        "--run-dir",
        type=str,
        default=os.environ.get("CAE_RAY_RUN_DIR"),
        required="CAE_RAY_RUN_DIR" not in os.environ,
        help="Where this run's artifacts go: a path or a URI such as s3://bucket/runs/ID "
        "(default: $CAE_RAY_RUN_DIR). On a multi-node cluster it must be storage every node "
        "reaches (an object store). The same dir resumes a run.",
    )
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join when the config's scaling.address is not set (sets "
        "RAY_ADDRESS). Not needed under `ray job submit`, which sets RAY_ADDRESS itself.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="Also print every epoch, and log at INFO."
    )
    return parser.parse_args(argv)


def recorded_run(run_dir: str) -> dict[str, Any] | None:
    """``run_dir/run.json`` (what ``run`` records step by step), if there is one."""
    from cae_ray.artifacts import RunDir
    from cae_ray.errors import CaeRayError
    from cae_ray.records import RunRecord

    try:
        record = RunRecord.read(RunDir(run_dir))
    except (OSError, ValueError, CaeRayError):
        return None
    return None if record is None else record.as_json()


def dagster_pipes() -> Any:
    """An open Dagster Pipes context when a Dagster op submitted this job
    (``DAGSTER_PIPES_CONTEXT`` is set) and ``dagster-pipes`` is installed, else None. Its
    messages go to stdout, where the op reads them from the job's logs; close it when done."""
    if "DAGSTER_PIPES_CONTEXT" not in os.environ:
        return None
    try:
        from dagster_pipes import open_dagster_pipes
    except ImportError:
        print("[cae-ray] dagster-pipes is not installed: no messages to Dagster", file=sys.stderr)
        return None
    return open_dagster_pipes()


def progress(verbose: bool, pipes: Any = None) -> Callable[[Any], None]:
    """``run``'s event callback: one stderr line per step as it starts and ends (a day-long
    job's logs say where it is), and one per epoch (or export chunk) with ``verbose``; with a
    Dagster ``pipes`` context, each step line in the Dagster run's log too."""

    def on_event(event: Any) -> None:
        if event.status == "progress":
            if verbose:
                print(f"[cae-ray] {event.step} {json.dumps(event.progress)}", file=sys.stderr)
            return
        line = f"[cae-ray] {event.step}: {event.status}"
        if event.seconds is not None:
            line += f" in {event.seconds:.1f} s"
        if event.reason:
            line += f" ({event.reason})"
        print(line, file=sys.stderr, flush=True)
        if pipes is not None:
            pipes.log.info(line)

    return on_event


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    started = time.perf_counter()
    summary: dict[str, Any] = {"config": str(args.config), "run_dir": str(args.run_dir)}
    code = EXIT_OK
    pipes = dagster_pipes()
    try:
        from cae_ray.config import load_config
        from cae_ray.errors import EXIT_GATE, CaeRayError, RunInterruptedError, exit_code

        try:
            config = load_config(args.config)
            if args.address:
                os.environ["RAY_ADDRESS"] = args.address
            summary["ray_address"] = (
                config.scaling.address or os.environ.get("RAY_ADDRESS") or "local"
            )
            from cae_ray.pipeline import run, stopping_on_signals

            with stopping_on_signals():  # a pod's SIGTERM: run.json says where it stopped
                result = run(config, args.run_dir, progress(args.verbose, pipes))
        except CaeRayError as error:
            code = exit_code(error)
            print(f"error: {error}", file=sys.stderr, flush=True)
            status = "gate_failed" if code == EXIT_GATE else "failed"
            if isinstance(error, RunInterruptedError):
                status = "interrupted"
            summary.update(status=status, error=type(error).__name__, message=str(error))
            summary["result"] = recorded_run(args.run_dir)
        else:
            summary.update(status="succeeded", result=result.as_json())
    except Exception as error:  # the job's log must still end with its summary
        traceback.print_exc()
        code = 1  # cae_ray.errors.EXIT_FAILURE (cae_ray itself may have failed to import)
        summary.update(status="error", error=type(error).__name__, message=str(error))
        summary["result"] = recorded_run(args.run_dir)
    if pipes is not None:
        pipes.close()  # its last message before the summary: that stays the last line
    summary["exit_code"] = code
    summary["seconds"] = round(time.perf_counter() - started, 3)
    print(json.dumps(summary, default=str), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
