"""The repo side of a prune: marks that survive the team's next ``feast apply``.

``feast apply`` makes the registry match the repo's Python definitions, so tags written only to
the registry are stripped by it. ``prune --apply`` therefore also records its marks in
``cae_ray_deprecations.yaml`` at the repo root, and one line in the repo's definitions applies
them whenever Feast imports the repo::

    from cae_ray.feast.overlay import annotate_all; annotate_all(globals())

It merges the deprecation tags into the module's FeatureView objects in place (so projections
defined in the repo share them) and adds each prune's FeatureService of kept features to the
module, so ``feast apply`` keeps it instead of deleting it. Light imports only: Feast imports
every definitions module of the repo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cae_ray.artifacts import write_text

OVERLAY = "cae_ray_deprecations.yaml"
HOOK = "annotate_all(globals())"
_TAG_PREFIX = "cae-ray/"


def read_overlay(repo: Path) -> dict[str, Any]:
    path = repo / OVERLAY
    if not path.exists():
        return {"runs": {}}
    loaded = yaml.safe_load(path.read_text()) or {}
    return {"runs": dict(loaded.get("runs") or {})}


def write_overlay(repo: Path, overlay: dict[str, Any]) -> None:
    header = (
        "# Written by `cae-ray prune --apply`; applied by annotate_all(globals()) in the repo's\n"
        "# definitions. Remove a run (or `cae-ray restore`) to take its marks back.\n"
    )
    write_text(repo / OVERLAY, header + yaml.safe_dump(overlay, sort_keys=True))


def has_hook(repo: Path) -> bool:
    """Whether any definitions module of the repo calls ``annotate_all(globals())``."""
    return any(HOOK in p.read_text(errors="ignore") for p in repo.rglob("*.py"))


def tags_of_view(overlay: dict[str, Any], view: str) -> dict[str, str]:
    """The tags all recorded runs put on ``view``, later runs last."""
    tags: dict[str, str] = {}
    for run_id, run in sorted(overlay["runs"].items(), key=lambda item: str(item[1]["at"])):
        features = run["deprecate"].get(view)
        if features:
            tags[_TAG_PREFIX + "last-run"] = run_id
            tags.update({f"{_TAG_PREFIX}deprecated.{f}": run_id for f in features})
    return tags


def annotate_all(namespace: dict[str, Any]) -> None:
    """Apply the repo's overlay to the Feast objects of a definitions module's ``globals()``."""
    from feast import FeatureService, FeatureView

    module_file = namespace.get("__file__")
    if module_file is None:
        return
    repo = _repo_root(Path(module_file).resolve().parent)
    overlay = read_overlay(repo)
    views = {v.name: v for v in namespace.values() if isinstance(v, FeatureView)}
    for name, view in views.items():
        view.tags.update(tags_of_view(overlay, name))
    for run_id, run in overlay["runs"].items():
        service = run["feature_service"]
        if not all(view in views for view in service["features"]):
            continue  # the views live in another module: that module's hook adds the service
        namespace[service["name"]] = FeatureService(
            name=service["name"],
            features=[views[v][features] for v, features in service["features"].items()],
            tags={_TAG_PREFIX + "last-run": run_id},
            description=service["description"],
        )


def _repo_root(start: Path) -> Path:
    for directory in (start, *start.parents):
        if (directory / "feature_store.yaml").exists():
            return directory
    return start
