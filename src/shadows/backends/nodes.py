"""Uniform access to HDF5 and Zarr nodes: attributes, children, reads, storage facts.

h5py and zarr agree on most of their API (``group[key]``, ``.attrs``, ``dataset[sel]``); the few places
they differ (string decoding, attribute types, storage size, object references) are handled here so the
element readers above stay format-agnostic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from shadows import progress
from shadows.backends import hdf5_heaps, hdf5_raw, zarr_shards
from shadows.backends.zarr_meta import MetaArray, MetaGroup, MetaNode
from shadows.errors import ShadowsError, UnreadableDataError, element_message


def _h5py():
    import h5py

    return h5py


def is_hdf5(node: Any) -> bool:
    """Whether ``node`` is an h5py object."""
    return type(node).__module__.startswith("h5py")


def is_group(node: Any) -> bool:
    """Whether ``node`` is a group (HDF5, Zarr, or Zarr metadata)."""
    if is_hdf5(node):
        return isinstance(node, _h5py().Group)
    if isinstance(node, MetaNode):
        return isinstance(node, MetaGroup)
    import zarr

    return isinstance(node, zarr.Group)


def storage_kind(node: Any) -> str:
    """``"group"`` or ``"array"``: the storage half of a registry key."""
    return "group" if is_group(node) else "array"


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return [_decode(v) for v in value.tolist()]
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def attrs(node: Any) -> dict[str, Any]:
    """The node's attributes as plain Python values (bytes decoded, numpy scalars unwrapped).

    An HDF5 node's are checked first (:func:`shadows.backends.hdf5_heaps.check_node`): damaged metadata
    behind a string attribute would make HDF5 hang.
    """
    hdf5_heaps.check_node(node)
    return {k: _decode(v) for k, v in node.attrs.items()}


def child_names(group: Any) -> list[str]:
    """Names of a group's children, in a stable (sorted) order for both formats."""
    return sorted(group.keys())


def has_child(group: Any, name: str) -> bool:
    """Whether ``group`` has a child called ``name``."""
    try:
        return name in group
    except (KeyError, ValueError):
        return False


def is_string_dtype(node: Any) -> bool:
    """Whether an array stores strings (vlen or fixed-length, HDF5 or Zarr)."""
    if is_hdf5(node):
        dtype = node.dtype
        if dtype.kind in "SU":
            return True
        return _h5py().check_string_dtype(dtype) is not None
    dtype = node.dtype
    kind = getattr(dtype, "kind", None)
    return kind in ("O", "U", "S", "T") or "str" in str(dtype).lower()


def numpy_dtype(node: Any) -> np.dtype:
    """The numpy dtype of the values a read returns (``object`` for strings)."""
    if is_string_dtype(node):
        return np.dtype(object)
    return stored_dtype(node)


def stored_dtype(node: Any) -> np.dtype:
    """The numpy dtype the array is stored as (zarr 3's own data types turned into numpy's)."""
    dtype = node.dtype
    return dtype if isinstance(dtype, np.dtype) else np.dtype(getattr(dtype, "to_native_dtype", lambda: dtype)())


#: Rows between two selected rows that are read anyway rather than split into two reads.
COALESCE_GAP_ROWS = 1024
#: Ranges joined into one HDF5 selection per read call (:func:`read_ranges`). HDF5 builds and walks a
#: union of hyperslabs in time that grows faster than their count: 10,000 row ranges of the 1M-cell
#: benchmark file took 2.1 s as one selection and 0.17 s as reads of 64-256 ranges (1,024: 0.21 s;
#: 2,500: 0.38 s; one h5py call per range: 0.20 s), measured on its warm X/data.
HYPERSLABS_PER_READ = 256
#: Values one Zarr read of scattered ranges selects (:func:`read_ranges`; its positions take 8 bytes
#: each). One orthogonal selection instead of a call per range: zarr decodes each chunk the ranges touch
#: once and concurrently; 1 % of the rows of the 100k-cell benchmark store took 1.0 s range by range
#: and 0.3 s as one selection (X/data, Zarr v3 sharded; v2: 0.58 s and 0.15 s).
ZARR_POSITIONS_PER_READ = 1 << 21
#: Values one read of an array zarrs decodes takes (:func:`read_ranges`): whole chunks, as a slice. Of
#: the 100k-cell benchmark store in anndata 0.13's layout (Zarr v3 sharded), 1 % of the rows (X/data and
#: X/indices) took 0.36 s as orthogonal selections, which zarrs hands back to zarr's pipeline, and as
#: slices of the chunks they touch 0.30 s in slices of 2M or 4M values, 0.27 s of 8M, 0.28 s of 16M.
ZARRS_VALUES_PER_READ = 1 << 23


