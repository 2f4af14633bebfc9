"""Check every staged change against the file before the first byte is written.

``write()`` asks the file itself (not the shadow's record of it, which another shadow's write may have
made stale) what each change would replace, and refuses the whole write, naming every problem, when a
change would write through a link, replace something not asked for, or use a key that is not a name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shadows.errors import ElementExistsError, InvalidElementKeyError, UnsafeTargetError
from shadows.names import column_problem, key_problem
from shadows.writing.commit import ColumnChange, ElementChange, link_problem, stored


@dataclass
class Problems:
    """What would go wrong, by kind (each a list of ``"element: why"`` lines)."""

    unsafe: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    replacing: list[str] = field(default_factory=list)


def _frame_children(connection: Any, frame_path: str) -> tuple[str | None, set[str]]:
    """The index key of the stored dataframe at ``frame_path`` and the names of its children that are
    not columns (the index, legacy ``__categories``): a column may never take their place.
    """
    from shadows.backends import nodes

    handle = connection.handle
    if frame_path not in handle:
        return None, set()
    node = handle[frame_path]
    if not nodes.is_group(node):
        return None, set()  # a structured (pre-0.7) frame: no children to collide with
    attrs = nodes.attrs(node)
    columns = attrs.get("column-order", [])
    columns = {columns} if isinstance(columns, str) else set(columns)
    return attrs.get("_index"), {c for c in nodes.child_names(node) if c not in columns}


def check(connection: Any, where: str, elements: list[ElementChange], columns: list[ColumnChange],
          overwrite: bool) -> None:
    """Mark each change by whether it replaces something stored, then raise if any change cannot be written.

    Parameters
    ----------
    connection
        The open file (``format``, ``path``, ``handle``).
    where
        The file as messages name it.
    elements, columns
        The staged changes; their ``replaces`` flags are set from the file.
    overwrite
        Whether replacing and deleting stored elements was asked for.

    Raises
    ------
    UnsafeTargetError
        A change would write through a symbolic link or an HDF5 soft/external link.
    InvalidElementKeyError
        A key is not a valid element or column name.
    ElementExistsError
        A change replaces or deletes what the file holds and ``overwrite`` is False.
    """
    problems = Problems()
    for change in elements:
        _check_path(connection, change.path, problems)
        name = change.path.rpartition("/")[2]
        problem = key_problem(name)
        if problem is not None:
            problems.invalid.append(f"{change.path}: {problem}")
        change.replaces = stored(connection, change.path)
        if change.replaces and not overwrite:
            problems.replacing.append(change.path)
    frames: dict[str, tuple[str | None, set[str]]] = {}
    for change in columns:
        path = f"{change.frame_path}/{change.key}"
        _check_path(connection, path, problems)
        problem = column_problem(change.key)
        if problem is not None:
            problems.invalid.append(f"{path}: {problem}")
        if change.frame_path not in frames:
            frames[change.frame_path] = _frame_children(connection, change.frame_path)
        index_key, not_columns = frames[change.frame_path]
        if change.key in not_columns:
            role = "the index" if change.key == index_key else "a part of the dataframe that is not a column"
            problems.invalid.append(f"{path}: the name of {role}; rename the column")
        change.replaces = stored(connection, path)
        if change.replaces and not overwrite:
            problems.replacing.append(path)
    _raise(where, problems)


def _check_path(connection: Any, path: str, problems: Problems) -> None:
    problem = link_problem(connection, path)
    if problem is not None:
        problems.unsafe.append(f"{path}: {problem}")


def _raise(where: str, problems: Problems) -> None:
    if problems.unsafe:
        raise UnsafeTargetError(f"{where}: nothing was written: shadows never writes through links, and writing "
                                f"would follow one ({'; '.join(problems.unsafe)})")
    if problems.invalid:
        raise InvalidElementKeyError(f"{where}: nothing was written: invalid names ({'; '.join(problems.invalid)})")
    if problems.replacing:
        raise ElementExistsError(f"{where}: writing would replace or delete stored elements "
                                 f"({', '.join(problems.replacing)}); pass overwrite=True to do so")
