"""Dagster adapter: cae-ray runs as Dagster jobs, on a weekly schedule.

Two jobs, one step each (the pipeline's steps live in ``cae_ray.pipeline.run``):

* ``cae_ray_pipeline``: the run happens inside the Dagster op's process. ``run`` joins the Ray
  cluster named by the config's ``scaling.address`` or ``RAY_ADDRESS`` (``ray://head:10001``),
  else starts a local one, so the same job works on a laptop and against a cluster.
* ``cae_ray_on_cluster``: the op submits ``pipelines/ray_job.py`` as a Ray Job to a cluster's
  job server (``ray_cluster.address``, ``http://head:8265``) with dagster-ray's
  ``PipesRayJobClient``, which waits for it, streams its log lines into the run's logs and
  stops it when the run is terminated; the driver runs on the cluster's head, so the Dagster
  process needs no GPU, only ``ray[default]``. What dagster-ray lacks is here: a timeout, one
  Ray job per attempt (waiting for the last one if it still runs), and the entry point's exit
  code (from its summary line) as the failure's ``exit_code``, ``gate_failed`` and retry.

And one asset, ``cae_ray_selection``: the same in-process run, materialized as the selection,
with a blocking asset check ``validation_gate`` that carries the gate's verdict (metric,
baseline, selected, difference, the allowed loss and the gate's sentence). A failed gate fails
the check, and so the step: assets downstream of the selection do not run.

Each run writes to ``<runs_root>/<run_name>``: a scheduled run's name is its date, so a retry of
that run resumes at the first unfinished step; a manual run's default name is its run id.
A failed validation gate fails the run (no retry: more attempts give the same answer).

    pip install -e ".[dagster]"
    CAE_RAY_CONFIG=configs/cluster-gpu.yaml CAE_RAY_RUNS=/mnt/shared/runs \\
        dagster dev -m pipelines.dagster_job                  # UI, schedules, launch a run
    dagster job execute -m pipelines.dagster_job -j cae_ray_pipeline
"""

# No `from __future__ import annotations`: Dagster reads the op signatures' annotations
# (the context type, resources, config) at definition time.
import shlex
import threading
from typing import Any

import dagster as dg
from dagster_ray import PipesRayJobClient
from dagster_ray.core.pipes import (
    PIPES_LAUNCHED_EXTRAS_RAY_ADDRESS_KEY,
    PIPES_LAUNCHED_EXTRAS_RAY_JOB_ID_KEY,
    EnrichedSubmitJobParams,
    SubmitJobParams,
)
from dagster_ray.types import OpOrAssetExecutionContext

from cae_ray.errors import EXIT_CLUSTER, EXIT_CONFIG, EXIT_GATE, EXIT_INPUT, exit_code
from cae_ray.records import Verdict  # at import: Dagster reads the annotations at run time
from cae_ray.storage import join

WEEKLY = "0 3 * * 1"  # Mondays 03:00 (execution_timezone below)


class CaeRay(dg.ConfigurableResource):
    """Which config a run uses and where its run directories go."""

    config_path: str = "configs/cluster-gpu.yaml"
    """The cae-ray YAML config (for ``cae_ray_on_cluster``: its path on the cluster)."""

    runs_root: str = "runs/dagster"
    """Run directories go under it; on a multi-node cluster, storage every node sees."""

    def run_dir(self, run_name: str) -> str:
        return join(self.runs_root, run_name)  # a path or a URI (s3://bucket/runs)


class RayCluster(dg.ConfigurableResource):
    """A long-lived Ray cluster's job server, for ``cae_ray_on_cluster``."""

    address: str = "http://127.0.0.1:8265"
    """The Ray dashboard / job server, e.g. ``http://cae-ray-head-svc:8265``."""

    app_dir: str = "/app"
    """Where the cluster's image keeps ``pipelines/`` (``/app`` in deploy/Dockerfile*)."""

    python: str = "python"
    """The cluster's Python, which runs ``pipelines/ray_job.py``."""

    timeout_s: float = 24 * 3600
    """Stop the Ray Job and fail the op after this long."""

    poll_interval_s: float = 5
    """Seconds between two looks at the job's status."""

    max_retries: int = 2
    """Retries of a failure that may pass (the job server away, workers lost); a failed gate,
    a bad config or bad input never retries."""

    retry_delay_s: float = 300
    """Seconds before the first retry; each next one waits twice as long."""


