"""MuDataShadow: a MuData whose modalities and global elements stay in the file until asked for."""

from __future__ import annotations

import os
import warnings
from typing import Any

from shadows import progress as progress_bar
from shadows.core import annotations
from shadows.core.base import ShadowBase
from shadows.core.mudata_elements import MUDATA_SLOTS, Modalities, MuDataElements, relabel_positions
from shadows.errors import BackendUnavailableError, MissingElementError, element_message
from shadows.settings import settings
from shadows.writing.export import export

try:  # mudata is an optional extra: without it only the MuData class identity is missing
    from mudata import MuData as _MuDataBase

    HAS_MUDATA = True
except ImportError:  # pragma: no cover - exercised by installs without the extra

    class _MuDataBase:
        """Stand-in for ``mudata.MuData`` when mudata is not installed."""

    HAS_MUDATA = False

__all__ = ["HAS_MUDATA", "MUDATA_SLOTS", "Modalities", "MuDataShadow", "relabel_positions"]


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

    _ELEMENTS = MuDataElements
    _elements: MuDataElements

    @property
    def mod(self) -> Modalities:
        """The modalities: AnnDataShadow objects (views of them in a view), in ``mod-order``."""
        return self._elements.mod

    @property
    def _mod(self) -> Modalities:
        # mudata's own methods read the modalities from ``_mod``.
        return self._elements.mod

    def __getitem__(self, index: Any) -> Any:
        """``mdata["rna"]``: the modality; an ``anndata.acc`` reference (``mdata[A.obs["x"]]``): the array
        it points at, as mudata >= 0.4 does; any other key: a view (see :meth:`ShadowBase.__getitem__`)
        whose modalities are views selected through ``obsmap``/``varmap``.
        """
        if isinstance(index, str):
            return self.mod[index]
        return super().__getitem__(index)

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

    @property
    def axis(self) -> int:
        """0: modalities share observations; 1: they share variables; -1: both."""
        return self._elements.layout.axis

    @property
    def obsmap(self):
        """Per modality, 1-based positions of the global observations in it (0: absent)."""
        return self._elements.slots["obsmap"]

    @property
    def varmap(self):
        """Per modality, 1-based positions of the global variables in it (0: absent)."""
        return self._elements.slots["varmap"]

    # MuData keeps these AnnData slots as None "for compatibility with calls requiring AnnData slots".
    X = property(lambda self: None, doc="None: a MuData has no X of its own.")
    layers = property(lambda self: None, doc="None: a MuData has no layers of its own.")
    raw = property(lambda self: None, doc="None: a MuData has no raw of its own.")

    def update(self) -> None:
        """Make the global var, then obs, match the modalities again, as ``MuData.update()`` does: after
        a modality was replaced, added or deleted, renamed, or filtered (muon's ``intersect_obs``).

        mudata's own algorithm decides the new global names and obsmap/varmap (it runs on the names
        alone). When the new global rows are some of the current ones, the shadow keeps them in place
        (nothing read; reads pushed down); when new rows appear, the global elements along that axis
        are read and reindexed by mudata (new rows missing: NaN, masked or NA, as mudata fills them)
        and kept in memory (▲). Global columns are the stored ones, as from mudata 0.4 on (no pulling).
        """
        self._elements.update((1, 0))

    def update_obs(self) -> None:
        """:meth:`update` for the global obs only."""
        self._elements.update((0,))

    def update_var(self) -> None:
        """:meth:`update` for the global var only."""
        self._elements.update((1,))

    def _global_vector(self, frame_rel: str, key: str) -> Any:
        if key in annotations.frame_keys(self._elements, frame_rel):
            return annotations.frame_column(self._elements, frame_rel, key)
        holders = [name for name, m in self.mod.items() if key in getattr(m, f"{frame_rel}_keys")()]
        what = f"'{key}' is not a global {frame_rel} column"
        if holders:
            mod = holders[0]
            what += (f"; modality '{mod}' has one: use mdata['{mod}'].{frame_rel}_vector('{key}'), or copy it: "
                     f"mdata.{frame_rel}['{mod}:{key}'] = mdata['{mod}'].{frame_rel}['{key}']")
        raise MissingElementError(element_message(self.filename, frame_rel, what))

    def obs_vector(self, key: str, layer: str | None = None) -> Any:
        """Values of the global obs column ``key``."""
        return self._global_vector("obs", key)

    def var_vector(self, key: str, layer: str | None = None) -> Any:
        """Values of the global var column ``key``."""
        return self._global_vector("var", key)

    def write(self, filename: Any = None, clear_cache: bool = False, overwrite: bool = False, *,
              progress: bool = False, **kwargs: Any) -> MuDataShadow:
        """As :meth:`ShadowBase.write`; a MuData subset in place (by muon's filters or :meth:`update`)
        writes its global elements whole (they are small; ``overwrite=True``): obs, var, obsm, varm,
        obsp, varp, obsmap, varmap. Its modalities write their own changes.
        """
        exporting = isinstance(filename, str | os.PathLike)
        if not exporting:
            self._elements.stage_kept_globals()
        super().write(filename, clear_cache=clear_cache, overwrite=overwrite, progress=progress, **kwargs)
        if not exporting:  # modalities written whole: shadows of the file now
            self._elements.reopen_written_modalities()
        return self

    def to_memory(self, progress: bool = False):
        """A real in-memory ``mudata.MuData`` with every element read (as ``mudata.read_h5mu`` gives it).

        ``progress=True`` (or ``shadows.settings.read_progress``) shows one bar for the whole read,
        modalities included (see :mod:`shadows.progress`).

        The MuData is built as the installed mudata builds it (mudata 0.3 pulls the modalities' columns
        unless the user's ``mudata.set_options(pull_on_update=False)`` says otherwise), with its
        constructor's deprecation warnings silenced: mudata 0.3's about ``pull_on_update``, and pandas 3's
        about ``inplace`` from mudata 0.4 do not concern the user.
        """
        if not HAS_MUDATA:
            raise BackendUnavailableError("to_memory() of a MuData shadow needs the 'mudata' package: "
                                          "pip install mudata")
        import mudata
        import pandas as pd

        elements = self._elements
        with progress_bar.reading_job(elements.to_memory_nbytes, progress or settings.read_progress):
            slots = {slot: elements.slot_values(slot, elements.plain) for slot in elements.SLOTS}
            modalities = {name: modality.to_memory() for name, modality in self.mod.items()}
            obs, var, uns = elements.plain("obs"), elements.plain("var"), self.uns.materialize()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                if hasattr(pd.errors, "Pandas4Warning"):  # pandas >= 3
                    warnings.simplefilter("ignore", pd.errors.Pandas4Warning)
                return mudata.MuData(modalities, obs=obs, var=var, uns=uns, axis=self.axis, **slots)

    def write_h5mu(self, filename: str | os.PathLike, *, progress: bool = False, overwrite: bool = False,
                   **_: Any) -> None:
        """Write this shadow (or view: only its selection) to a new ``.h5mu`` file, out of core."""
        export(self, filename, "hdf5", progress=progress, overwrite=overwrite)
