"""deploy/: the manifests parse, point at files and configs that exist and load, ask for GPUs
where Train workers run, agree with the config and the images; run dirs are in an object store
by default, with the credentials from a Secret; the images run as non-root."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cae_ray.config import Config, load_config
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
APP = "/app"  # WORKDIR of both images: the repo's pipelines/ and configs/ are copied there
SHARED = "/mnt/shared"  # the PVC alternative (deploy/pvc.yaml) and configs/cluster-gpu.yaml
TOKEN = "cae-ray-run-manual"
BUCKET = "my-cae-ray-bucket"  # the placeholder: the one thing to change
SECRET = "cae-ray-s3"
FEAST_REPO = "/etc/cae-ray/feature_repo"  # the ConfigMap cae-ray-feast-repo, on the heads


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]


def one(name: str, kind: str) -> dict[str, Any]:
    (found,) = [d for d in documents(name) if d["kind"] == kind]
    return found


def repo_path(path: str) -> Path:
    """A path inside the image (/app/...) as the repo file it was copied from."""
    assert path.startswith(f"{APP}/"), path
    return ROOT / path.removeprefix(f"{APP}/")


def ray_clusters() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("rayjob.yaml", one("rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"]),
        ("raycluster.yaml", one("raycluster.yaml", "RayCluster")["spec"]),
    ]


def pod_specs(cluster: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    groups = [("head", cluster["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    return [(name, group["template"]["spec"]) for name, group in groups]


def entrypoint_args(entrypoint: str) -> dict[str, str]:
    words = shlex.split(entrypoint)
    assert words[0] == "python", entrypoint
    return {"script": words[1], **dict(zip(words[2::2], words[3::2], strict=True))}


# --- every file -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_parses_and_names_its_kind(path: Path) -> None:
    docs = documents(path.name)
    assert docs, path
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), (path.name, doc)
        assert doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "cae-ray"


def test_the_ray_resources_are_kuberay_v1() -> None:
    assert one("rayjob.yaml", "RayJob")["apiVersion"] == "ray.io/v1"
    assert one("raycluster.yaml", "RayCluster")["apiVersion"] == "ray.io/v1"
    assert one("cronjob.yaml", "CronJob")["apiVersion"] == "batch/v1"
    assert one("pvc.yaml", "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    assert one("s3-secret.yaml", "Secret")["apiVersion"] == "v1"


# --- the RayJob's entrypoint -------------------------------------------------------------------


def test_rayjob_entrypoint_runs_a_repo_script_with_a_config_that_loads() -> None:
    spec = one("rayjob.yaml", "RayJob")["spec"]
    args = entrypoint_args(spec["entrypoint"])
    assert repo_path(args["script"]) == ROOT / "pipelines" / "ray_job.py"
    assert repo_path(args["script"]).is_file()
    config = load_config(repo_path(args["--config"]))
    assert config.scaling.use_gpu
    # The run dir is in the bucket and named by the token the CronJob replaces.
    assert args["--run-dir"] == f"s3://{BUCKET}/cae-ray/runs/{TOKEN}"
    assert one("rayjob.yaml", "RayJob")["metadata"]["name"] == TOKEN
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
    assert yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]["CAE_RAY_PRUNE"] in {"plan", "apply"}


def test_cluster_gpu_config_loads_here_without_a_gpu() -> None:
    """GPUs are checked when a run starts (training.connect), never when a config loads: this
    machine has none, and the config loads."""
    config = load_config(ROOT / "configs" / "cluster-gpu.yaml")
    assert config.scaling.use_gpu and config.training.device == "cuda"
    assert config.scaling.resources_per_worker == {"CPU": 4, "GPU": 1}
    assert config.feast is not None and config.feast.repo.startswith(SHARED)
    assert config.feast.entities is not None and config.feast.entities.startswith(SHARED)
    assert config.data is not None and config.data.path is None  # selects from RUN_DIR/export
    assert config.validation.baseline == "train"


def test_cluster_gpu_config_reads_its_settings_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("CAE_RAY_PRUNE", "apply")
    monkeypatch.setenv("CAE_RAY_FEAST_REPO", "/data/repo")
    config = load_config(ROOT / "configs" / "cluster-gpu.yaml")
    assert config.feast is not None
    assert (config.feast.prune, config.feast.repo) == ("apply", "/data/repo")


# --- the Ray clusters --------------------------------------------------------------------------


@pytest.mark.parametrize("name,cluster", ray_clusters(), ids=[n for n, _ in ray_clusters()])
def test_gpu_workers_request_gpus_and_fit_the_config(name: str, cluster: dict[str, Any]) -> None:
    config: Config = load_config(ROOT / "configs" / "cluster-gpu.yaml")
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert {"cpu", "gpu"} <= set(groups), name
    resources_per_worker = config.scaling.resources_per_worker or {}
    gpus = 0
    for group_name, group in groups.items():
        (container,) = group["template"]["spec"]["containers"]
        resources = container["resources"]
        wanted = {k: str(v) for k, v in resources["limits"].items()}
        assert {k: str(v) for k, v in resources["requests"].items()} == wanted, group_name
        if group_name == "gpu":
            assert int(wanted["nvidia.com/gpu"]) >= 1
            assert float(wanted["cpu"]) >= resources_per_worker["CPU"]
            gpus += int(wanted["nvidia.com/gpu"]) * group["minReplicas"]
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        else:
            assert "nvidia.com/gpu" not in wanted, group_name
    # A run checks at start that num_workers x GPU per worker exist: the minimum must hold them.
    per_worker = resources_per_worker["GPU"]
    assert gpus >= config.scaling.num_workers * per_worker, name
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


@pytest.mark.parametrize("name,cluster", ray_clusters(), ids=[n for n, _ in ray_clusters()])
def test_ray_pods_run_one_image_as_non_root(name: str, cluster: dict[str, Any]) -> None:
    import ray

    assert cluster["rayVersion"] == ray.__version__
    images = set()
    for group, pod in pod_specs(cluster):
        (container,) = pod["containers"]
        images.add(container["image"])
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, group
        # A volume mounted for the PVC alternative is writable for the image's user.
        assert security["fsGroup"] == security["runAsGroup"], group
    assert len(images) == 1, images  # Ray wants the same code and versions on every node


# --- the run dir: an object store, credentials from a Secret -----------------------------------


def run_dirs_in(text: str) -> list[str]:
    """Every ``--run-dir X`` in a manifest, comments and examples included (X a URI or an
    absolute path: not the CronJob's sed expression that reads it)."""
    return re.findall(r"--run-dir\s+((?:[a-z0-9]+://|/)[A-Za-z0-9]\S*)", text)


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("*.yaml")), ids=lambda p: p.name)
def test_every_run_dir_in_the_manifests_is_in_the_bucket(path: Path) -> None:
    """By default the run dir is an object-store URI every node, every retry and the next
    scheduled run can reach; a path on the shared volume is only the documented alternative."""
    for run_dir in run_dirs_in(path.read_text()):
        assert run_dir.startswith(f"s3://{BUCKET}/cae-ray/runs/"), (path.name, run_dir)


