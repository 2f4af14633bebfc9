"""``anndata.concat``'s semantics along obs, decided from metadata: the joined var, each source's genes'
positions in it, the obs columns with their unified dtypes, and which arrays the result has with which
dtype and storage.

Rather than re-implementing anndata's rules (var order of the inner and outer joins, dtype unification of
obs columns with categories merged, fill values and dtype promotion of X, which layers and obsm survive,
the ``merge`` and ``uns_merge`` strategies), :func:`plan` asks ``anndata.concat`` itself, on stand-ins
for the sources: AnnDatas of at most one row (none for an empty source) with a source's obs dtypes and
array dtypes and storage, and, when ``merge``/``uns_merge`` are given, its real var names, var and uns
(one stand-in per source). The result's dtypes and names are then exactly anndata's, from metadata only.
Without ``merge``/``uns_merge`` (the common case, and the one that must scale to thousands of sources)
the var join is computed here as anndata computes it, and one stand-in stands for every source of a kind.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anndata
import numpy as np
import pandas as pd
from natsort import natsorted
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
    if merge is None and uns_merge is None:
        return _plan_from_metadata(sources, join, label, keys, index_unique, fill_value)
    standins = [_standin(i, s, None if vars is None else vars[i], None if uns is None else uns[i])
                for i, s in enumerate(sources)]
    result = _concat(standins, join=join, label=label, keys=keys, index_unique=index_unique, merge=merge,
                     uns_merge=uns_merge, fill_value=fill_value)
    var = result.var.copy()
    columns = [_positions(var.index, s.var_names) for s in sources]
    categories = keys if keys is not None else np.arange(len(sources)).astype(str)
    return Plan(var, dict(result.obs.dtypes.items()), sources[0].obs_index_name if sources else None,
                result.obs_names.dtype, pd.Index(categories), label, index_unique, _arrays(result, fill_value),
                dict(result.uns), columns)


def _plan_from_metadata(sources: Sequence[SourceMeta], join: str, label: str | None, keys: Sequence[Any] | None,
                        index_unique: str | None, fill_value: Any) -> Plan:
    """The plan without ``merge``/``uns_merge``, for many sources: the var join computed here as
    ``anndata.concat`` computes it (successive ``Index.union``/``intersection``), and the dtypes by
    anndata.concat on stand-ins whose var only says whether the source lacks joined genes, one stand-in per
    distinct kind of source (same obs dtypes, arrays, emptiness and completeness), ``label`` added as
    anndata adds it.
    """
    joined = _join_names([s.var_names for s in sources], join)
    columns = [_positions(joined, s.var_names) for s in sources]
    kinds: dict[Any, int] = {}
    for i, (source, cols) in enumerate(zip(sources, columns, strict=True)):
        obs_kinds = tuple((k, "unordered categorical" if _unordered(d) else d) for k, d in source.obs_dtypes.items())
        kind = (source.n_obs > 0, bool((cols < 0).any()), obs_kinds,
                tuple(sorted((k, a.sparse, a.dtype, a.shape[1:]) for k, a in source.arrays.items())),
                str(source.obs_index_dtype))
        kinds.setdefault(kind, i)
    standins = []
    for kind, i in kinds.items():
        lacks_genes = kind[1]  # the stand-in lacks a gene the others have exactly when the source does
        standins.append(_standin(i, sources[i], pd.DataFrame(index=["a"] if lacks_genes else ["a", "b"]), None))
    result = _concat(standins, join=join, index_unique=index_unique, fill_value=fill_value)
    obs_dtypes = dict(result.obs.dtypes.items())
    for key, dtype in obs_dtypes.items():
        if _unordered(dtype):  # every source's is: categories merged as anndata merges them (unify_dtypes)
            obs_dtypes[key] = _merged_categories([s.obs_dtypes[key] for s in sources if key in s.obs_dtypes])
    categories = keys if keys is not None else np.arange(len(sources)).astype(str)
    if label is not None:  # anndata.concat: concat_annot[label] = Categorical.from_codes(..., categories=keys)
        obs_dtypes[label] = pd.Categorical.from_codes([], categories=categories).dtype
    var = pd.DataFrame(index=joined, columns=result.var.columns)
    return Plan(var, obs_dtypes, sources[0].obs_index_name if sources else None, result.obs_names.dtype,
                pd.Index(categories), label, index_unique, _arrays(result, fill_value), {}, columns)


def _unordered(dtype: Any) -> bool:
    return isinstance(dtype, pd.CategoricalDtype) and not dtype.ordered


def _merged_categories(dtypes: list[pd.CategoricalDtype]) -> pd.CategoricalDtype:
    """Anndata's merged categories of unordered categoricals: the union of all, natural-sorted."""
    distinct = list({tuple(d.categories): d.categories for d in dtypes}.values())
    if len(distinct) == 1:
        return pd.CategoricalDtype(natsorted(distinct[0]), ordered=False)
    try:  # what successive Index.union give (the sorted union), at once: a thousand unions took 0.6 ms each
        merged: Any = sorted(set().union(*distinct))
    except TypeError:  # values that do not compare: pandas' unions decide their order
        merged = functools.reduce(lambda x, y: x.union(y), distinct)
    return pd.CategoricalDtype(natsorted(merged), ordered=False)


