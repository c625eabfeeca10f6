"""The console's words for a run: what the validation gate compared with."""

from __future__ import annotations

import pytest
from rich.console import Console

from cae_ray.artifacts import RunDir
from cae_ray.cli.console import describe, summary_table
from cae_ray.config import validate_config
from cae_ray.records import RunRecord, Selection, StepOutcome, Verdict


def verdict(source: str) -> Verdict:
    """A passed verdict of 0.91 against a baseline of 0.90 (``source``)."""
    return Verdict.model_validate(
        {
            "passed": True,
            "reason": "within the tolerance",
            "metric": "accuracy",
            "baseline": {"source": source, "value": 0.9, "low": 0.88, "high": 0.92},
            "selected": {"value": 0.91, "low": 0.89, "high": 0.93},
            "values_per_repeat": {"baseline": [0.9], "selected": [0.91]},
            "difference": 0.01,
            "interval": {"low": -0.01, "high": 0.03, "confidence": 0.95, "resamples": 100},
            "tolerance": 0.01,
            "relative": False,
            "allowed_loss": 0.01,
            "worst_loss": 0.01,
            "model": {"name": "gbdt", "params": {}},
            "task": "classification",
            "k": 10,
            "n_features": 100,
            "validation_rows": 600,
            "repeats": 1,
            "selection_hash": "s",
            "validation_config_hash": "v",
            "data_fingerprint": "d",
            "seconds": 1.0,
            "cae_ray_version": "0",
        }
    )


@pytest.mark.parametrize(
    ("source", "word"),
    [
        ("gbdt on all features", "(all)"),
        ("given", "(given)"),
        ("top-10 principal components", "(PCA)"),
    ],
)
def test_the_progress_line_names_the_baseline_that_was_used(source, word) -> None:
    line = describe(verdict(source))
    assert line.endswith(f"0.9100 vs 0.9000 {word}")


def test_the_summary_says_a_given_baseline_is_given(tmp_path) -> None:
    config = validate_config({"data": {"path": str(tmp_path)}, "validation": {"baseline": 0.9}})
    run = RunDir(tmp_path)
    verdict("given").write(run)
    record = RunRecord(
        config_hash="c",
        run_dir=str(tmp_path),
        started_at="now",
        status="succeeded",
        steps={"validate": StepOutcome(status="done")},
        cae_ray_version="0",
    )
    console = Console(width=200, record=True)
    console.print(summary_table(record, str(tmp_path), config))
    text = console.export_text()
    assert "selected 0.9100, given 0.9000" in text
    assert "all features" not in text


def test_without_a_terminal_each_step_and_tenth_of_the_epochs_is_a_line_as_it_happens(
    tmp_path,
) -> None:
    import io

    from cae_ray.cli.console import LogLines, make_console, step_display
    from cae_ray.pipeline import StepEvent

    log = io.StringIO()
    config = validate_config({"data": {"path": str(tmp_path)}, "training": {"epochs": 40}})
    display = step_display(Console(file=log, width=80), config)  # a file: no terminal
    assert isinstance(display, LogLines)
    with display:
        display(StepEvent("select", "started"))
        assert log.getvalue() == "cae-ray select    started\n"  # now, not at the end
        for epoch in range(40):
            record = {"epoch": epoch, "loss": 1.0 / (epoch + 1), "mean_max": 0.5}
            display(StepEvent("select", "progress", progress=record))
        display(StepEvent("select", "done", result=selection(k=10, epochs=40)))
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


def selection(k: int, epochs: int) -> Selection:
    """A converged selection of ``k`` features after ``epochs`` epochs."""
    names = [f"f{i}" for i in range(2 * k)]
    return Selection(
        selected_features=names[:k],
        selected_indices=list(range(k)),
        scores=[1.0] * k + [0.0] * k,
        candidate_features=names,
        dropped_constant=[],
        k=k,
        method="ipcae",
        task="classification",
        collisions=0,
        converged=True,
        history=[{"epoch": e} for e in range(epochs)],
        num_workers=1,
        config_hash="c",
        data_fingerprint="d",
        seconds=1.0,
        cae_ray_version="0",
    ).sealed()