def test_the_bucket_is_one_placeholder_named_at_the_top() -> None:
    for name in ("rayjob.yaml", "raycluster.yaml", "cronjob.yaml"):
        text = (DEPLOY / name).read_text()
        header = text[: text.index("\napiVersion:")]
        assert "THE ONE THING TO CHANGE" in header and BUCKET in header, name
        # The switch back to the shared volume is documented there too.
        assert "deploy/pvc.yaml" in header, name
        buckets = set(re.findall(r"s3://([^/\s]+)/", text))
        assert buckets <= {BUCKET}, (name, buckets)
    assert run_dirs_in((DEPLOY / "raycluster.yaml").read_text())  # its submit example


@pytest.mark.parametrize("name,cluster", ray_clusters(), ids=[n for n, _ in ray_clusters()])
def test_every_ray_pod_gets_the_bucket_credentials_from_the_secret(
    name: str, cluster: dict[str, Any]
) -> None:
    """The driver (head) writes the run dir and Ray Data (CPU workers) and Train workers (GPU
    workers, checkpoints in RUN_DIR/ray) write there too: each container gets the AWS_*
    variables from the Secret, none of them written in the manifest."""
    secret = one("s3-secret.yaml", "Secret")["metadata"]["name"]
    assert secret == SECRET
    for group, pod in pod_specs(cluster):
        for container in pod["containers"]:
            refs = [
                e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e
            ]
            assert refs == [SECRET], (name, group)
            literal = {e["name"] for e in container.get("env", []) if "value" in e}
            assert not {n for n in literal if n.startswith("AWS_")}, (name, group, literal)


