"""What scanpy's own test suite found on shadows, side by side with anndata: an array changed in place is
seen by every later copy, view, vector, export and write (never the file's value); every deleter AnnData
has; vectors of values assigned in memory; ``view.X = value`` as the installed anndata does it.

Each test runs the same calls on an in-memory AnnData (the oracle), a shadow and a view of a shadow.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from helpers import assert_value_equal, file_digest
from shadows import AnnDataShadow, ShadowsError
from shadows.core.references import view_x_writes_through
from test_mutation import KINDS, assert_same_state, make_counts, subject_and_oracle


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The counts of test_mutation (CSR X), and the same with a dense X, a CSR layer and an obsm."""
    root = tmp_path_factory.mktemp("drop_in")
    adata = make_counts()
    adata.write_h5ad(root / "counts.h5ad")
    adata.X = adata.X.toarray()
    adata.layers["counts"] = sp.csr_matrix(adata.X)
    adata.obsm["X_emb"] = np.arange(adata.n_obs * 3, dtype=np.float64).reshape(-1, 3)
    adata.write_h5ad(root / "dense.h5ad")
    return {"counts": root / "counts.h5ad", "dense": root / "dense.h5ad"}


@pytest.fixture
def counts(files, tmp_path) -> Path:
    path = tmp_path / "counts.h5ad"
    path.write_bytes(files["counts"].read_bytes())
    return path


@pytest.fixture
def dense(files, tmp_path) -> Path:
    """A dense X (``X[0, 0] = v`` on CSR changes its structure: the layer is that case), this test's own."""
    path = tmp_path / "dense.h5ad"
    path.write_bytes(files["dense"].read_bytes())
    return path


def _dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.array(x)


def _actual(adata: ad.AnnData) -> ad.AnnData:
    return adata.copy() if adata.is_view and not isinstance(adata, AnnDataShadow) else adata


# -- an array changed in place ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["shadow", "view"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_an_array_changed_in_place_is_seen_by_copies_views_vectors_and_exports(dense, kind, sparse, tmp_path):
    subject, oracle = subject_and_oracle(kind, dense)
    subject, oracle = _actual(subject), _actual(oracle)
    rel = "layers/counts" if sparse else "X"
    for adata in (subject, oracle):
        array = adata.layers["counts"] if sparse else adata.X
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sp.SparseEfficiencyWarning)
            array[0, 0] = 0.5  # into the array the shadow handed out
            array[3, 2] = -7.0
    before = file_digest(dense)

    def value(adata: ad.AnnData) -> np.ndarray:
        array = adata.layers["counts"] if sparse else adata.X
        return array.toarray() if sp.issparse(array) else np.asarray(array)

    assert_value_equal(value(subject.copy()), value(oracle.copy()), f"copy().{rel}")
    assert_value_equal(value(subject[:5]), value(oracle[:5]), f"[:5].{rel}")
    assert_value_equal(value(subject[[3, 0]][:, :4]), value(oracle[[3, 0]][:, :4]), f"view of a view: {rel}")
    assert_value_equal(value(subject.to_memory()), value(oracle), f"to_memory().{rel}")
    layer = "counts" if sparse else None
    gene = oracle.var_names[0]
    np.testing.assert_array_equal(subject.obs_vector(gene, layer=layer), oracle.obs_vector(gene, layer=layer))
    np.testing.assert_array_equal(subject[:5].obs_vector(gene, layer=layer), oracle[:5].obs_vector(gene, layer=layer))
    subject.write_h5ad(tmp_path / "exported.h5ad")
    subject[:5].write_h5ad(tmp_path / "exported_view.h5ad")
    assert_value_equal(value(ad.read_h5ad(tmp_path / "exported.h5ad")), value(oracle), f"export: {rel}")
    assert_value_equal(value(ad.read_h5ad(tmp_path / "exported_view.h5ad")), value(oracle[:5]), "export of a view")
    subject.clear_cache()  # an array changed in place is a change: never reverted to the file's values
    assert_value_equal(value(subject), value(oracle), f"{rel} after clear_cache()")
    assert file_digest(dense) == before  # changes live in memory


def test_an_array_changed_in_place_is_written_by_write(dense):
    shadow = AnnDataShadow(dense, mode="r+")
    shadow.X[0, 0] = 0.5
    assert "X▲" not in repr(shadow)  # not known until asked: the checksum is taken when values leave memory
    shadow.write(overwrite=True)
    assert ad.read_h5ad(dense).X[0, 0] == 0.5
    assert shadow.X[0, 0] == 0.5


def test_a_view_sees_its_roots_change_made_after_it_read(dense):
    oracle = ad.read_h5ad(dense)
    shadow = AnnDataShadow(dense)
    x = shadow.X
    views = (shadow[:5], oracle[:5])
    for view in views:
        _ = view.X  # read before the change
    x[1, 1] = 42.0
    oracle.X[1, 1] = 42.0
    assert views[0].X[1, 1] == views[1].X[1, 1] == 42.0


def test_a_views_own_array_changed_in_place_makes_it_actual_as_in_anndata(dense):
    oracle = ad.read_h5ad(dense)
    shadow = AnnDataShadow(dense)
    _ = shadow.X  # the root holds X: the view takes its part of it
    results = []
    for adata in (shadow, oracle):
        view = adata[:5]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ad.ImplicitModificationWarning)
            view.X[1, 1] = 7.0
        results.append((view.X[1, 1], view.is_view, adata.X[1, 1]))
    assert results[0] == results[1]
    assert results[0][0] == 7.0


# -- deleters ------------------------------------------------------------------------------------------


