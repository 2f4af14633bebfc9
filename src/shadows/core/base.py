"""What AnnDataShadow and MuDataShadow share: the AnnData surface over a shadow's elements.

A shadow holds one thing, its :class:`~shadows.core.elements.ShadowElements` (layout, element records,
view key, connection); every attribute delegates to it, and each element is served by its
:class:`~shadows.core.element.Element` (the one serving order).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from shadows import convert
from shadows.backends import FileRef, resolve
from shadows.backends.fileref import suffix_format
from shadows.core import annotations, description
from shadows.core.committing import commit_changes
from shadows.core.connection import Connection, check_mode
from shadows.core.description import Description
from shadows.core.elements import ShadowElements
from shadows.core.references import ARRAY_REFERENCES, get_by_reference
from shadows.core.repr_html import html_repr
from shadows.core.repr_text import text_repr
from shadows.writing.export import export


def _mapping(slot: str, doc: str) -> property:
    """The property of a mapping slot (``"obsm"``, ``"uns"``...); deleting empties it, as in AnnData."""
    return property(lambda self: self._elements.slots[slot],
                    lambda self, values: self._elements.slots[slot].replace_all(values),
                    lambda self: self._elements.slots[slot].replace_all({}), doc)


def _frame(frame: str, doc: str | None = None) -> property:
    """The property of obs/var (``doc=None``: anndata's private ``_obs``/``_var``, which muon's filters
    assign); deleting drops every column and keeps the names, as in AnnData.
    """
    if doc is None:
        return property(lambda self: self._elements.element(frame).value(),
                        lambda self, value: self._elements.set_private_frame(frame, value))
    return property(lambda self: self._elements.element(frame).value(),
                    lambda self, value: annotations.set_frame(self._elements, frame, value),
                    lambda self: annotations.clear_frame(self._elements, frame), doc)


def _names(frame: str, doc: str) -> property:
    """The property of obs_names/var_names (read alone, without the columns; assignable ▲)."""
    return property(lambda self: annotations.names(self._elements, frame),
                    lambda self, names: annotations.set_names(self._elements, frame, names), None, doc)


class ShadowBase:
    """The AnnData surface of AnnData and MuData shadows (subclasses add ``anndata.AnnData``/``MuData``)."""

    #: The kind of elements this kind of shadow shows.
    _ELEMENTS: ClassVar[type[ShadowElements]]
    _elements: ShadowElements

    def __init__(self, filepath: str | os.PathLike, array_backend: str = "numpy", table_backend: str = "pandas",
                 mode: str = "r", format: str | None = None, storage_options: Mapping[str, Any] | None = None, *,
                 allow_external: bool = False):
        """Open the AnnData/MuData at ``filepath`` (see the class's parameters)."""
        check_mode(mode)
        ref = resolve(filepath, format, storage_options, allow_external=allow_external)
        arrays, tables = convert.array_backend(array_backend), convert.table_backend(table_backend)
        connection = Connection(ref.path, ref.format, mode, ref.storage_options)
        try:
            self._elements = self._ELEMENTS(ref, arrays, tables, connection, type(self)._wrap)
        except BaseException:
            connection.close()
            raise
        self._elements.shadow = self

    @classmethod
    def _wrap(cls, elements: ShadowElements) -> ShadowBase:
        """The shadow showing ``elements`` (a view's, a modality's)."""
        shadow = cls.__new__(cls)
        shadow._elements, elements.shadow = elements, shadow
        return shadow

    obs = _frame("obs", "Annotations of observations (a pandas DataFrame under the default table backend).")
    var = _frame("var", "Annotations of variables.")
    _obs = _frame("obs")
    _var = _frame("var")
    obs_names = _names("obs", "Names of observations (read alone, without the obs columns); assignable (▲).")
    var_names = _names("var", "Names of variables; assignable (▲).")
    obsm = _mapping("obsm", "Multi-dimensional annotations of observations.")
    varm = _mapping("varm", "Multi-dimensional annotations of variables.")
    obsp = _mapping("obsp", "Pairwise annotations of observations.")
    varp = _mapping("varp", "Pairwise annotations of variables.")
    uns = _mapping("uns", "Unstructured annotations, a lazy nested mapping.")

    n_obs = property(lambda self: self._elements.axis_length(0), doc="Number of observations.")
    n_vars = property(lambda self: self._elements.axis_length(1), doc="Number of variables.")
    shape = property(lambda self: self._elements.shape, doc="(n_obs, n_vars).")

    __len__ = n_obs.fget

    is_view = property(lambda self: self._elements.is_view,
                       doc="Whether this is a view (``shadow[...]``); a modified view is not (it became actual).")
    isbacked = property(lambda self: False,
                        doc="False: a shadow behaves like an in-memory AnnData (scanpy takes those paths).")

    filename = property(lambda self: self._elements.filename,
                        doc="Path of the file or store (plus the group path for one modality of a MuData).")
    file = property(lambda self: self._elements.connection.file,
                    doc="The open ``h5py.File`` or ``zarr.Group`` (a Zarr group is opened on first use).")

    def obs_keys(self) -> list[str]:
        """Names of the obs columns (stored, then assigned in memory)."""
        return annotations.frame_keys(self._elements, "obs")

    def var_keys(self) -> list[str]:
        """Names of the var columns (stored, then assigned in memory)."""
        return annotations.frame_keys(self._elements, "var")

    def obsm_keys(self) -> list[str]:
        return list(self.obsm)

    def varm_keys(self) -> list[str]:
        return list(self.varm)

    def uns_keys(self) -> list[str]:
        return list(self.uns)

    def persist(self, *keys: str) -> ShadowBase:
        """Keep the elements ``keys`` (``"X"``, ``"obsm/X_pca"``; all when none) computed in memory (ᐁ)."""
        self._elements.persist(keys)
        return self

    def clear_cache(self) -> None:
        """Drop what is held in memory (ᐁ); changes (▲) stay, arrays changed in place become ones."""
        self._elements.release()

    def __sizeof__(self) -> int:
        return object.__sizeof__(self) + self._elements.held_nbytes()

    def close(self) -> None:
        """Close the connection (memory stays); the last shadow of a file releases its handles."""
        self._elements.connection.close()

    def reopen(self, mode: str = "r") -> ShadowBase:
        """Reopen the file in ``mode`` (``"r"``/``"r+"``) with views and modalities, keeping changes."""
        self._elements.connection.open(mode)
        return self

    def __enter__(self) -> ShadowBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, filename: str | os.PathLike | bool | None = None, clear_cache: bool = False,
              overwrite: bool = False, *, progress: bool = False, **kwargs: Any) -> ShadowBase:
        """Commit the changes (▲) to the file (open ``"r+"``; replacing stored ones needs ``overwrite``),
        each atomically; ``write(filename)`` is AnnData's alias of ``write_h5ad(filename)``.
        """
        if isinstance(filename, bool):  # write(True): the first parameter before AnnData's alias existed
            clear_cache = filename
        elif filename is not None:
            # write_h5ad / write_h5mu: both an HDF5 export (anndata's compression options are ignored)
            export(self, filename, "hdf5", progress=progress, overwrite=overwrite)
            return self
        commit_changes(self._elements, overwrite=overwrite, progress=progress)
        if clear_cache:
            self.clear_cache()
        return self

    def _init_as_actual(self, X: Any = None, *args: Any, **kwargs: Any) -> None:
        """What anndata's ``view_to_actual`` calls: a view becomes an independent shadow (nothing read)."""
        if isinstance(X, ShadowBase) and X._elements.ref == self._elements.ref and X.shape == self.shape:
            self._elements.detach()
            return
        raise TypeError(f"{self.filename}: a shadow cannot be re-initialized from other data; use the AnnData it "
                        "came from, or .to_memory() for an in-memory copy")

    def copy(self, filename: str | os.PathLike | None = None, *, overwrite: bool = False,
             progress: bool = False) -> Any:
        """An independent shadow of the same data (nothing read, changes ▲ copied); with ``filename``,
        exported there (HDF5 or Zarr by the suffix) and opened. ``to_memory()`` gives an AnnData.
        """
        if filename is None:
            return self._wrap(self._elements.copied())
        fmt = suffix_format(filename) or "hdf5"
        export(self, filename, fmt, overwrite=overwrite, progress=progress)
        return type(self)(filename, array_backend=self._elements.arrays.name,
                          table_backend=self._elements.tables.name, format=fmt)

    def write_zarr(self, store: str | os.PathLike, *, progress: bool = False, overwrite: bool = False,
                   **_: Any) -> None:
        """Export this shadow (or view) to a new Zarr store, out of core."""
        export(self, store, "zarr", progress=progress, overwrite=overwrite)

    def __getitem__(self, index: Any) -> Any:
        """A view by AnnData's keys (reads no data); an ``anndata.acc`` reference gives its array."""
        if isinstance(index, ARRAY_REFERENCES):
            return get_by_reference(self, index)
        return self._wrap(self._elements.view_of(index))

    def _inplace_subset_obs(self, index: Any) -> None:
        self._elements.subset_in_place((index, slice(None)))  # adata = adata[index], in place

    def _inplace_subset_var(self, index: Any) -> None:
        self._elements.subset_in_place((slice(None), index))

    def describe(self, details: bool = True) -> Description:
        """Every element shown, with encoding, shape, dtype and markers, from metadata (a Description)."""
        return description.describe(self._elements, details)

    def stored_elements(self) -> list[description.StoredElement]:
        """Every element the file stores for this group, with its chunking and bytes on disk (metadata)."""
        return description.stored_elements(self._elements)

    def element_value(self, path: str) -> Any:
        """The element at ``path`` (``"X"``, ``"obsm/X_pca"``, ``"uns"``) as an export writes it."""
        if path == "uns":
            return self.uns.materialize()
        return self._elements.element(path).export_value()

    def __repr__(self) -> str:
        return text_repr(self.describe(details=False))

    def _repr_html_(self) -> str:
        """Jupyter's rich repr, from metadata (mudata's own reads every modality's obs and var)."""
        return html_repr(self.describe())

    def __reduce__(self):
        """Pickled as the file's path, the selection and the changes held in memory (not the cache)."""
        return (reopened, (type(self), *self._elements.pickle_state()))


def shadow_elements(shadow: ShadowBase) -> ShadowElements:
    """The :class:`~shadows.core.elements.ShadowElements` of ``shadow`` (what a MuData's elements use)."""
    return shadow._elements


def attached(cls: type[ShadowBase], ref: FileRef, arrays: convert.Backend, tables: convert.Backend,
             connection: Connection) -> ShadowBase:
    """A root shadow of type ``cls`` of the group at ``ref`` over an open ``connection`` (a modality)."""
    return cls._wrap(cls._ELEMENTS(ref, arrays, tables, connection, cls._wrap))


def reopened(cls: type[ShadowBase], ref: FileRef, array_backend: str, table_backend: str, mode: str,
             selection: Any = None, state: dict[str, Any] | None = None, view: Any = None) -> ShadowBase:
    """The shadow a pickle described (:meth:`ShadowBase.__reduce__`), reopened in this process."""
    shadow = cls(ref.full_path, array_backend=array_backend, table_backend=table_backend, mode=mode,
                 format=ref.format, storage_options=ref.storage_options, allow_external=ref.allow_external)
    elements = shadow._elements.restored(selection, state, view)
    return shadow if elements is shadow._elements else cls._wrap(elements)