class RunSettings(dg.Config):
    run_name: str = ""
    """The run directory's name under ``runs_root``; empty: this Dagster run's id."""


def _run_name(context: dg.OpExecutionContext, config: RunSettings) -> str:
    return config.run_name or context.run_id


def _failure(error: BaseException, run_dir: str) -> dg.Failure:
    code = exit_code(error)
    return dg.Failure(
        description=f"{type(error).__name__}: {error}",
        metadata={"run_dir": run_dir, "exit_code": code, "gate_failed": code == EXIT_GATE},
        allow_retries=code == EXIT_CLUSTER,  # only a missing cluster may come back
    )


RETRY = dg.RetryPolicy(max_retries=2, delay=300, backoff=dg.Backoff.EXPONENTIAL)
"""For failures that may pass (a cluster or a node away); a Failure says whether it may retry."""


def _log_event(context: dg.OpExecutionContext, event: Any) -> None:
    """A step's start and end, and every tenth of the epochs, in the Dagster run's log."""
    if event.status == "progress":
        epoch = event.progress.get("epoch")
        if epoch is None or (int(epoch) + 1) % 10:
            return
        figures = event.progress
    else:
        figures = event.result.summary() if event.result is not None else {}
        figures |= {"reason": event.reason} if event.reason else {}
    details = {k: v for k, v in figures.items() if not isinstance(v, (list, dict))}
    context.log.info(f"cae-ray {event.step} {event.status} {details}")


def _run_here(context: dg.OpExecutionContext, cae_ray: CaeRay, run_dir: str) -> dict[str, Any]:
    """run.json of every step run in this process; a failure as a dg.Failure."""
    from cae_ray.config import load_config
    from cae_ray.errors import CaeRayError
    from cae_ray.pipeline import run

    context.log.info(f"cae-ray run: config {cae_ray.config_path}, run dir {run_dir}")
    try:
        config_ = load_config(cae_ray.config_path)
        record = run(config_, run_dir, on_event=lambda event: _log_event(context, event))
    except CaeRayError as e:
        raise _failure(e, run_dir) from e
    return record.as_json()


@dg.op(
    description="All cae-ray steps (export ... report) in this process, on Ray.",
    retry_policy=RETRY,
)
def cae_ray_run(
    context: dg.OpExecutionContext, cae_ray: CaeRay, config: RunSettings
) -> dict[str, Any]:
    run_dir = cae_ray.run_dir(_run_name(context, config))
    result = _run_here(context, cae_ray, run_dir)
    context.add_output_metadata({"run_dir": run_dir, "steps": result.get("steps", {})})
    return result


GATE = dg.AssetCheckSpec(
    "validation_gate",
    asset="cae_ray_selection",
    blocking=True,  # a failed gate fails the step: nothing downstream acts on the selection
    description="A model on the K selected features matches the all-features baseline.",
)


@dg.asset(
    description="The K features cae-ray selected (every step run in this process, on Ray); "
    "its check validation_gate carries the gate's verdict.",
    check_specs=[GATE],
    retry_policy=RETRY,
    group_name="cae_ray",
)
def cae_ray_selection(
    context: dg.AssetExecutionContext, cae_ray: CaeRay, config: RunSettings
) -> dg.MaterializeResult:
    from cae_ray.artifacts import RunDir
    from cae_ray.records import Selection

    run_dir = cae_ray.run_dir(_run_name(context.op_execution_context, config))
    try:
        _run_here(context.op_execution_context, cae_ray, run_dir)
    except dg.Failure as failure:
        # Selected, then refused by the gate: the check below says so. Anything else fails.
        if not failure.metadata["gate_failed"].value:
            raise
    where = RunDir(run_dir)
    selection, verdict = Selection.read(where), Verdict.read(where)
    selected = selection.selected_features if selection is not None else []
    return dg.MaterializeResult(
        metadata={
            "run_dir": run_dir,
            "k": len(selected),
            "selected_features": dg.MetadataValue.json(selected),
            "run_id": selection.selection_hash if selection is not None else "",
        },
        check_results=[_gate_result(verdict)],
    )


def _gate_result(verdict: Verdict | None) -> dg.AssetCheckResult:
    """The gate's verdict as the check's result, its figures as the check's metadata."""
    if verdict is None:
        return dg.AssetCheckResult(
            check_name=GATE.name,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description="no validation.json in the run dir",
        )
    return dg.AssetCheckResult(
        check_name=GATE.name,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=verdict.reason,
        metadata={
            "metric": verdict.metric,
            "baseline": verdict.baseline.value,
            "baseline_source": verdict.baseline.source,
            "selected": verdict.selected.value,
            "difference": verdict.difference,
            "allowed_loss": verdict.allowed_loss,
        },
    )


