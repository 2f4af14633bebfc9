"""The one serving order of an element: where the value of one element of one shadow comes from.

Every way a shadow hands out an element goes through :class:`ServedElement`: attribute access and the
slots (:meth:`ServedElement.shown`), ``to_memory`` and raw (:meth:`~ServedElement.plain`), exports
(:meth:`~ServedElement.streamed`), ``persist`` (:meth:`~ServedElement.persist`) and ``obs_vector`` /
``var_vector`` (:meth:`~ServedElement.vector`). They differ only in what they do with the value once its
source is known; the order in which the sources are asked is written once, in :meth:`ServedElement.locate`:

1. **stale**: the element keeps showing its value from before its axis changed (``adata._obs = ...``),
   until it is assigned (the shadow's ``_before``);
2. **a view's part of its root's memory**: an array the root holds or changed, sliced (the root's
   in-place changes are seen by every view, as anndata's);
3. **changed** (▲): assigned or deleted in memory, this shadow's or, for a view, its root's (sliced);
4. **held** (ᐁ): read once and kept, until ``clear_cache()``;
5. **the file**: a lazy backend's graph, else read (and kept, for what the shadow shows).
"""

from __future__ import annotations

import enum
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from shadows import convert
from shadows.core.frames import tracked
from shadows.core.state import NOTHING
from shadows.elements.sparse_chunk import to_plain
from shadows.errors import MissingElementError, element_message
from shadows.indexing.keys import as_positions
from shadows.indexing.selection import selection_for
from shadows.schema import FRAMES
from shadows.writing import DELETED

if TYPE_CHECKING:
    from shadows.core.interface import ShadowLike


class Source(enum.Enum):
    """Where an element's value comes from, in the order they are asked (see the module's text)."""

    STALE = "stale"
    ROOT_PART = "root part"
    CHANGED = "changed"
    HELD = "held"
    FILE = "file"


