"""What ``array_backend="dask"`` and ``table_backend="dask"`` give per element, tried with scanpy.

The decision (README, backends paragraph): X, layers, obsm, varm, obsp and varp are dask graphs; ``uns`` is
what anndata holds in memory (numpy arrays, python values: anndata's ``read_lazy`` keeps it so too), with
every backend; ``raw.X`` is what the in-memory AnnData holds (scipy or numpy), since scanpy's wilcoxon
test, ``get.obs_df(use_raw=True)`` and its plots read raw genes as such; the categorical columns of
dask dataframes know their categories. scanpy on a dask shadow of pbmc68k_reduced (with
``rank_genes_groups`` and colors in uns) is compared with scanpy on an in-memory AnnData holding the
same dask arrays.
"""

from __future__ import annotations

import warnings

import anndata as ad
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import shadows

sc = pytest.importorskip("scanpy")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")

GENES = ["CD3E", "NKG7", "LYZ"]
DASK_SLOTS = ("obsm", "varm", "obsp", "varp", "layers")


@pytest.fixture(autouse=True)
def _quiet_and_closed():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    plt.close("all")


@pytest.fixture(scope="module", params=["h5ad", "zarr"])
def pbmc(request, tmp_path_factory) -> str:
    """pbmc68k_reduced with rank_genes_groups (string record arrays) and *_colors in uns, and a raw."""
    adata = sc.datasets.pbmc68k_reduced()
    sc.tl.rank_genes_groups(adata, "louvain")
    sc.pl.umap(adata, color=["louvain", "bulk_labels"], show=False)
    plt.close("all")
    assert adata.raw is not None and "louvain_colors" in adata.uns
    path = tmp_path_factory.mktemp("dask_backend") / f"pbmc.{request.param}"
    (adata.write_h5ad if request.param == "h5ad" else adata.write_zarr)(path)
    return str(path)


def read(path: str, **backends: str) -> ad.AnnData:
    """A shadow of ``path`` with ``backends`` (the file's format from its suffix)."""
    return (shadows.read_h5ad if path.endswith(".h5ad") else shadows.read_zarr)(path, **backends)


def oracle(path: str) -> ad.AnnData:
    """anndata's in-memory read of ``path``."""
    return (ad.read_h5ad if path.endswith(".h5ad") else ad.read_zarr)(path)


def with_dask_arrays(adata: ad.AnnData) -> ad.AnnData:
    """``adata`` holding what the dask shadow holds: dask X, layers, obsm, varm, obsp, varp (uns, raw as read)."""
    adata.X = da.from_array(adata.X, chunks=(200, -1))
    for slot in DASK_SLOTS:
        mapping = getattr(adata, slot)
        for key in list(mapping):
            if key is not None:  # anndata 0.13 lists X as layers[None]
                mapping[key] = da.from_array(mapping[key])
    return adata


def assert_plain(value, where: str) -> None:
    """``value`` holds no dask array at any depth."""
    assert not hasattr(value, "dask"), where
    if isinstance(value, dict):
        for key, item in value.items():
            assert_plain(item, f"{where}/{key}")


