"""The files an atlas is made of: what users pass (paths, globs, URLs, shadows) turned into
:class:`~shadows.backends.FileRef` s, and each file's identity (what says it has not changed since its
metadata was read: :mod:`shadows.backends.identity`).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from shadows.backends import FileRef, resolve
from shadows.backends import identity as stored
from shadows.backends.remote import redact
from shadows.errors import ShadowsError, ShadowsFileNotFoundError


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
        out += [stored.absolute(path) for path in _paths(item, storage_options)]
    return out


def _paths(item: Any, storage_options: Mapping[str, Any] | None) -> Iterable[str]:
    if hasattr(item, "filename") and hasattr(item, "is_view"):
        if item.is_view:
            raise TypeError(f"{item.filename}: a view cannot be a source of an atlas yet (its selection would be "
                            "lost); pass its file and subset the atlas instead")
        return [item.filename]
    text = os.fspath(item)
    matches = stored.matching(text, storage_options)
    if not matches:
        raise ShadowsFileNotFoundError(f"{redact(text)}: the pattern matches no file or Zarr store")
    return matches


def identity(ref: FileRef) -> list[Any]:
    """What says the source at ``ref`` is unchanged (:func:`shadows.backends.identity.identity`), read
    without opening it.

    Raises
    ------
    SourceMissingError
        Nothing is there any more (the message names the source).
    """
    try:
        return stored.identity(ref)
    except FileNotFoundError:
        raise SourceMissingError(f"{redact(ref.path)}: this source of the atlas is missing") from None


def check_unchanged(ref: FileRef, expected: list[Any]) -> None:
    """Raise :class:`SourceChangedError` naming the source unless its identity is still ``expected``."""
    try:
        found = stored.changed_identity(ref, expected)
    except FileNotFoundError:
        raise SourceMissingError(f"{redact(ref.path)}: this source of the atlas is missing") from None
    if found is not None:
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
