"""Element commits into a Zarr store in object storage (S3 and other fsspec filesystems that take writes).

Object stores cannot rename, so an element is built under ``.shadows-tmp/<id>/`` inside the store (as in
a local store) and then published by copying its objects into place: every chunk first, then the
metadata documents, the element's own last. Zarr readers find a node through its metadata, so until that
last copy the element is absent; after it, complete. The consolidated metadata (anndata's default) is
rewritten at the end, which is when readers that use it see the new elements.

Replacing or deleting a stored element removes its metadata first (it is absent from then on) and its
chunks after. Object stores have no locks: one writer at a time is the user's to ensure.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Mapping
from typing import Any

from shadows.backends import remote
from shadows.writing.commit import (
    DELETED,
    ZARR_SCRATCH,
    ColumnChange,
    ElementChange,
    _column_order,
    _one_column_frame,
    _split,
    _write_elem,
)
from shadows.writing.streams import is_dask, write_streamed

#: Zarr's metadata documents (format 3, and format 2's three).
METADATA_NAMES = ("zarr.json", ".zarray", ".zgroup", ".zattrs")


def _is_metadata(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in METADATA_NAMES


class RemoteZarrCommit:
    """Commits into the Zarr store at ``url``: built in scratch, published chunks first, metadata last."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None, consolidated: bool):
        import zarr

        self.url = url.rstrip("/")
        self.storage_options = storage_options
        self.consolidated = consolidated
        self.fs, self.base = remote.filesystem(self.url, storage_options)
        self.base = self.base.rstrip("/")
        self.root = zarr.open_group(remote.zarr_store(self.url, storage_options, read_only=False), mode="r+",
                                    use_consolidated=False)
        self.zarr_format = self.root.metadata.zarr_format
        self.scratch_key = f"{ZARR_SCRATCH}/{uuid.uuid4().hex}"
        scratch_store = remote.zarr_store(f"{self.url}/{self.scratch_key}", storage_options, read_only=False)
        self.scratch = zarr.open_group(scratch_store, mode="w", zarr_format=self.zarr_format)

    def _objects(self, key: str) -> list[str]:
        """Keys (relative to the store) of every object under ``key``."""
        prefix = f"{self.base}/{key}"
        self.fs.invalidate_cache(prefix)
        found = self.fs.find(prefix)
        return [path[len(self.base) + 1:] for path in found]

    def _publish(self, built: str, target: str) -> None:
        """Copy the objects under ``built`` to ``target``: chunks, then metadata from the deepest up."""
        objects = self._objects(built)
        chunks = [k for k in objects if not _is_metadata(k)]
        metadata = sorted((k for k in objects if _is_metadata(k)), key=lambda k: (-k.count("/"), k))
        for key in chunks + metadata:
            self.fs.copy(f"{self.base}/{key}", f"{self.base}/{target}{key[len(built):]}")

    def _remove(self, target: str) -> None:
        """Remove a stored element: its metadata first (it is absent from then on), then its chunks."""
        objects = self._objects(target)
        metadata = sorted((k for k in objects if _is_metadata(k)), key=lambda k: (k.count("/"), k))
        rest = [k for k in objects if not _is_metadata(k)]
        for key in metadata + rest:
            self.fs.rm_file(f"{self.base}/{key}")

    def _build(self, value: Any, name: str) -> str:
        """Write ``value`` into the scratch group as ``name``; returns its key in the store."""
        name = f"{name}-{uuid.uuid4().hex}"
        if is_dask(value):
            write_streamed(self.scratch, name, value)
        else:
            _write_elem(self.scratch, name, value)
        return f"{self.scratch_key}/{name}"

    def _parent(self, path: str) -> None:
        if not path or path in self.root:
            return
        above, _ = _split(path)
        self._parent(above)
        group = self.root.require_group(path)
        group.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})

    def element(self, change: ElementChange) -> None:
        if change.value is DELETED or change.replaces:
            self._remove(change.path)
        if change.value is DELETED:
            return
        parent_path, name = _split(change.path)
        built = self._build(change.value, name)
        self._parent(parent_path)
        self._publish(built, change.path)

    def column(self, change: ColumnChange) -> None:
        frame = self.root[change.frame_path]
        order = _column_order(frame.attrs)
        if change.values is DELETED:  # unnamed first, so anndata no longer reads it, then removed
            frame.attrs["column-order"] = [c for c in order if c != change.key]
            self._remove(f"{change.frame_path}/{change.key}")
            return
        if change.replaces:
            self._remove(f"{change.frame_path}/{change.key}")
        built = self._build(_one_column_frame(change), "frame")
        self._publish(f"{built}/{change.key}", f"{change.frame_path}/{change.key}")
        if change.key not in order:
            frame.attrs["column-order"] = [*order, change.key]

    def consolidate(self) -> None:
        """Rewrite the consolidated metadata (when the store has it) to list what was committed."""
        import zarr

        if not self.consolidated:
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            zarr.consolidate_metadata(remote.zarr_store(self.url, self.storage_options, read_only=False))

    def _drop_scratch(self) -> None:
        for key in self._objects(self.scratch_key):
            self.fs.rm_file(f"{self.base}/{key}")

    def finish(self) -> None:
        self._drop_scratch()  # before consolidating, so the scratch never shows in the metadata
        self.consolidate()

    def abort(self) -> None:
        self._drop_scratch()
