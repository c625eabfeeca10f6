"""Feature references: what an export asks Feast for, and which view and feature each column
of a selection stands for when the prune marks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from cae_ray.config import FeastConfig
from cae_ray.feast.errors import (
    AmbiguousFeatureError,
    LabelLeakError,
    NonNumericLabelError,
    UnknownFeatureError,
    UnknownFeatureViewError,
    UnknownLabelError,
)


def column_name(view: str, feature: str) -> str:
    """The export's column for a view's feature (``view__feature``)."""
    return f"{view}__{feature}"


@dataclass(frozen=True)
class FeatureRef:
    view: str
    feature: str
    dtype: pa.DataType

    @property
    def ref(self) -> str:
        return f"{self.view}:{self.feature}"

    @property
    def column(self) -> str:
        return column_name(self.view, self.feature)


def resolve_refs(store: Any, settings: FeastConfig) -> list[FeatureRef]:
    """The feature references to export, in the order asked, with their Arrow types."""
    from feast.types import from_feast_to_pyarrow_type

    views = {fv.name: fv for fv in store.list_feature_views()}
    if settings.feature_service is not None:
        services = [s.name for s in store.list_feature_services()]
        if settings.feature_service not in services:
            raise UnknownFeatureViewError(settings.feature_service, services, "feature service")
        service = store.get_feature_service(settings.feature_service)
        wanted = [(p.name, [f.name for f in p.features]) for p in service.feature_view_projections]
    else:
        wanted = [_parse(item) for item in settings.features]
    refs: list[FeatureRef] = []
    for view_name, features in wanted:
        if view_name not in views:
            raise UnknownFeatureViewError(view_name, list(views))
        fields = {f.name: f for f in views[view_name].features}
        for name in features or list(fields):
            if name not in fields:
                raise UnknownFeatureError(view_name, name, list(fields))
            refs.append(FeatureRef(view_name, name, from_feast_to_pyarrow_type(fields[name].dtype)))
    return list(dict.fromkeys(refs))  # a feature asked for twice is exported once


def resolve_label(store: Any, label: str, candidates: list[FeatureRef]) -> FeatureRef:
    """The Feast feature ``label`` (``view:field``) that ``data.target`` names, checked: it
    exists, it is a number or a boolean, and its view is none of the candidates' views (whose
    other fields would leak it)."""
    from feast.types import from_feast_to_pyarrow_type

    views = {fv.name: fv for fv in store.list_feature_views()}
    view_name, _, name = label.partition(":")
    if view_name not in views:
        known = [f"{v}:{f.name}" for v, fv in views.items() for f in fv.features]
        problem = f"the Feast registry has no feature view {view_name!r}"
        raise UnknownLabelError(label, problem, known)
    fields = {f.name: f for f in views[view_name].features}
    if name not in fields:
        known = [f"{view_name}:{f}" for f in fields]
        raise UnknownLabelError(label, f"feature view {view_name!r} has no field {name!r}", known)
    dtype = from_feast_to_pyarrow_type(fields[name].dtype)
    kinds = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
    if not any(kind(dtype) for kind in kinds):
        raise NonNumericLabelError(label, str(fields[name].dtype))
    if view_name in {r.view for r in candidates}:
        raise LabelLeakError(label, view_name)
    return FeatureRef(view_name, name, dtype)


def _parse(item: str) -> tuple[str, list[str]]:
    view, _, feature = item.partition(":")
    return view, [feature] if feature else []


def column_refs(
    columns: list[str], store: Any, exported: dict[str, str] | None
) -> dict[str, tuple[str, str]]:
    """Each candidate column's (view, feature): from the export manifest's ``exported`` columns
    when there is one, else from a ``view__feature`` column name, else from the one view that
    has the feature."""
    by_column = exported or {}
    views = {fv.name: [f.name for f in fv.features] for fv in store.list_feature_views()}
    refs = {}
    for column in columns:
        ref = by_column.get(column)
        if ref is not None:
            view, _, feature = ref.partition(":")
        elif "__" in column and column.split("__", 1)[0] in views:
            view, feature = column.split("__", 1)
        else:
            owners = [v for v, features in views.items() if column in features]
            if len(owners) > 1:
                raise AmbiguousFeatureError(column, owners)
            if not owners:
                raise UnknownFeatureViewError(column, list(views), "feature view for column")
            view, feature = owners[0], column
        if view not in views:
            raise UnknownFeatureViewError(view, list(views))
        if feature not in views[view]:
            raise UnknownFeatureError(view, feature, views[view])
        refs[column] = (view, feature)
    return refs
