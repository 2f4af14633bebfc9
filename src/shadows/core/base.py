"""What AnnDataShadow and MuDataShadow share: the AnnData surface over a shadow's elements.

A shadow holds one thing, its :class:`~shadows.core.elements.ShadowElements` (the layout, the element
records, the view key and the connection); every attribute here delegates to it, and each element is
served by its :class:`~shadows.core.element.Element` (the one serving order). The classes built on it
add their own attributes (X, layers and raw; modalities and obsmap/varmap).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from shadows import convert
from shadows.backends import FileRef, resolve
from shadows.backends.fileref import suffix_format
from shadows.core import description
from shadows.core.committing import commit_changes
from shadows.core.connection import Connection, check_mode
from shadows.core.description import Description
from shadows.core.elements import ShadowElements
from shadows.core.references import ARRAY_REFERENCES, get_by_reference
from shadows.core.repr_html import html_repr
from shadows.core.repr_text import text_repr
from shadows.writing.export import export


def _mapping(slot: str, doc: str) -> property:
    """The property of an aligned or unstructured mapping slot (``"obsm"``, ``"uns"``...); deleting
    empties it, as AnnData does.
    """
    return property(lambda self: self._elements.slots[slot],
                    lambda self, values: self._elements.slots[slot].replace_all(values),
                    lambda self: self._elements.slots[slot].replace_all({}), doc)


def _frame(frame: str, doc: str | None = None) -> property:
    """The property of obs/var (``doc=None``: anndata's private ``_obs``/``_var``, which muon's in-place
    filters assign with some of the current rows). Deleting keeps the names and drops every column.
    """
    if doc is None:
        return property(lambda self: self._elements.element(frame).value(),
                        lambda self, value: self._elements.set_private_frame(frame, value))
    return property(lambda self: self._elements.element(frame).value(),
                    lambda self, value: self._elements.set_frame(frame, value),
                    lambda self: self._elements.clear_frame(frame), doc)


def _names(frame: str, doc: str) -> property:
    """The property of obs_names/var_names (read alone, without the columns; assignable ▲)."""
    return property(lambda self: self._elements.names(frame),
                    lambda self, names: self._elements.set_names(frame, names), None, doc)


class ShadowBase:
    """The AnnData surface shared by AnnData and MuData shadows (mixed with ``anndata.AnnData`` or
    ``mudata.MuData`` by the subclasses, for a real ``isinstance``).
    """

    #: The kind of elements this kind of shadow shows.
    _ELEMENTS: ClassVar[type[ShadowElements]]
    _elements: ShadowElements

    def __init__(self, filepath: str | os.PathLike, array_backend: str = "numpy", table_backend: str = "pandas",
                 mode: str = "r", format: str | None = None, storage_options: Mapping[str, Any] | None = None, *,
                 allow_external: bool = False):
        """Open the AnnData/MuData at ``filepath`` (see the class's parameters).

        ``allow_external=True`` lets reads follow what leads out of the file: HDF5 external links,
        external storage and virtual datasets with sources in other files, symbolic links out of a Zarr
        store. By default an element using one is refused with
        :class:`~shadows.errors.ExternalDataError` when it is accessed (anndata and h5py follow them
        silently); see :mod:`shadows.backends.containment`. Pickles (and dask workers) keep the choice.
        """
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

    @property
    def n_obs(self) -> int:
        """Number of observations."""
        return self._elements.axis_length(0)

    @property
    def n_vars(self) -> int:
        """Number of variables."""
        return self._elements.axis_length(1)

    @property
    def shape(self) -> tuple[int, int]:
        """(n_obs, n_vars)."""
        return self._elements.shape

    def __len__(self) -> int:
        return self.n_obs

    @property
    def is_view(self) -> bool:
        """Whether this shadow is a view (``shadow[...]``) of another; a modified view is not (it became
        an independent shadow of its selection, as AnnData views become actual).
        """
        return self._elements.is_view

    @property
    def isbacked(self) -> bool:
        """False, as for an in-memory AnnData: a shadow behaves like one (changes live in memory), so
        scanpy and anndata take their in-memory paths. ``filename`` and ``file`` still give the file.
        """
        return False

    @property
    def filename(self) -> str:
        """Path of the file or store (plus the group path for one modality of a MuData)."""
        return self._elements.filename

    @property
    def file(self) -> Any:
        """The open ``h5py.File`` or ``zarr.Group`` (a Zarr group is opened on first use)."""
        return self._elements.connection.file

    def obs_keys(self) -> list[str]:
        """Names of the obs columns (stored, then assigned in memory)."""
        return self._elements.frame_keys("obs")

    def var_keys(self) -> list[str]:
        """Names of the var columns (stored, then assigned in memory)."""
        return self._elements.frame_keys("var")

    def obsm_keys(self) -> list[str]:
        """Keys of obsm."""
        return list(self.obsm)

    def varm_keys(self) -> list[str]:
        """Keys of varm."""
        return list(self.varm)

    def uns_keys(self) -> list[str]:
        """Keys of uns."""
        return list(self.uns)

    def persist(self, *keys: str) -> ShadowBase:
        """Keep the graphs of ``keys`` (element paths such as ``"X"``, ``"obsm/X_pca"``; all when none
        are given) computed in memory, locally or on the cluster; they are marked ᐁ.
        """
        self._elements.persist(keys)
        return self

    def clear_cache(self) -> None:
        """Drop every element held in memory so its memory is freed (for a MuData: in every modality).

        Changes are not dropped: elements assigned or deleted in memory (▲) stay, and so does a cached
        array that was changed in place since it was read (``np.log1p(adata.X, out=adata.X)``): it is
        kept as a change (▲), for ``write(overwrite=True)`` to store, never reverted to the file's values.
        """
        self._elements.release()

    def __sizeof__(self) -> int:
        return object.__sizeof__(self) + self._elements.held_nbytes()

    def close(self) -> None:
        """Close the connection to the file (cached and staged elements stay in memory; closing twice is
        harmless). The last shadow of a file to close releases every handle this process holds on it,
        graph tasks' included; other shadows of the file keep working.
        """
        self._elements.connection.close()

    def reopen(self, mode: str = "r") -> ShadowBase:
        """Reopen the file in ``mode`` (``"r"`` or ``"r+"``), keeping in-memory additions.

        The connection is this shadow's, its views' and modalities': they all follow. Other shadows of
        the same file keep their own mode; they read through the one handle this process holds, which
        is upgraded to ``r+`` in place and back to ``r`` when no shadow holds ``r+``. If the file refuses
        (another process writing it, permissions), the shadow stays exactly as it was.
        """
        self._elements.connection.open(mode)
        return self

    def __enter__(self) -> ShadowBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, filename: str | os.PathLike | bool | None = None, clear_cache: bool = False,
              overwrite: bool = False, *, progress: bool = False, **kwargs: Any) -> ShadowBase:
        """Push staged elements (▲) to the file, each committed atomically; returns the shadow.

        The file must be open with ``mode="r+"`` (``reopen("r+")``). Dask arrays are streamed block by
        block, so an element computed lazily is never held in memory whole. Replacing an element or
        column the file already has needs ``overwrite=True``. With ``clear_cache=True`` what is held in
        memory is dropped afterwards. ``progress=True`` shows one bar for the whole write (blocks
        written, and the element being written).

        ``write(filename)`` is AnnData's alias of ``write_h5ad(filename)`` (``write_h5mu`` for MuData):
        an export to a new file (``overwrite=True`` to replace one), and the shadow is returned.
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
        """What anndata and scanpy call to turn a view into an actual object (``view_to_actual``:
        ``adata._init_as_actual(adata.copy())``): a shadow becomes an independent shadow of its
        selection (nothing read). Any other data cannot become a shadow: a TypeError says so.
        """
        if isinstance(X, ShadowBase) and X._elements.ref == self._elements.ref and X.shape == self.shape:
            self._elements.detach()
            return
        raise TypeError(f"{self.filename}: a shadow cannot be re-initialized from other data; use the AnnData it "
                        "came from, or .to_memory() for an in-memory copy")

    def copy(self, filename: str | os.PathLike | None = None, *, overwrite: bool = False,
             progress: bool = False) -> Any:
        """An independent shadow of the same data (a view's copy is not a view); nothing is read: stored
        elements stay in the file, changes held in memory (▲) are copied. With ``filename``, this shadow
        (or view) is written there out of core (HDF5 or Zarr by the suffix; what exists there is replaced
        only with ``overwrite=True``; ``progress=True`` shows one bar) and opened as a new shadow with the
        same backends. ``to_memory()`` gives an in-memory AnnData.
        """
        if filename is None:
            return self._wrap(self._elements.copied())
        fmt = suffix_format(filename) or "hdf5"
        export(self, filename, fmt, overwrite=overwrite, progress=progress)
        return type(self)(filename, array_backend=self._elements.arrays.name,
                          table_backend=self._elements.tables.name, format=fmt)

    def write_zarr(self, store: str | os.PathLike, *, progress: bool = False, overwrite: bool = False,
                   **_: Any) -> None:
        """Write this shadow (or view: only its selection) to a new Zarr store, out of core (Zarr format
        from ``anndata.settings.zarr_write_format``; anndata's compression options are ignored). An
        existing store is replaced only with ``overwrite=True``; the shadow's own store never is.
        """
        export(self, store, "zarr", progress=progress, overwrite=overwrite)

    def __getitem__(self, index: Any) -> Any:
        """A view: a shadow of its own (``type(view) is type(self)``) whose elements are this shadow's,
        sliced by ``index``: AnnData's keys (slices, ints, masks, positions, names, and pairs of them).
        Views compose to any depth; building one reads no data. An ``anndata.acc`` reference
        (``adata[A.obs["louvain"]]``, anndata >= 0.13) returns the array it points at, as AnnData does.
        """
        if isinstance(index, ARRAY_REFERENCES):
            return get_by_reference(self, index)
        return self._wrap(self._elements.view_of(index))

    def _inplace_subset_obs(self, index: Any) -> None:
        """Keep the observations ``index`` selects (``adata = adata[index]``, in place)."""
        self._elements.subset_in_place((index, slice(None)))

    def _inplace_subset_var(self, index: Any) -> None:
        """Keep the variables ``index`` selects (``adata = adata[:, index]``, in place)."""
        self._elements.subset_in_place((slice(None), index))

    def describe(self, details: bool = True) -> Description:
        """Every element this shadow (or view) shows, slot by slot: encoding, shape and dtype as it shows
        them, and whether each is held in memory (ᐁ) or changed in memory (▲); a MuData's modalities
        too. Reads no data. ``details=False`` skips the encodings and dtypes of stored obs/var columns
        (the text repr's names and markers only). See :class:`shadows.core.description.Description`.
        """
        return description.describe(self._elements, details)

    def stored_elements(self) -> list[description.StoredElement]:
        """Every element the file stores for this shadow's group (uns walked recursively; a MuData's
        modalities as ``mod/<name>/...``) with its chunking and bytes on disk, from metadata only.
        """
        return description.stored_elements(self._elements)

    def element_value(self, path: str) -> Any:
        """The element at ``path`` (``"X"``, ``"obs"``, ``"obsm/X_pca"``, ``"uns"``) as this shadow (or
        view) would write it: a value assigned in memory as it is (▲; ``None`` when deleted), a value held
        in memory, else a matrix as its dask graph (lazy, only the view's part) and anything else read as
        numpy/pandas/dict. What exports stream from.
        """
        if path == "uns":
            return self.uns.materialize()
        return self._elements.element(path).export_value()

    def __repr__(self) -> str:
        return text_repr(self.describe(details=False))

    def _repr_html_(self) -> str:
        """Jupyter's rich repr: slots, keys, encodings, shapes and dtypes from metadata (reads no data;
        mudata's own HTML repr reads every modality's obs and var to print them).
        """
        return html_repr(self.describe())

    def __reduce__(self):
        """Pickled as the file's path, the selection and the changes held in memory (not the cache)."""
        return (reopened, (type(self), *self._elements.pickle_state()))


def shadow_elements(shadow: ShadowBase) -> ShadowElements:
    """The :class:`~shadows.core.elements.ShadowElements` of ``shadow`` (a MuData's modalities', for the
    MuData's elements).
    """
    return shadow._elements


def attached(cls: type[ShadowBase], ref: FileRef, arrays: convert.Backend, tables: convert.Backend,
             connection: Connection) -> ShadowBase:
    """A root shadow of type ``cls`` of the group at ``ref`` sharing an open ``connection`` (a MuData's
    modality).
    """
    return cls._wrap(cls._ELEMENTS(ref, arrays, tables, connection, cls._wrap))


def reopened(cls: type[ShadowBase], ref: FileRef, array_backend: str, table_backend: str, mode: str,
             selection: Any = None, state: dict[str, Any] | None = None, view: Any = None) -> ShadowBase:
    """The shadow a pickle described (:meth:`ShadowBase.__reduce__`), reopened in this process."""
    shadow = cls(ref.full_path, array_backend=array_backend, table_backend=table_backend, mode=mode,
                 format=ref.format, storage_options=ref.storage_options, allow_external=ref.allow_external)
    elements = shadow._elements.restored(selection, state, view)
    return shadow if elements is shadow._elements else cls._wrap(elements)
