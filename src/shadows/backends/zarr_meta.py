"""Zarr metadata read straight from the store's JSON, for opening shadows fast.

``zarr.open_group`` spins up zarr's async machinery and materializes every node object; a shadow needs
only names, attributes, shapes and dtypes to open, print and plan its graphs. This module reads them from
the consolidated metadata (``.zmetadata`` for format 2, ``zarr.json``'s ``consolidated_metadata`` for
format 3) in one file read, or, when a store is not consolidated, from each node's own metadata files,
lazily. Data is always read through zarr itself (:mod:`shadows.backends.handles`).

The JSON is walked by hand because zarr's node objects cost too much at the open-time target (opening
must take at most 0.1x anndata's ``read_lazy``). Measured on the 100,000 x 20,000 benchmark store (Zarr
v2, consolidated): a shadow's open and repr take 8.1 ms; ``zarr.open_group`` and listing only the root's
members 9.2 ms (0.13x ``read_lazy``'s 70 ms, before descending into obs, var or obsm). What zarr can
parse cheaply, it parses: data types and fill values go through ``zarr.dtype`` (10-100 µs per array),
and ``tests/test_zarr_meta.py`` checks shape, dtype, chunking and fill value against
``zarr.open_array`` for every data type, in both formats, sharded or not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shadows.errors import MalformedElementError, element_message

_V3_TEXT_TYPES = {"string", "str", "variable_length_utf8", "fixed_length_utf32", "bytes", "variable_length_bytes"}


def _v2_dtype(meta: dict[str, Any]) -> np.dtype:
    dtype = meta["dtype"]
    if isinstance(dtype, list):
        return np.dtype([tuple(field) for field in dtype])
    return np.dtype(dtype)


def _v3_dtype(meta: dict[str, Any]) -> np.dtype:
    """The numpy dtype of a format-3 array: text types as object (as shadows reads strings); every other
    type (numeric, structured records, bytes, datetimes) parsed by zarr itself (``zarr.dtype``, public
    since zarr 3.1; about 10-100 µs per array, measured).
    """
    spec = meta["data_type"]
    name = spec.get("name", "") if isinstance(spec, dict) else spec
    if name in _V3_TEXT_TYPES:
        return np.dtype(object)
    from zarr.dtype import parse_data_type

    return parse_data_type(spec, zarr_format=3).to_native_dtype()


def array_dtype(meta: dict[str, Any]) -> np.dtype:
    """The numpy dtype of the array an array's metadata (``.zarray`` or ``zarr.json``) describes, text as
    object; raises what numpy or zarr raise for a type they cannot parse.
    """
    return _v3_dtype(meta) if meta.get("zarr_format") == 3 else _v2_dtype(meta)


def check_array_metadata(meta: dict[str, Any]) -> None:
    """Raise unless zarr itself accepts an array's metadata (``ArrayV2Metadata``/``ArrayV3Metadata``:
    keys, data type, codecs, fill value; 40-60 µs per array, measured, paid once per array on first use)
    and its chunks are at least 1 along every axis (zarr accepts 0, then divides by it when reading).
    """
    if meta.get("zarr_format") == 3:
        import copy

        from zarr.core.metadata.v3 import ArrayV3Metadata

        chunks = ArrayV3Metadata.from_dict(copy.deepcopy(meta)).chunks
    else:
        from zarr.core.metadata.v2 import ArrayV2Metadata

        chunks = ArrayV2Metadata.from_dict({k: v for k, v in meta.items() if k != "node_type"}).chunks
    if any(int(c) < 1 for c in chunks):
        raise ValueError(f"chunk shape {list(chunks)}: chunks must hold at least 1 element along every axis")


class MetaNode:
    """A node of a Zarr store described by its metadata only."""

    def __init__(self, store: ZarrMetadata, path: str, meta: dict[str, Any]):
        self._store = store
        self.path = path
        self.meta = meta

    @property
    def store(self) -> ZarrMetadata:
        """The metadata of the store the node is in."""
        return self._store

    @property
    def name(self) -> str:
        """Absolute path of the node, as zarr and h5py spell it."""
        return "/" + self.path

    @property
    def attrs(self) -> dict[str, Any]:
        """The node's attributes (already plain JSON values)."""
        return self._store.attributes(self.path, self.meta)


