"""The run report, written from real run dirs: the 8x8 digits served by a real Feast repo and run
through export -> select -> validate -> prune, and a plain selection on a wide table."""

from __future__ import annotations

import base64
import csv
import html
import json
import re
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cae_ray.artifacts import EXPORT_DIR, EXPORT_MANIFEST, PRUNE_PLAN, VALIDATION, RunDir
from cae_ray.config import Config, validate_config
from cae_ray.errors import NoSelectionError
from cae_ray.feast.entities import ROW_ID
from cae_ray.pipeline import export, prune, select, validate
from cae_ray.report.figures import pixel_grid
from cae_ray.report.page import feature_rows, load_run, write_report
from tests.feast_repo import REGISTRIES, store_yaml

PNG = b"\x89PNG\r\n\x1a\n"
# Train local mode (no worker group to start) and a few epochs: the report needs artifacts,
# not a good selection.
FAST: dict[str, Any] = {
    "selector": {"k": 6},
    "training": {"epochs": 3, "batch_size": 64},
    "scaling": {"num_workers": 0},
}


def make_digits_repo(directory: Path, X: np.ndarray, y: np.ndarray, run: Path) -> Config:
    """A Feast repo with one view of the 64 pixels `px_00`..`px_63`, and a config that exports
    them into ``run`` and selects from there."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32

    repo = directory / "repo"
    (repo / "data").mkdir(parents=True)
    yaml_text = store_yaml() + REGISTRIES["file"]
    (repo / "feature_store.yaml").write_text(yaml_text)
    names = [f"px_{j:02d}" for j in range(X.shape[1])]
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    frame = pd.DataFrame(X, columns=names).assign(image_id=np.arange(len(y)), event_timestamp=when)
    frame.to_parquet(repo / "data" / "digits.parquet")
    image = Entity(name="image", join_keys=["image_id"], value_type=ValueType.INT64)
    source = FileSource(
        path=str(repo / "data" / "digits.parquet"), timestamp_field="event_timestamp"
    )
    schema = [Field(name=n, dtype=Float32) for n in names]
    view = FeatureView(name="digits", entities=[image], schema=schema, source=source)
    FeatureStore(repo_path=str(repo)).apply([image, view])
    entities = directory / "entities.parquet"
    rows = {"image_id": np.arange(len(y)), "event_timestamp": when + timedelta(days=1), "label": y}
    pd.DataFrame(rows).to_parquet(entities)
    return validate_config(
        {
            "feast": {"repo": str(repo), "entities": str(entities), "features": ["digits"]},
            "data": {
                "path": str(run / EXPORT_DIR),
                "features": "digits__*",
                "target": "label",
                "row_key": ROW_ID,
            },
            **FAST,
            # mlp keeps a held-out curve (gbdt stops early only beyond 10,000 rows)
            "validation": {"tolerance": 1.0, "bootstrap": 100, "epochs": 2, "model": "mlp"},
        }
    )


@pytest.fixture(scope="module")
def pixel_run(ray_cluster, digits, tmp_path_factory) -> tuple[Path, Config]:
    """Every artifact of a real run: Feast export, selection, a passed gate, applied marks."""
    directory = tmp_path_factory.mktemp("report")
    run = directory / "run"
    X, y = digits
    config = make_digits_repo(directory, X, y, run)
    export(config, run)
    select(config, run)
    assert validate(config, run).passed  # a loss of at most 1.0 always passes
    prune(config, run, apply=True)
    return run, config


def artifact(run: Path, name: str) -> dict:
    return json.loads((run / name).read_text())


@pytest.mark.ray
@pytest.mark.feast
def test_report_of_a_full_run_is_self_contained_and_complete(pixel_run) -> None:
    run, config = pixel_run
    page_path = Path(write_report(RunDir(run), config))
    page = page_path.read_text()
    selection, verdict = artifact(run, "selection.json"), artifact(run, VALIDATION)
    plan = artifact(run, PRUNE_PLAN)

    assert page_path == run / "report" / "report.html"
    # Opens offline: no remote URL, no script or stylesheet from elsewhere; every image is an
    # embedded PNG, the very bytes of the file written beside the page.
    assert "http://" not in page and "https://" not in page
    assert "<script src" not in page and "<link" not in page
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    files = {p.name: p.read_bytes() for p in (run / "report").glob("*.png")}
    drawn = {"training", "temperature", "confidence", "scores", "selection", "validation", "gate"}
    assert set(files) == {f"{name}.png" for name in drawn}
    assert all(data.startswith(PNG) for data in files.values())
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    embedded = [base64.b64decode(s.removeprefix("data:image/png;base64,")) for s in sources]
    assert sorted(embedded) == sorted(files.values())

    assert "PASSED" in page and "FAILED" not in page
    assert verdict["reason"] in html.unescape(page)  # the gate's sentence: why it passed
    assert all(name in page for name in selection["selected_features"])
    assert f"{selection['k']} of 64" in page
    assert verdict["metric"] in page
    for value in (verdict["baseline"]["value"], verdict["selected"]["value"]):
        assert f"{value:.4g}" in page
    deprecated = plan["deprecate"]["digits"]
    assert len(deprecated) == 64 - selection["k"] and all(f in page for f in deprecated)
    assert plan["feature_service"] in page
    # The 8x8 digits have blank corner pixels: dropped as constant, and said so.
    assert f"{len(selection['dropped_constant'])} constant dropped" in page
    # What a reader needs to act: the run id, the exact undo, the config that made it.
    assert f"run id <code>{plan['run_id']}</code>" in page
    restore = f"cae-ray restore --repo {config.feast.repo} --run-id {plan['run_id']}"
    assert restore in html.unescape(page)
    assert "selector:\n  method: ipcae\n  k: 6\n" in html.unescape(page)
    # The registry's owner reads first what leaves production, what it weighs and when it
    # retires; the training curves come below.
    text = html.unescape(page)
    assert text.index("<h2>For the registry's owner</h2>") < text.index("<h2>Training</h2>")
    manifest = artifact(run, EXPORT_MANIFEST)
    weight = sum(manifest["value_bytes"][f"digits__{f}"] for f in deprecated)
    assert weight > 0
    assert f"{len(deprecated)} feature(s) leave production" in text
    assert f"{weight:,} bytes per entity row." in text
    assert f"{len(deprecated)} newly deprecated, 0 back in use" in text
    applied_at = datetime.fromisoformat(plan["at"].replace("Z", "+00:00"))
    due = applied_at + config.feast.grace
    assert f"become due to retire on {due:%Y-%m-%d} (grace period 30 day(s))" in text


@pytest.mark.ray
@pytest.mark.feast
def test_every_feature_is_ranked_with_a_meaningful_score_and_its_change(pixel_run) -> None:
    run, config = pixel_run
    write_report(RunDir(run), config)
    selection, plan = artifact(run, "selection.json"), artifact(run, PRUNE_PLAN)
    rows = list(csv.DictReader((run / "report" / "features.csv").open()))

    assert [r["name"] for r in rows[: selection["k"]]] == sorted(
        selection["selected_features"], key=lambda n: -float(rows_by(rows)[n]["score"])
    )  # the picks rank first, by score, whatever their score against the runners-up
    assert [int(r["rank"]) for r in rows] == list(range(1, 65))
    assert {r["name"] for r in rows} == set(selection["candidate_features"])
    kept = {r["name"] for r in rows if r["status"] == "kept"}
    assert kept == set(selection["selected_features"])
    assert {r["view"] for r in rows} == {"digits"}
    # Scores are probabilities with 4 decimals: no 1e-12 float noise.
    assert all(0 <= float(r["score"]) <= 1 and "e" not in r["score"] for r in rows)
    # Against the registry the prune found: a fresh repo had no marks, so all are new.
    changes: dict[str, set[str]] = {}
    for r in rows:
        changes.setdefault(r["status"], set()).add(r["change"])
    assert changes == {"kept": {"unchanged"}, "deprecated": {"newly deprecated"}}
    assert sum(len(v) for v in plan["added"].values()) == 64 - selection["k"]


def rows_by(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {r["name"]: r for r in rows}


@pytest.mark.ray
def test_report_of_a_plain_selection_with_a_partial_run_json(
    ray_cluster, wide_dataset, tmp_path
) -> None:
    path, _ = wide_dataset
    data = {"path": str(path), "features": "f_*", "target": "label", "row_key": "id"}
    selection = select(validate_config({"data": data, **FAST}), tmp_path)
    # `cae-ray run` writes run.json as it goes: a run stopped after its select step has no
    # validate step; every name read from it is escaped.
    steps = {
        "select": {"status": "done", "seconds": 1.5},
        "prune": {"status": "skipped", "reason": "the gate failed"},
        "<b>odd</b>": {"status": "done"},
    }
    run = {**RUN_FIELDS, "run_dir": str(tmp_path), "steps": steps}
    (tmp_path / "run.json").write_text(json.dumps(run))

    page = Path(write_report(RunDir(tmp_path))).read_text()
    assert "not validated" in page and "PASSED" not in page
    assert "no <code>prune.json</code>" in page
    assert all(name in page for name in selection.selected_features)
    assert "&lt;b&gt;odd&lt;/b&gt;" in page and "<b>odd</b>" not in page
    assert "the gate failed" in page
    files = {p.name for p in (tmp_path / "report").glob("*.png")}
    # 200 features are not a square image; not validated: no gate figures.
    assert files == {"training.png", "temperature.png", "confidence.png", "scores.png"}


# The fields of the records (cae_ray/records.py) that the hand-written ones below do not set.
RUN_FIELDS: dict[str, Any] = {
    "config_hash": "c0ffee",
    "started_at": "2026-12-06T10:00:00+00:00",
    "cae_ray_version": "0.0.0",
}
SELECTION_FIELDS: dict[str, Any] = {
    "collisions": 0,
    "num_workers": 1,
    "config_hash": "c0ffee",
    "data_fingerprint": "d474",
    "seconds": 1.0,
    "cae_ray_version": "0.0.0",
}
VERDICT_FIELDS: dict[str, Any] = {
    "values_per_repeat": {"baseline": [0.9], "selected": [0.7]},
    "tolerance": 0.01,
    "relative": False,
    "model": {"name": "gbdt", "params": {}},
    "task": "classification",
    "k": 1,
    "n_features": 3,
    "validation_rows": 100,
    "repeats": 1,
    "selection_hash": "feedc0de",
    "validation_config_hash": "c0ffee",
    "data_fingerprint": "d474",
    "seconds": 1.0,
    "cae_ray_version": "0.0.0",
}


def test_feature_names_are_escaped_on_the_page(tmp_path) -> None:
    odd = "<script>alert(1)</script>"
    names = [odd, "age", "income"]
    sure = {"mean_max": 0.5, "min_max": 0.4}
    history = [{"epoch": e, "loss": 1 / (e + 1), "temperature": 0.5**e, **sure} for e in range(3)]
    selection = {
        **SELECTION_FIELDS,
        "selected_features": [odd, "age"],
        "selected_indices": [0, 1],
        "candidate_features": names,
        "scores": [0.9, 0.8, 0.1],
        "k": 2,
        "method": "cae",
        "task": "classification",
        "history": history,
        "selection_hash": "0123abcd",
        "converged": True,
        "dropped_constant": [],
    }
    (tmp_path / "selection.json").write_text(json.dumps(selection))

    page = Path(write_report(RunDir(tmp_path))).read_text()
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "2 of 3" in page and "not validated" in page


def test_a_run_dir_without_selection_says_what_to_run(tmp_path) -> None:
    with pytest.raises(NoSelectionError, match=r"has no selection\.json.*cae-ray select"):
        write_report(RunDir(tmp_path))
    assert not (tmp_path / "report").exists()


def test_pixel_grid_reads_square_and_row_column_names() -> None:
    mnist = pixel_grid([f"f_{p:03d}" for p in range(784)])
    assert mnist is not None and mnist[:2] == (28, 28) and mnist[2][29] == (1, 1)
    one_based = pixel_grid([f"mnist__pixel{p}" for p in range(1, 65)])
    assert one_based is not None and one_based[2][0] == (0, 0)
    rows_cols = pixel_grid([f"p_{r}_{c}" for r in range(6) for c in range(5)])
    assert rows_cols is not None and rows_cols[:2] == (6, 5)

    assert pixel_grid([f"f_{j:04d}" for j in range(200)]) is None  # not a square
    assert pixel_grid([f"f_{j}" for j in range(9)]) is None  # too small to be an image
    assert pixel_grid([f"f_{j}" for j in range(1, 64)] + ["g_0"]) is None  # two prefixes
    assert pixel_grid([f"f_{j}" for j in range(63)] + ["f_99"]) is None  # a gap
    assert pixel_grid(["age", "income", *[f"f_{j}" for j in range(14)]]) is None


def test_a_weak_baseline_and_a_failed_gate_say_why_on_the_page(tmp_path) -> None:
    names = ["age", "income", "tenure"]
    sure = {"mean_max": 0.9, "min_max": 0.8}
    history = [{"epoch": e, "loss": 1 / (e + 1), "temperature": 0.5**e, **sure} for e in range(3)]
    selection = {
        **SELECTION_FIELDS,
        "selected_features": ["income"],
        "selected_indices": [1],
        "candidate_features": names,
        "scores": [1e-12, 0.31, 0.99],  # a polished pick can score below a runner-up
        "k": 1,
        "method": "ipcae",
        "task": "classification",
        "history": history,
        "selection_hash": "feedc0de",
        "converged": False,
        "dropped_constant": [],
    }
    reason = "accuracy on the selected features is 0.2 worse than the baseline 0.9"
    weak = "The baseline's accuracy 0.9 trails the stock reference 0.95 by 0.05."
    validation = {
        **VERDICT_FIELDS,
        "metric": "accuracy",
        "passed": False,
        "reason": reason,
        "baseline": {"source": "all", "value": 0.9, "low": 0.88, "high": 0.92},
        "selected": {"value": 0.7, "low": 0.67, "high": 0.73},
        "reference": {"value": 0.95, "low": 0.93, "high": 0.97},
        "baseline_check": {
            "reference_model": "gbdt",
            "weak": True,
            "required": False,
            "trails_by": 0.05,
            "slack": 0.02,
            "reason": weak,
        },
        "difference": -0.2,
        "interval": {"low": -0.25, "high": -0.15, "confidence": 0.95, "resamples": 200},
        "allowed_loss": 0.01,
        "worst_loss": 0.25,
        "fits": {},
    }
    (tmp_path / "selection.json").write_text(json.dumps(selection))
    (tmp_path / "validation.json").write_text(json.dumps(validation))

    page = Path(write_report(RunDir(tmp_path))).read_text()
    assert "FAILED" in page and f'<p class="reason fail" id="gate">{reason}</p>' in page
    assert 'id="weak-baseline"' in page and weak in html.unescape(page)
    assert "validation.require_fair_baseline" in page  # what to do about it
    assert "cae-ray restore" not in page  # nothing was applied: nothing to undo
    rows = list(csv.DictReader((tmp_path / "report" / "features.csv").open()))
    assert [(r["name"], r["status"], r["score"]) for r in rows] == [
        ("income", "selected", "0.31"),
        ("tenure", "not selected", "0.99"),
        ("age", "not selected", "0"),
    ]


# --- in a real browser ----------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"  # Debian's package, installed by `make test` (see Makefile)
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
"""Screenshots of a failed browser test are kept here (CI keeps this folder; git ignores it)."""


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="the browser extra is missing")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no {CHROMIUM}: `make test` installs Debian's chromium package")
    with playwright.sync_playwright() as p:
        # As root in a container, without GPU; no background traffic (the network is closed).
        flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        flags += ["--disable-component-update", "--disable-sync", "--no-first-run"]
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=flags)
        yield chromium
        chromium.close()


@contextmanager
def opened(browser, page_path: Path, width: int, shot: Path):
    """The report in a page ``width`` CSS pixels wide; its screenshot is kept when the body
    fails, and scripting errors fail it."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_path.as_uri())
    try:
        yield page
        assert not errors, errors
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / shot.name), full_page=True)
        raise
    finally:
        page.close()


