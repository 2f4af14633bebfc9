"""Writes into slots that anndata < 0.7 stored: the slot moves to today's encoding, in the same commit.

anndata < 0.7 stored obs and var each as one structured (compound) dataset, kept the categories of
categorical columns in ``uns["<column>_categories"]``, and stored obsm and varm as structured datasets
with one field per entry. A dataset has no children: a new column or entry cannot be linked into it. So
when a write adds to (or replaces in, or deletes from) such a slot, the slot itself is rewritten in
today's encoding, with what anndata reads from it plus the staged changes, and swapped in for the old
one; that is what the user asked for (adding a column), so it needs no ``overwrite=True``. The new slot
is encoded in memory first, read back and compared with what anndata reads from the old one, and then
copied into anonymous HDF5 objects and linked in place of the old slots in one flush of HDF5's metadata
(:class:`shadows.writing.commit.SlotSwap`), so the file holds either the old layout or the new one.

Categories: ``anndata.read_h5ad`` applies ``uns["<c>_categories"]`` to the columns ``<c>`` of obs and
var (and hides those uns entries) only while obs is a dataset. Moving obs to a group stops that, so
obs and var move together: each frame is written with its categoricals as anndata read them, a group
frame those categories reached is rewritten too, and the uns entries anndata hid are deleted in the same
flush. anndata then reads the same obs, var and uns as before, plus the additions.

:func:`fold` is the hook: after :func:`shadows.writing.transaction.check`, it validates everything the
move needs (nothing is written before it returns) and replaces the staged changes into legacy slots by
one :class:`~shadows.writing.commit.SlotSwap` change, committed first. Zarr stores never hold these
layouts (anndata wrote Zarr only from 0.7 on); a write into an array of a Zarr store is refused.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shadows.backends import nodes
from shadows.errors import (
    MalformedElementError,
)
from shadows.names import column_problem, key_problem
from shadows.schema import FRAMES
from shadows.writing.commit import DELETED, ColumnChange, ElementChange, SlotSwap, link_problem, write_value
from shadows.writing.streams import is_dask
from shadows.writing.transaction import Problems, raise_problems

MAPPINGS = ("obsm", "varm")

#: ``forget(rel)``: the shadow drops what it holds of element ``rel`` (relative to its AnnData root).
Forget = Callable[[str], None]


@dataclass
class _Plan:
    """What one AnnData root of the file needs: the slots to rewrite and the uns entries to delete."""

    root: str
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # rewritten obs/var, as anndata reads them
    original: dict[str, list[str]] = field(default_factory=dict)  # their stored columns the write keeps
    mappings: dict[str, dict[str, Any]] = field(default_factory=dict)  # rewritten obsm/varm: entries in memory
    streamed: dict[str, dict[str, Any]] = field(default_factory=dict)  # and their dask entries
    fields: dict[str, list[str]] = field(default_factory=dict)  # the structured fields each mapping had
    delete: list[str] = field(default_factory=list)  # uns/<c>_categories entries anndata hid
    folded_elements: list[ElementChange] = field(default_factory=list)
    folded_columns: list[ColumnChange] = field(default_factory=list)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root else rel


def _join(root: str, rel: str) -> str:
    return f"{root}/{rel}" if root else rel


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent, name


def _node(handle: Any, path: str) -> Any | None:
    """The node at ``path``, or ``None`` when there is none (or the path runs through an array)."""
    if not path:
        return handle
    group = handle
    for part in path.split("/"):
        if (group is not handle and not nodes.is_group(group)) or not nodes.has_child(group, part):
            return None
        group = group[part]
    return group


def _array_above(handle: Any, path: str) -> str | None:
    """The first proper ancestor of ``path`` that is an array (a dataset), or ``None``."""
    parts = path.split("/")
    group = handle
    for depth, part in enumerate(parts[:-1]):
        if not nodes.has_child(group, part):
            return None
        group = group[part]
        if not nodes.is_group(group):
            return "/".join(parts[: depth + 1])
    return None


def _column_order(frame: Any) -> list[str]:
    order = nodes.attrs(frame).get("column-order", [])
    return [order] if isinstance(order, str) else [str(c) for c in order]


def _is_structured(node: Any) -> bool:
    return node is not None and not nodes.is_group(node) and getattr(node.dtype, "names", None) is not None


def _is_dataset(node: Any) -> bool:
    return node is not None and not nodes.is_group(node)


# -- reading the old slots as anndata does ---------------------------------------------------------------


def _read_elem(node: Any) -> Any:
    from anndata.io import read_elem

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_elem(node)


def _legacy_frame(node: Any) -> pd.DataFrame:
    """A structured obs/var as ``anndata``'s ``read_dataframe_legacy`` reads it (first field the index)."""
    frame = pd.DataFrame(_read_elem(node))
    return frame.set_index(frame.columns[0])


