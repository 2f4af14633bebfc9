"""What the modules around a shadow may use of it.

The edges of the package (the text and HTML reprs, ``shadows info``, the export) use only the public
interface: ``describe()`` (a :class:`~shadows.core.description.Description`), ``stored_elements()``,
``element_value(path)``, ``mod`` and the AnnData attributes. The shadow's companions inside ``core/``
(its slots, raw, the description builder) take it as a :class:`ShadowLike` instead of importing
:class:`~shadows.core.base.ShadowBase`, which imports them: so no import circles, and this is the list
of internals they share with it (their meaning is documented on ``ShadowBase``); keep it small.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol


class ShadowLike(Protocol):
    """An AnnData or MuData shadow (or view) as its companions see it."""

    _KIND: ClassVar[str]  # "AnnData" or "MuData"
    _SLOTS: ClassVar[tuple[str, ...]]  # its aligned mapping slots
    _ref: Any  # the FileRef of its group
    _root: Any  # the shadow a view was taken from (itself for a root)
    _view: Any  # the rows and columns of the file's group it keeps (None: all)
    _local: Any  # a view's rows and columns as positions in its root
    _slots: dict[str, Any]  # the mappings of its slots
    _array_backend: Any
    _table_backend: Any
    _state: Any  # its element records (core/state.py: held ᐁ, changed ▲)

    n_obs: int
    n_vars: int
    is_view: bool
    filename: str

    def describe(self, details: bool = True) -> Any: ...  # the public interface of the edges (see the module docstring)
    def stored_elements(self) -> list[Any]: ...
    def element_value(self, path: str) -> Any: ...

    @property
    def _layout(self) -> Any: ...  # the metadata of the file's group

    def _element(self, rel: str) -> Any: ...  # an element as the backends present it
    def _plain(self, rel: str) -> Any: ...  # an element as numpy/scipy/pandas
    def _materialize(self, rel: str) -> Any: ...  # read the element (this view's part) as numpy/scipy/pandas
    def _has(self, rel: str) -> bool: ...  # whether the element exists for this shadow
    def _is_cached(self, rel: str) -> bool: ...  # held in memory (ᐁ)
    def _is_changed(self, rel: str) -> bool: ...  # changed in memory (▲)
    def _detach(self) -> None: ...  # a view becomes a shadow of its own
    def _visible_staged_columns(self, frame_rel: str) -> dict[str, Any]: ...  # obs/var columns assigned (▲)
    def _frame_keys(self, frame_rel: str) -> list[str]: ...  # obs/var column names, stored and assigned
    def _stage_column(self, frame_rel: str, key: str, values: Any) -> None: ...  # assign an obs/var column (▲)
