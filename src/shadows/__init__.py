"""shadows: lazy AnnData/MuData over h5ad, h5mu and Zarr files.

Open a file without loading it; every stored element is a dask graph that reads from the file by path.
"""

from shadows.collection import AtlasWriteError, Catalog, SourceChangedError, SourceMissingError, concat
from shadows.core.anndata import AnnDataShadow
from shadows.core.mudata import MuDataShadow
from shadows.errors import (
    BackendUnavailableError,
    ElementExistsError,
    ExternalDataError,
    FileBusyError,
    InvalidElementKeyError,
    InvalidKeyError,
    MalformedElementError,
    MissingElementError,
    NotAnnDataError,
    NotMuDataError,
    PermissionDeniedError,
    ReadOnlyError,
    ShadowsError,
    ShadowsFileNotFoundError,
    ShapeError,
    TooLargeError,
    UnknownBackendError,
    UnknownEncodingError,
    UnknownNameError,
    UnreadableDataError,
    UnsafeTargetError,
    UnwritableValueError,
    WriteFailedError,
)
from shadows.io import read, read_h5ad, read_h5mu, read_zarr
from shadows.settings import settings

__all__ = [
    "AnnDataShadow",
    "AtlasWriteError",
    "BackendUnavailableError",
    "Catalog",
    "ElementExistsError",
    "ExternalDataError",
    "FileBusyError",
    "InvalidElementKeyError",
    "InvalidKeyError",
    "MalformedElementError",
    "MissingElementError",
    "MuDataShadow",
    "NotAnnDataError",
    "NotMuDataError",
    "PermissionDeniedError",
    "ReadOnlyError",
    "ShadowsError",
    "ShadowsFileNotFoundError",
    "ShapeError",
    "SourceChangedError",
    "SourceMissingError",
    "TooLargeError",
    "UnknownBackendError",
    "UnknownEncodingError",
    "UnknownNameError",
    "UnreadableDataError",
    "UnsafeTargetError",
    "UnwritableValueError",
    "WriteFailedError",
    "concat",
    "read",
    "read_h5ad",
    "read_h5mu",
    "read_zarr",
    "settings",
]
__version__ = "0.1.0"
