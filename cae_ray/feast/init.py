"""`cae-ray init`: a commented config for an existing Feast repo, written from its registry.

The repo's feature views become the candidates, except views that look like labels (their
name or every field says label or target): a label among the candidates would be selected and
leak into the model. The label, the entity rows and the overlay hook are what the user fills
in or adds; the config says where, and starts with ``prune: plan`` (nothing is written to the
registry until the user says ``apply``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cae_ray.feast.overlay import has_hook
from cae_ray.feast.store import open_store

LABEL_WORDS = re.compile(r"label|target|outcome", re.IGNORECASE)
"""Names that say "this is what a model predicts", not a feature to select."""

HOOK_LINE = "from cae_ray.feast.overlay import annotate_all; annotate_all(globals())"


@dataclass(frozen=True)
class View:
    """A feature view of the repo, as the config needs it."""

    name: str
    fields: list[str]
    join_keys: list[str]

    @property
    def looks_like_labels(self) -> bool:
        return bool(LABEL_WORDS.search(self.name)) or (
            bool(self.fields) and all(LABEL_WORDS.search(f) for f in self.fields)
        )


@dataclass(frozen=True)
class RepoSummary:
    """What `cae-ray init` read from the repo."""

    repo: Path
    project: str
    views: list[View]
    has_hook: bool
    services: list[str] = field(default_factory=list)

    @property
    def candidates(self) -> list[View]:
        return [v for v in self.views if not v.looks_like_labels]

    @property
    def label_views(self) -> list[View]:
        return [v for v in self.views if v.looks_like_labels]

    @property
    def join_keys(self) -> list[str]:
        return sorted({key for view in self.views for key in view.join_keys})


def read_repo(repo: Path) -> RepoSummary:
    """The repo's feature views (with their fields and join keys), services and hook."""
    store = open_store(str(repo))
    project = store.project
    views = [
        View(
            name=view.name,
            fields=[f.name for f in view.features],
            join_keys=sorted(column.name for column in view.entity_columns),
        )
        for view in sorted(store.list_feature_views(), key=lambda v: v.name)
    ]
    services = sorted(s.name for s in store.list_feature_services())
    return RepoSummary(repo.resolve(), project, views, has_hook(repo), services)


def suggested_k(n_features: int) -> int:
    """About a tenth of the candidates, between 1 and 50: a start to tune, not a rule."""
    return max(1, min(50, round(n_features / 10), n_features - 1))


def config_text(
    summary: RepoSummary, entities: str | None = None, target: str | None = None
) -> str:
    """The commented YAML config for ``summary``'s repo."""
    n_features = sum(len(v.fields) for v in summary.candidates)
    keys = ", ".join(summary.join_keys) or "the entity join keys"
    lines = [
        f"# cae-ray config for the Feast repo {summary.repo} (project {summary.project}),",
        "# written by `cae-ray init`. Check it: `cae-ray config check <this file>`; run it:",
        "# `cae-ray run <this file>`; every key: `cae-ray config schema`, docs/configuration.md.",
        "feast:",
        f"  repo: {summary.repo}",
        f"  # The candidates: {len(summary.candidates)} feature view(s), {n_features:,} features.",
        "  features:",
        *_view_lines(summary),
        "  # The entity rows to select on: a Parquet file (or directory) with the columns",
        f"  # {keys}, event_timestamp and the label (data.target below). Instead, `start:",
        "  # 2026-01-01` takes every row of the views since that date.",
        f"  entities: {entities or 'entity_rows.parquet'}"
        + ("" if entities else "   # FILL IN: the path of your entity rows"),
        "  prune: plan           # plan: save what would be marked; apply: mark it in the registry",
        "  kept_service: cae_ray_selected   # the FeatureService that will list the kept features",
        *_hook_lines(summary),
        "data:",
        *_target_lines(summary, target),
        "selector:",
        f"  k: {suggested_k(n_features)}   # how many features to keep (of {n_features:,})",
        "scaling:",
        "  num_workers: 1       # Ray Train workers; scaling.address joins a running cluster",
        "validation:",
        "  tolerance: 0.02      # the most the selected features may lose against all of them",
    ]
    return "\n".join(lines) + "\n"


def _view_lines(summary: RepoSummary) -> list[str]:
    lines = [f"    - {v.name}   # {len(v.fields):,} features" for v in summary.candidates]
    for view in summary.label_views:
        lines.append(
            f"    # - {view.name}   # left out: looks like labels ({', '.join(view.fields[:4])});"
            " a label among the candidates leaks"
        )
    return lines


def _hook_lines(summary: RepoSummary) -> list[str]:
    if summary.has_hook:
        return ["  # The repo's definitions call annotate_all(globals()): marks survive apply."]
    return [
        "  # ADD THIS LINE at the end of a definitions module, so that `feast apply` keeps the",
        "  # marks cae-ray sets (without it, the next apply removes them):",
        f"  #   {HOOK_LINE}",
    ]


def _target_lines(summary: RepoSummary, target: str | None) -> list[str]:
    if target:
        return [f"  target: {target}   # the label column of the entity rows"]
    found = ", ".join(f"{v.name}: {', '.join(v.fields[:4])}" for v in summary.label_views)
    hint = [f"  # Label-like views in the repo: {found}."] if found else []
    return [
        "  # FILL IN the label: the column of the entity rows the kept features must predict.",
        *hint,
        "  # null selects without a label (the features that reconstruct all the others).",
        "  target: null",
    ]


def describe(summary: RepoSummary) -> dict[str, Any]:
    """What init found, for --json and the closing lines."""
    return {
        "repo": str(summary.repo),
        "project": summary.project,
        "candidates": [v.name for v in summary.candidates],
        "label_views": [v.name for v in summary.label_views],
        "features": sum(len(v.fields) for v in summary.candidates),
        "has_hook": summary.has_hook,
    }
