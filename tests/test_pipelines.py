"""pipelines/: the Ray Job entry point run end to end as a subprocess with its own local Ray,
the Dagster jobs executed in process, the job-submission helper, and the Airflow DAG file."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import RAY_TEST_ENV, ROOT

RAY_JOB = ROOT / "pipelines" / "ray_job.py"
AIRFLOW_DAG = ROOT / "pipelines" / "airflow_dag.py"


def write_config(path: Path, data: Path, **validation: Any) -> Path:
    """A tiny run: 600 rows x 30 features, K=5, Train local mode (the driver trains)."""
    config = {
        "data": {"path": str(data), "features": "f_*", "target": "label", "row_key": "id"},
        "selector": {"k": 5},
        "training": {"epochs": 5, "batch_size": 64},
        "head": {"hidden": [32]},
        "scaling": {"num_workers": 0},
        # The plumbing is under test here, not the gate (tests/test_validation.py): tolerance 1
        # always passes, a fixed baseline of 1.0 with tolerance 0 always fails.
        "validation": {"epochs": 3, "bootstrap": 200, "tolerance": 1.0, **validation},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def ray_job(*args: str, address: str | None = None, timeout: float = 240) -> Any:
    """``python pipelines/ray_job.py ARGS`` as Ray runs a job's entrypoint: joining the cluster
    at ``address`` through RAY_ADDRESS (else starting its own, temp files in a short dir)."""
    with tempfile.TemporaryDirectory(prefix="crj-", dir="/tmp") as ray_tmp:
        env = {**os.environ, **RAY_TEST_ENV, "RAY_TMPDIR": ray_tmp}
        env.pop("RAY_ADDRESS", None)
        env.pop("CAE_RAY_RUN_DIR", None)
        if address:
            env["RAY_ADDRESS"] = address
        return subprocess.run(
            [sys.executable, str(RAY_JOB), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
            cwd=ROOT,
        )


def summary_line(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON object ray_job.py prints as its last stdout line."""
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    summary = json.loads(lines[-1])
    assert isinstance(summary, dict)
    return summary


@pytest.fixture(scope="module")
def finished_run(tiny_table, ray_cluster, tmp_path_factory) -> tuple[Path, Path, dict[str, Any]]:
    """One whole run through ``pipelines/ray_job.py`` in a subprocess that joins the test
    cluster through RAY_ADDRESS, as the entrypoint of a submitted Ray Job does."""
    base = tmp_path_factory.mktemp("ray-job")
    config = write_config(base / "tiny.yaml", tiny_table)
    run_dir = base / "run"
    address = ray_cluster.get_runtime_context().gcs_address
    done = ray_job("--config", str(config), "--run-dir", str(run_dir), address=address)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    return config, run_dir, summary_line(done)


# --- ray_job.py --------------------------------------------------------------------------------


def test_ray_job_help() -> None:
    done = subprocess.run(
        [sys.executable, str(RAY_JOB), "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--config", "--run-dir", "--address"):
        assert flag in done.stdout
    assert "5 the validation gate failed" in " ".join(done.stdout.split())


def run_main(capsys, *args: str) -> tuple[int, dict[str, Any], str]:
    """``ray_job.main(args)`` in this process: exit code, summary line, stderr."""
    from pipelines.ray_job import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]), err