class MetaArray(MetaNode):
    """An array: shape, dtype and chunking from metadata, checked by zarr itself on first use
    (:func:`check_array_metadata`).
    """

    def _checked(self) -> dict[str, Any]:
        """The metadata, once zarr accepts it; else :class:`~shadows.errors.MalformedElementError`."""
        self._store.check(self.path, self.meta)
        return self.meta

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(int(s) for s in self._checked()["shape"])

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the stored values (``object`` for strings)."""
        meta = self._checked()
        return array_dtype(meta)

    @property
    def fill_value(self) -> Any:
        """The fill value, decoded by zarr itself (``zarr.dtype``) from the metadata's JSON."""
        from zarr.dtype import parse_data_type

        self._checked()
        zarr_format = 3 if self.meta.get("zarr_format") == 3 else 2
        if zarr_format == 3:
            spec = self.meta["data_type"]
        else:
            spec = self.meta["dtype"]
            if spec == "|O":  # zarr 2 object arrays name their codec among the filters
                codecs = [f.get("id") for f in self.meta.get("filters") or [] if isinstance(f, dict)]
                spec = {"name": "|O", "object_codec_id": next((c for c in codecs if c and c.startswith("vlen")),
                                                              "vlen-utf8")}
        data_type = parse_data_type(spec, zarr_format=zarr_format)
        return data_type.from_json_scalar(self.meta.get("fill_value"), zarr_format=zarr_format)

    @property
    def chunks(self) -> tuple[int, ...]:
        """The stored chunk (or shard) shape."""
        if self._checked().get("zarr_format") == 3:
            return tuple(self.meta["chunk_grid"]["configuration"]["chunk_shape"])
        return tuple(self.meta["chunks"])

    @property
    def read_chunks(self) -> tuple[int, ...]:
        """The shape of the pieces zarr decodes: a shard's inner chunks, else :attr:`chunks` (what zarr's
        own ``Array.chunks`` says of a sharded array).
        """
        codecs = (self._checked().get("codecs") or []) if self.meta.get("zarr_format") == 3 else []
        sharding = next((c for c in codecs if isinstance(c, dict) and c.get("name") == "sharding_indexed"), None)
        return tuple(sharding["configuration"]["chunk_shape"]) if sharding else self.chunks


class MetaGroup(MetaNode):
    """A group: children by name, looked up in the metadata."""

    def keys(self) -> list[str]:
        """Names of the children."""
        return self._store.children(self.path)

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, name: str) -> bool:
        return self._store.node(self._join(name)) is not None

    def __getitem__(self, name: str) -> MetaNode:
        node = self._store.node(self._join(name))
        if node is None:
            raise KeyError(name)
        return node

    def _join(self, name: str) -> str:
        name = name.strip("/")
        return f"{self.path}/{name}" if self.path else name