def location(node: Any) -> tuple[str, str]:
    """The file (or store) a node lives in and its path inside it, for error messages."""
    if is_hdf5(node):
        return node.file.filename, node.name
    return store_location(getattr(node, "store", None)), str(getattr(node, "path", ""))


def store_location(store: Any) -> str:
    """A Zarr store as messages name it: a local store's folder, an fsspec store's URL."""
    root = getattr(store, "root", None)
    if root is None and hasattr(store, "path") and hasattr(store, "fs"):  # FsspecStore: show the URL
        protocol = store.fs.protocol[0] if isinstance(store.fs.protocol, tuple) else store.fs.protocol
        root = f"{protocol}://{store.path}"
    return str(root if root is not None else store)


@contextmanager
def reading(node: Any) -> Iterator[None]:
    """Turn a failure of the storage layer under a read into an error naming the file and the element.

    h5py raises OSError for unreadable bytes (a truncated file), Zarr's codecs RuntimeError or
    ValueError (a corrupted chunk); for remote files, the HTTP or object-store client its own errors.
    """
    with reading_element(*location(node)):
        yield


@contextmanager
def reading_element(filename: str, element: str) -> Iterator[None]:
    """:func:`reading` for an element given by name (a lookup that may fail before there is a node)."""
    from shadows.backends.remote import is_transport_error

    try:
        yield
    except ShadowsError:
        raise
    except Exception as error:
        if not isinstance(error, (OSError, RuntimeError, ValueError)) and not is_transport_error(error):
            raise
        what = f"cannot read its stored bytes (truncated file or corrupted chunk?): {type(error).__name__}: {error}"
        if is_transport_error(error):
            what = f"the request for its bytes failed: {type(error).__name__}: {error}"
        raise UnreadableDataError(element_message(filename, element, what)) from error


def read(node: Any, selection: Any = (), decode: bool = True) -> np.ndarray:
    """Read ``node[selection]`` as numpy; strings come back as an object array of ``str``, unless
    ``decode`` is false (fixed-length bytes stay bytes: anndata's ``array`` of dtype ``S``).

    ``selection`` is a basic selection (slices/ints) or an increasing integer array of first-axis
    positions; for HDF5 such an array is read as a few contiguous spans (h5py's point selection is slow).
    """
    with reading(node):
        values = _read(node, selection, decode)
    progress.count_read(getattr(values, "nbytes", 0))
    return values


def _read(node: Any, selection: Any, decode: bool = True) -> np.ndarray:
    if isinstance(selection, np.ndarray) and is_hdf5(node):
        return _read_spans(node, selection, decode)
    if not decode:
        return node.oindex[selection] if isinstance(selection, np.ndarray) else node[selection]
    if is_hdf5(node):
        if is_string_dtype(node):
            if node.dtype.kind == "S" or _h5py().check_string_dtype(node.dtype) is not None:
                out = node.asstr()[selection]
            else:
                out = node[selection]
            return np.asarray(out, dtype=object) if isinstance(out, np.ndarray) else out
        return node[selection]
    out = node.oindex[selection] if isinstance(selection, np.ndarray) else node[selection]
    if is_string_dtype(node) and isinstance(out, np.ndarray):
        out = out.astype(object)
        if out.size and isinstance(out.flat[0], bytes):
            out = np.vectorize(bytes.decode, otypes=[object])(out)
    return out


