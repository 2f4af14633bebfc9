"""The map of an AnnData or MuData group, read from metadata when a shadow opens.

It records which slots exist, the keys of each mapping slot, n_obs and n_vars, and describes elements
on demand (descriptions are metadata, so they are kept). :class:`AnnDataLayout` also folds the layouts
of old anndata releases into today's names, as ``anndata.read_h5ad`` does:

- ``raw.X``/``raw.var``/``raw.varm`` at the root are ``raw/X``, ``raw/var``, ``raw/varm``;
- a structured obs/var (< 0.7) is a dataframe whose categorical columns take their categories from
  ``uns["<column>_categories"]`` (those uns keys are then hidden);
- a structured obsm/varm (< 0.7) is a mapping of its fields;
- 2-d ``uns["neighbors"]["distances"|"connectivities"]`` are ``obsp`` entries.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any

import numpy as np

from shadows.backends import FileRef, containment, nodes
from shadows.elements import ElementSpec, describe
from shadows.elements.legacy import LegacyFrameSpec, StructuredFieldSpec, is_structured
from shadows.errors import (
    MalformedElementError,
    MissingElementError,
    NotAnnDataError,
    NotMuDataError,
    ShadowsError,
    element_message,
    translated,
)
from shadows.schema import ALIGNED_SLOT_AXES

_ADJACENCY_KEYS = ("distances", "connectivities")


class ElementMap(abc.ABC):
    """What a shadow asks of the map of its elements: which exist, their specs, the keys of each mapping,
    n_obs and n_vars. A file's :class:`Layout` answers from the file's metadata; an atlas's
    (:class:`shadows.collection.layout.AtlasLayout`) from its catalog and join.

    Attributes
    ----------
    ref
        What the map is of (messages name its ``display``).
    obs, var
        The specs of the obs and var frames.
    has_raw
        Whether a ``raw`` is stored.
    """

    ref: FileRef
    obs: ElementSpec
    var: ElementSpec
    has_raw: bool = False

    @abc.abstractmethod
    def path(self, rel: str) -> str:
        """The element's path (absolute in the file) from its path relative to the AnnData root."""

    @abc.abstractmethod
    def has(self, rel: str) -> bool:
        """Whether the element (or a mapping of that name) exists."""

    @abc.abstractmethod
    def spec(self, rel: str) -> ElementSpec:
        """The element's spec (:class:`~shadows.errors.MissingElementError` if there is none)."""

    @abc.abstractmethod
    def children(self, rel: str) -> list[str]:
        """Keys of a mapping element (a slot like obsm, or a nested uns dict)."""

    def mapping_keys(self, slot: str) -> list[str]:
        """Keys stored under a mapping slot (layers, obsm, uns...)."""
        return self.children(slot)

    @property
    def n_obs(self) -> int:
        """Number of observations, from the obs frame's shape."""
        return int(self.obs.shape[0])

    @property
    def n_vars(self) -> int:
        """Number of variables, from the var frame's shape."""
        return int(self.var.shape[0])