def _legacy_fields(node: Any) -> dict[str, Any]:
    """A structured obsm/varm as anndata reads it: one array per field."""
    records = _read_elem(node)
    return {name: records[name] for name in records.dtype.fields}


def _clean_uns(uns: Any, frames: dict[str, pd.DataFrame | None]) -> tuple[set[str], set[str]]:
    """Apply the categories kept in uns to the frames, as ``anndata.compat._clean_uns`` does when it reads
    a file whose obs is a dataset; returns the uns keys anndata then hides and the frames it changed.
    """
    hidden: set[str] = set()
    changed: set[str] = set()
    for cats_name in uns:
        if not cats_name.endswith("_categories"):
            continue
        name = cats_name.replace("_categories", "")
        if not any(frame is not None and name in frame for frame in frames.values()):
            continue
        cats = _read_elem(uns[cats_name])
        if isinstance(cats, str | int):  # a single category
            cats = [cats]
        for rel, frame in frames.items():
            if frame is None or name not in frame:
                continue
            codes = frame[name].values
            if not np.all(codes < len(cats)):  # anndata's guess at which frame the categories were for
                continue
            frame[name] = pd.Categorical.from_codes(codes, cats)
            hidden.add(cats_name)
            changed.add(rel)
    return hidden, changed


# -- planning ----------------------------------------------------------------------------------------------


def _frame_roots(handle: Any, columns: list[ColumnChange], problems: Problems, in_file: bool) -> set[str]:
    """The AnnData roots whose obs/var must move: a column change into a structured frame, or any column
    change while obs is a dataset (anndata would apply uns categories to a column written into a group).
    """
    roots = set()
    for change in columns:
        root, rel = _split(change.frame_path)
        frame = _node(handle, change.frame_path)
        if frame is None or nodes.is_group(frame):
            obs = _node(handle, _join(root, "obs"))
            if rel in FRAMES and _is_structured(obs) and in_file:
                roots.add(root)
            continue
        where = f"{change.frame_path}/{change.key}"
        if not in_file:
            problems.unwritable.append(f"{where}: '{change.frame_path}' is an array (a pre-0.7 layout); shadows "
                                       "moves such slots to today's encoding only in HDF5 files")
        elif not _is_structured(frame) or rel not in FRAMES:
            problems.unwritable.append(f"{where}: '{change.frame_path}' is a dataset, not a dataframe group")
        else:
            roots.add(root)
    return roots


def _mapping_slots(handle: Any, elements: list[ElementChange], problems: Problems, in_file: bool) -> set[str]:
    """The structured obsm/varm that element changes write into (absolute paths)."""
    slots = set()
    for change in elements:
        above = _array_above(handle, change.path)
        if above is None:
            continue
        parent, _ = _split(change.path)
        root, rel = _split(parent)
        anndata = _node(handle, root)
        ok = (above == parent and rel in MAPPINGS and _is_structured(_node(handle, above))
              and anndata is not None and nodes.has_child(anndata, "obs"))
        if not in_file:
            problems.unwritable.append(f"{change.path}: '{above}' is an array (a pre-0.7 layout); shadows moves "
                                       "such slots to today's encoding only in HDF5 files")
        elif not ok:
            problems.unwritable.append(f"{change.path}: '{above}' is a dataset: nothing can be written inside it")
        else:
            slots.add(parent)
    return slots