class _RayJobClient(PipesRayJobClient):
    """dagster-ray's client (submit, wait, stream the job's logs, stop the job when the Dagster
    run is terminated), which also waits for a job whose submission id is already on the
    cluster instead of submitting it again (the job server refuses an existing id): an op
    retry after this process lost the job server mid-wait finds its job still running."""

    def _start(
        self,
        context: OpOrAssetExecutionContext,
        session: dg.PipesSession,
        submit_job_params: EnrichedSubmitJobParams,
    ) -> str:
        job_id = submit_job_params["submission_id"]
        try:
            self.client.get_job_status(job_id)
        except RuntimeError:  # "Job ... does not exist": submit it
            return super()._start(context, session, submit_job_params)
        context.log.info(f"Ray job {job_id} is already on the cluster: waiting for it")
        address = self.client.get_address()
        session.report_launched(
            {
                "extras": {
                    PIPES_LAUNCHED_EXTRAS_RAY_JOB_ID_KEY: job_id,
                    PIPES_LAUNCHED_EXTRAS_RAY_ADDRESS_KEY: address,
                }
            }
        )
        return job_id


@dg.op(
    description="Submit pipelines/ray_job.py as a Ray Job to a cluster and wait for it "
    "(dagster-ray's PipesRayJobClient: the job's log lines stream into this run's logs)."
)
def cae_ray_ray_job(
    context: dg.OpExecutionContext,
    cae_ray: CaeRay,
    ray_cluster: RayCluster,
    config: RunSettings,
) -> dict[str, Any]:
    from pipelines.submit import attempt_id, last_summary

    name = _run_name(context, config)
    run_dir = cae_ray.run_dir(name)
    address = ray_cluster.address
    script = f"{ray_cluster.app_dir}/pipelines/ray_job.py"
    arguments = ["--config", cae_ray.config_path, "--run-dir", run_dir]
    entrypoint = shlex.join([ray_cluster.python, script, *arguments])
    pipes = _RayJobClient(address=address, poll_interval=ray_cluster.poll_interval_s)
    try:
        # This attempt's id: the last attempt's while it still runs, else a new one.
        submission_id = attempt_id(pipes.client, f"cae-ray-{name}-{context.run_id[:8]}")
    except (OSError, RuntimeError, ValueError) as e:
        failure = dg.Failure(
            description=f"cannot use the Ray job server at {address}: {e}",
            metadata={"run_dir": run_dir},
        )
        raise _retry_or(failure, context, ray_cluster) from e
    context.log.info(f"Ray job {submission_id} on {address}: {entrypoint}")
    job = {"entrypoint": entrypoint, "submission_id": submission_id}
    error, timed_out = _run_with_timeout(context, pipes, job, ray_cluster.timeout_s)
    try:
        status = str(pipes.client.get_job_status(submission_id).value)
        logs = str(pipes.client.get_job_logs(submission_id))
    except (OSError, RuntimeError, ValueError) as e:  # never submitted, or server away
        reason = error or e
        failure = dg.Failure(
            description=f"Ray job {submission_id} on {address}: {reason}",
            metadata={"run_dir": run_dir, "ray_job": submission_id},
        )
        raise _retry_or(failure, context, ray_cluster) from reason
    summary = last_summary(logs) or {}
    if status == "SUCCEEDED":
        context.add_output_metadata(
            {"run_dir": run_dir, "submission_id": submission_id, "summary": summary}
        )
        return summary
    why = _why_it_failed(status, summary, error, ray_cluster.timeout_s if timed_out else None)
    failure = _job_failure(job, f"{address} ended {status}: {why}", run_dir, logs, summary)
    raise _retry_or(failure, context, ray_cluster)


def _run_with_timeout(
    context: dg.OpExecutionContext, pipes: PipesRayJobClient, job: dict[str, str], timeout: float
) -> tuple[Exception | None, bool]:
    """dagster-ray submits (or finds) the job and waits for it; a timer stops the job after
    ``timeout`` seconds (dagster-ray keeps its own ``timeout`` but never waits on it). Returns
    the error the wait ended with, if any, and whether the timer fired."""
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        pipes.client.stop_job(job["submission_id"])

    timer = threading.Timer(timeout, stop)
    timer.daemon = True
    timer.start()
    try:
        params: SubmitJobParams = {
            "entrypoint": job["entrypoint"],
            "submission_id": job["submission_id"],
            "metadata": {"dagster_run_id": context.run_id},
        }
        pipes.run(context=context, submit_job_params=params)
        return None, timed_out.is_set()
    except (OSError, RuntimeError, ValueError) as e:  # FAILED / STOPPED, or no answer
        return e, timed_out.is_set()
    finally:
        timer.cancel()


