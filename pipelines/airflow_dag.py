"""Airflow adapter: weekly cae-ray runs, two ways (Airflow 3; ``pip install 'cae-ray[airflow]'``).

* ``cae_ray_rayjob`` (needs ``apache-airflow-providers-cncf-kubernetes`` and a Kubernetes
  connection): creates a KubeRay RayJob from ``deploy/rayjob.yaml`` per run, named after the
  run's logical date, waits for it and fails the task unless the Ray job SUCCEEDED. The Ray
  cluster lives only as long as the run; nothing but kubernetes' client is needed in Airflow.
* ``cae_ray_raycluster`` (needs ``ray[default]`` on the Airflow workers): submits
  ``pipelines/ray_job.py`` as a Ray Job to a long-lived Ray cluster's job server
  (``deploy/raycluster.yaml``) through ``pipelines/submit.py`` and waits for it.

Point the DAGs folder at this directory, or copy this file and ``submit.py`` into yours.
Both DAGs are built unless ``CAE_RAY_AIRFLOW_DAGS`` names the ones to build
(``CAE_RAY_AIRFLOW_DAGS=cae_ray_raycluster``): a DAG whose provider is missing fails the
file's import with an ImportError that names the package, rather than vanishing.

Both use the run directory ``<CAE_RAY_RUNS>/cae-ray-run-<logical date>``. A cleared task
re-runs without a conflict (HTTP 409) on the RayJob or Ray job of that name: a job still
running is adopted, a finished one is followed by a new attempt, which resumes the run dir at
its first unfinished step. A failed run fails the task with cae-ray's own reason (exit code,
what it means, the message: a failed validation gate's says which metric fell short), read
from the last JSON line ``pipelines/ray_job.py`` prints; only exit code 4 (cluster trouble,
lost workers) lets Airflow retry.

Settings (environment of the Airflow scheduler, DAG processor and workers):
CAE_RAY_AIRFLOW_DAGS (all), CAE_RAY_RAYJOB_MANIFEST (deploy/rayjob.yaml next to this
repository's pipelines/), CAE_RAY_NAMESPACE (default), CAE_RAY_JOB_ADDRESS
(http://cae-ray-head-svc:8265), CAE_RAY_APP_DIR (/app), CAE_RAY_CONFIG
(/app/configs/cluster-gpu.yaml), CAE_RAY_RUNS (/mnt/shared/runs), CAE_RAY_PYTHON (python: the
interpreter the Ray job runs on the cluster).
"""

from __future__ import annotations

import importlib
import logging
import os
import shlex
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

from cae_ray.errors import EXIT_CLUSTER

logger = logging.getLogger("cae_ray.airflow")

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
PYTHON = os.environ.get("CAE_RAY_PYTHON", "python")

# Each DAG: the module it cannot be built without, and the package that brings it.
PROVIDERS: dict[str, tuple[str, str]] = {
    "cae_ray_rayjob": (
        "airflow.providers.cncf.kubernetes.hooks.kubernetes",
        "apache-airflow-providers-cncf-kubernetes",
    ),
    # The jobs SDK refuses to start without requests, which ray[default] brings.
    "cae_ray_raycluster": ("requests", "ray[default]"),
}

DEFAULT_ARGS: dict[str, Any] = {"owner": "cae-ray", "retries": 0}
DAG_SETTINGS: dict[str, Any] = {
    "schedule": SCHEDULE,
    "start_date": START,
    "catchup": False,
    "max_active_runs": 1,  # one run at a time: a run resumes in its own run dir
    "default_args": DEFAULT_ARGS,
    "tags": ["cae-ray", "ray", "feast"],
}


def selected_dags(setting: str | None = None) -> list[str]:
    """The DAG ids ``CAE_RAY_AIRFLOW_DAGS`` names (comma-separated; unset or ``all``: both)."""
    setting = os.environ.get("CAE_RAY_AIRFLOW_DAGS", "all") if setting is None else setting
    names = [name.strip() for name in setting.split(",") if name.strip()]
    if names in ([], ["all"]):
        return list(PROVIDERS)
    unknown = sorted(set(names) - set(PROVIDERS))
    if unknown:
        raise ValueError(
            f"CAE_RAY_AIRFLOW_DAGS names no such DAG: {', '.join(unknown)} "
            f"(choose from {', '.join(PROVIDERS)}, or all)"
        )
    return names


def require_provider(dag_id: str) -> None:
    """Fail the DAG file's import, naming the package to install, when ``dag_id`` cannot be
    built here: Airflow then lists an import error for the file instead of a DAG vanishing."""
    module, package = PROVIDERS[dag_id]
    try:
        importlib.import_module(module)
    except ImportError as error:
        others = [name for name in PROVIDERS if name != dag_id]
        raise ImportError(
            f"DAG {dag_id} needs {package}, which is not installed here ({error}). Install it "
            f"on the scheduler, DAG processor and workers: pip install '{package}' (or "
            f"pip install 'cae-ray[airflow]'), or build only the other DAGs: "
            f"CAE_RAY_AIRFLOW_DAGS={','.join(others)}"
        ) from error