def _plan_frames(handle: Any, plan: _Plan, columns: list[ColumnChange], overwrite: bool,
                 problems: Problems) -> None:
    before = len(problems.malformed)
    stored = {rel: _node(handle, plan.path(rel)) for rel in FRAMES}
    # anndata applies uns categories only while obs is a dataset (planned for files whose slots swap in
    # place only: HDF5's, where obs may be one)
    clean = _is_dataset(stored["obs"])
    uns = _node(handle, plan.path("uns"))
    if uns is None or not nodes.is_group(uns):
        uns = None
    named = {k.replace("_categories", "") for k in uns if k.endswith("_categories")} if clean and uns else set()
    frames: dict[str, pd.DataFrame | None] = {}
    for rel, node in stored.items():
        frames[rel] = None
        try:
            if _is_structured(node):
                frames[rel] = _legacy_frame(node)
            elif node is not None and nodes.is_group(node) and named & set(_column_order(node)):
                frames[rel] = _read_elem(node)  # uns categories reach a group frame too, while obs is a dataset
        except Exception as error:  # what anndata cannot read cannot be moved
            problems.malformed.append(f"{plan.path(rel)}: anndata cannot read it ({type(error).__name__}: {error})")
    if len(problems.malformed) > before:
        return
    changed: set[str] = set()
    if named:
        try:
            hidden, changed = _clean_uns(uns, frames)
        except (TypeError, ValueError) as error:
            problems.malformed.append(f"{plan.path('uns')}: anndata cannot apply the categories this pre-0.7 "
                                       f"file keeps in uns to obs/var ({error}), so it cannot read the file")
            return
        plan.delete = sorted(plan.path(f"uns/{key}") for key in hidden)
    for rel, frame in frames.items():
        if frame is not None and (_is_structured(stored[rel]) or rel in changed):
            plan.frames[rel] = frame
            plan.original[rel] = list(frame.columns)
    for rel, frame in plan.frames.items():
        path = plan.path(rel)
        index = [] if frame.index.name in (None, "_index") else [frame.index.name]
        for name in [*index, *frame.columns]:
            problem = column_problem(name)
            if problem is not None:
                problems.malformed.append(f"{path}: its stored column {name!r} cannot be written in today's "
                                           f"encoding ({problem})")
        for change in columns:
            if change.frame_path != path:
                continue
            where = f"{path}/{change.key}"
            if change.key == frame.index.name:
                problems.invalid.append(f"{where}: the name of the index; rename the column")
                continue
            change.replaces = change.key in frame.columns
            if change.replaces and not overwrite:
                problems.replacing.append(where)
            if change.values is DELETED:
                if change.key in frame.columns:
                    frame.drop(columns=[change.key], inplace=True)
            else:
                values = change.values
                frame[change.key] = values.array if isinstance(values, pd.Series) else np.asarray(values)
            plan.folded_columns.append(change)
            if change.key in plan.original[rel]:
                plan.original[rel].remove(change.key)  # checked after encoding: the stored columns kept


def _plan_mapping(handle: Any, plan: _Plan, path: str, elements: list[ElementChange], overwrite: bool,
                  problems: Problems) -> None:
    rel = _split(path)[1]
    try:
        entries = _legacy_fields(_node(handle, path))
    except Exception as error:  # what anndata cannot read cannot be moved
        problems.malformed.append(f"{path}: anndata cannot read it ({type(error).__name__}: {error})")
        return
    plan.fields[rel] = list(entries)
    for name in entries:
        problem = key_problem(name)
        if problem is not None:
            problems.malformed.append(f"{path}: its stored entry {name!r} cannot be written in today's "
                                       f"encoding ({problem})")
    streamed: dict[str, Any] = {}
    for change in elements:
        parent, key = _split(change.path)
        if parent != path:
            continue
        change.replaces = key in entries
        if change.replaces and not overwrite:
            problems.replacing.append(change.path)
        entries.pop(key, None)
        streamed.pop(key, None)
        if change.value is DELETED:
            pass
        elif is_dask(change.value):
            streamed[key] = change.value
        else:
            entries[key] = change.value
        plan.folded_elements.append(change)
    plan.mappings[rel] = entries
    plan.streamed[rel] = streamed


# -- encoding and checking ---------------------------------------------------------------------------------


def _same_frame(stored: pd.DataFrame, back: pd.DataFrame, columns: list[str]) -> str | None:
    """Why ``back`` (the new frame read back) does not hold ``stored``'s columns and index, or ``None``."""
    try:
        pd.testing.assert_index_equal(back.index, stored.index, exact=False)
        for column in columns:
            pd.testing.assert_series_equal(back[column], stored[column], check_exact=True, check_dtype=False,
                                           check_categorical=True)
    except (AssertionError, KeyError) as error:
        return " ".join(str(error).split())
    return None


def _encode(plans: list[_Plan], where: str) -> tuple[Any, dict[str, str]]:
    """Every new slot encoded into one in-memory HDF5 file (and the frames read back and compared): the
    checks that need anndata to encode. Returns the file and where each slot lies in it.
    """
    import h5py

    memory = h5py.File(io.BytesIO(), "w")
    placed: dict[str, str] = {}
    problems = []
    try:
        for plan in plans:
            for rel, value in [*plan.frames.items(), *plan.mappings.items()]:
                name, path = str(len(placed)), plan.path(rel)
                try:
                    write_value(memory, name, value)
                except Exception as error:  # anndata refuses some value: the swap cannot be built
                    problems.append(f"{path}: anndata cannot encode it ({type(error).__name__}: {error})")
                    continue
                placed[path] = name
                if rel in plan.frames:
                    why = _same_frame(value, _read_elem(memory[name]), plan.original[rel])
                    if why is not None:
                        problems.append(f"{path}: it would not read back as stored ({why})")
    except BaseException:
        memory.close()
        raise
    if problems:
        memory.close()
        raise MalformedElementError(f"{where}: nothing was written: a pre-0.7 slot cannot be moved to today's "
                                    f"encoding ({'; '.join(problems)})")
    memory.flush()
    return memory, placed


