"""AnnDataShadow: an AnnData whose elements stay in the file until asked for."""

from __future__ import annotations

import os
from typing import Any

import anndata

from shadows import progress as progress_bar
from shadows.core import annotations
from shadows.core.aligned import ElementMapping
from shadows.core.anndata_elements import AnnDataElements
from shadows.core.base import ShadowBase
from shadows.core.committing import READ_ONLY_MESSAGE
from shadows.core.element import computed
from shadows.core.raw import PendingRaw, RawShadow
from shadows.core.references import ARRAY_REFERENCES, get_by_reference
from shadows.elements.sparse_chunk import to_plain
from shadows.errors import MissingElementError, element_message
from shadows.settings import settings
from shadows.writing.export import export

__all__ = ["ARRAY_REFERENCES", "READ_ONLY_MESSAGE", "AnnDataShadow", "get_by_reference"]


class AnnDataShadow(ShadowBase, anndata.AnnData):
    """An AnnData backed by a file that reads only what is asked for.

    Opening reads metadata only. Each stored element is a dask graph reading from the file by path;
    with the default backends an element is computed on first access and kept in memory (ᐁ in the
    repr) until :meth:`clear_cache`.

    Parameters
    ----------
    filepath
        An ``.h5ad`` file, an AnnData Zarr store (format 2 or 3), or one modality of a MuData file as
        ``file.h5mu/mod/<name>``.
    array_backend
        ``"numpy"`` (numpy and scipy.sparse, as AnnData), ``"dask"`` (the graphs), ``"jax"``,
        ``"torch"``, ``"cupy"`` or ``"sparse"`` (pydata).
    table_backend
        ``"pandas"``, ``"dask"``, ``"polars"`` or ``"pyarrow"``.
    mode
        ``"r"`` (default) or ``"r+"``.
    format
        ``"hdf5"``/``"h5"`` or ``"zarr"``; inferred from the path when omitted.
    storage_options
        fsspec's options for a URL (credentials, endpoint); never printed.
    allow_external
        ``False`` (default) refuses, with :class:`~shadows.errors.ExternalDataError`, elements whose bytes
        lie outside the file: HDF5 external links, external storage, virtual datasets with sources
        elsewhere, symbolic links out of a Zarr store. ``True`` follows them, as anndata does.
    """

    _ELEMENTS = AnnDataElements
    _elements: AnnDataElements

    @property
    def X(self) -> Any:
        """The main matrix (``None`` when there is none); assigning keeps the new one in memory (X▲)."""
        elements = self._elements
        return elements.element("X").value() if elements.has("X") else None

    @X.setter
    def X(self, value: Any) -> None:
        if self._elements.is_view and value is not None:
            self._elements.set_view_x(value)
            return
        self._elements.element("X").set(value, self.shape)

    @X.deleter
    def X(self) -> None:
        self._elements.element("X").delete()

    def _has_X(self) -> bool:
        """Whether there is an X (anndata asks views this way)."""
        return self._elements.has("X")

    @property
    def layers(self) -> ElementMapping:
        """Layers: matrices shaped like X."""
        return self._elements.slots["layers"]

    @layers.setter
    def layers(self, values: Any) -> None:
        self._elements.slots["layers"].replace_all(values)

    @layers.deleter
    def layers(self) -> None:
        self._elements.slots["layers"].replace_all({})  # as AnnData: no layers

    @property
    def raw(self) -> RawShadow | PendingRaw | anndata.Raw | None:
        """The raw slot (``None`` when there is none); assigning (``adata.raw = adata``) keeps an
        ``anndata.Raw`` in memory (raw▲), ``del adata.raw`` deletes it, both until ``write()``.
        """
        return self._elements.raw()

    @raw.setter
    def raw(self, value: anndata.AnnData | None) -> None:
        self._elements.set_raw(value)

    @raw.deleter
    def raw(self) -> None:
        self._elements.delete_raw()

    def obs_vector(self, k: str, *, layer: str | None = None) -> Any:
        """Values of obs column ``k``, or of variable ``k`` across observations (from X or ``layer``)."""
        if k in self.obs_keys():
            return annotations.frame_column(self._elements, "obs", k)
        names = self.var_names
        if k not in names:
            raise MissingElementError(element_message(self.filename, "obs", f"'{k}' is neither an obs column "
                                                      "nor a var name"))
        rel = "X" if layer is None else f"layers/{layer}"
        return self._elements.element(rel).vector((slice(None), names.get_loc(k)))

    def var_vector(self, k: str, *, layer: str | None = None) -> Any:
        """Values of var column ``k``, or of observation ``k`` across variables."""
        if k in self.var_keys():
            return annotations.frame_column(self._elements, "var", k)
        names = self.obs_names
        if k not in names:
            raise MissingElementError(element_message(self.filename, "var", f"'{k}' is neither a var column "
                                                      "nor an obs name"))
        rel = "X" if layer is None else f"layers/{layer}"
        return self._elements.element(rel).vector((names.get_loc(k), slice(None)))

    def element_value(self, path: str) -> Any:
        """As :meth:`ShadowBase.element_value`; also raw's ``"raw/X"``, ``"raw/var"`` and ``"raw/varm"`` (a
        dict), from a raw assigned in memory (raw▲) where there is one.
        """
        if not path.startswith("raw/"):
            return super().element_value(path)
        return self._elements.raw_value(path[4:])

    def to_memory(self, progress: bool = False) -> anndata.AnnData:
        """A real in-memory AnnData with every element read (equal to anndata's own read).

        ``progress=True`` (or ``shadows.settings.read_progress``) shows one bar for the whole read,
        labelled with the element being read and counting bytes (see :mod:`shadows.progress`).
        """
        elements = self._elements
        with progress_bar.reading_job(elements.to_memory_nbytes, progress or settings.read_progress):
            plain = {slot: elements.slot_values(slot, elements.plain) for slot in elements.SLOTS}
            adata = anndata.AnnData(X=to_plain(elements.plain("X")) if elements.has("X") else None,
                                    obs=elements.plain("obs"), var=elements.plain("var"),
                                    uns=self.uns.materialize(), **plain)
            raw = self.raw
            if isinstance(raw, anndata.Raw):
                adata.raw = anndata.AnnData(X=computed(raw.X), var=raw.var.copy(), varm=dict(raw.varm))
            elif raw is not None:
                adata.raw = raw.to_adata()
            return adata

    def transpose(self) -> anndata.AnnData:
        """Observations and variables swapped, as an AnnData (as anndata's ``transpose``; ignores raw).

        The values are the shadow's: read (default backend) or its dask graphs (``array_backend="dask"``,
        still lazy). Like anndata, a view must be copied first.
        """
        if self.is_view:
            raise ValueError("You're trying to transpose a view of an `AnnData` (a shadow's view), which is not "
                             "implemented. Call `.copy()` before transposing.")
        x = self.X
        return anndata.AnnData(
            X=None if x is None else x.T,
            layers={k: self.layers[k].T for k in self.layers.own_keys()},
            obs=self._elements.plain("var"),
            var=self._elements.plain("obs"),
            uns=self.uns.materialize(),
            obsm=dict(self.varm),
            varm=dict(self.obsm),
            obsp=dict(self.varp),
            varp=dict(self.obsp),
        )

    @property
    def T(self) -> anndata.AnnData:
        """:meth:`transpose`."""
        return self.transpose()

    def write_h5ad(self, filename: str | os.PathLike, *, progress: bool = False, overwrite: bool = False,
                   **_: Any) -> None:
        """Write this shadow (or view: only its selection) to a new ``.h5ad`` file, out of core.

        Matrices stream from the file block by block; ``progress=True`` shows one bar for the whole
        export (blocks written, and the element being written). An
        existing file is replaced only with ``overwrite=True``; the shadow's own file never is.
        anndata's compression options are not supported and ignored.
        """
        export(self, filename, "hdf5", progress=progress, overwrite=overwrite)
