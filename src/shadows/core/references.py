"""anndata 0.13's array references (``adata[A.obs["louvain"]]``, ``adata[A.X[:, "CD3E"]]``), which
scanpy's plotting uses: which types they are, and how to resolve one on a shadow.
"""

from __future__ import annotations

import warnings
from typing import Any

import anndata
import pandas as pd

try:  # anndata >= 0.13: ``adata[A.obs["louvain"]]``, ``adata[A.X[:, "CD3E"]]`` (scanpy's plotting uses them)
    from anndata.acc import AdRef, MapAcc, RefAcc

    ARRAY_REFERENCES: tuple[type, ...] = (AdRef, RefAcc, MapAcc)
except ImportError:  # older anndata has no array references; nothing is one
    ARRAY_REFERENCES = ()

def get_by_reference(data: Any, index: Any) -> Any:
    """The array an ``anndata.acc`` reference points at in ``data``, as ``AnnData.__getitem__`` returns it.

    anndata resolves a reference through public attributes only (``data.obs[k].array``,
    ``data[:, "CD3E"].X``, ``data.obsm[k]``), so on a shadow it reads just what that needs. Called for
    an ``index`` that is an instance of :data:`ARRAY_REFERENCES`.
    """
    if isinstance(index, AdRef):
        return index.acc.get(data, index.idx)
    if isinstance(index, RefAcc):
        return index.get(data)
    raise IndexError(f"Cannot index with {index} because this is not a path to an array-like structure.")


def view_x_writes_through() -> bool:
    """Whether ``view.X = value`` writes into the parent's X, as anndata 0.12 does by default
    (``anndata.settings.copy_on_write_X`` off), rather than making the view an actual object (anndata
    0.13's default, and the only behaviour from 0.14 on, where the setting goes).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the setting is deprecated in anndata 0.13
        return not getattr(anndata.settings, "copy_on_write_X", True)


def _vectors_are_pandas_arrays() -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # obs_vector is deprecated in anndata 0.13
        probe = anndata.AnnData(obs=pd.DataFrame({"k": [1.0]}, index=["cell"]))
        return not isinstance(probe.obs_vector("k"), type(pd.Series([1.0]).values))


#: Whether the installed anndata's ``obs_vector`` returns a column's pandas array (anndata >= 0.13, through
#: ``adata[A.obs[k]]``) rather than ``Series.values``; a shadow returns what anndata does.
VECTORS_ARE_PANDAS_ARRAYS = _vectors_are_pandas_arrays()