@pytest.mark.ray
@pytest.mark.feast
@pytest.mark.parametrize("width", [1280, 768, 390])
def test_the_report_fits_laptop_tablet_and_phone_screens(pixel_run, browser, width) -> None:
    run, config = pixel_run
    page_path = Path(write_report(RunDir(run), config))
    with opened(browser, page_path, width, Path(f"report-{width}px.png")) as page:
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scroll
        # Every figure is at least 300 px wide, or as wide as the box it sits in.
        figures = page.evaluate(
            """[...document.images].map(i => [i.className, i.getBoundingClientRect().width,
                 i.parentElement.getBoundingClientRect().width])"""
        )
        assert len(figures) == 7
        for name, shown, room in figures:
            assert shown >= 300 or shown >= room - 40, (name, shown, room)  # less its padding
        # No text smaller than 12 px.
        smallest = page.evaluate(
            """Math.min(...[...document.querySelectorAll('body *')]
                 .filter(e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
                 .filter(e => e.getClientRects().length)
                 .map(e => parseFloat(getComputedStyle(e).fontSize)))"""
        )
        assert smallest >= 12


@pytest.mark.ray
@pytest.mark.feast
def test_the_feature_table_searches_sorts_and_downloads(pixel_run, browser) -> None:
    run, config = pixel_run
    page_path = Path(write_report(RunDir(run), config))
    written = (run / "report" / "features.csv").read_text()
    with opened(browser, page_path, 390, Path("report-table.png")) as page:
        table = page.locator("#feature-table tbody tr")
        assert table.count() == 64
        page.fill("#feature-search", "px_1")
        shown = table.locator("td.name").all_inner_texts()
        assert sorted(shown) == [f"digits__px_{i}" for i in range(10, 20)]
        assert "10 of 64 features" in page.inner_text("#feature-count")
        page.fill("#feature-search", "")
        page.click("#feature-table th button[data-column=score]")  # best first
        scores = [float(s) for s in table.locator("td:nth-child(5)").all_inner_texts()[:10]]
        assert scores == sorted(scores, reverse=True) and table.count() == 64
        page.click("#feature-table th button[data-column=score]")  # again: worst first
        assert table.locator("td:nth-child(5)").first.inner_text() == "constant"
        # The link's CSV is made in the page, from the same rows as the file beside it.
        made = page.evaluate(
            "fetch(document.getElementById('feature-csv').href).then(r => r.text())"
        )
        assert made == written