def submit_module() -> Any:
    """``pipelines/submit.py``: the package in a checkout, the sibling file in a DAGs folder
    that holds copies of both (Airflow puts the DAGs folder on sys.path)."""
    try:
        return importlib.import_module("pipelines.submit")
    except ImportError:
        return importlib.import_module("submit")


def airflow_exception(name: str) -> type[Exception]:
    """``airflow.sdk.exceptions.NAME`` (Airflow 3.2 on), else ``airflow.exceptions.NAME``
    (3.1; deprecated there since)."""
    for module in ("airflow.sdk.exceptions", "airflow.exceptions"):
        found = getattr(importlib.import_module(module), name, None)
        if isinstance(found, type) and issubclass(found, Exception):
            return found
    raise ImportError(f"no {name} in this Airflow")


def fail(message: str, summary: dict[str, Any] | None) -> Exception:
    """The exception that fails a task: retryable (AirflowException) for exit code 4 (the
    cluster away, lost workers: another attempt resumes and may pass), final otherwise (a bad
    config or a failed gate fails the same way every time)."""
    retryable = (summary or {}).get("exit_code") == EXIT_CLUSTER
    return airflow_exception("AirflowException" if retryable else "AirflowFailException")(message)


# --- cae_ray_rayjob ----------------------------------------------------------------------------

RAYJOB_API: dict[str, str] = {"group": "ray.io", "version": "v1", "plural": "rayjobs"}
FINISHED = frozenset({"Complete", "Failed", "ValidationFailed"})
"""jobDeploymentStatus values after which KubeRay does nothing more with a RayJob."""
DELETE_WAIT_S = 600.0


def rayjob_manifest(run_name: str = RUN_NAME) -> str:
    """``deploy/rayjob.yaml`` with its token replaced by ``run_name``."""
    return MANIFEST.read_text().replace(TOKEN, run_name)


def rayjob_action(existing: dict[str, Any] | None) -> str:
    """What a (re-)run does about the RayJob of its name: ``create`` one; ``adopt`` the one
    still under way (a cleared task waits for it, not for a second run on the same run dir);
    or ``recreate`` a finished one (KubeRay never runs a RayJob twice; creating the name again
    answers 409 until it is deleted; the new one resumes the run dir)."""
    if existing is None:
        return "create"
    deployment = (existing.get("status") or {}).get("jobDeploymentStatus")
    return "recreate" if deployment in FINISHED else "adopt"


def rayjob_failure(name: str, status: dict[str, Any], logs: str) -> tuple[str, dict | None]:
    """The failure message of a RayJob that did not succeed (cae-ray's reason from the summary
    line in its submitter's ``logs``, else KubeRay's own), and that summary."""
    submit = submit_module()
    summary = submit.last_summary(logs)
    kuberay = f"{status.get('reason', '')} {status.get('message', '')}".strip()
    reason = submit.failure_reason(summary) if summary else kuberay or submit.failure_reason(None)
    where = f"run dir {summary['run_dir']}; " if summary and summary.get("run_dir") else ""
    return (
        f"RayJob {name} ended {status.get('jobDeploymentStatus')} with Ray job status "
        f"{status.get('jobStatus')}: {reason} ({where}kubectl logs job/{name})",
        summary,
    )


def get_rayjob(hook: Any, name: str) -> dict[str, Any] | None:
    """The RayJob ``name``, or None when there is none (404)."""
    from kubernetes.client.exceptions import ApiException

    try:
        return dict(hook.get_custom_object(**RAYJOB_API, name=name, namespace=NAMESPACE))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def delete_rayjob(hook: Any, name: str) -> None:
    """Delete a finished RayJob and wait until it is gone (Foreground: its Ray cluster and
    submitter Job go first), so that creating the name again does not answer 409."""
    hook.delete_custom_object(
        **RAYJOB_API, name=name, namespace=NAMESPACE, propagation_policy="Foreground"
    )
    deadline = time.monotonic() + DELETE_WAIT_S
    while get_rayjob(hook, name) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"RayJob {name} was still being deleted after {DELETE_WAIT_S} s")
        time.sleep(5)


