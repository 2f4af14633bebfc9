"""Read a stored array's values whole or by a selection, whatever the storage (the plain read that element
readers use for small parts: a categorical's codes, a nullable's mask).

Apart from :mod:`shadows.backends.nodes` because it uses the array modules, which use ``nodes``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shadows import progress
from shadows.backends import hdf5_arrays, zarr_arrays
from shadows.backends.nodes import is_hdf5, reading


def read(node: Any, selection: Any = (), decode: bool = True) -> np.ndarray:
    """Read ``node[selection]`` as numpy; strings come back as an object array of ``str``, unless
    ``decode`` is false (fixed-length bytes stay bytes: anndata's ``array`` of dtype ``S``).

    ``selection`` is a basic selection (slices/ints) or an increasing integer array of first-axis
    positions; for HDF5 such an array is read as a few contiguous spans (h5py's point selection is slow).
    What element readers read many times goes through the node's :class:`~shadows.backends.abc.StoredArray`
    (:meth:`~shadows.backends.fileref.FileRef.stored`), which reads the same way.
    """
    read_values = hdf5_arrays.read_values if is_hdf5(node) else zarr_arrays.read_values
    with reading(node):
        values = read_values(node, selection, decode)
    progress.count_read(getattr(values, "nbytes", 0))
    return values
