"""MuDataShadow: a MuData whose modalities and global elements stay in the file until asked for."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np

from shadows import progress as progress_bar
from shadows.core.anndata import AnnDataShadow
from shadows.core.base import ShadowBase
from shadows.core.layout import MuDataLayout
from shadows.core.mudata_update import update_axis
from shadows.core.references import ARRAY_REFERENCES, get_by_reference
from shadows.core.serving import computed
from shadows.errors import BackendUnavailableError, MalformedElementError, MissingElementError, element_message
from shadows.indexing import AxisIndex
from shadows.indexing.keys import as_slice_or_array
from shadows.names import check_key
from shadows.schema import FRAMES, MODALITY_MAP_AXES, SLOT_AXES
from shadows.settings import settings
from shadows.writing import DELETED, ElementChange, GroupAttributes
from shadows.writing.export import export

try:  # mudata is an optional extra: without it only the MuData class identity is missing
    from mudata import MuData as _MuDataBase

    HAS_MUDATA = True
except ImportError:  # pragma: no cover - exercised by installs without the extra

    class _MuDataBase:
        """Stand-in for ``mudata.MuData`` when mudata is not installed."""

    HAS_MUDATA = False

#: Global slots of a MuData besides obs, var and uns.
MUDATA_SLOTS = ("obsm", "varm", "obsp", "varp", *MODALITY_MAP_AXES)
_MAP_OF_AXIS = {0: "obsmap", 1: "varmap"}
#: Key of the modalities' own changes in a pickled MuData shadow's state (not an element path).
_MODALITY_STATES = "\0modalities"


class Modalities(MutableMapping):
    """The modalities of a MuData shadow, in the stored ``mod-order``; assignable as mudata's ``mod``
    dict (``mdata.mod["rna"] = adata``, ``del mdata.mod["atac"]``; then ``mdata.update()``).
    """

    def __init__(self, owner: MuDataShadow, shadows: dict[str, Any]):
        self._owner = owner
        self._shadows = shadows

    def __getitem__(self, name: str) -> Any:
        try:
            return self._shadows[name]
        except KeyError:
            what = f"no such modality; modalities: {', '.join(self._shadows) or 'none'}"
            raise MissingElementError(element_message(self._owner.filename, f"mod/{name}", what)) from None

    def __setitem__(self, name: str, modality: Any) -> None:
        self._owner._set_modality(name, modality)

    def __delitem__(self, name: str) -> None:
        self[name]
        self._owner._delete_modality(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._shadows)

    def __len__(self) -> int:
        return len(self._shadows)

    def __repr__(self) -> str:
        return f"mod:\t{', '.join(self._shadows)}"


def relabel_positions(values: Any) -> Any:
    """An obsmap/varmap entry of a view: 1, 2, ... at the kept positions present in the modality, 0 where
    absent (numpy or dask, as given).
    """
    present = values > 0
    return (present.cumsum(axis=0) * present).astype(values.dtype)


def _mask_of(mapping: Any) -> Any:
    """A modality's mask from its obsmap/varmap entry (numpy or dask), shaped as mudata's: one column."""
    present = mapping > 0
    return present.reshape(-1, 1) if present.ndim == 1 else present


class MuDataShadow(ShadowBase, _MuDataBase):
    """A MuData backed by an ``.h5mu`` file or a MuData Zarr store, reading only what is asked for.

    Opening reads metadata only. Modalities are :class:`AnnDataShadow` objects sharing this shadow's
    connection; global elements (obs, var, obsm, varm, obsp, varp, uns, obsmap, varmap) are read lazily
    and cached like an AnnDataShadow's. Global obs and var are the stored ones, as ``mudata.read_h5mu``
    gives them from mudata 0.4 on (mudata 0.3 also pulled every modality's columns into them).

    Parameters
    ----------
    filepath
        An ``.h5mu`` file or a MuData Zarr store (format 2 or 3).
    array_backend
        ``"numpy"`` (numpy and scipy.sparse), ``"dask"`` (the graphs), ``"jax"``, ``"torch"``,
        ``"cupy"`` or ``"sparse"`` (pydata); modalities use it too.
    table_backend
        ``"pandas"``, ``"dask"``, ``"polars"`` or ``"pyarrow"``.
    mode
        ``"r"`` (default) or ``"r+"``.
    format
        ``"hdf5"``/``"h5"`` or ``"zarr"``; inferred from the path when omitted.
    allow_external
        ``False`` (default): an element whose bytes lie outside the file (HDF5 external links, external
        storage, virtual datasets with sources in other files; symbolic links out of a Zarr store) is
        refused with :class:`~shadows.errors.ExternalDataError` when accessed. ``True`` follows them, in
        the modalities too.
    """

    _LAYOUT = MuDataLayout
    _SLOTS = MUDATA_SLOTS
    _KIND = "MuData"

    def _init_memory(self) -> None:
        super()._init_memory()
        self._modalities: Modalities | None = None

    # -- modalities ------------------------------------------------------------------------------

    @property
    def mod(self) -> Modalities:
        """The modalities: AnnDataShadow objects (views of them in a view), in ``mod-order``."""
        if self._modalities is None:
            shadows = self._view_modalities() if self._is_view else self._open_modalities()
            self._modalities = Modalities(self, shadows)
        return self._modalities

    @property
    def _mod(self) -> Modalities:
        # mudata's own methods read the modalities from ``_mod``.
        return self.mod

    def _open_modalities(self) -> dict[str, ShadowBase]:
        # mudata writes AnnData modalities only (it cannot write a MuData nested in one)
        return {name: self._open_modality(name) for name in self._layout.mod_names}

    def _open_modality(self, name: str) -> AnnDataShadow:
        """A shadow of the stored modality ``name``, sharing this shadow's connection."""
        ref = dataclasses.replace(self._ref, root=self._ref.element_path("mod", name))
        return AnnDataShadow._attached(ref, self._array_backend, self._table_backend, self._conn)

    def _view_modalities(self) -> dict[str, ShadowBase]:
        """Each modality's view: its rows/columns that belong to this view, in the view's order (as
        mudata's views select them through obsmap/varmap).
        """
        shadows = {}
        for name, modality in self._root.mod.items():
            obs, var = (self._modality_positions(axis, name) for axis in (0, 1))
            if isinstance(modality, ShadowBase):
                shadows[name] = type(modality)._make_view(modality, obs, var)
            else:  # an AnnData given in memory
                shadows[name] = modality[as_slice_or_array(obs), as_slice_or_array(var)]
        return shadows

    def _modality_positions(self, axis: int, name: str) -> AxisIndex:
        """Positions in modality ``name`` of this view's rows (axis 0) or columns (axis 1)."""
        root = self._root
        rel = f"{_MAP_OF_AXIS[axis]}/{name}"
        if root._is_changed(rel):
            mapping = np.asarray(computed(root._changed_value(rel)))
        else:
            mapping = root._state.held_or_read(f"{rel}/_positions", lambda: root._materialize(rel))
        picked = mapping[as_slice_or_array(self._view[axis])]
        positions = picked[picked > 0].astype(np.int64) - 1
        self._check_map_positions(rel, positions, root.mod[name].shape[axis])
        if positions.size and positions[0] == 0 and np.array_equal(positions, np.arange(positions.size)):
            return range(positions.size)
        return positions

    def _check_map_positions(self, rel: str, positions: np.ndarray, size: int) -> None:
        """Raise :class:`~shadows.errors.MalformedElementError` naming ``rel`` (``obsmap/<mod>``) when it
        points past its modality's ``size`` rows (or columns): selecting them would fail with a bare
        ``IndexError`` deep in the modality's view, or read another row than the file means.
        """
        if not positions.size or int(positions.max()) < size:
            return
        axis_name = "observations" if rel.startswith("obsmap") else "variables"
        what = (f"it holds position {int(positions.max()) + 1} (1-based), but the modality has {size} "
                f"{axis_name}: the map and the modality disagree (a damaged or hand-edited file)")
        raise MalformedElementError(element_message(self._ref.display, rel, what))

    def __getitem__(self, index: Any) -> ShadowBase:
        """``mdata["rna"]``: the modality; an ``anndata.acc`` reference (``mdata[A.obs["x"]]``): the array
        it points at, as mudata >= 0.4 does; any other key: a view (see :meth:`ShadowBase._view_of`)
        whose modalities are views selected through ``obsmap``/``varmap``.
        """
        if isinstance(index, str):
            return self.mod[index]
        if isinstance(index, ARRAY_REFERENCES):
            return get_by_reference(self, index)
        return self._view_of(index)

    def __contains__(self, key: object) -> bool:
        return key in self.mod

    @property
    def n_mod(self) -> int:
        """Number of modalities."""
        return len(self.mod)

    @property
    def mod_names(self) -> list[str]:
        """Names of the modalities (``list(mdata.mod)``)."""
        return list(self.mod)

    def _set_modality(self, name: str, modality: Any) -> None:
        """``mdata.mod[name] = adata``: the modality is ``adata`` from now on (mod/<name>▲; ``write()``
        stores it, replacing a stored one with ``overwrite=True``). The global obs/var follow on
        ``update()``, as for a MuData.
        """
        import anndata

        if self._is_view:
            raise ValueError(f"{self.filename}: the modalities of a view cannot be replaced; replace them in the "
                             "MuData shadow the view was taken from, or .copy() the view first")
        check_key(self.filename, "mod", name)
        if not isinstance(modality, anndata.AnnData) or isinstance(modality, MuDataShadow):
            raise TypeError(f"{self.filename}: mod['{name}']: a modality must be an AnnData (or AnnDataShadow), "
                            f"got {type(modality).__name__}")
        self.mod._shadows[name] = modality
        self._state.change(f"mod/{name}", modality)

    def _delete_modality(self, name: str) -> None:
        """``del mdata.mod[name]`` (mod/<name>▲ deleted; ``write(overwrite=True)`` removes it)."""
        if self._is_view:
            raise ValueError(f"{self.filename}: the modalities of a view cannot be deleted; delete them in the "
                             "MuData shadow the view was taken from")
        del self.mod._shadows[name]
        self._state.remove(f"mod/{name}", stored=name in self._layout.mod_names)

    @property
    def axis(self) -> int:
        """0: modalities share observations; 1: they share variables; -1: both."""
        return self._layout.axis

    @property
    def obsmap(self):
        """Per modality, 1-based positions of the global observations in it (0: absent)."""
        return self._slots["obsmap"]

    @property
    def varmap(self):
        """Per modality, 1-based positions of the global variables in it (0: absent)."""
        return self._slots["varmap"]

    # MuData keeps these AnnData slots as None "for compatibility with calls requiring AnnData slots".
    X = property(lambda self: None, doc="None: a MuData has no X of its own.")
    layers = property(lambda self: None, doc="None: a MuData has no layers of its own.")
    raw = property(lambda self: None, doc="None: a MuData has no raw of its own.")

    # -- modality masks: what mudata makes of them on reading -----------------------------------

    def _mask_source(self, rel: str) -> str | None:
        """For a stored modality mask (``obsm/<modality>``, ``varm/<modality>``), the stored map it is
        computed from, as mudata computes it on reading (``obsmap[mod] > 0``, whatever mask the file
        holds); ``None`` for every other element. A map changed in memory leaves the mask as read, as in
        a MuData (``update()`` sets both).
        """
        slot, _, key = rel.partition("/")
        if slot not in ("obsm", "varm") or key not in self._layout.mod_names:
            return None
        source = f"{_MAP_OF_AXIS[SLOT_AXES[slot][0]]}/{key}"
        return source if self._layout.has(source) else None

    def _graph(self, rel: str) -> Any:
        source = self._mask_source(rel)
        return super()._graph(rel) if source is None else _mask_of(super()._graph(source))

    def _materialize(self, rel: str) -> Any:
        source = self._mask_source(rel)
        return super()._materialize(rel) if source is None else _mask_of(np.asarray(super()._materialize(source)))

    def _lazy(self, rel: str, backend: Any) -> Any:
        source = self._mask_source(rel)
        if source is None or backend.name != "xarray":
            return super()._lazy(rel, backend)
        # dims as for any obsm/varm entry: the axis, then one named after the key
        return (super()._lazy(source, backend) > 0).expand_dims({rel.split("/", 1)[1]: 1}, axis=1)

    # -- what MuData's views change besides slicing ----------------------------------------------

    def _view_graph(self, rel: str, graph: Any) -> Any:
        return relabel_positions(graph) if rel.split("/", 1)[0] in MODALITY_MAP_AXES else graph

    def _view_value(self, rel: str, spec: Any, value: Any) -> Any:
        return relabel_positions(value) if rel.split("/", 1)[0] in MODALITY_MAP_AXES else value

    # -- mudata's update -------------------------------------------------------------------------

    def update(self) -> None:
        """Make the global var, then obs, match the modalities again, as ``MuData.update()`` does: after
        a modality was replaced, added or deleted, renamed, or filtered (muon's ``intersect_obs``).

        mudata's own algorithm decides the new global names and obsmap/varmap (it runs on the names
        alone). When the new global rows are some of the current ones, the shadow keeps them in place
        (nothing read; reads pushed down); when new rows appear, the global elements along that axis
        are read and reindexed by mudata (new rows missing: NaN, masked or NA, as mudata fills them)
        and kept in memory (▲). Global columns are the stored ones, as from mudata 0.4 on (no pulling).
        """
        self._update((1, 0))

    def update_obs(self) -> None:
        """:meth:`update` for the global obs only."""
        self._update((0,))

    def update_var(self) -> None:
        """:meth:`update` for the global var only."""
        self._update((1,))

    def _update(self, axes: tuple[int, ...]) -> None:
        if self._is_view:
            raise ValueError(f"{self.filename}: a view cannot be updated; update the MuData shadow it was taken "
                             "from")
        if not len(self.mod):
            return
        for axis in axes:
            if not self._axis_matches_modalities(axis):
                update_axis(self, axis)

    def _axis_matches_modalities(self, axis: int) -> bool:
        """Whether the global names and the obsmap/varmap still say where each modality's rows are."""
        frame_rel = FRAMES[axis]
        maps = self._slots[f"{frame_rel}map"]
        if set(maps.own_keys()) != set(self.mod):
            return False
        names = self._names(frame_rel)
        for name, modality in self.mod.items():
            positions = np.asarray(computed(maps[name])).reshape(-1)
            present = positions > 0
            order = np.argsort(positions[present], kind="stable")
            expected = names[np.flatnonzero(present)[order]]
            if not expected.equals(getattr(modality, f"{frame_rel}_names")):
                return False
        return True

    # -- vectors ---------------------------------------------------------------------------------

    def _global_vector(self, frame_rel: str, key: str) -> np.ndarray:
        if key in self._frame_keys(frame_rel):
            return self._frame_column(frame_rel, key)
        holders = [name for name, m in self.mod.items() if key in getattr(m, f"{frame_rel}_keys")()]
        what = f"'{key}' is not a global {frame_rel} column"
        if holders:
            mod = holders[0]
            what += (f"; modality '{mod}' has one: use mdata['{mod}'].{frame_rel}_vector('{key}'), or copy it: "
                     f"mdata.{frame_rel}['{mod}:{key}'] = mdata['{mod}'].{frame_rel}['{key}']")
        raise MissingElementError(element_message(self.filename, frame_rel, what))

    def obs_vector(self, key: str, layer: str | None = None) -> np.ndarray:
        """Values of the global obs column ``key``."""
        return self._global_vector("obs", key)

    def var_vector(self, key: str, layer: str | None = None) -> np.ndarray:
        """Values of the global var column ``key``."""
        return self._global_vector("var", key)

    # -- memory ----------------------------------------------------------------------------------

    def clear_cache(self) -> None:
        """Drop everything held in memory, here and in every modality (in-memory additions stay)."""
        super().clear_cache()
        if self._modalities is not None:
            for modality in self._modalities.values():
                modality.clear_cache()

    def _staged_changes(self):
        """The global changes, each modality's own (a modality given whole is one change), and the new
        ``mod-order`` last when the modalities changed.
        """
        elements, columns = super()._staged_changes()
        for change in elements:
            if isinstance(change.value, ShadowBase):  # a shadow given as a modality: written as its data
                change.value = change.value.to_memory()
        if self._modalities is not None:
            for name, modality in self._modalities.items():
                if self._is_changed(f"mod/{name}"):
                    continue
                if modality._view is not None:  # subset in place (muon's filters): no longer fits its group
                    path = self._ref.element_path(f"mod/{name}")
                    elements.append(ElementChange(path, modality.to_memory(), False, lambda: None))
                    continue
                more_elements, more_columns = modality._staged_changes()
                elements += more_elements
                columns += more_columns
            if list(self._modalities) != list(self._layout.mod_names):
                order = GroupAttributes({"mod-order": list(self._modalities)})
                elements.append(ElementChange(self._ref.element_path("mod"), order, False, lambda: None))
        return elements, columns

    def write(self, filename: Any = None, clear_cache: bool = False, overwrite: bool = False, *,
              progress: bool = False, **kwargs: Any) -> MuDataShadow:
        """As :meth:`ShadowBase.write`; a MuData subset in place (by muon's filters or :meth:`update`)
        writes its global elements whole (they are small; ``overwrite=True``): obs, var, obsm, varm,
        obsp, varp, obsmap, varmap. Its modalities write their own changes.
        """
        exporting = isinstance(filename, str | os.PathLike)
        if not exporting and not self._is_view and self._view is not None:
            self._stage_kept_globals()
        super().write(filename, clear_cache=clear_cache, overwrite=overwrite, progress=progress, **kwargs)
        if not exporting and self._modalities is not None:  # modalities written whole: shadows of the file now
            for name, modality in list(self._modalities.items()):
                if not isinstance(modality, ShadowBase) or modality._view is not None:
                    self._modalities._shadows[name] = self._open_modality(name)
        return self

    def _stage_kept_globals(self) -> None:
        """Hold every global element as a change (▲) of the kept rows and columns, so the shadow no longer
        depends on which of the file's rows it kept.
        """
        for frame_rel in FRAMES:
            if self._whole_frame(frame_rel) is None:
                self._replace_frame(frame_rel, self._plain(frame_rel).copy())
        for slot in self._SLOTS:
            mapping = self._slots[slot]
            for key in mapping.own_keys():
                if not mapping.is_staged(key):
                    mapping[key] = self._plain(f"{slot}/{key}")
        self._view = None

    def _memory_state(self) -> dict[str, Any]:
        """The global changes, and a root's modalities' own: their changes and kept rows/columns (a
        modality given whole is one of the global changes).
        """
        state = super()._memory_state()
        if self._is_view or self._modalities is None:
            return state
        inner = {name: (m._view, m._memory_state()) for name, m in self._modalities.items()
                 if isinstance(m, ShadowBase) and not self._is_changed(f"mod/{name}")}
        inner = {name: kept for name, kept in inner.items() if kept[0] is not None or kept[1]}
        return {**state, _MODALITY_STATES: inner} if inner else state

    def _restore_memory(self, changes: dict[str, Any]) -> None:
        changes = dict(changes)
        inner = changes.pop(_MODALITY_STATES, {})
        super()._restore_memory(changes)
        if self._is_view:
            return
        for rel, value in changes.items():  # modalities given, or deleted, in memory
            if rel.startswith("mod/") and "/" not in rel[4:]:
                if value is DELETED:
                    self.mod._shadows.pop(rel[4:], None)
                else:
                    self.mod._shadows[rel[4:]] = value
        for name, (kept, state) in inner.items():
            modality = self.mod[name]
            modality._view = kept
            modality._restore_memory(state)

    def _subset_in_place(self, index: Any) -> None:
        """Keep the global rows/columns ``index`` selects; the modalities stay as they are (muon's filters
        and :meth:`update` subset them themselves, as for a MuData).
        """
        modalities = dict(self.mod)
        super()._subset_in_place(index)
        self._modalities = Modalities(self, modalities)

    # -- conversions -----------------------------------------------------------------------------

    def to_memory(self, progress: bool = False):
        """A real in-memory ``mudata.MuData`` with every element read (as ``mudata.read_h5mu`` gives it).

        ``progress=True`` (or ``shadows.settings.read_progress``) shows one bar for the whole read,
        modalities included (see :mod:`shadows.progress`).
        """
        if not HAS_MUDATA:
            raise BackendUnavailableError("to_memory() of a MuData shadow needs the 'mudata' package: "
                                          "pip install mudata")
        with progress_bar.reading_job(self._to_memory_nbytes, progress or settings.read_progress):
            return self._to_memory()

    def _to_memory_nbytes(self) -> int:
        """Bytes ``to_memory()`` reads (about): the global elements' and every modality's."""
        own = self._read_nbytes([*self._stored_element_paths(), "uns"])
        return own + sum(modality._to_memory_nbytes() for modality in self.mod.values())

    def _to_memory(self):
        """The MuData as the installed mudata builds it (mudata 0.3 pulls the modalities' columns unless
        the user's ``mudata.set_options(pull_on_update=False)`` says otherwise), with its constructor's
        deprecation warnings silenced: mudata 0.3's about ``pull_on_update``, and pandas 3's about
        ``inplace`` from mudata 0.4 do not concern the user.
        """
        import mudata
        import pandas as pd

        slots = {slot: self._slot_values(slot, self._plain) for slot in self._SLOTS}
        modalities = {name: modality.to_memory() for name, modality in self.mod.items()}
        obs, var, uns = self._plain("obs"), self._plain("var"), self.uns.materialize()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            if hasattr(pd.errors, "Pandas4Warning"):  # pandas >= 3
                warnings.simplefilter("ignore", pd.errors.Pandas4Warning)
            return mudata.MuData(modalities, obs=obs, var=var, uns=uns, axis=self.axis, **slots)

    def _detach(self) -> None:
        """MuData views stay views when assigned to (their changes live in the view; see the README)."""

    def write_h5mu(self, filename: str | os.PathLike, *, progress: bool = False, overwrite: bool = False,
                   **_: Any) -> None:
        """Write this shadow (or view: only its selection) to a new ``.h5mu`` file, out of core."""
        export(self, filename, "hdf5", progress=progress, overwrite=overwrite)

