"""``anndata.concat``'s semantics along obs, decided from metadata: the joined var, each source's genes'
positions in it, the obs columns with their unified dtypes, and which arrays the result has with which
dtype and storage.

Rather than re-implementing anndata's rules (var order of the inner and outer joins, dtype unification of
obs columns with categories merged, fill values and dtype promotion of X, which layers and obsm survive,
the ``merge`` and ``uns_merge`` strategies), :func:`plan` asks ``anndata.concat`` itself, on stand-ins
for the sources: per source an AnnData of at most one row (none for an empty source) with the source's
var names, obs dtypes and array dtypes and storage, and, when ``merge``/``uns_merge`` are given, its real
var and uns. The result's dtypes and names are then exactly anndata's, from metadata only.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anndata
import numpy as np
import pandas as pd
from scipy import sparse

from shadows.collection.catalog import SourceMeta

_JOINS = ("inner", "outer")


@dataclass(frozen=True)
class ArrayPlan:
    """One array of the result (X, a layer, an obsm entry): its dtype and storage as anndata.concat
    gives them, and the value missing genes are filled with.
    """

    rel: str
    dtype: np.dtype
    sparse: bool
    fill: Any
    n_cols: int
    #: Whether its columns are the joined var (X, layers) or its own (obsm).
    joined_columns: bool


@dataclass(frozen=True)
class Plan:
    """What ``anndata.concat(sources, ...)`` gives, decided from metadata (see :func:`plan`)."""

    var: pd.DataFrame
    obs_dtypes: dict[str, Any]
    obs_index_name: Any
    obs_index_dtype: Any
    keys: pd.Index
    label: str | None
    index_unique: str | None
    arrays: dict[str, ArrayPlan]
    uns: dict[str, Any]
    #: Per source, for each joined gene its column in the source, or -1 (not measured there).
    columns: list[np.ndarray]


def plan(sources: Sequence[SourceMeta], *, join: str = "inner", label: str | None = None,
         keys: Sequence[Any] | None = None, index_unique: str | None = None, merge: Any = None,
         uns_merge: Any = None, fill_value: Any = None, vars: Sequence[pd.DataFrame] | None = None,
         uns: Sequence[Mapping[str, Any]] | None = None) -> Plan:
    """Decide the result of ``anndata.concat`` of ``sources`` along obs with these options.

    ``vars`` and ``uns`` (per source, the real var dataframe and uns) are needed only for ``merge`` and
    ``uns_merge``; without them the stand-ins have var names only and no uns.
    """
    if join not in _JOINS:
        raise ValueError(f"join must be one of {_JOINS}, got {join!r}")
    if keys is not None and len(keys) != len(sources):
        raise ValueError(f"keys has {len(keys)} entries for {len(sources)} sources")
    standins = [_standin(i, s, None if vars is None else vars[i], None if uns is None else uns[i])
                for i, s in enumerate(sources)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stand-ins' obs names repeat; anndata warns of what is not ours
        result = anndata.concat(standins, join=join, label=label, keys=keys, index_unique=index_unique,
                                merge=merge, uns_merge=uns_merge, fill_value=fill_value)
    var = result.var.copy()
    arrays: dict[str, ArrayPlan] = {}
    if result.X is not None:
        arrays["X"] = _array_plan("X", result.X, fill_value, True)
    for key in result.layers:
        if key is None:  # anndata >= 0.13 lists X as layers[None]
            continue
        arrays[f"layers/{key}"] = _array_plan(f"layers/{key}", result.layers[key], fill_value, True)
    for key in result.obsm:  # in an outer join also those some sources lack (filled, as anndata fills them)
        arrays[f"obsm/{key}"] = _array_plan(f"obsm/{key}", result.obsm[key], fill_value, False)
    columns = [_positions(var.index, s.var_names) for s in sources]
    categories = keys if keys is not None else np.arange(len(sources)).astype(str)
    return Plan(var, dict(result.obs.dtypes.items()), sources[0].obs_index_name if sources else None,
                result.obs_names.dtype,
                pd.Index(categories), label, index_unique, arrays, dict(result.uns), columns)


def _positions(joined: pd.Index, names: pd.Index) -> np.ndarray:
    """For each joined gene, its column among ``names`` (-1 where the source did not measure it)."""
    return names.get_indexer(joined).astype(np.int64)


def _array_plan(rel: str, value: Any, fill_value: Any, joined: bool) -> ArrayPlan:
    is_sparse = sparse.issparse(value)
    fill = fill_value if fill_value is not None else (0 if is_sparse else np.nan)
    return ArrayPlan(rel, np.dtype(value.dtype), is_sparse, fill, int(value.shape[1]) if value.ndim > 1 else 0,
                     joined)


def _standin(i: int, source: SourceMeta, var: pd.DataFrame | None, uns: Mapping[str, Any] | None
             ) -> anndata.AnnData:
    """An AnnData of at most one row with ``source``'s names, dtypes and storage (values meaningless)."""
    n = min(source.n_obs, 1)
    index = pd.Index([f"{i}"] * n, dtype=source.obs_index_dtype)
    obs = pd.DataFrame({k: _column(d, n) for k, d in source.obs_dtypes.items()}, index=index)
    if var is None:
        var = pd.DataFrame(index=source.var_names)
    n_vars = len(source.var_names)
    arrays = {rel: _array(info.sparse, np.dtype(info.dtype), (n, *info.shape[1:]))
              for rel, info in source.arrays.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return anndata.AnnData(
            X=arrays.get("X"), obs=obs, var=var, uns=dict(uns or {}),
            layers={k: arrays[f"layers/{k}"] for k in source.slot_keys("layers")},
            obsm={k: arrays[f"obsm/{k}"] for k in source.slot_keys("obsm")},
            shape=None if "X" in arrays else (n, n_vars),
        )


def _column(dtype: Any, n: int) -> Any:
    """``n`` (0 or 1) values of ``dtype``."""
    if isinstance(dtype, pd.CategoricalDtype):
        return pd.Categorical.from_codes([-1] * n, dtype=dtype)
    if isinstance(dtype, np.dtype):
        return np.zeros(n, dtype=dtype) if dtype.kind != "O" else np.array([""] * n, dtype=object)
    return pd.array([None] * n, dtype=dtype)


def _array(fmt: str | None, dtype: np.dtype, shape: tuple[int, ...]) -> Any:
    if fmt is None:
        return np.zeros(shape, dtype=dtype)
    return (sparse.csr_matrix if fmt == "csr" else sparse.csc_matrix)(shape, dtype=dtype)