def assert_same(got, expected, where: str) -> None:
    if isinstance(expected, dict):
        assert set(got) == set(expected), where
        for key in expected:
            assert_same(got[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected, obj=where)
    elif isinstance(expected, np.ndarray):
        assert type(got) is np.ndarray and got.dtype == expected.dtype, where
        np.testing.assert_array_equal(got, expected, err_msg=where)
    else:
        assert got == expected, where


@pytest.mark.parametrize("backend", ["dask", "xarray", "numpy"])
def test_uns_is_what_anndata_holds_with_every_array_backend(pbmc, backend):
    pytest.importorskip("xarray") if backend == "xarray" else None
    shadow, expected = read(pbmc, array_backend=backend), oracle(pbmc)
    colors = shadow.uns["louvain_colors"]
    assert_plain(colors, "uns/louvain_colors")
    assert {color: 1 for color in colors}  # hashable values: scanpy maps categories to them
    names = shadow.uns["rank_genes_groups"]["names"]  # a record array of strings: dask could not chunk it
    assert names.dtype.names and isinstance(names[0][0], str)
    for key in expected.uns:
        value = shadow.uns[key]
        assert_same(value.materialize() if isinstance(value, shadows.core.aligned.UnsMapping) else value,
                    expected.uns[key], f"uns/{key}")
    assert "louvain_colorsᐁ" in repr(shadow.uns)  # held in memory
    assert_same(read(pbmc, array_backend=backend)[shadow.obs["louvain"] == "3"].uns["louvain_colors"],
                expected[expected.obs["louvain"] == "3"].uns["louvain_colors"], "view's uns/louvain_colors")


def test_matrices_stay_dask_graphs_and_raw_x_is_what_anndata_holds(pbmc):
    shadow, expected = read(pbmc, array_backend="dask"), oracle(pbmc)
    assert isinstance(shadow.X, da.Array)
    assert all(isinstance(shadow.obsm[k], da.Array) for k in shadow.obsm)
    assert all(isinstance(shadow.obsp[k], da.Array) for k in shadow.obsp)
    raw = shadow.raw.X
    assert type(raw) is type(expected.raw.X)
    assert (raw != expected.raw.X).nnz == 0 if sp.issparse(raw) else np.array_equal(raw, expected.raw.X)
    assert shadow.raw.X is raw  # read once, held (ᐁ) until clear_cache()
    assert isinstance(shadow.element_value("raw/X"), da.Array)  # what exports stream from stays a graph
    shadow.clear_cache()
    cells = np.flatnonzero(expected.obs["louvain"] == "3")
    view_raw = read(pbmc, array_backend="dask")[cells].raw.X
    np.testing.assert_array_equal(_dense(view_raw), _dense(expected.raw.X[cells]))


def _dense(value) -> np.ndarray:
    return value.toarray() if sp.issparse(value) else np.asarray(value)


def test_dask_dataframes_know_the_stored_categories(pbmc):
    expected = oracle(pbmc)
    for shadow, rows in ((read(pbmc, table_backend="dask"), slice(None)),
                         (read(pbmc, table_backend="dask")[10:50], slice(10, 50))):
        obs = shadow.obs
        computed = obs.compute()
        for key in ("louvain", "bulk_labels", "phase"):
            assert obs[key].cat.known, key
            assert obs[key].dtype == expected.obs[key].dtype == computed[key].dtype, key  # every stored category
            assert list(computed[key]) == list(expected.obs[key].iloc[rows]), key
        assert list(obs["louvain"].cat.categories) == list(expected.obs["louvain"].cat.categories)
        assert (obs["louvain"] == "3").sum().compute() == (expected.obs["louvain"].iloc[rows] == "3").sum()


def _scanpy_calls():
    return {
        "umap": lambda a: _drawn(sc.pl.umap(a, color="louvain", show=False)),
        "umap_gene": lambda a: _drawn(sc.pl.umap(a, color="CD3E", show=False)),
        "wilcoxon": lambda a: _ranked(a, "wilcoxon"),
        "t-test": lambda a: _ranked(a, "t-test"),
        "obs_df": lambda a: sc.get.obs_df(a, keys=[*GENES, "louvain"], use_raw=True),
        "dotplot": lambda a: sc.pl.dotplot(a, GENES, "louvain", return_fig=True).dot_color_df,
        "violin": lambda a: [d[:, 1] for d in _drawn(sc.pl.violin(a, GENES[:1], "louvain", show=False))[::2]],
    }


def _drawn(ax) -> list[np.ndarray]:
    """What an axes drew: the offsets and colors of its collections (a violin's points: their values, the
    horizontal jitter being random).
    """
    out = []
    for collection in ax.collections:
        out += [np.asarray(collection.get_offsets()), np.asarray(collection.get_facecolors())]
    return out


def _ranked(adata: ad.AnnData, method: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    sc.tl.rank_genes_groups(adata, "louvain", method=method, key_added="ranked")
    return pd.DataFrame(adata.uns["ranked"]["names"]), pd.DataFrame(adata.uns["ranked"]["scores"])


def _outcome(call, adata: ad.AnnData):
    try:
        return "ok", call(adata)
    except Exception as error:  # the failure is what is compared
        return "failed", type(error)


@pytest.mark.parametrize("name", list(_scanpy_calls()))
def test_scanpy_on_a_dask_shadow_as_on_anndata_holding_dask_arrays(pbmc, name):
    """Each call ends as on the in-memory AnnData holding the shadow's dask arrays, with the same result.

    Everything works but the embedding plots: scanpy's embedding indexes ``obsm`` with a tuple, which dask
    arrays refuse on both (see test_embedding_plots_draw_with_the_embedding_in_memory).
    """
    call = _scanpy_calls()[name]
    got, expected = _outcome(call, read(pbmc, array_backend="dask")), _outcome(call, with_dask_arrays(oracle(pbmc)))
    assert got[0] == expected[0], (got, expected)
    if name not in ("umap", "umap_gene"):
        assert got[0] == "ok", got
    if got[0] == "failed":
        assert got[1] is expected[1]
        return
    _assert_results_equal(got[1], expected[1], name)


def _assert_results_equal(got, expected, name: str) -> None:
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected, obj=name)
    elif isinstance(expected, tuple | list):
        assert len(got) == len(expected), name
        for one, other in zip(got, expected, strict=True):
            _assert_results_equal(one, other, name)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=name)


def test_embedding_plots_draw_with_the_embedding_in_memory(pbmc):
    """As scanpy's dask tutorial does: the embedding computed into memory, then plotted (colors from uns)."""
    drawn = []
    for adata in (read(pbmc, array_backend="dask"), with_dask_arrays(oracle(pbmc))):
        adata.obsm["X_umap"] = adata.obsm["X_umap"].compute()
        drawn.append(_drawn(sc.pl.umap(adata, color="louvain", show=False)))
        assert adata.uns["louvain_colors"].tolist() == oracle(pbmc).uns["louvain_colors"].tolist()
    _assert_results_equal(drawn[0], drawn[1], "umap")
