"""The repo side of cae-ray's marks: what survives the team's next ``feast apply``.

``feast apply`` makes the registry match the repo's Python definitions, so tags written only to
the registry are stripped by it. cae-ray therefore keeps the current state of its marks in
``cae_ray_deprecations.yaml`` at the repo root, and one line in the repo's definitions applies
it whenever Feast imports the repo::

    from cae_ray.feast.overlay import annotate_all; annotate_all(globals())

The overlay holds the state after the latest applied run, not a history (the audit log is the
history):

- ``marks``: per view, each deprecated feature's mark: the run that first deprecated it and when
  (a feature that stays deprecated keeps its first date);
- ``last_run``: per view, the latest run that covered it;
- ``kept_service``: the one FeatureService of the latest run's selected features;
- ``retired``: features retired from the definitions (the hook drops those built by code);
- ``legacy_services``: FeatureServices of older cae-ray versions (one per run), kept until
  ``cae-ray feast remove-services`` removes them.

:func:`view_tags` is the one place that says which registry tags that state means. Light
imports only: Feast imports every definitions module of the repo.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from cae_ray.artifacts import write_text

OVERLAY = "cae_ray_deprecations.yaml"
HOOK = "annotate_all(globals())"
TAG_PREFIX = "cae-ray/"
LAST_RUN = TAG_PREFIX + "last-run"
SERVICE_AT = TAG_PREFIX + "at"
VERSION = 2


def deprecation_tag(feature: str) -> str:
    return f"{TAG_PREFIX}deprecated.{feature}"


def ours(tags: dict[str, str]) -> dict[str, str]:
    """The tags cae-ray owns among a view's."""
    return {key: value for key, value in tags.items() if key.startswith(TAG_PREFIX)}


def mark_value(mark: dict[str, str]) -> str:
    """A mark as a tag value: ``<run id>@<UTC time first set>``."""
    return f"{mark['run']}@{mark['since']}"


def parse_mark(value: str) -> dict[str, str | None]:
    """A tag value back as a mark; ``since`` is None for marks of cae-ray before 0.2."""
    run, _, since = value.partition("@")
    return {"run": run, "since": since or None}


def empty() -> dict[str, Any]:
    return {
        "version": VERSION,
        "marks": {},
        "last_run": {},
        "kept_service": None,
        "retired": {},
        "legacy_services": {},
    }


def read_overlay(repo: Path) -> dict[str, Any]:
    path = repo / OVERLAY
    if not path.exists():
        return empty()
    loaded = yaml.safe_load(path.read_text()) or {}
    if "runs" in loaded and "version" not in loaded:
        return _from_runs(loaded["runs"] or {})
    return {**empty(), **{key: loaded[key] for key in empty() if loaded.get(key) is not None}}


def _from_runs(runs: dict[str, Any]) -> dict[str, Any]:
    """The state an overlay of cae-ray before 0.2 (every run's marks and service) stood for."""
    state = empty()
    for run_id, run in sorted(runs.items(), key=lambda item: str(item[1]["at"])):
        since = str(run["at"])[:19] + "Z"
        for view, features in run["deprecate"].items():
            marks = state["marks"].setdefault(view, {})
            for feature in features:
                marks.setdefault(feature, {"run": run_id, "since": since})
            state["last_run"][view] = run_id
        service = run["feature_service"]
        state["legacy_services"][service["name"]] = {**service, "run": run_id}
    return state


def write_overlay(repo: Path, overlay: dict[str, Any]) -> None:
    header = (
        "# Written by cae-ray (prune --apply, retire --apply, restore); applied by\n"
        "# annotate_all(globals()) in the repo's definitions. Undo with `cae-ray restore`.\n"
    )
    write_text(repo / OVERLAY, header + yaml.safe_dump(overlay, sort_keys=True))


def has_hook(repo: Path) -> bool:
    """Whether any definitions module of the repo calls ``annotate_all(globals())``."""
    return any(HOOK in p.read_text(errors="ignore") for p in repo.rglob("*.py"))


def view_tags(overlay: dict[str, Any], view: str) -> dict[str, str]:
    """The cae-ray tags the overlay's state puts on ``view``."""
    tags = {deprecation_tag(f): mark_value(m) for f, m in overlay["marks"].get(view, {}).items()}
    if view in overlay["last_run"]:
        tags[LAST_RUN] = overlay["last_run"][view]
    return tags


def services(overlay: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every FeatureService the overlay keeps: the kept one and older versions' ones."""
    kept = overlay["kept_service"]
    return {**overlay["legacy_services"], **({kept["name"]: kept} if kept else {})}


def applied_k(repo: Path, kept_service: str) -> int | None:
    """How many features the latest applied prune kept in ``kept_service`` (a model's K as the
    registry knows it), or None when no prune of that service was applied in ``repo``."""
    service = services(read_overlay(repo)).get(kept_service)
    if service is None:
        return None
    return sum(len(features) for features in service["features"].values())


def service_tags(service: dict[str, Any]) -> dict[str, str]:
    tags = {LAST_RUN: service["run"]}
    if service.get("at"):
        tags[SERVICE_AT] = service["at"]
    return tags


def annotate_all(namespace: dict[str, Any]) -> None:
    """Apply the repo's overlay to the Feast objects of a definitions module's ``globals()``."""
    from feast import FeatureService, FeatureView

    module_file = namespace.get("__file__")
    if module_file is None:
        return
    repo = _repo_root(Path(module_file).resolve().parent)
    overlay = read_overlay(repo)
    here = _views(namespace.values(), FeatureView)
    for name, view in here.items():
        _drop_fields(view, set(overlay["retired"].get(name, {})))
        view.tags.update(view_tags(overlay, name))
    before = _views_imported_before(repo, namespace, FeatureView)
    views = {**before, **here}
    for name, service in services(overlay).items():
        wanted = set(service["features"])
        # Added once, by the module that completes its views (Feast imports them in turn).
        if wanted <= set(views) and not wanted <= set(before):
            namespace[name] = FeatureService(
                name=name,
                features=[views[v][features] for v, features in service["features"].items()],
                tags=service_tags(service),
                description=service["description"],
            )


def _views(objects: Any, kind: Any) -> dict[str, Any]:
    return {v.name: v for v in objects if isinstance(v, kind)}


def _views_imported_before(repo: Path, namespace: dict[str, Any], kind: Any) -> dict[str, Any]:
    """The feature views of the repo's other definitions modules imported so far."""
    found: dict[str, Any] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path is None or vars(module) is namespace:
            continue
        if Path(path).resolve().is_relative_to(repo):
            found |= _views(vars(module).values(), kind)
    return found


def _drop_fields(view: Any, retired: set[str]) -> None:
    """Take retired features built by code out of ``view`` (literal ones left the source)."""
    if not retired:
        return
    # `schema` is derived from these two: features and the view's own projection of them.
    view.features = [f for f in view.features if f.name not in retired]
    view.projection.features = [f for f in view.projection.features if f.name not in retired]


def _repo_root(start: Path) -> Path:
    for directory in (start, *start.parents):
        if (directory / "feature_store.yaml").exists():
            return directory
    return start
