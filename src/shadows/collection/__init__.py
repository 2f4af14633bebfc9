"""Many files as one lazy AnnData (DESIGN.md section 7): :func:`concat` and its :class:`Catalog`."""

from shadows.collection.catalog import Catalog
from shadows.collection.shadow import MEASURED_KEY, AtlasShadow, concat
from shadows.collection.sources import SourceChangedError, SourceMissingError, UnreadableSourceError
from shadows.collection.writeback import AtlasWriteError

__all__ = ["MEASURED_KEY", "AtlasShadow", "AtlasWriteError", "Catalog", "SourceChangedError", "SourceMissingError",
           "UnreadableSourceError", "concat"]