def test_the_change_column_reads_the_marks_the_prune_found(tmp_path) -> None:
    """A second weekly run: ``income`` was deprecated by the last run and is kept again, ``age``
    stays deprecated, ``tenure`` is newly deprecated (the prune's ``added`` / ``removed``)."""
    names = ["age", "income", "tenure", "visits"]
    selection = {
        **SELECTION_FIELDS,
        "method": "cae",
        "task": "classification",
        "converged": True,
        "history": [],
        "selected_features": ["customers__income", "customers__visits"],
        "selected_indices": [1, 3],
        "candidate_features": [f"customers__{n}" for n in names],
        "scores": [0.1, 0.9, 0.2, 0.8],
        "k": 2,
        "selection_hash": "0badcafe",
        "dropped_constant": [],
    }
    prune = {
        "run_id": "0badcafe",
        "project": "shop",
        "feature_service": "cae_ray_selected",
        "validation": {"passed": True},
        "applied": True,
        "keep": {"customers": ["income", "visits"]},
        "deprecate": {"customers": ["age", "tenure"]},
        "added": {"customers": ["tenure"]},
        "removed": {"customers": ["income"]},
    }
    (tmp_path / "selection.json").write_text(json.dumps(selection))
    (tmp_path / "prune.json").write_text(json.dumps(prune))

    rows = feature_rows(load_run(RunDir(tmp_path)))
    assert [(r["name"], r["view"], r["status"], r["change"]) for r in rows] == [
        ("customers__income", "customers", "kept", "mark removed"),
        ("customers__visits", "customers", "kept", "unchanged"),
        ("customers__tenure", "customers", "deprecated", "newly deprecated"),
        ("customers__age", "customers", "deprecated", "deprecated before"),
    ]


def test_the_scores_figure_separates_picks_from_runners_up_on_a_log_scale() -> None:
    """10 picks at 1.000 and 30 runners-up at < 0.001 (issue 40): on a linear axis the
    runners-up are slivers; on the log axis each bar's length shows its order of magnitude and
    a dashed line marks the best runner-up."""
    from cae_ray.report.figures import SCORE_FLOOR, scores_figure

    picks = [{"name": f"p{i}", "selected": True, "score": 1.0} for i in range(10)]
    runners = [{"name": f"r{i}", "selected": False, "score": 5e-4 / (i + 1)} for i in range(30)]
    rows = [{**row, "score_text": f"{row['score']:.4f}"} for row in picks + runners]
    (ax,) = scores_figure(rows).axes
    assert ax.get_xscale() == "log"
    from matplotlib.patches import Rectangle

    widths = [bar.get_width() for bar in ax.patches if isinstance(bar, Rectangle)]
    assert len(widths) == 30 and min(widths) >= SCORE_FLOOR  # 10 picks + the best 20 runners-up
    assert max(widths) / min(widths) >= 1e3  # a pick is visibly orders of magnitude longer
    (line,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert list(np.asarray(line.get_xdata())) == [5e-4, 5e-4]  # at the best runner-up
