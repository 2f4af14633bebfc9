"""A new encoding needs a new module in ``elements/`` and nothing else (docs/architecture.md).

This test is that module: a toy encoding (a 2-d array stored transposed) registered here, with no change to
shadows, is read, sliced by views, exported and brought to memory like anndata's own encodings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest

import shadows
from shadows.elements.base import ElementSpec, encoding_of
from shadows.elements.registry import register


@register("array", "toy-transposed", "0.1.0")
@dataclass(frozen=True)
class ToyTransposedSpec(ElementSpec):
    """A dense 2-d array stored as its transpose (the toy encoding)."""

    kind = "toy-transposed"
    role = "array"

    @classmethod
    def from_node(cls, ref, node, path, attrs):
        stored = tuple(node.shape)
        return cls(ref, path, encoding_of(attrs), (stored[1], stored[0]), np.dtype(node.dtype))

    def materialize(self) -> np.ndarray:
        return np.ascontiguousarray(self.node()[...].T)

    def graph(self):
        import dask
        import dask.array as da

        return da.from_delayed(dask.delayed(self.materialize, pure=True)(), self.shape, self.dtype)


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("toy") / "toy.h5ad"
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.random((12, 5), dtype=np.float32))
    adata.write_h5ad(path)
    values = rng.random((12, 3)).astype(np.float32)
    with h5py.File(path, "r+") as file:
        toy = file["obsm"].create_dataset("toy", data=values.T)
        toy.attrs.update({"encoding-type": "toy-transposed", "encoding-version": "0.1.0"})
    return path, values


def test_a_registered_toy_encoding_reads_as_anndata_encodings_do(toy_file, tmp_path):
    path, values = toy_file
    shadow = shadows.read_h5ad(path)
    assert shadow.obsm["toy"].shape == (12, 3)
    np.testing.assert_array_equal(shadow.obsm["toy"], values)
    rows = [1, 4, 7, 10]
    view = shadow[rows]
    np.testing.assert_array_equal(view.obsm["toy"], values[rows])
    np.testing.assert_array_equal(view.to_memory().obsm["toy"], values[rows])
    lazy = shadows.read_h5ad(path, array_backend="dask")
    np.testing.assert_array_equal(lazy[rows].obsm["toy"].compute(), values[rows])
    view.write_h5ad(tmp_path / "out.h5ad")
    np.testing.assert_array_equal(ad.read_h5ad(tmp_path / "out.h5ad").obsm["toy"], values[rows])
    assert "obsm:\ttoy" in repr(shadow)
    listed = {e.path: e for e in shadow.stored_elements()}
    assert listed["obsm/toy"].encoding == "toy-transposed 0.1.0" and listed["obsm/toy"].shape == (12, 3)
