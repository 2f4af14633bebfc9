"""Training minibatches (``shadows.minibatch``): the sampler gives every cell once per epoch in the order
its shuffle promises, and the dataset reads each batch's values and obs as anndata holds them, from an
in-memory AnnData, a shadow, a view of it, an atlas over many files and a view of the atlas; then through
``torch``'s DataLoader with two worker processes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import shadows
from conftest import make_adata, read_oracle, write
from shadows.minibatch import Minibatches, MinibatchSampler
from test_collection import _write_set, oracle


@pytest.mark.parametrize("shuffle", ["cells", "blocks", None])
@pytest.mark.parametrize(("n_obs", "drop_last"), [(1000, False), (1001, True), (1001, False), (5, False)])
def test_every_cell_once_per_epoch_in_the_promised_order(shuffle, n_obs, drop_last):
    sampler = MinibatchSampler(n_obs, 64, shuffle=shuffle, block_size=16, seed=1, drop_last=drop_last)
    first = list(sampler)
    assert len(first) == len(sampler)
    assert all(len(b) == 64 for b in first[:-1]) and (not drop_last or len(first[-1]) == 64)
    seen = np.concatenate(first)
    expected = np.arange(n_obs)[: len(sampler) * 64]
    if drop_last:
        assert len(np.unique(seen)) == seen.size == (n_obs // 64) * 64
    else:
        np.testing.assert_array_equal(np.sort(seen), expected)
    second = list(sampler)  # the next epoch: another order (unless in order), the same again for its seed
    if shuffle is None:
        np.testing.assert_array_equal(seen, np.arange(seen.size))
    elif n_obs > 64:
        assert not np.array_equal(np.concatenate(second), seen)
    sampler.set_epoch(0)
    np.testing.assert_array_equal(np.concatenate(list(sampler)), seen)
    if shuffle == "blocks":
        for batch in first[:-1]:  # 64 cells from 4 runs of 16 consecutive cells (whole runs; a short one last)
            runs = np.unique(batch // 16)
            assert len(runs) == 4 and set(batch) == set(np.concatenate([np.arange(r * 16, r * 16 + 16) for r in runs]))
        assert set(np.arange(n_obs - n_obs % 16, n_obs)) <= set(np.concatenate(first[-1:]) if not drop_last
                                                                else np.arange(n_obs - n_obs % 16, n_obs))


def test_fetch_mixes_runs_across_batches():
    sampler = MinibatchSampler(4096, 256, shuffle="blocks", block_size=64, fetch=4, seed=0)
    batches = list(sampler)
    assert max(len(np.unique(b // 64)) for b in batches) > 4  # cells of more runs than one batch holds
    groups = [np.concatenate(batches[i:i + 4]) for i in range(0, len(batches), 4)]
    assert all(len(np.unique(g // 64)) == 16 for g in groups)  # but every 4 batches, 16 whole runs


def test_sampler_refuses_nonsense():
    with pytest.raises(ValueError, match="shuffle"):
        MinibatchSampler(10, shuffle="random")
    with pytest.raises(ValueError, match="at least 1"):
        MinibatchSampler(10, batch_size=0)


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    """(name, dataset subject, the in-memory AnnData it equals) for a file and an atlas, whole and viewed."""
    folder = tmp_path_factory.mktemp("minibatch")
    adata = make_adata(n_obs=120)
    path = write(adata, folder / "one.h5ad", "h5ad")
    memory = read_oracle(path)
    shadow = shadows.read_h5ad(path)
    sources = _write_set(tmp_path_factory.mktemp("atlas"), 7, ["csr", "csc", "dense", "csr", "dense"])
    atlas = shadows.concat(sources, join="outer")
    expected = oracle(sources, join="outer")
    cells = np.sort(np.random.default_rng(0).choice(atlas.n_obs, size=atlas.n_obs // 2, replace=False))
    return [("memory", memory, memory), ("shadow", shadow, memory), ("view", shadow[10:100], memory[10:100]),
            ("atlas", atlas, expected), ("atlas view", atlas[cells], expected[cells])]


def _categorical_keys(adata) -> list[str]:
    return [k for k in adata.obs.columns if isinstance(adata.obs[k].dtype, pd.CategoricalDtype)][:1] + \
        [k for k in adata.obs.columns if adata.obs[k].dtype.kind == "f"][:1]


def test_batches_hold_anndatas_values_in_the_order_asked(subjects):
    rng = np.random.default_rng(5)
    for name, subject, expected in subjects:
        keys = _categorical_keys(expected)
        dataset = Minibatches(subject, obs_keys=keys)
        assert len(dataset) == expected.n_obs
        positions = rng.choice(expected.n_obs, size=min(17, expected.n_obs), replace=False)  # unsorted
        batch = dataset[positions]
        want = expected[positions]
        dense = want.X.toarray() if hasattr(want.X, "toarray") else np.asarray(want.X)
        np.testing.assert_array_equal(batch["X"], dense.astype(np.float32), err_msg=name)
        np.testing.assert_array_equal(batch["positions"], positions, err_msg=name)
        for key in keys:
            column = want.obs[key]
            got = batch[key]
            if isinstance(column.dtype, pd.CategoricalDtype):
                assert list(dataset.categories[key]) == list(expected.obs[key].cat.categories), name
                got = pd.Categorical.from_codes(got, categories=dataset.categories[key])
            assert pd.Series(np.asarray(got)).equals(pd.Series(np.asarray(column))), f"{name} {key}"


def test_a_missing_obs_key_or_layer_is_named(subjects):
    _, shadow, _ = subjects[1]
    with pytest.raises(KeyError, match="nothing"):
        Minibatches(shadow, obs_keys=["nothing"])
    with pytest.raises(KeyError, match="no layer 'nothing'"):
        Minibatches(shadow, layer="nothing")


def test_a_data_loader_with_two_workers_gives_every_cell_of_an_atlas_once(subjects):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    for name, subject, expected in subjects[3:]:
        sampler = MinibatchSampler(subject.n_obs, 8, shuffle="blocks", block_size=4, seed=2)
        loader = DataLoader(Minibatches(subject), sampler=sampler, batch_size=None, num_workers=2,
                            multiprocessing_context="fork", timeout=120)
        seen = []
        for batch in loader:
            assert isinstance(batch["X"], torch.Tensor) and batch["X"].dtype == torch.float32
            positions = batch["positions"].numpy()
            want = expected[positions].X
            np.testing.assert_array_equal(batch["X"].numpy(), want.toarray().astype(np.float32), err_msg=name)
            seen.append(positions)
        np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(subject.n_obs))
