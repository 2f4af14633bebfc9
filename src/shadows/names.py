"""What a key may be: the name an element or an obs/var column will have in the file.

A key becomes one component of a path in an HDF5 file or a folder (and a metadata document) in a Zarr
store, so it must name exactly one child of its group and nothing else: anndata's rules (no ``/``) plus
what paths and stores give a meaning to. Checked where a key is assigned, before anything is staged, so
that what ``write()`` compares (does the file hold this key?) and where it writes are the same name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shadows.errors import InvalidElementKeyError

#: Names Zarr gives to metadata documents, and the scratch folder shadows writes inside a store.
RESERVED_NAMES = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata", ".shadows-tmp"})


def key_problem(key: Any) -> str | None:
    """Why ``key`` cannot name an element or a column, or ``None`` when it can."""
    if not isinstance(key, str):
        return f"keys are strings, got {type(key).__name__}"
    if not key:
        return "the key is empty"
    if "/" in key:
        return "'/' is not allowed in keys (it separates path components; use nested uns dicts for levels)"
    if "\x00" in key:
        return "NUL characters are not allowed in keys"
    if key in (".", ".."):
        return f"{key!r} names a folder relation, not an element"
    if key in RESERVED_NAMES:
        return f"{key!r} is reserved for the store's metadata"
    return None


def column_problem(name: Any) -> str | None:
    """Why ``name`` cannot name an obs/var column (:func:`key_problem`, and anndata's reserved ``_index``)."""
    if name == "_index":
        return "'_index' is reserved (anndata stores an unnamed index under it)"
    return key_problem(name)


def check_key(where: str, slot: str, key: Any) -> None:
    """Raise InvalidElementKeyError (a ValueError) naming ``where`` (the file), ``slot`` and ``key`` when
    ``key`` cannot name an element of ``slot``.
    """
    problem = key_problem(key)
    if problem is not None:
        raise InvalidElementKeyError(f"{where}: {slot}[{key!r}]: invalid key: {problem}")


def check_nested_keys(where: str, slot: str, value: Any) -> None:
    """:func:`check_key` for every key of a (nested) dict assigned into ``uns``: each becomes a group."""
    if not isinstance(value, Mapping):
        return
    for key, child in value.items():
        check_key(where, slot, key)
        check_nested_keys(where, f"{slot}/{key}", child)