class Layout(ElementMap):
    """Metadata of one AnnData or MuData group inside an open file (what both have: obs, var, slots).

    Parameters
    ----------
    ref
        Where the AnnData/MuData lives.
    handle
        The open file (h5py.File / zarr metadata) of the shadow.
    """

    def __init__(self, ref: FileRef, handle: Any):
        self.ref = ref
        self._handle = handle
        #: Whether to refuse what leads out of the file (see :mod:`shadows.backends.containment`).
        self._contain = not ref.allow_external
        #: Whether paths are checked before each lookup: one may follow a link into another file (HDF5).
        self._check_lookups = self._contain and ref.capabilities.lookups_follow_links
        self._paths_checked: set[str] = set()  # lookups repeat; their paths are checked once
        if self._contain and ref.root:
            containment.check_lookup(ref, handle, ref.root)
        try:
            self.group = handle[ref.root] if ref.root else handle
        except KeyError:
            parent = ref.root.rsplit("/", 1)[0] if "/" in ref.root else ""
            available = ""
            if parent and nodes.has_child(handle, parent):
                available = f"; available: {', '.join(nodes.child_names(handle[parent]))}"
            raise MissingElementError(element_message(ref.path, ref.root, f"not in the file{available}")) from None
        with translated(ref.display, "/"):
            if self._contain and ref.root:
                containment.check_node(ref, handle, self.group, ref.root)
            self.keys = set(nodes.child_names(self.group))
        self._check()
        self._specs: dict[str, ElementSpec] = {}
        self._children: dict[str, list[str]] = {}
        self._aliases: dict[str, str] = {}
        self._hidden: dict[str, set[str]] = {}
        self._extra_keys: dict[str, list[str]] = {}
        self._fold_before_frames()
        self.obs = self._frame("obs")
        self.var = self._frame("var")
        self._fold_after_frames()
        self._children.clear()  # the folds looked up keys they then hid or moved

    def _check(self) -> None:
        """Raise when the group is not of the kind this layout maps."""

    def _fold_before_frames(self) -> None:
        """Map old names onto today's, before obs and var are described."""

    def _fold_after_frames(self) -> None:
        """Map old layouts that depend on obs and var."""

    def _frame(self, rel: str) -> ElementSpec:
        node = self._node(rel)
        if is_structured(node):
            self._check_node(rel, node)
            spec = LegacyFrameSpec.from_node(self.ref, node, self.path(rel), {})
            self._specs[rel] = spec
        return self.spec(rel)

    # -- lookups -------------------------------------------------------------------------------

    def path(self, rel: str) -> str:
        """Absolute path in the file of an element given relative to the AnnData root."""
        return self.ref.element_path(self._file_path(rel))

    def _file_path(self, rel: str) -> str:
        for alias, target in self._aliases.items():
            if rel == alias or rel.startswith(alias + "/"):
                return target + rel[len(alias):]
        return rel

    def _node(self, rel: str) -> Any:
        if self._check_lookups:
            self._check_path(rel)  # before h5py follows an external link
        try:
            with nodes.reading_element(self.ref.display, rel):
                return self.group[self._file_path(rel)]
        except KeyError as error:  # h5py's for a missing object and for a damaged object header alike
            raise containment.lookup_error(self.ref, rel, error) from error

    def _check_path(self, rel: str) -> None:
        """Refuse an element whose path leads out of the file (HDF5 external links, Zarr folders that are
        symbolic links out of the store), before anything follows it; once per path.
        """
        if not self._contain:
            return
        path = self.path(rel)
        if path not in self._paths_checked:
            containment.check_lookup(self.ref, self._handle, path)
            self._paths_checked.add(path)

    def _check_node(self, rel: str, node: Any) -> None:
        """Refuse an HDF5 element that lies in another file, whose bytes do (external storage, virtual
        sources), or, for a group, that holds an external link; once per element, before describing it.
        """
        if self._contain:
            containment.check_node(self.ref, self._handle, node, self.path(rel), walk=True)

    def _structured_parent(self, rel: str) -> tuple[str, str] | None:
        """For ``obsm/X_pca`` inside a structured obsm: ("obsm", "X_pca")."""
        parent, _, field = rel.rpartition("/")
        if parent and field and self.has(parent) and not nodes.is_group(self._node(parent)):
            node = self._node(parent)
            if is_structured(node) and field in node.dtype.names:
                return parent, field
        return None

    def has(self, rel: str) -> bool:
        """Whether the element exists (metadata lookup)."""
        if rel in self._specs:
            return True
        file_rel = self._file_path(rel)
        if file_rel.partition("/")[0] not in self.keys:
            return self._structured_parent(rel) is not None if "/" in rel else False
        parent, _, name = rel.rpartition("/")
        if parent and name in self._hidden.get(parent, ()):
            return False
        return nodes.has_child(self.group, file_rel) or self._structured_parent(rel) is not None

    def spec(self, rel: str) -> ElementSpec:
        """Describe the element at ``rel`` (relative to the AnnData root); kept after the first call.

        What h5py or zarr raise about damaged metadata on the way is answered as a shadows error naming
        the file and ``rel`` (:func:`~shadows.errors.as_shadows_error`).
        """
        spec = self._specs.get(rel)
        if spec is not None:
            return spec
        with translated(self.ref.display, rel):
            return self._describe(rel)

    def _describe(self, rel: str) -> ElementSpec:
        self._check_path(rel)
        if not self.has(rel):
            raise MissingElementError(element_message(self.ref.display, rel, "not in the file"))
        field = self._structured_parent(rel)
        if field is not None:
            node = self._node(field[0])
            self._check_node(field[0], node)
            spec = StructuredFieldSpec.from_field(self.ref, node, self.path(field[0]), field[1])
        else:
            node = self._node(rel)
            self._check_node(rel, node)
            spec = describe(self.ref, node, self.path(rel))
        self._check_alignment(rel, spec)
        self._specs[rel] = spec
        return spec

    def _check_alignment(self, rel: str, spec: ElementSpec) -> None:
        """An element aligned to obs/var (X, layers, obsm, obsp, ...) must have their lengths."""
        head, _, key = rel.partition("/")
        if rel == "X":
            axes: tuple[int, ...] = (0, 1)
            sizes = (self.n_obs, self.n_vars)
        elif head in ALIGNED_SLOT_AXES and key and "/" not in key:
            axes = ALIGNED_SLOT_AXES[head]
            sizes = (self.n_obs, self.n_vars)
        elif rel == "raw/X" and self.has("raw/var"):  # raw has its own variables
            axes, sizes = (0, 1), (self.n_obs, int(self.spec("raw/var").shape[0]))
        elif rel.startswith("raw/varm/") and rel.count("/") == 2 and self.has("raw/var"):
            axes, sizes = (0,), (int(self.spec("raw/var").shape[0]),)
        else:
            return
        expected = tuple(sizes[a] for a in axes)
        got = tuple(spec.shape[: len(axes)])
        if got != expected:
            if not rel.startswith("raw/"):
                self._check_index_against(rel, axes, got)
            names = " × ".join(("observations", "variables")[a] for a in axes)
            what = (f"stored with shape {tuple(spec.shape)}, but the file has {expected} ({names}): "
                    "its leading dimensions must match")
            raise MalformedElementError(element_message(self.ref.display, rel, what))

    def _check_index_against(self, rel: str, axes: tuple[int, ...], got: tuple[int, ...]) -> None:
        """Raise naming the obs (var) index when ``rel``, which disagrees with its length, agrees with a
        witness: X, or the first column of obs (var). Two stored parts against one: the index is the part
        that is wrong, and the error names it (not ``layers/counts``, which is fine).
        """
        for axis, length in zip(axes, got, strict=True):
            frame = self.obs if axis == 0 else self.var
            index = frame.extra.get("index")
            if index is None or int(index.shape[0]) == length:
                continue
            witness = next((w for w, n in self._axis_witnesses(rel, axis) if n == length), None)
            if witness is not None:
                what = (f"its stored length, {int(index.shape[0])}, is inconsistent with the data: {rel} has "
                        f"{length} {('observations', 'variables')[axis]}, and so does {witness}; the index "
                        "is damaged")
                raise MalformedElementError(element_message(self.ref.display, index.name, what))

    def _axis_witnesses(self, rel: str, axis: int) -> Iterator[tuple[str, int]]:
        """Stored parts other than ``rel`` that say how long ``axis`` is: X, and the first column of obs
        (var). X is described without the alignment check (its own mismatch would blame the index again);
        a damaged witness says nothing.
        """
        if rel != "X" and self.has("X"):
            try:
                shape = describe(self.ref, self._node("X"), self.path("X")).shape
            except ShadowsError:
                shape = ()
            if len(shape) > axis:
                yield "X", int(shape[axis])
        frame = self.obs if axis == 0 else self.var
        columns = list(getattr(frame, "columns", []))
        if columns:
            try:
                column = frame.column(columns[0])
            except ShadowsError:
                return
            yield column.name, int(column.shape[0])

    def children(self, rel: str) -> list[str]:
        """Keys of a mapping element (a slot like obsm, or a nested uns dict), from metadata (looked up
        once: a layout describes one generation of the file).
        """
        if rel not in self._children:
            with translated(self.ref.display, rel):
                self._children[rel] = self._read_children(rel)
        return list(self._children[rel])

    def _read_children(self, rel: str) -> list[str]:
        if not self.has(rel):
            return list(self._extra_keys.get(rel, []))
        node = self._node(rel)
        if is_structured(node):
            keys = list(node.dtype.names)
        elif nodes.is_group(node):
            self._check_mapping(rel, node)
            keys = nodes.child_names(node)
        else:
            what = "expected a group (a mapping of elements), found an array"
            raise MalformedElementError(element_message(self.ref.display, rel, what))
        hidden = self._hidden.get(rel, set())
        keys = [k for k in keys if k not in hidden]
        return keys + [k for k in self._extra_keys.get(rel, []) if k not in keys]

    def _check_mapping(self, rel: str, node: Any) -> None:
        """A slot (layers, obsm, uns...) stored as a group with an encoding must be a ``dict``: anndata
        would read another encoding's parts instead of the group's children (a ``raw`` layers: none).
        """
        encoding = nodes.attrs(node).get("encoding-type") if "/" not in rel else None
        if encoding is not None and encoding != "dict":
            what = f"stored with encoding-type '{encoding}'; a mapping of elements is a 'dict'"
            raise MalformedElementError(element_message(self.ref.display, rel, what))