def test_ray_job_bad_config_exits_2_with_a_summary(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("selector: {kk: 5}\n")
    code, summary, err = run_main(capsys, "--config", str(bad), "--run-dir", str(tmp_path / "r"))
    assert code == 2
    assert summary["status"] == "failed" and summary["exit_code"] == 2
    assert summary["error"] == "ConfigValidationError" and summary["result"] is None
    assert "selector.kk: unknown key" in summary["message"]
    assert "selector.kk" in err and "Traceback" not in err


def test_ray_job_missing_data_exits_3(tmp_path: Path, capsys) -> None:
    """The dataset is checked before any Ray work: no cluster is started for this."""
    config = write_config(tmp_path / "c.yaml", tmp_path / "no-such-table")
    code, summary, _ = run_main(capsys, "--config", str(config), "--run-dir", str(tmp_path / "r"))
    assert code == 3
    assert summary["status"] == "failed" and summary["error"] == "DatasetNotFoundError"
    assert summary["result"]["steps"]["prepare"]["status"] == "failed"  # run.json says where


@pytest.mark.ray
def test_ray_job_runs_every_step_end_to_end(finished_run, ray_cluster) -> None:
    config, run_dir, summary = finished_run
    assert summary["status"] == "succeeded" and summary["exit_code"] == 0
    assert summary["ray_address"] == ray_cluster.get_runtime_context().gcs_address
    assert summary["run_dir"] == str(run_dir) and summary["config"] == str(config)
    steps = summary["result"]["steps"]
    assert steps["export"]["status"] == "skipped"  # no feast section
    for step in ("prepare", "select", "validate", "report"):
        assert steps[step]["status"] == "done", (step, steps[step])
    assert steps["prune"]["status"] == "skipped"
    assert len(steps["select"]["selected_features"]) == 5 and steps["validate"]["passed"]
    for artifact in ("run.json", "selection.json", "validation.json", "report/report.html"):
        assert (run_dir / artifact).is_file(), artifact
    assert json.loads((run_dir / "run.json").read_text())["status"] == "succeeded"


@pytest.mark.ray
def test_ray_job_gate_failure_exits_5_and_resumes(finished_run, ray_cluster, tmp_path) -> None:
    """Again on (a copy of) the finished run dir with a gate that cannot pass: the finished
    steps are reused, validation runs again, prune is skipped, the report is written, exit 5."""
    config, run_dir, _ = finished_run
    copy = copy_run(run_dir, tmp_path / "run")
    failing = write_config(tmp_path / "gate.yaml", _data_path(config), baseline=1.0, tolerance=0)
    address = ray_cluster.get_runtime_context().gcs_address
    done = ray_job("--config", str(failing), "--run-dir", str(copy), address=address)
    assert done.returncode == 5, done.stderr[-3000:]
    summary = summary_line(done)
    assert summary["status"] == "gate_failed" and summary["exit_code"] == 5
    assert summary["error"] == "ValidationGateFailedError"
    steps = summary["result"]["steps"]
    assert [steps[s]["status"] for s in ("prepare", "select")] == ["reused", "reused"]
    assert steps["validate"]["status"] == "done" and not steps["validate"]["passed"]
    assert steps["prune"]["status"] == "skipped" and steps["report"]["status"] == "done"
    assert "validation gate failed" in done.stderr
    assert "[cae-ray] prepare: reused" in done.stderr  # one progress line per step
    assert "[cae-ray] validate: done in" in done.stderr


# --- Dagster -----------------------------------------------------------------------------------


def copy_run(run_dir: Path, destination: Path) -> Path:
    shutil.copytree(run_dir, destination, ignore=shutil.ignore_patterns("ray"))
    return destination


@pytest.fixture(scope="module")
def dagster_job() -> Iterator[Any]:
    pytest.importorskip("dagster", reason="dagster is not installed: pip install -e '.[dagster]'")
    from pipelines import dagster_job

    yield dagster_job


def test_dagster_definitions_and_schedule(dagster_job) -> None:
    import dagster as dg

    defs = dagster_job.defs
    assert {j.name for j in defs.jobs} == {"cae_ray_pipeline", "cae_ray_on_cluster"}
    (gate,) = dagster_job.cae_ray_selection.check_specs
    assert gate.name == "validation_gate" and gate.blocking  # a failed gate stops what follows
    # Settings come from the environment when a run starts, not when the file is imported.
    cae_ray = defs.resources["cae_ray"]
    assert cae_ray.config_path == dg.EnvVar("CAE_RAY_CONFIG")
    assert cae_ray.runs_root == dg.EnvVar("CAE_RAY_RUNS")
    assert defs.resources["ray_cluster"].address == dg.EnvVar("CAE_RAY_JOB_ADDRESS")
    assert dagster_job.CaeRay.model_fields["config_path"].default == "configs/cluster-gpu.yaml"
    schedule = dagster_job.cae_ray_weekly
    assert schedule.cron_schedule == "0 3 * * 1" and schedule.job_name == "cae_ray_pipeline"
    when = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=when) as context:
        (request,) = schedule.evaluate_tick(context).run_requests
    assert request.run_key == "scheduled-2026-11-23"
    assert request.run_config == {
        "ops": {"cae_ray_run": {"config": {"run_name": "scheduled-2026-11-23"}}}
    }