SLOTS = ["obs", "var", "uns", "obsm", "varm", "obsp", "varp", "layers", "raw", "X"]


@pytest.fixture
def annotated(dense, tmp_path) -> Path:
    adata = ad.read_h5ad(dense)
    adata.uns["note"] = {"a": 1}
    adata.varm["PCs"] = np.ones((adata.n_vars, 2))
    adata.obsp["distances"] = sp.identity(adata.n_obs, format="csr")
    adata.varp["corr"] = np.eye(adata.n_vars)
    adata.raw = adata
    path = tmp_path / "annotated.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("slot", SLOTS)
def test_every_deleter_anndata_has(annotated, kind, slot):
    subject, oracle = subject_and_oracle(kind, annotated)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata warns when a view becomes actual
        delattr(subject, slot)
        delattr(oracle, slot)
    assert subject.is_view == oracle.is_view
    oracle = _actual(oracle)
    assert_same_state(subject, oracle)
    assert sorted(subject.uns) == sorted(oracle.uns)
    for mapping in ("obsm", "varm", "obsp", "varp"):
        assert sorted(getattr(subject, mapping)) == sorted(getattr(oracle, mapping)), mapping
    assert (subject.raw is None) == (oracle.raw is None)


def test_deleted_slots_are_written_and_read_back_by_anndata(annotated):
    shadow = AnnDataShadow(annotated, mode="r+")
    del shadow.var, shadow.obsm, shadow.uns, shadow.raw
    shadow.write(overwrite=True)
    back = ad.read_h5ad(annotated)
    assert list(back.var.columns) == [] and list(back.obsm) == [] and dict(back.uns) == {} and back.raw is None
    assert list(back.var_names) == list(shadow.var_names)


def test_pearson_residuals_hvg_as_anndata(counts):
    """scanpy's ``highly_variable_genes(flavor="pearson_residuals")`` deletes var on a copy."""
    sc = pytest.importorskip("scanpy")
    results = []
    for kind in ("memory", "shadow"):
        subject, _ = subject_and_oracle(kind, counts)
        sc.experimental.pp.highly_variable_genes(subject, flavor="pearson_residuals", n_top_genes=20)
        results.append(subject.var["highly_variable"].to_numpy())
    np.testing.assert_array_equal(*results)


# -- vectors of values in memory ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_vectors_of_a_layer_and_an_x_assigned_in_memory(dense, kind):
    subject, oracle = subject_and_oracle(kind, dense)
    oracle = _actual(oracle)
    gene, cell = oracle.var_names[3], oracle.obs_names[2]
    for adata in (subject, oracle):
        adata.layers["scaled"] = np.asarray(adata.X) * 3 + 1
        adata.X = np.asarray(adata.X) - 1
    for layer in (None, "scaled"):
        np.testing.assert_array_equal(subject.obs_vector(gene, layer=layer), oracle.obs_vector(gene, layer=layer))
        np.testing.assert_array_equal(subject.var_vector(cell, layer=layer), oracle.var_vector(cell, layer=layer))
    del subject.layers["scaled"]
    with pytest.raises(KeyError):
        subject.obs_vector(gene, layer="scaled")


# -- view.X = value --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["scalar", "array", "sparse"])
@pytest.mark.parametrize("key", ["slices", "positions"])
def test_setting_x_of_a_view_follows_the_installed_anndata(dense, value, key):
    states = []
    for kind in ("memory", "shadow"):
        adata, _ = subject_and_oracle(kind, dense)
        index = (slice(2, 6), slice(0, 3)) if key == "slices" else ([5, 1, 8, 2], [4, 0, 2])
        view = adata[index]
        new = {"scalar": 0, "array": np.full(view.shape, 9.0),
               "sparse": sp.csr_matrix(np.full(view.shape, 9.0))}[value]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            view.X = new
        categories = sorted({w.category.__name__ for w in caught if "mode.chained_assignment" not in str(w.message)})
        states.append((view.is_view, _dense(adata.X), _dense(view.X), sp.issparse(view.X), categories))
    (view_is_view, parent, view_x, x_type, kinds), (shadow_is_view, shadow_parent, shadow_view_x, shadow_x_type,
                                                     shadow_kinds) = states
    assert view_is_view == shadow_is_view == view_x_writes_through()
    np.testing.assert_array_equal(parent, shadow_parent)
    np.testing.assert_array_equal(view_x, shadow_view_x)
    assert x_type == shadow_x_type  # sparse or not, as anndata's
    assert "ImplicitModificationWarning" in shadow_kinds and "ImplicitModificationWarning" in kinds


def test_a_wrong_shape_for_x_of_a_view_is_a_shadows_error_and_a_value_error(dense):
    shadow = AnnDataShadow(dense)
    with pytest.raises(ValueError, match="X") as error:
        shadow[:4, :3].X = np.ones((2, 2))
    assert isinstance(error.value, ShadowsError)
    assert str(dense) in str(error.value)


def test_pandas_compares_a_shadows_frames_as_an_anndatas(counts):
    """``pd.testing.assert_frame_equal(frame, adata.var)`` checks ``isinstance(frame, type(adata.var))``
    (scanpy's pearson-residual tests do): a plain DataFrame on the left passes, as on an AnnData.
    """
    import pandas as pd

    shadow, oracle = AnnDataShadow(counts), ad.read_h5ad(counts)
    pd.testing.assert_frame_equal(oracle.var.copy(), shadow.var)
    pd.testing.assert_frame_equal(oracle.obs.copy(), shadow.obs)
    shadow.obs["new"] = 1.0  # still reports assignments (▲)
    assert "new▲" in repr(shadow)