class ServedElement:
    """One element (``rel``, a path relative to the AnnData: ``"X"``, ``"obsm/X_pca"``) of one shadow.

    Built on demand (it holds nothing of its own: the values live in the shadow's records,
    :class:`~shadows.core.state.ElementState`).

    Parameters
    ----------
    shadow
        The shadow (root or view) asking.
    rel
        The element's path relative to the AnnData root.
    """

    def __init__(self, shadow: ShadowLike, rel: str) -> None:
        self.shadow, self.rel = shadow, rel

    # -- the order -----------------------------------------------------------------------------

    def locate(self) -> tuple[Source, Any]:
        """The first source that has the element, with its value there (``None`` when deleted in memory;
        the shadow from before the axis change for :attr:`Source.STALE`; ``None`` for the file).
        """
        shadow, rel = self.shadow, self.rel
        if shadow._state.is_stale(rel):
            return Source.STALE, shadow._before
        part = shadow._root_part(rel)
        if part is not NOTHING:
            return Source.ROOT_PART, part
        changed = shadow._changed_value(rel)
        if changed is not NOTHING:
            return Source.CHANGED, None if changed is DELETED else changed
        held = shadow._state.held(rel)
        if held is not NOTHING:
            return Source.HELD, held
        return Source.FILE, None

    # -- what callers want of it -----------------------------------------------------------------

    def shown(self) -> Any:
        """The element as the shadow's backends present it, read from the file on first use and kept
        (DESIGN.md section 4): what ``adata.X``, ``adata.obs`` and the slots give.
        """
        source, value = self.locate()
        if source is Source.STALE:
            return value._served(self.rel).shown()
        if source is not Source.FILE:
            return value
        shadow, rel = self.shadow, self.rel
        spec = shadow._layout.spec(rel)
        backend = shadow._backend_for(spec)
        if backend is not None and backend.lazy:
            return shadow._lazy(rel, backend)
        if backend is None:
            return shadow._state.hold(rel, shadow._materialize(rel))
        if rel in FRAMES and backend.name == "pandas":
            where = f"{shadow.filename}: {rel}"
            return shadow._state.hold(rel, tracked(shadow._materialize(rel), partial(shadow._stage_column, rel),
                                                   where))
        return shadow._state.hold(rel, backend.convert(shadow._materialize(rel)))

    def plain(self) -> Any:
        """The element as numpy/scipy/pandas whatever the backends (what ``to_memory`` builds from); a
        value read for it is not kept.
        """
        source, value = self.locate()
        if source is Source.STALE:
            return value._served(self.rel).plain()
        if source in (Source.ROOT_PART, Source.CHANGED):
            return computed(value)
        shadow, rel = self.shadow, self.rel
        spec = shadow._layout.spec(rel)
        if source is Source.HELD:
            backend = shadow._backend_for(spec)
            if backend is not None and backend.name in ("numpy", "pandas"):
                return value.copy(deep=False) if rel in FRAMES else value
        if spec.role == "mapping":
            return shadow._uns_child(rel).materialize()
        return shadow._materialize(rel)

    def streamed(self) -> Any:
        """The element as an export writes it: a value in memory as it is (▲; ``None`` when deleted),
        an array held in memory, else an array as its dask graph (lazy, only a view's part) and anything
        else read as numpy/pandas/dict.
        """
        source, value = self.locate()
        if source is Source.STALE:
            return value._served(self.rel).streamed()
        if source in (Source.ROOT_PART, Source.CHANGED):
            return value
        shadow, rel = self.shadow, self.rel
        if shadow._layout.spec(rel).role != "array":
            return self.plain()
        if source is Source.HELD and shadow._array_backend.name == "numpy":
            return value
        return shadow._graph(rel)

    def persist(self) -> None:
        """Keep the element computed in memory (ᐁ): a lazy backend's graph persisted (locally or on
        the cluster), anything else read as :meth:`shown` keeps it.
        """
        source, _ = self.locate()
        shadow, rel = self.shadow, self.rel
        backend = shadow._backend_for(shadow._layout.spec(rel))
        if source in (Source.FILE, Source.HELD) and backend is not None and backend.lazy:
            shadow._state.hold(rel, convert.persisted(shadow._lazy(rel, backend)), check=False)
        else:
            self.shown()

    def vector(self, key: tuple) -> np.ndarray:
        """One row (``key = (i, slice(None))``) or column (``(slice(None), j)``) of a matrix element as a
        1-d numpy array, reading only what it needs.

        A value in memory (▲, ᐁ, or a view's part of its root's) is indexed as it is. From the file, the
        element's graph selects the one row or column inside its read tasks (for CSC X a gene is one
        contiguous read; for CSR X row blocks are scanned in parallel, in bounded memory).
        """
        source, value = self.locate()
        if source is Source.STALE:
            value = value._served(self.rel).shown()
        elif source is Source.CHANGED and value is None:
            raise MissingElementError(element_message(self.shadow.filename, self.rel, "deleted in memory"))
        if source is Source.FILE:
            vector = to_plain(self._one_line_graph(key).compute())
        else:
            vector = value[key]
            vector = vector.compute() if hasattr(vector, "dask") else vector
        if hasattr(vector, "toarray"):
            vector = vector.toarray()
        return np.asarray(vector).reshape(-1)

    def _one_line_graph(self, key: tuple) -> Any:
        """The graph of the one row or column ``key`` of this shadow's part of the stored element."""
        shadow, rel = self.shadow, self.rel
        spec = shadow._layout.spec(rel)
        selection = selection_for(rel, spec, shadow._view) or (None,) * len(spec.shape)
        axes = [range(n) if s is None else s for s, n in zip(selection, spec.shape, strict=True)]
        axis = 0 if isinstance(key[0], int | np.integer) else 1
        axes[axis] = np.asarray([as_positions(axes[axis])[key[axis]]])
        return spec.select_graph(tuple(axes))


def computed(value: Any) -> Any:
    """A value assigned in memory as numpy/scipy (a dask array computed)."""
    if hasattr(value, "dask"):
        return to_plain(value.compute())
    return value
