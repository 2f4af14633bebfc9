"""Training minibatches from a shadow, a view of one or an atlas of many files, with no rewrite.

A sampler of cell positions (:class:`MinibatchSampler`) and a map-style dataset that reads the cells of one
batch (:class:`Minibatches`), for ``torch.utils.data.DataLoader`` with worker processes::

    from torch.utils.data import DataLoader
    loader = DataLoader(Minibatches(atlas, obs_keys=["cell_type"]),
                        sampler=MinibatchSampler(atlas.n_obs, 256, shuffle="blocks"),
                        batch_size=None, num_workers=2)

Neither needs torch: the dataset returns numpy arrays, which the loader turns into tensors. Each worker
reads its batches from the files by path (a shadow pickles as its path and selection), forked or spawned.

Two shuffles:

- ``"cells"``: each batch is ``batch_size`` cells drawn uniformly from all (one permutation per epoch).
  Over an atlas a batch then reads from about as many files as it has cells, a few rows from each.
- ``"blocks"``: the cells are cut into runs of ``block_size`` consecutive cells, the runs are shuffled,
  and each batch is ``batch_size // block_size`` runs, its cells shuffled among themselves (runs stay
  whole in a batch when ``block_size`` divides ``batch_size``; the last, shorter run of the cells, if
  any, comes last). A batch reads
  a few runs of consecutive rows (from a few files), which is much cheaper than scattered rows; the cost is
  that cells of one run, often alike (one sample, one donor), arrive together. With ``fetch`` > 1, that
  many batches' runs are drawn together and their cells shuffled across those batches (scDataset's
  "fetch factor"): a batch then holds cells of up to ``fetch`` times as many runs, read as more, shorter
  runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from shadows.indexing.keys import sorted_unique

SHUFFLES = ("cells", "blocks", None)


class MinibatchSampler:
    """Batches of cell positions for one epoch after another (see the module's docstring).

    Parameters
    ----------
    n_obs
        Number of cells (``adata.n_obs``).
    batch_size
        Cells per batch.
    shuffle
        ``"cells"``, ``"blocks"`` or ``None`` (in order).
    block_size
        Consecutive cells per run, for ``"blocks"``.
    fetch
        Batches whose runs are drawn and mixed together, for ``"blocks"``.
    seed
        The shuffles' seed; epoch ``e`` uses ``(seed, e)``: :meth:`set_epoch` chooses it (it also advances
        by one after each full pass).
    drop_last
        Whether a last batch with fewer than ``batch_size`` cells is dropped.
    """

    def __init__(self, n_obs: int, batch_size: int = 256, *, shuffle: str | None = "cells", block_size: int = 64,
                 fetch: int = 1, seed: int = 0, drop_last: bool = False):
        if shuffle not in SHUFFLES:
            raise ValueError(f"shuffle must be one of {SHUFFLES}, got {shuffle!r}")
        if batch_size < 1 or block_size < 1 or fetch < 1:
            raise ValueError("batch_size, block_size and fetch must be at least 1")
        self.n_obs, self.batch_size, self.shuffle = int(n_obs), int(batch_size), shuffle
        self.block_size, self.fetch, self.seed, self.drop_last = int(block_size), int(fetch), seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle of epoch ``epoch`` next."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        full, rest = divmod(self.n_obs, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[np.ndarray]:
        order = self.order(self.epoch)
        self.epoch += 1
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, self.n_obs), self.batch_size):
            yield order[start:start + self.batch_size]

    def order(self, epoch: int) -> np.ndarray:
        """Every cell's position, in the order epoch ``epoch`` gives them out."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.shuffle is None:
            return np.arange(self.n_obs, dtype=np.int64)
        if self.shuffle == "cells":
            return rng.permutation(self.n_obs).astype(np.int64)
        whole = self.n_obs // self.block_size  # the last, shorter run (if any) comes last: the others stay aligned
        starts = rng.permutation(whole) * self.block_size
        cells = (starts[:, None] + np.arange(self.block_size)).reshape(-1)
        cells = np.concatenate([cells, np.arange(whole * self.block_size, self.n_obs)]).astype(np.int64)
        group = self.batch_size * self.fetch  # cells mixed together: whole runs, `fetch` batches' worth
        for start in range(0, cells.size, group):
            rng.shuffle(cells[start:start + group])
        return cells


class Minibatches:
    """A map-style dataset whose items are batches: ``dataset[positions]`` reads those cells' X (or a
    layer) as a dense array in the order given, and the obs columns asked for.

    Parameters
    ----------
    adata
        A shadow, a view of one, or an atlas (:func:`shadows.concat`); an in-memory AnnData works too.
    layer
        The layer to read instead of X.
    obs_keys
        obs columns returned beside the values (categoricals as their codes, ``<key>_categories``
        listing them in ``dataset.categories``).
    dtype
        The values' dtype.

    Returns per item a dict: ``"X"`` (cells × genes, dense), ``"positions"`` and each obs key.
    """

    def __init__(self, adata: Any, *, layer: str | None = None, obs_keys: Sequence[str] = (),
                 dtype: Any = np.float32):
        self.adata, self.layer, self.obs_keys, self.dtype = adata, layer, list(obs_keys), np.dtype(dtype)
        missing = [k for k in self.obs_keys if k not in adata.obs.columns]
        if missing:
            raise KeyError(f"{getattr(adata, 'filename', 'adata')}: obs has no column {', '.join(missing)}")
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"{getattr(adata, 'filename', 'adata')}: no layer {layer!r}")
        #: The categories of each categorical obs key (its values are returned as codes into them).
        dtypes = {k: adata.obs[k].dtype for k in self.obs_keys}
        self.categories = {k: d.categories for k, d in dtypes.items() if isinstance(d, pd.CategoricalDtype)}

    def __len__(self) -> int:
        return int(self.adata.n_obs)

    def __getitem__(self, positions: Any) -> dict[str, np.ndarray]:
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        rows, order = sorted_unique(positions)  # read in storage order, once each
        view = self.adata[rows]
        values = view.X if self.layer is None else view.layers[self.layer]
        dense = values.toarray() if sparse.issparse(values) else np.asarray(values)
        out = {"X": dense.astype(self.dtype, copy=False), "positions": rows}
        for key in self.obs_keys:  # one column read each (not the view's whole obs)
            column = view.obs_vector(key)
            out[key] = pd.Categorical(column, categories=self.categories[key]).codes \
                if key in self.categories else np.asarray(column)
        if order is not None:
            out = {k: v[order] for k, v in out.items()}
        return out
