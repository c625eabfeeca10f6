"""pipelines/airflow_dag.py with real Airflow (the ``airflow`` extra).

``airflow dags test cae_ray_raycluster`` runs a tiny cae-ray config as a Ray Job on a real
local job server: first a run that passes, then the same logical date again (a cleared task)
with a validation gate that cannot pass, which must start a new attempt (no HTTP 409 on the
existing submission id), resume the run dir, and fail the task with the gate's own reason.
There is no Kubernetes API here, so for ``cae_ray_rayjob`` the tests run the parts that need
none on real inputs: what a re-run does about an existing RayJob, and the failure message made
from a real failed run's logs. A missing provider must fail the file's import, naming it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import RAY_TEST_ENV, ROOT
from tests.test_pipelines import write_config

AIRFLOW_DAG = ROOT / "pipelines" / "airflow_dag.py"
LOGICAL_DATE = "2026-11-23"
RUN = "cae-ray-run-20261123t000000"  # RUN_NAME rendered for LOGICAL_DATE
NO_AIRFLOW = "apache-airflow is not installed: pip install -e '.[airflow]' (make install does)"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("airflow") is None, reason=NO_AIRFLOW)


def load_dag_file(name: str = "cae_ray_airflow_dag_under_test") -> ModuleType:
    """The DAG file imported afresh, as Airflow's DAG processor imports it."""
    spec = importlib.util.spec_from_file_location(name, AIRFLOW_DAG)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dag_module() -> ModuleType:
    return load_dag_file()


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory, job_server, tiny_table) -> dict[str, str]:
    """The environment of ``airflow`` commands: a home (SQLite db, logs, airflow.cfg) in a temp
    dir, migrated; the DAGs folder is pipelines/; the DAG's settings point at the job server,
    this checkout, the tiny config and a temp runs root."""
    base = tmp_path_factory.mktemp("airflow")
    env = {**os.environ, **RAY_TEST_ENV}
    env.pop("RAY_ADDRESS", None)
    env.pop("CAE_RAY_AIRFLOW_DAGS", None)
    env.update(
        AIRFLOW_HOME=str(base / "home"),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "pipelines"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONPATH=str(ROOT),
        CAE_RAY_JOB_ADDRESS=job_server,
        CAE_RAY_APP_DIR=str(ROOT),
        CAE_RAY_PYTHON=sys.executable,  # the job server's environment is this one
        CAE_RAY_CONFIG=str(write_config(base / "tiny.yaml", tiny_table)),
        CAE_RAY_RUNS=str(base / "runs"),
    )
    done = airflow("db", "migrate", env=env, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    return env


def airflow(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """The ``airflow`` command of this venv, output (stdout and stderr) in ``stdout``."""
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    return subprocess.run(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
        cwd=env["AIRFLOW_HOME"].rsplit("/", 1)[0],
    )


@pytest.fixture(scope="module")
def passed_run(airflow_env) -> subprocess.CompletedProcess[str]:
    return airflow("dags", "test", "cae_ray_raycluster", LOGICAL_DATE, env=airflow_env, timeout=300)


@pytest.fixture(scope="module")
def failed_rerun(passed_run, airflow_env, tiny_table, tmp_path_factory):
    """The same logical date again, as a cleared task does, with a gate that cannot pass."""
    gate = tmp_path_factory.mktemp("gate") / "gate.yaml"
    config = write_config(gate, tiny_table, baseline=1.0, tolerance=0)
    env = {**airflow_env, "CAE_RAY_CONFIG": str(config)}
    return airflow("dags", "test", "cae_ray_raycluster", LOGICAL_DATE, env=env, timeout=300)


@pytest.mark.ray
def test_dags_test_runs_cae_ray_on_a_ray_cluster(passed_run, airflow_env) -> None:
    assert passed_run.returncode == 0, passed_run.stdout[-5000:]
    assert "state=success" in passed_run.stdout
    record = Path(airflow_env["CAE_RAY_RUNS"]) / RUN / "run.json"
    assert '"status": "succeeded"' in record.read_text()


@pytest.mark.ray
def test_a_rerun_resumes_as_a_new_attempt_and_fails_with_the_gates_reason(
    failed_rerun, airflow_env, job_server
) -> None:
    from ray.job_submission import JobSubmissionClient

    output = failed_rerun.stdout
    assert failed_rerun.returncode != 0 and "DagRun failed" in output, output[-5000:]
    # No conflict on the existing submission id (a bare "409" also matches log timestamps).
    assert not re.search(r"\b409\b|already exists", output), output[-5000:]
    # The task's failure carries cae-ray's reason, not a bare "ended FAILED".
    assert "AirflowFailException" in output
    assert f"Ray job {RUN}-2 ended FAILED: cae-ray exit code 5 (the validation gate failed)" in (
        output
    )
    assert "the validation gate failed (" in output and "nothing was pruned" in output
    jobs = {
        job.submission_id: str(job.status.value)
        for job in JobSubmissionClient(job_server).list_jobs()
    }
    assert jobs[RUN] == "SUCCEEDED" and jobs[f"{RUN}-2"] == "FAILED"
    logs = JobSubmissionClient(job_server).get_job_logs(f"{RUN}-2")
    assert "[cae-ray] select: reused" in logs  # the run dir was resumed, not started over


@pytest.mark.ray
def test_attempt_ids_adopt_a_running_attempt(failed_rerun, job_server) -> None:
    from ray.job_submission import JobSubmissionClient

    from pipelines.submit import attempt_id

    client = JobSubmissionClient(job_server)
    assert attempt_id(client, RUN) == f"{RUN}-3"  # both earlier attempts finished
    running = client.submit_job(entrypoint="sleep 60", submission_id=f"{RUN}-3")
    try:
        assert attempt_id(client, RUN) == running  # a cleared task waits for it
    finally:
        client.stop_job(running)
    assert attempt_id(client, "another-run") == "another-run"


@pytest.mark.ray
def test_rayjob_failure_message_from_a_real_failed_run(failed_rerun, job_server, dag_module):
    """KubeRay's submitter pod tails the entrypoint's output: the same logs as the job's."""
    from ray.job_submission import JobSubmissionClient

    fail_at_once = dag_module.airflow_exception("AirflowFailException")

    logs = JobSubmissionClient(job_server).get_job_logs(f"{RUN}-2")
    status = {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "message": "Job failed"}
    message, summary = dag_module.rayjob_failure(RUN, status, logs)
    assert message.startswith(f"RayJob {RUN} ended Failed with Ray job status FAILED: ")
    assert "cae-ray exit code 5 (the validation gate failed): the validation gate failed (" in (
        message
    )
    assert f"run dir {summary['run_dir']}" in message and f"kubectl logs job/{RUN}" in message
    assert type(dag_module.fail(message, summary)) is fail_at_once  # no retry
    # Without a summary (the submitter's logs gone), KubeRay's own reason.
    message, _ = dag_module.rayjob_failure(RUN, {**status, "reason": "DeadlineExceeded"}, "")
    assert "DeadlineExceeded Job failed" in message
    # Lost workers (exit 4) may pass on another attempt: Airflow may retry those.
    retry = dag_module.fail("lost", {"exit_code": 4})
    assert isinstance(retry, dag_module.airflow_exception("AirflowException"))
    assert not isinstance(retry, fail_at_once)


def test_rayjob_rerun_decisions(dag_module) -> None:
    def rayjob(deployment: str) -> dict[str, Any]:
        return {"metadata": {"name": RUN}, "status": {"jobDeploymentStatus": deployment}}

    assert dag_module.rayjob_action(None) == "create"
    for deployment in ("New", "Initializing", "Running", "Retrying", "Waiting"):
        assert dag_module.rayjob_action(rayjob(deployment)) == "adopt", deployment
    assert dag_module.rayjob_action({"metadata": {"name": RUN}}) == "adopt"  # no status yet
    for deployment in ("Complete", "Failed", "ValidationFailed"):
        assert dag_module.rayjob_action(rayjob(deployment)) == "recreate", deployment
    import yaml

    manifest = yaml.safe_load(dag_module.rayjob_manifest(RUN))
    assert manifest["metadata"]["name"] == RUN and f"/runs/{RUN}" in manifest["spec"]["entrypoint"]


def test_both_dags_build_with_real_airflow(dag_module) -> None:
    assert dag_module.cae_ray_rayjob.task_ids == ["create_rayjob", "wait_for_rayjob"]
    assert dag_module.cae_ray_raycluster.task_ids == ["run_ray_job"]
    for dag in (dag_module.cae_ray_rayjob, dag_module.cae_ray_raycluster):
        assert dag.max_active_runs == 1 and not dag.catchup


def test_a_missing_provider_fails_the_import_and_names_it(monkeypatch, tmp_path) -> None:
    # None in sys.modules makes that import raise ImportError, as an absent package does.
    monkeypatch.setitem(sys.modules, "airflow.providers.cncf.kubernetes.hooks.kubernetes", None)
    monkeypatch.delenv("CAE_RAY_AIRFLOW_DAGS", raising=False)
    with pytest.raises(ImportError) as missing:
        load_dag_file("cae_ray_dag_without_its_provider")
    for words in (
        "DAG cae_ray_rayjob needs apache-airflow-providers-cncf-kubernetes",
        "pip install 'apache-airflow-providers-cncf-kubernetes'",
        "CAE_RAY_AIRFLOW_DAGS=cae_ray_raycluster",
    ):
        assert words in str(missing.value)
    # Airflow lists it as the file's import error (the DAG does not just vanish).
    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(AIRFLOW_DAG))
    assert not dagbag.dags
    assert "apache-airflow-providers-cncf-kubernetes" in next(iter(dagbag.import_errors.values()))
    # Who wants only the other DAG says so.
    monkeypatch.setenv("CAE_RAY_AIRFLOW_DAGS", "cae_ray_raycluster")
    only = load_dag_file("cae_ray_dag_one_of_two")
    assert hasattr(only, "cae_ray_raycluster") and not hasattr(only, "cae_ray_rayjob")
    monkeypatch.setenv("CAE_RAY_AIRFLOW_DAGS", "cae_ray_raycluster,nope")
    with pytest.raises(ValueError, match="no such DAG: nope"):
        load_dag_file("cae_ray_dag_misnamed")