@pytest.mark.ray
def test_dagster_job_runs_in_process(dagster_job, finished_run, ray_cluster, tmp_path) -> None:
    """The in-process job on a copy of a finished run: every step is reused, the op succeeds
    and returns run.json; then with a failing gate it re-validates and fails without retry."""
    config, run_dir, _ = finished_run
    copy_run(run_dir, tmp_path / "runs" / "weekly")
    cae_ray = dagster_job.CaeRay(config_path=str(config), runs_root=str(tmp_path / "runs"))
    run_config = {"ops": {"cae_ray_run": {"config": {"run_name": "weekly"}}}}

    import dagster as dg

    instance = dg.DagsterInstance.ephemeral()
    result = dagster_job.cae_ray_pipeline.execute_in_process(
        run_config=run_config, resources={"cae_ray": cae_ray}, instance=instance
    )
    assert result.success
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("cae-ray select reused") for m in logged), logged  # streamed
    record = result.output_for_node("cae_ray_run")
    assert record["status"] == "succeeded"
    assert record["run_dir"] == str((tmp_path / "runs" / "weekly").resolve())
    for step in ("prepare", "select", "validate"):
        assert record["steps"][step]["status"] == "reused", (step, record["steps"][step])

    failing = write_config(tmp_path / "gate.yaml", _data_path(config), baseline=1.0, tolerance=0)
    cae_ray = dagster_job.CaeRay(config_path=str(failing), runs_root=str(tmp_path / "runs"))
    result = dagster_job.cae_ray_pipeline.execute_in_process(
        run_config=run_config, resources={"cae_ray": cae_ray}, raise_on_error=False
    )
    assert not result.success
    failure = result.failure_data_for_node("cae_ray_run")
    assert failure is not None and failure.user_failure_data is not None
    assert "ValidationGateFailedError" in failure.user_failure_data.description
    metadata = {k: v.value for k, v in failure.user_failure_data.metadata.items()}
    assert metadata["gate_failed"] is True and metadata["exit_code"] == 5
    recorded = json.loads((tmp_path / "runs" / "weekly" / "run.json").read_text())
    assert recorded["status"] == "gate_failed"
    assert recorded["steps"]["validate"]["status"] == "done"  # re-validated, selection reused
    assert recorded["steps"]["select"]["status"] == "reused"
    assert recorded["steps"]["prune"]["status"] == "skipped"


@pytest.mark.ray
def test_dagster_asset_check_carries_the_gate(
    dagster_job, finished_run, ray_cluster, tmp_path
) -> None:
    """``cae_ray_selection`` on a copy of a finished run: the selection is materialized and its
    blocking check holds the gate's verdict; a failing gate fails the check, and the step."""
    import dagster as dg

    config, run_dir, _ = finished_run
    copy_run(run_dir, tmp_path / "runs" / "weekly")
    run_config = {"ops": {"cae_ray_selection": {"config": {"run_name": "weekly"}}}}

    def materialize(config_path: Path) -> tuple[Any, Any]:
        cae_ray = dagster_job.CaeRay(config_path=str(config_path), runs_root=str(tmp_path / "runs"))
        result = dg.materialize(
            [dagster_job.cae_ray_selection],
            run_config=run_config,
            resources={"cae_ray": cae_ray},
            raise_on_error=False,
        )
        (check,) = result.get_asset_check_evaluations()
        return result, check

    result, check = materialize(config)
    verdict = json.loads((tmp_path / "runs" / "weekly" / "validation.json").read_text())
    assert result.success and check.passed and check.check_name == "validation_gate"
    assert check.description == verdict["reason"]
    assert check.metadata["selected"].value == pytest.approx(verdict["selected"]["value"])
    assert check.metadata["metric"].value == verdict["metric"]
    (materialized,) = result.get_asset_materialization_events()
    assert materialized.materialization.metadata["k"].value == 5

    failing = write_config(tmp_path / "gate.yaml", _data_path(config), baseline=1.0, tolerance=0)
    result, check = materialize(failing)
    assert not result.success and not check.passed  # blocking: the step fails with the check
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert "worse than the baseline 1.0000" in check.description
    assert check.metadata["baseline"].value == 1.0