def _join_names(panels: list[pd.Index], join: str) -> pd.Index:
    """anndata.concat's joined var names (``merge_indices``: successive ``Index.union`` or
    ``intersection``), each distinct panel taken once (joining an equal index changes nothing). Past the
    first two distinct panels, what successive unions give (the sorted union; pandas sorts a union of
    unequal indexes) and intersections give (the first panel's genes found in every panel, in its order)
    is computed at once.
    """
    distinct: dict[tuple[Any, ...], pd.Index] = {}
    for panel in panels:
        distinct.setdefault((panel.name, str(panel.dtype), tuple(panel)), panel)
    indexes = list(distinct.values())
    if len(indexes) <= 2:
        joined = indexes[0]
        for other in indexes[1:]:
            joined = joined.intersection(other) if join == "inner" else joined.union(other)
        return joined
    first = indexes[0].intersection(indexes[1]) if join == "inner" else indexes[0].union(indexes[1])
    names = {idx.name for idx in indexes}
    name = names.pop() if len(names) == 1 else None
    if join == "inner":
        keep = np.ones(len(indexes[0]), dtype=bool)
        for other in indexes[1:]:
            keep &= indexes[0].isin(other)
        values = indexes[0][keep]
    else:
        # the sorted distinct names, as np.unique gives them, without sorting every panel's names together
        # (a thousand panels of 2,000 names: 2M strings compared in Python, seconds; a set: milliseconds)
        values = np.array(sorted(set().union(*(idx.to_numpy(dtype=object) for idx in indexes))), dtype=object)
    return pd.Index(values, dtype=first.dtype, name=name)


def _concat(standins: list[anndata.AnnData], **kwargs: Any) -> anndata.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stand-ins' obs names repeat; anndata warns of what is not ours
        return anndata.concat(standins, **kwargs)


def _arrays(result: anndata.AnnData, fill_value: Any) -> dict[str, ArrayPlan]:
    arrays: dict[str, ArrayPlan] = {}
    if result.X is not None:
        arrays["X"] = _array_plan("X", result.X, fill_value, True)
    for key in result.layers:
        if key is None:  # anndata >= 0.13 lists X as layers[None]
            continue
        arrays[f"layers/{key}"] = _array_plan(f"layers/{key}", result.layers[key], fill_value, True)
    for key in result.obsm:  # in an outer join also those some sources lack (filled, as anndata fills them)
        arrays[f"obsm/{key}"] = _array_plan(f"obsm/{key}", result.obsm[key], fill_value, False)
    return arrays


def _positions(joined: pd.Index, names: pd.Index) -> np.ndarray:
    """For each joined gene, its column among ``names`` (-1 where the source did not measure it).

    Looked up in ``joined`` (whose hash table pandas builds once and keeps), not in ``names`` (a table per
    source: a thousand sources' 0.3 s), then inverted. ``names`` holds no name twice (checked when the
    source is read).
    """
    if not joined.is_unique:  # (never from a join: kept for any caller with repeated names)
        return names.get_indexer(joined).astype(np.int64)
    where = joined.get_indexer(names)
    found = where >= 0
    columns = np.full(len(joined), -1, dtype=np.int64)
    columns[where[found]] = np.flatnonzero(found)
    return columns


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
    n_vars = len(var)
    arrays = {rel: _array(info.sparse, np.dtype(info.dtype),
                          (n, *info.shape[1:]) if rel.startswith("obsm/") else (n, n_vars))
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
    if isinstance(dtype, pd.CategoricalDtype):  # a category, not NaN: pandas sets all-NaN parts aside in a concat
        return pd.Categorical.from_codes([0 if len(dtype.categories) else -1] * n, dtype=dtype)
    if isinstance(dtype, np.dtype):
        return np.zeros(n, dtype=dtype) if dtype.kind != "O" else np.array([""] * n, dtype=object)
    return pd.array([None] * n, dtype=dtype)


def _array(fmt: str | None, dtype: np.dtype, shape: tuple[int, ...]) -> Any:
    if fmt is None:
        return np.zeros(shape, dtype=dtype)
    return (sparse.csr_matrix if fmt == "csr" else sparse.csc_matrix)(shape, dtype=dtype)