@pytest.mark.parametrize("name,cluster", ray_clusters(), ids=[n for n, _ in ray_clusters()])
def test_no_ray_pod_needs_the_shared_volume(name: str, cluster: dict[str, Any]) -> None:
    for group, pod in pod_specs(cluster):
        volumes = pod.get("volumes", [])
        assert not [v for v in volumes if "persistentVolumeClaim" in v], (name, group)
        mounts = [m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])]
        assert not [m for m in mounts if m.startswith(SHARED)], (name, group)


def test_the_secret_example_holds_placeholders_only() -> None:
    secret = one("s3-secret.yaml", "Secret")
    assert "data" not in secret  # stringData: readable placeholders, nothing base64-encoded
    keys = secret["stringData"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(keys)
    assert "REPLACE" in keys["AWS_ACCESS_KEY_ID"] and "REPLACE" in keys["AWS_SECRET_ACCESS_KEY"]
    # S3-compatible stores: the endpoint variable is shown, not set (an empty one would be wrong).
    assert "AWS_ENDPOINT_URL" in (DEPLOY / "s3-secret.yaml").read_text()
    assert not keys.get("AWS_ENDPOINT_URL")


@pytest.mark.parametrize("name,cluster", ray_clusters(), ids=[n for n, _ in ray_clusters()])
def test_the_driver_reads_feast_from_the_configmap_and_entity_rows_from_the_bucket(
    name: str, cluster: dict[str, Any], monkeypatch
) -> None:
    head = cluster["headGroupSpec"]["template"]["spec"]
    (container,) = head["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    config = load_config(ROOT / "configs" / "cluster-gpu.yaml")
    assert config.feast is not None and config.feast.entities is not None
    assert config.feast.repo == FEAST_REPO
    assert config.feast.entities.startswith(f"s3://{BUCKET}/")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in head["volumes"]}
    assert mounts[FEAST_REPO]["readOnly"] is True
    assert volumes[mounts[FEAST_REPO]["name"]]["configMap"]["name"] == "cae-ray-feast-repo"


def test_ray_version_is_the_same_in_manifests_images_and_the_pin() -> None:
    import ray

    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        (version,) = re.findall(r"^ARG RAY_VERSION=(\S+)$", read(dockerfile), re.MULTILINE)
        assert version == ray.__version__, dockerfile
    pins = re.findall(r'"ray\[train,data\]([^"]+)"', (ROOT / "pyproject.toml").read_text())
    from packaging.specifiers import SpecifierSet

    assert ray.__version__ in SpecifierSet(pins[0]), pins  # the range admits the tested Ray


# --- the images --------------------------------------------------------------------------------


def read(dockerfile: str) -> str:
    return (DEPLOY / dockerfile).read_text()


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", read(dockerfile))
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_images_end_as_a_numeric_non_root_user(dockerfile: str) -> None:
    users = [args for op, args in instructions(dockerfile) if op == "USER"]
    assert users, f"{dockerfile} never sets USER (it would run as root)"
    final = users[-1].split(":")[0]
    assert final.isdigit() and int(final) != 0, users  # numeric: runAsNonRoot can verify it
    assert final == "1000"  # the manifests' runAsUser


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_images_pin_torch_and_copy_files_that_exist(dockerfile: str) -> None:
    steps = instructions(dockerfile)
    (base,) = [args for op, args in steps if op == "FROM"]
    runs = " ".join(args for op, args in steps if op == "RUN")
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == "2.13.0"
    assert 'torch==${TORCH_VERSION}"' in runs and "--index-url" in runs
    if dockerfile == "Dockerfile":
        assert base == "python:3.11-slim"
        assert "download.pytorch.org/whl/cpu" in runs and "ray[default]==" in runs
    else:
        assert base.startswith("rayproject/ray:") and base.endswith("-py311-gpu")
        assert "/whl/cu" in args["TORCH_INDEX"]
    for op, copy in steps:
        if op == "COPY":
            sources = [w for w in copy.split() if not w.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), (dockerfile, source)
    assert ("WORKDIR", APP) in steps


# --- the schedule ------------------------------------------------------------------------------

_BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def valid_cron(expression: str) -> bool:
    """A standard 5-field cron expression (numbers, names, *, ranges, steps, lists)."""
    fields = expression.split()
    if len(fields) != 5:
        return False
    names: list[dict[str, int]] = [{}, {}, {}, {m: i + 1 for i, m in enumerate(_MONTHS)}]
    names.append({d: i for i, d in enumerate(_DAYS)})

    def value(token: str, field: int) -> int | None:
        if token.isdigit():
            return int(token)
        return names[field].get(token.lower())

    for field, text in enumerate(fields):
        low, high = _BOUNDS[field]
        for part in text.split(","):
            base, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                return False
            if base == "*":
                continue
            bounds = [value(t, field) for t in base.split("-")]
            numbers = [b for b in bounds if b is not None and low <= b <= high]
            if len(numbers) != len(bounds) or len(numbers) > 2 or numbers != sorted(numbers):
                return False
    return True


def test_cron_validator_itself() -> None:
    for good in ["0 3 * * 1", "*/15 * * * *", "0 0 1,15 * mon-fri", "5 4 * jan,jul sun"]:
        assert valid_cron(good), good
    for bad in ["0 3 * *", "60 * * * *", "0 24 * * *", "* * 0 * *", "* * * 13 *", "*/0 * * * *"]:
        assert not valid_cron(bad), bad


def test_cronjob_schedule_is_valid_and_it_creates_the_rayjob() -> None:
    cronjob = one("cronjob.yaml", "CronJob")
    assert valid_cron(cronjob["spec"]["schedule"]), cronjob["spec"]["schedule"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    script = container["args"][0]
    # It substitutes the token that names the RayJob and its run dir, from the mounted manifest.
    assert f"s/{TOKEN}/" in script and "${MANIFESTS:-/manifests}" in script
    assert "k create -f /tmp/rayjob.yaml" in script and "SUCCEEDED" in script
    # It reports the run dir it reads from the manifest (no second copy of the bucket here).
    assert "--run-dir" in script and BUCKET not in script and SHARED not in script
    (mount,) = container["volumeMounts"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mount["mountPath"] == "/manifests"
    assert volumes[mount["name"]]["configMap"]["name"] == "cae-ray-rayjob"
    # The account it runs as may create and read RayJobs, nothing more.
    role = one("cronjob.yaml", "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["ray.io"],
            "resources": ["rayjobs"],
            "verbs": ["create", "get", "list", "watch"],
        }
    ]
    binding = one("cronjob.yaml", "RoleBinding")
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    assert pod["securityContext"]["runAsNonRoot"] is True


# --- the CronJob's script, run against a stand-in for the Kubernetes API ----------------------

FAKE_KUBECTL = """#!/bin/sh
# `create` works and the RayJob is not there yet; each `get -o jsonpath` answers the next line
# of $ANSWERS ("fail" exits 1, like an API error).
case "$1" in create) exit 0 ;; esac
case "$*" in *"-o name"*) exit 1 ;; esac
n=$(( $(cat "$STATE/n" 2>/dev/null || echo 0) + 1 )); echo $n > "$STATE/n"
line=$(sed -n "${n}p" "$ANSWERS")
[ "$line" = fail ] && exit 1
printf '%s' "$line"
"""


def run_cron_script(tmp_path: Path, answers: list[str]) -> subprocess.CompletedProcess[str]:
    """The CronJob's own script, with `kubectl` answering ``answers`` (one per call)."""
    cronjob = one("cronjob.yaml", "CronJob")
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir(parents=True)
    state.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    (tmp_path / "answers").write_text("\n".join(answers) + "\n")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "MANIFESTS": str(DEPLOY),
        "POLL_S": "0",
        "STATE": str(state),
        "ANSWERS": str(tmp_path / "answers"),
    }
    script = container["args"][0].replace("/tmp/rayjob.yaml", str(tmp_path / "rayjob.yaml"))
    return subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_cron_script_fails_at_once_when_kuberay_refuses_the_rayjob(tmp_path) -> None:
    done = run_cron_script(tmp_path, ["ValidationFailed", "ValidationFailed", "bad spec"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed KubeRay's validation" in done.stdout


def test_the_cron_script_rides_out_api_errors_and_reports_the_ray_job(tmp_path) -> None:
    answers = ["fail", "Running", "fail", "fail", "Complete", "SUCCEEDED"]
    done = run_cron_script(tmp_path, answers)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ray job SUCCEEDED" in done.stdout and "failed (try 1 of 5)" in done.stderr
    failed = run_cron_script(tmp_path / "again", ["Running", "Failed", "FAILED"])
    assert failed.returncode == 1  # a failed Ray job (a failed gate: exit 5) fails the Job


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_images_install_the_dependencies_before_the_code(dockerfile: str) -> None:
    """A code edit must not reinstall Ray: the dependencies' layer comes before the code's."""
    steps = instructions(dockerfile)
    deps = next(i for i, (op, a) in enumerate(steps) if op == "RUN" and "requirements" in a)
    code = next(i for i, (op, a) in enumerate(steps) if op == "COPY" and "cae_ray" in a)
    install = next(i for i, (op, a) in enumerate(steps) if op == "RUN" and "--no-deps ." in a)
    assert deps < code < install, steps
    assert "pyproject.toml" in steps[deps - 1][1] or any(
        "pyproject.toml" in a for op, a in steps[:deps] if op == "COPY"
    )
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs", "tests"} <= set(ignored)


DIGESTS = {
    "python:3.11-slim": "sha256:" + "a" * 64,
    "rayproject/ray:2.60.0-py311-gpu": "sha256:" + "b" * 64,
}


def pin_images(tmp_path: Path, *args: str, registry_up: bool = True) -> Any:
    """``deploy/pin_images.py`` on copies of both Dockerfiles, with a stand-in ``docker`` on
    PATH answering ``buildx imagetools inspect`` as a registry would (no registry here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    cases = "\n".join(f'  "{image}") echo {d} ;;' for image, d in DIGESTS.items())
    answer = f'case "$4" in\n{cases}\n  *) echo "no such image $4" >&2; exit 1 ;;\nesac'
    down = 'echo "dial tcp: lookup registry-1.docker.io: no such host" >&2; exit 1'
    docker = bin_dir / "docker"
    docker.write_text(f"#!/bin/sh\n{answer if registry_up else down}\n")
    docker.chmod(0o755)
    for name in ("Dockerfile", "Dockerfile.gpu"):
        (tmp_path / name).write_text(read(name))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    files = [str(tmp_path / name) for name in ("Dockerfile", "Dockerfile.gpu")]
    script = [sys.executable, str(DEPLOY / "pin_images.py"), *args, *files]
    return subprocess.run(script, capture_output=True, text=True, env=env, check=False)


def test_base_images_are_pinned_by_digest_with_one_command(tmp_path) -> None:
    assert pin_images(tmp_path, "--check").returncode == 1  # tags only, as committed
    failed = pin_images(tmp_path, registry_up=False)
    assert failed.returncode != 0 and "python:3.11-slim" in failed.stderr
    assert (tmp_path / "Dockerfile").read_text() == read("Dockerfile")  # nothing half-pinned

    done = pin_images(tmp_path)
    assert done.returncode == 0, done.stderr
    pinned = (tmp_path / "Dockerfile").read_text()
    assert f"FROM python:3.11-slim@{DIGESTS['python:3.11-slim']}\n" in pinned
    gpu = (tmp_path / "Dockerfile.gpu").read_text()  # ${RAY_VERSION} expanded from its ARG
    assert (
        f"FROM rayproject/ray:2.60.0-py311-gpu@{DIGESTS['rayproject/ray:2.60.0-py311-gpu']}" in gpu
    )
    assert pin_images_check(tmp_path).returncode == 0


def pin_images_check(tmp_path: Path) -> Any:
    files = [str(tmp_path / name) for name in ("Dockerfile", "Dockerfile.gpu")]
    script = [sys.executable, str(DEPLOY / "pin_images.py"), "--check", *files]
    return subprocess.run(script, capture_output=True, text=True, check=False)