def _data_path(config: Path) -> Path:
    return Path(yaml.safe_load(config.read_text())["data"]["path"])


def test_dagster_cluster_job_fails_clearly_without_a_job_server(dagster_job, tmp_path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"http://127.0.0.1:{port}"
    cluster = dagster_job.RayCluster(address=address, timeout_s=30, retry_delay_s=0.1)
    result = dagster_job.cae_ray_on_cluster.execute_in_process(
        resources={
            "cae_ray": dagster_job.CaeRay(config_path="/app/configs/x.yaml", runs_root="/r"),
            "ray_cluster": cluster,
        },
        raise_on_error=False,
    )
    assert not result.success
    # A job server away may come back: the op retried as often as the resource says, then
    # failed with the real reason (not "retries exhausted").
    events = [e.event_type_value for e in result.all_events]
    assert events.count("STEP_UP_FOR_RETRY") == cluster.max_retries == 2
    failure = result.failure_data_for_node("cae_ray_ray_job")
    assert failure is not None and failure.user_failure_data is not None
    assert address in failure.user_failure_data.description


def on_cluster(
    dagster_job, cae_ray: Any, cluster: Any, run_id: str | None = None, instance: Any = None
) -> Any:
    """``cae_ray_on_cluster`` in process, run name "weekly"."""
    return dagster_job.cae_ray_on_cluster.execute_in_process(
        run_config={"ops": {"cae_ray_ray_job": {"config": {"run_name": "weekly"}}}},
        resources={"cae_ray": cae_ray, "ray_cluster": cluster},
        instance=instance,
        raise_on_error=False,
        run_id=run_id,
    )


def op_failure(result: Any) -> tuple[str, dict[str, Any]]:
    """The op's dg.Failure: its description and its metadata's values."""
    failure = result.failure_data_for_node("cae_ray_ray_job")
    assert failure is not None and failure.user_failure_data is not None, failure
    data = failure.user_failure_data
    return data.description, {k: v.value for k, v in data.metadata.items()}


def retries(result: Any) -> int:
    return [e.event_type_value for e in result.all_events].count("STEP_UP_FOR_RETRY")


@pytest.mark.ray
def test_dagster_cluster_job_on_a_real_job_server(
    dagster_job, finished_run, job_server, tmp_path
) -> None:
    """``cae_ray_on_cluster`` submits the real ``pipelines/ray_job.py`` through dagster-ray to
    a real job server: on a copy of a finished run it succeeds and returns the summary, the
    steps' lines reach the Dagster log through Pipes; with a gate that cannot pass it fails
    with exit code 5, gate_failed and no retry."""
    config, run_dir, _ = finished_run
    copy_run(run_dir, tmp_path / "runs" / "weekly")
    cluster = dagster_job.RayCluster(
        address=job_server,
        app_dir=str(ROOT),
        python=sys.executable,
        poll_interval_s=0.5,
        retry_delay_s=0.1,  # a job server too busy to answer (2 cores): retry at once
    )
    cae_ray = dagster_job.CaeRay(config_path=str(config), runs_root=str(tmp_path / "runs"))
    import dagster as dg

    instance = dg.DagsterInstance.ephemeral()
    result = on_cluster(dagster_job, cae_ray, cluster, instance=instance)
    assert result.success, op_failure(result)
    summary = result.output_for_node("cae_ray_ray_job")
    assert summary["status"] == "succeeded" and summary["exit_code"] == 0
    assert summary["ray_address"] not in ("local", None)  # joined the job server's cluster
    assert summary["result"]["steps"]["select"]["status"] == "reused"
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("[cae-ray] select: reused" in m for m in logged), logged  # through Pipes

    failing = write_config(tmp_path / "gate.yaml", _data_path(config), baseline=1.0, tolerance=0)
    cae_ray = dagster_job.CaeRay(config_path=str(failing), runs_root=str(tmp_path / "runs"))
    result = on_cluster(dagster_job, cae_ray, cluster)
    assert not result.success and retries(result) == 0  # a failed gate never retries
    description, metadata = op_failure(result)
    assert metadata["exit_code"] == 5 and metadata["gate_failed"] is True
    assert (
        "ended FAILED" in description and "exit code 5 (the validation gate failed)" in description
    )
    assert metadata["run_dir"] == str(tmp_path / "runs" / "weekly")
    recorded = json.loads((tmp_path / "runs" / "weekly" / "run.json").read_text())
    assert recorded["status"] == "gate_failed"


STUB = """import json, sys, time
words = open(sys.argv[sys.argv.index("--config") + 1]).read().split()
time.sleep(float(words[0]))
print(json.dumps({"status": "stub", "exit_code": int(words[1]), "message": words[2]}))
sys.exit(int(words[1]))
"""


@pytest.mark.ray
def test_dagster_cluster_job_retries_stops_and_waits(dagster_job, job_server, tmp_path) -> None:
    """Against the real job server, with an entry point that sleeps, prints a summary and
    exits as its config file says: a failure that may pass (exit 4) retries with a new Ray job
    each time; bad input (exit 3) does not; a job past the timeout is stopped; an attempt
    already on the cluster is waited for, not submitted again."""
    from ray.job_submission import JobSubmissionClient

    (tmp_path / "app" / "pipelines").mkdir(parents=True)
    (tmp_path / "app" / "pipelines" / "ray_job.py").write_text(STUB)
    client = JobSubmissionClient(job_server)

    def run(behaviour: str, run_id: str | None = None, **settings: Any) -> Any:
        config = tmp_path / f"{behaviour.replace(' ', '-')}.txt"
        config.write_text(behaviour)
        cae_ray = dagster_job.CaeRay(config_path=str(config), runs_root=str(tmp_path / "r"))
        settings = {"max_retries": 0, "retry_delay_s": 0.1, **settings}
        cluster = dagster_job.RayCluster(
            address=job_server,
            app_dir=str(tmp_path / "app"),
            python=sys.executable,
            poll_interval_s=0.5,
            **settings,
        )
        return on_cluster(dagster_job, cae_ray, cluster, run_id)

    def jobs(result: Any) -> dict[str, str]:
        prefix = f"cae-ray-weekly-{result.run_id[:8]}"
        return {
            str(job.submission_id): str(job.status.value)
            for job in client.list_jobs()
            if str(job.submission_id).startswith(prefix)
        }

    result = run("0 4 workers-lost", max_retries=1)
    assert not result.success and retries(result) == 1
    description, metadata = op_failure(result)
    assert metadata["exit_code"] == 4 and metadata["gate_failed"] is False
    assert "workers-lost" in description and "exit code 4" in description
    prefix = f"cae-ray-weekly-{result.run_id[:8]}"
    assert jobs(result) == {prefix: "FAILED", f"{prefix}-2": "FAILED"}  # one Ray job an attempt

    result = run("0 3 no-table", max_retries=2)
    assert not result.success and retries(result) == 0
    assert op_failure(result)[1]["exit_code"] == 3

    result = run("60 0 slept", timeout_s=3)
    assert not result.success
    description, metadata = op_failure(result)
    assert "ended STOPPED" in description and "did not finish within 3 s" in description
    assert metadata["exit_code"] == -1  # stopped before it printed a summary
    assert list(jobs(result).values()) == ["STOPPED"]

    # An attempt already running (the last one lost the job server while it waited): the op
    # waits for it and returns its summary.
    import uuid

    run_id = str(uuid.uuid4())
    config = tmp_path / "already.txt"
    config.write_text("4 0 already-running")
    entrypoint = (
        f"{sys.executable} {tmp_path / 'app' / 'pipelines' / 'ray_job.py'} --config {config}"
    )
    client.submit_job(entrypoint=entrypoint, submission_id=f"cae-ray-weekly-{run_id[:8]}")
    result = run("0 1 second-job", run_id=run_id)
    assert result.success, op_failure(result)
    assert result.output_for_node("cae_ray_ray_job")["message"] == "already-running"
    assert jobs(result) == {f"cae-ray-weekly-{run_id[:8]}": "SUCCEEDED"}  # nothing else


# --- submit.py ---------------------------------------------------------------------------------


def test_submit_and_wait_names_an_unreachable_job_server() -> None:
    import socket

    from pipelines.submit import RayJobSubmitError, submit_and_wait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RayJobSubmitError, match=f"127.0.0.1:{port}"):
        submit_and_wait(f"http://127.0.0.1:{port}", "python -c 'print(1)'", timeout=10)


