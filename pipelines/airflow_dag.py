"""Airflow adapter: weekly cae-ray runs, two ways (copy this file into your DAGs folder).

* ``cae_ray_rayjob`` (needs ``apache-airflow-providers-cncf-kubernetes`` and a Kubernetes
  connection): creates a KubeRay RayJob from ``deploy/rayjob.yaml`` per run, named after the
  run's logical date, waits for it and fails the task unless the Ray job SUCCEEDED. The Ray
  cluster lives only as long as the run; nothing but kubernetes' client is needed in Airflow.
* ``cae_ray_raycluster`` (needs ``apache-airflow-providers-google`` and ``ray[default]`` on the
  Airflow workers): submits ``pipelines/ray_job.py`` with ``RaySubmitJobOperator`` to a
  long-lived Ray cluster (``deploy/raycluster.yaml``) and then checks the job's status: that
  operator waits for the job but does not fail when the job failed.

Both use the run directory ``/mnt/shared/runs/cae-ray-run-<logical date>``: a cleared and re-run
task resumes that run at its first unfinished step. A failed validation gate fails the run.

Settings (environment of the Airflow scheduler and workers): CAE_RAY_RAYJOB_MANIFEST (default:
deploy/rayjob.yaml next to this repository's pipelines/), CAE_RAY_NAMESPACE (default),
CAE_RAY_JOB_ADDRESS (http://cae-ray-head-svc:8265), CAE_RAY_APP_DIR (/app),
CAE_RAY_CONFIG (/app/configs/cluster-gpu.yaml), CAE_RAY_RUNS (/mnt/shared/runs).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import task

SCHEDULE = "0 3 * * 1"  # Mondays 03:00 UTC
START = datetime(2026, 1, 5)
TOKEN = "cae-ray-run-manual"  # names the RayJob and its run dir in deploy/rayjob.yaml
RUN_NAME = "cae-ray-run-{{ ts_nodash | lower }}"  # e.g. cae-ray-run-20261123t030000

MANIFEST = Path(
    os.environ.get(
        "CAE_RAY_RAYJOB_MANIFEST", Path(__file__).resolve().parent.parent / "deploy/rayjob.yaml"
    )
)
NAMESPACE = os.environ.get("CAE_RAY_NAMESPACE", "default")
JOB_ADDRESS = os.environ.get("CAE_RAY_JOB_ADDRESS", "http://cae-ray-head-svc:8265")
APP_DIR = os.environ.get("CAE_RAY_APP_DIR", "/app")
CONFIG = os.environ.get("CAE_RAY_CONFIG", f"{APP_DIR}/configs/cluster-gpu.yaml")
RUNS = os.environ.get("CAE_RAY_RUNS", "/mnt/shared/runs")

DEFAULT_ARGS: dict[str, Any] = {"owner": "cae-ray", "retries": 0}
DAG_SETTINGS: dict[str, Any] = {
    "schedule": SCHEDULE,
    "start_date": START,
    "catchup": False,
    "max_active_runs": 1,  # one run at a time: a run resumes in its own run dir
    "default_args": DEFAULT_ARGS,
    "tags": ["cae-ray", "ray", "feast"],
}


def rayjob_manifest(run_name: str = RUN_NAME) -> str:
    """``deploy/rayjob.yaml`` with its token replaced by ``run_name`` (a Jinja template here,
    rendered by Airflow since ``yaml_conf`` is a templated field)."""
    return MANIFEST.read_text().replace(TOKEN, run_name)


def ray_job_entrypoint(run_name: str = RUN_NAME) -> str:
    return f"python {APP_DIR}/pipelines/ray_job.py --config {CONFIG} --run-dir {RUNS}/{run_name}"


def rayjob_dag() -> Any:
    """The ``cae_ray_rayjob`` DAG, or None without the cncf-kubernetes provider."""
    try:
        from airflow.providers.cncf.kubernetes.operators.resource import (
            KubernetesCreateResourceOperator,
        )
    except ImportError:
        return None

    with DAG(
        dag_id="cae_ray_rayjob",
        description="cae-ray: a KubeRay RayJob per run (export, select, validate, prune, report)",
        **DAG_SETTINGS,
    ) as dag:
        create = KubernetesCreateResourceOperator(
            task_id="create_rayjob",
            yaml_conf=rayjob_manifest(),
            custom_resource_definition=True,
            namespace=NAMESPACE,
        )

        @task.sensor(poke_interval=60, timeout=26 * 3600, mode="reschedule")
        def wait_for_rayjob(name: str) -> Any:
            """Done when the RayJob's deployment is Complete or Failed; fails unless the Ray job
            SUCCEEDED."""
            from airflow.exceptions import AirflowFailException
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

            try:
                from airflow.sdk import PokeReturnValue
            except ImportError:
                from airflow.sensors.base import PokeReturnValue

            rayjob = KubernetesHook().get_custom_object(
                group="ray.io", version="v1", plural="rayjobs", name=name, namespace=NAMESPACE
            )
            status = rayjob.get("status") or {}
            if status.get("jobDeploymentStatus") == "ValidationFailed":  # it will never run
                raise AirflowFailException(
                    f"KubeRay refused RayJob {name}: {status.get('reason', '')} "
                    f"{status.get('message', '')}"
                )
            if status.get("jobDeploymentStatus") not in ("Complete", "Failed"):
                return PokeReturnValue(is_done=False)
            if status.get("jobStatus") != "SUCCEEDED":
                raise AirflowFailException(
                    f"RayJob {name} ended {status.get('jobDeploymentStatus')} with Ray job "
                    f"status {status.get('jobStatus')}: {status.get('message', '')} (exit code 5 "
                    f"in its logs: the validation gate failed; see {RUNS}/{name}/report)"
                )
            return PokeReturnValue(is_done=True, xcom_value=status)

        create >> wait_for_rayjob(RUN_NAME)
    return dag


def raycluster_dag() -> Any:
    """The ``cae_ray_raycluster`` DAG, or None without the Google provider."""
    try:
        from airflow.providers.google.cloud.operators.ray import (
            RayGetJobInfoOperator,
            RaySubmitJobOperator,
        )
    except ImportError:
        return None

    with DAG(
        dag_id="cae_ray_raycluster",
        description="cae-ray: pipelines/ray_job.py as a Ray Job on a long-lived Ray cluster",
        **DAG_SETTINGS,
    ) as dag:
        submit = RaySubmitJobOperator(
            task_id="submit_ray_job",
            cluster_address=JOB_ADDRESS,
            entrypoint=ray_job_entrypoint(),
            wait_for_job_done=True,
            get_job_logs=True,
            submit_job_timeout=24 * 3600,
            execution_timeout=timedelta(hours=25),
        )
        info = RayGetJobInfoOperator(
            task_id="ray_job_info",
            cluster_address=JOB_ADDRESS,
            job_id="{{ ti.xcom_pull(task_ids='submit_ray_job') }}",
        )

        @task
        def check_ray_job(job: dict[str, Any]) -> None:
            """Fail the run unless the Ray job SUCCEEDED (the submit operator does not check)."""
            from airflow.exceptions import AirflowFailException

            status = job.get("status")
            status = str(getattr(status, "value", status)).rsplit(".", 1)[-1]
            if status != "SUCCEEDED":
                raise AirflowFailException(
                    f"Ray job {job.get('submission_id')} ended {status}: "
                    f"{job.get('message', '')} (exit code 5: the validation gate failed)"
                )

        submit >> info
        check_ray_job(info.output)
    return dag


# Airflow collects the DAG objects found at module level.
cae_ray_rayjob = rayjob_dag()
cae_ray_raycluster = raycluster_dag()
