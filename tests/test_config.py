from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from cae_ray.config import Config, load_config, validate_config
from cae_ray.demo import DEMO_YAML
from cae_ray.errors import ConfigFileError, ConfigValidationError, UndefinedEnvVarError
from tests.conftest import ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_defaults_match_the_documented_example() -> None:
    cfg = Config()
    assert (cfg.selector.method, cfg.selector.k, cfg.selector.dim_ip) == ("ipcae", "auto", None)
    assert (cfg.selector.start_temperature, cfg.selector.end_temperature) == (10.0, 0.01)
    assert (cfg.training.epochs, cfg.training.batch_size) == (200, 128)
    assert (cfg.training.learning_rate, cfg.training.seed) == (0.001, 0)
    assert (cfg.head.task, cfg.head.hidden) == ("auto", [200])


def test_every_field_is_documented() -> None:
    pending: list[type[BaseModel]] = [Config]
    seen: set[type[BaseModel]] = set()
    while pending:
        model = pending.pop()
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"
            for kind in (field.annotation, *get_args(field.annotation)):
                if isinstance(kind, type) and issubclass(kind, BaseModel) and kind not in seen:
                    pending.append(kind)
    assert len(seen) >= 7  # every section, nested ones included


def test_load_yaml_with_env_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAE_K", "7")
    monkeypatch.delenv("CAE_UNSET", raising=False)
    path = write(
        tmp_path,
        "selector: {method: cae, k: ${CAE_K}}\ntraining: {seed: ${CAE_UNSET:-42}}\n",
    )
    cfg = load_config(path)
    assert (cfg.selector.method, cfg.selector.k, cfg.training.seed) == ("cae", 7, 42)


def test_undefined_env_var_names_variable_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "selector:\n  k: ${CAE_RAY_SURELY_UNSET}\n")
    with pytest.raises(UndefinedEnvVarError, match=r"line 2 .*CAE_RAY_SURELY_UNSET.*export"):
        load_config(path)


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "selector: {k: 5, temprature: 3}\ntrainig: {}\n")
    with pytest.raises(ConfigValidationError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "selector.temprature: unknown key" in message
    assert "trainig: unknown key; did you mean 'training'?" in message


def test_bad_values_name_key_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "selector: {k: 0, method: lasso}\ntraining: {epochs: many}\n")
    with pytest.raises(ConfigValidationError) as info:
        load_config(path)
    problems = "\n".join(info.value.problems)
    expected = "selector.k: should be a whole number of features (1 or more) or 'auto' (got 0)"
    assert expected in problems
    assert "selector.method" in problems and "'lasso'" in problems
    assert "training.epochs" in problems and "'many'" in problems


def test_temperatures_must_decrease() -> None:
    with pytest.raises(ConfigValidationError, match=r"end_temperature=20\.0 is above"):
        validate_config({"selector": {"start_temperature": 1.0, "end_temperature": 20.0}})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("selector: {k: 5\n", r"not valid YAML \(line \d+, column \d+"),
        ("- just\n- a list\n", "the top level is a list, not a mapping"),
    ],
)
def test_malformed_yaml(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigFileError, match=match):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    assert isinstance(load_config(path), Config)


def test_demo_yaml_is_the_embedded_demo() -> None:
    assert (ROOT / "configs" / "demo.yaml").read_text() == DEMO_YAML


def test_use_gpu_decides_the_device_and_a_contradiction_is_refused() -> None:
    assert validate_config({"scaling": {"use_gpu": True}}).training.device == "cuda"
    assert validate_config({}).training.device == "cpu"
    for training, scaling in (("cpu", True), ("cuda", False)):
        with pytest.raises(ConfigValidationError) as error:
            validate_config({"scaling": {"use_gpu": scaling}, "training": {"device": training}})
        message = str(error.value)
        assert f"training.device: {training} and scaling.use_gpu: {str(scaling).lower()}" in message
        assert "disagree. Fix: set scaling.use_gpu alone" in message


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """``levels`` nested lists of ``width`` aliases of the level below: width**levels values
    once expanded (387 million here), from a file of under a kilobyte."""
    lines = [f"    a0: &a0 [{', '.join(['x'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"    a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return "selector: {k: 5}\nvalidation:\n  model_params:\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (alias_bomb(), "expand to more than 1,000,000 YAML values"),
        ("validation:\n  model_params:\n    a: &x [1, *x]\n", "an alias on line 3 refers to"),
        ("validation: {model_params: {a: " + "[" * 5000 + "]" * 5000 + "}}\n", "nest deeper"),
    ],
    ids=["alias bomb", "recursive alias", "deep nesting"],
)
def test_hostile_yaml_is_refused_in_bounded_time_and_memory(
    tmp_path: Path, text: str, message: str
) -> None:
    """`cae-ray config check` on a YAML bomb: exit 2 within seconds, naming the limit and the
    fix (it grew past 900 MB and ran on before the limit)."""
    import subprocess
    import sys

    path = write(tmp_path, text)
    command = [sys.executable, "-m", "cae_ray.cli", "config", "check", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr and "Fix:" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_ordinary_aliases_and_long_feature_lists_still_load(tmp_path: Path) -> None:
    shared = "validation: {model_params: &p {max_iter: 50}}\nselector: {k: 3}\n"
    assert load_config(write(tmp_path, shared)).validation.model_params == {"max_iter": 50}
    names = "".join(f"    - feature_{i:06d}\n" for i in range(100_000))
    config = load_config(write(tmp_path, f"data:\n  path: x\n  features:\n{names}"))
    assert config.data is not None and isinstance(config.data.features, list)
    assert len(config.data.features) == 100_000


def test_a_config_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    from cae_ray.config.file import MAX_CONFIG_BYTES
    from cae_ray.errors import ConfigTooLargeError

    path = write(tmp_path, "selector: {k: 3}\n")
    with path.open("a") as file:
        file.truncate(MAX_CONFIG_BYTES + 1)  # a sparse file: no disk used
    with pytest.raises(ConfigTooLargeError, match="MAX_CONFIG_BYTES"):
        load_config(path)
