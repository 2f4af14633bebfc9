"""Arrays over many files (X, layers, obsm): one element whose graph reads each source's rows from its
own file, with the gene join applied on read.

A selection's rows are split by source (each source's rows as positions in its own file); a source with
no selected row gets no task and is never opened. Each task reads its source's rows, and only the genes
of the selection that source measured, in the source's own gene order (through the source's own element
spec, so its pushdown applies: a CSR source reads only the selected rows' byte ranges), then places them
at their columns of the joined var, fills the genes the source did not measure (0 for sparse results,
NaN for dense ones, or ``fill_value``) and casts to the dtype anndata.concat gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from shadows import cluster
from shadows.collection.catalog import SourceMeta, read_in_order
from shadows.collection.join import ArrayPlan
from shadows.collection.reading import SourceKey, source_element
from shadows.elements.base import TARGET_CHUNK_BYTES, ElementSpec
from shadows.elements.sparse import read_major_entries
from shadows.elements.sparse_chunk import to_plain
from shadows.indexing.keys import AxisIndex, as_positions, is_full, sorted_unique
from shadows.indexing.selection import Selection, axis_positions

#: Rows one task of a sparse result reads at most (dense results size tasks by TARGET_CHUNK_BYTES).
SPARSE_ROWS_PER_TASK = 100_000
#: Reads of local HDF5 sources averaging at most this many bytes per task run in the calling thread
#: (:meth:`AtlasArraySpec._in_one_thread`).
ONE_THREAD_BYTES_PER_TASK = 4 * 2**20


def split_rows(rows: AxisIndex, offsets: np.ndarray) -> list[tuple[int, AxisIndex]]:
    """Increasing positions ``rows`` of the atlas as ``(source, positions in that source)`` pairs, for the
    sources with at least one selected row (``offsets``: each source's first row, then the total).
    """
    n_sources = len(offsets) - 1
    if isinstance(rows, range):
        if len(rows) == 0:
            return []
        step = rows.step
        starts = np.clip(-((rows.start - offsets[:-1]) // step), 0, len(rows))  # first k with r[k] >= offset
        stops = np.clip(-((rows.start - offsets[1:]) // step), 0, len(rows))
        out = []
        for i in np.flatnonzero(stops > starts):
            first = rows.start + int(starts[i]) * step - int(offsets[i])
            out.append((int(i), range(first, first + int(stops[i] - starts[i]) * step, step)))
        return out
    positions = np.asarray(rows, dtype=np.int64)
    if positions.size == 0:
        return []
    source = np.searchsorted(offsets, positions, side="right") - 1
    cuts = np.flatnonzero(np.diff(source)) + 1
    out = []
    for part in np.split(np.arange(positions.size), cuts):
        i = int(source[part[0]])
        if i < n_sources:
            out.append((i, positions[part] - offsets[i]))
    return out


@dataclass(frozen=True)
class AtlasArraySpec(ElementSpec):
    """X, a layer or an obsm entry of an atlas (see the module's docstring): a dense result; sparse
    results are :class:`AtlasSparseSpec`.

    ``extra`` holds ``sources`` (the :class:`~shadows.collection.catalog.SourceMeta` of each source),
    ``offsets`` (each source's first row, then the total), ``plan`` (the result's
    :class:`~shadows.collection.join.ArrayPlan`) and ``columns`` (per source, each joined gene's column
    in the source or -1; ``None`` for obsm, whose columns are not genes: in an outer join a source
    without the entry, or with fewer columns, is filled as anndata.concat fills it).
    """

    kind = "atlas-array"
    role = "array"

    @property
    def plan(self) -> ArrayPlan:
        return self.extra["plan"]

    def graph(self) -> Any:
        """The whole array: one task per source (several for large sources)."""
        return self.select_graph(())

    def select_graph(self, selection: Selection) -> Any:
        """``array[selection]``, reading only the selected sources, rows and genes (see the module)."""
        to_read, cols, order, n_out = self._plan_selection(selection)
        return self._graph(to_read, cols, order, n_out, *self._tasks(to_read, cols, n_out))

    def _graph(self, to_read: AxisIndex, cols: AxisIndex | None, order: np.ndarray | None, n_out: int,
               tasks: list[tuple], blocks: list[int]) -> Any:
        """The dask array of :meth:`_plan_selection`'s selection, read by ``tasks`` (:meth:`_tasks`)."""
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        name = f"shadows-atlas-{self.name}-" + tokenize(self.ref, self.path, to_read, cols,
                                                          [s.identity for s in self.extra["sources"]])
        dsk: dict[Any, Any] = {(name, j, 0): task for j, task in enumerate(tasks)}
        if not tasks:
            dsk[(name, 0, 0)] = (_empty, self.plan.sparse, self.dtype, (0, n_out))
            blocks = [0]
        graph = da.Array(HighLevelGraph.from_collections(name, dsk, dependencies=()), name,
                         chunks=(tuple(blocks), (n_out,)), meta=_empty(self.plan.sparse, self.dtype, (0, 0)))
        if order is not None:
            graph = graph[order]
        return graph

    def _plan_selection(self, selection: Selection) -> tuple[AxisIndex, AxisIndex | None, np.ndarray | None, int]:
        """The rows to read (increasing), the columns kept (``None``: all), the order that puts the rows
        back in the selection's (``None``: already), and the result's width.
        """
        if len(self.shape) != 2:
            raise NotImplementedError(f"{self.name}: an atlas serves 2-d arrays only; this one is {len(self.shape)}-d")
        rows = axis_positions(selection, 0, self.shape[0])
        cols = selection[1] if len(selection) > 1 else None
        if cols is not None and is_full(cols, self.shape[1]):
            cols = None
        to_read, order = sorted_unique(rows)
        return to_read, cols, order, self.shape[1] if cols is None else len(cols)

    def _tasks(self, to_read: AxisIndex, cols: AxisIndex | None, width: int) -> tuple[list[tuple], list[int]]:
        sources: list[SourceMeta] = self.extra["sources"]
        columns = self.extra["columns"]
        plan = self.plan
        tasks, blocks = [], []
        for i, local in split_rows(to_read, self.extra["offsets"]):
            if columns is not None:  # X, layers: the source's column of each joined gene
                want = columns[i] if cols is None else columns[i][as_positions(cols)]
            else:  # obsm: the source's own columns, padded with the fill (none for a source without it)
                info = sources[i].arrays.get(self.name)
                stored = 0 if info is None else info.shape[1]
                own = np.arange(self.shape[1])
                want = np.where(own < stored, own, -1)
                want = want if cols is None else want[as_positions(cols)]
            source = sources[i]
            if columns is not None:  # a view given as a source: its genes are columns of its file
                want = source.file_cols(want)
            if cols is None and want.size == self.shape[1] and np.array_equal(want, np.arange(want.size)):
                want = None  # the file's columns are the result's, in order
            step = self._rows_per_task(source, width)
            for start in range(0, len(local), step):
                part = source.file_rows(local[start:start + step])
                tasks.append((read_block, source.ref, source.identity, self.name, part, want, width, plan))
                blocks.append(len(part))
        return tasks, blocks

    def _rows_per_task(self, source: SourceMeta, width: int) -> int:
        if self.plan.sparse:
            return SPARSE_ROWS_PER_TASK
        return max(1, TARGET_CHUNK_BYTES // max(1, width * self.dtype.itemsize))

    def read_selection(self, selection: Selection) -> Any:
        """``array[selection]`` as numpy or scipy: :meth:`select_graph` computed (on the
        ``distributed.Client`` when one is dask's scheduler). Small reads of local HDF5 sources run in this
        thread unless a scheduler was chosen (:meth:`_in_one_thread`): the graph's tasks called in order,
        without dask (its synchronous scheduler cost ~0.5 ms per task around reads that take less: a
        minibatch of 256 random cells reads a row from ~230 sources).
        """
        to_read, cols, order, n_out = self._plan_selection(selection)
        tasks, blocks = self._tasks(to_read, cols, n_out)
        if not self._in_one_thread(selection, tasks):
            return to_plain(cluster.compute(self._graph(to_read, cols, order, n_out, tasks, blocks)))
        blocks = [function(*args) for function, *args in tasks]
        if not blocks:
            return to_plain(_empty(self.plan.sparse, self.dtype, (0, n_out)))
        values = blocks[0] if len(blocks) == 1 else \
            sparse.vstack(blocks, format="csr") if self.plan.sparse else np.concatenate(blocks)
        return to_plain(values if order is None else values[order])

    def _in_one_thread(self, selection: Selection, tasks: list[tuple]) -> bool:
        """Whether ``array[selection]``, read by ``tasks`` (:meth:`_tasks`), is better read in this thread: no
        scheduler chosen (no ``distributed.Client``, none set in dask's config), every source a local HDF5
        file, and tasks that read little each. h5py makes one call at a time in a process, so threads do
        not read HDF5 files side by side; they only take turns, which costs more than the reads when these
        are small (a row from each of 1,000 files: 1.4 s in one thread, 1.6-1.7 s in dask's threads once
        the files are open, 4.9 s and 7.0 s before).
        """
        import dask

        sources: list[SourceMeta] = self.extra["sources"]
        if dask.config.get("scheduler", None) is not None or \
                cluster.current_client(reads=[task[1].path for task in tasks]) is not None:
            return False
        if any(s.ref.capabilities.parallel_reads for s in sources):
            return False
        return self.nbytes(selection) <= ONE_THREAD_BYTES_PER_TASK * max(1, len(tasks))

    def materialize(self) -> Any:
        """The whole array."""
        return self.read_selection(())

    def nbytes(self, selection: Selection = ()) -> int:
        """About how many bytes reading ``array[selection]`` reads: each selected source's stored size
        scaled by the share of its rows selected and of the genes selected (from the catalog only).
        """
        rows = axis_positions(selection, 0, self.shape[0])
        cols = selection[1] if len(selection) > 1 else None
        share = 1.0 if cols is None or not self.shape[1] else len(cols) / self.shape[1]
        total = 0.0
        for i, local in split_rows(sorted_unique(rows)[0], self.extra["offsets"]):
            source = self.extra["sources"][i]
            info = source.arrays.get(self.name)
            if info is None:  # an obsm entry this source lacks (an outer join fills it): nothing read
                continue
            total += info.nbytes * len(local) / max(1, source.n_obs) * share
        return int(total)

    def info(self) -> dict[str, Any]:
        """Shape, dtype, encoding and stored size, from the catalog."""
        stored = sum(s.arrays[self.name].nbytes for s in self.extra["sources"] if self.name in s.arrays)
        return {"shape": self.shape, "dtype": str(self.dtype), "encoding": self.encoding,
                "chunks": "one run per source", "stored": stored}


@dataclass(frozen=True)
class AtlasSparseSpec(AtlasArraySpec):
    """An atlas array whose result is sparse (CSR), as anndata.concat gives it when any source is."""

    is_sparse = True


def read_block(ref: Any, identity: list[Any], rel: str, rows: AxisIndex, want: np.ndarray | None,
               width: int, plan: ArrayPlan) -> Any:
    """Rows ``rows`` of one source's element ``rel`` (positions in its file, in the result's order), as
    columns of the result: ``want`` gives, for each result column, the file's column (-1: not measured
    there, filled); ``None``: the file's columns as they are. Genes the source did not measure are never
    read; a block of only such genes opens no file.
    """
    n = len(rows)
    present = None if want is None else np.flatnonzero(want >= 0)
    if present is not None and present.size == 0:
        return _filled(n, width, plan)
    spec = source_element(SourceKey(ref, identity), rel)
    # a CSR source whose scattered rows are read without holding more than them (not a sharded Zarr array
    # read through zarr's pipeline, which decodes every inner chunk such a read touches at once: it reads
    # through its own tasks below)
    if spec.is_sparse and spec.major_axis == 0 and spec.stored("data").capabilities.bounded_ranges:
        lookup = None if want is None else _result_columns(want, present, spec.shape[1])
        if want is None or lookup is not None:
            return _from_csr_rows(spec, rows, lookup, present, width, plan)
    if want is None:
        values = _read(spec, rows, None)
        return _as_result(values, plan)
    unique, inverse = np.unique(want[present], return_inverse=True)
    values = _read(spec, rows, unique)
    if plan.sparse:
        coo = sparse.csc_matrix(values)[:, inverse].tocoo() if sparse.issparse(values) else \
            sparse.coo_matrix(np.asarray(values)[:, inverse])
        out = sparse.csr_matrix((coo.data.astype(plan.dtype, copy=False), (coo.row, present[coo.col])),
                                shape=(n, width), dtype=plan.dtype)
        if plan.fill != 0 and present.size < width:
            out = out + _filled(n, width, plan, exclude=present)
        out.sort_indices()
        return out
    dense = values.toarray() if sparse.issparse(values) else np.asarray(values)
    out = np.full((n, width), plan.fill, dtype=plan.dtype)
    out[:, present] = dense[:, inverse]
    return out


def _result_columns(want: np.ndarray, present: np.ndarray, n_file_columns: int) -> np.ndarray | None:
    """``want`` inverted: each file column's result column (-1: not in the result), or ``None`` when a file
    column is asked for twice (``atlas[:, [g, g]]``).
    """
    lookup = np.full(n_file_columns, -1, dtype=np.int64)
    lookup[want[present]] = present
    return lookup if np.count_nonzero(lookup >= 0) == present.size else None


def _from_csr_rows(spec: ElementSpec, rows: AxisIndex, lookup: np.ndarray | None, present: np.ndarray | None,
                   width: int, plan: ArrayPlan) -> Any:
    """:func:`read_block` of a CSR source: the rows' stored entries (only their byte ranges), each entry's
    file column mapped to its result column through ``lookup`` (:func:`_result_columns`; ``None``: the
    file's columns are the result's), in one pass.

    This is the path of a random minibatch (a row or two from each of hundreds of sources), so it builds no
    intermediate matrix: the general path (a column selection, then a reorder, then a COO placement) cost
    ~1.5 ms per source for a row.
    """
    to_read, order = sorted_unique(rows)
    data, indices, indptr = read_major_entries(spec, to_read)
    n = indptr.size - 1
    if lookup is None:
        columns = indices
    else:
        columns = lookup[indices]
        kept = np.flatnonzero(columns >= 0)
        if kept.size < columns.size:  # genes of the source outside the selection
            indptr = np.searchsorted(kept, indptr, side="left")
            data, columns = data[kept], columns[kept]
    if plan.sparse:
        out = sparse.csr_matrix((data.astype(plan.dtype, copy=False), columns, indptr), shape=(n, width))
        if lookup is not None:
            out.has_sorted_indices = False
            out.sort_indices()  # the joined order need not be the file's
            if plan.fill != 0 and present.size < width:
                out = out + _filled(n, width, plan, exclude=present)
    else:  # a value the source measured but did not store is 0, whatever the fill of unmeasured genes
        out = np.zeros((n, width), dtype=plan.dtype)
        if lookup is not None and plan.fill != 0 and present.size < width:
            out[:, np.setdiff1d(np.arange(width), present)] = plan.fill
        out[np.repeat(np.arange(n), np.diff(indptr)), columns] = data
    return out if order is None else out[order]


def _read(spec: ElementSpec, rows: AxisIndex, cols: np.ndarray | None) -> Any:
    """Rows (in any order) and columns (increasing, or all) of a source's element, through its own spec."""
    if spec.is_sparse:
        selection = (lambda key: (key, cols)) if cols is not None else (lambda key: (key,))
        return read_in_order(rows, lambda key: to_plain(spec.read_selection(selection(key))), slices=False)
    values = read_in_order(rows, spec.read_rows)
    return values if cols is None else values[:, cols]


def _as_result(values: Any, plan: ArrayPlan) -> Any:
    if plan.sparse:
        return sparse.csr_matrix(values, dtype=plan.dtype)
    dense = values.toarray() if sparse.issparse(values) else np.asarray(values)
    return dense.astype(plan.dtype, copy=False)


def _filled(n: int, width: int, plan: ArrayPlan, exclude: np.ndarray | None = None) -> Any:
    """A block of ``n`` rows holding only the fill value (in all columns but ``exclude``)."""
    if not plan.sparse:
        return np.full((n, width), plan.fill, dtype=plan.dtype)
    if plan.fill == 0:
        return sparse.csr_matrix((n, width), dtype=plan.dtype)
    keep = np.setdiff1d(np.arange(width), exclude if exclude is not None else [])
    block = np.zeros((n, width), dtype=plan.dtype)
    block[:, keep] = plan.fill
    return sparse.csr_matrix(block)


def _empty(is_sparse: bool, dtype: np.dtype, shape: tuple[int, ...]) -> Any:
    return sparse.csr_matrix(shape, dtype=dtype) if is_sparse else np.empty(shape, dtype=dtype)
