"""What AnnDataShadow and MuDataShadow share: construction (a connection, a layout, the element
records), the obs/var/obsm/varm/obsp/varp/uns slots and the AnnData surface over them, memory,
the connection, writing, exports, views and pickling.

Reading elements is :mod:`shadows.core.reading` and changing them :mod:`shadows.core.changing` (both
mixed in); what the shadow holds in memory is :mod:`shadows.core.state`. The classes built on it add their
own slots (X and layers; modalities and obsmap/varmap) and their own rules for views.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

import pandas as pd

from shadows import convert
from shadows import progress as progress_bar
from shadows.backends import FileRef, resolve
from shadows.backends.fileref import suffix_format
from shadows.cluster import writes_on_cluster
from shadows.core import description
from shadows.core.aligned import ElementMapping, UnsMapping
from shadows.core.changing import ElementChanges
from shadows.core.connection import Connection, check_mode
from shadows.core.description import Description
from shadows.core.layout import Layout
from shadows.core.reading import ElementReading
from shadows.core.state import NOTHING, ElementState
from shadows.errors import ReadOnlyError
from shadows.indexing import AxisIndex, compose, normalize_key
from shadows.schema import FRAMES
from shadows.writing import DELETED, commit, legacy_upgrade, transaction
from shadows.writing.export import export

READ_ONLY_MESSAGE = (
    "File is open in read-only mode. Changes can't be pushed. Reopen it with .reopen('r+') to enable writing."
)


class ShadowBase(ElementReading, ElementChanges):
    """The file-backed part of a shadow (mixed into the AnnData/MuData subclasses).

    A shadow is either a root (``_root is self``) that owns the layout of its group, or a view: the root
    plus positions kept on each axis (``_view``, of the file's group; ``_local``, of the root), so views
    of views compose. A root subset in place keeps its positions in ``_view`` too. A shadow, its views
    and its modalities share one :class:`~shadows.core.connection.Connection`; the connections of one
    file share the process's one handle of it (:mod:`shadows.backends.registry`).
    """

    _LAYOUT: ClassVar[type[Layout]]
    #: Aligned mapping slots of this kind of shadow (``uns`` is always there too).
    _SLOTS: ClassVar[tuple[str, ...]]
    #: "AnnData" or "MuData", for messages and the repr.
    _KIND: ClassVar[str]
    #: Whether this shadow is a view (a root, also one subset in place, is not; views set their own).
    _is_view: bool = False
    #: A view's rows and columns as positions in its root (``None`` for roots).
    _local: tuple[AxisIndex, AxisIndex] | None = None

    # -- construction ----------------------------------------------------------------------------

    def __init__(
        self,
        filepath: str | os.PathLike,
        array_backend: str = "numpy",
        table_backend: str = "pandas",
        mode: str = "r",
        format: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        *,
        allow_external: bool = False,
    ):
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
            self._attach(ref, arrays, tables, connection)
        except BaseException:
            connection.close()
            raise

    def _attach(self, ref: FileRef, arrays: convert.Backend, tables: convert.Backend, connection: Connection) -> None:
        """Make this shadow the root of the group at ``ref``, read through ``connection``."""
        self._ref = ref
        self._array_backend, self._table_backend = arrays, tables
        self._conn = connection
        self._root = self
        self._view: tuple[AxisIndex, AxisIndex] | None = None
        self._build_layout()
        self._init_memory()

    @classmethod
    def _attached(cls, ref: FileRef, arrays: convert.Backend, tables: convert.Backend,
                  connection: Connection) -> ShadowBase:
        """A root shadow of the group at ``ref`` sharing an open ``connection`` (a MuData's modality)."""
        shadow = cls.__new__(cls)
        shadow._attach(ref, arrays, tables, connection)
        return shadow

    @classmethod
    def _make_view(cls, root: ShadowBase, obs: AxisIndex, var: AxisIndex,
                   local: tuple[AxisIndex, AxisIndex] | None = None) -> ShadowBase:
        """A view of ``root`` keeping positions ``obs`` and ``var`` of the file's group; ``local`` are the
        same rows and columns as positions in ``root`` (which differ when ``root`` is itself a subset).
        """
        view = cls.__new__(cls)
        view._ref, view._conn = root._ref, root._conn
        view._array_backend, view._table_backend = root._array_backend, root._table_backend
        view._root = root
        view._view = (obs, var)
        view._is_view = True
        view._local = local if local is not None else (obs, var)
        view._init_memory()
        return view

    def _init_memory(self) -> None:
        """Fresh in-memory state: the element records (:mod:`shadows.core.state`) and the slots."""
        connection = self._conn
        self._state = ElementState(lambda: connection.content, DELETED)
        self._raw_slot: Any = None
        self._slots = {slot: ElementMapping(self, slot, partial(self._stored_children, slot)) for slot in self._SLOTS}
        self._slots["uns"] = UnsMapping(self, "uns", self._visible_uns_keys)
        self._uns_levels: dict[str, UnsMapping] = {"uns": self._slots["uns"]}
        #: This shadow as it was before a private axis change (``adata._obs = ...``), for what is stale.
        self._before: ShadowBase | None = None

    def _stored_children(self, rel: str) -> list[str]:
        """Keys the file stores under the mapping ``rel`` (a slot, a uns level, raw's varm)."""
        return self._layout.children(rel)

    def _visible_uns_keys(self) -> list[str]:
        return self._layout.mapping_keys("uns")

    def _build_layout(self) -> None:
        # the specs (and so every read task) carry which content of the file they were planned against
        planned = dataclasses.replace(self._ref, content=(os.getpid(), self._conn.content))
        self._file_layout = self._LAYOUT(planned, self._conn.handle)
        self._layout_generation = self._conn.generation

    @property
    def _layout(self) -> Layout:
        """The root's layout, rebuilt from the new handle after the file was reopened."""
        root = self._root
        if root._layout_generation != root._conn.generation:
            root._build_layout()
        return root._file_layout

    @property
    def _mode(self) -> str:
        return self._conn.mode


    # -- attributes shared by AnnData and MuData -------------------------------------------------

    @property
    def obs(self) -> Any:
        """Annotations of observations (a pandas DataFrame under the default table backend)."""
        return self._element("obs")

    @obs.setter
    def obs(self, frame: pd.DataFrame) -> None:
        self._set_frame("obs", frame)

    @obs.deleter
    def obs(self) -> None:
        # as AnnData: every column goes (deleted from the file by ``write(overwrite=True)``), the names stay
        self._set_frame("obs", pd.DataFrame(index=self.obs_names))

    @property
    def var(self) -> Any:
        """Annotations of variables."""
        return self._element("var")

    @var.setter
    def var(self, frame: pd.DataFrame) -> None:
        self._set_frame("var", frame)

    @var.deleter
    def var(self) -> None:
        # as AnnData: every column goes (deleted from the file by ``write(overwrite=True)``), the names stay
        self._set_frame("var", pd.DataFrame(index=self.var_names))

    # anndata's private fields, which muon's in-place filters assign (``adata._obs = adata.obs[mask]``)
    @property
    def _obs(self) -> Any:
        return self.obs

    @_obs.setter
    def _obs(self, frame: pd.DataFrame) -> None:
        self._set_private_frame("obs", frame)

    @property
    def _var(self) -> Any:
        return self.var

    @_var.setter
    def _var(self, frame: pd.DataFrame) -> None:
        self._set_private_frame("var", frame)

    @property
    def obs_names(self) -> pd.Index:
        """Names of observations (read alone, without the obs columns); assignable (▲)."""
        return self._names("obs")

    @obs_names.setter
    def obs_names(self, names: Any) -> None:
        self._set_names("obs", names)

    @property
    def var_names(self) -> pd.Index:
        """Names of variables; assignable (▲)."""
        return self._names("var")

    @var_names.setter
    def var_names(self, names: Any) -> None:
        self._set_names("var", names)

    @property
    def obsm(self) -> ElementMapping:
        """Multi-dimensional annotations of observations."""
        return self._slots["obsm"]

    @obsm.setter
    def obsm(self, values: Mapping[str, Any]) -> None:
        self._slots["obsm"].replace_all(values)

    @obsm.deleter
    def obsm(self) -> None:
        self._slots["obsm"].replace_all({})  # as AnnData: an empty mapping

    @property
    def varm(self) -> ElementMapping:
        """Multi-dimensional annotations of variables."""
        return self._slots["varm"]

    @varm.setter
    def varm(self, values: Mapping[str, Any]) -> None:
        self._slots["varm"].replace_all(values)

    @varm.deleter
    def varm(self) -> None:
        self._slots["varm"].replace_all({})  # as AnnData: an empty mapping

    @property
    def obsp(self) -> ElementMapping:
        """Pairwise annotations of observations."""
        return self._slots["obsp"]

    @obsp.setter
    def obsp(self, values: Mapping[str, Any]) -> None:
        self._slots["obsp"].replace_all(values)

    @obsp.deleter
    def obsp(self) -> None:
        self._slots["obsp"].replace_all({})  # as AnnData: an empty mapping

    @property
    def varp(self) -> ElementMapping:
        """Pairwise annotations of variables."""
        return self._slots["varp"]

    @varp.setter
    def varp(self, values: Mapping[str, Any]) -> None:
        self._slots["varp"].replace_all(values)

    @varp.deleter
    def varp(self) -> None:
        self._slots["varp"].replace_all({})  # as AnnData: an empty mapping

    @property
    def uns(self) -> UnsMapping:
        """Unstructured annotations, a lazy nested mapping."""
        return self._slots["uns"]

    @uns.setter
    def uns(self, values: Mapping[str, Any]) -> None:
        self._slots["uns"].replace_all(values)

    @uns.deleter
    def uns(self) -> None:
        self._slots["uns"].replace_all({})  # as AnnData: an empty mapping

    @property
    def n_obs(self) -> int:
        """Number of observations."""
        return self._axis_length(0)

    @property
    def n_vars(self) -> int:
        """Number of variables."""
        return self._axis_length(1)

    def _axis_length(self, axis: int) -> int:
        """Length of an axis: of the dataframe replaced whole in memory (a MuData's ``update()`` may grow
        it), else of the kept positions, else of the file's group.
        """
        if not self._is_view:
            whole = self._state.changed(FRAMES[axis])
            if isinstance(whole, pd.DataFrame):
                return len(whole)
        if self._view is not None:
            return len(self._view[axis])
        return self._layout.n_obs if axis == 0 else self._layout.n_vars

    @property
    def shape(self) -> tuple[int, int]:
        """(n_obs, n_vars)."""
        return (self.n_obs, self.n_vars)

    def __len__(self) -> int:
        return self.n_obs

    @property
    def is_view(self) -> bool:
        """Whether this shadow is a view (``shadow[...]``) of another; a modified view is not (it became
        an independent shadow of its selection, as AnnData views become actual).
        """
        return self._is_view

    @property
    def isbacked(self) -> bool:
        """False, as for an in-memory AnnData: a shadow behaves like one (changes live in memory), so
        scanpy and anndata take their in-memory paths. ``filename`` and ``file`` still give the file.
        """
        return False

    @property
    def filename(self) -> str:
        """Path of the file or store (plus the group path for one modality of a MuData)."""
        return self._ref.display

    @property
    def file(self) -> Any:
        """The open ``h5py.File`` or ``zarr.Group`` (a Zarr group is opened on first use)."""
        return self._conn.file

    def obs_keys(self) -> list[str]:
        """Names of the obs columns (stored, then assigned in memory)."""
        return self._frame_keys("obs")

    def var_keys(self) -> list[str]:
        """Names of the var columns (stored, then assigned in memory)."""
        return self._frame_keys("var")

    def obsm_keys(self) -> list[str]:
        """Keys of obsm."""
        return list(self.obsm)

    def varm_keys(self) -> list[str]:
        """Keys of varm."""
        return list(self.varm)

    def uns_keys(self) -> list[str]:
        """Keys of uns."""
        return list(self.uns)

    # -- memory ----------------------------------------------------------------------------------

    def persist(self, *keys: str) -> ShadowBase:
        """Keep the graphs of ``keys`` (element paths such as ``"X"``, ``"obsm/X_pca"``; all when none
        are given) computed in memory, locally or on the cluster; they are marked ᐁ.
        """
        keys = keys or tuple(self._stored_element_paths())
        for rel in keys:
            spec = self._layout.spec(rel)
            backend = self._backend_for(spec.kind)
            if backend is not None and backend.lazy:
                self._state.hold(rel, convert.persisted(self._lazy(rel, backend)), check=False)
            else:
                self._element(rel)
        return self

    def clear_cache(self) -> None:
        """Drop every element held in memory so its memory is freed.

        Changes are not dropped: elements assigned or deleted in memory (▲) stay, and so does a cached
        array that was changed in place since it was read (``np.log1p(adata.X, out=adata.X)``): it is
        kept as a change (▲), for ``write(overwrite=True)`` to store, never reverted to the file's values.
        """
        self._state.release()

    def __sizeof__(self) -> int:
        total = object.__sizeof__(self)
        for _, value in self._state.held_items():
            total += int(getattr(value, "nbytes", 0) or 0) or _sparse_nbytes(value) or _frame_nbytes(value)
        return total

    # -- file connection -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection to the file (cached and staged elements stay in memory; closing twice is
        harmless). The last shadow of a file to close releases every handle this process holds on it,
        graph tasks' included; other shadows of the file keep working.
        """
        self._conn.close()

    def reopen(self, mode: str = "r") -> ShadowBase:
        """Reopen the file in ``mode`` (``"r"`` or ``"r+"``), keeping in-memory additions.

        The connection is this shadow's, its views' and modalities': they all follow. Other shadows of
        the same file keep their own mode; they read through the one handle this process holds, which
        is upgraded to ``r+`` in place and back to ``r`` when no shadow holds ``r+``. If the file refuses
        (another process writing it, permissions), the shadow stays exactly as it was.
        """
        self._conn.open(mode)
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
        if self.is_view:
            msg = (f"{self.filename}: a view cannot be written to its file; write the shadow it was taken "
                   "from, or export the view with .write_h5ad() / .write_zarr()")
            raise ReadOnlyError(msg)
        if self._view is not None:
            msg = (f"{self.filename}: this shadow was subset in place ({self.n_obs} × {self.n_vars} of the file's "
                   f"{self._layout.n_obs} × {self._layout.n_vars}); its elements no longer fit the file. Export "
                   "it with .write_h5ad() / .write_zarr()")
            raise ReadOnlyError(msg)
        if self._mode == "r":
            raise ReadOnlyError(f"{self.filename}: {READ_ONLY_MESSAGE}")
        self._state.keep_changed_in_place()  # an array changed in place since it was read is written too
        elements, columns = self._staged_changes()
        transaction.check(self._conn, self.filename, elements, columns, overwrite)
        # pre-0.7 slots written into move to today's encoding, checked before anything is written too
        elements, columns = legacy_upgrade.fold(self._conn, self.filename, elements, columns, overwrite,
                                                forget=self._state.forget)
        if elements or columns:
            before = self._conn.content
            try:
                with progress_bar.job(transaction.blocks_to_commit(elements, columns), progress,
                                      on_cluster=writes_on_cluster(self._ref.capabilities.workers_write,
                                                                   reads=[self._ref.path])):
                    commit(self._conn, elements, columns)
            except BaseException:
                self._conn.wrote()  # part of it may be in the file
                self._conn.recover()
                self._state.carry_over(before)  # what this shadow holds was not touched by its own write
                raise
            self._conn.wrote()  # other shadows of the file drop what they read before
            self._conn.open(self._conn.mode)  # read the new layout; drop handles to replaced nodes
            self._state.carry_over(before)
        if clear_cache:
            self.clear_cache()
        return self

    def _init_as_actual(self, X: Any = None, *args: Any, **kwargs: Any) -> None:
        """What anndata and scanpy call to turn a view into an actual object (``view_to_actual``:
        ``adata._init_as_actual(adata.copy())``): a shadow becomes an independent shadow of its
        selection (nothing read). Any other data cannot become a shadow: a TypeError says so.
        """
        if isinstance(X, ShadowBase) and X._ref == self._ref and X.shape == self.shape:
            self._detach()
            return
        raise TypeError(f"{self.filename}: a shadow cannot be re-initialized from other data; use the AnnData it "
                        "came from, or .to_memory() for an in-memory copy")

    # -- copies and exports ---------------------------------------------------------------------

    def copy(self, filename: str | os.PathLike | None = None, *, overwrite: bool = False,
             progress: bool = False) -> Any:
        """An in-memory copy (``to_memory()``); with ``filename``, this shadow (or view) written there out
        of core (HDF5 or Zarr by the suffix; what exists there is replaced only with ``overwrite=True``;
        ``progress=True`` shows one bar for the export) and opened as a new shadow with the same backends.
        """
        if filename is None:
            return self.to_memory()
        fmt = suffix_format(filename) or "hdf5"
        export(self, filename, fmt, overwrite=overwrite, progress=progress)
        return type(self)(filename, array_backend=self._array_backend.name, table_backend=self._table_backend.name,
                          format=fmt)

    def write_zarr(self, store: str | os.PathLike, *, progress: bool = False, overwrite: bool = False,
                   **_: Any) -> None:
        """Write this shadow (or view: only its selection) to a new Zarr store, out of core (Zarr format
        from ``anndata.settings.zarr_write_format``; anndata's compression options are ignored). An
        existing store is replaced only with ``overwrite=True``; the shadow's own store never is.
        """
        export(self, store, "zarr", progress=progress, overwrite=overwrite)

    # -- views and pickling ----------------------------------------------------------------------

    def _view_of(self, index: Any) -> ShadowBase:
        """A view: a shadow of its own whose elements are this shadow's, sliced by ``index``.

        Keys are those of AnnData (slices, ints, masks, positions, names, and pairs of them). A view of
        a view keeps positions relative to the file, so views compose to any depth. Building a view
        reads no data.
        """
        obs, var = normalize_key(index, self.shape, (lambda: self.obs_names, lambda: self.var_names))
        if self._is_view:
            self._keep_changes_in_place()  # a view's arrays changed in place: it is actual, its views see them
        local = (compose(self._local[0], obs), compose(self._local[1], var)) if self._is_view else (obs, var)
        if self._view is not None:
            obs, var = compose(self._view[0], obs), compose(self._view[1], var)
        return type(self)._make_view(self._root, obs, var, local)

    def _inplace_subset_obs(self, index: Any) -> None:
        """Keep the observations ``index`` selects (``adata = adata[index]``, in place)."""
        self._subset_in_place((index, slice(None)))

    def _inplace_subset_var(self, index: Any) -> None:
        """Keep the variables ``index`` selects (``adata = adata[:, index]``, in place)."""
        self._subset_in_place((slice(None), index))

    # -- what the shadow says about itself (the interface of the reprs, ``shadows info``, exports) -----

    def describe(self, details: bool = True) -> Description:
        """Every element this shadow (or view) shows, slot by slot: encoding, shape and dtype as it shows
        them, and whether each is held in memory (ᐁ) or changed in memory (▲); a MuData's modalities
        too. Reads no data. ``details=False`` skips the encodings and dtypes of stored obs/var columns
        (the text repr's names and markers only). See :class:`shadows.core.description.Description`.
        """
        return description.describe(self, details)

    def stored_elements(self) -> list[description.StoredElement]:
        """Every element the file stores for this shadow's group (uns walked recursively; a MuData's
        modalities as ``mod/<name>/...``) with its chunking and bytes on disk, from metadata only.
        """
        return description.stored_elements(self)

    def element_value(self, path: str) -> Any:
        """The element at ``path`` (``"X"``, ``"obs"``, ``"obsm/X_pca"``, ``"uns"``) as this shadow (or
        view) would write it: a value assigned in memory as it is (▲; ``None`` when deleted), a value held
        in memory, else a matrix as its dask graph (lazy, only the view's part) and anything else read as
        numpy/pandas/dict. What exports stream from.
        """
        if path == "uns":
            return self.uns.materialize()
        part = self._root_part(path)
        if part is not NOTHING:
            return part
        changed = self._changed_value(path)
        if changed is not NOTHING:
            return None if changed is DELETED else changed
        spec = self._layout.spec(path)
        if spec.kind not in ("dense", "sparse"):
            return self._plain(path)
        held = self._state.held(path)
        if held is not NOTHING and self._array_backend.name == "numpy":
            return held
        return self._graph(path)

    def __repr__(self) -> str:
        from shadows._repr import text_repr

        return text_repr(self.describe(details=False))

    def _repr_html_(self) -> str:
        """Jupyter's rich repr: slots, keys, encodings, shapes and dtypes from metadata (reads no data).

        (mudata's own HTML repr, which a MuData shadow would otherwise inherit, reads every modality's
        obs and var to print them.)
        """
        from shadows._repr_html import html_repr

        return html_repr(self.describe())

    def __reduce__(self):
        """Pickled as the file's path, the selection and the changes held in memory (not the cache)."""
        root = self._root
        view = (self._view, self._local, self._memory_state()) if self._is_view else None
        args = (type(self), self._ref, self._array_backend.name, self._table_backend.name, self._mode,
                root._view, root._memory_state(), view)
        return (_reopen, args)

def _reopen(cls: type, ref: FileRef, array_backend: str, table_backend: str, mode: str,
            selection: tuple[AxisIndex, AxisIndex] | None = None, state: dict[str, Any] | None = None,
            view: tuple[Any, Any, dict[str, Any]] | None = None) -> ShadowBase:
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


def _sparse_nbytes(value: Any) -> int:
    if hasattr(value, "indptr"):
        return int(value.data.nbytes + value.indices.nbytes + value.indptr.nbytes)
    return 0


def _frame_nbytes(value: Any) -> int:
    if isinstance(value, pd.DataFrame):
        return int(value.memory_usage(deep=True).sum())
    return 0
