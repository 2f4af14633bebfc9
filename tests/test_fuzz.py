"""Mutation fuzzing of malformed files (issue #15, point 3): damaged inputs derived from valid files.

From small valid files written by the installed anndata/mudata (h5ad, Zarr v2, Zarr v3, h5mu), a seeded
RNG derives a few hundred damaged inputs: attributes (encodings, shapes, ``_index``/``column-order``),
values (sparse positions, categorical codes, nullable masks, dtypes, lengths), structure (children
deleted, arrays and groups swapped, uns nested deeper than Python recurses), Zarr metadata (bad JSON,
missing keys, zero chunks, unknown dtypes and codecs, in each node's own file or in the consolidated
metadata), chunk bytes and HDF5 bytes (at deterministic offsets, object headers included).

Each input is opened in a fresh process under a memory cap (``RLIMIT_AS``) and a time cap (an alarm per
input, and a kill from outside for a hang in C code), and touched: repr, X (scipy and dask), obs, var,
every mapping entry, raw, ``to_memory()``. Its outcome is one of

- ``ok``: every value equals anndata's (or mudata's) read of the same file, or that read fails too;
- ``error``: a :class:`~shadows.errors.ShadowsError` whose message names the file;
- an escape: any other exception, a crash, a timeout, a memory error, or a value that differs from what
  anndata reads where anndata reads the file.

Inputs are run by groups of ``GROUP`` per probe, a child forked from the tests' fork server
(:func:`helpers.fork_server`: the imports are made once). Every input must be handled: the test of each
group fails on any escape not listed in ``KNOWN_ESCAPES``, and on a listed one that no longer escapes.
``python tests/test_fuzz.py`` runs everything and prints the table per format.

``pytest`` runs every other group on a stack (:data:`STACK_GROUPS`): the stack of anndata 0.12 the even
groups, that of 0.13 the odd ones; CI tests both stacks, so each CI run probes every input once (every input
on both stacks took ~150 s of each stack's ~1,000 s).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import select
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import make_adata, write, zarr_format
from helpers import ForkedProcess, fork_server

SEED = 15
#: Inputs generated per format, and inputs run by one probe.
PER_FORMAT = {"h5ad": 100, "zarr2": 100, "zarr3": 100, "h5mu": 60}
GROUP = 25
#: Memory a probe process may map (its imports take about 1 GiB of address space).
MEMORY_CAP = 3 * 2**30
#: Seconds one input may take before its alarm fires, and before a process stuck in C code is killed.
ALARM_S = 20
KILL_S = 30
#: uns levels of the deep-nesting input (Python's recursion limit is 1,000).
DEEP_UNS = 1200

#: The name of the input that is the valid file itself (each group reads it first: it must be ``ok``).
CONTROL = "control: the valid file"

@dataclass(frozen=True)
class KnownEscape:
    """Inputs of a format (their names matching ``pattern``) that still escape, and why.

    ``always``: every matching input escapes (the test fails when one no longer does: remove the
    entry); otherwise whether one escapes depends on bytes no one controls.
    """

    fmt: str
    pattern: str
    reason: str
    always: bool = True
    anndata: str = ""  # the anndata releases it is seen with (a version prefix), if not all

    def matches(self, fmt: str, name: str) -> bool:
        """Whether the input ``name`` of format ``fmt`` is one of these, with the installed anndata."""
        from importlib.metadata import version

        return (fmt == self.fmt and re.search(self.pattern, name) is not None
                and version("anndata").startswith(self.anndata))


#: None escape now; an escape that cannot be handled yet is listed here with the reason.
KNOWN_ESCAPES: list[KnownEscape] = []


# --------------------------------------------------------------------------------------------------------
# the files: valid ones, their inventory, and the stores that edit them


@dataclass(frozen=True)
class Node:
    """One stored node of a valid file: its path, whether a group, its attributes, its array facts."""

    path: str
    group: bool
    attrs: dict[str, Any] = field(hash=False)
    shape: tuple[int, ...] = ()
    kind: str = ""  # numpy dtype kind ("O" for strings)


def valid_file(folder: Path, fmt: str) -> Path:
    """Write the small valid file every input of ``fmt`` is derived from."""
    if fmt == "h5mu":
        import mudata

        path = folder / "base.h5mu"
        mdata = mudata.MuData({"rna": make_adata(n_obs=30, n_vars=10), "prot": make_adata(n_obs=30, n_vars=6, seed=1)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mdata.write_h5mu(path)
        return path
    return write(make_adata(n_obs=30, n_vars=10), folder / ("base.h5ad" if fmt == "h5ad" else "base.zarr"), fmt)


def inventory(path: Path) -> list[Node]:
    """Every node of a valid file, sorted by path."""
    import h5py
    import zarr

    found = []
    if path.is_file():
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: found.append(_h5_node(name, obj)))
    else:
        for name, obj in zarr.open_group(path, mode="r", use_consolidated=False).members(max_depth=None):
            found.append(_zarr_node(name, obj))
    return sorted(found, key=lambda n: n.path)


def _h5_node(name: str, obj: Any) -> Node:
    import h5py

    attrs = {k: _plain_attr(v) for k, v in obj.attrs.items()}
    if isinstance(obj, h5py.Group):
        return Node(name, True, attrs)
    kind = "O" if h5py.check_string_dtype(obj.dtype) or obj.dtype.kind in "SU" else obj.dtype.kind
    return Node(name, False, attrs, tuple(obj.shape), kind)


def _zarr_node(name: str, obj: Any) -> Node:
    import zarr

    attrs = dict(obj.attrs)
    if isinstance(obj, zarr.Group):
        return Node(name, True, attrs)
    dtype = obj.dtype if isinstance(obj.dtype, np.dtype) else obj.dtype.to_native_dtype()
    kind = "O" if dtype.kind in "OSUT" else dtype.kind
    return Node(name, False, attrs, tuple(obj.shape), kind)


def _plain_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_plain_attr(v) for v in value.tolist()]
    return value.item() if isinstance(value, np.generic) else value


class H5Store:
    """Edits of an HDF5 file (h5ad or h5mu)."""

    def __init__(self, path: Path):
        self.path = path

    def _file(self):
        import h5py

        return h5py.File(self.path, "r+")

    def set_attr(self, node: str, key: str, value: Any) -> None:
        with self._file() as f:
            f[node].attrs[key] = value

    def del_attr(self, node: str, key: str) -> None:
        with self._file() as f:
            del f[node].attrs[key]

    def values(self, node: str) -> np.ndarray:
        with self._file() as f:
            obj = f[node]
            return obj.asstr()[()] if obj.dtype.kind == "O" else obj[()]

    def replace_array(self, node: str, values: np.ndarray, keep_attrs: bool = True) -> None:
        import h5py

        with self._file() as f:
            attrs = dict(f[node].attrs) if keep_attrs else {}
            del f[node]
            dtype = h5py.string_dtype() if values.dtype.kind in "OU" else None
            new = f.create_dataset(node, data=values.astype(object) if dtype else values, dtype=dtype)
            new.attrs.update(attrs)

    def delete(self, node: str) -> None:
        with self._file() as f:
            del f[node]

    def to_group(self, node: str) -> None:
        with self._file() as f:
            del f[node]
            f.create_group(node)

    def to_array(self, node: str) -> None:
        with self._file() as f:
            attrs = dict(f[node].attrs)
            del f[node]
            f.create_dataset(node, data=np.arange(3)).attrs.update(attrs)

    def nest(self, node: str, depth: int) -> None:
        with self._file() as f:
            group = f[node]
            for _ in range(depth):
                group = group.create_group("d")
                group.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
            group["leaf"] = 1

    def finish(self, rng: np.random.Generator) -> str:
        return ""


class ZarrStore:
    """Edits of a Zarr store (format 2 or 3), its consolidated metadata kept, dropped or left stale."""

    def __init__(self, path: Path):
        self.path = path
        self.v3 = (path / "zarr.json").exists()

    def _group(self):
        import zarr

        return zarr.open_group(self.path, mode="r+", use_consolidated=False)

    def _meta_file(self, node: str, attrs: bool) -> Path:
        folder = self.path / node
        if self.v3:
            return folder / "zarr.json"
        if attrs:
            return folder / ".zattrs"
        return folder / (".zarray" if (folder / ".zarray").exists() else ".zgroup")

    def _edit_attrs(self, node: str, edit: Callable[[dict], None]) -> None:
        file = self._meta_file(node, attrs=True)
        doc = json.loads(file.read_text()) if file.exists() else {}
        edit(doc.setdefault("attributes", {}) if self.v3 else doc)
        file.write_text(json.dumps(doc))

    def set_attr(self, node: str, key: str, value: Any) -> None:
        self._edit_attrs(node, lambda attrs: attrs.__setitem__(key, value))

    def del_attr(self, node: str, key: str) -> None:
        self._edit_attrs(node, lambda attrs: attrs.pop(key, None))

    def values(self, node: str) -> np.ndarray:
        values = self._group()[node][...]
        return np.asarray(values, dtype=object) if values.dtype.kind in "OTU" else np.asarray(values)

    def replace_array(self, node: str, values: np.ndarray, keep_attrs: bool = True) -> None:
        import anndata as ad

        group = self._group()
        attrs = dict(group[node].attrs) if keep_attrs else {}
        del group[node]
        parent, name = node.rsplit("/", 1) if "/" in node else ("", node)
        with zarr_format("zarr3" if self.v3 else "zarr2"):
            if values.dtype.kind in "OU":
                ad.io.write_elem(group[parent] if parent else group, name, values.astype(object))
            else:
                group.create_array(node, data=values)
        group[node].attrs.update(attrs)

    def delete(self, node: str) -> None:
        shutil.rmtree(self.path / node)

    def to_group(self, node: str) -> None:
        self.delete(node)
        self._group().create_group(node)

    def to_array(self, node: str) -> None:
        attrs = dict(self._group()[node].attrs)
        self.delete(node)
        self._group().create_array(node, data=np.arange(3)).attrs.update(attrs)

    def nest(self, node: str, depth: int) -> None:
        """Write ``depth`` nested dict groups under ``node`` as metadata files (the API takes seconds)."""
        attrs = {"encoding-type": "dict", "encoding-version": "0.1.0"}
        folder = self.path / node
        for _ in range(depth):
            folder = folder / "d"
            folder.mkdir()
            if self.v3:
                (folder / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                              "attributes": attrs}))
            else:
                (folder / ".zgroup").write_text('{"zarr_format": 2}')
                (folder / ".zattrs").write_text(json.dumps(attrs))

    def finish(self, rng: np.random.Generator) -> str:
        """Consolidate the metadata again, drop it, or leave it stale; which, as a word for the name."""
        import zarr

        choice = str(rng.choice(["reconsolidated", "unconsolidated", "stale"], p=[0.5, 0.3, 0.2]))
        if choice == "reconsolidated":
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    zarr.consolidate_metadata(self.path)
            except Exception:  # metadata zarr itself refuses: leave it unconsolidated
                choice = "unconsolidated"
        if choice == "unconsolidated":
            drop_consolidated(self.path)
        return choice


def drop_consolidated(path: Path) -> None:
    """Remove a Zarr store's consolidated metadata (format 2 or 3)."""
    if (path / ".zmetadata").exists():
        (path / ".zmetadata").unlink()
    root = path / "zarr.json"
    if root.exists():
        try:
            doc = json.loads(root.read_text())
        except ValueError:
            return
        doc.pop("consolidated_metadata", None)
        root.write_text(json.dumps(doc))


