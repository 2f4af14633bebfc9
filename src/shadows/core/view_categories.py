"""What AnnData does to categories when it makes a view, done the same way for shadow views.

AnnData drops unused categories from a view's obs/var categorical columns and subsets the matching
``uns["<column>_colors"]`` (dropping it when its length does not match the categories), unless
``anndata.settings.remove_unused_categories`` is off.

Categorical columns come in two layouts: encoded columns (and anndata 0.7's codes with a ``categories``
attribute) whose column spec has dtype ``"category"``, and pre-0.7 structured obs/var (scanpy's bundled
pbmc68k_reduced) whose codes are plain record fields with the categories in ``uns["<column>_categories"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anndata
import numpy as np
import pandas as pd

from shadows.backends import nodes
from shadows.elements.legacy import LegacyFrameSpec
from shadows.schema import FRAMES

if TYPE_CHECKING:
    from shadows.core.layout import ElementMap



def enabled() -> bool:
    """Whether anndata removes unused categories in views (its setting, default on)."""
    return bool(getattr(anndata.settings, "remove_unused_categories", True))


def categorical_columns(layout: ElementMap, frame_rel: str) -> list[str]:
    """Columns of obs/var stored as categoricals (metadata only)."""
    spec = layout.spec(frame_rel)
    return [c for c in spec.columns if _categories_path(layout, frame_rel, c) is not None]


def _categories_path(layout: ElementMap, frame_rel: str, column: str) -> str | None:
    """Where the categories of an obs/var column are stored (``None``: not a categorical).

    A pre-0.7 structured frame knows its categorical columns (``extra["categories"]`` maps each to its
    ``uns/<column>_categories`` path); its column specs are plain record fields without a dtype.
    """
    frame = layout.spec(frame_rel)
    if isinstance(frame, LegacyFrameSpec):
        return frame.extra["categories"].get(column)
    spec = frame.column(column)
    return spec.extra.get("categories") if getattr(spec, "dtype", None) == "category" else None


def _all_categories(layout: ElementMap, frame_rel: str, column: str) -> pd.Index:
    """Every category of a stored categorical column (small: read whole)."""
    frame = layout.spec(frame_rel)
    if isinstance(frame, LegacyFrameSpec):  # decoded as anndata does; reads no records
        return frame.read(slice(0, 0), [column])[column].cat.categories
    return frame.column(column).categories()


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


def hidden_color_keys(layout: ElementMap) -> set[str]:
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
            n_categories = _n_categories(layout, _categories_path(layout, frame_rel, column))
            if len(colors.shape) == 1 and n_categories is not None and colors.shape[0] != n_categories:
                hidden.add(key)
    return hidden


def _n_categories(layout: ElementMap, path: str | None) -> int | None:
    return None if path is None else _shape0(layout, path)


def _shape0(layout: ElementMap, absolute_path: str) -> int | None:
    root = layout.ref.root
    rel = absolute_path[len(root) + 1 :] if root else absolute_path
    node = layout.group[rel]
    if nodes.is_group(node):
        return None
    return int(node.shape[0]) if node.shape else 1  # pre-0.7 files store a single category as a scalar


def subset_colors(key: str, value: Any, layout: ElementMap, view_column) -> Any:
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
        used = getattr(view_column(frame_rel, base), "categories", None)
        if used is None:  # a pre-0.7 column whose codes do not fit its categories is read as plain codes
            continue
        all_categories = _all_categories(layout, frame_rel, base)
        value = colors[(np.where(np.isin(all_categories, used))[0],)]
    return value
