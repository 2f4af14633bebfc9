"""obs and var of a shadow: their names, their columns and what assigning them does (▲).

Functions over a shadow's :class:`~shadows.core.elements.ShadowElements` (its public interface only;
the type is not named here, as ``elements.py`` imports this module): the names read alone
(:func:`names`), one column as ``obs_vector`` gives it, the column names, and ``adata.obs = frame`` /
``adata.obs_names = names`` / ``del adata.obs``. A dataframe replaced whole (new names, or a MuData's
axis rebuilt by ``update()``) is one change of ``obs``; columns assigned one by one are changes of
``obs/<column>``, and new names are the change of ``obs/_index`` (:func:`index_rel`).
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

from shadows.core.references import VECTORS_ARE_PANDAS_ARRAYS
from shadows.core.state import NOTHING
from shadows.elements.positions import read_index
from shadows.errors import InvalidElementKeyError, ShapeError
from shadows.names import column_problem
from shadows.schema import FRAMES


def index_rel(frame_rel: str) -> str:
    """The record of a dataframe's names: ``obs/_index`` (a name no column may take, whatever name the
    file stores the index under).
    """
    return f"{frame_rel}/_index"


def whole_frame(elements: Any, frame_rel: str) -> pd.DataFrame | None:
    """The dataframe ``frame_rel`` when it was replaced whole in memory (▲: new names, or a MuData's
    axis rebuilt by ``update()``), else ``None`` (stored, with any columns changed one by one).
    """
    changed = elements.changed_value(frame_rel) if frame_rel in FRAMES else NOTHING
    return changed if isinstance(changed, pd.DataFrame) else None


def names(elements: Any, frame_rel: str) -> pd.Index:
    """The names of the rows of obs/var (or raw's var), read alone unless the frame is in memory."""
    whole = whole_frame(elements, frame_rel)
    if whole is not None:
        return whole.index
    changed = elements.changed_value(index_rel(frame_rel))
    if changed is not NOTHING:
        return changed
    frame = elements.state.held(frame_rel)
    if frame is not NOTHING and elements.tables.name == "pandas":
        return frame.index
    spec = elements.layout.spec(frame_rel)
    return elements.state.held_or_read(index_rel(frame_rel), lambda: read_index(spec, elements.frame_rows(frame_rel)))


def frame_column(elements: Any, frame_rel: str, key: str) -> Any:
    """One obs/var column as AnnData's ``obs_vector`` returns it, read alone unless the frame is in memory.

    That is ``Series.values`` up to anndata 0.12 (numpy for numpy dtypes, else the pandas array: a
    ``Categorical``, a masked array), and ``Series.array`` from anndata 0.13 on (which resolves
    ``adata[A.obs[k]]``). scanpy's plotting tells categorical colors from continuous ones by it.
    """
    frame = whole_frame(elements, frame_rel)
    if frame is None and elements.tables.name == "pandas":
        frame = elements.state.held(frame_rel)
    if frame is not None and frame is not NOTHING:
        column = frame[key]
    else:
        staged = elements.visible_staged_columns(frame_rel)
        column = staged[key] if key in staged else pd.Series(elements.view_column(frame_rel, key), copy=False)
    return column.array if VECTORS_ARE_PANDAS_ARRAYS else column.values


def frame_keys(elements: Any, frame_rel: str) -> list[str]:
    """Names of the obs/var columns: stored (less those deleted), then assigned in memory."""
    whole = whole_frame(elements, frame_rel)
    if whole is not None:
        return list(whole.columns)
    deleted = elements.deleted_columns(frame_rel)
    stored = [c for c in getattr(elements.layout, frame_rel).columns if c not in deleted]
    return stored + [k for k in elements.visible_staged_columns(frame_rel) if k not in stored]


def set_names(elements: Any, frame_rel: str, new_names: Any) -> None:
    """``adata.obs_names = names``: new names for the rows of obs/var, kept in memory (▲) until
    ``write(overwrite=True)`` replaces the stored index. Non-string names become strings, as anndata
    makes them (with its warning).
    """
    index = pd.Index(new_names)
    expected = elements.axis_length(FRAMES.index(frame_rel))
    if len(index) != expected:
        raise ShapeError(f"{elements.filename}: {frame_rel}_names: expected {expected} names, got {len(index)}")
    if not all(isinstance(name, str) for name in index):
        warnings.warn(f"AnnData expects .{frame_rel}.index to contain strings; converting them", UserWarning,
                      stacklevel=3)
        index = index.astype(str)
    elements.detach()
    index.name = names(elements, frame_rel).name
    whole = whole_frame(elements, frame_rel)
    if whole is not None:  # the names of a dataframe replaced whole are its index
        whole.index = index
        return
    elements.state.change(index_rel(frame_rel), index)
    frame = elements.state.held(frame_rel)
    if isinstance(frame, pd.DataFrame):
        frame.index = index
    mapping = elements.slots.get(f"{frame_rel}m")
    for key in [] if mapping is None else mapping.own_keys():  # dataframes in obsm/varm follow, as in
        rel = f"{frame_rel}m/{key}"  # anndata: a stored one is read and changed (▲), to be written so
        if mapping.is_staged(key):
            if isinstance(mapping[key], pd.DataFrame):
                mapping[key].index = index
        elif elements.layout.spec(rel).role == "table":
            value = elements.plain(rel).copy()
            value.index = index
            elements.state.change(rel, value)


def set_frame(elements: Any, frame_rel: str, frame: pd.DataFrame) -> None:
    """``shadow.obs = frame``: stage the columns that differ from the current ones (▲).

    Stored columns missing from ``frame`` are deleted (from the file by ``write(overwrite=True)``);
    this is what ``mudata``'s ``pull_obs``/``pull_var`` do to a MuData shadow. A frame with other
    names than the current ones replaces the dataframe whole (:meth:`replace_frame`), as AnnData's
    setter renames the observations.
    """
    where = f"{elements.filename}: {frame_rel}"
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{where}: expected a pandas DataFrame, got {type(frame).__name__}")
    for key in frame.columns:
        problem = column_problem(key)
        if problem is not None:
            raise InvalidElementKeyError(f"{where}[{key!r}]: invalid column name: {problem}")
    expected = elements.axis_length(FRAMES.index(frame_rel))
    if len(frame) != expected:
        raise ShapeError(f"{where}: expected {expected} rows, got {len(frame)}")
    if whole_frame(elements, frame_rel) is not None or not frame.index.equals(names(elements, frame_rel)):
        replace_frame(elements, frame_rel, frame)
        return
    current = elements.plain(frame_rel)
    elements.detach()
    for key in [c for c in current.columns if c not in frame.columns]:
        elements.stage_column(frame_rel, key, None)  # deleted (a stored one by write(overwrite=True))
    for key in frame.columns:  # a column deleted before and back now is not in current: assigned
        if key not in current.columns or not frame[key].equals(current[key]) \
                or frame[key].dtype != current[key].dtype:
            elements.state.change(f"{frame_rel}/{key}", frame[key])
    elements.state.forget(frame_rel)


def clear_frame(elements: Any, frame_rel: str) -> None:
    """``del adata.obs``: as AnnData, every column goes (▲; from the file by ``write(overwrite=True)``),
    the names stay.
    """
    set_frame(elements, frame_rel, pd.DataFrame(index=names(elements, frame_rel)))


def replace_frame(elements: Any, frame_rel: str, frame: pd.DataFrame) -> None:
    """The dataframe ``frame_rel`` becomes ``frame`` whole (▲): its names and columns. ``write
    (overwrite=True)`` replaces the stored dataframe with it. Changes made to single columns or to
    the names before are superseded. Its length is not checked here (a MuData's ``update()`` can
    grow an axis; AnnData's setter checks it before).
    """
    elements.detach()
    for key in elements.state.children(frame_rel):
        elements.state.revert(f"{frame_rel}/{key}")
    elements.state.change(frame_rel, frame)
