"""A write as one transaction: every staged change checked against the file before the first byte is
written (:func:`check`), then committed element by element (:func:`commit`).

``write()`` asks the file itself (not the shadow's record of it, which another shadow's write may have
made stale) what each change would replace, and refuses the whole write, naming every problem, when a
change would write through a link, replace something not asked for, or use a key that is not a name.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shadows import progress
from shadows.errors import (
    ElementExistsError,
    InvalidElementKeyError,
    MalformedElementError,
    ReadOnlyError,
    ShadowsError,
    UnsafeTargetError,
    UnwritableValueError,
    WriteFailedError,
    element_message,
)
from shadows.names import column_problem, key_problem
from shadows.writing.commit import (
    DELETED,
    ColumnChange,
    ElementChange,
    GroupAttributes,
    Hdf5Commit,
    ZarrCommit,
    link_problem,
    one_column_frame,
    stored,
)
from shadows.writing.encodable import encoding_problem
from shadows.writing.streams import is_dask


@dataclass
class Problems:
    """What would go wrong, by kind (each a list of ``"element: why"`` lines); :func:`raise_problems`
    raises for the gravest kind, naming every problem of it.
    """

    unsafe: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    replacing: list[str] = field(default_factory=list)
    unwritable: list[str] = field(default_factory=list)  # a place nothing can be written into
    malformed: list[str] = field(default_factory=list)  # a pre-0.7 slot that cannot move to today's encoding
    unencodable: list[str] = field(default_factory=list)  # a value anndata has no encoding for


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


def _frame_length(connection: Any, frame_path: str, index_key: str | None) -> int | None:
    """Rows of the stored dataframe at ``frame_path`` (its index's length), or None if unknown."""
    from shadows.backends import nodes

    handle = connection.handle
    path = f"{frame_path}/{index_key}"
    if index_key is None or path not in handle:
        return None
    node = handle[path]
    if nodes.is_group(node):  # an encoded array (anndata 0.13's nullable strings: values and mask)
        node = node["values"] if nodes.has_child(node, "values") else None
    shape = getattr(node, "shape", None)
    return int(shape[0]) if shape else None


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
        if _too_long(connection, change.path, change.value, problems):
            continue  # the file system refuses the name: even looking the path up would fail
        _check_path(connection, change.path, problems)
        name = change.path.rpartition("/")[2]
        problem = key_problem(name)
        if problem is not None:
            problems.invalid.append(f"{change.path}: {problem}")
        if not isinstance(change.value, GroupAttributes) and change.value is not DELETED:
            problem = encoding_problem(change.value)
            if problem is not None:
                problems.unencodable.append(f"{change.path}: {problem}")
        change.replaces = stored(connection, change.path) and not isinstance(change.value, GroupAttributes)
        if change.replaces and not overwrite:
            problems.replacing.append(change.path)
    frames: dict[str, tuple[str | None, set[str]]] = {}
    for change in columns:
        path = f"{change.frame_path}/{change.key}"
        if _too_long(connection, path, None, problems):
            continue
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
        if change.values is not DELETED:
            problem = encoding_problem(one_column_frame(change))  # what the commit writes
            if problem is not None:
                problems.unencodable.append(f"{path}: {problem}")
        rows = _frame_length(connection, change.frame_path, index_key)
        if change.values is not DELETED and rows is not None and len(change.values) != rows:
            problems.invalid.append(f"{path}: {len(change.values)} values for a dataframe of {rows} rows")
        change.replaces = stored(connection, path)
        if change.replaces and not overwrite:
            problems.replacing.append(path)
    raise_problems(where, problems)


def _too_long(connection: Any, path: str, value: Any, problems: Problems) -> bool:
    """Record (and say) whether ``path`` or a key inside ``value`` is too long for the file system of a
    local Zarr store (:func:`~shadows.backends.name_limits.name_problem`).
    """
    from shadows.backends.name_limits import name_problem

    if connection.capabilities.elements != "folders":  # HDF5 link names and object keys: no such limits here
        return False
    problem = name_problem(str(connection.path), path, value)
    if problem is not None:
        problems.invalid.append(f"{path if len(path) <= 80 else path[:80] + '...'}: {problem}")
    return problem is not None


def _check_path(connection: Any, path: str, problems: Problems) -> None:
    problem = link_problem(connection, path)
    if problem is not None:
        problems.unsafe.append(f"{path}: {problem}")


def raise_problems(where: str, problems: Problems) -> None:
    """Raise for the gravest kind of problem found (none: return)."""
    if problems.unsafe:
        raise UnsafeTargetError(f"{where}: nothing was written: shadows never writes through links, and writing "
                                f"would follow one ({'; '.join(problems.unsafe)})")
    if problems.unwritable:
        raise ReadOnlyError(f"{where}: nothing was written: {'; '.join(problems.unwritable)}")
    if problems.malformed:
        raise MalformedElementError(f"{where}: nothing was written: a pre-0.7 slot cannot be moved to today's "
                                    f"encoding ({'; '.join(problems.malformed)})")
    if problems.unencodable:
        raise UnwritableValueError(f"{where}: nothing was written: anndata cannot store these values "
                                   f"({'; '.join(problems.unencodable)}); convert them (e.g. to numpy arrays, "
                                   "strings or dicts of them) or delete them")
    if problems.invalid:
        raise InvalidElementKeyError(f"{where}: nothing was written: invalid names ({'; '.join(problems.invalid)})")
    if problems.replacing:
        raise ElementExistsError(f"{where}: writing would replace or delete stored elements "
                                 f"({', '.join(problems.replacing)}); pass overwrite=True to do so")


def commit(connection: Any, elements: list[ElementChange], columns: list[ColumnChange]) -> None:
    """Write every change through ``connection`` (open for writing), one atomic commit each.

    Raises
    ------
    WriteFailedError
        Storage refused a write (disk full, file size limit, I/O error): the element being written is not
        visible, the ones committed before it are. The error lists both (also as its ``committed`` and
        ``staged`` attributes); what was not committed stays staged.
    """
    writer: Any
    stored_as = connection.capabilities.elements  # in a file, as folders or as an object store's keys
    if stored_as == "in-file":
        writer = Hdf5Commit(connection.handle)
    elif stored_as == "objects":
        from shadows.writing.remote_commit import RemoteZarrCommit

        writer = RemoteZarrCommit(connection.path, connection.storage_options, connection.handle.consolidated)
    else:
        writer = ZarrCommit(connection.path, consolidated=connection.handle.consolidated)
    names = [c.path for c in elements] + [f"{c.frame_path}/{c.key}" for c in columns]
    committed: list[str] = []
    bar = progress.current()
    try:
        for change in elements:
            if bar is not None:
                bar.element(change.path)
            with _naming_failures(connection.path, change.path):
                writer.element(change)
            if bar is not None and not is_dask(change.value):
                bar.advance()  # a dask array counted its blocks as it wrote them
            change.written()
            committed.append(change.path)
        for change in columns:
            if bar is not None:
                bar.element(f"{change.frame_path}/{change.key}")
            with _naming_failures(connection.path, f"{change.frame_path}/{change.key}"):
                writer.column(change)
            if bar is not None:
                bar.advance()
            change.written()
            committed.append(f"{change.frame_path}/{change.key}")
    except BaseException as error:
        if not isinstance(writer, Hdf5Commit):
            writer.consolidate()  # what was committed before the failure stays visible
            writer.abort()
        if isinstance(error, WriteFailedError):
            raise _with_outcome(error, committed, [n for n in names if n not in committed]) from error
        raise
    writer.finish()


def blocks_to_commit(elements: list[ElementChange], columns: list[ColumnChange]) -> int:
    """What a commit counts on its progress bar: each dask array's blocks, 1 per other change."""
    return sum(progress.blocks_of(change.value) for change in elements) + len(columns)


def _with_outcome(error: WriteFailedError, committed: list[str], staged: list[str]) -> WriteFailedError:
    """``error`` saying what the write committed and what stays staged (▲), also as attributes."""
    outcome = WriteFailedError(f"{error} Committed: {', '.join(committed) or 'nothing'}. Still staged in memory "
                               f"(▲; write() again once storage allows): {', '.join(staged)}.")
    outcome.committed, outcome.staged = committed, staged
    return outcome


#: errno values that mean "storage is full", and how to say so
_FULL = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "the file size limit was reached",
         errno.EDQUOT: "the disk quota is exceeded"}
_DENIED = {errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


@contextlib.contextmanager
def _naming_failures(path: str, element: str) -> Iterator[None]:
    """Turn a storage failure while writing ``element`` into a WriteFailedError that names it.

    Errors of the staged value's own computation pass through unchanged. h5py reports failed writes as
    OSError or RuntimeError with HDF5's text (which carries the errno), zarr as OSError.
    """
    try:
        yield
    except (OSError, RuntimeError) as error:
        if isinstance(error, ShadowsError):
            raise
        code = getattr(error, "errno", None)
        text = str(error)
        if code is None:
            code = next((c for c in (*_FULL, *_DENIED) if f"errno = {c}," in text), None)
        is_storage = isinstance(error, OSError) or code is not None or "write failed" in text
        if not is_storage:
            raise
        reason = {**_FULL, **_DENIED}.get(code, "storage refused the write")
        what = (f"writing failed: {reason}. Nothing of this element is visible in the file; elements committed "
                f"before it are ({type(error).__name__}: {text.splitlines()[0] if text else code})")
        raise WriteFailedError(element_message(path, element, what)) from error