class ZarrMetadata:
    """Metadata of a Zarr store (format 2 or 3), consolidated or not, on disk or at an fsspec URL.

    Parameters
    ----------
    root
        The store's root directory, or its URL.
    storage_options
        fsspec's options for a URL.
    """

    def __init__(self, root: str | Path, storage_options: Mapping[str, Any] | None = None):
        from shadows.backends import remote

        self.url = str(root).rstrip("/") if remote.is_url(str(root)) else None
        self.root = Path(root) if self.url is None else None
        self.storage_options = storage_options
        self._nodes: dict[str, dict[str, Any] | None] = {}
        self._valid: set[str] = set()  # arrays whose metadata zarr accepted
        if self.url is None:
            self._consolidated = self._read_consolidated()
        else:
            with remote.network_errors(self.url):
                self._consolidated = self._read_consolidated()

    @property
    def display(self) -> str:
        """The store as messages name it (a URL without its credentials)."""
        if self.url is None:
            return str(self.root)
        from shadows.backends.remote import redact

        return redact(self.url)

    def check(self, path: str, meta: dict[str, Any]) -> None:
        """Raise :class:`~shadows.errors.MalformedElementError` naming the array at ``path`` unless zarr
        accepts its metadata (:func:`check_array_metadata`); once per array.
        """
        if path in self._valid:
            return
        try:
            check_array_metadata(meta)
        except KeyError as error:  # zarr's parsers index the dict: a bare KeyError names only the key
            what = (f"its Zarr metadata says it is an array but has no {error} entry, which an array's "
                    "metadata must have (a group's metadata marked as an array?)")
            raise MalformedElementError(element_message(self.display, path or "/", what)) from error
        except Exception as error:
            what = f"its Zarr metadata is invalid: {type(error).__name__}: {error}"
            if "data type" in str(error).lower():
                from importlib.metadata import version

                what += (f" (a data type this zarr, {version('zarr')}, does not know: if a newer zarr wrote the "
                         "store, upgrade zarr to read this element)")
            raise MalformedElementError(element_message(self.display, path or "/", what)) from error
        self._valid.add(path)

    def _read_json(self, relative: str) -> dict[str, Any] | None:
        if self.url is not None:
            from shadows.backends import remote

            data = remote.read_bytes(f"{self.url}/{relative}", self.storage_options)
        else:
            try:
                data = (self.root / relative).read_bytes()
            except FileNotFoundError:
                return None
        return None if data is None else self._parse(relative, data)

    def _parse(self, relative: str, data: bytes) -> dict[str, Any]:
        """A metadata file's JSON object; :class:`~shadows.errors.MalformedElementError` naming the node
        (the whole store for consolidated metadata) when it is not one.
        """
        try:
            doc = json.loads(data)
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
            problem: str | None = f"not valid JSON ({error})"
            cause: Exception | None = error
        except RecursionError as error:  # json's decoder recurses once per level of nesting
            problem, cause = "JSON nested more deeply than Python's recursion limit allows reading", error
        else:
            problem = None if isinstance(doc, dict) else f"a JSON {type(doc).__name__}, not an object"
            cause = None
        if problem is None:
            return doc
        element = relative.rpartition("/")[0] if "/" in relative else "/"
        what = f"its metadata file '{relative}' is {problem}"
        raise MalformedElementError(element_message(self.display, element, what)) from cause

    def _child_directories(self, path: str) -> list[str]:
        if self.url is not None:
            from shadows.backends import remote

            url = f"{self.url}/{path}" if path else self.url
            with remote.network_errors(url):
                return remote.list_directories(url, self.storage_options)
        return [p.name for p in (self.root / path).iterdir() if p.is_dir()]

    def _read_consolidated(self) -> bool:
        root = self._read_json("zarr.json")
        if root is not None:
            self._nodes[""] = root
            found = root.get("consolidated_metadata") or {}
            consolidated = found.get("metadata") if isinstance(found, dict) else found
            if consolidated is None:
                return False
            if not isinstance(consolidated, dict) or not all(isinstance(v, dict) for v in consolidated.values()):
                what = "the consolidated metadata in its 'zarr.json' is not an object of objects"
                raise MalformedElementError(element_message(self.display, "/", what))
            self._nodes.update({k.strip("/"): v for k, v in consolidated.items()})
            return True
        zmeta = self._read_json(".zmetadata")
        if zmeta is None:
            return False
        entries = zmeta.get("metadata")
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            what = "its consolidated metadata file '.zmetadata' has no 'metadata' object of objects"
            raise MalformedElementError(element_message(self.display, "/", what))
        for key, value in entries.items():
            path, _, kind = key.rpartition("/") if "/" in key else ("", "", key)
            if kind in (".zgroup", ".zarray"):
                node = dict(value)
                node["node_type"] = "group" if kind == ".zgroup" else "array"
                node["attributes"] = entries.get(f"{path}/.zattrs" if path else ".zattrs", {})
                self._nodes[path] = node
        return True

    def _load(self, path: str) -> dict[str, Any] | None:
        """Metadata of one node from its own files (stores without consolidated metadata)."""
        prefix = f"{path}/" if path else ""
        v3 = self._read_json(prefix + "zarr.json")
        if v3 is not None:
            return v3
        for kind, node_type in ((".zarray", "array"), (".zgroup", "group")):
            v2 = self._read_json(prefix + kind)
            if v2 is not None:
                v2["node_type"] = node_type
                v2["attributes"] = self._read_json(prefix + ".zattrs") or {}
                return v2
        return None

    def node(self, path: str) -> MetaNode | None:
        """The node at ``path`` (``""`` is the root), or ``None`` when there is none."""
        path = path.strip("/")
        if path not in self._nodes:
            if self._consolidated:
                return None
            self._nodes[path] = self._load(path)
        meta = self._nodes[path]
        if meta is None:
            return None
        cls = MetaGroup if meta.get("node_type") == "group" else MetaArray
        return cls(self, path, meta)

    def children(self, path: str) -> list[str]:
        """Sorted names of a group's children."""
        prefix = f"{path}/" if path else ""
        if self._consolidated:
            names = {k[len(prefix):].split("/", 1)[0] for k in self._nodes if k.startswith(prefix) and k != path}
            return sorted(n for n in names if n)
        names = [name for name in self._child_directories(path) if self.node(prefix + name) is not None]
        return sorted(names)

    def attributes(self, path: str, meta: dict[str, Any]) -> dict[str, Any]:
        """A node's attributes."""
        return dict(meta.get("attributes") or {})

    def __getitem__(self, path: str) -> MetaNode:
        node = self.node(path)
        if node is None:
            raise KeyError(path)
        return node

    def __contains__(self, path: str) -> bool:
        return self.node(path) is not None

    def keys(self) -> list[str]:
        """Names of the root's children."""
        return self.children("")

    @property
    def consolidated(self) -> bool:
        """Whether the store has consolidated metadata (what it was read from)."""
        return self._consolidated

    @property
    def attrs(self) -> dict[str, Any]:
        """The root group's attributes."""
        return self[""].attrs
