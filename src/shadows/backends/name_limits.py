"""How long the names of a local Zarr store's elements may be: the file system's limits, checked before a
write (:func:`shadows.writing.transaction.validate`) so that a key too long for a folder name is refused
before the first byte is written, not half-way through a commit with ``OSError: File name too long``.

Each key of a Zarr store becomes a folder name (``NAME_MAX``, 255 bytes on Linux and macOS file systems),
and its path below the store a file path (``PATH_MAX``, 4096 bytes on Linux). A commit builds an element
in the store's scratch folder under its name plus a 33-byte suffix first (``.shadows-tmp/<id>/<name>-<hex>``,
:mod:`shadows.writing.commit`), so an element's own name has 33 bytes less. HDF5 link names have no such
limit, and remote stores are left to their servers (their key limits differ and are reported at commit).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

#: What a commit adds to an element's folder name while building it: "-" and a 32-digit uuid.
SCRATCH_SUFFIX_BYTES = 33
#: What a commit adds before the element's path: ``.shadows-tmp/<32-digit id>/``.
SCRATCH_PREFIX_BYTES = len(".shadows-tmp/") + 33
#: Room kept below the deepest name for what zarr writes there (``c/0/0``, ``zarr.json``, ``.zarray``).
METADATA_ROOM_BYTES = 64
#: POSIX's smallest allowed values, used when the file system does not say (``os.pathconf`` fails).
_FALLBACK = {"PC_NAME_MAX": 255, "PC_PATH_MAX": 4096}


def _limit(store: str, name: str) -> int:
    """The file system's ``name`` limit (``PC_NAME_MAX``/``PC_PATH_MAX``) for the folder ``store``."""
    try:
        value = os.pathconf(store, name)
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or the store not created yet
        value = -1
    return value if value > 0 else _FALLBACK[name]


def _nested_names(value: Any, depth: int = 0) -> Iterator[list[str]]:
    """The key paths below an element that become folders: nested dict keys and dataframe columns."""
    if depth > 64:  # a value nested deeper is refused by its writer; deep recursion is not ours to do
        return
    if isinstance(value, Mapping):
        for key, child in value.items():
            for below in _nested_names(child, depth + 1):
                yield [str(key), *below]
        return
    columns = getattr(value, "columns", None)  # a pandas (or other) dataframe: one array per column
    if columns is not None and not isinstance(value, type):
        for column in list(columns):
            yield [str(column)]
    yield []


def name_problem(store: str, path: str, value: Any = None) -> str | None:
    """Why ``path`` (an element or a column, relative to the store root ``store``, a local folder) or a
    name inside ``value`` cannot be written to the store's file system, or ``None`` when all fit.

    Parameters
    ----------
    store
        The Zarr store's folder.
    path
        The element's path in the store, e.g. ``obsm/X_pca``.
    value
        The value to be written there: its nested dict keys and dataframe columns become folders too.
    """
    name_max, path_max = _limit(store, "PC_NAME_MAX"), _limit(store, "PC_PATH_MAX")
    own = path.rstrip("/").rpartition("/")[2]
    if len(own.encode()) + SCRATCH_SUFFIX_BYTES > name_max:
        return (f"the name is {len(own.encode())} bytes long; this file system's folder names hold at most "
                f"{name_max} bytes, of which a commit needs {SCRATCH_SUFFIX_BYTES}: use at most "
                f"{name_max - SCRATCH_SUFFIX_BYTES}")
    base = len(os.fsencode(os.path.abspath(store))) + 1 + max(SCRATCH_PREFIX_BYTES + len(own.encode())
                                                             + SCRATCH_SUFFIX_BYTES, len(path.encode()))
    for names in _nested_names(value):
        long = next((n for n in names if len(n.encode()) > name_max), None)
        if long is not None:
            return (f"it holds the key {long[:40]!r}... of {len(long.encode())} bytes; this file system's "
                    f"folder names hold at most {name_max} bytes")
        if base + sum(len(n.encode()) + 1 for n in names) + METADATA_ROOM_BYTES > path_max:
            return (f"its keys nest into a path longer than this file system allows ({path_max} bytes): "
                    f"{'/'.join(names)[:80]!r}...")
    return None