@pytest.mark.ray
def test_submit_and_wait_against_a_real_job_server(job_server) -> None:
    from pipelines.submit import RayJobFailedError, RayJobTimeoutError, submit_and_wait

    ok = 'python -c \'import json; print(json.dumps({"status": "succeeded", "exit_code": 0}))\''
    outcome = submit_and_wait(job_server, ok, timeout=120, poll_interval=0.5, submission_id="a")
    assert outcome.succeeded and outcome.exit_code == 0 and outcome.submission_id == "a"
    # The same submission id again: it waits for (here: returns) that job, submits nothing.
    again = submit_and_wait(job_server, "false", timeout=60, poll_interval=0.5, submission_id="a")
    assert again.succeeded and again.summary == outcome.summary

    gate = 'python -c \'print("{\\"exit_code\\": 5}"); raise SystemExit(5)\''
    with pytest.raises(RayJobFailedError) as failed:
        submit_and_wait(job_server, gate, timeout=120, poll_interval=0.5)
    assert failed.value.outcome.status == "FAILED" and failed.value.outcome.exit_code == 5

    with pytest.raises(RayJobTimeoutError, match="asked to stop"):
        submit_and_wait(job_server, "sleep 60", timeout=3, poll_interval=0.5)


@pytest.mark.ray
def test_ray_job_submitted_as_a_ray_job(job_server, tiny_table, tmp_path) -> None:
    """What `ray job submit ... -- python pipelines/ray_job.py` does: Ray runs the entrypoint
    with RAY_ADDRESS set, so the run joins that cluster, and the summary comes back."""
    import shlex

    from pipelines.submit import submit_and_wait

    config = write_config(tmp_path / "tiny.yaml", tiny_table)
    run_dir = tmp_path / "run"
    entrypoint = shlex.join(
        [sys.executable, str(RAY_JOB), "--config", str(config), "--run-dir", str(run_dir)]
    )
    outcome = submit_and_wait(job_server, entrypoint, timeout=300, poll_interval=1)
    assert outcome.summary is not None, outcome.logs[-3000:]
    assert outcome.summary["status"] == "succeeded" and outcome.exit_code == 0
    assert outcome.summary["ray_address"] not in ("local", None)  # joined the job's cluster
    assert json.loads((run_dir / "run.json").read_text())["status"] == "succeeded"