class AnnDataLayout(Layout):
    """Metadata of an AnnData group, with the layouts of old anndata releases folded in."""

    def _check(self) -> None:
        where = self.ref.display
        if "mod" in self.keys and "X" not in self.keys:
            mods = ", ".join(nodes.child_names(self.group["mod"]))
            msg = (f"{where}: this is a MuData file, not an AnnData: open one modality with "
                   f"'{where}/mod/<name>' (modalities: {mods})")
            raise NotAnnDataError(msg)
        missing = [k for k in ("obs", "var") if k not in self.keys]
        if missing:
            msg = f"{where}: not an AnnData file: no {' or '.join(missing)} element at its root"
            raise NotAnnDataError(msg)

    def _fold_before_frames(self) -> None:
        self._fold_legacy_raw()

    def _fold_after_frames(self) -> None:
        if self.has("raw/var"):
            self._frame("raw/var")
        self._fold_legacy_categories()
        self._fold_adjacency()

    @property
    def has_raw(self) -> bool:
        """Whether the AnnData has a raw slot (anndata writes a missing raw to Zarr as a null element)."""
        if self.has("raw/X"):
            return True
        return self.has("raw") and nodes.is_group(self._node("raw"))

    def _fold_legacy_raw(self) -> None:
        if "raw" in self.keys:
            return
        for part in ("X", "var", "varm"):
            if f"raw.{part}" in self.keys:
                self._aliases[f"raw/{part}"] = f"raw.{part}"

    def _fold_legacy_categories(self) -> None:
        uns = set(self.children("uns")) if self.has("uns") else set()
        hidden = set()
        for rel in ("obs", "var"):
            frame = self._specs[rel]
            if isinstance(frame, LegacyFrameSpec):
                cats = {c: self.path(f"uns/{c}_categories") for c in frame.columns if f"{c}_categories" in uns}
                self._specs[rel] = frame.with_categories(cats)
                hidden |= {f"{c}_categories" for c in cats}
        self.obs, self.var = self._specs["obs"], self._specs["var"]
        if hidden:
            self._hidden["uns"] = hidden

    def _fold_adjacency(self) -> None:
        if not self.has("uns/neighbors") or not nodes.is_group(self._node("uns/neighbors")):
            return
        moved = []
        for key in _ADJACENCY_KEYS:
            rel = f"uns/neighbors/{key}"
            if self.has(rel) and len(self.spec(rel).shape) == 2:
                self._aliases[f"obsp/{key}"] = self._file_path(rel)
                moved.append(key)
        if moved:
            self._hidden["uns/neighbors"] = set(moved)
            self._extra_keys["obsp"] = moved


