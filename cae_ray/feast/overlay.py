"""The repo side of cae-ray's marks: what survives the team's next ``feast apply``.

``feast apply`` makes the registry match the repo's Python definitions, so tags written only to
the registry are stripped by it. cae-ray therefore keeps the current state of its marks in
``cae_ray_deprecations.yaml`` at the repo root, and one line in the repo's definitions applies
it whenever Feast imports the repo::

    from cae_ray.feast.overlay import annotate_all; annotate_all(globals())

The overlay (format 3) holds the state after the latest applied runs, not a history (the audit
log is the history):

- ``models``: per model (named by its config's ``feast.kept_service``), the state its latest
  applied run left: label, run, date, kept and left-out features (:mod:`cae_ray.feast.models`).
  The deprecation marks are derived from all of them (:func:`cae_ray.feast.models.derive_marks`);
  each model's kept features are its kept FeatureService;
- ``readers``: per view, each marked feature that FeatureServices of the team's still read, and
  which (found in the registry by the latest transaction);
- ``retired``: features retired from the definitions (the hook drops those built by code);
- ``legacy_services``: FeatureServices of older cae-ray versions (one per run), kept until
  ``cae-ray feast remove-services`` removes them.

An overlay of format 2 (one kept service, marks set by the latest run) or of cae-ray before 0.2
reads as one model, named after its kept service. :func:`all_view_tags` is the one place that
says which registry tags that state means. Light imports only: Feast imports every definitions
module of the repo.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from cae_ray.artifacts import write_text
from cae_ray.feast.models import derive_marks, last_runs, model_of_v2

OVERLAY = "cae_ray_deprecations.yaml"
HOOK = "annotate_all(globals())"
TAG_PREFIX = "cae-ray/"
LAST_RUN = TAG_PREFIX + "last-run"
SERVICE_AT = TAG_PREFIX + "at"
READ_BY = TAG_PREFIX + "read-by."
VERSION = 3
DEFAULT_MODEL = "cae_ray_selected"
"""The model (kept service) of an old overlay that had none: feast.kept_service's default."""

# libyaml's parser where PyYAML has it: an overlay of several wide models has many thousand
# lines, and Feast reads it once per definitions module.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def deprecation_tag(feature: str) -> str:
    return f"{TAG_PREFIX}deprecated.{feature}"


def readers_tag(feature: str) -> str:
    """The tag naming the team's FeatureServices that still read a marked feature."""
    return f"{READ_BY}{feature}"


def ours(tags: dict[str, str]) -> dict[str, str]:
    """The tags cae-ray owns among a view's."""
    return {key: value for key, value in tags.items() if key.startswith(TAG_PREFIX)}


def mark_value(mark: dict[str, Any]) -> str:
    """A mark as a tag value: ``<run id>@<UTC time first set>``."""
    return f"{mark['run']}@{mark['since']}"


def parse_mark(value: str) -> dict[str, str | None]:
    """A tag value back as a mark; ``since`` is None for marks of cae-ray before 0.2."""
    run, _, since = value.partition("@")
    return {"run": run, "since": since or None}


def empty() -> dict[str, Any]:
    return {"version": VERSION, "models": {}, "readers": {}, "retired": {}, "legacy_services": {}}


def read_overlay(repo: Path) -> dict[str, Any]:
    """The repo's overlay as format 3, whichever version wrote it."""
    path = repo / OVERLAY
    if not path.exists():
        return empty()
    loaded = yaml.load(path.read_text(), Loader=_Loader) or {}
    if "runs" in loaded and "version" not in loaded:
        return _from_v2(_from_runs(loaded["runs"] or {}), 1)
    if loaded.get("version", VERSION) < VERSION:
        return _from_v2(loaded, loaded["version"])
    overlay = {**empty(), **{key: loaded[key] for key in empty() if loaded.get(key) is not None}}
    overlay["models"] = {name: unpack(state) for name, state in overlay["models"].items()}
    return overlay


def pack(state: dict[str, Any]) -> dict[str, Any]:
    """A model's state as the overlay file and the audit log hold it (see :func:`_packed`)."""
    return {**state, "dropped": _packed(state["dropped"])}


def unpack(state: dict[str, Any]) -> dict[str, Any]:
    """A model's state as :func:`pack` wrote it, back to one mark per left-out feature."""
    return {**state, "dropped": _unpacked(state["dropped"])}


