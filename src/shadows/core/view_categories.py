"""What AnnData does to categories when it makes a view, done the same way for shadow views.

AnnData drops unused categories from a view's obs/var categorical columns and subsets the matching
``uns["<column>_colors"]`` (dropping it when its length does not match the categories), unless
``anndata.settings.remove_unused_categories`` is off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anndata
import numpy as np
import pandas as pd

from shadows.backends import nodes

if TYPE_CHECKING:
    from shadows.core.layout import Layout

FRAMES = ("obs", "var")


def enabled() -> bool:
    """Whether anndata removes unused categories in views (its setting, default on)."""
    return bool(getattr(anndata.settings, "remove_unused_categories", True))


def categorical_columns(layout: Layout, frame_rel: str) -> list[str]:
    """Columns of obs/var stored as categoricals (metadata only)."""
    spec = layout.spec(frame_rel)
    return [c for c in spec.columns if getattr(spec.column(c), "dtype", None) == "category"]


def drop_unused(frame: pd.DataFrame) -> pd.DataFrame:
    """Remove unused categories from every categorical column, in place; returns the frame."""
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].cat.remove_unused_categories()
    return frame


def drop_unused_values(values: Any) -> Any:
    """The same for one column's values."""
    if isinstance(values, pd.Categorical):
        return values.remove_unused_categories()
    return values


def _color_base(key: str) -> str | None:
    return key[: -len("_colors")] if key.endswith("_colors") and "/" not in key else None


def hidden_color_keys(layout: Layout) -> set[str]:
    """Uns keys a view drops: ``<column>_colors`` whose length differs from the column's categories."""
    if not enabled():
        return set()
    hidden = set()
    uns_keys = layout.children("uns") if layout.has("uns") else []
    for frame_rel in FRAMES:
        for column in categorical_columns(layout, frame_rel):
            key = f"{column}_colors"
            if key not in uns_keys:
                continue
            colors = layout.spec(f"uns/{key}")
            categories = layout.spec(frame_rel).column(column)
            n_categories = _n_categories(layout, categories)
            if len(colors.shape) == 1 and n_categories is not None and colors.shape[0] != n_categories:
                hidden.add(key)
    return hidden


def _n_categories(layout: Layout, column_spec: Any) -> int | None:
    path = column_spec.extra.get("categories")
    return None if path is None else _shape0(layout, path)


def _shape0(layout: Layout, absolute_path: str) -> int | None:
    root = layout.ref.root
    rel = absolute_path[len(root) + 1 :] if root else absolute_path
    node = layout.group[rel]
    return None if nodes.is_group(node) else int(node.shape[0])


def subset_colors(key: str, value: Any, layout: Layout, view_column) -> Any:
    """A view's ``uns[key]`` for ``<column>_colors``: the colors of the categories the view uses."""
    base = _color_base(key)
    if base is None or not enabled():
        return value
    for frame_rel in FRAMES:
        if base not in categorical_columns(layout, frame_rel):
            continue
        colors = np.array(value)
        if colors.ndim == 0:
            value = colors[(None,)]
            continue
        all_categories = layout.spec(frame_rel).column(base).categories()
        used = view_column(frame_rel, base).categories
        value = colors[(np.where(np.isin(all_categories, used))[0],)]
    return value
