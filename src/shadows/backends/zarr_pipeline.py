"""Zarr arrays read through the ``zarrs`` codec pipeline where it is installed (``pip install shadows[zarrs]``).

``zarrs`` (zarrs-python) decodes chunks in Rust, in parallel, outside Python's lock; zarr's own pipeline
decodes a read's chunks mostly on one core. Measured on the 100k × 20k benchmark store in anndata 0.13's
layout (Zarr v3, shards of inner chunks of 156,208 values, Zstandard), X/data and X/indices decoded in
slices of 4M values: 0.62 s with zarr's pipeline, 0.33 s with zarrs. anndata 0.13 switches its own reads to
it the same way when it is installed and the process still uses zarr's default pipeline.

An array is read through zarrs when all of these hold:

- ``shadows.settings.zarrs`` is true (the default) and ``zarrs`` imports;
- the process uses zarr's default codec pipeline or zarrs' (``zarr.config``'s ``codec_pipeline.path``):
  any other pipeline a user chose is kept;
- the store is a local folder: zarrs reads the files itself, by path;
- its chunks are not Blosc-compressed as a whole: those are checked on their way out of the store before
  numcodecs decodes them (:mod:`shadows.backends.checked_chunks`), which zarrs, reading the files itself,
  would pass by. Stores in anndata 0.13's layout (sharded, Zstandard) qualify; anndata 0.12's (v2, Blosc)
  keep zarr's pipeline.

zarrs falls back to zarr's pipeline for selections it does not take (integer arrays, as in ``oindex``),
which is why scattered ranges of such arrays (:func:`uses_zarrs`) are read as slices of whole chunks
(:mod:`shadows.backends.zarr_arrays`), unless they are sharded in the layout :mod:`shadows.backends.zarr_shards`
reads faster still.
"""

from __future__ import annotations

import warnings
from importlib.util import find_spec
from typing import Any

from shadows.backends.checked_chunks import ChunkCheckingStore, blosc_chunks
from shadows.settings import settings

_ZARRS_PIPELINE = "zarrs.ZarrsCodecPipeline"
#: zarr's default pipeline: a process that set another (but zarrs) keeps its own
_DEFAULT_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"


def zarrs_installed() -> bool:
    """Whether the ``zarrs`` package can be imported."""
    return find_spec("zarrs") is not None


def uses_zarrs(node: Any) -> bool:
    """Whether ``node`` is a Zarr array read through zarrs' codec pipeline."""
    pipeline = getattr(getattr(node, "async_array", None), "codec_pipeline", None)
    return type(pipeline).__module__.startswith("zarrs")


def through_zarrs(array: Any) -> Any:
    """``array`` (a read-only zarr array of a shadow's store), or the same array read through zarrs'
    codec pipeline when the conditions of this module's docstring hold.
    """
    import zarr
    from zarr.storage import LocalStore, StorePath

    store = array.store
    if not (settings.zarrs and isinstance(store, ChunkCheckingStore) and isinstance(store.wrapped, LocalStore)
            and store.read_only and zarr.config.get("codec_pipeline.path") in (_DEFAULT_PIPELINE, _ZARRS_PIPELINE)
            and zarrs_installed() and blosc_chunks(array.metadata.to_dict()) is None
            and array.dtype.kind in "biuf"):
        return array
    with zarr.config.set({"codec_pipeline.path": _ZARRS_PIPELINE}), warnings.catch_warnings():
        # zarrs warns, then uses zarr's pipeline, for an array whose metadata it does not take
        warnings.filterwarnings("ignore", message=".*unsupported by ZarrsCodecPipeline", category=UserWarning)
        fast = zarr.AsyncArray(metadata=array.metadata, store_path=StorePath(store.wrapped, array.path))
    return zarr.Array(fast)
