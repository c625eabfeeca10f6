"""Submit a command to a Ray cluster as a Ray Job and wait for it to end.

How the Airflow DAG (and anyone from Python) talks to a cluster's job server (the Ray
dashboard, port 8265), through :class:`ray.job_submission.JobSubmissionClient`; the Dagster
adapter submits with dagster-ray's ``PipesRayJobClient`` and uses :func:`attempt_id`,
:func:`last_summary` and :func:`failure_reason` from here. That client, and the job server on
the cluster, need ``ray[default]`` (the cae-ray images install it)::

    from pipelines.submit import submit_and_wait

    outcome = submit_and_wait(
        "http://cae-ray-head-svc:8265",
        "python /app/pipelines/ray_job.py --config /app/configs/cluster-gpu.yaml "
        "--run-dir /mnt/shared/runs/2026-11-24",
        timeout=6 * 3600,
    )
    outcome.summary  # the JSON line ray_job.py printed: status, exit_code, result, ...
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

from cae_ray.errors import EXIT_CODES

logger = logging.getLogger("cae_ray.submit")

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


@dataclass(frozen=True)
class JobOutcome:
    """How a Ray Job ended."""

    submission_id: str
    status: str
    """SUCCEEDED, FAILED or STOPPED."""
    seconds: float
    logs: str
    summary: dict[str, Any] | None
    """The last JSON object line of the job's logs with an ``exit_code`` (what
    ``pipelines/ray_job.py`` prints), or None."""

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    @property
    def exit_code(self) -> int | None:
        """The entry point's exit code as its summary line reports it (5: gate failed)."""
        code = (self.summary or {}).get("exit_code")
        return code if isinstance(code, int) else None


class RayJobError(RuntimeError):
    """A Ray Job could not be submitted, failed, or took too long."""


class RayJobSubmitError(RayJobError):
    """The job server cannot be reached (wrong address, no ``ray[default]``) or refused it."""


def failure_reason(summary: dict[str, Any] | None) -> str:
    """Why a run failed, in one line, from ``pipelines/ray_job.py``'s summary: its exit code,
    what that code means and cae-ray's own message (a failed gate's says which metric fell
    short). Without a summary (the job died before printing one) it says so."""
    if summary is None:
        return "no cae-ray summary in the job's logs (it died before printing one)"
    code = summary.get("exit_code")
    meaning = EXIT_CODES.get(code, "an unknown exit code") if isinstance(code, int) else "?"
    message = summary.get("message") or summary.get("status") or ""
    return f"cae-ray exit code {code} ({meaning}): {message}"


class RayJobFailedError(RayJobError):
    """The job ended FAILED or STOPPED."""

    def __init__(self, outcome: JobOutcome) -> None:
        self.outcome = outcome
        tail = "\n".join(outcome.logs.rstrip().splitlines()[-20:])
        super().__init__(
            f"Ray job {outcome.submission_id} ended {outcome.status} after "
            f"{outcome.seconds:.0f} s: {failure_reason(outcome.summary)}\n"
            f"last lines of its logs:\n{tail}"
        )


class RayJobTimeoutError(RayJobError):
    """The job did not end within the timeout (it was asked to stop)."""


def last_summary(logs: str) -> dict[str, Any] | None:
    """The last line of ``logs`` that is a JSON object with an ``exit_code`` key."""
    for line in reversed(logs.splitlines()):
        line = line.strip()
        if not (line.startswith("{") and line.endswith("}")):
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict) and "exit_code" in parsed:
            return parsed
    return None


def connect_client(address: str) -> Any:
    """A :class:`JobSubmissionClient` for ``address`` (``http://head:8265``), or a clear error."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as e:  # pragma: no cover - ray is a dependency of cae-ray
        raise RayJobSubmitError(f"ray is not installed here ({e})") from e
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        hint = (
            " Install ray[default] where this runs (the jobs SDK needs it)."
            if "default" in str(e)
            else " Check the address: the job server is the dashboard, port 8265."
        )
        raise RayJobSubmitError(f"cannot use the Ray job server at {address}: {e}.{hint}") from e


AGENT_WAIT_S = 60.0
"""How long a submission waits for a just-started cluster's job agent ("No available agent")."""


def _agent_starting(error: BaseException) -> bool:
    return "No available agent" in str(error)


