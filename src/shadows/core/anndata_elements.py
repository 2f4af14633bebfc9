"""The elements of an AnnData shadow: what AnnData's views change besides slicing (unused categories
dropped, ``uns["<column>_colors"]`` subset to match), raw, and ``view.X = value`` writing through.
"""

from __future__ import annotations

import warnings
from typing import Any

import anndata
import numpy as np
from anndata import ImplicitModificationWarning
from scipy import sparse

from shadows.core import view_categories
from shadows.core.elements import ShadowElements
from shadows.core.layout import AnnDataLayout
from shadows.core.raw import PendingRaw, RawShadow
from shadows.core.references import view_x_writes_through
from shadows.core.state import NOTHING
from shadows.errors import ShapeError, element_message
from shadows.indexing.keys import as_positions, as_slice_or_array
from shadows.schema import SLOT_AXES, element_axes
from shadows.writing import DELETED


class AnnDataElements(ShadowElements):
    """:class:`~shadows.core.elements.ShadowElements` of an AnnData: X, layers, obsm, varm, obsp, varp,
    uns and raw.
    """

    LAYOUT = AnnDataLayout
    SLOTS = tuple(SLOT_AXES)
    KIND = "AnnData"

    # -- what AnnData's views change besides slicing -------------------------------------------

    def visible_uns_keys(self) -> list[str]:
        """The uns keys this shadow shows: a view hides ``<column>_colors`` that no longer match."""
        keys = self.layout.mapping_keys("uns")
        if self.view is not None:
            hidden = view_categories.hidden_color_keys(self.layout)
            keys = [k for k in keys if k not in hidden]
        return keys

    def view_value(self, rel: str, spec: Any, value: Any) -> Any:
        """AnnData's views drop unused categories and subset ``uns["<column>_colors"]`` to match."""
        if not view_categories.enabled():
            return value
        if spec.role == "table" and element_axes(rel):  # obs, var and dataframes in obsm/varm
            return view_categories.drop_unused(value)
        if rel.startswith("uns/"):
            return view_categories.subset_colors(rel[4:], value, self.layout, self.view_column)
        return value

    def view_column(self, frame_rel: str, key: str) -> Any:
        """One obs/var column of this view, with unused categories dropped as AnnData's views do."""
        values = super().view_column(frame_rel, key)
        return view_categories.drop_unused_values(values) if self.view is not None else values

    def select_staged(self, rel: str, value: Any) -> Any:
        """A raw assigned in the root, as a view sees it: the view's observations of it."""
        if isinstance(value, anndata.Raw):
            rows = as_positions(self.local[0])
            return anndata.Raw(self.shadow, X=value.X[rows], var=value.var.copy(), varm=dict(value.varm))
        return super().select_staged(rel, value)

    # -- raw -------------------------------------------------------------------------------------

    def raw(self) -> RawShadow | PendingRaw | anndata.Raw | None:
        """The raw slot: stored (:class:`~shadows.core.raw.RawShadow`), assigned in memory (an
        ``anndata.Raw``), the raw of before a private axis change, or ``None``.
        """
        if self.is_stale("raw"):
            return PendingRaw(self, self.before.raw())
        changed = self.changed_value("raw")
        if changed is not NOTHING:
            return None if changed is DELETED else changed
        if not self.layout.has_raw:
            return None
        if self.raw_slot is None:
            self.raw_slot = RawShadow(self)
        return self.raw_slot

    def has_raw(self) -> bool:
        return self.raw() is not None

    def set_raw(self, value: anndata.AnnData | None) -> None:
        """``adata.raw = value``: an ``anndata.Raw`` kept in memory (raw▲); ``None`` deletes it."""
        if value is None:
            self.delete_raw()
            return
        if not isinstance(value, anndata.AnnData):
            raise ValueError("Can only init raw attribute with an AnnData object.")
        # anndata's Raw shares value.X (as AnnData's setter does); var is copied so that the raw's var
        # is a plain frame, not one that stages columns into this shadow's var. Made (and so checked)
        # before a view becomes a shadow of its own: a refused raw leaves the view a view.
        raw = anndata.Raw(self.shadow, X=value.X, var=value.var.copy(), varm=dict(value.varm))
        self.change("raw", raw)

    def delete_raw(self) -> None:
        """``del adata.raw`` (raw▲ deleted; ``write(overwrite=True)`` removes the stored one)."""
        self.detach()
        self.state.remove("raw", stored=self.layout.has_raw)

    def set_raw_matrix(self, X: Any, source: Any) -> None:
        """``adata.raw._X = X`` after a private axis change: raw becomes ``X`` with the variables of
        ``source`` (the raw of before), in memory (raw▲).
        """
        n_obs = self.axis_length(0)
        if getattr(X, "shape", (None,))[0] != n_obs:
            raise ShapeError(f"{self.filename}: raw.X: expected {n_obs} rows, got {getattr(X, 'shape', None)}")
        self.state.change("raw", anndata.Raw(self.shadow, X=X, var=source.var.copy(), varm=dict(source.varm)))

    def raw_value(self, part: str) -> Any:
        """``element_value("raw/<part>")``: raw's ``X``, ``var`` or ``varm`` (a dict) as an export writes
        it, from a raw assigned in memory (raw▲) where there is one.
        """
        raw = self.raw()
        if isinstance(raw, anndata.Raw):  # assigned in memory
            return {"X": raw.X, "var": raw.var, "varm": dict(raw.varm)}[part]
        if part == "varm":
            return {k: self.plain(f"raw/varm/{k}") for k in raw.varm}
        return self.element(f"raw/{part}").export_value()

    # -- X ---------------------------------------------------------------------------------------

    def set_view_x(self, value: Any) -> None:
        """``view.X = value`` as the installed anndata does it: anndata 0.12 (``copy_on_write_X`` off)
        writes the values into the parent's X at the view's rows and columns (with its warnings), the
        view staying a view; from anndata 0.13 on the view becomes an independent shadow holding
        ``value`` (▲). A scalar fills the view's shape, a vector of the right length is reshaped.
        """
        shape = self.shape
        if np.isscalar(value):
            if not view_x_writes_through():
                value = np.full(shape, value)
        elif getattr(value, "shape", None) != shape:
            size = int(np.prod(getattr(value, "shape", (len(value),))))
            if 1 not in shape or size != max(shape):
                raise ShapeError(element_message(self.filename, "X", f"expected shape {shape}, got "
                                                 f"{getattr(value, 'shape', None)}"))
            value = value.reshape(shape)
        if view_x_writes_through():
            warnings.warn("Setting element `.X` of view of `AnnData` object will obey copy-on-write semantics in "
                          "the next minor release.", FutureWarning, stacklevel=3)
        else:
            warnings.warn("Setting element `.X` of view, initializing view as actual.", ImplicitModificationWarning,
                          stacklevel=3)
            self.set_whole("X", value, shape)
            return
        root = self.root
        parent = root.shadow.X
        if sparse.issparse(parent) and isinstance(value, np.ndarray):
            value = (sparse.coo_array if isinstance(parent, sparse.sparray) else sparse.coo_matrix)(value)
        elif sparse.issparse(value) and isinstance(parent, np.ndarray):
            warnings.warn("Trying to set a dense array with a sparse array on a view. Densifying the sparse "
                          "array. This may incur excessive memory usage", UserWarning, stacklevel=3)
            value = value.toarray()
        warnings.warn("Modifying `X` on a view results in data being overridden", ImplicitModificationWarning,
                      stacklevel=3)
        rows, columns = (as_slice_or_array(index) for index in self.local)
        if isinstance(rows, np.ndarray) and isinstance(columns, np.ndarray):
            rows, columns = np.ix_(rows, columns)
        parent[rows, columns] = value  # the root's X in memory, changed in place: its change (X▲)
        root.state.change("X", parent)

    def to_memory_nbytes(self) -> int:
        """Bytes ``to_memory()`` reads (about; see :meth:`read_nbytes`)."""
        raw = [rel for rel in ("raw/X", "raw/var") if self.layout.has(rel)]
        if self.layout.has("raw/varm"):
            raw += [f"raw/varm/{k}" for k in self.layout.mapping_keys("raw/varm")]
        return self.read_nbytes([*self.stored_element_paths(), "uns", *raw])
