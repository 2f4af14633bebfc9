"""shadows: lazy AnnData/MuData over h5ad, h5mu and Zarr files.

Open a file without loading it; every stored element is a dask graph that reads from the file by path.
"""

from shadows.core.anndata import AnnDataShadow
from shadows.core.mudata import MuDataShadow
from shadows.errors import (
    BackendUnavailableError,
    ElementExistsError,
    FileBusyError,
    InvalidKeyError,
    MalformedElementError,
    MissingElementError,
    NotAnnDataError,
    NotMuDataError,
    ReadOnlyError,
    ShadowsError,
    ShadowsFileNotFoundError,
    UnknownBackendError,
    UnknownEncodingError,
    UnknownNameError,
    UnreadableDataError,
    WriteFailedError,
)

__all__ = [
    "AnnDataShadow",
    "BackendUnavailableError",
    "ElementExistsError",
    "FileBusyError",
    "InvalidKeyError",
    "MalformedElementError",
    "MissingElementError",
    "MuDataShadow",
    "NotAnnDataError",
    "NotMuDataError",
    "ReadOnlyError",
    "ShadowsError",
    "ShadowsFileNotFoundError",
    "UnknownBackendError",
    "UnknownEncodingError",
    "UnknownNameError",
    "UnreadableDataError",
    "WriteFailedError",
]
__version__ = "0.1.0"