class MuDataLayout(Layout):
    """Metadata of a MuData group: global obs/var and slots, the modalities and the MuData axis."""

    def _check(self) -> None:
        where = self.ref.display
        if "mod" not in self.keys:
            hint = " (it looks like an AnnData: open it with AnnDataShadow)" if "obs" in self.keys else ""
            raise NotMuDataError(f"{where}: not a MuData file: no 'mod' group at its root{hint}")
        missing = [k for k in ("obs", "var") if k not in self.keys]
        if missing:
            raise NotMuDataError(f"{where}: not a MuData file: no {' or '.join(missing)} element at its root")
        absent = [name for name in self._stored_order() or [] if name not in nodes.child_names(self.group["mod"])]
        if absent:
            what = (f"its 'mod-order' names modalities that are not stored: {', '.join(absent)} (stored: "
                    f"{', '.join(nodes.child_names(self.group['mod'])) or 'none'}); the file is incomplete or "
                    "damaged: open a stored modality by its path (file/mod/<name>), or rewrite the file")
            raise MalformedElementError(element_message(where, "mod", what))

    def _stored_order(self) -> list[str] | None:
        order = nodes.attrs(self.group["mod"]).get("mod-order")
        if order is None:
            return None
        return [str(name) for name in (order if isinstance(order, list | tuple) else list(np.atleast_1d(order)))]

    @property
    def mod_names(self) -> list[str]:
        """Modality names in the stored ``mod-order`` (in storage order when it is missing; one it does
        not list is left out, as by ``mudata.read_h5mu``).
        """
        stored = nodes.child_names(self.group["mod"])
        order = self._stored_order()
        if order is None:
            return stored
        return order  # a stored modality it does not list is left out, as mudata.read_h5mu leaves it out

    @property
    def axis(self) -> int:
        """0: modalities share observations; 1: they share variables; -1: both."""
        return int(nodes.attrs(self.group).get("axis", 0))