def _written(plans: list[_Plan], forget: Forget | None) -> Callable[[], None]:
    def written() -> None:
        for plan in plans:
            for change in [*plan.folded_elements, *plan.folded_columns]:
                change.written()
            if forget is None:
                continue
            for rel in plan.frames:
                forget(rel)
            for rel, names in plan.fields.items():
                for name in names:
                    forget(f"{rel}/{name}")

    return written


def fold(connection: Any, where: str, elements: list[ElementChange], columns: list[ColumnChange], overwrite: bool,
         forget: Forget | None = None) -> tuple[list[ElementChange], list[ColumnChange]]:
    """Check the staged changes that write into pre-0.7 slots and fold them into one slot swap.

    Call after :func:`shadows.writing.transaction.check`, before :func:`shadows.writing.transaction.commit`;
    when no change touches a pre-0.7 slot the lists come back as they are. Nothing is written here.

    Parameters
    ----------
    connection
        The open file (``format``, ``path``, ``handle``).
    where
        The file as messages name it.
    elements, columns
        The staged changes (``replaces`` set by the transaction check; corrected here for what lies in
        structured datasets, whose fields the file has no paths for).
    overwrite
        Whether replacing and deleting stored columns and entries was asked for (moving a slot to today's
        encoding is not a replacement: it keeps every stored value).
    forget
        Called with each element (relative to its AnnData root) the swap moves, once committed: whatever
        the shadow built on the old layout (dask graphs over a structured dataset) must go.

    Returns
    -------
    The changes to commit: a :class:`~shadows.writing.commit.SlotSwap` change first (when a slot moves),
    then the changes it did not absorb.

    Raises
    ------
    UnsafeTargetError
        A slot to rewrite or an uns entry to delete is an HDF5 soft or external link.
    ReadOnlyError
        A change writes inside an array that is not a pre-0.7 slot, or into a pre-0.7 layout in a Zarr store.
    InvalidElementKeyError
        A new column takes the name of a structured frame's index.
    ElementExistsError
        A change replaces or deletes a stored column or entry and ``overwrite`` is False.
    MalformedElementError
        The slot cannot be moved without changing what anndata reads (names today's encoding refuses,
        values that do not read back the same, categories anndata cannot apply).
    """
    handle = connection.handle
    in_file = connection.capabilities.elements == "in-file"  # slots swap in one flush of the file's metadata
    problems = Problems()
    frame_roots = _frame_roots(handle, columns, problems, in_file)
    mapping_slots = _mapping_slots(handle, elements, problems, in_file)
    if not frame_roots and not mapping_slots:
        raise_problems(where, problems)
        return elements, columns
    plans: dict[str, _Plan] = {}
    for root in sorted(frame_roots):
        plans[root] = _Plan(root)
        _plan_frames(handle, plans[root], columns, overwrite, problems)
    for path in sorted(mapping_slots):
        root = _split(path)[0]
        plan = plans.setdefault(root, _Plan(root))
        _plan_mapping(handle, plan, path, elements, overwrite, problems)
    swapped = {plan.path(rel) for plan in plans.values() for rel in [*plan.frames, *plan.mappings]}
    deleted = {path for plan in plans.values() for path in plan.delete}
    folded = {id(c) for plan in plans.values() for c in [*plan.folded_elements, *plan.folded_columns]}
    for path in sorted(swapped | deleted):
        problem = link_problem(connection, path)
        if problem is not None:
            problems.unsafe.append(f"{path}: {problem}")
    for change in elements:
        if id(change) in folded:
            continue
        if any(change.path == p or change.path.startswith(p + "/") for p in swapped | deleted):
            problems.invalid.append(f"{change.path}: this write moves a pre-0.7 slot it belongs to (uns entries "
                                    "named '<column>_categories' hold the categories of pre-0.7 obs/var columns); "
                                    "write it in a separate write()")
    raise_problems(where, problems)
    ordered = list(plans.values())
    memory, placed = _encode(ordered, where)
    streamed = {plan.path(rel): values for plan in ordered for rel, values in plan.streamed.items() if values}
    swap = SlotSwap(memory, placed, streamed, sorted(deleted))
    change = ElementChange(next(iter(placed)), swap, True, _written(ordered, forget))
    return ([change, *(c for c in elements if id(c) not in folded)],
            [c for c in columns if id(c) not in folded])
