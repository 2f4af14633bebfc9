"""The files an atlas is made of: what users pass (paths, globs, URLs, shadows) turned into
:class:`~shadows.backends.FileRef` s, and each file's identity (what says it has not changed since its
metadata was read).

Identity is cheap and read without opening the file: for a local file its size and modification time
(nanoseconds); for a local Zarr store the size and modification time of the store's root metadata files
and of the folders of ``X``, ``obs`` and ``var`` (anndata rewrites these when it writes a store, and a
folder's time changes when entries are added, removed or replaced in it); for a URL what fsspec's
``info`` reports (size, and the ETag or modification time where the server gives one).
"""

from __future__ import annotations

import glob
import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from shadows.backends import FileRef, resolve
from shadows.backends.remote import is_url, redact
from shadows.errors import ShadowsError, ShadowsFileNotFoundError

#: Entries of a Zarr store whose size and time make its identity (those that exist).
_ZARR_IDENTITY = (".", "zarr.json", ".zgroup", ".zattrs", ".zmetadata", "X", "obs", "var")
_GLOB_CHARS = set("*?[")


class SourceChangedError(ShadowsError, RuntimeError):
    """A source of an atlas changed (size, time or content identity) since its catalog was written."""


class SourceMissingError(ShadowsFileNotFoundError):
    """A source of an atlas is gone (or cannot be reached) since its catalog was written."""


class UnreadableSourceError(ShadowsError, OSError):
    """A source's metadata could not be read when the atlas was opened."""


def expand(sources: Any, storage_options: Mapping[str, Any] | None = None) -> list[FileRef]:
    """The files ``sources`` names, in order: paths, globs (sorted matches), fsspec URLs (globs too) and
    shadows (their file). A single path or glob may be given alone.

    Raises
    ------
    ShadowsFileNotFoundError
        A path does not exist, or a glob matches nothing (the message names it).
    TypeError
        A view of a shadow (its selection would be lost: pass the file, or subset the atlas).
    """
    if isinstance(sources, str | os.PathLike) or hasattr(sources, "filename"):
        sources = [sources]
    refs: list[FileRef] = []
    for item in sources:
        for path in _paths(item, storage_options):
            refs.append(resolve(path, storage_options=storage_options))
    if not refs:
        raise ValueError("shadows.concat: no sources given")
    return refs


def paths(sources: Any, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The paths ``sources`` names (globs expanded, shadows' files), as their references' ``full_path``
    spells them, without opening any of them (what a catalog's sources are compared with).
    """
    if isinstance(sources, str | os.PathLike) or hasattr(sources, "filename"):
        sources = [sources]
    out = []
    for item in sources:
        for path in _paths(item, storage_options):
            if is_url(path):
                out.append(path)
            else:
                text = path[len("file://"):] if path.startswith("file://") else path
                out.append(str(Path(os.path.expanduser(text)).absolute()))
    return out


def _paths(item: Any, storage_options: Mapping[str, Any] | None) -> Iterable[str]:
    if hasattr(item, "filename") and hasattr(item, "is_view"):
        if item.is_view:
            raise TypeError(f"{item.filename}: a view cannot be a source of an atlas yet (its selection would be "
                            "lost); pass its file and subset the atlas instead")
        return [item.filename]
    text = os.fspath(item)
    if not _GLOB_CHARS & set(text):
        return [text]
    if is_url(text):
        import fsspec

        fs, _, _ = fsspec.get_fs_token_paths(text, storage_options=dict(storage_options or {}))
        protocol = text.split("://", 1)[0]
        matches = [f"{protocol}://{m}" for m in sorted(fs.glob(text))]
    else:
        matches = sorted(glob.glob(os.path.expanduser(text)))
    if not matches:
        raise ShadowsFileNotFoundError(f"{redact(text)}: the pattern matches no file or Zarr store")
    return matches


def identity(ref: FileRef) -> list[Any]:
    """What says the source at ``ref`` is unchanged (see the module's docstring), read without opening it.

    Raises
    ------
    SourceMissingError
        Nothing is there any more (the message names the source).
    """
    try:
        if is_url(ref.path):
            return _url_identity(ref)
        if os.path.isdir(ref.path):
            entries = []
            for name in _ZARR_IDENTITY:
                path = os.path.join(ref.path, name)
                if os.path.exists(path):
                    st = os.stat(path)
                    entries.append([name, st.st_size, st.st_mtime_ns])
            return ["zarr", entries]
        st = os.stat(ref.path)
        return ["file", st.st_size, st.st_mtime_ns]
    except FileNotFoundError:
        raise SourceMissingError(f"{redact(ref.path)}: this source of the atlas is missing") from None


def _url_identity(ref: FileRef) -> list[Any]:
    import fsspec

    fs, _, (path,) = fsspec.get_fs_token_paths(ref.path, storage_options=dict(ref.storage_options or {}))
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise SourceMissingError(f"{redact(ref.path)}: this source of the atlas is missing") from None
    keys = ("size", "ETag", "etag", "mtime", "LastModified", "last_modified", "md5")
    return ["url", [[k, str(info[k])] for k in keys if k in info]]


def check_unchanged(ref: FileRef, expected: list[Any]) -> None:
    """Raise :class:`SourceChangedError` naming the source unless its identity is still ``expected``."""
    found = identity(ref)
    if found != expected:
        raise SourceChangedError(
            f"{redact(ref.path)}: this source changed since the atlas's catalog was written (identity "
            f"{expected!r}, now {found!r}); reopen the atlas without the catalog, or load the catalog with "
            "on_change='refresh'")


def stamped(ref: FileRef, identity: list[Any]) -> FileRef:
    """``ref`` carrying the source's identity as its content stamp: a source refreshed in the catalog (a
    new identity) is read through a handle opened anew, not one this process opened on its old content
    (:meth:`shadows.backends.registry.FileEntry.follow`).
    """
    return replace(ref, content=(-1, zlib.crc32(repr(identity).encode())))
