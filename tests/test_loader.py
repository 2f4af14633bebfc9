"""A shadow, or a view of one, as the dataset of a ``torch.utils.data.DataLoader`` with worker processes:
each worker reads its batches from the file by path (forked or spawned), and every cell comes once with
anndata's values.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_adata, read_oracle, write
from shadows import AnnDataShadow

torch = pytest.importorskip("torch")  # CI installs the CPU wheel on Python 3.11


def dense_batch(view):
    """What the loader yields per batch: X of the batch's cells as a dense float32 tensor, and their names."""
    return torch.from_numpy(view.X.toarray().astype(np.float32)), list(view.obs_names)


@pytest.mark.parametrize(("fmt", "start"), [("h5ad", "fork"), ("zarr3", "fork"), ("h5ad", "spawn")])
def test_a_shadow_and_a_view_feed_a_data_loader_with_two_workers(fmt, start, tmp_path):
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    path = write(make_adata(n_obs=300), tmp_path / f"a.{'h5ad' if fmt == 'h5ad' else 'zarr'}", fmt)
    oracle = read_oracle(path)
    shadow = AnnDataShadow(path)
    # dask's thread pool exists in the parent before the fork (its threads do not follow: the children
    # must start their own, or a view's read in a worker waits forever)
    AnnDataShadow(path, array_backend="dask").X.sum().compute(scheduler="threads")
    # spawned workers import torch afresh (seconds each): the view is checked with forked ones
    for source in (shadow, shadow[40:260]) if start == "fork" else (shadow[40:260],):
        batches = BatchSampler(RandomSampler(range(source.n_obs)), batch_size=32, drop_last=False)
        loader = DataLoader(source, sampler=batches, batch_size=None, num_workers=2, collate_fn=dense_batch,
                            multiprocessing_context=start, timeout=120)  # a hung worker fails the test
        seen = []
        for values, names in loader:
            assert values.dtype == torch.float32
            np.testing.assert_array_equal(values.numpy(), oracle[names].X.toarray())
            seen += names
        assert sorted(seen) == sorted(source.obs_names)