def read_ranges(node: Any, starts: np.ndarray, stops: np.ndarray, out: np.ndarray) -> None:
    """Read the increasing, disjoint ranges ``node[starts[i]:stops[i]]`` (a numeric 1-d array) one after
    another into ``out``.

    An uncompressed HDF5 dataset of a file open read-only is read at the byte offsets HDF5 reports
    (:mod:`shadows.backends.hdf5_raw`). Other HDF5 datasets are read in few calls: each a selection that is
    the union of up to ``HYPERSLABS_PER_READ`` ranges (h5py's high-level indexing takes one range per
    call, and each call costs about as much as reading a short row). A local sharded Zarr array in the
    layouts :mod:`shadows.backends.zarr_shards` takes (anndata 0.13's) is read from its shard files, each
    touched inner chunk decoded once on a thread per core; an array zarrs decodes, as slices of the whole
    chunks the ranges touch; any other Zarr array as one orthogonal selection of their positions per
    ``ZARR_POSITIONS_PER_READ`` values: zarr then decodes each chunk (or a shard's inner chunk) the ranges
    touch once, concurrently.
    """
    lengths = stops - starts
    total = int(lengths.sum())
    if total != out.size:
        raise ValueError(f"{out.size} values to fill from ranges holding {total}")
    if total == 0:
        return
    with reading(node):
        raw = hdf5_raw.layout(node) if is_hdf5(node) and starts.size > 1 else None
        shards = zarr_shards.layout(node) if raw is None and not is_hdf5(node) and starts.size > 1 else None
        if raw is not None:
            hdf5_raw.read_ranges(raw, starts, lengths, out)
        elif shards is not None:
            zarr_shards.read_ranges(shards, starts, lengths, out)
        elif is_hdf5(node) and starts.size > 1:
            _read_hyperslab_unions(node, starts, lengths, out)
        elif starts.size > 1 and uses_zarrs(node):
            _read_whole_chunks(node, starts, lengths, out)
        elif starts.size > 1:
            _read_zarr_positions(node, starts, lengths, out)
        else:
            at = 0
            for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
                out[at : at + stop - start] = node[start:stop]
                at += stop - start
    progress.count_read(total * out.itemsize)


