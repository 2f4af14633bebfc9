"""The store wrapper that checks Blosc chunks (``shadows.backends.checked_chunks``): what it learns of
the arrays follows changes made through it, and it costs reads nothing but the check."""

from __future__ import annotations

import numcodecs
import numpy as np
import pytest

from conftest import drop_consolidated, make_adata, write
from shadows.backends.checked_chunks import ChunkCheckingStore
from shadows.backends.handles import open_zarr


@pytest.mark.parametrize("fmt", ["zarr2", "zarr3"])
def test_an_array_rewritten_through_a_writable_group_reads_with_its_new_chunks(tmp_path, fmt):
    from zarr.codecs import BloscCodec

    path = write(make_adata(), tmp_path / "rewritten.zarr", fmt)
    drop_consolidated(path)  # zarr looks new arrays up in the consolidated metadata otherwise
    root = open_zarr(str(path), "r+")
    assert isinstance(root.store, ChunkCheckingStore)
    compressors = numcodecs.Blosc() if fmt == "zarr2" else BloscCodec()
    first = np.arange(300, dtype=np.float64).reshape(60, 5)
    root["obsm"].create_array("blosc", data=first, chunks=(10, 5), compressors=compressors)
    np.testing.assert_array_equal(root["obsm/blosc"][...], first)  # learnt: chunks of 10 x 5 float64
    del root["obsm/blosc"]
    second = np.arange(60, dtype=np.int8).reshape(60, 1)
    root["obsm"].create_array("blosc", data=second, chunks=(60, 1), compressors=compressors)
    np.testing.assert_array_equal(root["obsm/blosc"][...], second)
    read_only = root.store.with_read_only(True)
    assert isinstance(read_only, ChunkCheckingStore) and read_only._format == root.store._format
