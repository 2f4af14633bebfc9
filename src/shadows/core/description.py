"""What a shadow says about itself (``shadow.describe()``, ``shadow.stored_elements()``): the public,
documented interface the edges of the package use — the text and HTML reprs, ``shadows info`` and the
export — instead of the shadow's internals.

A :class:`Description` lists every element the shadow shows, slot by slot, with what the repr marks
(ᐁ held in memory, ▲ changed in memory) and what the HTML repr prints (encoding, shape, dtype); it is
built from metadata and from what is in memory, and reads no data. :class:`StoredElement` is what
``shadows info`` prints of each element of the file (chunking, bytes on disk).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shadows.cache import marker
from shadows.core import annotations
from shadows.errors import ExternalDataError, ShadowsError
from shadows.schema import element_axes

if TYPE_CHECKING:
    from shadows.core.elements import ShadowElements

#: Aligned slots of each kind of object, in the order reprs list them (uns last of the shared ones).
ANNDATA_SLOTS = ("obsm", "varm", "obsp", "varp", "uns")
MUDATA_SLOTS = ("obsm", "varm", "obsp", "varp", "uns", "obsmap", "varmap")


@dataclass(frozen=True)
class ElementInfo:
    """One element as a shadow shows it.

    Attributes
    ----------
    slot
        ``"X"``, ``"layers"``, ``"obs"``, ``"var"``, ``"obsm"``, ``"varm"``, ``"obsp"``, ``"varp"``,
        ``"uns"``, ``"raw"``, ``"obsmap"`` or ``"varmap"``.
    key
        The key in the slot (``""`` for X; the column, or the index's name, of obs/var; ``"X"``,
        ``"var"`` or ``"varm"`` of raw).
    encoding
        anndata's encoding of the stored element (``"csr_matrix 0.1.0"``), ``"index"`` for the names
        of obs/var, or ``"in memory: <type>"`` for a value assigned in memory.
    shape, dtype
        As this shadow shows the element (a view's sizes); ``None`` where it has none.
    held
        Held in memory (ᐁ; ``clear_cache()`` frees it).
    changed
        Assigned in memory and not yet written (▲).
    detail
        What else helps to know it (``"3 categories"`` for a categorical column), or ``""``.
    kind
        What the element is, as its reader says (``"dense"``, ``"sparse"``, ``"dataframe"``,
        ``"mapping"``...; ``"memory"`` for a value assigned in memory, ``""`` for obs/var columns
        described without details).
    """

    slot: str
    key: str
    encoding: str
    shape: tuple[int, ...] | None
    dtype: str | None
    held: bool = False
    changed: bool = False
    detail: str = ""
    kind: str = ""

    @property
    def marked_key(self) -> str:
        """The key with its repr marker (▲ or ᐁ)."""
        return self.key + marker(self.held, self.changed)


@dataclass(frozen=True)
class Description:
    """What a shadow (or view) holds, as :meth:`ShadowBase.describe` gives it.

    Attributes
    ----------
    kind
        ``"AnnData"`` or ``"MuData"``; ``"AnnData in memory"`` for a modality given as an AnnData.
    source
        The file or store (``None`` in memory).
    filename
        As the shadow's ``filename`` (with the group path of one modality of a MuData).
    shape
        ``(n_obs, n_vars)``.
    is_view
        Whether it is a view of another shadow.
    file_shape
        ``(n_obs, n_vars)`` of the file's group (``None`` in memory).
    subset
        A shadow subset in place (keeps some of the file's rows or columns; not a view).
    axis
        A MuData's axis (0 shared obs, 1 shared var, -1 both); ``None`` for AnnData.
    elements
        Every element, slot by slot, in the order the repr lists them.
    modalities
        A MuData's modalities, by name, in ``mod-order``.
    """

    kind: str
    source: str | None
    filename: str | None
    shape: tuple[int, int]
    is_view: bool
    file_shape: tuple[int, int] | None
    subset: bool
    axis: int | None
    elements: tuple[ElementInfo, ...]
    modalities: dict[str, Description] = field(default_factory=dict)

    def slot(self, name: str) -> list[ElementInfo]:
        """The elements of slot ``name`` (obs/var: the index first, then the columns)."""
        return [e for e in self.elements if e.slot == name]

    def columns(self, slot: str) -> list[ElementInfo]:
        """The elements of ``slot`` without the index of obs/var: what the reprs list, as anndata's
        repr lists the columns of obs/var and not the name of their index.

        Parameters
        ----------
        slot
            The slot, as in :meth:`slot`.
        """
        return [e for e in self.slot(slot) if e.encoding != "index"]

    def has(self, slot: str) -> bool:
        """Whether slot ``slot`` holds anything (X, raw: whether there is one)."""
        return any(e.slot == slot for e in self.elements)

    @property
    def is_mudata(self) -> bool:
        """Whether this describes a MuData (which alone has an :attr:`axis`)."""
        return self.axis is not None

    @property
    def in_memory(self) -> bool:
        """Whether this describes an AnnData in memory (a MuData shadow's modality given in memory): no file."""
        return self.source is None

    @property
    def header(self) -> str:
        """The repr's first line."""
        note = {0: "", 1: " (shared var)", -1: " (shared obs and var)"}.get(self.axis, "") if self.axis is not None \
            else ""
        if self.in_memory:
            return f"AnnData object (in memory▲) with n_obs × n_vars = {self.shape[0]} × {self.shape[1]}"
        header = f"{self.kind} Shadow object with n_obs × n_vars = {self.shape[0]} × {self.shape[1]}{note}"
        if self.is_view:
            return f"View of {header} (original {self.file_shape[0]} × {self.file_shape[1]})"
        if self.subset:
            return f"{header} (subset of the file's {self.file_shape[0]} × {self.file_shape[1]})"
        return header


@dataclass(frozen=True)
class StoredElement:
    """One element of the file as ``shadows info`` lists it (from metadata and listings only)."""

    path: str  # relative to the AnnData/MuData group; a modality's as ``mod/<name>/...``
    shape: tuple[int, ...] | None
    dtype: Any  # numpy dtype, or None for groups
    encoding: str
    chunks: str | None
    nbytes: int  # bytes on disk
    problem: str | None = None  # why the element cannot be read (its ShadowsError), listed all the same


# -- building descriptions (from a shadow's elements, for the edges) ----------------------------------


def describe(shadow: ShadowElements, details: bool = True) -> Description:
    """The :class:`Description` of a shadow or view (reads no data). ``details=False`` leaves out the
    encoding, dtype and categories of stored dataframe columns (what the text repr does without: a
    dataframe of many thousands of columns is described one column at a time).
    """
    layout = shadow.layout
    mudata = shadow.KIND == "MuData"
    elements: list[ElementInfo] = []
    if not mudata:
        elements += _x(shadow)
        elements += _slot(shadow, "layers")
    elements += _frame(shadow, "obs", details) + _frame(shadow, "var", details)
    for slot in MUDATA_SLOTS if mudata else ANNDATA_SLOTS:
        elements += _slot(shadow, slot)
    if not mudata:
        elements += _raw(shadow)
    modalities = {}
    if mudata:
        modalities = {name: m.describe(details) if hasattr(m, "stored_elements") else describe_memory(m)
                      for name, m in shadow.mod.items()}
    return Description(
        kind=shadow.KIND, source=shadow.ref.path, filename=shadow.filename, shape=shadow.shape,
        is_view=shadow.is_view, file_shape=(layout.n_obs, layout.n_vars),
        subset=not shadow.is_view and shadow.view is not None, axis=layout.axis if mudata else None,
        elements=tuple(elements), modalities=modalities,
    )


def describe_memory(adata: Any) -> Description:
    """A :class:`Description` of an in-memory AnnData (a MuData shadow's modality given in memory)."""
    elements = [_in_memory("X", "", adata.X)] if adata.X is not None else []
    elements += [_in_memory("layers", k, v) for k, v in adata.layers.items() if k is not None]
    for slot in ("obs", "var"):
        frame = getattr(adata, slot)
        elements.append(ElementInfo(slot, frame.index.name or "_index", "index", (len(frame),), None, changed=True))
        elements += [_in_memory(slot, k, frame[k]) for k in frame.columns]
    for slot in ANNDATA_SLOTS:
        elements += [_in_memory(slot, k, v) for k, v in getattr(adata, slot).items()]
    if adata.raw is not None:
        elements += [_in_memory("raw", "X", adata.raw.X), _in_memory("raw", "var", adata.raw.var)]
    return Description(kind="AnnData in memory", source=None, filename=None, shape=tuple(adata.shape),
                       is_view=adata.is_view, file_shape=None, subset=False, axis=None, elements=tuple(elements))


def stored_elements(shadow: ShadowElements, prefix: str = "") -> list[StoredElement]:
    """Every stored element of the file's group (uns walked recursively, raw, a MuData's modalities)."""
    out = []
    for rel in _stored_paths(shadow):
        try:
            spec = shadow.layout.spec(rel)
            info = spec.info()
        except ExternalDataError:  # a refusal to follow data out of the file is the user's to lift: loud
            raise
        except ShadowsError as error:  # listed with its reason: the other elements still describe the file
            out.append(StoredElement(prefix + rel, None, None, "unreadable", None, 0, problem=str(error)))
            continue
        out.append(StoredElement(prefix + rel, tuple(info["shape"]) if info["shape"] else None, spec.dtype,
                                 info["encoding"], info["chunks"] or None, info["stored"]))
    for name, modality in (shadow.mod.items() if shadow.KIND == "MuData" else ()):
        if hasattr(modality, "stored_elements"):  # stored (not an AnnData given in memory)
            out += [dataclasses.replace(e, path=f"{prefix}mod/{name}/{e.path}") for e in modality.stored_elements()]
    return out


def _stored_paths(shadow: ShadowElements) -> list[str]:
    layout = shadow.layout
    paths = [rel for rel in ("X", "obs", "var") if layout.has(rel)]
    for slot in shadow.SLOTS:
        paths += [f"{slot}/{key}" for key in layout.mapping_keys(slot)]
    stack = [f"uns/{k}" for k in reversed(layout.mapping_keys("uns"))]
    while stack:
        rel = stack.pop()
        paths.append(rel)
        try:
            is_mapping = layout.spec(rel).role == "mapping"
        except ExternalDataError:
            raise
        except ShadowsError:  # listed, then described as unreadable by stored_elements
            continue
        if is_mapping:
            stack.extend(f"{rel}/{k}" for k in reversed(layout.children(rel)))
    paths += [rel for rel in ("raw/X", "raw/var") if layout.has(rel)]
    if layout.has("raw/varm"):
        paths += [f"raw/varm/{k}" for k in layout.mapping_keys("raw/varm")]
    return paths


def _in_memory(slot: str, key: str, value: Any, held: bool = False) -> ElementInfo:
    dtype = getattr(value, "dtype", None)
    categories = getattr(dtype, "categories", None)
    detail = "" if categories is None else _categories_text(len(categories))
    return ElementInfo(slot, key, f"in memory: {type(value).__name__}", tuple(getattr(value, "shape", ())) or None,
                       None if dtype is None else str(dtype), held=held, changed=True, detail=detail, kind="memory")


def _categories_text(n: int, stored: bool = False) -> str:
    return f"{n} categor{'y' if n == 1 else 'ies'}{' in the file' if stored else ''}"


def _view_shape(shadow: ShadowElements, rel: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape ``rel`` has in this shadow: the stored shape, with view-sliced axes at the view's sizes."""
    if shadow.view is None or not shape:  # neither a view nor subset in place
        return shape
    sizes = shadow.shape
    return tuple(n if i >= len(axes := element_axes(rel)) or axes[i] is None else sizes[axes[i]]
                 for i, n in enumerate(shape))


def _stored(shadow: ShadowElements, slot: str, key: str, rel: str) -> ElementInfo:
    try:
        spec = shadow.layout.spec(rel)
    except ExternalDataError:
        raise
    except ShadowsError:  # shown as unreadable; reading it raises the error that says why
        return ElementInfo(slot, key, "unreadable", None, None, held=False, detail="unreadable: read it for why")
    dtype = None if spec.role in ("mapping", "table") or spec.dtype is None else str(spec.dtype)
    return ElementInfo(slot, key, spec.encoding, _view_shape(shadow, rel, tuple(spec.shape)) or None, dtype,
                       held=shadow.is_held(rel), kind=spec.kind)


def _x(shadow: ShadowElements) -> list[ElementInfo]:
    if shadow.is_changed("X"):
        return [_in_memory("X", "", shadow.element("X").value(), held=shadow.is_held("X"))] if shadow.has("X") \
            else []
    return [_stored(shadow, "X", "", "X")] if shadow.layout.has("X") else []


def _slot(shadow: ShadowElements, slot: str) -> list[ElementInfo]:
    mapping = shadow.slots[slot]
    return [_in_memory(slot, key, mapping[key]) if mapping.is_staged(key)
            else _stored(shadow, slot, key, f"{slot}/{key}") for key in mapping.own_keys()]


def _frame(shadow: ShadowElements, slot: str, details: bool = True) -> list[ElementInfo]:
    spec = getattr(shadow.layout, slot)
    held = shadow.is_held(slot)
    staged = shadow.visible_staged_columns(slot)
    n_rows = shadow.axis_length(0 if slot == "obs" else 1)
    rows = [ElementInfo(slot, spec.index_key, "index", (n_rows,), None, held=held)]
    for key in annotations.frame_keys(shadow, slot):
        if key in staged:
            rows.append(_in_memory(slot, key, staged[key]))
        elif not details:
            rows.append(ElementInfo(slot, key, "", (n_rows,), None, held=held))
        else:
            column = spec.column(key)
            n_categories = getattr(column, "n_categories", None)
            detail = "" if n_categories is None else _categories_text(n_categories(), shadow.view is not None)
            rows.append(ElementInfo(slot, key, column.encoding, (n_rows,), str(column.dtype), held=held,
                                    detail=detail, kind=column.kind))
    return rows


def _raw(shadow: ShadowElements) -> list[ElementInfo]:
    raw = shadow.raw()
    if raw is None:
        return []
    if shadow.is_changed("raw"):  # an anndata.Raw assigned in memory
        return [_in_memory("raw", "X", raw.X), _in_memory("raw", "var", raw.var)]
    layout = shadow.layout
    return [_stored(shadow, "raw", part, f"raw/{part}") for part in ("X", "var", "varm") if layout.has(f"raw/{part}")]