def _read_zarr_positions(node: Any, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """:func:`read_ranges` for a Zarr array: the ranges' positions as orthogonal selections of at most
    about ``ZARR_POSITIONS_PER_READ`` values (a range is never split).
    """
    ends = np.cumsum(lengths)
    first, at = 0, 0
    while first < starts.size:
        last = max(int(np.searchsorted(ends, at + ZARR_POSITIONS_PER_READ, side="right")), first + 1)
        count = int(ends[last - 1]) - at
        out[at : at + count] = node.oindex[concatenated_ranges(starts[first:last], lengths[first:last])]
        first, at = last, at + count


def uses_zarrs(node: Any) -> bool:
    """Whether ``node`` is a Zarr array read through zarrs' codec pipeline
    (:mod:`shadows.backends.zarr_pipeline`).
    """
    pipeline = getattr(getattr(node, "async_array", None), "codec_pipeline", None)
    return type(pipeline).__module__.startswith("zarrs")


def _read_whole_chunks(node: Any, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """:func:`read_ranges` for a Zarr array zarrs decodes: the chunks the ranges touch (a shard's inner
    chunks), as slices of at most ``ZARRS_VALUES_PER_READ`` values over runs of touched chunks (joined
    across one untouched chunk), the ranges' values copied out of each. zarrs decodes a slice's chunks in
    parallel; memory holds one slice beside ``out``.
    """
    chunk = int(node.chunks[0])
    step = max(chunk, ZARRS_VALUES_PER_READ // chunk * chunk)
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    stops = starts + lengths
    out_at = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    first, last = starts // chunk, (stops - 1) // chunk
    breaks = np.flatnonzero(first[1:] > last[:-1] + 2) + 1  # ranges are increasing: so are first and last
    run_lo = first[np.concatenate([[0], breaks])] * chunk
    run_hi = np.minimum((last[np.concatenate([breaks - 1, [last.size - 1]])] + 1) * chunk, node.shape[0])
    for lo, hi in zip(run_lo.tolist(), run_hi.tolist(), strict=True):
        for begin in range(lo, hi, step):
            end = min(begin + step, hi)
            a, b = int(np.searchsorted(stops, begin, side="right")), int(np.searchsorted(starts, end))
            clipped_lo, clipped_hi = np.maximum(starts[a:b], begin), np.minimum(stops[a:b], end)
            counts = clipped_hi - clipped_lo
            block = node[begin:end]
            source = concatenated_ranges(clipped_lo - begin, counts)
            target = concatenated_ranges(out_at[a:b] + (clipped_lo - starts[a:b]), counts)
            out[target] = block[source]


def concatenated_ranges(firsts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The positions ``firsts[i] : firsts[i] + counts[i]``, one range after another."""
    total = int(counts.sum())
    return np.repeat(firsts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(total)


def _read_hyperslab_unions(node: Any, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """:func:`read_ranges` for an HDF5 dataset: ``HYPERSLABS_PER_READ`` ranges per read call."""
    h5s = _h5py().h5s
    at = 0
    for first in range(0, starts.size, HYPERSLABS_PER_READ):
        batch_starts = starts[first : first + HYPERSLABS_PER_READ].tolist()
        batch_lengths = lengths[first : first + HYPERSLABS_PER_READ].tolist()
        count = sum(batch_lengths)
        if not count:
            continue
        file_space = node.id.get_space()
        file_space.select_none()
        for start, length in zip(batch_starts, batch_lengths, strict=True):
            if length:
                file_space.select_hyperslab((start,), (length,), op=h5s.SELECT_OR)
        node.id.read(h5s.create_simple((count,)), file_space, out[at : at + count])
        at += count


def row_spans(rows: np.ndarray, gap: int = COALESCE_GAP_ROWS) -> list[tuple[int, int, np.ndarray]]:
    """Group increasing positions into spans ``(start, stop, positions - start)``, merging small gaps."""
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) > gap) + 1
    spans = []
    for part in np.split(rows, breaks):
        start = int(part[0])
        spans.append((start, int(part[-1]) + 1, part - start))
    return spans


def _read_spans(node: Any, rows: np.ndarray, decode: bool = True) -> np.ndarray:
    spans = row_spans(rows)
    if not spans:
        return _read(node, slice(0, 0), decode)
    # _read, not read: the caller's read counts these bytes once (the progress bar)
    parts = [_read(node, slice(start, stop), decode)[offsets] for start, stop, offsets in spans]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def missing_chunks(node: Any, positions: np.ndarray) -> list[str]:
    """Keys of the stored chunks (shards) of a 1-d Zarr array in a local store that hold some of
    ``positions`` and are missing from the store; ``[]`` for HDF5, n-d arrays and remote stores.

    zarr reads a missing chunk as its fill value: right for arrays written sparsely (zarr skips chunks
    that hold only the fill value), wrong where the values must be there (a dataframe's index, whose
    lost chunk would read as empty names).
    """
    if is_hdf5(node) or len(node.shape) != 1 or not positions.size:
        return []
    from zarr.storage import LocalStore

    store = node.store
    local = getattr(store, "wrapped", store)  # shadows' ChunkCheckingStore
    if not isinstance(local, LocalStore):
        return []
    folder = Path(str(local.root)) / node.path
    size = int((getattr(node, "shards", None) or node.chunks)[0])
    keys = [node.metadata.encode_chunk_key((int(i),)) for i in np.unique(np.asarray(positions) // size)]
    return [key for key in keys if not (folder / key).exists()]


def chunks(node: Any) -> tuple[int, ...] | None:
    """Stored chunk shape, or ``None`` for a contiguous HDF5 dataset."""
    return tuple(node.chunks) if node.chunks is not None else None


def read_chunks(node: Any) -> tuple[int, ...] | None:
    """The shape of the pieces a read decodes: a Zarr shard's inner chunks, else :func:`chunks`."""
    inner = getattr(node, "read_chunks", None)  # a shard's, from metadata (zarr_meta.MetaArray)
    return tuple(inner) if inner is not None else chunks(node)  # zarr's own arrays say the inner chunks


def array_nbytes(node: Any) -> int:
    """Bytes the node's arrays take once read (uncompressed; a string is counted as the pointer numpy's
    object arrays hold), from metadata only.
    """
    if is_group(node):
        return sum(array_nbytes(node[k]) for k in node)
    itemsize = 8 if is_string_dtype(node) else numpy_dtype(node).itemsize
    return int(np.prod(node.shape, dtype=np.int64)) * itemsize


def stored_nbytes(node: Any) -> int:
    """Bytes the node's data takes on disk (after compression), from metadata and listings only."""
    if is_group(node):
        return sum(stored_nbytes(node[k]) for k in node)
    if is_hdf5(node):
        return int(node.id.get_storage_size())
    if isinstance(node, MetaArray):
        store = node._store
        if store.url is not None:
            from shadows.backends import remote

            fs, path = remote.filesystem(f"{store.url}/{node.path}", store.storage_options)
            return int(fs.du(path))
        directory = store.root / node.path
        return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    return int(node.nbytes_stored())