def _packed(dropped: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A model's left-out features as the file holds them: per view, one group per mark (the
    run that first left them out, since when). A wide view's hundreds of features share a few
    marks, and YAML parses a list of names many times faster than a mapping per feature."""
    packed: dict[str, list[dict[str, Any]]] = {}
    for view, features in dropped.items():
        groups: dict[tuple[str, Any], list[str]] = {}
        for feature, mark in features.items():
            groups.setdefault((mark["run"], mark.get("since")), []).append(feature)
        packed[view] = [
            {"run": run, "since": since, "features": sorted(names)}
            for (run, since), names in sorted(groups.items(), key=lambda g: (str(g[0][1]), g[0][0]))
        ]
    return packed


def _unpacked(packed: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {
        view: {f: {"run": g["run"], "since": g["since"]} for g in groups for f in g["features"]}
        for view, groups in packed.items()
    }


def _from_v2(old: dict[str, Any], version: int) -> dict[str, Any]:
    """Format 2 (one kept service; its marks, last runs) as format 3: one model, its label
    unknown, whose marks and tags are the ones it had."""
    state = empty()
    for key in ("retired", "legacy_services"):
        state[key] = old.get(key) or {}
    model = model_of_v2(old, DEFAULT_MODEL)
    if model is not None:
        name, model_state = model
        state["models"][name] = {**model_state, "migrated": version}
    return state


def _from_runs(runs: dict[str, Any]) -> dict[str, Any]:
    """The state an overlay of cae-ray before 0.2 (every run's marks and service) stood for,
    in format 2."""
    state: dict[str, Any] = {"marks": {}, "last_run": {}, "kept_service": None}
    state["legacy_services"] = {}
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
        "# Written by cae-ray (prune --apply, retire --apply, restore, feast forget-model);\n"
        "# applied by annotate_all(globals()) in the repo's definitions. Undo with\n"
        "# `cae-ray restore`. The deprecation marks are derived from the models' states.\n"
    )
    models = {name: pack(state) for name, state in overlay["models"].items()}
    text = yaml.dump({**overlay, "models": models}, Dumper=_Dumper, sort_keys=True)
    write_text(repo / OVERLAY, header + text)


def has_hook(repo: Path) -> bool:
    """Whether any definitions module of the repo calls ``annotate_all(globals())``."""
    return any(HOOK in p.read_text(errors="ignore") for p in repo.rglob("*.py"))


def marks(overlay: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per view: each deprecated feature's mark, as the models' states call for."""
    return derive_marks(overlay["models"], overlay["retired"])


def all_view_tags(overlay: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Per view: the cae-ray tags the overlay's state puts on it (views without are left out)."""
    tags: dict[str, dict[str, str]] = {}
    readers = overlay["readers"]
    for view, features in marks(overlay).items():
        held = tags.setdefault(view, {})
        for feature, mark in features.items():
            held[deprecation_tag(feature)] = mark_value(mark)
            services = readers.get(view, {}).get(feature)
            if services:
                held[readers_tag(feature)] = " ".join(sorted(services))
    for view, run in last_runs(overlay["models"]).items():
        tags.setdefault(view, {})[LAST_RUN] = run
    return tags


def view_tags(overlay: dict[str, Any], view: str) -> dict[str, str]:
    """The cae-ray tags the overlay's state puts on ``view``."""
    return all_view_tags(overlay).get(view, {})


def services(overlay: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every FeatureService the overlay keeps: each model's kept one, and older versions'."""
    kept = {
        name: {
            "name": name,
            "run": state["run"],
            "at": state.get("at"),
            "features": state["kept"],
            "description": state.get("description") or "",
        }
        for name, state in overlay["models"].items()
        if state["kept"]
    }
    return {**overlay["legacy_services"], **kept}


def applied_columns(repo: Path, kept_service: str) -> list[str] | None:
    """The columns (``view__feature``) the latest applied prune kept in ``kept_service`` (a
    model's selection as the registry knows it), or None when no prune of that service was
    applied in ``repo``."""
    from cae_ray.feast.refs import column_name  # here: definitions modules import this module

    service = services(read_overlay(repo)).get(kept_service)
    if service is None:
        return None
    kept = service["features"].items()
    return [column_name(view, name) for view, names in kept for name in names]


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
    tags = all_view_tags(overlay)
    for name, view in here.items():
        _drop_fields(view, set(overlay["retired"].get(name, {})))
        view.tags.update(tags.get(name, {}))
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
