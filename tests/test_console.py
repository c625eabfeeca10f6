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


def test_without_a_terminal_each_step_and_tenth_of_the_epochs_is_a_line_as_it_happens(
    tmp_path,
) -> None:
    import io

    from cae_ray.console import LogLines, make_console, step_display
    from cae_ray.runtime.progress import StepEvent

    log = io.StringIO()
    config = validate_config({"data": {"path": str(tmp_path)}, "training": {"epochs": 40}})
    display = step_display(Console(file=log, width=80), config)  # a file: no terminal
    assert isinstance(display, LogLines)
    with display:
        display(StepEvent("select", "started", {}))
        assert log.getvalue() == "cae-ray select    started\n"  # now, not at the end
        for epoch in range(40):
            record = {"epoch": epoch, "loss": 1.0 / (epoch + 1), "mean_max": 0.5}
            display(StepEvent("select", "progress", record))
        done = {"k": 10, "epochs": 40, "converged": True}
        display(StepEvent("select", "done", done))
    lines = log.getvalue().splitlines()
    epochs = [line for line in lines if " epoch " in line]
    assert len(epochs) == 11  # the first, then every 4th of 40
    assert epochs[-1].startswith("cae-ray select    epoch 40/40  loss 0.0250")
    assert lines[-1] == "cae-ray select    done: k=10, 40 epochs, converged"
    long = "x" * 300
    wide = make_console()
    assert wide.soft_wrap  # a message is never hard-wrapped
    wide_log = io.StringIO()
    wide.file = wide_log
    wide.print(long)
    assert wide_log.getvalue() == long + "\n"
