"""The one serving order of an element: where the value of one element of one shadow comes from.

Every way a shadow hands out an element goes through :class:`Element`: attribute access and the slots
(:meth:`Element.value`), ``uns`` and raw's X under dask (:meth:`~Element.memory_value`), ``to_memory``
and raw (:meth:`~Element.plain`), exports
(:meth:`~Element.export_value`), ``persist`` (:meth:`~Element.persist`) and ``obs_vector`` /
``var_vector`` (:meth:`~Element.vector`). They differ only in what they do with the value once its
source is known; the order in which the sources are asked is written once, in :meth:`Element.locate`:

1. **stale**: the element keeps showing its value from before its axis changed (``adata._obs = ...``),
   until it is assigned (the elements' ``before``);
2. **a view's part of its root's memory**: an array the root holds or changed, sliced (the root's
   in-place changes are seen by every view, as anndata's);
3. **changed** (▲): assigned or deleted in memory, this shadow's or, for a view, its root's (sliced);
4. **held** (ᐁ): read once and kept, until ``clear_cache()``;
5. **the file**: a lazy backend's graph, else read (and kept, for what the shadow shows).

An :class:`Element` holds nothing of its own: the values live in the shadow's records
(:class:`~shadows.core.state.ElementState`), reached through its
:class:`~shadows.core.elements.ShadowElements`, which keeps one :class:`Element` per path.
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

from shadows import convert
from shadows.core.state import NOTHING
from shadows.elements.sparse_chunk import to_plain
from shadows.errors import MissingElementError, element_message
from shadows.indexing.keys import as_positions
from shadows.indexing.selection import selection_for
from shadows.schema import FRAMES
from shadows.writing import DELETED


class Source(enum.Enum):
    """Where an element's value comes from, in the order they are asked (see the module's text)."""

    STALE = "stale"
    ROOT_PART = "root part"
    CHANGED = "changed"
    HELD = "held"
    FILE = "file"


class Element:
    """One element (``rel``, a path relative to the AnnData: ``"X"``, ``"obsm/X_pca"``) of one shadow.

    Parameters
    ----------
    elements
        The :class:`~shadows.core.elements.ShadowElements` of the shadow (root or view) asking (which
        imports this module: its type is not named here).
    rel
        The element's path relative to the AnnData root.
    """

    __slots__ = ("elements", "rel")

    def __init__(self, elements: Any, rel: str) -> None:
        self.elements, self.rel = elements, rel

    # -- the order -----------------------------------------------------------------------------

    def locate(self) -> tuple[Source, Any]:
        """The first source that has the element, with its value there (``None`` when deleted in memory;
        the elements from before the axis change for :attr:`Source.STALE`; ``None`` for the file).
        """
        elements, rel = self.elements, self.rel
        state = elements.state
        if state.is_stale(rel):
            return Source.STALE, elements.before
        part = elements.root_part(rel)
        if part is not NOTHING:
            return Source.ROOT_PART, part
        changed = elements.changed_value(rel)
        if changed is not NOTHING:
            return Source.CHANGED, None if changed is DELETED else changed
        held = state.held(rel)
        if held is not NOTHING:
            return Source.HELD, held
        return Source.FILE, None

    # -- what callers want of it -----------------------------------------------------------------

    def value(self) -> Any:
        """The element as the shadow's backends present it, read from the file on first use and kept
        (DESIGN.md section 4): what ``adata.X``, ``adata.obs`` and the slots give.
        """
        source, value = self.locate()
        if source is Source.STALE:
            return value.element(self.rel).value()
        if source is not Source.FILE:
            return value
        elements, rel = self.elements, self.rel
        spec = elements.layout.spec(rel)
        backend = elements.backend_for(spec)
        if backend is not None and backend.lazy:
            return elements.lazy(rel, backend)
        if backend is None:
            return elements.state.hold(rel, elements.materialize(rel))
        if rel in FRAMES and backend.name == "pandas":
            return elements.state.hold(rel, elements.shown_frame(rel, elements.materialize(rel)))
        return elements.state.hold(rel, backend.convert(elements.materialize(rel)))

    def plain(self) -> Any:
        """The element as numpy/scipy/pandas whatever the backends (what ``to_memory`` builds from); a
        value read for it is not kept.
        """
        source, value = self.locate()
        if source is Source.STALE:
            return value.element(self.rel).plain()
        if source in (Source.ROOT_PART, Source.CHANGED):
            return computed(value)
        elements, rel = self.elements, self.rel
        spec = elements.layout.spec(rel)
        if source is Source.HELD:
            backend = elements.backend_for(spec)
            if backend is not None and backend.name in ("numpy", "pandas"):
                return value.copy(deep=False) if rel in FRAMES else value
        if spec.role == "mapping":
            return elements.uns_child(rel).materialize()
        return elements.materialize(rel)

    def memory_value(self) -> Any:
        """The element as anndata holds it in memory (numpy, scipy, pandas, python values) whatever the
        backends, read on first use (this view's part of it) and held (ᐁ) until ``clear_cache()``: what
        ``uns`` gives, and raw's X under the dask backend (scanpy hashes and iterates them). A graph
        kept by ``persist()`` is read into memory.
        """
        source, value = self.locate()
        if source is Source.STALE:
            return value.element(self.rel).memory_value()
        if source in (Source.ROOT_PART, Source.CHANGED) or (source is Source.HELD and not is_graph(value)):
            return value
        return self.elements.state.hold(self.rel, self.elements.materialize(self.rel))

    def export_value(self) -> Any:
        """The element as an export writes it: a value in memory as it is (▲; ``None`` when deleted),
        an array held in memory, else an array as its dask graph (lazy, only a view's part) and anything
        else read as numpy/pandas/dict.
        """
        source, value = self.locate()
        if source is Source.STALE:
            return value.element(self.rel).export_value()
        if source in (Source.ROOT_PART, Source.CHANGED):
            return value
        elements, rel = self.elements, self.rel
        if elements.layout.spec(rel).role != "array":
            return self.plain()
        if source is Source.HELD and elements.arrays.name == "numpy":
            return value
        return elements.graph(rel)

    def graph(self) -> Any:
        """The dask graph of the stored element (this shadow's part of it), built once from metadata."""
        return self.elements.graph(self.rel)

    def persist(self) -> None:
        """Keep the element computed in memory (ᐁ): a lazy backend's graph persisted (locally or on
        the cluster), anything else read as :meth:`value` keeps it.
        """
        source, _ = self.locate()
        elements, rel = self.elements, self.rel
        backend = elements.backend_for(elements.layout.spec(rel))
        if source in (Source.FILE, Source.HELD) and backend is not None and backend.lazy:
            elements.state.hold(rel, convert.persisted(elements.lazy(rel, backend)), check=False)
        else:
            self.value()

    def set(self, value: Any, shape: tuple[int, ...]) -> None:
        """Give the element ``value`` in memory (▲), checked to be ``shape`` (``None`` deletes it)."""
        self.elements.set_whole(self.rel, value, shape)

    def delete(self) -> None:
        """Delete the element in memory (▲ when stored; forgotten when it only was a change)."""
        self.elements.remove(self.rel)

    def vector(self, key: tuple) -> np.ndarray:
        """One row (``key = (i, slice(None))``) or column (``(slice(None), j)``) of a matrix element as a
        1-d numpy array, reading only what it needs.

        A value in memory (▲, ᐁ, or a view's part of its root's) is indexed as it is. From the file, the
        element's graph selects the one row or column inside its read tasks (for CSC X a gene is one
        contiguous read; for CSR X row blocks are scanned in parallel, in bounded memory).
        """
        source, value = self.locate()
        if source is Source.STALE:
            value = value.element(self.rel).value()
        elif source is Source.CHANGED and value is None:
            raise MissingElementError(element_message(self.elements.filename, self.rel, "deleted in memory"))
        if source is Source.FILE:
            vector = to_plain(self._one_line_graph(key).compute())
        else:
            vector = value[key]
            vector = vector.compute() if hasattr(vector, "dask") else vector
        if hasattr(vector, "toarray"):
            vector = vector.toarray()
        return np.asarray(vector).reshape(-1)

    def columns(self, positions: np.ndarray) -> Any:
        """The shadow's part of a matrix element restricted to the column ``positions``, as numpy/scipy
        (what ``raw[cells, genes]`` holds): a value in memory is indexed as it is; from the file only the
        selected rows and columns are read (and nothing is kept).
        """
        source, value = self.locate()
        if source is Source.STALE:
            return value.element(self.rel).columns(positions)
        if source is Source.CHANGED and value is None:
            raise MissingElementError(element_message(self.elements.filename, self.rel, "deleted in memory"))
        if source is not Source.FILE:
            return computed(value)[:, positions]
        elements, rel = self.elements, self.rel
        spec = elements.layout.spec(rel)
        selection = selection_for(rel, spec, elements.view) or (None,) * len(spec.shape)
        return spec.read_selection((selection[0], positions))

    def _one_line_graph(self, key: tuple) -> Any:
        """The graph of the one row or column ``key`` of this shadow's part of the stored element."""
        elements, rel = self.elements, self.rel
        spec = elements.layout.spec(rel)
        selection = selection_for(rel, spec, elements.view) or (None,) * len(spec.shape)
        axes = [range(n) if s is None else s for s, n in zip(selection, spec.shape, strict=True)]
        axis = 0 if isinstance(key[0], int | np.integer) else 1
        axes[axis] = np.asarray([as_positions(axes[axis])[key[axis]]])
        return spec.select_graph(tuple(axes))


def is_graph(value: Any) -> bool:
    """Whether ``value`` is a lazy backend's value (a dask collection, an xarray object over dask, or
    read_lazy's ``Dataset2D``), e.g. one kept by ``persist()``, rather than an in-memory one.
    """
    return hasattr(value, "__dask_graph__") or hasattr(getattr(value, "ds", None), "__dask_graph__")


def computed(value: Any) -> Any:
    """A value assigned in memory as numpy/scipy (a dask array computed)."""
    if hasattr(value, "dask"):
        return to_plain(value.compute())
    return value