def _submit(client: Any, address: str, **job: Any) -> str:
    """``client.submit_job``, retried while the cluster's job agent is still starting: a head
    pod that just came up answers "No available agent to submit job" for a while."""
    retrying = Retrying(
        retry=retry_if_exception(_agent_starting),
        wait=wait_fixed(2.0),
        stop=stop_after_delay(AGENT_WAIT_S),
        reraise=True,
    )
    try:
        return str(retrying(client.submit_job, **job))
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayJobSubmitError(f"the job server at {address} refused the job: {e}") from e


def _wait_until_ended(client: Any, job_id: str, timeout: float, poll_interval: float) -> str:
    """The job's final status, polled every ``poll_interval`` s; after ``timeout`` s the job is
    asked to stop and :class:`RayJobTimeoutError` raised."""
    polling = Retrying(
        retry=retry_if_result(lambda status: status not in TERMINAL),
        wait=wait_fixed(poll_interval),
        stop=stop_after_delay(timeout),
    )
    try:
        return str(polling(_status, client, job_id))
    except RetryError as e:
        client.stop_job(job_id)
        raise RayJobTimeoutError(
            f"Ray job {job_id} did not finish within {timeout:.0f} s (last status "
            f"{e.last_attempt.result()}); it was asked to stop. Its run dir keeps the finished "
            "steps: submit it again to resume."
        ) from None


def submit_and_wait(
    address: str,
    entrypoint: str,
    runtime_env: dict[str, Any] | None = None,
    timeout: float = 24 * 3600,
    *,
    submission_id: str | None = None,
    metadata: dict[str, str] | None = None,
    entrypoint_num_cpus: float | None = None,
    entrypoint_num_gpus: float | None = None,
    poll_interval: float = 5.0,
    raise_on_failure: bool = True,
) -> JobOutcome:
    """Submit ``entrypoint`` as a Ray Job on the cluster at ``address`` and wait until it ends.

    With a ``submission_id`` that already exists on the cluster (an orchestrator retrying), it
    waits for that job instead of submitting a second one. On timeout the job is stopped and
    :class:`RayJobTimeoutError` raised; a FAILED or STOPPED job raises
    :class:`RayJobFailedError` (carrying the outcome) unless ``raise_on_failure`` is False.
    """
    client = connect_client(address)
    started = time.monotonic()
    job_id = _existing(client, submission_id) if submission_id else None
    if job_id is None:
        job_id = _submit(
            client,
            address,
            entrypoint=entrypoint,
            runtime_env=runtime_env,
            submission_id=submission_id,
            metadata=metadata,
            entrypoint_num_cpus=entrypoint_num_cpus,
            entrypoint_num_gpus=entrypoint_num_gpus,
        )
        logger.info("submitted Ray job %s to %s: %s", job_id, address, entrypoint)
    else:
        logger.info("Ray job %s already exists on %s; waiting for it", job_id, address)
    assert job_id is not None
    left = timeout - (time.monotonic() - started)
    status = _wait_until_ended(client, job_id, left, poll_interval)
    logs = client.get_job_logs(job_id)
    outcome = JobOutcome(job_id, status, time.monotonic() - started, logs, last_summary(logs))
    logger.info("Ray job %s ended %s after %.0f s", job_id, status, outcome.seconds)
    if raise_on_failure and not outcome.succeeded:
        raise RayJobFailedError(outcome)
    return outcome


ACTIVE = frozenset({"PENDING", "RUNNING"})


def attempt_id(client: Any, run_id: str) -> str:
    """The submission id for the next attempt at run ``run_id`` on this cluster: the attempt
    still PENDING or RUNNING if there is one (a retried or cleared orchestrator task waits for
    it, rather than a second job writing the same run dir), else a new one: ``run_id``, then
    ``run_id-2``, ``run_id-3``... A finished attempt's id is never submitted again: the job
    server refuses an existing id (HTTP 409) and does not support re-using a deleted one."""
    attempts = {
        str(job.submission_id): str(getattr(job.status, "value", job.status))
        for job in client.list_jobs()
        if job.submission_id == run_id or str(job.submission_id).startswith(f"{run_id}-")
    }
    for submission_id, status in attempts.items():
        if status in ACTIVE:
            return submission_id
    number = 1
    while (f"{run_id}-{number}" if number > 1 else run_id) in attempts:
        number += 1
    return f"{run_id}-{number}" if number > 1 else run_id


def _status(client: Any, job_id: str) -> str:
    return str(client.get_job_status(job_id).value)


def _existing(client: Any, submission_id: str) -> str | None:
    try:
        client.get_job_status(submission_id)
    except RuntimeError:  # "Job ... does not exist": the server answers 404
        return None
    return submission_id
