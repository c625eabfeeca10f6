"""The console's words for a run: what the validation gate compared with."""

from __future__ import annotations

import pytest
from rich.console import Console

from cae_ray.config import validate_config
from cae_ray.console import describe, summary_table

VALIDATE = {"passed": True, "selected": 0.91, "baseline": 0.9}


@pytest.mark.parametrize(
    ("source", "word"),
    [
        ("gbdt on all features", "(all)"),
        ("given", "(given)"),
        ("top-10 principal components", "(PCA)"),
    ],
)
def test_the_progress_line_names_the_baseline_that_was_used(source, word) -> None:
    line = describe("validate", {**VALIDATE, "baseline_source": source})
    assert line.endswith(f"0.910 vs 0.900 {word}")


def test_the_summary_says_a_given_baseline_is_given(tmp_path) -> None:
    config = validate_config({"data": {"path": str(tmp_path)}, "validation": {"baseline": 0.9}})
    validate = {
        **VALIDATE,
        "metric": "accuracy",
        "difference": 0.01,
        "interval": {"low": -0.01, "high": 0.03},
        "baseline_source": "given",
    }
    record = {"status": "succeeded", "steps": {"validate": validate}}
    console = Console(width=200, record=True)
    console.print(summary_table(record, str(tmp_path), config))
    text = console.export_text()
    assert "selected 0.9100, given 0.9000" in text
    assert "all features" not in text
