"""What says a stored file or store is unchanged, read without opening it; and the files a pattern names.

Identity is cheap: for a local file its size and modification time (nanoseconds); for a local Zarr store
the size and modification time of the store's root metadata files and of the folders of ``X``, ``obs``
and ``var`` (anndata rewrites these when it writes a store, and a folder's time changes when entries are
added, removed or replaced in it); for a URL what fsspec's ``info`` reports (size, and the ETag or
modification time where the server gives one), of the file or, for a Zarr store, of its root's and of
``X``, ``obs`` and ``var``'s metadata documents. Checking a local source is a ``stat``; checking a URL is a
request, made once per process for each identity expected of it.

An HDF5 file this process opens for writing is the exception: HDF5 moves its size and time whenever a
handle of it is flushed or closed, without changing its content. Identities read around this process's
writable handle, with no write by the process between them, are the same
(:func:`shadows.backends.registry.same_content`).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shadows.backends import registry
from shadows.backends.fileref import FileRef
from shadows.backends.remote import is_url

#: Entries of a Zarr store whose size and time make its identity (those that exist).
ZARR_IDENTITY = (".", "zarr.json", ".zgroup", ".zattrs", ".zmetadata", "X", "obs", "var")
#: Metadata documents of a Zarr store behind a URL whose versions make its identity (those that exist):
#: the root's and those of ``X``, ``obs`` and ``var``, which anndata and shadows rewrite when they write them.
ZARR_URL_IDENTITY = ("zarr.json", ".zgroup", ".zattrs", ".zmetadata", "X/zarr.json", "X/.zattrs", "X/.zarray",
                     "obs/zarr.json", "obs/.zattrs", "var/zarr.json", "var/.zattrs")
#: Characters that make a path a pattern.
GLOB_CHARS = frozenset("*?[")

#: URL identities found unchanged in this process: (path, expected identity).
_checked_urls: set[tuple[str, str]] = set()


def identity(ref: FileRef) -> list[Any]:
    """The identity of the file or store at ``ref`` (a JSON-able list), read without opening it.

    Raises
    ------
    FileNotFoundError
        Nothing is there.
    """
    if is_url(ref.path):
        return _url_identity(ref)
    if os.path.isdir(ref.path):
        entries = []
        for name in ZARR_IDENTITY:
            path = os.path.join(ref.path, name)
            if os.path.exists(path):
                st = os.stat(path)
                entries.append([name, st.st_size, st.st_mtime_ns])
        return ["zarr", entries]
    st = os.stat(ref.path)
    registry.observed(ref.path, (st.st_size, st.st_mtime_ns))
    return ["file", st.st_size, st.st_mtime_ns]


def changed_identity(ref: FileRef, expected: list[Any]) -> list[Any] | None:
    """The identity found at ``ref`` now if it is not ``expected`` (``None`` when unchanged); a URL found
    unchanged is not asked again in this process.

    Raises
    ------
    FileNotFoundError
        Nothing is there.
    """
    key = (ref.path, repr(expected))
    remote = is_url(ref.path)
    if remote and key in _checked_urls:
        return None
    found = identity(ref)
    if found != expected and not (found[0] == expected[0] == "file"
                                  and registry.same_content(ref.path, tuple(expected[1:]), tuple(found[1:]))):
        return found
    if remote:
        _checked_urls.add(key)
    return None


def _url_identity(ref: FileRef) -> list[Any]:
    import fsspec

    fs, _, (path,) = fsspec.get_fs_token_paths(ref.path, storage_options=dict(ref.storage_options or {}))
    fs.invalidate_cache(path)  # the filesystem instance is shared: its listings may predate a change
    info = fs.info(path)  # FileNotFoundError when the object is gone
    if info.get("type") != "directory":
        return ["url", _object_stamp(info)]
    # a Zarr store: an object store's folders have no time, so its metadata documents stand for it
    entries = []
    for name in ZARR_URL_IDENTITY:
        try:
            entries.append([name, _object_stamp(fs.info(f"{path.rstrip('/')}/{name}"))])
        except FileNotFoundError:
            continue
    return ["url zarr", entries]


def _object_stamp(info: Mapping[str, Any]) -> list[list[str]]:
    """What fsspec's ``info`` says of an object's version (size, and the ETag or time the server gives)."""
    keys = ("size", "ETag", "etag", "mtime", "LastModified", "last_modified", "md5")
    return [[k, str(info[k])] for k in keys if k in info]


def matching(pattern: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The paths (or URLs) ``pattern`` names, sorted: itself when it has no glob characters, else the
    files and stores matching it (an empty list when none does).
    """
    if not GLOB_CHARS & set(pattern):
        return [pattern]
    if is_url(pattern):
        import fsspec

        fs, _, _ = fsspec.get_fs_token_paths(pattern, storage_options=dict(storage_options or {}))
        protocol = pattern.split("://", 1)[0]
        return [f"{protocol}://{m}" for m in sorted(fs.glob(pattern))]
    return sorted(glob.glob(os.path.expanduser(pattern)))


def absolute(path: str) -> str:
    """``path`` as a reference's ``full_path`` spells it: URLs as given, local paths absolute."""
    if is_url(path):
        return path
    text = path[len("file://"):] if path.startswith("file://") else path
    return str(Path(os.path.expanduser(text)).absolute())