def test_last_summary_finds_the_entry_points_json_line() -> None:
    from pipelines.submit import last_summary

    logs = 'starting\n{"not": "it"}\n{"status": "gate_failed", "exit_code": 5}\n(teardown)\n'
    assert last_summary(logs) == {"status": "gate_failed", "exit_code": 5}
    assert last_summary("no json here\n{broken") is None


# --- Airflow -----------------------------------------------------------------------------------


def test_airflow_dag_parses_and_points_at_real_files() -> None:
    from tests.test_deploy import valid_cron

    tree = ast.parse(AIRFLOW_DAG.read_text())
    constants = {
        node.targets[0].id: str(node.value.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }
    assert valid_cron(constants["SCHEDULE"])
    # The token it replaces names the RayJob and its run dir in the manifest it reads.
    manifest = (ROOT / "deploy" / "rayjob.yaml").read_text()
    assert manifest.count(constants["TOKEN"]) >= 2
    source = AIRFLOW_DAG.read_text()
    for reference in ("deploy/rayjob.yaml", "pipelines/ray_job.py", "configs/cluster-gpu.yaml"):
        assert reference in source, reference
        assert (ROOT / reference).is_file(), reference
    dags = {
        kw.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == "dag_id" and isinstance(kw.value, ast.Constant)
    }
    assert dags == {"cae_ray_rayjob", "cae_ray_raycluster"}
    # A RayJob KubeRay refuses never runs: the sensor fails at once instead of poking 26 h.
    assert '"jobDeploymentStatus") == "ValidationFailed"' in source


def test_airflow_dag_imports_where_airflow_is_installed() -> None:
    pytest.importorskip("airflow", reason="apache-airflow is not installed in this venv")
    import importlib

    module = importlib.import_module("pipelines.airflow_dag")
    entrypoint = module.ray_job_entrypoint("cae-ray-run-20261123t030000")
    assert "--run-dir /mnt/shared/runs/cae-ray-run-20261123t030000" in entrypoint