def _why_it_failed(
    status: str, summary: dict[str, Any], error: Exception | None, timed_out_after: float | None
) -> str:
    """The reason a failed job gives: its entry point's summary, after the timeout if it fired
    or the lost wait if the job still runs."""
    from pipelines.submit import failure_reason

    why = failure_reason(summary or None)
    if timed_out_after is not None:
        return (
            f"it did not finish within {timed_out_after:.0f} s and was asked to stop "
            f"(its run dir keeps the finished steps: run again to resume); {why}"
        )
    if status not in ("FAILED", "STOPPED"):  # lost track of a job that still runs
        return f"waiting for it failed ({error}); {why}"
    return why


def _job_failure(
    job: dict[str, str], outcome: str, run_dir: str, logs: str, summary: dict[str, Any]
) -> dg.Failure:
    """The op's failure, with the entry point's exit code (from its summary line, the last of
    its logs) as ``exit_code``, ``gate_failed`` and whether a retry may pass."""
    code = summary.get("exit_code")
    code = code if isinstance(code, int) else None
    return dg.Failure(
        description=f"Ray job {job['submission_id']} on {outcome}",
        metadata={
            "run_dir": run_dir,
            "ray_job": job["submission_id"],
            "exit_code": -1 if code is None else code,
            "gate_failed": code == EXIT_GATE,
            "logs (tail)": dg.MetadataValue.text(logs[-4000:]),
        },
        allow_retries=code not in (EXIT_GATE, EXIT_CONFIG, EXIT_INPUT),
    )


def _retry_or(
    failure: dg.Failure, context: dg.OpExecutionContext, ray_cluster: RayCluster
) -> Exception:
    """A retry while ``ray_cluster.max_retries`` allows one and the failure may pass, else the
    failure itself: the last attempt fails with the real reason, not "retries exhausted"."""
    if not failure.allow_retries or context.retry_number >= ray_cluster.max_retries:
        return failure
    wait = ray_cluster.retry_delay_s * 2**context.retry_number
    context.log.warning(f"{failure.description}: retrying in {wait:.0f} s")
    return dg.RetryRequested(max_retries=ray_cluster.max_retries, seconds_to_wait=wait)


@dg.job(description="cae-ray: select, validate and prune features (driver in this process).")
def cae_ray_pipeline() -> None:
    cae_ray_run()


@dg.job(description="cae-ray as a Ray Job on a long-lived Ray cluster (driver on its head).")
def cae_ray_on_cluster() -> None:
    cae_ray_ray_job()


def _weekly(job: dg.JobDefinition, op_name: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{job.name}_weekly",
        cron_schedule=WEEKLY,
        job=job,
        execution_timezone="UTC",
        description="Every Monday 03:00 UTC; the run dir is named after the date.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        when = context.scheduled_execution_time
        name = f"scheduled-{when:%Y-%m-%d}" if when else "scheduled"
        return dg.RunRequest(
            run_key=name,
            run_config={"ops": {op_name: {"config": {"run_name": name}}}},
            tags={"cae-ray/run-name": name},
        )

    return _schedule


cae_ray_weekly = _weekly(cae_ray_pipeline, "cae_ray_run")
cae_ray_on_cluster_weekly = _weekly(cae_ray_on_cluster, "cae_ray_ray_job")

defs = dg.Definitions(
    assets=[cae_ray_selection],
    jobs=[cae_ray_pipeline, cae_ray_on_cluster],
    schedules=[cae_ray_weekly, cae_ray_on_cluster_weekly],
    # Read when a run starts, not when Dagster imports this file (dg.EnvVar: a missing
    # variable fails the run, naming it). Set the variables, or pass other resources.
    resources={
        "cae_ray": CaeRay(
            config_path=dg.EnvVar("CAE_RAY_CONFIG"), runs_root=dg.EnvVar("CAE_RAY_RUNS")
        ),
        "ray_cluster": RayCluster(address=dg.EnvVar("CAE_RAY_JOB_ADDRESS")),
    },
)
