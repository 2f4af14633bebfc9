"""Pickling a shadow: the file's path, the selection and the changes held in memory (not the cache), so a
shadow travels to dask workers and other processes and reopens the file there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shadows.backends import FileRef
    from shadows.core.interface import ShadowLike
    from shadows.indexing import AxisIndex


def pickled(shadow: ShadowLike) -> tuple:
    """What ``shadow.__reduce__`` returns."""
    root = shadow._root
    view = (shadow._view, shadow._local, shadow._memory_state()) if shadow._is_view else None
    args = (type(shadow), shadow._ref, shadow._array_backend.name, shadow._table_backend.name, shadow._mode,
            root._view, root._memory_state(), view)
    return (reopened, args)


def reopened(cls: type, ref: FileRef, array_backend: str, table_backend: str, mode: str,
             selection: tuple[AxisIndex, AxisIndex] | None = None, state: dict[str, Any] | None = None,
             view: tuple[Any, Any, dict[str, Any]] | None = None) -> ShadowLike:
    """The shadow :func:`pickled` described, reopened in this process."""
    shadow = cls(ref.full_path, array_backend=array_backend, table_backend=table_backend, mode=mode,
                 format=ref.format, storage_options=ref.storage_options, allow_external=ref.allow_external)
    shadow._view = selection
    if state is not None:
        shadow._restore_memory(state)
    if view is None:
        return shadow
    positions, local, view_state = view
    out = cls._make_view(shadow, *positions, local)
    out._restore_memory(view_state)
    return out