def remove_tree(path: Path) -> None:
    """Remove a folder however deep (``shutil.rmtree`` recurses once per level: not past 1,000)."""
    stack = [str(path)]
    while stack:
        entries = list(os.scandir(stack[-1]))
        folders = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        if folders:
            stack += folders
            continue
        for entry in entries:
            os.unlink(entry.path)
        os.rmdir(stack.pop())


def store_for(path: Path) -> H5Store | ZarrStore:
    """The editor for the file at ``path``."""
    return H5Store(path) if path.is_file() else ZarrStore(path)


# --------------------------------------------------------------------------------------------------------
# mutations


@dataclass(frozen=True)
class Mutation:
    """One damage: a stable name, the element it targets, and how to apply it to a copy of the file."""

    name: str
    target: str
    apply: Callable[[Any, np.random.Generator], None]


def _pick(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _with(nodes: list[Node], test: Callable[[Node], bool]) -> list[Node]:
    return [n for n in nodes if test(n)]


def _encoded(nodes: list[Node], *types: str) -> list[Node]:
    return _with(nodes, lambda n: n.attrs.get("encoding-type") in types)


def attr_encoding(rng, nodes: list[Node], fmt: str) -> Mutation:
    """encoding-type swapped with another one stored in the file, or garbage."""
    node = _pick(rng, _with(nodes, lambda n: "encoding-type" in n.attrs))
    types = sorted({n.attrs["encoding-type"] for n in nodes if "encoding-type" in n.attrs} | {"garbage", ""})
    value = _pick(rng, [t for t in types if t != node.attrs["encoding-type"]])
    return Mutation(f"attr:{node.path}:encoding-type={value}", node.path,
                    lambda s, r: s.set_attr(node.path, "encoding-type", value))


def attr_version(rng, nodes: list[Node], fmt: str) -> Mutation:
    """encoding-version unknown, empty or not a string."""
    node = _pick(rng, _with(nodes, lambda n: "encoding-version" in n.attrs))
    value = _pick(rng, ["9.9.9", "", 7, "0.1.0", "0.2.0"])
    return Mutation(f"attr:{node.path}:encoding-version={value!r}", node.path,
                    lambda s, r: s.set_attr(node.path, "encoding-version", value))


def attr_shape(rng, nodes: list[Node], fmt: str) -> Mutation:
    """A sparse matrix's shape attribute wrong, negative, huge, of the wrong length or not numbers."""
    node = _pick(rng, _with(nodes, lambda n: "shape" in n.attrs))
    n, m = node.attrs["shape"]
    value = _pick(rng, [[-1, m], [n, -5], [10**12, 10**12], [n], [n, m, 2], ["a", "b"], [0, 0], [n + 5, m],
                        [n, m + 3], [n - 1, m], [m, n]])
    return Mutation(f"attr:{node.path}:shape={value}", node.path, lambda s, r: s.set_attr(node.path, "shape", value))


def attr_frame(rng, nodes: list[Node], fmt: str) -> Mutation:
    """A dataframe's _index or column-order: not strings, naming missing or repeated columns."""
    node = _pick(rng, _encoded(nodes, "dataframe"))
    columns = list(node.attrs.get("column-order", []))
    first = columns[0] if columns else node.attrs["_index"]
    key, value = _pick(rng, [
        ("_index", 5), ("_index", "no_such"), ("_index", [node.attrs["_index"]]), ("_index", first),
        ("column-order", [1, 2]), ("column-order", [*columns, "no_such"]), ("column-order", [first, *columns]),
        ("column-order", "".join(columns)), ("column-order", []), ("column-order", columns[::-1]),
        ("column-order", [*columns, node.attrs["_index"]]),
    ])
    return Mutation(f"attr:{node.path}:{key}={value!r}", node.path, lambda s, r: s.set_attr(node.path, key, value))


def attr_ordered(rng, nodes: list[Node], fmt: str) -> Mutation:
    """A categorical's ordered flag not a boolean."""
    node = _pick(rng, _encoded(nodes, "categorical"))
    value = _pick(rng, ["yes", 3, [True]])
    return Mutation(f"attr:{node.path}:ordered={value!r}", node.path,
                    lambda s, r: s.set_attr(node.path, "ordered", value))


def attr_delete(rng, nodes: list[Node], fmt: str) -> Mutation:
    """One attribute of one node deleted."""
    node = _pick(rng, _with(nodes, lambda n: bool(n.attrs)))
    key = _pick(rng, sorted(node.attrs))
    return Mutation(f"attr:{node.path}:del {key}", node.path, lambda s, r: s.del_attr(node.path, key))


def _edit_values(name: str, node: Node, edit: Callable[[np.ndarray], np.ndarray]) -> Mutation:
    return Mutation(f"values:{node.path}:{name}", node.path,
                    lambda s, r: s.replace_array(node.path, edit(s.values(node.path))))


def _set_at(values: np.ndarray, at: int, value: Any) -> np.ndarray:
    out = values.astype(np.int64) if values.dtype.kind in "iu" else values.copy()
    out[at] = value
    return out


def values_sparse(rng, nodes: list[Node], fmt: str) -> Mutation:
    """Sparse positions out of range: indices past the width or negative, indptr decreasing, past the
    data, negative, or stored as float.
    """
    group = _pick(rng, _encoded(nodes, "csr_matrix", "csc_matrix"))
    n, m = group.attrs["shape"]
    minor = m if group.attrs["encoding-type"] == "csr_matrix" else n
    at = int(rng.integers(3))
    edits = {
        "indices past the width": ("indices", lambda v: _set_at(v, at, minor + 7)),
        "negative index": ("indices", lambda v: _set_at(v, at, -1)),
        "indptr decreasing": ("indptr", lambda v: _set_at(v, len(v) // 2, int(v[-1]) + 1 if len(v) > 2 else -1)),
        "indptr past data": ("indptr", lambda v: _set_at(v, len(v) - 1, int(v[-1]) + 100)),
        "indptr negative": ("indptr", lambda v: _set_at(v, 0, -3)),
        "float indptr": ("indptr", lambda v: v.astype(np.float64)),
        "float indices": ("indices", lambda v: v.astype(np.float64) + 0.5),
        "indices shorter": ("indices", lambda v: v[:-1]),
        "data longer": ("data", lambda v: np.concatenate([v, v[:2]])),
    }
    what = _pick(rng, sorted(edits))
    part, edit = edits[what]
    return _edit_values(what, Node(f"{group.path}/{part}", False, {}), edit)


def values_categorical(rng, nodes: list[Node], fmt: str) -> Mutation:
    """Categorical codes past the categories or below -1, categories repeated, codes as float."""
    group = _pick(rng, _encoded(nodes, "categorical"))
    edits = {
        "codes past the categories": ("codes", lambda v: _set_at(v, 1, int(v.max()) + 3)),
        "codes below -1": ("codes", lambda v: _set_at(v, 2, -7)),
        "float codes": ("codes", lambda v: v.astype(np.float64)),
        "categories repeated": ("categories", lambda v: np.concatenate([v, v[:1]])),
        "categories empty": ("categories", lambda v: v[:0]),
    }
    what = _pick(rng, sorted(edits))
    part, edit = edits[what]
    return _edit_values(what, Node(f"{group.path}/{part}", False, {}), edit)


def values_nullable(rng, nodes: list[Node], fmt: str) -> Mutation:
    """A nullable array's mask or values of the wrong length, or a mask that is not boolean."""
    group = _pick(rng, _encoded(nodes, "nullable-integer", "nullable-boolean", "nullable-string-array"))
    edits = {
        "mask shorter": ("mask", lambda v: v[:-1]),
        "mask longer": ("mask", lambda v: np.concatenate([v, v[:1]])),
        "mask of ints": ("mask", lambda v: v.astype(np.int64) * 2),
        "values shorter": ("values", lambda v: v[:-1]),
    }
    what = _pick(rng, sorted(edits))
    part, edit = edits[what]
    return _edit_values(what, Node(f"{group.path}/{part}", False, {}), edit)


def values_array(rng, nodes: list[Node], fmt: str) -> Mutation:
    """Any array: one entry removed or added, reshaped, its dtype changed, or an integer out of range."""
    node = _pick(rng, _with(nodes, lambda n: not n.group and len(n.shape) >= 1 and n.shape[0] > 1))
    edits: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "one entry fewer": lambda v: v[:-1],
        "one entry more": lambda v: np.concatenate([v, v[:1]]),
        "2-d": lambda v: v.reshape(v.shape[0], -1)[:, :1].repeat(2, axis=1),
        "scalar": lambda v: np.asarray(v.flat[0]),
        "as strings": lambda v: v.astype(str).astype(object),
    }
    if node.kind in "iub":
        edits["huge value"] = lambda v: _set_at(v, 0, 2**40)
        edits["as float"] = lambda v: v.astype(np.float64) + 0.5
    if node.kind == "O":
        edits["as ints"] = lambda v: np.arange(v.size).reshape(v.shape)
    what = _pick(rng, sorted(edits))
    return _edit_values(what, node, edits[what])


def structure_delete(rng, nodes: list[Node], fmt: str) -> Mutation:
    """One node deleted."""
    node = _pick(rng, nodes)
    return Mutation(f"structure:{node.path}:deleted", node.path, lambda s, r: s.delete(node.path))


def structure_swap(rng, nodes: list[Node], fmt: str) -> Mutation:
    """An array replaced by an empty group, or a group by a small array (its attributes kept)."""
    node = _pick(rng, nodes)
    if node.group:
        return Mutation(f"structure:{node.path}:group to array", node.path, lambda s, r: s.to_array(node.path))
    return Mutation(f"structure:{node.path}:array to group", node.path, lambda s, r: s.to_group(node.path))


def structure_deep(rng, nodes: list[Node], fmt: str) -> Mutation:
    """uns nested deeper than Python's recursion limit."""
    uns = _pick(rng, _with(nodes, lambda n: n.path.endswith("uns") and n.group))
    return Mutation(f"structure:{uns.path}:nested {DEEP_UNS} levels", uns.path,
                    lambda s, r: s.nest(uns.path, DEEP_UNS))


#: What the metadata edits do to an array's metadata document (format 2 keys, format 3 keys).
V2_EDITS: dict[str, Callable[[dict], None]] = {
    "chunks 0": lambda d: d.__setitem__("chunks", [0] * len(d["chunks"])),
    "chunks negative": lambda d: d.__setitem__("chunks", [-2] * len(d["chunks"])),
    "shape negative": lambda d: d.__setitem__("shape", [-4] * len(d["shape"])),
    "shape huge": lambda d: d.__setitem__("shape", [10**12] * len(d["shape"])),
    "shape of another rank": lambda d: d.__setitem__("shape", [*d["shape"], 2]),
    "dtype garbage": lambda d: d.__setitem__("dtype", "garbage"),
    "dtype <f17": lambda d: d.__setitem__("dtype", "<f17"),
    "dtype object": lambda d: d.__setitem__("dtype", "|O"),
    "unknown compressor": lambda d: d.__setitem__("compressor", {"id": "nosuchcodec"}),
    "unknown filter": lambda d: d.__setitem__("filters", [{"id": "nosuchfilter"}]),
    "fill_value text": lambda d: d.__setitem__("fill_value", "abc"),
    "zarr_format 5": lambda d: d.__setitem__("zarr_format", 5),
    "order Q": lambda d: d.__setitem__("order", "Q"),
    "shape not a list": lambda d: d.__setitem__("shape", "x"),
}
V3_EDITS: dict[str, Callable[[dict], None]] = {
    "chunks 0": lambda d: d["chunk_grid"]["configuration"].__setitem__(
        "chunk_shape", [0] * len(d["chunk_grid"]["configuration"]["chunk_shape"])),
    "chunks negative": lambda d: d["chunk_grid"]["configuration"].__setitem__(
        "chunk_shape", [-2] * len(d["chunk_grid"]["configuration"]["chunk_shape"])),
    "shape negative": lambda d: d.__setitem__("shape", [-4] * len(d["shape"])),
    "shape huge": lambda d: d.__setitem__("shape", [10**12] * len(d["shape"])),
    "shape of another rank": lambda d: d.__setitem__("shape", [*d["shape"], 2]),
    "data_type garbage": lambda d: d.__setitem__("data_type", "garbage"),
    "data_type float17": lambda d: d.__setitem__("data_type", "float17"),
    "data_type object": lambda d: d.__setitem__("data_type", {"name": "struct", "configuration": 5}),
    "unknown codec": lambda d: d.__setitem__("codecs", [*d["codecs"], {"name": "nosuchcodec"}]),
    "codecs empty": lambda d: d.__setitem__("codecs", []),
    "fill_value text": lambda d: d.__setitem__("fill_value", "abc"),
    "zarr_format 5": lambda d: d.__setitem__("zarr_format", 5),
    "node_type banana": lambda d: d.__setitem__("node_type", "banana"),
    "chunk grid unknown": lambda d: d.__setitem__("chunk_grid", {"name": "irregular"}),
    "shape not a list": lambda d: d.__setitem__("shape", "x"),
}
V2_KEYS = ("chunks", "compressor", "dtype", "fill_value", "filters", "order", "shape", "zarr_format")
V3_KEYS = ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs", "node_type",
           "zarr_format")


def _consolidated(store: ZarrStore) -> tuple[Path, Callable[[dict], dict]] | None:
    """The consolidated metadata file and how to find a node's entries in it, if the store has one."""
    if store.v3:
        root = store.path / "zarr.json"
        doc = json.loads(root.read_text())
        if "consolidated_metadata" not in doc:
            return None
        return root, lambda d: d["consolidated_metadata"]["metadata"]
    if not (store.path / ".zmetadata").exists():
        return None
    return store.path / ".zmetadata", lambda d: d["metadata"]


def _edit_json(file: Path, edit: Callable[[dict], None]) -> None:
    doc = json.loads(file.read_text())
    edit(doc)
    file.write_text(json.dumps(doc))


def _edit_node_meta(store: ZarrStore, node: str, where: str, edit: Callable[[dict], None]) -> None:
    """Apply ``edit`` to a node's metadata document in its own file, in the consolidated one, or both."""
    if where in ("own", "both"):
        _edit_json(store._meta_file(node, attrs=False), edit)
    found = _consolidated(store)
    if where in ("consolidated", "both") and found is not None:
        file, entries = found
        key = node if store.v3 else f"{node}/{'.zarray' if (store.path / node / '.zarray').exists() else '.zgroup'}"
        _edit_json(file, lambda d: edit(entries(d)[key]))


def zarr_metadata(rng, nodes: list[Node], fmt: str) -> Mutation:
    """An array's metadata: a key removed or given a value zarr cannot use, in its own file and/or in
    the consolidated metadata.
    """
    node = _pick(rng, _with(nodes, lambda n: not n.group))
    where = _pick(rng, ["own", "consolidated", "both"])
    edits, keys = (V3_EDITS, V3_KEYS) if fmt == "zarr3" else (V2_EDITS, V2_KEYS)
    what = _pick(rng, [*sorted(edits), *(f"without {k}" for k in keys)])
    edit = edits.get(what) or (lambda d: d.pop(what.removeprefix("without "), None))
    return Mutation(f"zarr-meta:{node.path}:{where}:{what}", node.path,
                    lambda s, r: _edit_node_meta(s, node.path, where, edit))


def zarr_json(rng, nodes: list[Node], fmt: str) -> Mutation:
    """A metadata file (a node's own, its attributes', or the consolidated one) that is not JSON: cut in
    half, empty, a lone brace, or a NUL byte in it.
    """
    node = _pick(rng, nodes)
    how = _pick(rng, ["cut", "empty", "brace", "nul"])
    which = _pick(rng, ["own", "consolidated"] if fmt == "zarr3" else ["own", "attributes", "consolidated"])

    def apply(store: ZarrStore, r: np.random.Generator) -> None:
        found = _consolidated(store) if which == "consolidated" else None
        file = found[0] if found is not None else store._meta_file(node.path, attrs=which == "attributes")
        text = file.read_text() if file.exists() else "{}"
        text = {"cut": text[: len(text) // 2], "empty": "", "brace": "{", "nul": text.replace(":", "\0:", 1)}[how]
        file.write_text(text)

    return Mutation(f"zarr-json:{node.path}:{which}:{how}", node.path if which != "consolidated" else "", apply)


def zarr_chunk(rng, nodes: list[Node], fmt: str) -> Mutation:
    """A stored chunk cut, emptied, zeroed, its bytes flipped or garbage appended."""
    node = _pick(rng, _with(nodes, lambda n: not n.group and int(np.prod(n.shape)) > 0))
    how = _pick(rng, ["cut", "empty", "zeroed", "flipped", "appended"])

    def apply(store: ZarrStore, r: np.random.Generator) -> None:
        chunks = sorted(p for p in (store.path / node.path).rglob("*") if p.is_file() and not p.name.startswith(".")
                        and p.name != "zarr.json")
        if not chunks:
            return
        chunk = _pick(r, chunks)
        data = bytearray(chunk.read_bytes())
        if how == "cut":
            data = data[: len(data) // 2]
        elif how == "empty":
            data = bytearray()
        elif how == "zeroed":
            data = bytearray(len(data))
        elif how == "flipped":
            for at in r.integers(0, max(len(data), 1), 4):
                data[int(at) % max(len(data), 1)] ^= 0xFF
        else:
            data += b"garbage"
        chunk.write_bytes(bytes(data))

    return Mutation(f"zarr-chunk:{node.path}:{how}", node.path, apply)


def hdf5_bytes(rng, nodes: list[Node], fmt: str) -> Mutation:
    """Bytes of an HDF5 file overwritten at a deterministic offset: random bytes anywhere in the file, or
    zeros at an object header (its metadata).
    """
    node = _pick(rng, nodes)
    header = bool(rng.integers(2))
    length = int(_pick(rng, [1, 8, 64, 512]))
    offset = int(rng.integers(0, 64))
    seed = int(rng.integers(2**31))

    def apply(store: H5Store, r: np.random.Generator) -> None:
        import h5py

        if header:
            with h5py.File(store.path, "r") as f:
                start = h5py.h5o.get_info(f[node.path].id).addr + offset
            data = bytes(length)
        else:
            size = store.path.stat().st_size
            start = int(np.random.default_rng(seed).integers(0, size - length))
            data = np.random.default_rng(seed).bytes(length)
        with open(store.path, "r+b") as f:
            f.seek(start)
            f.write(data)

    where = f"header of {node.path}+{offset}" if header else f"random offset (seed {seed})"
    return Mutation(f"hdf5-bytes:{where}:{length} {'zeros' if header else 'bytes'}", node.path if header else "",
                    apply)


#: How many inputs of each family a format gets.
FAMILIES: dict[str, list[tuple[Callable, int]]] = {
    "h5ad": [(attr_encoding, 6), (attr_version, 4), (attr_shape, 6), (attr_frame, 8), (attr_ordered, 2),
             (attr_delete, 4), (values_sparse, 12), (values_categorical, 6), (values_nullable, 4),
             (values_array, 10), (structure_delete, 6), (structure_swap, 5), (structure_deep, 1),
             (hdf5_bytes, 26)],
    "zarr": [(attr_encoding, 4), (attr_version, 2), (attr_shape, 3), (attr_frame, 5), (attr_ordered, 1),
             (attr_delete, 3), (values_sparse, 7), (values_categorical, 4), (values_nullable, 3),
             (values_array, 6), (structure_delete, 4), (structure_swap, 4), (structure_deep, 1),
             (zarr_metadata, 22), (zarr_json, 11), (zarr_chunk, 20)],
    "h5mu": [(attr_encoding, 4), (attr_version, 2), (attr_shape, 3), (attr_frame, 5), (attr_delete, 3),
             (values_sparse, 5), (values_categorical, 3), (values_nullable, 2), (values_array, 8),
             (structure_delete, 4), (structure_swap, 3), (structure_deep, 1), (hdf5_bytes, 17)],
}


def mutations(fmt: str, nodes: list[Node]) -> list[Mutation]:
    """The ``PER_FORMAT[fmt]`` mutations of a format, drawn by a seeded RNG from the valid file's nodes."""
    families = FAMILIES["zarr" if fmt.startswith("zarr") else fmt]
    assert sum(n for _, n in families) == PER_FORMAT[fmt]
    rng = np.random.default_rng([SEED, sum(map(ord, fmt))])
    out: list[Mutation] = []
    for family, count in families:
        for _ in range(count):
            out.append(_draw_new(family, rng, nodes, fmt, {m.name for m in out}))
    return [Mutation(f"{i:03d}-{m.name}", m.target, m.apply) for i, m in enumerate(out)]


def _draw_new(family: Callable, rng: np.random.Generator, nodes: list[Node], fmt: str, seen: set[str]) -> Mutation:
    """A mutation of ``family`` not drawn before (when a few draws find one)."""
    for _ in range(20):
        mutation = family(rng, nodes, fmt)
        if mutation.name not in seen:
            break
    return mutation


class ValidFiles(dict):
    """The valid file of each format and its inventory, written on first use into ``folder``."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def __missing__(self, fmt: str) -> tuple[Path, list[Node]]:
        (self.folder / fmt).mkdir(parents=True)
        base = valid_file(self.folder / fmt, fmt)
        self[fmt] = (base, inventory(base))
        return self[fmt]


def build_inputs(fmt: str, valid: ValidFiles, folder: Path, group: int) -> list[dict[str, str]]:
    """Write the inputs of group ``group`` of ``fmt`` into ``folder``; one dict per input for the probe."""
    folder.mkdir(parents=True, exist_ok=True)
    base, nodes = valid[fmt]
    chosen = mutations(fmt, nodes)[group * GROUP : (group + 1) * GROUP]
    kind = "mudata" if fmt == "h5mu" else "anndata"
    inputs = [{"path": str(base), "name": CONTROL, "target": "", "kind": kind}]  # must read as anndata reads it
    for mutation in chosen:
        index = mutation.name[:3]
        path = folder / f"m{index}{base.suffix}"
        (shutil.copytree if base.is_dir() else shutil.copy)(base, path)
        store = store_for(path)
        rng = np.random.default_rng([SEED, int(index)])
        mutation.apply(store, rng)
        # metadata and chunk edits leave the consolidated metadata as they made it
        extra = "" if mutation.name[4:].startswith(("zarr-", "hdf5-")) else store.finish(rng)
        name = f"{mutation.name}:{extra}" if extra else mutation.name
        inputs.append({"path": str(path), "name": name, "target": mutation.target, "kind": kind})
    return inputs


# --------------------------------------------------------------------------------------------------------
# the probe: a fresh process per group of inputs, each input under an alarm, the process under a memory cap

CHILD = r"""
import json, resource, signal, sys, traceback, warnings
cap, alarm_s, tests = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
sys.path.insert(0, tests)
warnings.simplefilter("ignore")
import numpy as np, anndata as ad, scipy.sparse as sp
import shadows
from shadows import ShadowsError
from helpers import assert_mudata_matches, assert_shadow_matches

class Timeout(BaseException):
    pass

def on_alarm(*_):
    raise Timeout(f"no answer within {alarm_s} s")

signal.signal(signal.SIGALRM, on_alarm)

def touch_anndata(s):
    repr(s)
    if s.X is not None:
        s.X.toarray() if sp.issparse(s.X) else np.asarray(s.X)
    s.obs, s.var, s.obs_names, s.var_names
    for slot in ("layers", "obsm", "varm", "obsp", "varp"):
        mapping = getattr(s, slot)
        for key in list(mapping.keys()):
            mapping[key]
    s.uns.materialize()
    if s.raw is not None:
        s.raw.X, s.raw.var, dict(s.raw.varm)

def touch(path, kind):
    if kind == "mudata":
        s = shadows.MuDataShadow(path)
        repr(s)
        s.obs, s.var
        for slot in ("obsm", "varm", "obsp", "varp", "obsmap", "varmap"):
            dict(getattr(s, slot))
        s.uns.materialize()
        for modality in s.mod.values():
            touch_anndata(modality)
    else:
        s = shadows.AnnDataShadow(path)
        touch_anndata(s)
        lazy = shadows.AnnDataShadow(path, array_backend="dask")
        if lazy.X is not None:
            lazy.X.compute()
    s.to_memory()
    return s

def oracle(path, kind):
    if kind == "mudata":
        import contextlib, importlib.metadata, mudata
        # mudata < 0.4 pulls the modalities' columns into the global obs/var on read; shadows show what
        # the file stores, as mudata 0.4 does and as 0.3 does with this option
        old = int(importlib.metadata.version("mudata").split(".")[1]) < 4
        with mudata.set_options(pull_on_update=False) if old else contextlib.nullcontext():
            return mudata.read_h5mu(path)
    return ad.read_h5ad(path) if path.endswith(".h5ad") else ad.read_zarr(path)

def failure(error):
    return {"type": type(error).__module__ + "." + type(error).__qualname__, "message": str(error)[:2000],
            "shadows": isinstance(error, ShadowsError), "traceback": traceback.format_exc()[-3000:]}

def run(item):
    result = {"name": item["name"]}
    try:
        signal.alarm(alarm_s)
        s = touch(item["path"], item["kind"])
        result["stage"] = "oracle"
        try:
            expected = oracle(item["path"], item["kind"])
        except (Exception, Timeout) as error:
            signal.alarm(0)
            result.update(outcome="ok", note="anndata fails too: " + type(error).__name__)
            return result
        result["stage"] = "compare"
        (assert_mudata_matches if item["kind"] == "mudata" else assert_shadow_matches)(s, expected)
        result["outcome"] = "ok"
    except AssertionError as error:
        result.update(outcome="differs", **failure(error))
    except BaseException as error:
        result.update(outcome="raised", **failure(error))
    finally:
        signal.alarm(0)
    return result

for line in open(sys.argv[5]):
    item = json.loads(line)
    print(json.dumps({"start": item["name"]}), flush=True)
    print(json.dumps(run(item)), flush=True)
"""


def _spawn(items: list[dict[str, str]], folder: Path) -> ForkedProcess:
    """A probe for ``items`` (written to a file it reads), forked from the tests' fork server: its imports
    are made, and the probe sets its own memory cap.
    """
    listing = Path(tempfile.mkstemp(suffix=".jsonl", dir=folder)[1])
    listing.write_text("".join(json.dumps(item) + "\n" for item in items))
    return fork_server().start(CHILD, "probe", MEMORY_CAP, ALARM_S, Path(__file__).parent, listing, quick_exit=True)


def _answer(process: ForkedProcess, deadline: float) -> dict | None:
    """The next JSON line of the probe, or ``None`` when it died or the deadline passed."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([process.stdout], [], [], left)[0]:
            return None
        line = process.stdout.readline()
        if not line:
            return None
        if line.startswith("{"):
            return json.loads(line)


def _stop(process: ForkedProcess) -> str:
    """Kill the probe (if still running); the tail of what it wrote to stderr."""
    process.kill()
    process.wait(timeout=60)
    process.stdout.close()
    return process.stderr.read()[-3000:]


def probe_all(inputs: list[dict[str, str]]) -> list[dict]:
    """Run each input through the probe; a probe that crashes or hangs is replaced for the inputs after."""
    results, pending = [], list(inputs)
    with tempfile.TemporaryDirectory() as folder:
        while pending:
            results += _probe_some(pending, Path(folder))
    return results


def _probe_some(pending: list[dict[str, str]], folder: Path) -> list[dict]:
    """Run inputs through one probe until it ends or fails: their results, ``pending`` left with the rest."""
    results = []
    process = _spawn(pending, folder)
    while pending:
        started = _answer(process, time.monotonic() + 120)
        if started is None:
            break
        done = _answer(process, time.monotonic() + KILL_S)
        if done is None:
            break
        results.append(classify(done, pending.pop(0)))
    if pending:
        hung = process.poll() is None
        err = _stop(process)
        what = f"killed after {KILL_S} s" if hung else f"crashed (exit {process.returncode})"
        results.append({"name": pending.pop(0)["name"], "outcome": "escape", "why": what, "detail": err})
    else:
        _stop(process)
    return results


def classify(result: dict, item: dict[str, str]) -> dict:
    """``ok``, ``error`` (a clean ShadowsError naming the file), or ``escape`` with why."""
    if result.get("outcome") == "ok":
        return result
    if result["outcome"] == "differs":
        return {**result, "outcome": "escape", "why": "differs from anndata", "detail": result["message"]}
    detail = f"{result['type']}: {result['message']}"
    if not result["shadows"]:
        return {**result, "outcome": "escape", "why": f"{result['type']}", "detail": detail}
    if Path(item["path"]).name not in result["message"]:
        return {**result, "outcome": "escape", "why": "the message does not name the file", "detail": detail}
    named = f"'{item['target'].split('/')[0]}" in result["message"] if item["target"] else True
    return {**result, "outcome": "error", "names_element": named}


#: The groups ``pytest`` runs on this stack (see the module's docstring): even ones with an even anndata minor
#: version, odd ones with an odd one.
STACK_GROUPS = int(importlib.metadata.version("anndata").split(".")[1]) % 2
CASES = [(fmt, g) for fmt, n in PER_FORMAT.items() for g in range(-(-n // GROUP)) if g % 2 == STACK_GROUPS]


@pytest.fixture(scope="session")
def valid(tmp_path_factory) -> ValidFiles:
    """The valid files the inputs are derived from (each written once per test process: a module's
    fixture is made again each time a worker comes back to the module from another)."""
    return ValidFiles(tmp_path_factory.mktemp("valid"))


@pytest.mark.parametrize(("fmt", "group"), CASES, ids=[f"{f}-{g}" for f, g in CASES])
def test_every_damaged_input_is_handled(fmt: str, group: int, valid: ValidFiles, tmp_path):
    if fmt == "h5mu":
        pytest.importorskip("mudata")
    try:
        results = probe_all(build_inputs(fmt, valid, tmp_path / "inputs", group))
    finally:
        remove_tree(tmp_path / "inputs")
    control = results.pop(0)
    assert control["outcome"] == "ok" and "note" not in control, f"the valid file does not read as anndata's: {control}"
    escaped = {r["name"] for r in results if r["outcome"] == "escape"}
    unexpected = [f"{r['name']}: {r['why']}\n{r.get('detail', '')}\n{r.get('traceback', '')}" for r in results
                  if r["name"] in escaped and not any(k.matches(fmt, r["name"]) for k in KNOWN_ESCAPES)]
    assert not unexpected, f"{len(unexpected)} of {len(results)} escaped:\n\n" + "\n\n".join(unexpected)
    for known in KNOWN_ESCAPES:
        handled = [r["name"] for r in results if known.matches(fmt, r["name"]) and r["name"] not in escaped]
        assert not (known.always and handled), f"listed in KNOWN_ESCAPES but handled now: {handled}"


def run_format(fmt: str, valid: ValidFiles, folder: Path) -> list[dict]:
    """Every input of ``fmt``, group by group: one result each."""
    results = []
    for group in range(-(-PER_FORMAT[fmt] // GROUP)):
        sub = folder / f"{fmt}-{group}"
        try:
            control, *found = probe_all(build_inputs(fmt, valid, sub, group))
            assert control["outcome"] == "ok" and "note" not in control, control
            results += found
        finally:
            remove_tree(sub)
    return results


def summary(fmt: str, results: list[dict]) -> Iterator[str]:
    """A line of counts for a format, then a line per escape."""
    counts = {k: sum(r["outcome"] == k for r in results) for k in ("ok", "error", "escape")}
    named = sum(bool(r.get("names_element")) for r in results if r["outcome"] == "error")
    yield (f"{fmt}: {len(results)} inputs, {counts['ok']} ok, {counts['error']} clean errors "
           f"({named} naming the element), {counts['escape']} escapes "
           f"({100 * (1 - counts['escape'] / len(results)):.0f} % handled)")
    for r in results:
        if r["outcome"] == "escape":
            yield f"  ESCAPE {r['name']}: {r['why']}: {r.get('detail', '')[:300]!r}"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        files, everything = ValidFiles(Path(tmp) / "valid"), {}
        for fmt in sys.argv[1:] or list(PER_FORMAT):
            everything[fmt] = run_format(fmt, files, Path(tmp))
            for line in summary(fmt, everything[fmt]):
                print(line, flush=True)
        if os.environ.get("FUZZ_DUMP"):  # every result, tracebacks included, as JSON
            Path(os.environ["FUZZ_DUMP"]).write_text(json.dumps(everything, indent=1))
