"""Element commits into a Zarr store in object storage (S3 and other fsspec filesystems that take writes).

Object stores cannot rename, so an element is built under ``.shadows-tmp/<id>/`` inside the store (as in
a local store) and then published by copying its objects into place: every chunk first, then the
metadata documents, the element's own last. Zarr readers find a node through its metadata, so until that
last copy the element is absent; after it, complete. The consolidated metadata (anndata's default) is
rewritten at the end, which is when readers that use it see the new elements.

Replacing or deleting a stored element drops the consolidated metadata first (see
:mod:`shadows.writing.commit`), then removes the element's metadata (it is absent from then on) and its
chunks after. Object stores have no locks: one writer at a time is the user's to ensure.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from shadows.backends import remote
from shadows.writing.commit import ZARR_SCRATCH, ZarrCommitBase

#: Zarr's metadata documents (format 3, and format 2's three).
METADATA_NAMES = ("zarr.json", ".zarray", ".zgroup", ".zattrs")


def _is_metadata(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in METADATA_NAMES


class RemoteZarrCommit(ZarrCommitBase):
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
        for key in metadata:
            self.fs.rm_file(f"{self.base}/{key}")
        self._remove_objects([k for k in objects if not _is_metadata(k)])

    def _remove_objects(self, keys: list[str]) -> None:
        """Remove objects in one call (object stores delete them in batches)."""
        if keys:
            self.fs.rm([f"{self.base}/{key}" for key in keys])

    def _scratch_location(self, name: str) -> str:
        return f"{self.scratch_key}/{name}"

    def _place(self, built: str, path: str) -> None:
        if self._objects(path):  # replacing: the old element goes first (absent from then on)
            self._remove(path)
        self._publish(built, path)

    def _consolidation_target(self) -> Any:
        return remote.zarr_store(self.url, self.storage_options, read_only=False)

    def _read_document(self, key: str) -> bytes:
        return self.fs.cat_file(f"{self.base}/{key}")

    def _write_document(self, key: str, content: bytes) -> None:
        self.fs.pipe_file(f"{self.base}/{key}", content)  # one PUT: readers get the old object or the new

    def _delete_document(self, key: str) -> None:
        if self.fs.exists(f"{self.base}/{key}"):
            self.fs.rm_file(f"{self.base}/{key}")

    def _drop_scratch(self) -> None:
        self._remove_objects(self._objects(self.scratch_key))

    def finish(self) -> None:
        self._drop_scratch()  # before consolidating, so the scratch never shows in the metadata
        self.consolidate()

    def abort(self) -> None:
        self._drop_scratch()