def submitter_logs(hook: Any, name: str) -> str:
    """The last lines of the RayJob's submitter pod (K8sJobMode: a Job named after the RayJob,
    running ``ray job submit``, which tails the entrypoint's output), or "" if unreadable."""
    try:
        pods = hook.core_v1_client.list_namespaced_pod(
            NAMESPACE, label_selector=f"batch.kubernetes.io/job-name={name}"
        ).items
        if not pods:
            return ""
        newest = max(pods, key=lambda pod: pod.metadata.creation_timestamp)
        return str(
            hook.core_v1_client.read_namespaced_pod_log(
                newest.metadata.name, NAMESPACE, tail_lines=500
            )
        )
    except Exception as error:  # the reason is a bonus: never hide the failure behind it
        logger.warning("could not read the logs of RayJob %s's submitter: %s", name, error)
        return ""


def rayjob_dag() -> Any:
    """The ``cae_ray_rayjob`` DAG."""
    require_provider("cae_ray_rayjob")

    with DAG(
        dag_id="cae_ray_rayjob",
        description="cae-ray: a KubeRay RayJob per run (export, select, validate, prune, report)",
        **DAG_SETTINGS,
    ) as dag:

        @task
        def create_rayjob(name: str) -> str:
            """Create the run's RayJob, adopt it if it is under way, recreate it if finished."""
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

            hook = KubernetesHook()
            action = rayjob_action(get_rayjob(hook, name))
            logger.info("RayJob %s: %s", name, action)
            if action == "adopt":
                return name
            if action == "recreate":
                delete_rayjob(hook, name)
            hook.create_custom_object(**RAYJOB_API, body=rayjob_manifest(name), namespace=NAMESPACE)
            return name

        @task.sensor(poke_interval=60, timeout=26 * 3600, mode="reschedule")
        def wait_for_rayjob(name: str) -> Any:
            """Done when the RayJob's deployment is Complete or Failed; fails unless the Ray job
            SUCCEEDED, with cae-ray's reason."""
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
            from airflow.sdk import PokeReturnValue

            hook = KubernetesHook()
            rayjob = get_rayjob(hook, name)
            if rayjob is None:
                raise fail(f"RayJob {name} does not exist (deleted?)", None)
            status = rayjob.get("status") or {}
            if status.get("jobDeploymentStatus") == "ValidationFailed":  # it will never run
                message, _ = rayjob_failure(name, status, "")
                raise fail(f"KubeRay refused the RayJob: {message}", None)
            if status.get("jobDeploymentStatus") not in FINISHED:
                return PokeReturnValue(is_done=False)
            if status.get("jobStatus") != "SUCCEEDED":
                raise fail(*rayjob_failure(name, status, submitter_logs(hook, name)))
            return PokeReturnValue(is_done=True, xcom_value=status)

        create_rayjob(RUN_NAME) >> wait_for_rayjob(RUN_NAME)
    return dag


# --- cae_ray_raycluster ------------------------------------------------------------------------


def ray_job_entrypoint(run_name: str = RUN_NAME) -> str:
    """The Ray job's command line (``pipelines/ray_job.py`` on the cluster's image)."""
    script = f"{APP_DIR}/pipelines/ray_job.py"
    return shlex.join([PYTHON, script, "--config", CONFIG, "--run-dir", f"{RUNS}/{run_name}"])


def run_on_ray_cluster(run_name: str, address: str = JOB_ADDRESS) -> dict[str, Any]:
    """Submit the run's next attempt (or adopt the one still running) to the job server at
    ``address`` and wait; the entry point's summary on success, a task failure naming cae-ray's
    reason otherwise."""
    submit = submit_module()
    client = submit.connect_client(address)
    submission_id = submit.attempt_id(client, run_name)
    try:
        outcome = submit.submit_and_wait(
            address,
            ray_job_entrypoint(run_name),
            submission_id=submission_id,
            metadata={"cae_ray_run": run_name},
            timeout=24 * 3600,
        )
    except submit.RayJobFailedError as error:
        # The exception's message ends with the logs' last lines; they are in the task's log.
        logger.error("%s", error)
        summary = error.outcome.summary
        raise fail(
            f"Ray job {submission_id} ended {error.outcome.status}: "
            f"{submit.failure_reason(summary)} (run dir {RUNS}/{run_name})",
            summary,
        ) from None
    return dict(outcome.summary or {"status": outcome.status})


def raycluster_dag() -> Any:
    """The ``cae_ray_raycluster`` DAG."""
    require_provider("cae_ray_raycluster")

    with DAG(
        dag_id="cae_ray_raycluster",
        description="cae-ray: pipelines/ray_job.py as a Ray Job on a long-lived Ray cluster",
        **DAG_SETTINGS,
    ) as dag:
        task(task_id="run_ray_job", execution_timeout=timedelta(hours=25))(run_on_ray_cluster)(
            RUN_NAME
        )
    return dag


# Airflow collects the DAG objects found at module level.
BUILDERS = {"cae_ray_rayjob": rayjob_dag, "cae_ray_raycluster": raycluster_dag}
for _dag_id in selected_dags():
    globals()[_dag_id] = BUILDERS[_dag_id]()
