"""The elements of a MuData shadow: its modalities (AnnData shadows sharing its connection, or AnnData
objects given in memory), obsmap/varmap and the modality masks mudata computes from them, what a MuData's
views change besides slicing, and the global changes ``write()`` commits with the modalities' own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np

from shadows.core.anndata import AnnDataShadow
from shadows.core.annotations import names, replace_frame, whole_frame
from shadows.core.base import ShadowBase, attached, shadow_elements
from shadows.core.element import computed
from shadows.core.elements import ShadowElements
from shadows.core.layout import MuDataLayout
from shadows.core.mudata_update import update_axis
from shadows.errors import MalformedElementError, MissingElementError, element_message
from shadows.indexing import AxisIndex
from shadows.indexing.keys import as_slice_or_array
from shadows.names import check_key
from shadows.schema import FRAMES, MODALITY_MAP_AXES, SLOT_AXES
from shadows.writing import DELETED, ElementChange, GroupAttributes

#: Global slots of a MuData besides obs, var and uns.
MUDATA_SLOTS = ("obsm", "varm", "obsp", "varp", *MODALITY_MAP_AXES)
_MAP_OF_AXIS = {0: "obsmap", 1: "varmap"}
#: Key of the modalities' own changes in a pickled MuData shadow's state (not an element path).
_MODALITY_STATES = "\0modalities"


class Modalities(MutableMapping):
    """The modalities of a MuData shadow, in the stored ``mod-order``; assignable as mudata's ``mod``
    dict (``mdata.mod["rna"] = adata``, ``del mdata.mod["atac"]``; then ``mdata.update()``).
    """

    def __init__(self, owner: MuDataElements, shadows: dict[str, Any]):
        self.owner = owner
        self.shadows = shadows

    def __getitem__(self, name: str) -> Any:
        try:
            return self.shadows[name]
        except KeyError:
            what = f"no such modality; modalities: {', '.join(self.shadows) or 'none'}"
            raise MissingElementError(element_message(self.owner.filename, f"mod/{name}", what)) from None

    def __setitem__(self, name: str, modality: Any) -> None:
        self.owner.set_modality(name, modality)

    def __delitem__(self, name: str) -> None:
        self[name]
        self.owner.delete_modality(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shadows)

    def __len__(self) -> int:
        return len(self.shadows)

    def __repr__(self) -> str:
        return f"mod:\t{', '.join(self.shadows)}"


def relabel_positions(values: Any) -> Any:
    """An obsmap/varmap entry of a view: 1, 2, ... at the kept positions present in the modality, 0 where
    absent (numpy or dask, as given).
    """
    present = values > 0
    return (present.cumsum(axis=0) * present).astype(values.dtype)


class MuDataElements(ShadowElements):
    """:class:`~shadows.core.elements.ShadowElements` of a MuData: the global elements and the modalities."""

    LAYOUT = MuDataLayout
    SLOTS = MUDATA_SLOTS
    KIND = "MuData"

    def init_memory(self) -> None:
        super().init_memory()
        self._modalities: Modalities | None = None

    # -- modalities ------------------------------------------------------------------------------

    @property
    def mod(self) -> Modalities:
        """The modalities: AnnDataShadow objects (views of them in a view), in ``mod-order``."""
        if self._modalities is None:
            shadows = self._view_modalities() if self.is_view else self._open_modalities()
            self._modalities = Modalities(self, shadows)
        return self._modalities

    def _open_modalities(self) -> dict[str, Any]:
        # mudata writes AnnData modalities only (it cannot write a MuData nested in one)
        return {name: self.open_modality(name) for name in self.layout.mod_names}

    def open_modality(self, name: str) -> AnnDataShadow:
        """A shadow of the stored modality ``name``, sharing this shadow's connection."""
        ref = dataclasses.replace(self.ref, root=self.ref.element_path("mod", name))
        return attached(AnnDataShadow, ref, self.arrays, self.tables, self.connection)

    def _view_modalities(self) -> dict[str, Any]:
        """Each modality's view: its rows/columns that belong to this view, in the view's order (as
        mudata's views select them through obsmap/varmap).
        """
        shadows = {}
        for name, modality in self.root.mod.items():
            obs, var = (self._modality_positions(axis, name) for axis in (0, 1))
            if isinstance(modality, ShadowBase):
                elements = shadow_elements(modality)
                shadows[name] = elements.wrap(elements.make_view(obs, var))
            else:  # an AnnData given in memory
                shadows[name] = modality[as_slice_or_array(obs), as_slice_or_array(var)]
        return shadows

    def _modality_positions(self, axis: int, name: str) -> AxisIndex:
        """Positions in modality ``name`` of this view's rows (axis 0) or columns (axis 1)."""
        root = self.root
        rel = f"{_MAP_OF_AXIS[axis]}/{name}"
        if root.is_changed(rel):
            mapping = np.asarray(computed(root.changed_value(rel)))
        else:
            mapping = root.state.held_or_read(f"{rel}/_positions", lambda: root.materialize(rel))
        picked = mapping[as_slice_or_array(self.view[axis])]
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
        raise MalformedElementError(element_message(self.filename, rel, what))

    def set_modality(self, name: str, modality: Any) -> None:
        """``mdata.mod[name] = adata``: the modality is ``adata`` from now on (mod/<name>▲; ``write()``
        stores it, replacing a stored one with ``overwrite=True``). The global obs/var follow on
        ``update()``, as for a MuData.
        """
        import anndata

        if self.is_view:
            raise ValueError(f"{self.filename}: the modalities of a view cannot be replaced; replace them in the "
                             "MuData shadow the view was taken from, or .copy() the view first")
        check_key(self.filename, "mod", name)
        if not isinstance(modality, anndata.AnnData):
            raise TypeError(f"{self.filename}: mod['{name}']: a modality must be an AnnData (or AnnDataShadow), "
                            f"got {type(modality).__name__}")
        self.mod.shadows[name] = modality
        self.state.change(f"mod/{name}", modality)

    def delete_modality(self, name: str) -> None:
        """``del mdata.mod[name]`` (mod/<name>▲ deleted; ``write(overwrite=True)`` removes it)."""
        if self.is_view:
            raise ValueError(f"{self.filename}: the modalities of a view cannot be deleted; delete them in the "
                             "MuData shadow the view was taken from")
        del self.mod.shadows[name]
        self.state.remove(f"mod/{name}", stored=name in self.layout.mod_names)

    # -- modality masks: what mudata makes of them on reading -----------------------------------

    def mask_source(self, rel: str) -> str | None:
        """For a stored modality mask (``obsm/<modality>``, ``varm/<modality>``), the stored map it is
        computed from, as mudata computes it on reading (``obsmap[mod] > 0``, whatever mask the file
        holds); ``None`` for every other element. A map changed in memory leaves the mask as read, as in
        a MuData (``update()`` sets both).
        """
        slot, _, key = rel.partition("/")
        if slot not in ("obsm", "varm") or key not in self.layout.mod_names:
            return None
        source = f"{_MAP_OF_AXIS[SLOT_AXES[slot][0]]}/{key}"
        return source if self.layout.has(source) else None

    def mask_of(self, value: Any) -> Any:
        """A modality's mask from its obsmap/varmap entry (numpy or dask), shaped as mudata's: one column."""
        present = value > 0
        return present.reshape(-1, 1) if present.ndim == 1 else present

    # -- what MuData's views change besides slicing ----------------------------------------------

    def view_graph(self, rel: str, graph: Any) -> Any:
        return relabel_positions(graph) if rel.split("/", 1)[0] in MODALITY_MAP_AXES else graph

    def view_value(self, rel: str, spec: Any, value: Any) -> Any:
        return relabel_positions(value) if rel.split("/", 1)[0] in MODALITY_MAP_AXES else value

    def detach(self) -> None:
        """MuData views stay views when assigned to (their changes live in the view; see the README)."""

    # -- mudata's update -------------------------------------------------------------------------

    def update(self, axes: tuple[int, ...]) -> None:
        """Make the global var and/or obs (``axes``) match the modalities again (``MuData.update()``)."""
        if self.is_view:
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
        maps = self.slots[f"{frame_rel}map"]
        if set(maps.own_keys()) != set(self.mod):
            return False
        current = names(self, frame_rel)
        for name, modality in self.mod.items():
            positions = np.asarray(computed(maps[name])).reshape(-1)
            present = positions > 0
            order = np.argsort(positions[present], kind="stable")
            expected = current[np.flatnonzero(present)[order]]
            if not expected.equals(getattr(modality, f"{frame_rel}_names")):
                return False
        return True

    # -- memory and write() ----------------------------------------------------------------------

    def _stored_modalities(self) -> dict[str, ShadowElements]:
        """The elements of the modalities that are shadows of this file (not given whole in memory)."""
        if self._modalities is None:
            return {}
        return {name: shadow_elements(m) for name, m in self._modalities.items()
                if isinstance(m, ShadowBase) and not self.is_changed(f"mod/{name}")}

    def release(self) -> None:
        """Drop everything held in memory, here and in every modality (in-memory additions stay)."""
        self.state.release()
        if self._modalities is not None:
            for modality in self._modalities.values():
                modality.clear_cache()

    def staged_changes(self):
        """The global changes, each modality's own (a modality given whole is one change), and the new
        ``mod-order`` last when the modalities changed.
        """
        elements, columns = super().staged_changes()
        for change in elements:
            if isinstance(change.value, ShadowBase):  # a shadow given as a modality: written as its data
                change.value = change.value.to_memory()
        if self._modalities is None:
            return elements, columns
        stored = self._stored_modalities()
        for name, modality in self._modalities.items():
            if name not in stored:
                continue
            if stored[name].view is not None:  # subset in place (muon's filters): no longer fits its group
                path = self.ref.element_path(f"mod/{name}")
                elements.append(ElementChange(path, modality.to_memory(), False, lambda: None))
                continue
            more_elements, more_columns = stored[name].staged_changes()
            elements += more_elements
            columns += more_columns
        if list(self._modalities) != list(self.layout.mod_names):
            order = GroupAttributes({"mod-order": list(self._modalities)})
            elements.append(ElementChange(self.ref.element_path("mod"), order, False, lambda: None))
        return elements, columns

    def stage_kept_globals(self) -> None:
        """A MuData subset in place (by muon's filters or ``update()``) holds every global element as a
        change (▲) of the kept rows and columns, so the shadow no longer depends on which of the file's
        rows it kept: ``write()`` then writes them whole (they are small; ``overwrite=True``).
        """
        if self.is_view or self.view is None:
            return
        for frame_rel in FRAMES:
            if whole_frame(self, frame_rel) is None:
                replace_frame(self, frame_rel, self.plain(frame_rel).copy())
        for slot in self.SLOTS:
            mapping = self.slots[slot]
            for key in mapping.own_keys():
                if not mapping.is_staged(key):
                    mapping[key] = self.plain(f"{slot}/{key}")
        self.view = None

    def reopen_written_modalities(self) -> None:
        """After ``write()``: modalities written whole are shadows of the file again."""
        if self._modalities is None:
            return
        for name, modality in list(self._modalities.items()):
            if not isinstance(modality, ShadowBase) or shadow_elements(modality).view is not None:
                self._modalities.shadows[name] = self.open_modality(name)

    def memory_state(self) -> dict[str, Any]:
        """The global changes, and a root's modalities' own: their changes and kept rows/columns (a
        modality given whole is one of the global changes).
        """
        state = super().memory_state()
        if self.is_view:
            return state
        inner = {name: (m.view, m.memory_state()) for name, m in self._stored_modalities().items()}
        inner = {name: kept for name, kept in inner.items() if kept[0] is not None or kept[1]}
        return {**state, _MODALITY_STATES: inner} if inner else state

    def restore_memory(self, changes: dict[str, Any]) -> None:
        changes = dict(changes)
        inner = changes.pop(_MODALITY_STATES, {})
        super().restore_memory(changes)
        if self.is_view:
            return
        for rel, value in changes.items():  # modalities given, or deleted, in memory
            if rel.startswith("mod/") and "/" not in rel[4:]:
                if value is DELETED:
                    self.mod.shadows.pop(rel[4:], None)
                else:
                    self.mod.shadows[rel[4:]] = value
        for name, (kept, state) in inner.items():
            modality = shadow_elements(self.mod[name])
            modality.view = kept
            modality.restore_memory(state)

    def subset_in_place(self, index: Any) -> None:
        """Keep the global rows/columns ``index`` selects; the modalities stay as they are (muon's filters
        and ``update()`` subset them themselves, as for a MuData).
        """
        modalities = dict(self.mod)
        super().subset_in_place(index)
        self._modalities = Modalities(self, modalities)

    def to_memory_nbytes(self) -> int:
        """Bytes ``to_memory()`` reads (about): the global elements' and every modality's."""
        own = self.read_nbytes([*self.stored_element_paths(), "uns"])
        return own + sum(shadow_elements(m).to_memory_nbytes() for m in self.mod.values() if isinstance(m, ShadowBase))
