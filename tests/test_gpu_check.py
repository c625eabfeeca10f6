"""benchmarks/gpu_check.sh: its plan (--dry-run) holds every step of the GPU check, and its
options are checked; no GPU, no install, a few seconds. The summary's parsing is tested on the
files a check leaves behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import gpu_check
from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=False
    )


def plan(*args: str) -> list[str]:
    done = run("--dry-run", *args)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if not line.startswith("#")]


def the_line(lines: list[str], *words: str) -> str:
    (found,) = [line for line in lines if all(word in line for word in words)]
    return found


def test_the_plan_installs_a_cuda_torch_then_the_package() -> None:
    lines = plan()
    torch = the_line(lines, "pip install", "torch==")
    assert "--index-url https://download.pytorch.org/whl/cu" in torch
    assert "-e '.[dev,bench,xgboost]'" in the_line(lines, "pip install", "-e")
    assert lines.index(torch) < lines.index(the_line(lines, "pip install", "-e"))
    assert "torch.cuda.is_available()" in the_line(lines, "-c", "import torch")


def test_the_plan_runs_the_gpu_tests_a_gpu_selection_and_mnist_then_nvidia_smi() -> None:
    lines = plan()
    tests = the_line(lines, "pytest -m gpu -q")
    setup = the_line(lines, "gpu_check.py setup")
    for setting in ("--rows 200000", "--features 2000", "scaling.use_gpu=true"):
        assert setting in setup
    assert "scaling.bf16=true" in setup and "training.device=cuda" in setup
    select = the_line(lines, "cae-ray select")
    quality = the_line(lines, "benchmarks/quality.py --parts mnist")
    assert "--set device=cuda" in quality
    for step in (tests, setup, select, quality):
        assert step.startswith("timeout "), step  # every step is time-limited
    assert lines.index(tests) < lines.index(setup) < lines.index(select) < lines.index(quality)
    assert lines[-1] == "nvidia-smi"
    assert "gpu_check.py summary" in lines[-2]


def test_workers_and_paths_can_be_chosen(tmp_path: Path) -> None:
    venv, work = tmp_path / "venv", tmp_path / "work"
    lines = plan("--workers", "2", "--venv", str(venv), f"--work-dir={work}")
    assert "scaling.num_workers=2" in the_line(lines, "gpu_check.py setup")
    assert f"-m venv --upgrade-deps {venv}" in the_line(lines, "-m venv")
    assert f"--run-dir {work}/select/run" in the_line(lines, "cae-ray select")
    assert not venv.exists() and not work.exists()  # a dry run makes nothing


def test_cpu_plan_uses_the_existing_venv_and_tiny_sizes() -> None:
    lines = plan("--cpu")
    assert not [line for line in lines if "pip install" in line or "nvidia-smi" in line]
    setup = the_line(lines, "gpu_check.py setup")
    assert "scaling.use_gpu=false" in setup and "--rows 200000" not in setup
    assert "--set device=cpu" in the_line(lines, "quality.py --parts mnist")
    assert the_line(lines, "pytest -m gpu -q").split()[2] == str(ROOT / ".venv" / "bin" / "pytest")


def test_help_exits_0() -> None:
    done = run("--help")
    assert done.returncode == 0 and "--dry-run" in done.stdout and "--cpu" in done.stdout


@pytest.mark.parametrize(
    "args,named",
    [
        (["--bogus"], "unknown option: --bogus"),
        (["--dry-run", "--gpus=2"], "unknown option: --gpus=2"),
        (["--workers"], "--workers needs a value"),
        (["--workers", "two", "--dry-run"], "--workers must be a positive number"),
    ],
)
def test_bad_options_exit_2_naming_them(args: list[str], named: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert named in done.stderr and not done.stdout


def test_settings_go_into_the_nested_config() -> None:
    config = gpu_check.apply_settings(
        {"scaling": {"num_workers": 1}},
        ["scaling.use_gpu=true", "scaling.resources_per_worker={CPU: 4, GPU: 1}", "selector.k=7"],
    )
    assert config["scaling"] == {
        "num_workers": 1,
        "use_gpu": True,
        "resources_per_worker": {"CPU": 4, "GPU": 1},
    }
    assert config["selector"] == {"k": 7}
    with pytest.raises(SystemExit, match=r"SECTION\.KEY=VALUE"):
        gpu_check.apply_settings({}, ["bf16"])


def test_summary_reads_what_a_check_leaves(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(gpu_check, "machine", lambda: "Machine: test")  # no torch import
    steps = [
        ("gpu-tests", "0", "4200", "90", ""),
        ("select", "0", "61000", "200", ""),
        ("quality", "124", "120000", "120", ""),
    ]
    (tmp_path / "steps.tsv").write_text("".join("\t".join(s) + "\n" for s in steps))
    (tmp_path / "gpu-tests.log").write_text("...\n3 passed, 1 skipped in 4.20s\n")
    (tmp_path / "select.gpumem").write_text("0, 1024\n1, 3072\n0, 2048\n")
    run_dir = tmp_path / "select" / "run"
    (run_dir / "data").mkdir(parents=True)
    history = [{"seconds": s} for s in (9.0, 2.0, 2.0, 4.0)]
    selection = {"history": history, "selected_features": ["a", "b"], "num_workers": 2}
    (run_dir / "selection.json").write_text(json.dumps(selection))
    prepared = {"rows": {"train": 160_000}, "features": ["f"] * 2000}
    (run_dir / "data" / "prepared.json").write_text(json.dumps(prepared))

    assert gpu_check.summary(tmp_path) == 1  # the quality step timed out
    table = capsys.readouterr().out
    assert "| gpu-tests | ok | 4.2 |" in table and "3 passed, 1 skipped in 4.20s" in table
    assert "| select | ok | 61.0 | 80,000 | 2.00 | 3.0 GiB (GPU 1 of 2) |" in table
    assert "2 distinct of 2,000; 4 epochs, 2 worker(s)" in table
    assert "| quality | timeout (> 120 s) |" in table


def test_no_gpu_tests_is_not_a_failure() -> None:
    step = {"name": "gpu-tests", "rc": "5", "ms": "1000", "limit": "90", "note": ""}
    assert gpu_check.status(step) == ("none: no test is marked gpu", False)
    assert gpu_check.status({**step, "name": "select"}) == ("failed (exit 5)", True)
