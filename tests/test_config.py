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
