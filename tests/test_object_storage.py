"""Run dirs on object storage: every artifact read and written through a real S3-compatible
server (moto, on localhost), and the bad inputs a user meets there (a missing bucket, denied
credentials, an unreachable endpoint, a scheme with no filesystem), each a typed error that
leaves nothing behind."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from cae_ray import storage
from cae_ray.artifacts import RunDir
from cae_ray.cli import app
from cae_ray.errors import EXIT_CLUSTER, EXIT_CONFIG
from tests.object_store import BUCKET, S3Server, environment, free_port, s3_server

runner = CliRunner()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server, environment(server.env):
        yield server


def test_a_run_dir_on_s3_reads_writes_lists_and_checks_its_artifacts(s3) -> None:
    run = RunDir(s3.uri("runs/round-trip/")).ensure_writable()
    assert run.root == f"s3://{BUCKET}/runs/round-trip" and run.remote
    run.write_json("selection.json", {"k": 3, "files": {"data/train/part-0.parquet": 5}})
    run.write_bytes("data/train/part-0.parquet", b"12345")
    run.write_bytes("data/train/_ignored.json", b"{}")

    assert run.read_json("selection.json") == {
        "k": 3,
        "files": {"data/train/part-0.parquet": 5},
    }
    assert run.read_json("validation.json") is None
    assert run.files("data/train") == {"data/train/part-0.parquet": 5}
    assert run.reusable("selection.json", {"k": 3}) is not None
    assert run.reusable("selection.json", {"k": 4}) is None
    run.write_bytes("data/train/part-0.parquet", b"123")  # a file that changed size
    assert run.reusable("selection.json", {"k": 3}) is None
    assert run.modified("selection.json") and run.modified("report.html") is None

    run.remove("data")
    assert not run.exists("data/train/part-0.parquet")
    # No probe and no partial key outlives a write.
    assert s3.objects("runs/round-trip/") == ["runs/round-trip/selection.json"]


def test_a_write_that_fails_half_way_leaves_the_old_object(s3) -> None:
    where = s3.uri("runs/half/selection.json")
    storage.write_bytes(where, b"old")
    with pytest.raises(RuntimeError), storage.writing(where) as stream:
        stream.write(b"new, but only half of i")
        raise RuntimeError("killed")
    assert storage.read_bytes(where) == b"old"
    assert s3.objects("runs/half/") == ["runs/half/selection.json"]


def _run(run_dir: str, tmp_path) -> tuple[int, str]:
    """`cae-ray run` as a user types it, on a config that would otherwise work."""
    (tmp_path / "data.parquet").write_bytes(b"")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data: {{path: {tmp_path / 'data.parquet'}, target: label}}\nselector: {{k: 2}}\n"
    )
    result = runner.invoke(app, ["run", str(config), "--run-dir", run_dir])
    return result.exit_code, " ".join(result.output.split())


def test_a_missing_bucket_is_named_before_any_work(s3, tmp_path) -> None:
    code, output = _run("s3://no-such-bucket/runs/r1", tmp_path)
    assert code == EXIT_CONFIG, output
    assert "the bucket 'no-such-bucket' of s3://no-such-bucket/runs/r1 does not exist" in output
    assert "Fix: create it" in output


def test_denied_credentials_say_so_and_never_print_the_secret(tmp_path) -> None:
    with s3_server(bucket=False, auth=True) as refusing, environment(refusing.env):
        code, output = _run(f"s3://{BUCKET}/runs/r2", tmp_path)
    assert code == EXIT_CONFIG, output
    assert f"access to s3://{BUCKET}/runs/r2 was denied" in output
    assert "AWS_ACCESS_KEY_ID" in output  # the fix names the setting...
    assert refusing.env["AWS_SECRET_ACCESS_KEY"] not in output.replace("AWS_SECRET", "")


def test_an_unreachable_endpoint_is_a_cluster_error_naming_the_endpoint(s3, tmp_path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with environment({"AWS_ENDPOINT_URL": closed}):
        code, output = _run(f"s3://{BUCKET}/runs/r3", tmp_path)
    assert code == EXIT_CLUSTER, output
    assert f"could not reach the storage of s3://{BUCKET}/runs/r3 at {closed}" in output


@pytest.mark.parametrize(
    ("uri", "fix"),
    [
        ("hf://datasets/runs/r4", "pip install huggingface_hub"),
        ("nosuchfs://runs/r4", "use s3:// (with AWS_ENDPOINT_URL"),
    ],
)
def test_a_scheme_with_no_filesystem_names_what_to_install(tmp_path, uri, fix) -> None:
    code, output = _run(uri, tmp_path)
    assert code == EXIT_CONFIG, output
    assert f"no filesystem for {uri.split(':')[0]}://" in output and fix in output


def test_data_on_s3_is_read_through_the_same_filesystem(s3, tmp_path) -> None:
    import pyarrow as pa

    from cae_ray.runtime.data import open_parquet

    table = pa.table({"f_0": [1.0, 2.0], "label": [0, 1]})
    with storage.writing(s3.uri("data/small/part-0.parquet")) as stream:
        import pyarrow.parquet as pq

        pq.write_table(table, stream)
    assert open_parquet(s3.uri("data/small")).to_table().equals(table)
    assert json.loads(json.dumps(storage.files(s3.uri("data/small")))) == {
        "part-0.parquet": storage.size(s3.uri("data/small/part-0.parquet"))
    }


def test_rank_0_writes_progress_to_s3_at_most_once_a_second(s3, tmp_path, monkeypatch) -> None:
    """A progress write on an object store is three requests on the training path; a local
    file is written every epoch."""
    import time

    import torch

    from cae_ray.runtime.train import EpochReporter

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3600")  # no Ray report here
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters())

    def reporter(progress_file: str) -> EpochReporter:
        return EpochReporter(0, model, optimizer, [], 0, None, "run", progress_file)

    def last_epoch(where: str) -> int:
        return int(json.loads(storage.read_bytes(where) or b"{}")["epoch"])

    remote, local = s3.uri("runs/progress/progress.json"), str(tmp_path / "progress.json")
    on_s3, on_disk = reporter(remote), reporter(local)
    for epoch in range(5):
        on_s3.epoch_done({"epoch": epoch})
        on_disk.epoch_done({"epoch": epoch})
        assert last_epoch(local) == epoch
    assert last_epoch(remote) == 0  # the epochs after it came within the second
    time.sleep(1.05)
    on_s3.epoch_done({"epoch": 5})
    assert last_epoch(remote) == 5
    on_s3.epoch_done({"epoch": 6})
    on_s3._write_progress(force=True)  # what finish() does before its last report
    assert last_epoch(remote) == 6
